"""lm-evaluation-harness support: ``lm_eval --model prism``.

[`PrismLM`] is an lm-eval model, registered under the name ``"prism"``, that evaluates a PRISM checkpoint or a plain
masked diffusion backbone with any sampler of [`PrismScheduler`]:

* ``generate_until`` runs [`PrismPipeline`] on batches of prompts, then cuts each reply at the task's stop
  sequences (``until``) and at ``max_gen_toks`` tokens;
* ``loglikelihood`` is the Monte Carlo estimator of LLaDA's evaluation ([`monte_carlo_loglikelihood`]), with
  optional classifier-free guidance and LLaDA's greedy-match check ([`greedy_match`]);
* ``loglikelihood_rolling`` applies the same estimator to lm-eval's disjoint rolling windows.

The two estimator functions are plain functions of a ``logits_fn``, usable and testable without lm-eval's machinery.

What the estimator estimates. For a context ``c`` and a continuation ``x = (x_1, ..., x_L)`` it returns an unbiased
estimate of

    B(x | c) = sum_{l=1}^{L} (1 / l) E_{M: |M| = l} [ sum_{i in M} log p(x_i | c, x outside M) ]
             = E_{sigma} [ sum_{k=1}^{L} log p(x_{sigma(k)} | c, x_{sigma(1)}, ..., x_{sigma(k-1)}) ],

``M`` a uniformly random set of ``l`` continuation positions, ``sigma`` a uniformly random order of the
continuation positions and ``p(x_i | ...)`` the model's prediction at a masked position. ``B`` is the average, over
generation orders, of the log-likelihood of the model's any-order autoregressive factorisations. When the model's
conditionals are those of one joint distribution ``q`` every order gives ``log q(x | c)`` and ``B = log q(x | c)``;
for any other model ``B <= log E_sigma[p_sigma(x | c)]`` (Jensen), the log-likelihood of the mixture of orders:
a lower bound, the quantity masked diffusion papers report as the ELBO, not an exact log-likelihood. See
``docs/evaluation.md``.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

try:
    import lm_eval.models  # noqa: F401  (lm-eval's own model names first: its registry loads them only when empty)
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "prism_hf.evaluation.lm_eval_model needs lm-evaluation-harness (>= 0.4.10): pip install 'prism-hf[eval]'."
    ) from _err

from ..modeling.configuration_prism import PrismConfig
from ..modeling.families import registered_families
from ..modeling.checkpointing import as_torch_dtype, load_backbone
from ..modeling.modeling_prism import PrismForMaskedDiffusion
from ..sampling.pipeline_prism import PrismPipeline, classifier_free_guidance
from ..sampling.presets import METHOD_PRESETS, TASK_SAMPLER_FIELDS
from ..sampling.remasking import REMASKING_RULES, quality_head_error
from ..sampling.scheduling_prism import PrismScheduler
from ..sampling.unmasking import top_per_row
from ..utils.distributed import destroy_process_group_at_exit

__all__ = [
    "MC_SAMPLINGS",
    "MonteCarloLogLikelihood",
    "PrismLM",
    "combine_guidance",
    "greedy_match",
    "guided_logits",
    "monte_carlo_loglikelihood",
]

logger = logging.getLogger(__name__)

#: How the Monte Carlo estimator picks the masked continuation tokens of a draw.
MC_SAMPLINGS = ("fixed_count", "random_rate")

#: ``(input_ids (B, S), attention_mask (B, S) or None) -> logits (B, S, V)``, position ``i`` describing token ``i``.
LogitsFn = Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


# ----- the estimator, as plain functions --------------------------------------------------------------------------
@dataclass
class MonteCarloLogLikelihood:
    """Output of [`monte_carlo_loglikelihood`].

    Args:
        loglikelihood (`torch.FloatTensor` of shape `(num_rows,)`): The estimate of ``B(continuation | context)``
            per row: the mean of the ``mc_num`` draws (float32, on CPU).
        standard_error (`torch.FloatTensor` of shape `(num_rows,)`): ``std(draws) / sqrt(mc_num)``, as if the draws
            were independent (NaN when ``mc_num == 1``). With ``"fixed_count"`` (evenly spread counts) it overstates
            the error, with ``"random_rate"`` (infinite variance) it understates it: on the 4-token continuation of
            ``tests/test_lm_eval.py``'s table model, with 8 draws, 0.76 and 2.1 reported for actual errors of 0.52
            and 2.6.
        forward_rows (`int`): Sequences passed through the model (a row of a batched forward counts once; with
            ``cfg_scale > 0`` each draw costs two rows).
        forward_calls (`int`): Model forwards, counted as [`PrismPipeline`] counts its ``nfe``: a guided forward (of
            ``2B`` rows) counts as two.
    """

    loglikelihood: torch.Tensor
    standard_error: torch.Tensor
    forward_rows: int
    forward_calls: int


def guided_logits(
    logits_fn: LogitsFn,
    input_ids: torch.LongTensor,
    attention_mask: Optional[torch.Tensor],
    context_mask: torch.BoolTensor,
    mask_token_id: int,
    cfg_scale: float = 0.0,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The model's logits, and with ``cfg_scale > 0`` those of the same rows with the context masked.

    LLaDA's unsupervised classifier-free guidance combines the two as ``un + (cfg_scale + 1) * (cond - un)``
    ([`~prism_hf.sampling.pipeline_prism.classifier_free_guidance`], the formula the pipeline's steps use); callers
    combine them only where they need logits, which saves a ``(B, S, V)`` tensor.

    Args:
        logits_fn (`Callable`): ``(input_ids, attention_mask) -> logits`` of shape `(B, S, V)`.
        input_ids (`torch.LongTensor` of shape `(B, S)`): The (partly masked) rows.
        attention_mask (`torch.Tensor` of shape `(B, S)`, *optional*): 1 for real tokens, 0 for padding.
        context_mask (`torch.BoolTensor` of shape `(B, S)`): The context positions, masked in the unconditional rows.
        mask_token_id (`int`): The mask token id.
        cfg_scale (`float`): 0 turns guidance off (one forward).

    Returns:
        `(cond, uncond)`: two `(B, S, V)` tensors; ``uncond`` is `None` when ``cfg_scale == 0``. With guidance the
        two halves come from one forward of ``2B`` rows.
    """
    if cfg_scale == 0:
        return logits_fn(input_ids, attention_mask), None
    uncond_ids = input_ids.masked_fill(context_mask, mask_token_id)
    both_attention = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
    both = logits_fn(torch.cat([input_ids, uncond_ids]), both_attention)
    return both[: input_ids.shape[0]], both[input_ids.shape[0] :]


