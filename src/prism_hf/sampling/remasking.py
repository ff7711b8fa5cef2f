"""Remasking rules and remask count schedules.

A remasking rule owns everything a step decides about self-correction: it plans a block's steps
([`RemaskingRule.plan`]), picks the tokens to put back to the mask ([`RemaskingRule.remask`]: how many and which) and
says how many masked positions the step fills ([`RemaskingRule.num_unmask`]; the unmasking rule then says which). The
scheduler only runs plan, score, choose and apply. Two families of rules exist, registered by name in
[`REMASKING_RULES`]:

* **Count rules** (`prism`, `random`, `confidence`): a count schedule (see [`REMASK_SCHEDULES`]) says how many
  tokens ``r`` each row remasks this step; the rule ranks the row's clean generated tokens and the ``r``
  lowest are remasked. `prism` ranks by the quality head's logits (the same order as ``sigmoid(quality_logits)``,
  without its float32 saturation: the sigmoid is exactly 1.0 above a logit of about 17, where every confident
  token would tie); `confidence` by the probability the token had when it was unmasked; `random` uniformly. `random`
  and `confidence` with the same counts as `prism` isolate what the learned head adds. The step then fills enough
  masks that the clean count follows the unmask schedule, plus the ``r`` just remasked.
* **Probability rules** (ReMDM, arXiv 2503.00307: `remdm_cap`, `remdm_rescale`, `remdm_conf`, `remdm_loop`):
  every clean generated token is remasked independently with probability ``sigma_t`` (per token for
  `remdm_conf`), from the step's ``alpha_t`` (expected clean fraction before the step) and ``alpha_s`` (after), and
  each masked token is unmasked with probability ``(alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t)``.

`none` never remasks (a vanilla MDM).

A new rule is one class plus a test:

```python
from prism_hf.sampling.remasking import CountRemaskingRule, register_remasking_rule


@register_remasking_rule("oldest_first")
class OldestFirst(CountRemaskingRule):
    def score(self, context):
        return context.token_confidence  # lowest scores are remasked first
```
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, List, Optional, Type

import torch

from ..utils.registry import Registry
from .unmasking import RuleRegistry, scheduled_clean_count, top_per_row

__all__ = [
    "RemaskContext",
    "StepPlan",
    "RemaskingRule",
    "NoRemasking",
    "CountRemaskingRule",
    "PrismRemasking",
    "RandomRemasking",
    "ConfidenceRemasking",
    "ProbabilityRemaskingRule",
    "RemdmCapRemasking",
    "RemdmRescaleRemasking",
    "RemdmConfRemasking",
    "RemdmLoopRemasking",
    "RemaskSchedule",
    "FixedRemaskSchedule",
    "BudgetRemaskSchedule",
    "BinomialRemaskSchedule",
    "REMASKING_RULES",
    "REMASK_SCHEDULES",
    "register_remasking_rule",
    "register_remask_schedule",
    "get_remasking_rule",
    "get_remask_schedule",
    "remdm_sigma_max",
    "remdm_sigma_cap",
    "remask_per_step",
    "logit_of",
    "quality_head_error",
    "LLADA_REMASKING_NAMES",
    "llada_remasking_hint",
]

REMASKING_RULES: Registry = RuleRegistry("remasking rule", "remasking",
                                         "prism_hf.sampling.remasking.register_remasking_rule")
REMASK_SCHEDULES: Registry = RuleRegistry("remask count schedule", "remask_schedule",
                                          "prism_hf.sampling.remasking.register_remask_schedule")


def register_remasking_rule(name: str) -> Callable[[Type["RemaskingRule"]], Type["RemaskingRule"]]:
    """Class decorator: make a [`RemaskingRule`] available as ``PrismScheduler(remasking=name)``.

    In 0.1.0 a rule declared its family with ``kind = "count"`` / ``"probability"`` on any ``RemaskingRule`` subclass
    and the scheduler branched on it. Such a class is still run as its family (registered as a subclass of
    [`CountRemaskingRule`] / [`ProbabilityRemaskingRule`] too), with a `FutureWarning`; subclass the family instead.
    """

    def register(cls: Type["RemaskingRule"]) -> Type["RemaskingRule"]:
        families = {"count": globals().get("CountRemaskingRule"), "probability": globals().get("ProbabilityRemaskingRule")}
        family = families.get(getattr(cls, "kind", None))  # None while this module defines its own rules
        if family is not None and isinstance(cls, type) and not issubclass(cls, family):
            warnings.warn(f"remasking rule {name!r}: `kind = {cls.kind!r}` on a class that does not subclass "
                          f"{family.__name__} is deprecated; it runs as one for now. Subclass {family.__name__} "
                          "(prism_hf 0.3.0 will not read `kind`).", FutureWarning, stacklevel=2)
            cls = type(cls.__name__, (cls, family), {"__module__": cls.__module__, "__doc__": cls.__doc__,
                                                     "__qualname__": cls.__qualname__})
        return REMASKING_RULES.register(name, cls)

    return register


def register_remask_schedule(name: str) -> Callable[[Type["RemaskSchedule"]], Type["RemaskSchedule"]]:
    """Class decorator: make a [`RemaskSchedule`] available as ``PrismScheduler(remask_schedule=name)``."""
    return REMASK_SCHEDULES.decorator(name)


#: LLaDA's ``generate(remasking=...)`` values. In LLaDA "remasking" is the *order in which masks are filled* (the
#: rest stay masked); in prism_hf that is the unmasking rule, and ``remasking`` names self-correction rules that put
#: already unmasked tokens back to the mask.
LLADA_REMASKING_NAMES = {"low_confidence": "confidence", "random": "random"}


def llada_remasking_hint(value: str) -> str:
    """The sentence that maps LLaDA's ``remasking=value`` to prism_hf's scheduler fields."""
    unmasking = LLADA_REMASKING_NAMES[value]
    return (
        f"LLaDA's remasking={value!r} is prism_hf's unmasking={unmasking!r}: build the scheduler with "
        f"PrismScheduler(unmasking={unmasking!r}, remasking='none') for LLaDA's sampler. prism_hf's `remasking` is a "
        "different thing: the self-correction rule that puts already unmasked tokens back to the mask "
        "('prism', 'confidence', 'random', ReMDM's rules)."
    )


def get_remasking_rule(name: str) -> "RemaskingRule":
    """An instance of the remasking rule registered as ``name``; the error lists the valid names (and, for LLaDA's
    ``'low_confidence'``, says that it is prism_hf's ``unmasking='confidence'``)."""
    hint = llada_remasking_hint(name) if name in LLADA_REMASKING_NAMES and name not in REMASKING_RULES else ""
    return REMASKING_RULES.lookup(name, hint=hint)()


def get_remask_schedule(name: str) -> "RemaskSchedule":
    """An instance of the remask count schedule registered as ``name``; the error lists the valid names."""
    return REMASK_SCHEDULES.lookup(name)()


def quality_head_error(remasking: str, missing: str) -> ValueError:
    """The error for a rule that needs the quality head, used where there is none (the one place it is written).

    Args:
        remasking (`str`): The rule's name.
        missing (`str`): What lacks the head, completing "``remasking=...`` needs ...", e.g. ``"a quality head, but
            the model (LLaDAModelLM) has none"``.

    Returns:
        `ValueError`: To raise; it lists the rules that need no head (those whose ``needs_quality`` is false).
    """
    no_head = sorted(name for name, cls in REMASKING_RULES.items() if not cls.needs_quality)
    return ValueError(
        f"remasking={remasking!r} needs {missing}. Use a PRISM model (PrismForMaskedDiffusion.from_backbone(...) and "
        f"fine-tune its head, or a PRISM checkpoint), or a rule that needs no head: {no_head}."
    )


def remdm_sigma_max(alpha_t: float, alpha_s: float) -> float:
    """ReMDM's largest valid remasking probability, ``min(1, (1 - alpha_s) / alpha_t)`` (0 when ``alpha_t = 0``)."""
    if alpha_t <= 0.0:
        return 0.0
    return min(1.0, max(0.0, (1.0 - alpha_s) / alpha_t))


def remdm_sigma_cap(alpha_t: float, alpha_s: float, eta: float) -> float:
    """ReMDM-cap's remasking probability, ``min(eta, (1 - alpha_s) / alpha_t)`` (0 when ``alpha_t = 0``); ``eta`` is
    in ``[0, 1]``. Also the binomial count schedule's rate and ReMDM-conf's step total."""
    return min(eta, remdm_sigma_max(alpha_t, alpha_s))


def remask_per_step(config: Any) -> int:
    """``num_remask``: the tokens a count rule remasks per step with the fixed schedule, exactly per PRISM-loop step
    and at most per quality-guided refinement step (the one place the scheduler config's field is read)."""
    return int(config.num_remask)


def logit_of(p: float) -> float:
    """``log(p / (1 - p))`` of a probability threshold, to compare with quality logits; ``p = 1`` maps to ``+inf``
    (no finite logit reaches it)."""
    return math.inf if p >= 1.0 else math.log(p / (1.0 - p))


# ----- what a step knows --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepPlan:
    """One step of a block, planned once per block by [`RemaskingRule.plan`] (Python numbers only: planning does no
    device work).

    Args:
        index (`int`): The step within the block, ``0 .. len(plan) - 1`` (PRISM-loop steps follow the schedule's).
        num_steps (`int`): The block's schedule steps ``S``.
        alpha_t (`float`), alpha_s (`float`): Expected clean fraction before and after the step.
        is_last (`bool`): The block's last step, which fills every remaining mask and remasks nothing.
        unmask_schedule (`str`): How the clean count grows (see [`~unmasking.scheduled_clean_count`]).
        confidence_threshold (`float`, *optional*): Parallel decoding's threshold (`None` on the last step).
        eta (`float`): The rule's ``eta`` (the scheduler's, or the rule's default).
        remask_count (`float`): Count rules: the count schedule's number for this step (0: no remasking).
        count_schedule ([`RemaskSchedule`], *optional*): Count rules: turns ``remask_count`` into per-row counts.
        hold (`int`, *optional*): PRISM-loop: remask exactly this many and hold the clean count at ``n - hold``.
        refine_below (`float`, *optional*): Quality-guided refinement: remask only tokens whose quality logit is below
            this (at most ``max_remask``).
        max_remask (`int`): Count rules: ``num_remask``.
        sigma (`float`): Probability rules: the step's ``sigma_t``.
    """

    index: int
    num_steps: int
    alpha_t: float
    alpha_s: float
    is_last: bool
    unmask_schedule: str = "ceil"
    confidence_threshold: Optional[float] = None
    eta: float = 0.0
    remask_count: float = 0
    count_schedule: Optional["RemaskSchedule"] = None
    hold: Optional[int] = None
    refine_below: Optional[float] = None
    max_remask: int = 0
    sigma: float = 0.0


@dataclass
class RemaskContext:
    """What a remasking rule may read in one step (all tensors batched over rows).

    Args:
        clean (`torch.BoolTensor` of shape `(batch_size, sequence_length)`): Positions that may be remasked:
            generated (not prompt / fixed / outside the current block) and currently unmasked.
        num_clean (`torch.LongTensor` of shape `(batch_size,)`): ``clean.sum(-1)``.
        quality_logits (`torch.FloatTensor` of shape `(batch_size, sequence_length)`, *optional*): The quality
            head's logits of the current sequence (float32), or `None` for a model without a quality head. Rank by
            these, not by [`quality`]: a float32 sigmoid is exactly 1.0 above a logit of about 17.
        token_confidence (`torch.Tensor` of shape `(batch_size, sequence_length)`): Probability each token had
            when it was unmasked (ReMDM's ``psi``).
        alpha_t (`float`): Expected clean fraction of the generated region before this step.
        alpha_s (`float`): Expected clean fraction after this step (``alpha_s >= alpha_t``).
        generator (`torch.Generator`, *optional*): RNG for random rules.
        masked (`torch.BoolTensor` of shape `(batch_size, sequence_length)`, *optional*): Generated positions that
            are masked (set by the scheduler).
        num_masked (`torch.LongTensor` of shape `(batch_size,)`, *optional*): ``masked.sum(-1)``.
        plan ([`StepPlan`], *optional*): The step's plan (set by the scheduler).
    """

    clean: torch.Tensor
    num_clean: torch.Tensor
    quality_logits: Optional[torch.Tensor]
    token_confidence: torch.Tensor
    alpha_t: float
    alpha_s: float
    generator: Optional[torch.Generator] = None
    masked: Optional[torch.Tensor] = None
    num_masked: Optional[torch.Tensor] = None
    plan: Optional[StepPlan] = None

    @property
    def quality(self) -> Optional[torch.Tensor]:
        """``sigmoid(quality_logits)`` in ``[0, 1]`` (for rules that need the probability itself, not a ranking)."""
        return None if self.quality_logits is None else torch.sigmoid(self.quality_logits)

    @property
    def num_generated(self) -> torch.Tensor:
        """Generated positions per row, ``n = num_clean + num_masked``, `(batch_size,)`."""
        return self.num_clean + self.num_masked


# ----- remasking rules -----------------------------------------------------------------------------------
class RemaskingRule:
    """Base class of all remasking rules; on its own it never remasks, and each step fills enough masks that the clean
    count follows the unmask schedule (a vanilla MDM)."""

    name: str = ""
    #: Needs the quality head (``context.quality_logits``); asking for it with a plain MDM is an error.
    needs_quality: bool = False
    #: Informational only (the scheduler never reads it): `"none"`, `"count"` or `"probability"`.
    kind: str = "none"
    #: ``eta`` when the scheduler's is `None` (the binomial count schedule's default; ReMDM rules have their own).
    default_eta: float = 0.01

    # ----- planning (once per block) -----
    def validate(self, config: Any) -> None:
        """Raise a clear error for scheduler settings this rule cannot honour (called when the scheduler is built)."""
        if config.prism_loop_steps > 0 and self.num_loop_steps(config) == 0:
            count_rules = sorted(n for n, c in REMASKING_RULES.items() if issubclass(c, CountRemaskingRule))
            hint = " (use remasking='remdm_loop' for ReMDM's loop)." if self.name.startswith("remdm") else "."
            raise ValueError(f"prism_loop_steps={config.prism_loop_steps} needs a count remasking rule ({count_rules}); "
                             f"got remasking={self.name!r}{hint}")
        if config.quality_threshold is not None and not self.needs_quality:
            raise ValueError(f"quality_threshold={config.quality_threshold!r} needs the quality head: use "
                             f"remasking='prism' (got remasking={self.name!r}).")

    def eta(self, config: Any) -> float:
        """``eta`` in use: the scheduler's, or this rule's default."""
        return float(config.eta) if config.eta is not None else self.default_eta

    def alphas(self, num_steps: int, config: Any) -> List[float]:
        """Expected clean fraction after each of ``num_steps + 1`` step boundaries (``alphas[0] = 0``, last 1)."""
        return [k / num_steps for k in range(num_steps + 1)]

    def num_loop_steps(self, config: Any) -> int:
        """Extra steps per block after the schedule (PRISM-loop); 0 for rules without a loop."""
        return 0

    def plan(self, num_steps: int, config: Any) -> List[StepPlan]:
        """The steps of one block: ``num_steps`` schedule steps, then [`num_loop_steps`] more.

        Args:
            num_steps (`int`): The block's schedule steps ``S`` (>= 1).
            config: The scheduler's config.

        Returns:
            `List[StepPlan]`: One entry per step.
        """
        alphas = self.alphas(num_steps, config)
        total = num_steps + self.num_loop_steps(config)
        steps = [
            StepPlan(index=k, num_steps=num_steps, alpha_t=alphas[min(k, num_steps)],
                     alpha_s=alphas[min(k + 1, num_steps)], is_last=k == total - 1,
                     unmask_schedule=config.unmask_schedule, eta=self.eta(config),
                     confidence_threshold=None if k == total - 1 else config.confidence_threshold)
            for k in range(total)
        ]
        return self.plan_remasking(steps, config)

    def plan_remasking(self, steps: List[StepPlan], config: Any) -> List[StepPlan]:
        """Fill in the remasking fields of a block's plan (this rule remasks nothing)."""
        return steps

    def check_block_length(self, block_length: int, config: Any) -> None:
        """Raise a clear error when this rule's settings cannot fit a block of ``block_length`` tokens."""

    # ----- one step -----
    def remask(self, context: RemaskContext) -> Optional[torch.BoolTensor]:
        """The positions to put back to the mask, `(batch_size, sequence_length)`, a subset of ``context.clean``;
        `None` when the step remasks nothing. Not called on a block's last step."""
        return None

    def clean_target(self, context: RemaskContext) -> torch.Tensor:
        """Clean generated tokens per row after the step, `(batch_size,)` (the unmask schedule; a PRISM-loop step
        holds ``hold`` tokens back; the last step fills everything)."""
        plan = context.plan
        num_generated = context.num_generated
        if plan.is_last:
            return num_generated
        target = scheduled_clean_count(num_generated, min(plan.index + 1, plan.num_steps), plan.num_steps,
                                       plan.unmask_schedule)
        if plan.hold is not None:
            target = torch.minimum(target, (num_generated - plan.hold).clamp(min=0))
        return target

    def num_unmask(self, context: RemaskContext, num_remasked: torch.Tensor) -> torch.Tensor:
        """How many masked positions each row fills, `(batch_size,)`: enough for [`clean_target`], counting the
        ``num_remasked`` tokens just remasked (a position remasked in this step is not refilled in it)."""
        count = (self.clean_target(context) - context.num_clean + num_remasked).clamp(min=0)
        return torch.minimum(count, context.num_masked)


@register_remasking_rule("none")
class NoRemasking(RemaskingRule):
    """Vanilla MDM: a token, once unmasked, never changes."""


class CountRemaskingRule(RemaskingRule):
    """Remask the ``r`` clean generated tokens with the lowest [`score`] (``r`` from the count schedule, PRISM-loop
    or quality-guided refinement, capped per row)."""

    kind = "count"

    def score(self, context: RemaskContext) -> torch.Tensor:
        """`(batch_size, sequence_length)` scores; the lowest are remasked first."""
        raise NotImplementedError

    def num_loop_steps(self, config: Any) -> int:
        return config.prism_loop_steps

    def plan_remasking(self, steps: List[StepPlan], config: Any) -> List[StepPlan]:
        """The count schedule's number inside the window ``[step_on, step_off)``; PRISM-loop steps hold
        ``num_remask`` tokens back for their remasks, while quality-guided refinement fills the block at the
        schedule's end (so that a block can be found finished there) and then remasks what falls below the
        threshold."""
        num_steps, per_step = steps[0].num_steps, remask_per_step(config)
        loop = len(steps) - num_steps
        schedule = get_remask_schedule(config.remask_schedule)
        active = [config.step_on * num_steps <= k < config.step_off * num_steps for k in range(num_steps)]
        planned = schedule.plan(num_steps, active, config)
        refine = config.quality_threshold is not None
        below = logit_of(config.quality_threshold) if refine else None
        return [
            replace(step, remask_count=planned[k] if k < num_steps else 0, count_schedule=schedule, max_remask=per_step,
                    hold=per_step if loop > 0 and num_steps - 1 <= k < len(steps) - 1 and not refine else None,
                    refine_below=below if refine and k >= num_steps else None)
            for k, step in enumerate(steps)
        ]

    def check_block_length(self, block_length: int, config: Any) -> None:
        per_step = remask_per_step(config)
        if (config.remask_schedule == "fixed" or self.num_loop_steps(config) > 0) and per_step > block_length:
            raise ValueError(f"num_remask={per_step} is larger than the block ({block_length} tokens); it must be at "
                             "most block_length (and in practice well below it).")
        if config.remask_schedule == "budget" and config.remask_budget > block_length:
            raise ValueError(f"remask_budget={config.remask_budget} is larger than the block ({block_length} tokens); "
                             "it must be at most block_length.")

    def remask(self, context: RemaskContext) -> Optional[torch.BoolTensor]:
        plan = context.plan
        num_clean = context.num_clean
        if plan.refine_below is not None:
            eligible = context.clean & (context.quality_logits < plan.refine_below)
            counts = torch.minimum(eligible.sum(-1), torch.full_like(num_clean, plan.max_remask))
            counts = torch.minimum(counts, num_clean - 1).clamp(min=0)
        elif plan.remask_count or plan.hold:
            eligible = context.clean
            if plan.hold is not None:
                counts = torch.full_like(num_clean, plan.hold)
            else:
                counts = plan.count_schedule.counts(plan.remask_count, context, plan.eta)
            # Cap: at most the clean generated tokens minus one (one clean token always stays, so a step never empties
            # the block it is correcting; the public text sampler even skips a step with r or fewer clean tokens), and
            # only as many as stay masked after this step, so that every remasked token can be refilled by a later
            # step (parallel decoding refills by confidence, not by count).
            room = context.num_generated
            if plan.confidence_threshold is None:
                room = room - self.clean_target(context)
            counts = torch.minimum(counts, torch.minimum(num_clean - 1, room)).clamp(min=0)
        else:
            return None
        scores = self.score(context).float().masked_fill(~eligible, float("inf"))
        return top_per_row(scores, counts, descending=False)


@register_remasking_rule("prism")
class PrismRemasking(CountRemaskingRule):
    """PRISM: remask the tokens the quality head rates lowest, ranked by the head's logits (the official LLaDA
    sampler does the same; ranking by a float32 sigmoid would tie every token whose logit is above about 17)."""

    needs_quality = True

    def score(self, context: RemaskContext) -> torch.Tensor:
        if context.quality_logits is None:
            raise quality_head_error(self.name, "quality scores, but the model output has no `quality_logits` (a "
                                                "plain MDM without a PRISM quality head)")
        return context.quality_logits.float()


@register_remasking_rule("random")
class RandomRemasking(CountRemaskingRule):
    """Uniformly random clean tokens, with the same counts as `prism`."""

    def score(self, context: RemaskContext) -> torch.Tensor:
        return torch.rand(context.clean.shape, device=context.clean.device, generator=context.generator)


@register_remasking_rule("confidence")
class ConfidenceRemasking(CountRemaskingRule):
    """ReMDM-conf with PRISM's counts: remask the tokens whose unmasking probability ``psi`` was lowest."""

    def score(self, context: RemaskContext) -> torch.Tensor:
        return context.token_confidence


class ProbabilityRemaskingRule(RemaskingRule):
    """ReMDM: each clean generated token is remasked with probability ``sigma_t`` (see [`sigma`]), and each masked
    one unmasked with probability ``(alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t)``."""

    kind = "probability"
    #: The public ReMDM default of ``eta`` for this rule, used when the scheduler's ``eta`` is `None`.
    default_eta: float = 0.0

    def validate(self, config: Any) -> None:
        super().validate(config)
        if config.confidence_threshold is not None:
            raise ValueError(
                f"confidence_threshold={config.confidence_threshold!r} sets the unmask count from the confidences, "
                f"while remasking={self.name!r} draws it from ReMDM's schedule; use a count rule ('none', 'prism', "
                "'random', 'confidence') with a threshold."
            )

    def sigma(self, step: int, num_steps: int, alpha_t: float, alpha_s: float, eta: float, config) -> float:
        """The step's remasking probability ``sigma_t``."""
        raise NotImplementedError

    def token_sigma(self, context: RemaskContext, sigma: float) -> torch.Tensor:
        """Per-token remasking probabilities, `(batch_size, sequence_length)` or broadcastable to it."""
        return torch.full((1, 1), sigma, device=context.clean.device)

    def plan_remasking(self, steps: List[StepPlan], config: Any) -> List[StepPlan]:
        return [replace(s, sigma=self.sigma(s.index, s.num_steps, s.alpha_t, s.alpha_s, s.eta, config)) for s in steps]

    def remask(self, context: RemaskContext) -> Optional[torch.BoolTensor]:
        if context.plan.sigma <= 0.0:
            return None
        token_sigma = self.token_sigma(context, context.plan.sigma).float()
        draws = torch.rand(context.clean.shape, device=context.clean.device, generator=context.generator)
        return context.clean & (draws < token_sigma)

    def num_unmask(self, context: RemaskContext, num_remasked: torch.Tensor) -> torch.Tensor:
        """``Binomial(masked, (alpha_s - (1 - sigma_t) alpha_t) / (1 - alpha_t))`` per row; with per-token sigma
        (conf) ``sigma_t`` is the mean over the row's clean tokens."""
        plan, clean, num_clean = context.plan, context.clean, context.num_clean
        mean_sigma = torch.zeros(num_clean.shape, device=num_clean.device)
        if plan.sigma > 0.0:
            token_sigma = self.token_sigma(context, plan.sigma).float()
            mean_sigma = (token_sigma.expand_as(clean) * clean).sum(-1) / num_clean.clamp(min=1)
        if plan.alpha_t >= 1.0:
            prob = torch.ones_like(mean_sigma)
        else:
            prob = ((plan.alpha_s - (1.0 - mean_sigma) * plan.alpha_t) / (1.0 - plan.alpha_t)).clamp(0.0, 1.0)
        return torch.binomial(context.num_masked.float(), prob, generator=context.generator).long()


@register_remasking_rule("remdm_cap")
class RemdmCapRemasking(ProbabilityRemaskingRule):
    """ReMDM-cap: ``sigma_t = min(eta, (1 - alpha_s) / alpha_t)``."""

    default_eta = 0.008

    def sigma(self, step, num_steps, alpha_t, alpha_s, eta, config):
        return remdm_sigma_cap(alpha_t, alpha_s, eta)


@register_remasking_rule("remdm_rescale")
class RemdmRescaleRemasking(ProbabilityRemaskingRule):
    """ReMDM-rescale: ``sigma_t = eta * sigma_max``."""

    default_eta = 0.015

    def sigma(self, step, num_steps, alpha_t, alpha_s, eta, config):
        return eta * remdm_sigma_max(alpha_t, alpha_s)


@register_remasking_rule("remdm_conf")
class RemdmConfRemasking(ProbabilityRemaskingRule):
    """ReMDM-conf: per-token ``sigma = softmax over clean tokens of (-psi) * sigma_t``, with
    ``sigma_t = min(eta, sigma_max)`` (``eta = 1`` by default, i.e. ``sigma_t = sigma_max``) and ``psi`` the
    probability the token had when it was unmasked."""

    default_eta = 1.0

    def sigma(self, step, num_steps, alpha_t, alpha_s, eta, config):
        return remdm_sigma_cap(alpha_t, alpha_s, eta)

    def token_sigma(self, context: RemaskContext, sigma: float) -> torch.Tensor:
        neg_psi = (-context.token_confidence.float()).masked_fill(~context.clean, float("-inf"))
        # Rows without clean tokens would give NaN (softmax of all -inf); they have nothing to remask.
        weights = torch.softmax(neg_psi, dim=-1).nan_to_num(0.0)
        return weights * sigma


@register_remasking_rule("remdm_loop")
class RemdmLoopRemasking(ProbabilityRemaskingRule):
    """ReMDM-loop: plain MDM steps until ``alpha`` reaches ``remdm_alpha_on`` at time ``remdm_t_on``; then
    ``alpha`` is held while tokens are remasked with ``sigma = eta`` (and as many refilled) until
    ``remdm_t_off``; then plain MDM steps finish. Time runs from 1 to 0 over the block's steps."""

    default_eta = 0.02

    def alphas(self, num_steps, config):
        t_on, t_off, alpha_on = config.remdm_t_on, config.remdm_t_off, config.remdm_alpha_on
        out = []
        for k in range(num_steps + 1):
            t = 1.0 - k / num_steps
            if t >= t_on:
                alpha = alpha_on * (1.0 - t) / (1.0 - t_on) if t_on < 1.0 else alpha_on
            elif t >= t_off:
                alpha = alpha_on
            else:
                alpha = alpha_on + (1.0 - alpha_on) * (t_off - t) / t_off
            out.append(min(1.0, max(0.0, alpha)))
        out[-1] = 1.0
        return out

    def sigma(self, step, num_steps, alpha_t, alpha_s, eta, config):
        t, s = 1.0 - step / num_steps, 1.0 - (step + 1) / num_steps
        in_loop = t <= config.remdm_t_on + 1e-9 and s >= config.remdm_t_off - 1e-9
        return eta if in_loop else 0.0


# ----- count schedules -----------------------------------------------------------------------------------
class RemaskSchedule:
    """How many tokens a count rule remasks per step.

    [`plan`] runs once per block (in `set_timesteps`) and returns one Python number per step; [`counts`]
    turns a step's planned number into per-row counts ``(batch_size,)``. The count rule then caps each row's
    count by its clean generated tokens and by the masks that stay after the step (so that every remasked
    token can be refilled by a later step).
    """

    name: str = ""

    def plan(self, num_steps: int, active: List[bool], config) -> List[float]:
        raise NotImplementedError

    def counts(self, planned: float, context: RemaskContext, eta: float) -> torch.Tensor:
        return torch.full_like(context.num_clean, int(planned))


@register_remask_schedule("fixed")
class FixedRemaskSchedule(RemaskSchedule):
    """``num_remask`` tokens at every step of the window (Sudoku: 4 per step)."""

    def plan(self, num_steps, active, config):
        per_step = remask_per_step(config)
        return [per_step if on else 0 for on in active]


@register_remask_schedule("budget")
class BudgetRemaskSchedule(RemaskSchedule):
    """``remask_budget`` tokens per block over the window's middle steps (its steps without the block's first
    step, when nothing is clean yet, and last step, which must fill every mask), **centred** as the official PRISM
    LLaDA sampler centres them: each middle step gets ``budget // m`` (``m`` middle steps) and the ``budget % m``
    extra tokens go to the middle steps nearest the window's centre (the earlier one first on a tie). LLaDA code
    recipe: 12 per 64-token block over 32 steps remasks one token at each of steps 10 to 21."""

    def plan(self, num_steps, active, config):
        middle = [k for k, on in enumerate(active) if on and 0 < k < num_steps - 1]
        out = [0] * num_steps
        if not middle:
            return out
        base, extra = divmod(config.remask_budget, len(middle))
        centre = (middle[0] + middle[-1]) / 2
        nearest_centre = sorted(middle, key=lambda k: (abs(k - centre), k))[:extra]
        for k in middle:
            out[k] = base + (1 if k in nearest_centre else 0)
        return out


@register_remask_schedule("binomial")
class BinomialRemaskSchedule(RemaskSchedule):
    """``r ~ Binomial(n_clean, sigma)`` per row with ``sigma = min(eta, (1 - alpha_s) / alpha_t)`` (text: eta 0.01)."""

    def plan(self, num_steps, active, config):
        return [1.0 if on else 0.0 for on in active]

    def counts(self, planned, context, eta):
        if planned == 0.0 or context.alpha_t <= 0.0:
            return torch.zeros_like(context.num_clean)
        sigma = remdm_sigma_cap(context.alpha_t, context.alpha_s, eta)
        prob = torch.full(context.num_clean.shape, sigma, dtype=torch.float32, device=context.num_clean.device)
        return torch.binomial(context.num_clean.float(), prob, generator=context.generator).long()
