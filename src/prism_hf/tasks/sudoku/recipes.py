"""Sudoku recipes: every knob of the demo in one dataclass, with named presets.

* ``demo`` (default): sized to finish pretraining, PRISM fine-tuning and the evaluation of every method in
  about eleven minutes on a 2-core CPU (see ``docs/sudoku.md`` for the measurements behind the choice).
* ``paper``: the PRISM paper's Sudoku setting (9x9, 50-51 blanks, k=4, lambda=5, 20k steps at batch 256,
  lr 3e-4), for a GPU.
* ``tiny``: seconds, for tests.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from ...utils.deprecation import rename_kwarg, warn_deprecated
from .data import EVAL_SEED
from .grids import SudokuInputError, SudokuSpec

__all__ = ["SudokuRecipe", "RECIPES", "get_recipe", "RECIPE_FILENAME"]

RECIPE_FILENAME = "sudoku_recipe.json"

#: Fields that must be ints >= 1.
_POSITIVE_INTS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "pretrain_steps", "pretrain_batch_size", "finetune_steps",
    "finetune_batch_size", "num_update_tokens", "num_proposals", "num_eval_puzzles", "nfe", "eval_batch_size",
)
_UNMASKING_RULES = ("confidence", "margin", "entropy", "random")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and value == value


@dataclass
class SudokuRecipe:
    """All settings of a Sudoku run (data, backbone, MDM pretraining, PRISM fine-tuning, evaluation).

    Args:
        size (`int`): Grid size ``n = a * b`` (4, 6, 9, ...).
        box_rows (`int`, *optional*): Rows per box; the most square shape when omitted.
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: The backbone
            ([`SudokuMDMConfig`]).
        pretrain_steps, pretrain_batch_size, pretrain_learning_rate, pretrain_warmup_steps: MDM pretraining
            (`MDMTrainer`, cosine schedule).
        finetune_steps, finetune_batch_size, finetune_learning_rate: PRISM fine-tuning (`PrismTrainer`,
            full backbone).
        num_update_tokens (`int`): ``k`` of the PRISM loss. The demo fills 12 positions per training state (the
            paper's Sudoku recipe, the ``paper`` preset, uses 4; its text and code recipes 8): chosen on validation
            seeds over three training seeds, it kept the head's AUROC above 0.9 on all nine validation sets (0.911 at
            the lowest), where ``k = 8`` fell to 0.898 and ``k = 4`` to 0.85 (see ``docs/sudoku.md``).
        num_proposals (`int`): ``n_y``, proposals built from each masked grid (1 in the paper's Sudoku recipe).
        proposal_temperature (`float`): Temperature of the categorical proposal draws of the PRISM loss (``0`` =
            greedy). The demo draws at 2 so that nearly complete training grids carry wrong cells for the head to
            learn from (see ``docs/sudoku.md``); the paper's recipe draws at 1.
        mdm_loss_weight (`float`): ``lambda`` (Sudoku: 5.0).
        head_type (`str`): Quality head type (``"mlp"`` by default; ``"linear"`` is the paper's Sudoku probe), the
            [`PrismConfig`] field of the same name. Its earlier name ``head`` still works as an argument, in
            [`replace`] and as an attribute, with a `FutureWarning` (removed in prism_hf 0.3.0); recipe files that
            carry ``head`` load unchanged.
        train_seed (`int`): Seed of the training grids and of training. Never used for evaluation puzzles.
        eval_seed (`int`): Seed of the generated evaluation puzzles (never used in training or tuning).
        num_eval_puzzles (`int`): Generated evaluation puzzles (when no puzzle file is given).
        num_blanks (`(int, int)`): Inclusive range of blanks per generated puzzle.
        unique_puzzles (`bool`): Generated puzzles have exactly one solution. Off by default: a puzzle may have
            several, and any valid completion that keeps the givens is a success (the paper's criterion).
        nfe (`int`): Default number of sampling steps (model forwards) for every method.
        unmasking (`str`): Unmasking rule of the remasking methods (PRISM and the count baselines).
        num_remask (`int`): Tokens remasked per step by PRISM and by the same-count baselines.
        step_on, step_off (`float`): Remasking window as fractions of the schedule steps.
        prism_loop_steps (`int`): PRISM-loop steps of the remasking methods (PRISM and the same-count baselines):
            at the end, hold the clean count and remask / refill ``num_remask`` tokens per step. They are part of
            the NFE budget: those methods run ``nfe - prism_loop_steps`` schedule steps, so every method makes
            exactly ``nfe`` model forwards.
        eval_batch_size (`int`): Puzzles per sampler batch.
        low_quality_threshold (`float`): Quality below which a cell is drawn as "low quality" in the figure.
    """

    size: int = 6
    box_rows: Optional[int] = None
    hidden_size: int = 64
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: Optional[int] = None
    pretrain_steps: int = 2000
    pretrain_batch_size: int = 128
    pretrain_learning_rate: float = 1e-3
    pretrain_warmup_steps: int = 100
    finetune_steps: int = 1200
    finetune_batch_size: int = 128
    finetune_learning_rate: float = 3e-3
    num_update_tokens: int = 12
    num_proposals: int = 1
    proposal_temperature: float = 2.0
    mdm_loss_weight: float = 5.0
    head_type: str = "mlp"
    train_seed: int = 1
    eval_seed: int = EVAL_SEED
    num_eval_puzzles: int = 500
    num_blanks: Tuple[int, int] = (26, 28)
    unique_puzzles: bool = False
    nfe: int = 12
    unmasking: str = "confidence"
    num_remask: int = 1
    step_on: float = 0.0
    step_off: float = 1.0
    prism_loop_steps: int = 0
    eval_batch_size: int = 500
    low_quality_threshold: float = 0.5

    def __post_init__(self):
        if isinstance(self.num_blanks, (list, tuple)) and len(self.num_blanks) == 2:
            self.num_blanks = tuple(self.num_blanks)
        elif _is_int(self.num_blanks):
            self.num_blanks = (self.num_blanks, self.num_blanks)
        self.validate()

    def validate(self) -> None:
        """Raise `SudokuInputError` naming the first field whose value is not valid (called on construction; call
        it again after changing a field in place). Every check runs before any training or evaluation work."""
        self.spec  # the grid shape: size = a * b, box_rows dividing it
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise SudokuInputError(f"{name}={value!r} is not valid; use an int >= 1.")
        for name in ("num_remask", "prism_loop_steps", "pretrain_warmup_steps", "train_seed", "eval_seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise SudokuInputError(f"{name}={value!r} is not valid; use an int >= 0.")
        if self.intermediate_size is not None and (not _is_int(self.intermediate_size) or self.intermediate_size < 1):
            raise SudokuInputError(f"intermediate_size={self.intermediate_size!r} is not valid; use None (4 x hidden_size) or an int >= 1.")
        if self.hidden_size % self.num_attention_heads:
            raise SudokuInputError(
                f"hidden_size={self.hidden_size} is not a multiple of num_attention_heads={self.num_attention_heads}."
            )
        for name in ("pretrain_learning_rate", "finetune_learning_rate"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 < value < float("inf"):
                raise SudokuInputError(f"{name}={value!r} is not valid; use a finite float > 0.")
        if not _is_real(self.mdm_loss_weight) or not 0.0 <= self.mdm_loss_weight < float("inf"):
            raise SudokuInputError(f"mdm_loss_weight={self.mdm_loss_weight!r} is not valid; use a finite float >= 0 (lambda).")
        if not _is_real(self.proposal_temperature) or not 0.0 <= self.proposal_temperature < float("inf"):
            raise SudokuInputError(
                f"proposal_temperature={self.proposal_temperature!r} is not valid; use 0 (greedy proposals) or a finite value > 0."
            )
        for name in ("step_on", "step_off", "low_quality_threshold"):
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value <= 1.0:
                raise SudokuInputError(f"{name}={value!r} is not valid; use a float in [0, 1].")
        if self.step_on >= self.step_off:
            raise SudokuInputError(f"step_on={self.step_on} must be below step_off={self.step_off} (the remasking window).")
        if self.unmasking not in _UNMASKING_RULES:
            raise SudokuInputError(f"unmasking={self.unmasking!r} is not valid; choose one of {list(_UNMASKING_RULES)}.")
        _check_head_type("head_type", self.head_type)
        if not isinstance(self.unique_puzzles, bool):
            raise SudokuInputError(f"unique_puzzles={self.unique_puzzles!r} is not valid; use True or False.")
        # Pretraining grids use train_seed, PRISM fine-tuning grids train_seed + 1; evaluation puzzles use eval_seed
        # (and are kept apart from every training grid by held_out_puzzles in any case).
        if self.eval_seed in (self.train_seed, self.train_seed + 1):
            raise SudokuInputError(
                f"eval_seed={self.eval_seed} is a training seed (train_seed={self.train_seed} draws the pretraining grids "
                f"and train_seed + 1 the fine-tuning grids): evaluation puzzles must come from a seed never used in "
                "training."
            )
        if self.prism_loop_steps >= self.nfe:
            raise SudokuInputError(
                f"prism_loop_steps={self.prism_loop_steps} leaves no schedule step in nfe={self.nfe}; use prism_loop_steps < nfe."
            )
        if not (isinstance(self.num_blanks, tuple) and len(self.num_blanks) == 2 and all(_is_int(v) for v in self.num_blanks)):
            raise SudokuInputError(f"num_blanks={self.num_blanks!r} is not valid; use an int or a (low, high) pair of ints.")
        low, high = self.num_blanks
        if not 1 <= low <= high <= self.spec.num_cells:
            raise SudokuInputError(f"num_blanks={self.num_blanks} must satisfy 1 <= low <= high <= {self.spec.num_cells}.")

    @property
    def spec(self) -> SudokuSpec:
        return SudokuSpec.from_size(self.size, self.box_rows)

    @property
    def head(self) -> str:
        """Deprecated name of [`head_type`]."""
        warn_deprecated("head", "head_type", "SudokuRecipe")
        return self.head_type

    @head.setter
    def head(self, value: str) -> None:
        warn_deprecated("head", "head_type", "SudokuRecipe")
        self.head_type = value

    def replace(self, **changes) -> "SudokuRecipe":
        _rename_head(changes, "SudokuRecipe.replace")
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"Unknown recipe fields {unknown}; valid fields: {[f.name for f in dataclasses.fields(self)]}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict:
        data = dataclasses.asdict(self)
        data["num_blanks"] = list(self.num_blanks)
        return data

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        data = self.to_dict()
        # The field's earlier name, for readers of the previous release's recipe files (removed in prism_hf 0.3.0).
        data["head"] = self.head_type
        with open(os.path.join(directory, RECIPE_FILENAME), "w") as f:
            json.dump(data, f, indent=2)

    @classmethod
    def load(cls, directory: str) -> "SudokuRecipe":
        path = os.path.join(directory, RECIPE_FILENAME)
        if not os.path.isfile(path):
            raise SudokuInputError(f"{directory!r} has no {RECIPE_FILENAME}; it is not a checkpoint written by prism-hf sudoku.")
        try:
            with open(path) as f:
                data = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise SudokuInputError(f"{path} is not valid JSON ({err}); rerun the stage that wrote it.") from None
        if not isinstance(data, dict):
            raise SudokuInputError(f"{path} holds a {type(data).__name__}, not a recipe object; rerun the stage that wrote it.")
        # A file of the previous release names the head type `head`; a file of this release carries both names.
        head = data.pop("head", None)
        if head is not None and data.setdefault("head_type", head) != head:
            raise SudokuInputError(
                f"{path} has head={head!r} and head_type={data['head_type']!r}; they name one field, keep one."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _check_head_type(name: str, value) -> None:
    from ...modeling.heads import HEAD_REGISTRY

    if value not in HEAD_REGISTRY:
        raise SudokuInputError(f"{name}={value!r} is not a quality head type; choose one of {sorted(HEAD_REGISTRY)}.")


def _rename_head(kwargs: Dict, where: str) -> None:
    """``head=`` (the earlier name) -> ``head_type=`` in ``kwargs``, with a `FutureWarning`; both is a `TypeError`.
    A bad value is reported under the name it was given."""
    if "head" in kwargs and kwargs.get("head_type") is not None and kwargs["head"] == kwargs["head_type"]:
        kwargs.pop("head")  # both names with one value: a dict of a saved recipe file, which carries both
    if "head" in kwargs:
        head = kwargs["head"]
        # stack: warn_deprecated < rename_kwarg < _rename_head < SudokuRecipe.__init__ / replace < the user's line
        kwargs["head_type"] = rename_kwarg(kwargs, "head", "head_type", where, current=kwargs.get("head_type"),
                                           stacklevel=5)
        _check_head_type("head", head)


def _accept_earlier_names(init):
    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        _rename_head(kwargs, "SudokuRecipe")
        init(self, *args, **kwargs)

    return __init__


SudokuRecipe.__init__ = _accept_earlier_names(SudokuRecipe.__init__)


RECIPES: Dict[str, SudokuRecipe] = {
    "demo": SudokuRecipe(),
    "paper": SudokuRecipe(
        size=9, hidden_size=256, num_hidden_layers=8, num_attention_heads=8,
        pretrain_steps=50_000, pretrain_batch_size=256, pretrain_learning_rate=3e-4, pretrain_warmup_steps=1000,
        finetune_steps=20_000, finetune_batch_size=256, finetune_learning_rate=3e-4, num_update_tokens=4, mdm_loss_weight=5.0, head_type="linear",
        proposal_temperature=1.0,
        num_eval_puzzles=2000, num_blanks=(50, 51), nfe=50, unmasking="random", num_remask=4, eval_batch_size=500,
    ),
    "tiny": SudokuRecipe(
        size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, pretrain_steps=4, pretrain_batch_size=16,
        pretrain_warmup_steps=1, finetune_steps=2, finetune_batch_size=16, finetune_learning_rate=3e-4, num_eval_puzzles=12, num_blanks=(6, 8),
        nfe=4, num_remask=1, eval_batch_size=12,
    ),
}


def get_recipe(name: str, **overrides) -> SudokuRecipe:
    """A copy of a named recipe (``demo``, ``paper``, ``tiny``) with fields overridden (``None`` values ignored)."""
    if name not in RECIPES:
        raise SudokuInputError(f"recipe={name!r} is not known; choose one of {sorted(RECIPES)}.")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    _rename_head(overrides, "get_recipe")  # here, so that its warning points at the caller of get_recipe
    return RECIPES[name].replace(**overrides)
