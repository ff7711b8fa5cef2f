"""The PRISM fine-tuning loss, as plain functions over tensors (no Trainer inside).

One training step for a batch of clean sequences ``x`` (see ``docs/training.md`` and Proposition 1 of
arXiv 2510.01384):

1. [`forward_mask`]: draw ``t ~ U(mask_eps, 1)`` per row and mask every *maskable* position with probability
   ``t``, giving ``z``.
2. Forward the model on ``z``. [`mdm_loss`]: cross-entropy at the masked positions, weighted ``1/t``,
   normalised by ``B * L`` (the regulariser that keeps the model an unmasker).
3. [`sample_proposals`]: draw a proposal token at every position from the posterior (categorical with a
   temperature and an optional top-p nucleus, or greedy).
4. [`select_update_positions`]: choose ``k`` masked positions per row (uniformly at random or the ``k``
   most confident), clamped per row to the number of masked positions, and fill them: ``y``.
5. Forward the model on ``y`` (detached ids). [`self_correction_loss`]: binary cross-entropy with logits of
   the quality head against ``1[y_i == x_i]`` on the filled positions only, averaged over them.
6. Total = self-correction loss + ``mdm_loss_weight * mdm_loss`` ([`prism_step`] does all of it, with
   ``num_proposals`` copies of ``y`` per ``z``).

Positions that must never be masked (prompt tokens, padding) are given by a boolean ``maskable`` tensor and
are respected by every function: they are never masked, never filled, never a target.

Every function here is batched: no per-row Python loop and no host synchronisation (``.item()``,
boolean indexing) in a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from ..evaluation.classification import binary_auroc  # noqa: F401  (re-exported: the trainer's metric)
from ..utils.deprecation import rename_kwarg
from ..utils.token_sampling import sample_tokens, top_p_filter  # noqa: F401  (top_p_filter: importable here as in 0.1.0)

__all__ = [
    "UPDATE_SELECTIONS",
    "PrismLossOutput",
    "forward_mask",
    "mdm_loss",
    "sample_proposals",
    "select_update_positions",
    "self_correction_loss",
    "prism_step",
    "quality_accuracy",
    "binary_auroc",
]

#: Valid values of ``update_selection`` (how the ``k`` filled positions are chosen).
UPDATE_SELECTIONS = ("random", "confidence")
#: Default lower bound of the masking rate ``t ~ U(mask_eps, 1)``.
DEFAULT_MASK_EPS = 1e-3


# ----- validation helpers -----------------------------------------------------------------------------
def _check_ids(name: str, ids: Any) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        dtype = ids.dtype if isinstance(ids, torch.Tensor) else None
        raise ValueError(f"{name} must be an integer tensor of shape (batch, seq_len); got {shape} with dtype {dtype}.")


def _check_bool_like(name: str, mask: Any, shape: Tuple[int, ...]) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(shape):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name} must be a tensor of shape {tuple(shape)} (one flag per position); got {got}.")
    return mask.bool()


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not valid; it must be an integer >= 1.")


def _no_other_kwargs(where: str, kwargs: Dict[str, Any]) -> None:
    """What Python says for an unknown keyword, once the deprecated names have been taken out of ``kwargs``."""
    if kwargs:
        raise TypeError(f"{where}() got an unexpected keyword argument {next(iter(kwargs))!r}")


def _check_top_p(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name}={value!r} is not valid; use None (no nucleus) or a number in (0, 1] (the text recipe: 0.9).")


# ----- 1. forward process -----------------------------------------------------------------------------
def forward_mask(
    input_ids: torch.LongTensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    *,
    mask_eps: Optional[float] = None,
    antithetic: bool = False,
    generator: Optional[torch.Generator] = None,
    **deprecated: Any,
) -> Tuple[torch.LongTensor, torch.BoolTensor, torch.Tensor]:
    """The masked diffusion forward process: ``t ~ U(mask_eps, 1)`` per row, each maskable position masked with
    probability ``t``.

    Args:
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Clean sequences ``x``.
        maskable (`torch.BoolTensor` of shape `(batch_size, sequence_length)`): ``True`` where a position may be
            masked. Prompt tokens and padding must be ``False``; they are never masked.
        mask_token_id (`int`): Id written at masked positions.
        mask_eps (`float`, *optional*, defaults to `1e-3`): Lower bound of ``t`` (``0 <= mask_eps < 1``); keeps the
            ``1/t`` weight of [`mdm_loss`] finite. Its deprecated name ``eps`` still works until prism_hf 0.3.0.
        antithetic (`bool`): Stratify ``t`` over the batch (one uniform offset, then evenly spaced ``t``), the
            low-variance sampler of MDLM. Rows still each get a marginally uniform ``t``.
        generator (`torch.Generator`, *optional*): Source of randomness (global RNG when omitted).

    Returns:
        `tuple`: ``noisy_ids`` (`torch.LongTensor`, `(batch_size, sequence_length)`): ``z``;
        ``masked`` (`torch.BoolTensor`, `(batch_size, sequence_length)`): positions that were masked (always a
        subset of ``maskable``); ``t`` (`torch.FloatTensor`, `(batch_size,)`): the masking rate of each row.
    """
    mask_eps = rename_kwarg(deprecated, "eps", "mask_eps", "forward_mask", current=mask_eps)
    _no_other_kwargs("forward_mask", deprecated)
    mask_eps = DEFAULT_MASK_EPS if mask_eps is None else mask_eps
    _check_ids("input_ids", input_ids)
    maskable = _check_bool_like("maskable", maskable, tuple(input_ids.shape))
    if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int) or mask_token_id < 0:
        raise ValueError(f"mask_token_id={mask_token_id!r} is not valid; pass the model's mask token id (an int >= 0).")
    if not 0.0 <= float(mask_eps) < 1.0:
        raise ValueError(
            f"mask_eps={mask_eps!r} is not valid; it must satisfy 0 <= mask_eps < 1 (t is drawn from U(mask_eps, 1))."
        )
    batch_size, seq_len = input_ids.shape
    device = input_ids.device
    if antithetic:
        offset = torch.rand(1, device=device, generator=generator)
        u = (offset + torch.arange(batch_size, device=device, dtype=torch.float32) / batch_size) % 1.0
    else:
        u = torch.rand(batch_size, device=device, generator=generator)
    t = mask_eps + (1.0 - mask_eps) * u
    masked = (torch.rand(batch_size, seq_len, device=device, generator=generator) < t[:, None]) & maskable
    noisy_ids = torch.where(masked, torch.full_like(input_ids, mask_token_id), input_ids)
    return noisy_ids, masked, t


# ----- 2. MDM regulariser ------------------------------------------------------------------------------
def mdm_loss(logits: torch.Tensor, input_ids: torch.LongTensor, masked: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The ordinary masked diffusion loss: cross-entropy at masked positions, weighted ``1/t``, normalised by ``B*L``.

    ``loss = sum_{b,i} masked[b,i] * CE(logits[b,i], input_ids[b,i]) / t[b] / (B * L)``.

    Padding: padded positions are never masked (they are not ``maskable``), so they add nothing to the sum,
    but they *do* count in the ``B * L`` denominator: ``L`` is the padded length of the batch. This is the
    normalisation of the method (and of LLaDA / MDLM pre-training on packed, unpadded data); with heavily
    padded batches the loss is scaled down by the padded fraction. Pack or bucket sequences by length when
    that matters.

    Args:
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`): Posterior logits of
            the forward on ``z``, aligned so that position ``i`` predicts token ``i``.
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Clean targets ``x``.
        masked (`torch.BoolTensor` of shape `(batch_size, sequence_length)`): Positions masked in ``z``.
        t (`torch.FloatTensor` of shape `(batch_size,)`): Masking rate of each row.

    Returns:
        `torch.FloatTensor`: scalar (float32). ``0`` (not NaN) when nothing is masked.
    """
    _check_ids("input_ids", input_ids)
    batch_size, seq_len = input_ids.shape
    if logits.dim() != 3 or tuple(logits.shape[:2]) != (batch_size, seq_len):
        raise ValueError(
            f"logits must have shape (batch, seq_len, vocab) = ({batch_size}, {seq_len}, V); got {tuple(logits.shape)}."
        )
    masked = _check_bool_like("masked", masked, (batch_size, seq_len))
    if t.shape != (batch_size,):
        raise ValueError(f"t must have shape (batch,) = ({batch_size},); got {tuple(t.shape)}.")
    targets = torch.where(masked, input_ids.long(), torch.full_like(input_ids, -100, dtype=torch.long))
    ce = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none")
    weighted = ce.view(batch_size, seq_len) / t.float()[:, None]
    return weighted.sum() / (batch_size * seq_len)


