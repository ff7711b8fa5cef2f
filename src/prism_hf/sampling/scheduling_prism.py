"""`PrismScheduler`: one sampling step of a masked diffusion model with PRISM remasking (or a baseline).

The scheduler is the sibling of diffusers' `BlockRefinementScheduler`: the sampling knobs live on its config,
[`~PrismScheduler.set_timesteps`] plans one block's steps, and [`~PrismScheduler.step`] turns one model output
into the next tokens. Its step works on whole batches with per-row counts (rows may have different numbers of
masks, as Sudoku puzzles do) and never leaves the device: no per-row Python loop, no `.item()`.

One step, for every row (see `docs/sampling.md`):

1. draw a token at every position from the posterior (greedy, or temperature / top-k / top-p), and score the
   masked positions for unmasking from the model's untempered posterior (``confidence_source="model"``);
2. **remask**: among the generated, currently unmasked positions, remask ``r`` tokens (count rules: the ``r``
   with the lowest score, ``r`` from the count schedule and never more than the clean tokens minus one; ReMDM
   rules: each with probability ``sigma_t``);
3. **unmask**: fill ``u`` of the positions that were masked *before* this step (a position remasked in this
   step is not refilled in the same step), chosen by the unmasking rule. For count rules
   ``u = (clean count the schedule wants after the step) - (clean count now) + r`` (``unmask_schedule``); for ReMDM rules
   ``u ~ Binomial(masked, (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t))``.

Positions marked in ``fixed_mask`` (prompt, given Sudoku clues, padding, positions outside the current block)
are never remasked or unmasked. The last step of a block fills every remaining mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

import math
import numbers

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from .remasking import (
    REMASKING_RULES,
    ProbabilityRemaskingRule,
    RemaskContext,
    get_remask_schedule,
    get_remasking_rule,
)
from ..utils.token_sampling import CONFIDENCE_SOURCES, TOP_P_MODES, TokenDraw, sample_tokens, top_p_filter
from .unmasking import get_unmasking_rule

__all__ = [
    "PrismScheduler", "PrismSchedulerOutput", "top_p_filter", "TOP_P_MODES", "UNMASK_SCHEDULES", "CONFIDENCE_SOURCES",
    "KV_CACHE_MODES",
]

#: ``unmask_schedule`` values: how a block's clean count grows step by step.
UNMASK_SCHEDULES = ("ceil", "llada")
#: ``kv_cache`` values: how the pipeline reuses keys and values within a block (see `docs/sampling.md`).
KV_CACHE_MODES = ("none", "prefix", "dual")


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        allowed = f"None or an int >= {minimum}" if optional else f"an int >= {minimum}"
        raise ValueError(f"{name}={value!r} is not valid; it must be {allowed}.")


def _check_choice(name: str, value: Any, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {list(choices)}.")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass
class PrismSchedulerOutput(BaseOutput):
    """Output of [`PrismScheduler.step`].

    Args:
        prev_sample (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            The tokens after this step (mask id at masked positions).
        unmasked (`torch.BoolTensor` of shape `(batch_size, sequence_length)`):
            Positions filled in this step.
        remasked (`torch.BoolTensor` of shape `(batch_size, sequence_length)`):
            Positions remasked in this step (disjoint from ``unmasked``).
        sampled_tokens (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            The token drawn at each masked position (used only where ``unmasked``); other positions may hold their
            current token.
        token_confidence (`torch.Tensor` of shape `(batch_size, sequence_length)`):
            Probability each current token had when it was unmasked (updated at ``unmasked``); pass it back to
            the next step (ReMDM's ``psi``, read by the `confidence` and `remdm_conf` rules).
        num_remasked (`torch.LongTensor` of shape `(batch_size,)`): Tokens remasked per row in this step.
        num_unmasked (`torch.LongTensor` of shape `(batch_size,)`): Tokens unmasked per row in this step.
    """

    prev_sample: torch.LongTensor
    unmasked: torch.BoolTensor
    remasked: torch.BoolTensor
    sampled_tokens: torch.LongTensor
    token_confidence: torch.Tensor
    num_remasked: torch.LongTensor
    num_unmasked: torch.LongTensor


@dataclass
class _StepPlan:
    alpha_t: float
    alpha_s: float
    remask_planned: float  # count schedule's number (count rules); 0 means "no remasking this step"
    loop_count: Optional[int]  # PRISM-loop steps remask exactly this many (overrides the count schedule)
    hold: bool  # clean count held at n - num_remask (PRISM-loop), so the remasked tokens get refilled later
    sigma: float  # ReMDM rules: the step's sigma_t
    clean_fraction: Tuple[int, int]  # count and vanilla rules: clean fraction after the step, (k + 1) / S exactly


def _logit(p: float) -> float:
    """``log(p / (1 - p))``; ``p = 1`` maps to ``+inf`` (no finite logit reaches it)."""
    return math.inf if p >= 1.0 else math.log(p / (1.0 - p))


def _top_per_row(scores: torch.Tensor, counts: torch.Tensor, descending: bool) -> torch.Tensor:
    """Boolean mask of the ``counts[b]`` best entries of each row of ``scores`` (ineligible entries must already
    carry -inf / +inf so they sort last)."""
    order = scores.argsort(dim=-1, descending=descending)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
    return ranks < counts.unsqueeze(-1)


class PrismScheduler(SchedulerMixin, ConfigMixin):
    """Sampling steps for masked diffusion with PRISM self-correction and its baselines.

    Args:
        unmasking (`str`, defaults to `"confidence"`):
            Which masked positions are filled first: `"confidence"`, `"margin"`, `"entropy"` or `"random"`
            (see `prism_hf.sampling.unmasking`).
        remasking (`str`, defaults to `"prism"`):
            `"none"` (vanilla MDM), `"prism"` (lowest quality first), `"random"`, `"confidence"` (lowest unmasking
            probability first), or ReMDM's `"remdm_cap"`, `"remdm_rescale"`, `"remdm_conf"`, `"remdm_loop"`.
        remask_schedule (`str`, defaults to `"fixed"`):
            How many tokens the count rules (`prism`, `random`, `confidence`) remask per step: `"fixed"`
            (``num_remask`` per step), `"budget"` (``remask_budget`` per block over the middle steps) or
            `"binomial"` (``Binomial(n_clean, min(eta, (1 - alpha_s) / alpha_t))``).
        num_remask (`int`, defaults to 4):
            Tokens remasked per step by the fixed schedule and by PRISM-loop steps (Sudoku: 4).
        remask_budget (`int`, defaults to 12):
            Tokens remasked per block by the budget schedule (LLaDA: 12 per 64-token block).
        eta (`float`, *optional*):
            In ``[0, 1]``. The binomial schedule's cap (text: 0.01) and ReMDM's ``eta``. `None` uses the rule's
            public default (cap 0.008, rescale 0.015, loop 0.02, conf 1.0; binomial schedule 0.01).
        step_on (`float`, defaults to 0.0), step_off (`float`, defaults to 1.0):
            Remasking window as fractions of a block's steps: step ``k`` of ``S`` may remask when
            ``step_on * S <= k < step_off * S``. PRISM-loop steps always remask.
        prism_loop_steps (`int`, defaults to 0):
            PRISM-loop: extra steps per block after the schedule ends, holding the clean count at
            ``n - num_remask``, remasking ``num_remask`` lowest-quality tokens and refilling them; the last one
            fills everything. Only for count rules.
        temperature (`float`, defaults to 0.0): 0 is greedy (argmax); otherwise tokens are sampled from
            ``softmax(logits / temperature)``. Finite and ``>= 0``.
        top_k (`int`, *optional*), top_p (`float`, *optional*): Filters applied before sampling (``top_p`` in
            ``(0, 1]``).
        top_p_mode (`str`, defaults to `"transformers"`): Which tokens the ``top_p`` nucleus keeps:
            `"transformers"` (the smallest set reaching ``top_p``) or `"mdlm"` (cumulative mass at most ``top_p``,
            the public MDLM / ReMDM / PRISM text samplers). See [`top_p_filter`].
        confidence_source (`str`, defaults to `"model"`):
            What the unmasking scores (`confidence`, `margin`, `entropy`) and ``token_confidence`` read: `"model"`,
            the model's untempered posterior without top-k / top-p (LLaDA's ``generate``, the official PRISM
            sampler and Fast-dLLM order by it), or `"sampling"`, the tempered and filtered distribution the token was
            drawn from (the behaviour of prism_hf before this option). Identical at ``temperature=0`` without
            filters.
        unmask_schedule (`str`, defaults to `"ceil"`):
            How the clean count of a block's ``n`` generated positions grows over its ``S`` steps (count and
            vanilla rules): `"ceil"`, ``ceil(n (k + 1) / S)`` after step ``k``; or `"llada"`, LLaDA's
            ``get_num_transfer_tokens``: ``n // S`` per step plus one more on each of the first ``n % S`` steps, so
            that runs match LLaDA's ``generate`` token for token (the official PRISM LLaDA sampler uses it too).
        block_length (`int`, *optional*):
            Default block length for the pipeline (semi-autoregressive blocks); `None` is one block.
        remdm_t_on (`float`, defaults to 0.55), remdm_t_off (`float`, defaults to 0.05),
        remdm_alpha_on (`float`, defaults to 0.9): The ReMDM-loop phases (time runs from 1 to 0).
        kv_cache (`str`, defaults to `"none"`): Key/value caching of block decoding, for backbones that support it
            (the native LLaDA and Dream ports). `"none"`: every step runs the whole sequence (exact). `"prefix"`: at
            each block's first step the whole sequence runs and fills the cache; later steps run only the block and
            the positions after it, against the cached keys and values of the prompt and finished blocks. `"dual"`:
            later steps run only the block, against the cached keys and values of everything else (prefix and
            suffix). Both are approximations once tokens change (Fast-dLLM's); see `docs/sampling.md`.
        confidence_threshold (`float`, *optional*): Parallel decoding (Fast-dLLM's rule), in ``(0, 1]``: a step
            unmasks every masked token of the block whose confidence (probability of its drawn token) is at least
            this, and at least one; a block ends as soon as it has no mask left, so blocks may take fewer steps
            than planned (``num_inference_steps`` per block is then a maximum). `None`: the planned count schedule.
        quality_threshold (`float`, *optional*): Quality-guided decoding, in ``(0, 1]``, needs `remasking="prism"`:
            a block ends at the first forward that finds it with no mask left and every one of its tokens at quality
            ``sigmoid(quality_logits)`` at least this, instead of after a fixed number of steps. The schedule's
            steps run as PRISM's do (and fill the block at their end); then up to ``prism_loop_steps`` refinement
            steps each remask (at most ``num_remask``, lowest quality first) the tokens below the threshold and
            refill the previous step's. The last allowed step fills every mask.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        unmasking: str = "confidence",
        remasking: str = "prism",
        remask_schedule: str = "fixed",
        num_remask: int = 4,
        remask_budget: int = 12,
        eta: Optional[float] = None,
        step_on: float = 0.0,
        step_off: float = 1.0,
        prism_loop_steps: int = 0,
        temperature: float = 0.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        block_length: Optional[int] = None,
        remdm_t_on: float = 0.55,
        remdm_t_off: float = 0.05,
        remdm_alpha_on: float = 0.9,
        top_p_mode: str = "transformers",
        confidence_source: str = "model",
        unmask_schedule: str = "ceil",
        kv_cache: str = "none",
        confidence_threshold: Optional[float] = None,
        quality_threshold: Optional[float] = None,
    ):
        self.unmasking_rule = get_unmasking_rule(unmasking)
        self.remasking_rule = get_remasking_rule(remasking)
        self.remask_count_schedule = get_remask_schedule(remask_schedule)
        _check_int("num_remask", num_remask, 0)
        _check_int("remask_budget", remask_budget, 0)
        if eta is not None and not (_is_real(eta) and 0.0 <= eta <= 1.0):
            raise ValueError(f"eta={eta!r} must be None or a number in [0, 1] (a remasking probability cap).")
        if not (_is_real(step_on) and _is_real(step_off) and 0.0 <= step_on <= step_off <= 1.0):
            raise ValueError(
                f"step_on={step_on!r}, step_off={step_off!r}: need 0 <= step_on <= step_off <= 1 (fractions of a block's steps)."
            )
        _check_int("prism_loop_steps", prism_loop_steps, 0)
        if prism_loop_steps > 0 and self.remasking_rule.kind != "count":
            count_rules = sorted(n for n, c in REMASKING_RULES.items() if getattr(c, "kind", "") == "count")
            raise ValueError(
                f"prism_loop_steps={prism_loop_steps} needs a count remasking rule ({count_rules}); got "
                f"remasking={remasking!r}" + (" (use remasking='remdm_loop' for ReMDM's loop)." if remasking.startswith("remdm") else ".")
            )
        if not (_is_real(temperature) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(
                f"temperature={temperature!r} is not valid; it must be a finite number >= 0 (0 is greedy, 1 samples "
                "from the posterior)."
            )
        _check_int("top_k", top_k, 1, optional=True)
        if top_p is not None and not (_is_real(top_p) and 0.0 < top_p <= 1.0):
            raise ValueError(f"top_p={top_p!r} must be None or a number in (0, 1] (the nucleus mass).")
        _check_int("block_length", block_length, 1, optional=True)
        _check_choice("top_p_mode", top_p_mode, TOP_P_MODES)
        _check_choice("confidence_source", confidence_source, CONFIDENCE_SOURCES)
        _check_choice("unmask_schedule", unmask_schedule, UNMASK_SCHEDULES)
        if not 0.0 <= remdm_t_off <= remdm_t_on <= 1.0:
            raise ValueError(f"remdm_t_off={remdm_t_off!r}, remdm_t_on={remdm_t_on!r}: need 0 <= t_off <= t_on <= 1.")
        if not 0.0 <= remdm_alpha_on < 1.0:
            raise ValueError(f"remdm_alpha_on={remdm_alpha_on!r} must be in [0, 1).")
        _check_choice("kv_cache", kv_cache, KV_CACHE_MODES)
        for name, value in (("confidence_threshold", confidence_threshold), ("quality_threshold", quality_threshold)):
            if value is not None and not (_is_real(value) and 0.0 < value <= 1.0):
                raise ValueError(f"{name}={value!r} is not valid; it must be None (off) or a number in (0, 1].")
        if confidence_threshold is not None and self.remasking_rule.kind == "probability":
            raise ValueError(
                f"confidence_threshold={confidence_threshold!r} sets the unmask count from the confidences, while "
                f"remasking={remasking!r} draws it from ReMDM's schedule; use a count rule ('none', 'prism', 'random', "
                "'confidence') with a threshold."
            )
        if quality_threshold is not None and confidence_threshold is None and prism_loop_steps == 0:
            import warnings

            warnings.warn(
                f"quality_threshold={quality_threshold!r} with prism_loop_steps=0 and no confidence_threshold changes "
                "nothing: the schedule fills a block only at its last step, so no forward finds it full and good "
                "enough earlier. Give it refinement steps (prism_loop_steps > 0) or parallel decoding.",
                UserWarning,
                stacklevel=2,
            )
        if quality_threshold is not None and not self.remasking_rule.needs_quality:
            raise ValueError(
                f"quality_threshold={quality_threshold!r} needs the quality head: use remasking='prism' (got "
                f"remasking={remasking!r})."
            )
        #: Compute the posterior only at masked positions (`None`: on CPU only; see `step`). Not a config field: it
        #: changes speed, not results (except for how random numbers are consumed).
        self.compact_masked_positions: Optional[bool] = None
        self.num_inference_steps: Optional[int] = None
        self.timesteps = torch.zeros(0, dtype=torch.long)
        self._plan: List[_StepPlan] = []

    # ----- planning ---------------------------------------------------------------------------------------
    @property
    def eta(self) -> float:
        """``eta`` in use: the config value, or the rule's default (binomial schedule: 0.01)."""
        if self.config.eta is not None:
            return float(self.config.eta)
        if isinstance(self.remasking_rule, ProbabilityRemaskingRule):
            return self.remasking_rule.default_eta
        return 0.01

    @property
    def is_adaptive(self) -> bool:
        """Whether blocks may end before their planned steps (``confidence_threshold`` or ``quality_threshold``)."""
        return self.config.confidence_threshold is not None or self.config.quality_threshold is not None

    def blocks_done(self, sample: torch.LongTensor, in_block: torch.BoolTensor, mask_token_id: int,
                    quality_logits: Optional[torch.Tensor] = None) -> torch.BoolTensor:
        """Rows whose block is finished: no mask left in it and, with ``quality_threshold``, every one of its tokens
        at or above the threshold (compared on the logit scale, so saturated probabilities never tie).

        Args:
            sample (`torch.LongTensor` of shape `(batch_size, length)`): Current tokens.
            in_block (`torch.BoolTensor` of shape `(batch_size, length)`): The positions of the block being decoded.
            mask_token_id (`int`): The mask id.
            quality_logits (`torch.Tensor` of shape `(batch_size, length)`, *optional*): The quality of ``sample``
                (needed with ``quality_threshold``).

        Returns:
            `torch.BoolTensor` of shape `(batch_size,)`.
        """
        done = ~((sample == mask_token_id) & in_block).any(-1)
        threshold = self.config.quality_threshold
        if threshold is not None:
            if quality_logits is None:
                raise ValueError("quality_threshold needs quality_logits of the current tokens.")
            low = (quality_logits.float() < _logit(threshold)) & in_block
            done = done & ~low.any(-1)
        return done

    @property
    def num_loop_steps(self) -> int:
        return self.config.prism_loop_steps if self.remasking_rule.kind == "count" else 0

    def set_timesteps(self, num_inference_steps: int, device: Union[str, torch.device, None] = None) -> None:
        """Plan the steps of one block.

        Args:
            num_inference_steps (`int`): Schedule steps for this block (>= 1). PRISM-loop adds
                ``prism_loop_steps`` more; ``self.timesteps`` lists all step indices ``0 .. total - 1``.
            device: Where ``self.timesteps`` lives.
        """
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps={num_inference_steps!r} must be an int >= 1.")
        cfg = self.config
        steps, loop = num_inference_steps, self.num_loop_steps
        rule = self.remasking_rule
        if isinstance(rule, ProbabilityRemaskingRule):
            alphas = rule.alphas(steps, cfg)
        else:
            alphas = [k / steps for k in range(steps + 1)]
        active = [cfg.step_on * steps <= k < cfg.step_off * steps for k in range(steps)]
        planned = self.remask_count_schedule.plan(steps, active, cfg) if rule.kind == "count" else [0] * steps
        eta = self.eta
        plan = []
        for k in range(steps + loop):
            alpha_t = alphas[min(k, steps)]
            alpha_s = alphas[min(k + 1, steps)]
            # PRISM-loop holds num_remask tokens back for its remasks; quality-guided refinement fills the block at the
            # schedule's end instead, so that a block can be found finished there.
            hold = loop > 0 and steps - 1 <= k < steps + loop - 1 and cfg.quality_threshold is None
            sigma = rule.sigma(k, steps, alpha_t, alpha_s, eta, cfg) if isinstance(rule, ProbabilityRemaskingRule) else 0.0
            plan.append(
                _StepPlan(
                    alpha_t=alpha_t,
                    alpha_s=alpha_s,
                    remask_planned=planned[k] if k < steps else 0,
                    loop_count=cfg.num_remask if hold else None,
                    hold=hold,
                    sigma=sigma,
                    clean_fraction=(min(k + 1, steps), steps),
                )
            )
        self._plan = plan
        self.num_inference_steps = steps
        self.timesteps = torch.arange(steps + loop, device=device)

    def _clean_target(self, num_generated: torch.Tensor, plan: _StepPlan) -> torch.Tensor:
        """Clean generated tokens per row after the step, `(batch_size,)`, from ``unmask_schedule`` (integer
        arithmetic: exact, and no float64, which some devices lack)."""
        done, steps = plan.clean_fraction
        if self.config.unmask_schedule == "llada":
            # LLaDA's get_num_transfer_tokens: n // S per step, one more on each of the first n % S steps.
            base = torch.div(num_generated, steps, rounding_mode="floor")
            return base * done + torch.clamp(num_generated - base * steps, max=done)
        return torch.div(num_generated * done + steps - 1, steps, rounding_mode="floor")  # ceil(n * (k + 1) / S)

    # ----- sampling -----------------------------------------------------------------------------------------
    def sample_tokens(
        self,
        logits: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        mask_token_id: Optional[int] = None,
        inplace: bool = False,
    ) -> TokenDraw:
        """Draw one token per position (never the mask token itself), with the scheduler's temperature, filters and
        ``confidence_source`` ([`~prism_hf.utils.token_sampling.sample_tokens`]).

        Args:
            logits (`torch.Tensor` of shape `(batch_size, sequence_length, vocab_size)`).
            generator (`torch.Generator`, *optional*).
            mask_token_id (`int`, *optional*): Excluded from the draw when it is inside the vocabulary.
            inplace (`bool`): ``logits`` is a scratch copy that may be overwritten (saves a copy of `(B, L, V)`).

        Returns:
            [`~prism_hf.utils.token_sampling.TokenDraw`], a named tuple `(tokens, token_prob, probs)`: the tokens `(B, L)`, their probability `(B, L)` under the posterior
            named by ``confidence_source`` (the model's untempered one, or the tempered and filtered one they were
            drawn from), and that full posterior `(B, L, V)` when the unmasking rule reads it (else `None`). The mask
            token has probability 0 in both.
        """
        cfg = self.config
        return sample_tokens(
            logits, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p, top_p_mode=cfg.top_p_mode,
            suppress_token_id=mask_token_id, confidence_source=cfg.confidence_source,
            return_probs=self.unmasking_rule.needs_full_probs, generator=generator, inplace=inplace,
        )

    def step(
        self,
        model_output: Any,
        timestep: Union[int, torch.Tensor],
        sample: torch.LongTensor,
        *,
        mask_token_id: int,
        quality_logits: Optional[torch.Tensor] = None,
        fixed_mask: Optional[torch.BoolTensor] = None,
        token_confidence: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
    ) -> Union[PrismSchedulerOutput, tuple]:
        """One sampling step: remask, then unmask.

        Args:
            model_output (`torch.Tensor` of shape `(batch_size, sequence_length, vocab_size)`, or a model output):
                The posterior logits, or an object with ``.logits`` (and ``.quality_logits``, as
                `PrismModelOutput` has).
            timestep (`int`): The step index within the block, ``0 .. len(self.timesteps) - 1``.
            sample (`torch.LongTensor` of shape `(batch_size, sequence_length)`): The current tokens.
            mask_token_id (`int`): The mask token id.
            quality_logits (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): Quality head
                logits (read from ``model_output`` when not given); required by `remasking="prism"`.
            fixed_mask (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*): `True` where a
                position must not change (prompt, given tokens, padding, outside the current block).
            token_confidence (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): From the
                previous step's output (zeros when omitted).
            generator (`torch.Generator`, *optional*): RNG for sampling and random rules.
            return_dict (`bool`): Return a [`PrismSchedulerOutput`] (default) or a tuple.
        """
        if not self._plan:
            raise RuntimeError("PrismScheduler.step called before set_timesteps(num_inference_steps).")
        step_index = int(timestep)
        if not 0 <= step_index < len(self._plan):
            raise ValueError(f"timestep={step_index} is outside this block's steps 0..{len(self._plan) - 1}.")
        if mask_token_id is None:
            raise ValueError("mask_token_id=None: the scheduler needs the mask token id.")
        logits = getattr(model_output, "logits", model_output)
        if quality_logits is None:
            quality_logits = getattr(model_output, "quality_logits", None)
        plan = self._plan[step_index]
        rule = self.remasking_rule
        is_last = step_index == len(self._plan) - 1
        if rule.needs_quality and quality_logits is None:
            raise ValueError(
                f"remasking={rule.name!r} needs quality_logits, but the model output has none (a plain MDM without a "
                "PRISM quality head). Use PrismForMaskedDiffusion, or a rule without a head: "
                f"{sorted(n for n, c in REMASKING_RULES.items() if not c.needs_quality)}."
            )

        is_mask = sample == mask_token_id
        generated = ~fixed_mask if fixed_mask is not None else torch.ones_like(is_mask)
        masked = is_mask & generated
        clean = generated & ~is_mask
        num_masked = masked.sum(-1)
        num_clean = clean.sum(-1)
        num_generated = num_masked + num_clean
        if token_confidence is None:
            token_confidence = torch.zeros(sample.shape, device=sample.device)

        # Draw tokens and unmasking scores. On CPU only the masked positions are computed (a gather of those rows of
        # the logits: the softmax over the vocabulary is most of a step's cost, and at mid-run half of the positions
        # are clean). On accelerators the whole tensor is used, since the gather's data-dependent size would make
        # every step wait for the device.
        compact = self.compact_masked_positions
        if compact is None:
            compact = logits.device.type == "cpu"
        if compact:
            flat_sampled, flat_prob, flat_probs = self.sample_tokens(
                logits[masked].unsqueeze(0), generator, mask_token_id, inplace=True
            )
            flat_scores = self.unmasking_rule.score(flat_probs, flat_sampled, flat_prob, generator).float()
            sampled = sample.masked_scatter(masked, flat_sampled.squeeze(0))
            token_prob = torch.zeros(sample.shape, device=sample.device).masked_scatter(masked, flat_prob.squeeze(0).float())
            unmask_scores = torch.full(sample.shape, float("-inf"), device=sample.device).masked_scatter(
                masked, flat_scores.squeeze(0)
            )
        else:
            sampled, token_prob, probs = self.sample_tokens(logits, generator, mask_token_id)
            unmask_scores = self.unmasking_rule.score(probs, sampled, token_prob, generator).float()
            unmask_scores = unmask_scores.masked_fill(~masked, float("-inf"))

        # ----- remask -----
        remasked = None
        token_sigma = None
        num_remasked = torch.zeros_like(num_masked)
        cfg = self.config
        wants_remask = (rule.kind == "count" and (plan.remask_planned or plan.loop_count)) or (
            rule.kind == "probability" and plan.sigma > 0.0
        )
        below_quality = None
        if cfg.quality_threshold is not None and step_index >= self.num_inference_steps:
            # Quality-guided refinement (after the schedule): remask what falls below the threshold.
            below_quality = clean & (quality_logits.float() < _logit(cfg.quality_threshold))
            wants_remask = True
        clean_target = None
        if rule.kind != "probability":
            clean_target = self._clean_target(num_generated, plan)
            if plan.hold:
                clean_target = torch.minimum(clean_target, (num_generated - self.config.num_remask).clamp(min=0))
            if is_last:
                clean_target = num_generated
        if wants_remask and not is_last:
            context = RemaskContext(
                clean=clean,
                num_clean=num_clean,
                quality_logits=quality_logits.float() if quality_logits is not None else None,
                token_confidence=token_confidence,
                alpha_t=plan.alpha_t,
                alpha_s=plan.alpha_s,
                generator=generator,
            )
            if below_quality is not None:
                counts = torch.minimum(below_quality.sum(-1), torch.full_like(num_clean, cfg.num_remask))
                counts = torch.minimum(counts, num_clean - 1).clamp(min=0)
                scores = rule.score(context).float().masked_fill(~below_quality, float("inf"))
                remasked = _top_per_row(scores, counts, descending=False)
            elif rule.kind == "count":
                if plan.loop_count is not None:
                    counts = torch.full_like(num_clean, plan.loop_count)
                else:
                    counts = self.remask_count_schedule.counts(plan.remask_planned, context, self.eta)
                # Cap: at most the clean generated tokens minus one (one clean token always stays, so a step never
                # empties the block it is correcting; the public text sampler even skips a step with r or fewer clean
                # tokens), and only as many as stay masked after this step, so every remasked token can be refilled
                # by a later step.
                room = num_generated - clean_target if cfg.confidence_threshold is None else num_generated
                counts = torch.minimum(counts, torch.minimum(num_clean - 1, room)).clamp(min=0)
                scores = rule.score(context).float().masked_fill(~clean, float("inf"))
                remasked = _top_per_row(scores, counts, descending=False)
            else:
                token_sigma = rule.token_sigma(context, plan.sigma).float()
                draws = torch.rand(sample.shape, device=sample.device, generator=generator)
                remasked = clean & (draws < token_sigma)
            num_remasked = remasked.sum(-1)

        # ----- unmask -----
        if is_last:
            num_unmask = num_masked
        elif rule.kind == "probability":
            # ReMDM: a masked token is unmasked with probability (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t);
            # with per-token sigma (conf) sigma_t is the mean over the row's clean tokens.
            mean_sigma = torch.zeros(num_clean.shape, device=num_clean.device)
            if token_sigma is not None:
                mean_sigma = (token_sigma.expand_as(clean) * clean).sum(-1) / num_clean.clamp(min=1)
            if plan.alpha_t >= 1.0:
                prob = torch.ones_like(mean_sigma)
            else:
                prob = ((plan.alpha_s - (1.0 - mean_sigma) * plan.alpha_t) / (1.0 - plan.alpha_t)).clamp(0.0, 1.0)
            num_unmask = torch.binomial(num_masked.float(), prob, generator=generator).long()
        else:
            num_unmask = (clean_target - num_clean + num_remasked).clamp(min=0)
            num_unmask = torch.minimum(num_unmask, num_masked)

        if cfg.confidence_threshold is not None and not is_last:
            # Fast-dLLM's parallel decoding: every mask whose drawn token is confident enough and, in a row with none,
            # the one the unmasking rule ranks first.
            unmasked = masked & (token_prob >= cfg.confidence_threshold)
            fallback = _top_per_row(unmask_scores, (~unmasked.any(-1) & (num_masked > 0)).long(), descending=True)
            unmasked = unmasked | (fallback & masked)
        else:
            unmasked = _top_per_row(unmask_scores, num_unmask, descending=True) & masked

        prev_sample = torch.where(unmasked, sampled, sample)
        token_confidence = torch.where(unmasked, token_prob, token_confidence)
        if remasked is not None:
            prev_sample = prev_sample.masked_fill(remasked, mask_token_id)
            token_confidence = token_confidence.masked_fill(remasked, 0.0)
        else:
            remasked = torch.zeros_like(unmasked)
        num_unmasked = unmasked.sum(-1)
        if not return_dict:
            return prev_sample, unmasked, remasked, sampled, token_confidence, num_remasked, num_unmasked
        return PrismSchedulerOutput(
            prev_sample=prev_sample,
            unmasked=unmasked,
            remasked=remasked,
            sampled_tokens=sampled,
            token_confidence=token_confidence,
            num_remasked=num_remasked,
            num_unmasked=num_unmasked,
        )