#: The guidance formula, under the name this module exported before it moved to the pipeline (one formula).
combine_guidance = classifier_free_guidance


def _check_estimator_inputs(input_ids, target_mask, attention_mask, mc_num, batch_size, mc_sampling, cfg_scale) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.is_floating_point():
        raise ValueError(
            f"input_ids must be a (num_rows, seq_len) tensor of token ids; got {type(input_ids).__name__} "
            f"{tuple(getattr(input_ids, 'shape', ()))}."
        )
    if not isinstance(target_mask, torch.Tensor) or target_mask.shape != input_ids.shape:
        raise ValueError(
            f"target_mask must be a boolean tensor of the shape of input_ids {tuple(input_ids.shape)}; got "
            f"{tuple(getattr(target_mask, 'shape', ()))}."
        )
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}; got {tuple(attention_mask.shape)}."
        )
    if isinstance(mc_num, bool) or not isinstance(mc_num, int) or mc_num < 1:
        raise ValueError(f"mc_num={mc_num!r} must be an int >= 1 (Monte Carlo draws per continuation).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1 (rows per model forward).")
    if mc_sampling not in MC_SAMPLINGS:
        raise ValueError(f"mc_sampling={mc_sampling!r} is not valid; choose one of {list(MC_SAMPLINGS)}.")
    if isinstance(cfg_scale, bool) or not isinstance(cfg_scale, (int, float)) or cfg_scale < 0:
        raise ValueError(f"cfg_scale={cfg_scale!r} must be a float >= 0 (0 turns classifier-free guidance off).")


def _draw_masks(
    target: torch.BoolTensor,
    num_targets: torch.LongTensor,
    draw_index: torch.LongTensor,
    start: torch.LongTensor,
    mc_num: int,
    mc_sampling: str,
    generator: Optional[torch.Generator],
) -> Tuple[torch.BoolTensor, torch.Tensor]:
    """One draw per row: which continuation tokens to mask, and the draw's weight."""
    rows, width = target.shape
    keys = torch.rand((rows, width), device=target.device, generator=generator)
    length = num_targets.clamp(min=1)
    if mc_sampling == "fixed_count":
        # l ~ U{1..L}, spread evenly over the mc_num draws of a row from a uniform random start (LLaDA's low-variance
        # variant); shifting a uniform start by a constant modulo L keeps every draw's l exactly uniform.
        count = (start - 1 + torch.div(draw_index * length, mc_num, rounding_mode="floor")) % length + 1
        masked = top_per_row(keys.masked_fill(~target, float("inf")), count, descending=False) & target
        weight = length.float() / count.float()
    else:
        # t ~ U(0, 1] (1 - U[0, 1)), each continuation token masked with probability t, weight 1 / t.
        t = 1.0 - torch.rand((rows,), device=target.device, generator=generator)
        masked = target & (keys < t[:, None])
        weight = t.reciprocal()
    return masked, weight


def _score_draws(logits_fn: LogitsFn, clean: torch.Tensor, masked: torch.Tensor, target: torch.Tensor,
                 valid: torch.Tensor, mask_token_id: int, cfg_scale: float) -> torch.Tensor:
    """One forward for a chunk of draws: the summed ``log p`` of the true tokens at each draw's masked positions,
    `(rows,)` (unweighted)."""
    noisy = clean.masked_fill(masked, mask_token_id)
    attention = None if bool(valid.all()) else valid.long()
    cond, uncond = guided_logits(logits_fn, noisy, attention, valid & ~target, mask_token_id, cfg_scale)
    logits = classifier_free_guidance(cond[masked], None if uncond is None else uncond[masked], cfg_scale)
    token_logp = logits.log_softmax(-1).gather(-1, clean[masked].unsqueeze(-1)).squeeze(-1)
    return torch.zeros(masked.shape, device=clean.device).masked_scatter(masked, token_logp).sum(-1)