# ----- 3. proposals ------------------------------------------------------------------------------------
def sample_proposals(
    logits: torch.Tensor,
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
    *,
    num_samples: int = 1,
    suppress_token_id: Optional[int] = None,
    top_p: Optional[float] = None,
) -> Tuple[torch.LongTensor, torch.Tensor]:
    """Draw a proposal token at every position from the unmasking posterior, with the package's one token sampler
    ([`~prism_hf.utils.token_sampling.sample_tokens`]: inverse-CDF draws, the suppressed token removed first).

    Args:
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`): Posterior logits.
        temperature (`float`): ``> 0``: categorical sample from ``softmax(logits / temperature)``; ``0``: greedy
            (argmax), as in the LLaDA recipe.
        generator (`torch.Generator`, *optional*): Source of randomness.
        num_samples (`int`): Independent draws per position (``num_proposals``); with ``temperature=0`` all
            draws are the argmax.
        suppress_token_id (`int`, *optional*): A token that is never proposed (the mask token: filling a position
            with the mask would not fill it).
        top_p (`float`, *optional*): Draw from the top-p nucleus of the (tempered) posterior only, as the public
            text recipe does (0.9): the tokens whose cumulative probability, themselves included, is at most
            ``top_p``, and always the most likely one (``mode="mdlm"`` of
            [`~prism_hf.utils.token_sampling.top_p_filter`]). `None` or 1 draws from the whole posterior. Ignored when
            greedy.

    Returns:
        `tuple`: ``proposal_ids`` (`torch.LongTensor`) and ``confidence`` (`torch.FloatTensor`, the probability
        of each drawn token under ``softmax(logits)`` at temperature 1, renormalised without ``suppress_token_id``),
        both of shape `(batch_size, sequence_length)` when ``num_samples == 1``, else `(num_samples, batch_size, sequence_length)`.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape (batch, seq_len, vocab); got {tuple(logits.shape)}.")
    _check_top_p("top_p", top_p)
    _check_positive_int("num_samples", num_samples)
    draw = sample_tokens(
        logits.detach(), temperature=temperature, top_p=top_p, top_p_mode="mdlm", suppress_token_id=suppress_token_id,
        num_samples=None if num_samples == 1 else num_samples, confidence_source="model", generator=generator,
    )
    return draw.tokens, draw.token_prob


# ----- 4. which k positions ------------------------------------------------------------------------------
def _update_indices(
    masked: torch.Tensor,
    num_update_tokens: int,
    update_selection: str = "random",
    confidence: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.LongTensor, torch.BoolTensor]:
    """Indices ``(B, k')`` of the chosen positions and their validity (``k' = min(k, L)``); a row with fewer than
    ``k`` masked positions gets all of them and invalid padding entries."""
    _check_positive_int("num_update_tokens", num_update_tokens)
    if update_selection not in UPDATE_SELECTIONS:
        raise ValueError(f"update_selection={update_selection!r} is not valid; choose one of {list(UPDATE_SELECTIONS)}.")
    if masked.dim() != 2:
        raise ValueError(f"masked must have shape (batch, seq_len); got {tuple(masked.shape)}.")
    masked = masked.bool()
    if update_selection == "random":
        scores = torch.rand(masked.shape, device=masked.device, generator=generator)
    else:
        if confidence is None:
            raise ValueError("update_selection='confidence' needs `confidence` (B, L): the probability of each proposal.")
        if tuple(confidence.shape) != tuple(masked.shape):
            raise ValueError(f"confidence must have the shape of masked {tuple(masked.shape)}; got {tuple(confidence.shape)}.")
        scores = confidence.detach().float()
    # Unmasked positions sort below every masked one; they are dropped by `valid` when a row runs short.
    scores = torch.where(masked, scores, torch.full_like(scores, float("-inf")))
    k = min(num_update_tokens, masked.shape[1])
    indices = scores.topk(k, dim=-1).indices
    valid = masked.gather(1, indices)
    return indices, valid


def select_update_positions(
    masked: torch.Tensor,
    num_update_tokens: int,
    update_selection: Optional[str] = None,
    confidence: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    **deprecated: Any,
) -> torch.BoolTensor:
    """Choose ``k`` masked positions per row to fill with their proposals.

    Args:
        masked (`torch.BoolTensor` of shape `(batch_size, sequence_length)`): Masked positions of ``z`` (only
            these can be chosen).
        num_update_tokens (`int`): ``k``, positions filled per row; clamped per row to the number masked.
        update_selection (`str`, *optional*, defaults to `"random"`): ``"random"`` (uniform subset, the Sudoku and
            text recipes) or ``"confidence"`` (the ``k`` with the highest ``confidence``, the LLaDA recipe). Its
            deprecated name ``selection`` still works until prism_hf 0.3.0.
        confidence (`torch.FloatTensor` of shape `(batch_size, sequence_length)`, *optional*): Score of each
            position's proposal; required for ``"confidence"``.
        generator (`torch.Generator`, *optional*): Source of randomness for ``"random"``.

    Returns:
        `torch.BoolTensor` of shape `(batch_size, sequence_length)`: ``True`` at the ``min(k, #masked)`` chosen
        positions of each row.
    """
    update_selection = rename_kwarg(deprecated, "selection", "update_selection", "select_update_positions",
                                    current=update_selection)
    _no_other_kwargs("select_update_positions", deprecated)
    indices, valid = _update_indices(masked, num_update_tokens, update_selection or "random", confidence, generator)
    update = torch.zeros_like(masked, dtype=torch.bool)
    return update.scatter(1, indices, valid)


# ----- 5. self-correction loss ---------------------------------------------------------------------------
def self_correction_loss(
    quality_logits: torch.Tensor,
    proposal_ids: torch.LongTensor,
    target_ids: torch.LongTensor,
    update_mask: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Binary cross-entropy of the quality head on the filled positions only.

    Target ``b_i = 1[proposal_ids_i == target_ids_i]``; the loss is ``BCEWithLogits(quality_logits_i, b_i)``
    averaged over all ``True`` entries of ``update_mask`` in the batch (``0``, not NaN, when there are none).

    Args:
        quality_logits (`torch.FloatTensor` of shape `(batch_size, sequence_length)`): Head logits on ``y``.
        proposal_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Tokens of ``y`` (only the
            filled positions are read).
        target_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Clean tokens ``x``.
        update_mask (`torch.BoolTensor` of shape `(batch_size, sequence_length)`): The filled positions.

    Returns:
        `tuple`: ``loss`` (scalar float32) and ``targets`` (`torch.FloatTensor`, `(batch_size, sequence_length)`,
        ``1.0``/``0.0`` at filled positions and ``0.0`` elsewhere).
    """
    shape = tuple(proposal_ids.shape)
    if tuple(quality_logits.shape) != shape or tuple(target_ids.shape) != shape:
        raise ValueError(
            f"quality_logits {tuple(quality_logits.shape)}, proposal_ids {shape} and target_ids "
            f"{tuple(target_ids.shape)} must all have shape (batch, seq_len)."
        )
    update_mask = _check_bool_like("update_mask", update_mask, shape)
    targets = ((proposal_ids == target_ids) & update_mask).float()
    bce = F.binary_cross_entropy_with_logits(quality_logits.float(), targets, reduction="none")
    weight = update_mask.float()
    loss = (bce * weight).sum() / weight.sum().clamp(min=1.0)
    return loss, targets


# ----- the whole step ----------------------------------------------------------------------------------
@dataclass
class PrismLossOutput:
    """What [`prism_step`] returns.

    Args:
        loss (`torch.FloatTensor`): Scalar total ``self_correction_loss + mdm_loss_weight * mdm_loss`` (the MDM
            term is left out when the backbone is not trained).
        mdm_loss (`torch.FloatTensor`): Scalar MDM loss of the forward on ``z`` (detached when not trained).
        self_correction_loss (`torch.FloatTensor`): Scalar BCE of the quality head on the filled positions.
        quality_logits (`torch.FloatTensor` of shape `(num_proposals * batch_size, k)`): Head logits at the chosen
            positions (detached), for metrics.
        quality_targets (`torch.FloatTensor` of shape `(num_proposals * batch_size, k)`): ``1[y_i == x_i]`` there.
        quality_valid (`torch.BoolTensor` of shape `(num_proposals * batch_size, k)`): ``False`` for the padding
            entries of rows that had fewer than ``k`` masked positions.
        noisy_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): ``z``.
        masked (`torch.BoolTensor` of shape `(batch_size, sequence_length)`): Masked positions of ``z``.
        t (`torch.FloatTensor` of shape `(batch_size,)`): Masking rates.
        update_ids (`torch.LongTensor` of shape `(num_proposals * batch_size, sequence_length)`): ``y`` (copy ``j``
            of row ``b`` is row ``j * batch_size + b``).
        update_mask (`torch.BoolTensor` of shape `(num_proposals * batch_size, sequence_length)`): Filled positions.
    """

    loss: torch.Tensor
    mdm_loss: torch.Tensor
    self_correction_loss: torch.Tensor
    quality_logits: torch.Tensor
    quality_targets: torch.Tensor
    quality_valid: torch.Tensor
    noisy_ids: Optional[torch.Tensor] = None
    masked: Optional[torch.Tensor] = None
    t: Optional[torch.Tensor] = None
    update_ids: Optional[torch.Tensor] = None
    update_mask: Optional[torch.Tensor] = None


def prism_step(
    model_fn: Callable[..., Any],
    input_ids: torch.LongTensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    *,
    attention_mask: Optional[torch.Tensor] = None,
    num_update_tokens: int = 8,
    num_proposals: int = 1,
    mdm_loss_weight: float = 0.5,
    update_selection: str = "random",
    proposal_temperature: float = 1.0,
    mask_eps: Optional[float] = None,
    antithetic: bool = False,
    train_backbone: bool = True,
    generator: Optional[torch.Generator] = None,
    skip_unused_logits: bool = False,
    proposal_top_p: Optional[float] = None,
    share_proposal_draws: bool = False,
    **deprecated: Any,
) -> PrismLossOutput:
    """One PRISM loss evaluation: two forwards (on ``z``, then on ``y``), the self-correction BCE and the MDM term.

    Args:
        model_fn (`Callable`): ``model_fn(input_ids, attention_mask=...)`` returning an object with ``logits``
            `(B, L, V)` (aligned: position ``i`` predicts token ``i``) and ``quality_logits`` `(B, L)`, e.g. a
            [`PrismForMaskedDiffusion`].
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Clean sequences ``x``.
        maskable (`torch.BoolTensor` of shape `(batch_size, sequence_length)`): Positions that may be masked.
        mask_token_id (`int`): The model's mask token id.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 1 for real tokens.
        num_update_tokens (`int`): ``k``, positions filled per proposal (clamped per row to the number masked).
        num_proposals (`int`): ``n_y``, proposals ``y`` built from each ``z``, each with its own ``k`` positions
            (and its own draws unless ``share_proposal_draws``).
        mdm_loss_weight (`float`): ``lambda``, weight of the MDM loss in the total (ignored when
            ``train_backbone=False``).
        update_selection (`str`): ``"random"`` or ``"confidence"``.
        proposal_temperature (`float`): Sampling temperature of the proposals (``0`` = greedy).
        mask_eps (`float`, *optional*, defaults to `1e-3`): Lower bound of the masking rate ``t``. Its deprecated
            name ``eps`` still works until prism_hf 0.3.0.
        antithetic (`bool`): Stratified ``t`` over the batch.
        train_backbone (`bool`): ``False`` runs the forward on ``z`` under `torch.no_grad` (frozen backbone):
            the MDM loss is then only reported.
        generator (`torch.Generator`, *optional*): Source of randomness.
        skip_unused_logits (`bool`): Call ``model_fn(..., output_logits=False)`` for the forward on ``y``, whose
            logits are not used (a [`PrismForMaskedDiffusion`] then stops at the last hidden state and skips the
            vocabulary projection).
        proposal_top_p (`float`, *optional*): Draw the proposals from the top-p nucleus of the posterior (see
            [`sample_proposals`]); the public text recipe uses 0.9. `None` draws from the whole posterior.
        share_proposal_draws (`bool`): One proposal draw per position shared by the ``n_y`` copies (which still
            fill different random positions), as the public text recipe does (``num_x0_xt=1, num_xs_x0=4``);
            `False` draws independently for every copy.

    Returns:
        [`PrismLossOutput`]
    """
    mask_eps = rename_kwarg(deprecated, "eps", "mask_eps", "prism_step", current=mask_eps)
    _no_other_kwargs("prism_step", deprecated)
    _check_step_arguments(num_update_tokens, num_proposals, proposal_top_p, share_proposal_draws, mdm_loss_weight, update_selection)
    # Steps 1-2: z, and the forward on it. With a frozen backbone nothing here needs a graph.
    noisy_ids, masked, t = forward_mask(input_ids, maskable, mask_token_id, mask_eps=mask_eps, antithetic=antithetic,
                                        generator=generator)
    with torch.set_grad_enabled(train_backbone and torch.is_grad_enabled()):
        first = model_fn(noisy_ids, attention_mask=attention_mask)
        mdm = mdm_loss(first.logits, input_ids, masked, t)
    mdm = mdm if train_backbone else mdm.detach()
    # Steps 3-4: n_y proposals per z, each filling its own k positions: y.
    update_ids, update_mask, indices, valid = _proposal_states(
        first.logits, noisy_ids, masked, mask_token_id, num_update_tokens, num_proposals, update_selection,
        proposal_temperature, proposal_top_p, share_proposal_draws, generator,
    )
    # Step 5: the forward on y (only its quality is read); BCE on the filled positions.
    rep_attention = None if attention_mask is None else attention_mask.repeat(num_proposals, 1)
    second = model_fn(update_ids, attention_mask=rep_attention, **({"output_logits": False} if skip_unused_logits else {}))
    sc_loss, targets = self_correction_loss(second.quality_logits, update_ids, input_ids.repeat(num_proposals, 1), update_mask)
    return PrismLossOutput(
        loss=sc_loss + mdm_loss_weight * mdm if train_backbone else sc_loss, mdm_loss=mdm, self_correction_loss=sc_loss,
        quality_logits=second.quality_logits.detach().float().gather(1, indices), quality_targets=targets.gather(1, indices),
        quality_valid=valid, noisy_ids=noisy_ids, masked=masked, t=t, update_ids=update_ids, update_mask=update_mask,
    )


def _check_step_arguments(num_update_tokens: Any, num_proposals: Any, proposal_top_p: Any, share_proposal_draws: Any,
                          mdm_loss_weight: Any, update_selection: Any) -> None:
    _check_positive_int("num_update_tokens", num_update_tokens)
    _check_positive_int("num_proposals", num_proposals)
    _check_top_p("proposal_top_p", proposal_top_p)
    if not isinstance(share_proposal_draws, bool):
        raise ValueError(f"share_proposal_draws={share_proposal_draws!r} is not valid; it must be True or False.")
    if not float(mdm_loss_weight) >= 0.0:
        raise ValueError(f"mdm_loss_weight={mdm_loss_weight!r} is not valid; it must be >= 0.")
    if update_selection not in UPDATE_SELECTIONS:
        raise ValueError(f"update_selection={update_selection!r} is not valid; choose one of {list(UPDATE_SELECTIONS)}.")


def _proposal_states(
    logits: torch.Tensor, noisy_ids: torch.LongTensor, masked: torch.Tensor, mask_token_id: int, num_update_tokens: int,
    num_proposals: int, update_selection: str, temperature: float, top_p: Optional[float], share_draws: bool,
    generator: Optional[torch.Generator],
) -> Tuple[torch.LongTensor, torch.BoolTensor, torch.LongTensor, torch.BoolTensor]:
    """Steps 3-4 of [`prism_step`]: ``n_y`` proposal states ``y`` built from one ``z``.

    Returns:
        `tuple`: ``update_ids`` (`(n_y * B, L)`, ``y``, detached; copy ``j`` of row ``b`` is row ``j * B + b``),
        ``update_mask`` (`(n_y * B, L)`, the filled positions), and the chosen ``indices`` and their ``valid`` flags
        (`(n_y * B, k)`).
    """
    batch_size, seq_len = noisy_ids.shape
    draws = 1 if share_draws else num_proposals
    proposals, confidence = sample_proposals(
        logits, temperature, generator, num_samples=draws, suppress_token_id=mask_token_id, top_p=top_p,
    )
    if draws == 1:
        proposals, confidence = proposals[None], confidence[None]
    if draws != num_proposals:  # one draw, n_y copies: each copy fills its own positions with the same tokens
        proposals = proposals.expand(num_proposals, -1, -1)
        confidence = confidence.expand(num_proposals, -1, -1)
    proposals = proposals.reshape(num_proposals * batch_size, seq_len)
    confidence = confidence.reshape(num_proposals * batch_size, seq_len)
    rep_masked = masked.repeat(num_proposals, 1)
    indices, valid = _update_indices(rep_masked, num_update_tokens, update_selection, confidence, generator)
    update_mask = torch.zeros_like(rep_masked).scatter(1, indices, valid)
    update_ids = torch.where(update_mask, proposals, noisy_ids.repeat(num_proposals, 1)).detach()
    return update_ids, update_mask, indices, valid


# ----- metrics of the head ----------------------------------------------------------------------------
def quality_accuracy(quality_logits: torch.Tensor, targets: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Fraction of positions where ``quality_logits > 0`` agrees with the binary target (``NaN`` when empty).

    Args:
        quality_logits (`torch.FloatTensor` of any shape): Head logits.
        targets (`torch.FloatTensor` of the same shape): ``1.0`` / ``0.0``.
        valid (`torch.BoolTensor` of the same shape, *optional*): Entries to count.
    """
    correct = ((quality_logits > 0) == (targets > 0.5)).float()
    weight = torch.ones_like(correct) if valid is None else valid.float()
    return (correct * weight).sum() / weight.sum()
