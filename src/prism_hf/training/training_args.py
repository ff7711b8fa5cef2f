"""Training arguments of [`MDMTrainer`] and [`PrismTrainer`]."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Optional

from transformers import TrainingArguments

from ..modeling.configuration_prism import BACKBONE_TRAINING_MODES
from .losses import UPDATE_SELECTIONS

__all__ = ["MaskedDiffusionTrainingArguments", "PrismTrainingArguments"]


@dataclass
class MaskedDiffusionTrainingArguments(TrainingArguments):
    r"""Arguments of [`MDMTrainer`]: plain masked diffusion training.

    Only the parameters specific to masked diffusion are listed here; see [`~transformers.TrainingArguments`] for
    the others. ``remove_unused_columns`` defaults to ``False`` because the collator reads ``prompt_length`` /
    ``labels`` columns that the model's forward does not take.

    > Parameters that control the forward process

    mask_eps (`float`, *optional*, defaults to `1e-3`):
        Lower bound ``eps`` of the masking rate ``t ~ U(eps, 1)``; it bounds the ``1/t`` loss weight.
    antithetic (`bool`, *optional*, defaults to `False`):
        Draw the batch's masking rates as evenly spaced points with one random offset (lower-variance loss
        estimate, as in MDLM).

    > Parameters that control the data

    max_length (`int` or `None`, *optional*, defaults to `None`):
        Longest sequence accepted by the default collator; ``None`` uses the model's maximum
        (``max_position_embeddings`` and the like). Longer examples raise an error unless ``truncation=True``.
    truncation (`bool`, *optional*, defaults to `False`):
        Cut examples longer than ``max_length`` instead of raising.
    mask_padding (`bool`, *optional*, defaults to `False`):
        LLaDA SFT convention: padding (then the EOS token) is attended to and may be masked.
    """

    mask_eps: float = field(default=1e-3, metadata={"help": "Lower bound eps of the masking rate t ~ U(eps, 1)."})
    antithetic: bool = field(default=False, metadata={"help": "Stratify the masking rates t over the batch."})
    max_length: Optional[int] = field(
        default=None, metadata={"help": "Longest accepted sequence; None = the model's maximum."}
    )
    truncation: bool = field(default=False, metadata={"help": "Truncate examples longer than max_length instead of raising."})
    mask_padding: bool = field(default=False, metadata={"help": "LLaDA SFT: padding (EOS) is attended to and maskable."})
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep dataset columns the model's forward does not take (the collator reads prompt_length/labels)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= float(self.mask_eps) < 1.0:
            raise ValueError(f"mask_eps={self.mask_eps!r} is not valid; it must satisfy 0 <= mask_eps < 1.")
        if self.max_length is not None and (isinstance(self.max_length, bool) or int(self.max_length) < 1):
            raise ValueError(f"max_length={self.max_length!r} is not valid; use None or an integer >= 1.")


@dataclass
class PrismTrainingArguments(MaskedDiffusionTrainingArguments):
    r"""Arguments of [`PrismTrainer`]: PRISM fine-tuning of a quality head (and optionally the backbone).

    Only the PRISM parameters are listed here; see [`MaskedDiffusionTrainingArguments`] and
    [`~transformers.TrainingArguments`] for the others. Recipes of the paper: Sudoku ``num_update_tokens=4``,
    ``mdm_loss_weight=5.0``, random selection; text ``num_update_tokens=8``, ``num_proposals=4``,
    ``mdm_loss_weight=0.5``, ``proposal_top_p=0.9``, ``share_proposal_draws=True``; LLaDA-8B code
    ``num_update_tokens=8``, ``update_selection="confidence"``, ``proposal_temperature=0.0``, LoRA,
    ``mdm_loss_weight=0.5``.

    > Parameters of the self-correction loss

    num_update_tokens (`int`, *optional*, defaults to `8`):
        ``k``: masked positions filled with their proposals to build ``y``, per proposal. Clamped per row to the
        number of masked positions. Must be ``>= 1``.
    num_proposals (`int`, *optional*, defaults to `1`):
        ``n_y``: proposals ``y`` built from each masked input ``z`` (each with its own positions and draws),
        reusing the one forward on ``z``. The forward on ``y`` runs on ``n_y`` times the batch. Must be ``>= 1``.
    mdm_loss_weight (`float`, *optional*, defaults to `0.5`):
        ``lambda``: weight of the MDM cross-entropy (on the forward on ``z``) in the total loss. Must be ``>= 0``.
        Ignored, with a warning, when the backbone is frozen.
    update_selection (`str`, *optional*, defaults to `"random"`):
        How the ``k`` positions are chosen: ``"random"`` (uniform, the Sudoku and text recipes) or
        ``"confidence"`` (the ``k`` proposals with the highest probability, the LLaDA recipe).
    proposal_temperature (`float`, *optional*, defaults to `1.0`):
        Temperature of the categorical proposal draws; ``0`` = greedy (argmax).
    proposal_top_p (`float` or `None`, *optional*, defaults to `None`):
        Draw proposals from the top-p nucleus of the posterior (the tokens whose cumulative probability is at most
        ``proposal_top_p``, and always the most likely one); the public text recipe uses ``0.9``. ``None`` draws from
        the whole posterior.
    share_proposal_draws (`bool`, *optional*, defaults to `False`):
        One proposal draw per position shared by the ``num_proposals`` copies (each still fills its own random
        positions), as the public text recipe does; ``False`` draws independently for every copy.

    > Parameters that control what is trained

    backbone_training (`str` or `None`, *optional*, defaults to `None`):
        ``"full"``, ``"lora"`` or ``"frozen"``; ``None`` keeps the model's current mode
        (``model.config.backbone_training``). ``"lora"`` needs a ``peft_config`` passed to the trainer (or a
        model on which `enable_lora` was already called). With ``"frozen"`` the forward on ``z`` runs without
        gradients and only the head learns.
    skip_unused_logits (`bool`, *optional*, defaults to `True`):
        The forward on ``y`` only needs the quality head: stop the backbone at its last hidden state and skip the
        vocabulary projection (saves its time and the ``(B, L, V)`` logits' memory). Turn it off if a distributed
        wrapper objects to a forward that does not reach every module.
    head_learning_rate (`float` or `None`, *optional*, defaults to `None`):
        Learning rate of the quality head; ``None`` uses ``learning_rate``.
    backbone_learning_rate (`float` or `None`, *optional*, defaults to `None`):
        Learning rate of the trained backbone parameters (all of them, or the LoRA adapter); ``None`` uses
        ``learning_rate``.
    """

    num_update_tokens: int = field(default=8, metadata={"help": "k: masked positions filled per proposal (>= 1)."})
    num_proposals: int = field(default=1, metadata={"help": "n_y: proposals y per masked input z (>= 1)."})
    mdm_loss_weight: float = field(default=0.5, metadata={"help": "lambda: weight of the MDM loss (>= 0)."})
    update_selection: str = field(
        default="random", metadata={"help": "How the k positions are chosen.", "choices": list(UPDATE_SELECTIONS)}
    )
    proposal_temperature: float = field(default=1.0, metadata={"help": "Proposal sampling temperature; 0 = greedy."})
    proposal_top_p: Optional[float] = field(
        default=None, metadata={"help": "Top-p nucleus of the proposal draws (text recipe: 0.9); None = whole posterior."}
    )
    share_proposal_draws: bool = field(
        default=False, metadata={"help": "One proposal draw shared by the num_proposals copies (text recipe)."}
    )
    backbone_training: Optional[str] = field(
        default=None,
        metadata={"help": "full, lora or frozen; None keeps the model's mode.", "choices": [None, *BACKBONE_TRAINING_MODES]},
    )
    skip_unused_logits: bool = field(
        default=True, metadata={"help": "Skip the vocabulary projection in the forward on y (only quality is used)."}
    )
    head_learning_rate: Optional[float] = field(default=None, metadata={"help": "Quality head lr; None = learning_rate."})
    backbone_learning_rate: Optional[float] = field(
        default=None, metadata={"help": "Backbone / LoRA lr; None = learning_rate."}
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.num_update_tokens, bool) or not isinstance(self.num_update_tokens, int) or self.num_update_tokens < 1:
            raise ValueError(
                f"num_update_tokens={self.num_update_tokens!r} is not valid; k must be an integer >= 1 (4 for Sudoku, 8 for text/code)."
            )
        if isinstance(self.num_proposals, bool) or not isinstance(self.num_proposals, int) or self.num_proposals < 1:
            raise ValueError(f"num_proposals={self.num_proposals!r} is not valid; n_y must be an integer >= 1.")
        if not float(self.mdm_loss_weight) >= 0.0:
            raise ValueError(f"mdm_loss_weight={self.mdm_loss_weight!r} is not valid; lambda must be >= 0.")
        if self.update_selection not in UPDATE_SELECTIONS:
            raise ValueError(
                f"update_selection={self.update_selection!r} is not valid; choose one of {list(UPDATE_SELECTIONS)}."
            )
        if not float(self.proposal_temperature) >= 0.0 or not math.isfinite(float(self.proposal_temperature)):
            raise ValueError(f"proposal_temperature={self.proposal_temperature!r} is not valid; use 0 (greedy) or a finite value > 0.")
        if self.proposal_top_p is not None and (isinstance(self.proposal_top_p, bool) or not 0.0 < float(self.proposal_top_p) <= 1.0):
            raise ValueError(
                f"proposal_top_p={self.proposal_top_p!r} is not valid; use None (whole posterior) or a number in (0, 1] (text recipe: 0.9)."
            )
        if self.backbone_training is not None and self.backbone_training not in BACKBONE_TRAINING_MODES:
            raise ValueError(
                f"backbone_training={self.backbone_training!r} is not valid; choose one of {list(BACKBONE_TRAINING_MODES)} or None."
            )
        for name in ("head_learning_rate", "backbone_learning_rate"):
            value = getattr(self, name)
            if value is not None and not float(value) >= 0.0:
                raise ValueError(f"{name}={value!r} is not valid; use None (= learning_rate) or a value >= 0.")
        if self.backbone_training == "frozen" and self.backbone_learning_rate is not None:
            warnings.warn("backbone_learning_rate is set but backbone_training='frozen': it has no effect.", UserWarning)