@torch.no_grad()
def monte_carlo_loglikelihood(
    logits_fn: LogitsFn,
    input_ids: torch.LongTensor,
    target_mask: torch.BoolTensor,
    *,
    mask_token_id: int,
    mc_num: int = 128,
    batch_size: int = 32,
    mc_sampling: str = "fixed_count",
    cfg_scale: float = 0.0,
    attention_mask: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> MonteCarloLogLikelihood:
    r"""LLaDA's Monte Carlo estimate of ``log p(continuation | context)`` for a masked diffusion model, batched.

    A draw masks some continuation tokens of a row, runs the model once and scores ``log p`` of the true tokens at
    the masked positions, weighted; the estimate is the mean over ``mc_num`` draws. Both samplings are unbiased for
    the same quantity ``B(x | c)`` (module docstring):

    - ``"fixed_count"`` (LLaDA's evaluation, Eq. 6 of arXiv 2502.09992): mask exactly ``l`` tokens chosen uniformly,
      ``l ~ U{1..L}``, weight ``L / l``. The ``mc_num`` counts of a row are spread evenly over ``1..L`` from a random
      start, as LLaDA's evaluation does, which lowers the variance further.
    - ``"random_rate"`` (the training objective, Eq. 3): ``t ~ U(0, 1]``, mask each token with probability ``t``,
      weight ``1 / t``. Unbiased too, but the variance of one draw is infinite (a draw at small ``t`` that masks one
      token weighs ``1 / t``), so its mean converges slowly and ``standard_error`` understates the error.

    Rows are laid out as ``[context, continuation, padding]`` (padding last, as [`PrismPipeline`] does), so every
    token keeps the position it has without padding.

    Args:
        logits_fn (`Callable`): ``(input_ids (B, S), attention_mask (B, S) or None) -> logits (B, S, V)`` with
            position ``i`` describing token ``i`` (e.g. ``lambda ids, am: pipe.model_forward(ids, am)[0]``).
        input_ids (`torch.LongTensor` of shape `(num_rows, seq_len)`): Context and continuation tokens per row.
        target_mask (`torch.BoolTensor` of shape `(num_rows, seq_len)`): `True` at the continuation's positions.
            A row without any scores 0 (the log-likelihood of an empty continuation).
        mask_token_id (`int`): The mask token id.
        mc_num (`int`, defaults to 128): Draws per row (LLaDA: 128; 1 suffices for one-token continuations).
        batch_size (`int`, defaults to 32): Rows per forward (draws of several rows share a forward; with guidance
            a draw takes two rows, so a forward holds half as many draws).
        mc_sampling (`str`, defaults to `"fixed_count"`): `"fixed_count"` or `"random_rate"`.
        cfg_scale (`float`, defaults to 0): LLaDA's unsupervised classifier-free guidance: the scores come from
            ``cond + cfg_scale * (cond - uncond)``, ``uncond`` the logits with the context masked. With guidance the
            estimate is a score, no longer a bound on the model's log-likelihood.
        attention_mask (`torch.Tensor` of shape `(num_rows, seq_len)`, *optional*): 1 for real tokens, 0 for padding.
        generator (`torch.Generator`, *optional*): RNG for the draws (on the device of ``input_ids``).

    Returns:
        [`MonteCarloLogLikelihood`]: the estimates, their standard errors and the forward count.
    """
    _check_estimator_inputs(input_ids, target_mask, attention_mask, mc_num, batch_size, mc_sampling, cfg_scale)
    device = input_ids.device
    target = target_mask.to(device=device, dtype=torch.bool)
    valid = torch.ones_like(target) if attention_mask is None else attention_mask.to(device).bool()
    target = target & valid
    num_rows = input_ids.shape[0]
    num_targets = target.sum(-1)
    start = (torch.rand((num_rows,), device=device, generator=generator) * num_targets.clamp(min=1)).long() + 1
    totals = torch.zeros(num_rows, dtype=torch.float64, device=device)
    squares = torch.zeros(num_rows, dtype=torch.float64, device=device)
    guidance = 2 if cfg_scale > 0 else 1  # a guided draw takes a conditional and an unconditional row
    chunks = torch.arange(num_rows * mc_num, device=device).split(max(1, batch_size // guidance))
    for chunk in chunks:
        row, draw = torch.div(chunk, mc_num, rounding_mode="floor"), chunk % mc_num
        width = int(valid[row].sum(-1).max())  # padding goes last: drop the columns no row of this chunk uses
        clean, row_target, row_valid = input_ids[row, :width], target[row, :width], valid[row, :width]
        masked, weight = _draw_masks(row_target, num_targets[row], draw, start[row], mc_num, mc_sampling, generator)
        per_draw = (_score_draws(logits_fn, clean, masked, row_target, row_valid, mask_token_id, cfg_scale) * weight).double()
        totals.index_add_(0, row, per_draw)
        squares.index_add_(0, row, per_draw.square())
    mean = totals / mc_num
    standard_error = torch.full_like(mean, float("nan"))
    if mc_num > 1:
        standard_error = (((squares - mc_num * mean.square()) / (mc_num - 1)).clamp(min=0) / mc_num).sqrt()
    return MonteCarloLogLikelihood(
        loglikelihood=mean.float().cpu(), standard_error=standard_error.float().cpu(),
        forward_rows=num_rows * mc_num * guidance, forward_calls=len(chunks) * guidance,
    )


@torch.no_grad()
def greedy_match(
    logits_fn: LogitsFn,
    input_ids: torch.LongTensor,
    target_mask: torch.BoolTensor,
    *,
    mask_token_id: int,
    batch_size: int = 32,
    cfg_scale: float = 0.0,
    attention_mask: Optional[torch.Tensor] = None,
) -> Tuple[torch.BoolTensor, int]:
    """Whether greedy decoding of the masked continuation reproduces it (lm-eval's ``is_greedy``), as LLaDA checks.

    The continuation starts fully masked; each of its ``L`` steps fills the one masked position whose argmax token is
    most probable (a vanilla [`PrismScheduler`]: ``remasking="none"``, ``unmasking="confidence"``, greedy); the row
    matches when the result equals the continuation. Rows are grouped by continuation length so that every row
    fills exactly one token per step.

    Args:
        logits_fn (`Callable`), input_ids, target_mask, attention_mask, mask_token_id, cfg_scale: As in
            [`monte_carlo_loglikelihood`].
        batch_size (`int`): Rows per forward.

    Returns:
        `(matches, forward_rows)`: a `(num_rows,)` boolean tensor (on CPU) and the sequences passed through the model.
    """
    _check_estimator_inputs(input_ids, target_mask, attention_mask, 1, batch_size, MC_SAMPLINGS[0], cfg_scale)
    device = input_ids.device
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.to(device).bool()
    target = target_mask.to(device=device, dtype=torch.bool) & valid
    lengths = target.sum(-1)
    matches = torch.ones(input_ids.shape[0], dtype=torch.bool, device=device)
    scheduler = PrismScheduler(unmasking="confidence", remasking="none", temperature=0.0)
    forward_rows = 0
    for length in lengths.unique().tolist():
        if length == 0:
            continue
        rows = (lengths == length).nonzero().squeeze(-1)
        for chunk in rows.split(max(1, batch_size // (2 if cfg_scale > 0 else 1))):
            width = int(valid[chunk].sum(-1).max())
            clean, row_target, row_valid = input_ids[chunk, :width], target[chunk, :width], valid[chunk, :width]
            chunk_attention = None if bool(row_valid.all()) else row_valid.long()
            sample = clean.masked_fill(row_target, mask_token_id)
            scheduler.set_timesteps(length, device=device)
            for step in range(length):
                cond, uncond = guided_logits(logits_fn, sample, chunk_attention, row_valid & ~row_target, mask_token_id, cfg_scale)
                logits = classifier_free_guidance(cond, uncond, cfg_scale)
                sample = scheduler.step(logits, step, sample, mask_token_id=mask_token_id, maskable=row_target).prev_sample
                forward_rows += sample.shape[0] * (2 if uncond is not None else 1)
            matches[chunk] = ((sample == clean) | ~row_target).all(-1)
    return matches.cpu(), forward_rows


# ----- the lm-eval model ------------------------------------------------------------------------------------------
#: PrismPipeline.__call__ arguments that PrismLM sets itself (never taken from --model_args).
_PIPELINE_OWNED = frozenset({
    "self", "prompt", "messages", "input_ids", "attention_mask", "gen_length", "generator", "output_type",
    "return_dict", "return_quality", "return_history", "show_progress", "callback_on_step_end",
    "callback_on_step_end_tensor_inputs", "chat_template_kwargs",
})
#: gen_kwargs of lm-eval tasks that generate_until reads; others are ignored with a warning.
_GEN_KWARGS = frozenset({"until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k"})
_DEFAULT_MAX_LENGTH = 2048
_DEFAULT_MAX_GEN_TOKS = 256


def _parameters(fn: Callable) -> List[str]:
    return [name for name, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name != "self"]


def scheduler_arguments() -> List[str]:
    """The [`PrismScheduler`] config fields accepted as ``--model_args`` (read from its signature at run time)."""
    return _parameters(PrismScheduler.__init__)


def pipeline_arguments() -> List[str]:
    """The [`PrismPipeline`] call arguments accepted as ``--model_args`` (its signature, less those PrismLM sets)."""
    scheduler = set(scheduler_arguments())
    return [name for name in _parameters(PrismPipeline.__call__) if name not in _PIPELINE_OWNED and name not in scheduler]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be an int >= 1" + (" ('auto' is not supported)." if value == "auto" else "."))
    return value


def _check_sampler_kwargs(sampler_kwargs: Dict[str, Any]) -> None:
    """Every ``--model_args`` key that is not PrismLM's own must be a scheduler field or a pipeline argument."""
    scheduler_names, pipeline_names = scheduler_arguments(), pipeline_arguments()
    unknown = sorted(set(sampler_kwargs) - set(scheduler_names) - set(pipeline_names))
    if unknown:
        own = sorted(_parameters(PrismLM.__init__))
        raise ValueError(
            f"Unknown --model_args {unknown} for the 'prism' model. Valid: PrismLM {own}; PrismScheduler "
            f"{sorted(scheduler_names)}; PrismPipeline {sorted(pipeline_names)}."
        )


def _make_scheduler(method: Optional[str], scheduler_kwargs: Dict[str, Any]) -> PrismScheduler:
    """``method`` on the task settings among ``scheduler_kwargs`` (the others added as they are), else a plain
    [`PrismScheduler`] of ``scheduler_kwargs``."""
    if method is None:
        return PrismScheduler(**scheduler_kwargs)
    if "remasking" in scheduler_kwargs:
        raise ValueError(
            f"method={method!r} and remasking={scheduler_kwargs['remasking']!r}: pass one (a method sets its own "
            "remasking rule; remasking= names a rule directly)."
        )
    preset = METHOD_PRESETS.lookup(method)  # an unknown name is an error that lists the methods
    task = {k: v for k, v in scheduler_kwargs.items() if k in TASK_SAMPLER_FIELDS}
    chosen = preset.scheduler_kwargs(task)
    unused = sorted(k for k, v in task.items() if k not in chosen or chosen[k] != v)
    if unused:
        raise ValueError(
            f"method={method!r} does not use {', '.join(f'{k}={task[k]!r}' for k in unused)}: it sets "
            f"{chosen} (see prism_hf.sampling.presets). Drop "
            f"{'it' if len(unused) == 1 else 'them'}, or pass remasking= with the settings you want instead of method=."
        )
    return preset.scheduler(task, **{k: v for k, v in scheduler_kwargs.items() if k not in TASK_SAMPLER_FIELDS})


def _check_method_word(args: Dict[str, Any]) -> None:
    """lm-eval's --model_args parser reads the word ``none`` as None, which for ``method`` would mean no method (and
    so the scheduler's default rule, PRISM): refuse it rather than run the wrong sampler."""
    if "method" in args and args["method"] is None:
        raise ValueError(
            "method=none is not a method (lm-eval reads the word `none` as None, and without a method the sampler is "
            "remasking=prism). For no remasking use method=vanilla (or remasking=none); for no method leave it out."
        )


def _methods_without_head() -> List[str]:
    return [name for name, preset in METHOD_PRESETS.items()
            if not REMASKING_RULES.lookup(preset.remasking).needs_quality]


@register_model("prism")
class PrismLM(TemplateLM):
    r"""lm-evaluation-harness model for masked diffusion LMs with PRISM (or any [`PrismScheduler`] sampler).

    From the command line every argument is a ``--model_args`` key; lm-eval itself passes ``batch_size``,
    ``max_batch_size`` and ``device``:

        lm_eval --model prism --tasks gsm8k --batch_size 8 \
            --model_args pretrained=runs/prism-llada,remasking=prism,remask_schedule=budget,remask_budget=12,gen_length=256,block_length=32,num_inference_steps=128

    Args:
        pretrained (`str` or `nn.Module`): A PRISM checkpoint (folder or Hub id, ``model_type="prism"``), a plain
            backbone of a registered family (``prism_hf.registered_families()``), or a loaded model.
        tokenizer (`str` or tokenizer, *optional*): Defaults to the one saved with ``pretrained``, else (PRISM
            checkpoints) the one of its backbone reference.
        backbone (`str`, *optional*): For a PRISM checkpoint: load the backbone from here instead of the recorded
            reference (e.g. a local copy when offline).
        trust_remote_code (`bool`): For backbones without a native port. Never turned on for you.
        dtype (`str`, defaults to `"auto"`): ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        device (`str`, *optional*): Defaults to CUDA when available; under ``accelerate launch`` each process uses
            its own device.
        batch_size (`int`, defaults to 1): Prompts per pipeline call; for ``loglikelihood`` the Monte Carlo draws per
            forward.
        max_batch_size (`int`, *optional*): Accepted for lm-eval's interface; unused (no automatic batch size).
        max_length (`int`, *optional*): Longest sequence (context + continuation or generation) fed to the model;
            longer contexts are truncated from the left. Defaults to the model's maximum, else 2048.
        gen_length (`int`, *optional*): Generation canvas for ``generate_until``. Defaults to each request's
            ``max_gen_toks`` (rounded up to a multiple of ``block_length``); replies are cut at ``max_gen_toks``
            tokens either way.
        mc_num (`int`, defaults to 128): Monte Carlo draws per ``loglikelihood`` request.
        mc_sampling (`str`, defaults to `"fixed_count"`): `"fixed_count"` or `"random_rate"` (see
            [`monte_carlo_loglikelihood`]).
        cfg_scale (`float`, defaults to 0): Classifier-free guidance for ``loglikelihood`` (and for generation when
            the pipeline accepts a ``cfg_scale``).
        check_greedy (`bool`, defaults to `False`): Compute ``is_greedy`` with [`greedy_match`] (``L`` extra
            forwards per request); `False` reports `False`, as LLaDA's ``is_check_greedy=False`` does.
        seed (`int`, defaults to 0): Seed of the sampler's and the estimator's RNG (offset by the process rank).
        method (`str`, *optional*): A named sampling method of [`~prism_hf.sampling.presets.METHOD_PRESETS`]
            (``prism``, ``vanilla-confidence``, ``remdm-conf``, ``confidence-remask``, ...), the same table the Sudoku,
            code and text evaluations use. The method sets the remasking rule (so ``remasking`` is not given with it)
            and, for ``vanilla-confidence`` / ``-margin`` / ``-entropy`` / ``-random``, the unmasking rule;
            ``unmasking`` and the remask counts (``num_remask``, ``remask_schedule``, ``remask_budget``, ``eta``,
            ``step_on``, ``step_off``, ``prism_loop_steps``) are sampler settings taken by the methods that use them.
            Such a setting that the method does not use is an error, so that none is silently dropped; ``method=none``
            is an error too (use ``vanilla``). Without ``method``, ``remasking`` names a rule directly and every
            scheduler argument applies.
        sampler_kwargs: Every [`PrismScheduler`] config field (``remasking``, ``unmasking``, ``remask_schedule``,
            ``num_remask``, ``block_length``, ...) and every [`PrismPipeline`] call argument other than the inputs
            and outputs (``num_inference_steps``, ``eos_early_stop``, ...). The valid names are read from the two
            signatures at run time; an unknown name is an error that lists them.
    """

    backend = "causal"  # lm-eval's TemplateLM: encode context + continuation together, then split

    def __init__(
        self,
        pretrained: Union[str, os.PathLike, nn.Module, None] = None,
        tokenizer: Any = None,
        backbone: Optional[str] = None,
        trust_remote_code: bool = False,
        dtype: Any = "auto",
        device: Optional[str] = None,
        batch_size: Union[int, str] = 1,
        max_batch_size: Optional[int] = None,
        max_length: Optional[int] = None,
        gen_length: Optional[int] = None,
        mc_num: int = 128,
        mc_sampling: str = "fixed_count",
        cfg_scale: float = 0.0,
        check_greedy: bool = False,
        seed: int = 0,
        method: Optional[str] = None,
        **sampler_kwargs: Any,
    ):
        super().__init__()
        # ----- validate everything that needs no model -----
        _check_sampler_kwargs(sampler_kwargs)
        if pretrained is None:
            raise ValueError("pretrained=None: pass --model_args pretrained=<PRISM checkpoint or backbone path / Hub id>.")
        torch_dtype = as_torch_dtype(dtype)  # raises for a bad dtype, naming the valid ones
        self.batch_size_per_gpu = _positive_int("batch_size", batch_size)
        self.mc_num = _positive_int("mc_num", mc_num)
        max_length = None if max_length is None else _positive_int("max_length", max_length)
        gen_length = None if gen_length is None else _positive_int("gen_length", gen_length)
        _check_estimator_inputs(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.bool), None,
                                self.mc_num, self.batch_size_per_gpu, mc_sampling, cfg_scale)
        scheduler_names = scheduler_arguments()
        # lm-eval's --model_args parser reads the word `none` as None: for a scheduler field whose values are names
        # (its default is a string, e.g. remasking), None can only mean the rule called "none".
        defaults = {n: p.default for n, p in inspect.signature(PrismScheduler.__init__).parameters.items()}
        sampler_kwargs = {k: "none" if v is None and isinstance(defaults.get(k), str) else v for k, v in sampler_kwargs.items()}
        self.method = None if method is None else METHOD_PRESETS.lookup(method).name
        self.scheduler = _make_scheduler(method, {k: v for k, v in sampler_kwargs.items() if k in scheduler_names})
        self.generation_kwargs = {k: v for k, v in sampler_kwargs.items() if k not in scheduler_names}
        self.mc_sampling, self.cfg_scale, self.check_greedy = mc_sampling, float(cfg_scale), bool(check_greedy)
        self.gen_length, self._max_length_arg = gen_length, max_length
        self._pipeline_takes_cfg = "cfg_scale" in _parameters(PrismPipeline.__call__)

        # ----- processes and device -----
        from accelerate import PartialState
        from accelerate.utils import parse_flag_from_env

        state = PartialState(cpu=True) if parse_flag_from_env("ACCELERATE_USE_CPU") else PartialState()
        self._state = state if state.num_processes > 1 else None
        if self._state is not None:
            self._rank, self._world_size = state.process_index, state.num_processes
            self._device = state.device
            destroy_process_group_at_exit()  # lm-eval never destroys it; gloo's threads would abort a rank at exit
        else:
            self._device = _pick_device(device)

        # ----- model, tokenizer, pipeline -----
        model, self.pretrained_name = _load_model(pretrained, backbone, trust_remote_code, torch_dtype)
        if isinstance(pretrained, nn.Module) and torch_dtype is not None:
            model = model.to(dtype=torch_dtype)
        self.model = model.to(self._device).eval()
        self.is_prism_checkpoint = isinstance(model, PrismForMaskedDiffusion)
        rule = self.scheduler.remasking_rule
        if rule.needs_quality and not hasattr(model, "quality_head"):
            plain = f"pretrained={self.pretrained_name!r} is a plain backbone ({type(model).__name__})"
            if self.method is not None:
                raise ValueError(f"method={self.method!r} needs a PRISM quality head, but {plain}. Use a PRISM checkpoint, "
                                 f"or a method that needs no head: {_methods_without_head()}.")
            raise quality_head_error(rule.name, f"a PRISM quality head, but {plain}")
        self.tokenizer = _load_tokenizer(tokenizer, pretrained, model, trust_remote_code)
        self.pipeline = PrismPipeline(model=self.model, scheduler=self.scheduler, tokenizer=self.tokenizer)
        self.pipeline.set_progress_bar_config(disable=True)
        self.mask_token_id = self.pipeline.resolve_mask_token_id(self.generation_kwargs.get("mask_token_id"))
        self._generator = torch.Generator(device=self._device).manual_seed(int(seed) + self._rank)
        self.seed = int(seed)
        self._pipelines: Dict[Tuple, PrismPipeline] = {(): self.pipeline}
        self._warned: set = set()
        self._nfe_local: Dict[str, Dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._nfe_total: Dict[str, Dict[str, int]] = {}

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: Optional[Dict[str, Any]] = None) -> "PrismLM":
        from lm_eval.utils import simple_parse_args_string

        _check_method_word(simple_parse_args_string(arg_string))
        return super().create_from_arg_string(arg_string, additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: Dict[str, Any], additional_config: Optional[Dict[str, Any]] = None) -> "PrismLM":
        _check_method_word(arg_dict)
        return super().create_from_arg_obj(arg_dict, additional_config)

    # ----- lm-eval's interface: processes ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate ``tensor`` from every process (0-d tensors become one entry per process)."""
        if self._state is None:
            return tensor
        from accelerate.utils import gather

        return gather(tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> Optional[List[Any]]:
        if self._state is None:
            return [obj]
        result = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj, result, dst=dst)
        return result

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()

    # ----- lm-eval's interface: tokenizer ------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """Conditioning token of an empty context: BOS when the tokenizer has one, else EOS."""
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return self.eot_token_id if bos is None else bos

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "") or "prism-tokenizer").replace("/", "__")

    @property
    def max_length(self) -> int:
        if self._max_length_arg is not None:
            return self._max_length_arg
        return self.pipeline.max_length or _DEFAULT_MAX_LENGTH

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs) -> List[int]:
        if add_special_tokens is None:
            # A string that starts with BOS (a chat template's output) gets no second one.
            bos = getattr(self.tokenizer, "bos_token", None)
            add_special_tokens = not (bos and string.startswith(bos))
        return self.tokenizer.encode(string, add_special_tokens=add_special_tokens)

    def apply_chat_template(self, chat_history: List[Dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render lm-eval's chat (``--apply_chat_template``) with the tokenizer's template, as text."""
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"--apply_chat_template was given, but the tokenizer of {self.pretrained_name!r} has no chat template."
            )
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # ----- requests ----------------------------------------------------------------------------------------------
    def _logits(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        return self.pipeline.model_forward(input_ids, attention_mask)[0]

    def _takes_padding_mask(self) -> bool:
        """Whether the backbone honours a padding mask; one that does not (MDLM) attends to padding, so rows of
        different lengths must not share a batch ([`PrismPipeline.takes_padding_mask`])."""
        return self.pipeline.takes_padding_mask

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)

    def _pad(self, rows: Sequence[Sequence[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.mask_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # setup only (building the batch), not tensor math
            ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
            attention[i, : len(r)] = 1
        return ids.to(self._device), attention.to(self._device)

    def _count(self, kind: str, requests: int = 0, forward_calls: int = 0, forward_rows: int = 0) -> None:
        counts = self._nfe_local[kind]
        counts["requests"] += requests
        counts["forward_calls"] += forward_calls
        counts["forward_rows"] += forward_rows

    def _sync_counts(self) -> None:
        """Sum the NFE counters over processes (every process calls each request method, as lm-eval's own barrier
        after it assumes)."""
        kinds = sorted(self._nfe_local)
        fields = ("requests", "forward_calls", "forward_rows")
        local = torch.tensor([[self._nfe_local[k][f] for f in fields] for k in kinds], dtype=torch.long, device=self._device)
        if self._state is not None:
            from accelerate.utils import reduce

            local = reduce(local, reduction="sum")
        for kind, row in zip(kinds, local.tolist()):
            self._nfe_total[kind] = dict(zip(fields, row))

    def _loglikelihood_tokens(
        self, requests, disable_tqdm: bool = False, kind: str = "loglikelihood", **kwargs
    ) -> List[Tuple[float, bool]]:
        """Score ``((context, continuation) strings or None, context ids, continuation ids)`` requests; the forwards
        are booked under ``kind``."""
        max_length = self.max_length
        prepared = []
        for strings, context, continuation in requests:
            context, continuation = list(context), list(continuation)
            if len(continuation) >= max_length:
                self._warn_once("cont", f"A continuation of {len(continuation)} tokens was cut to its last {max_length - 1}.")
                continuation = continuation[-(max_length - 1):]
            context = context[-(max_length - len(continuation)):]
            prepared.append((strings, context, continuation))
        length = [len(context) + len(continuation) for _, context, continuation in prepared]
        order = sorted(range(len(prepared)), key=lambda i: -length[i])
        per_call = max(1, self.batch_size_per_gpu // self.mc_num)
        # longest first, so that a batch is padded little; without a padding mask, one length per batch
        same_length = not self._takes_padding_mask()
        chunks = [order[i : i + per_call] for i in range(0, len(order), per_call)] if not same_length else [
            group[i : i + per_call] for group in (list(g) for _, g in itertools.groupby(order, key=lambda i: length[i]))
            for i in range(0, len(group), per_call)
        ]
        results: List[Optional[Tuple[float, bool]]] = [None] * len(prepared)
        for chunk in chunks:
            ids, attention = self._pad([prepared[i][1] + prepared[i][2] for i in chunk])
            positions = torch.arange(ids.shape[1], device=self._device)
            ctx_len = torch.tensor([len(prepared[i][1]) for i in chunk], device=self._device)
            cont_len = torch.tensor([len(prepared[i][2]) for i in chunk], device=self._device)
            target = (positions >= ctx_len[:, None]) & (positions < (ctx_len + cont_len)[:, None])
            attention_mask = None if bool(attention.bool().all()) else attention
            estimate = monte_carlo_loglikelihood(
                self._logits, ids, target, mask_token_id=self.mask_token_id, mc_num=self.mc_num,
                batch_size=self.batch_size_per_gpu, mc_sampling=self.mc_sampling, cfg_scale=self.cfg_scale,
                attention_mask=attention_mask, generator=self._generator,
            )
            rows, calls = estimate.forward_rows, estimate.forward_calls
            greedy = torch.zeros(len(chunk), dtype=torch.bool)
            if self.check_greedy:
                greedy, greedy_rows = greedy_match(
                    self._logits, ids, target, mask_token_id=self.mask_token_id, batch_size=self.batch_size_per_gpu,
                    cfg_scale=self.cfg_scale, attention_mask=attention_mask,
                )
                rows += greedy_rows
            self._count(kind, requests=len(chunk), forward_calls=calls, forward_rows=rows)
            for j, i in enumerate(chunk):
                results[i] = (float(estimate.loglikelihood[j]), bool(greedy[j]))
                if prepared[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", prepared[i][0], results[i])
        return results

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> List[Tuple[float, bool]]:
        """``(context, continuation)`` requests -> ``(estimate of B(continuation | context), is_greedy)``."""
        results = super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        self._sync_counts()
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> List[float]:
        """The estimator summed over lm-eval's disjoint rolling windows of ``max_length`` tokens (each window
        conditioned on the token before it, as lm-eval's Hugging Face model does): a sum of per-window bounds."""
        windows, owners = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            tokens = self.tok_encode(string, add_special_tokens=False)
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                token_list=tokens, prefix_token=self.prefix_token_id, max_seq_len=self.max_length - 1, context_len=1,
            )):
                windows.append((None, context, continuation))
                owners.append(index)
        scores = self._loglikelihood_tokens(windows, kind="loglikelihood_rolling") if windows else []
        # the counter counted windows; a request is a document
        self._nfe_local["loglikelihood_rolling"]["requests"] += len(requests) - len(windows)
        totals = [0.0] * len(requests)
        for owner, (score, _) in zip(owners, scores):
            totals[owner] += score
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        self._sync_counts()
        return totals

    # ----- generation --------------------------------------------------------------------------------------------
    def _pipeline_for(self, gen_kwargs: Dict[str, Any]) -> PrismPipeline:
        """The pipeline, with the task's sampling settings when it asks for ``do_sample=True``."""
        overrides: Tuple = ()
        if gen_kwargs.get("do_sample"):
            temperature = gen_kwargs.get("temperature", 1.0)
            # HF's conventions: top_k <= 0 and top_p >= 1 mean "no filter"
            overrides = (("temperature", float(temperature)),) + tuple(
                (k, gen_kwargs[k]) for k in ("top_p", "top_k")
                if gen_kwargs.get(k) is not None and (gen_kwargs[k] > 0 if k == "top_k" else gen_kwargs[k] < 1)
            )
        if overrides not in self._pipelines:
            scheduler = PrismScheduler.from_config(self.scheduler.config, **dict(overrides))
            self._pipelines[overrides] = PrismPipeline(model=self.model, scheduler=scheduler, tokenizer=self.tokenizer)
            self._pipelines[overrides].set_progress_bar_config(disable=True)
        return self._pipelines[overrides]

    def _canvas_length(self, max_gen_toks: int) -> int:
        if self.gen_length is not None:
            if max_gen_toks > self.gen_length:
                self._warn_once("canvas", f"max_gen_toks={max_gen_toks} is more than gen_length={self.gen_length}; "
                                          f"replies have at most {self.gen_length} tokens.")
            return self.gen_length
        block = self.scheduler.config.block_length
        return max_gen_toks if not block else -(-max_gen_toks // block) * block

    def _reply(self, tokens: torch.Tensor, until: List[str]) -> str:
        text = self.tokenizer.decode(tokens.tolist(), skip_special_tokens=False)
        cut = min((text.find(stop) for stop in until if stop and stop in text), default=len(text))
        text = text[:cut]
        for special in getattr(self.tokenizer, "all_special_tokens", []):
            text = text.replace(special, "")
        return text

    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        """Generate with [`PrismPipeline`] in batches; cut each reply at ``max_gen_toks`` tokens, then at the first
        stop sequence of ``until`` (and EOS)."""
        eos = getattr(self.tokenizer, "eos_token", None)
        jobs = []
        for index, request in enumerate(requests):
            context, gen_kwargs = request.args
            gen_kwargs = dict(gen_kwargs or {})
            ignored = sorted(set(gen_kwargs) - _GEN_KWARGS)
            if ignored:
                self._warn_once("gen_kwargs", f"generate_until ignores the gen_kwargs {ignored} (it reads {sorted(_GEN_KWARGS)}).")
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            if eos and eos not in until:
                until.append(eos)
            max_gen_toks = _positive_int("max_gen_toks", gen_kwargs.get("max_gen_toks", _DEFAULT_MAX_GEN_TOKS))
            pipe = self._pipeline_for(gen_kwargs)
            length = self._canvas_length(max_gen_toks)
            tokens = self.tok_encode(context)
            if len(tokens) + length > self.max_length:
                self._warn_once("ctx", f"Contexts longer than max_length - gen_length ({self.max_length - length} tokens) "
                                       "are truncated from the left.")
                tokens = tokens[-max(1, self.max_length - length):]
            jobs.append((index, tokens, until, max_gen_toks, length, pipe))
        extra = dict(self.generation_kwargs)
        if self._pipeline_takes_cfg:
            extra.setdefault("cfg_scale", self.cfg_scale)
        elif self.cfg_scale > 0:
            self._warn_once("cfg", "cfg_scale applies to loglikelihood only: this PrismPipeline has no cfg_scale.")
        replies: List[Optional[str]] = [None] * len(requests)
        groups: Dict[Tuple[int, int, int], List] = defaultdict(list)
        same_length = not self._takes_padding_mask()  # a backbone without a padding mask gets one prompt length per batch
        for job in jobs:
            groups[(job[4], id(job[5]), len(job[1]) if same_length else 0)].append(job)
        for (length, _, _), group in groups.items():
            group.sort(key=lambda job: -len(job[1]))
            for start in range(0, len(group), self.batch_size_per_gpu):
                chunk = group[start : start + self.batch_size_per_gpu]
                ids, attention = self._pad([job[1] for job in chunk])
                out = chunk[0][5](
                    input_ids=ids, attention_mask=attention, gen_length=length, generator=self._generator,
                    output_type="seq", return_quality=False, show_progress=False, **extra,
                )
                self._count("generate_until", requests=len(chunk), forward_calls=int(out.nfe),
                            forward_rows=int(out.nfe) * len(chunk))
                for row, (index, _, until, max_gen_toks, _, _) in enumerate(chunk):
                    replies[index] = self._reply(out.sequences[row, :max_gen_toks], until)
                    self.cache_hook.add_partial("generate_until", requests[index].args, replies[index])
        self._sync_counts()
        return replies

    # ----- what the run records ----------------------------------------------------------------------------------
    def get_model_info(self) -> Dict[str, Any]:
        """Merged by lm-eval into ``results["config"]``: the model, the sampler config and the NFE spent, under the
        key ``"prism"``. NFE per request is the number of sequences passed through the model per request (a batched
        forward counts once per row in it), summed over processes."""
        nfe = {}
        for kind, counts in (self._nfe_total or {}).items():
            nfe[kind] = dict(counts, nfe_per_request=counts["forward_rows"] / counts["requests"] if counts["requests"] else None)
        backbone = self.model.backbone if self.is_prism_checkpoint else self.model
        parameter = next(self.model.parameters(), None)
        return {
            "prism": {
                "pretrained": self.pretrained_name,
                "is_prism_checkpoint": self.is_prism_checkpoint,
                "backbone_model_type": getattr(getattr(backbone, "config", None), "model_type", None),
                "model_dtype": None if parameter is None else str(parameter.dtype).replace("torch.", ""),
                "model_num_parameters": sum(p.numel() for p in self.model.parameters()),
                "method": self.method,
                "sampler": {k: v for k, v in self.scheduler.config.items() if not k.startswith("_")},
                "generation": {"gen_length": self.gen_length, "max_length": self.max_length, **self.generation_kwargs},
                "loglikelihood": {"mc_num": self.mc_num, "mc_sampling": self.mc_sampling, "cfg_scale": self.cfg_scale,
                                  "check_greedy": self.check_greedy},
                "seed": self.seed,
                "world_size": self.world_size,
                "nfe": nfe,
            }
        }


# ----- loading ------------------------------------------------------------------------------------------------------
def _pick_device(device: Optional[str]) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1').") from err
    if chosen.type == "cuda" and not torch.cuda.is_available():
        # lm-eval's configuration defaults to cuda:0; on a machine without CUDA run on the CPU, as its HF model does.
        logger.warning("device=%r but CUDA is not available; using the CPU.", device)
        return torch.device("cpu")
    return chosen


def _load_model(pretrained, backbone, trust_remote_code, torch_dtype) -> Tuple[nn.Module, str]:
    if isinstance(pretrained, nn.Module):
        name = getattr(getattr(pretrained, "config", None), "_name_or_path", "") or type(pretrained).__name__
        return pretrained, name
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(f"pretrained must be a path, a Hub id or a loaded model; got {type(pretrained).__name__}.")
    from transformers import PretrainedConfig

    name = str(pretrained)
    families = sorted(registered_families())
    try:
        raw, _ = PretrainedConfig.get_config_dict(name)
    except (OSError, ValueError) as err:
        hint = " It holds a saved pipeline: pass its 'model' subfolder." if os.path.isfile(os.path.join(name, "model_index.json")) else ""
        raise ValueError(
            f"pretrained={name!r} is neither a PRISM checkpoint nor a backbone of a registered family: no readable "
            f"config.json ({type(err).__name__}: {str(err)[:300]}).{hint} Pass a local folder, or a Hub id that is "
            "reachable (or already downloaded when HF_HUB_OFFLINE=1)."
        ) from err
    model_type = raw.get("model_type")
    dtype = "auto" if torch_dtype is None else torch_dtype
    if model_type == PrismConfig.model_type:
        kwargs = {"trust_remote_code": trust_remote_code or None, "dtype": None if torch_dtype is None else torch_dtype}
        if backbone is not None:
            kwargs["backbone"] = backbone
        return PrismForMaskedDiffusion.from_pretrained(name, **kwargs), name
    if model_type in families:
        if backbone is not None:
            raise ValueError(f"backbone={backbone!r} applies to PRISM checkpoints; pretrained={name!r} is a plain backbone.")
        return load_backbone(name, trust_remote_code=bool(trust_remote_code), dtype=dtype).eval(), name
    raise ValueError(
        f"pretrained={name!r} is neither a PRISM checkpoint nor a backbone of a registered family: its model_type is "
        f"{model_type!r}; valid: 'prism' (a PRISM checkpoint) or a registered backbone model_type {families}. Register "
        "its family with prism_hf.register_family(...)."
    )


def _load_tokenizer(tokenizer, pretrained, model, trust_remote_code):
    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    from transformers import AutoTokenizer

    sources = [str(tokenizer)] if tokenizer is not None else []
    if tokenizer is None and isinstance(pretrained, (str, os.PathLike)):
        sources.append(str(pretrained))
    reference = getattr(getattr(model, "config", None), "backbone_name_or_path", None)
    if tokenizer is None and reference:
        sources.append(str(reference))
    errors = []
    for source in sources:
        try:
            return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, TypeError) as err:
            errors.append(f"{source}: {type(err).__name__}")
    what = type(pretrained).__name__ if isinstance(pretrained, nn.Module) else str(pretrained)
    raise ValueError(
        f"No tokenizer found for pretrained={what!r} (tried {errors or 'nothing'}). Pass --model_args "
        "tokenizer=<path or Hub id> (or tokenizer=<a tokenizer> from Python)."
    )
