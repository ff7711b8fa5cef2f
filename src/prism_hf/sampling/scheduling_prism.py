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

The remasking rule decides ``r`` (how many and which) and ``u`` (how many); the unmasking rule decides which ``u``
(see `prism_hf.sampling.remasking` and `prism_hf.sampling.unmasking`): the step itself is plan, score, choose, apply.
Only positions marked in ``maskable`` (the generated positions of the current block: not the prompt, given Sudoku
clues, padding or other blocks) are ever remasked or unmasked. The last step of a block fills every remaining mask.
Timesteps count up: see [`PrismScheduler`].
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..utils.deprecation import rename_kwarg
from ..utils.token_sampling import CONFIDENCE_SOURCES, TOP_P_MODES, TokenDraw, sample_tokens, top_p_filter
from .remasking import RemaskContext, StepPlan, get_remask_schedule, get_remasking_rule, logit_of, quality_head_error
from .unmasking import UNMASK_SCHEDULES, get_unmasking_rule

__all__ = [
    "PrismScheduler", "PrismSchedulerOutput", "top_p_filter", "TOP_P_MODES", "UNMASK_SCHEDULES", "CONFIDENCE_SOURCES",
    "KV_CACHE_MODES",
]

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


def _validate_config(cfg: Any) -> None:
    """Clear errors for scheduler settings that are invalid whatever the rules (the rules check their own)."""
    _check_int("num_remask", cfg.num_remask, 0)
    _check_int("remask_budget", cfg.remask_budget, 0)
    if cfg.eta is not None and not (_is_real(cfg.eta) and 0.0 <= cfg.eta <= 1.0):
        raise ValueError(f"eta={cfg.eta!r} must be None or a number in [0, 1] (a remasking probability cap).")
    if not (_is_real(cfg.step_on) and _is_real(cfg.step_off) and 0.0 <= cfg.step_on <= cfg.step_off <= 1.0):
        raise ValueError(f"step_on={cfg.step_on!r}, step_off={cfg.step_off!r}: need 0 <= step_on <= step_off <= 1 "
                         "(fractions of a block's steps).")
    _check_int("prism_loop_steps", cfg.prism_loop_steps, 0)
    if not (_is_real(cfg.temperature) and math.isfinite(cfg.temperature) and cfg.temperature >= 0):
        raise ValueError(f"temperature={cfg.temperature!r} is not valid; it must be a finite number >= 0 (0 is greedy, "
                         "1 samples from the posterior).")
    _check_int("top_k", cfg.top_k, 1, optional=True)
    if cfg.top_p is not None and not (_is_real(cfg.top_p) and 0.0 < cfg.top_p <= 1.0):
        raise ValueError(f"top_p={cfg.top_p!r} must be None or a number in (0, 1] (the nucleus mass).")
    _check_int("block_length", cfg.block_length, 1, optional=True)
    _check_choice("top_p_mode", cfg.top_p_mode, TOP_P_MODES)
    _check_choice("confidence_source", cfg.confidence_source, CONFIDENCE_SOURCES)
    _check_choice("unmask_schedule", cfg.unmask_schedule, UNMASK_SCHEDULES)
    if not 0.0 <= cfg.remdm_t_off <= cfg.remdm_t_on <= 1.0:
        raise ValueError(f"remdm_t_off={cfg.remdm_t_off!r}, remdm_t_on={cfg.remdm_t_on!r}: need 0 <= t_off <= t_on <= 1.")
    if not 0.0 <= cfg.remdm_alpha_on < 1.0:
        raise ValueError(f"remdm_alpha_on={cfg.remdm_alpha_on!r} must be in [0, 1).")
    _check_choice("kv_cache", cfg.kv_cache, KV_CACHE_MODES)
    for name in ("confidence_threshold", "quality_threshold"):
        value = cfg[name]
        if value is not None and not (_is_real(value) and 0.0 < value <= 1.0):
            raise ValueError(f"{name}={value!r} is not valid; it must be None (off) or a number in (0, 1].")
    if cfg.quality_threshold is not None and cfg.confidence_threshold is None and cfg.prism_loop_steps == 0:
        warnings.warn(
            f"quality_threshold={cfg.quality_threshold!r} with prism_loop_steps=0 and no confidence_threshold changes "
            "nothing: the schedule fills a block only at its last step, so no forward finds it full and good "
            "enough earlier. Give it refinement steps (prism_loop_steps > 0) or parallel decoding.",
            UserWarning,
            stacklevel=4,
        )


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

    Timesteps count **up**. ``self.timesteps`` is ``0, 1, ..., len - 1``, the index of a step within the current block,
    and [`step`] takes that index: the expected clean fraction ``alpha`` rises with it from 0 to 1. This differs from
    diffusers' noise schedulers, whose timesteps are noise levels that count down; a masked diffusion step is defined
    by how many tokens are clean after it, and ReMDM's time ``t`` (1 to 0) is ``1 - k / S`` at step ``k`` of ``S``.
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
        #: The count schedule named by ``remask_schedule`` (the count rules plan with it).
        self.remask_count_schedule = get_remask_schedule(remask_schedule)
        _validate_config(self.config)
        self.remasking_rule.validate(self.config)
        #: Compute the posterior only at masked positions (`None`: on CPU only; see `step`). Not a config field: it
        #: changes speed, not results (except for how random numbers are consumed).
        self.compact_masked_positions: Optional[bool] = None
        self.num_inference_steps: Optional[int] = None
        self.timesteps = torch.zeros(0, dtype=torch.long)
        self._plan: List[StepPlan] = []

    # ----- planning ---------------------------------------------------------------------------------------
    @property
    def eta(self) -> float:
        """``eta`` in use: the config value, or the remasking rule's default (binomial schedule: 0.01)."""
        return self.remasking_rule.eta(self.config)

    @property
    def is_adaptive(self) -> bool:
        """Whether blocks may end before their planned steps (``confidence_threshold`` or ``quality_threshold``)."""
        return self.config.confidence_threshold is not None or self.config.quality_threshold is not None

    @property
    def num_loop_steps(self) -> int:
        """Extra steps per block after the schedule (PRISM-loop or quality-guided refinement; 0 for other rules)."""
        return self.remasking_rule.num_loop_steps(self.config)

    def check_block_length(self, block_length: int) -> None:
        """Raise a clear error when the remasking settings cannot fit a block of ``block_length`` tokens (e.g.
        ``num_remask`` larger than the block)."""
        self.remasking_rule.check_block_length(block_length, self.config)

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
            low = (quality_logits.float() < logit_of(threshold)) & in_block
            done = done & ~low.any(-1)
        return done

    def set_timesteps(self, num_inference_steps: int, device: Union[str, torch.device, None] = None) -> None:
        """Plan the steps of one block (the remasking rule's [`~remasking.RemaskingRule.plan`]).

        Args:
            num_inference_steps (`int`): Schedule steps for this block (>= 1). PRISM-loop adds
                ``prism_loop_steps`` more; ``self.timesteps`` lists all step indices ``0 .. total - 1`` (ascending).
            device: Where ``self.timesteps`` lives.
        """
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps={num_inference_steps!r} must be an int >= 1.")
        self._plan = self.remasking_rule.plan(num_inference_steps, self.config)
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(len(self._plan), device=device)

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
        maskable: Optional[torch.BoolTensor] = None,
        token_confidence: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Union[PrismSchedulerOutput, tuple]:
        """One sampling step: plan, score, choose (remask, then unmask), apply.

        Args:
            model_output (`torch.Tensor` of shape `(batch_size, sequence_length, vocab_size)`, or a model output):
                The posterior logits, or an object with ``.logits`` (and ``.quality_logits``, as
                `PrismModelOutput` has).
            timestep (`int`): The step index within the block, ``0 .. len(self.timesteps) - 1`` (ascending).
            sample (`torch.LongTensor` of shape `(batch_size, sequence_length)`): The current tokens.
            mask_token_id (`int`): The mask token id.
            quality_logits (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): Quality head
                logits (read from ``model_output`` when not given); required by `remasking="prism"`.
            maskable (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*): `True` where a
                position may change (the generated positions of the current block), as in training; `None`: all.
                Replaces ``fixed_mask`` (its opposite: `True` where a position must not change), deprecated.
            token_confidence (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): From the
                previous step's output (zeros when omitted).
            generator (`torch.Generator`, *optional*): RNG for sampling and random rules.
            return_dict (`bool`): Return a [`PrismSchedulerOutput`] (default) or a tuple.
        """
        maskable = rename_kwarg(kwargs, "fixed_mask", "maskable", "PrismScheduler.step", current=maskable,
                                convert=lambda fixed: ~fixed)
        if kwargs:
            raise TypeError(f"PrismScheduler.step got unexpected keyword arguments {sorted(kwargs)}.")
        plan, logits, quality_logits = self._read_step_inputs(model_output, timestep, mask_token_id, quality_logits)
        context = self._context(sample, mask_token_id, maskable, quality_logits, token_confidence, plan, generator)
        sampled, token_prob, unmask_scores = self._draw(logits, sample, context.masked, mask_token_id, generator)
        rule = self.remasking_rule
        remasked = None if plan.is_last else rule.remask(context)
        num_remasked = torch.zeros_like(context.num_masked) if remasked is None else remasked.sum(-1)
        num_unmask = context.num_masked if plan.is_last else rule.num_unmask(context, num_remasked)
        unmasked = self.unmasking_rule.select(unmask_scores, context.masked, num_unmask, token_prob,
                                              plan.confidence_threshold)
        prev_sample = torch.where(unmasked, sampled, sample)
        token_confidence = torch.where(unmasked, token_prob, context.token_confidence)
        if remasked is None:
            remasked = torch.zeros_like(unmasked)
        else:
            prev_sample = prev_sample.masked_fill(remasked, mask_token_id)
            token_confidence = token_confidence.masked_fill(remasked, 0.0)
        output = (prev_sample, unmasked, remasked, sampled, token_confidence, num_remasked, unmasked.sum(-1))
        return PrismSchedulerOutput(*output) if return_dict else output

    def _read_step_inputs(self, model_output: Any, timestep: Any, mask_token_id: Optional[int],
                          quality_logits: Optional[torch.Tensor]) -> Tuple[StepPlan, torch.Tensor, Optional[torch.Tensor]]:
        """The step's plan, logits and quality logits; clear errors for a step that cannot run."""
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
        if self.remasking_rule.needs_quality and quality_logits is None:
            raise quality_head_error(self.remasking_rule.name, "quality_logits, but the model output has none (a plain "
                                                               "MDM without a PRISM quality head)")
        return self._plan[step_index], logits, quality_logits

    @staticmethod
    def _context(sample: torch.LongTensor, mask_token_id: int, maskable: Optional[torch.BoolTensor],
                 quality_logits: Optional[torch.Tensor], token_confidence: Optional[torch.Tensor], plan: StepPlan,
                 generator: Optional[torch.Generator]) -> RemaskContext:
        """Which positions are masked and clean among the generated ones, per row."""
        is_mask = sample == mask_token_id
        generated = maskable if maskable is not None else torch.ones_like(is_mask)
        masked, clean = is_mask & generated, generated & ~is_mask
        if token_confidence is None:
            token_confidence = torch.zeros(sample.shape, device=sample.device)
        return RemaskContext(
            clean=clean, num_clean=clean.sum(-1), masked=masked, num_masked=masked.sum(-1),
            quality_logits=None if quality_logits is None else quality_logits.float(),
            token_confidence=token_confidence, alpha_t=plan.alpha_t, alpha_s=plan.alpha_s, generator=generator,
            plan=plan,
        )

    def _draw(self, logits: torch.Tensor, sample: torch.LongTensor, masked: torch.BoolTensor, mask_token_id: int,
              generator: Optional[torch.Generator]) -> Tuple[torch.LongTensor, torch.Tensor, torch.Tensor]:
        """Draw tokens and score the masked positions for unmasking: ``(sampled, token_prob, scores)``, all
        `(batch_size, sequence_length)`, scores ``-inf`` where not masked.

        On CPU only the masked positions are computed (a gather of those rows of the logits: the softmax over the
        vocabulary is most of a step's cost, and at mid-run half of the positions are clean). On accelerators the
        whole tensor is used, since the gather's data-dependent size would make every step wait for the device.
        """
        compact = self.compact_masked_positions
        if compact is None:
            compact = logits.device.type == "cpu"
        if not compact:
            sampled, token_prob, probs = self.sample_tokens(logits, generator, mask_token_id)
            scores = self.unmasking_rule.score(probs, sampled, token_prob, generator).float()
            return sampled, token_prob, scores.masked_fill(~masked, float("-inf"))
        flat_sampled, flat_prob, flat_probs = self.sample_tokens(logits[masked].unsqueeze(0), generator, mask_token_id,
                                                                 inplace=True)
        flat_scores = self.unmasking_rule.score(flat_probs, flat_sampled, flat_prob, generator).float()
        sampled = sample.masked_scatter(masked, flat_sampled.squeeze(0))
        token_prob = torch.zeros(sample.shape, device=sample.device).masked_scatter(masked, flat_prob.squeeze(0).float())
        scores = torch.full(sample.shape, float("-inf"), device=sample.device).masked_scatter(masked, flat_scores.squeeze(0))
        return sampled, token_prob, scores
