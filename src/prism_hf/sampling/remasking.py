"""Remasking rules and remask count schedules.

Two kinds of remasking rules exist, both registered by name in [`REMASKING_RULES`]:

* **Count rules** (`prism`, `random`, `confidence`): a count schedule (see [`REMASK_SCHEDULES`]) says how many
  tokens ``r`` each row remasks this step; the rule ranks the row's clean generated tokens and the ``r``
  lowest are remasked. `prism` ranks by the quality head's logits (the same order as ``sigmoid(quality_logits)``,
  without its float32 saturation: the sigmoid is exactly 1.0 above a logit of about 17, where every confident
  token would tie); `confidence` by the probability the token had when it was unmasked; `random` uniformly. `random` and `confidence` with the same
  counts as `prism` isolate what the learned head adds.
* **Probability rules** (ReMDM, arXiv 2503.00307: `remdm_cap`, `remdm_rescale`, `remdm_conf`, `remdm_loop`):
  every clean generated token is remasked independently with probability ``sigma_t`` (per token for
  `remdm_conf`), from the step's ``alpha_t`` (expected clean fraction before the step) and ``alpha_s`` (after).

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

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Type

import torch

__all__ = [
    "RemaskContext",
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
    "LLADA_REMASKING_NAMES",
    "llada_remasking_hint",
]

REMASKING_RULES: Dict[str, Type["RemaskingRule"]] = {}
REMASK_SCHEDULES: Dict[str, Type["RemaskSchedule"]] = {}


def register_remasking_rule(name: str) -> Callable[[Type["RemaskingRule"]], Type["RemaskingRule"]]:
    """Class decorator: make a [`RemaskingRule`] available as ``PrismScheduler(remasking=name)``."""

    def decorator(cls):
        if name in REMASKING_RULES and REMASKING_RULES[name] is not cls:
            raise ValueError(f"remasking rule {name!r} is already registered to {REMASKING_RULES[name].__name__}.")
        REMASKING_RULES[name] = cls
        cls.name = name
        return cls

    return decorator


def register_remask_schedule(name: str) -> Callable[[Type["RemaskSchedule"]], Type["RemaskSchedule"]]:
    """Class decorator: make a [`RemaskSchedule`] available as ``PrismScheduler(remask_schedule=name)``."""

    def decorator(cls):
        if name in REMASK_SCHEDULES and REMASK_SCHEDULES[name] is not cls:
            raise ValueError(f"remask schedule {name!r} is already registered to {REMASK_SCHEDULES[name].__name__}.")
        REMASK_SCHEDULES[name] = cls
        cls.name = name
        return cls

    return decorator


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
    try:
        return REMASKING_RULES[name]()
    except (KeyError, TypeError):
        hint = f" {llada_remasking_hint(name)}" if name in LLADA_REMASKING_NAMES and name not in REMASKING_RULES else ""
        raise ValueError(
            f"remasking={name!r} is not a known remasking rule; valid rules: {sorted(REMASKING_RULES)}. "
            f"Add one with `@prism_hf.sampling.remasking.register_remasking_rule('name')`.{hint}"
        ) from None


def get_remask_schedule(name: str) -> "RemaskSchedule":
    """An instance of the remask count schedule registered as ``name``; the error lists the valid names."""
    try:
        return REMASK_SCHEDULES[name]()
    except (KeyError, TypeError):
        raise ValueError(
            f"remask_schedule={name!r} is not a known remask count schedule; valid schedules: "
            f"{sorted(REMASK_SCHEDULES)}. Add one with `@prism_hf.sampling.remasking.register_remask_schedule('name')`."
        ) from None


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
    """

    clean: torch.Tensor
    num_clean: torch.Tensor
    quality_logits: Optional[torch.Tensor]
    token_confidence: torch.Tensor
    alpha_t: float
    alpha_s: float
    generator: Optional[torch.Generator] = None

    @property
    def quality(self) -> Optional[torch.Tensor]:
        """``sigmoid(quality_logits)`` in ``[0, 1]`` (for rules that need the probability itself, not a ranking)."""
        return None if self.quality_logits is None else torch.sigmoid(self.quality_logits)


def remdm_sigma_max(alpha_t: float, alpha_s: float) -> float:
    """ReMDM's largest valid remasking probability, ``min(1, (1 - alpha_s) / alpha_t)`` (0 when ``alpha_t = 0``)."""
    if alpha_t <= 0.0:
        return 0.0
    return min(1.0, max(0.0, (1.0 - alpha_s) / alpha_t))


# ----- remasking rules -----------------------------------------------------------------------------------
class RemaskingRule:
    """Base class of all remasking rules."""

    name: str = ""
    #: Needs the quality head (``context.quality_logits``); asking for it with a plain MDM is an error.
    needs_quality: bool = False
    #: `"none"`, `"count"` (a count schedule gives r, [`score`] picks which) or `"probability"` (ReMDM).
    kind: str = "none"


@register_remasking_rule("none")
class NoRemasking(RemaskingRule):
    """Vanilla MDM: a token, once unmasked, never changes."""


class CountRemaskingRule(RemaskingRule):
    """Remask the ``r`` clean generated tokens with the lowest [`score`] (``r`` from the count schedule)."""

    kind = "count"

    def score(self, context: RemaskContext) -> torch.Tensor:
        """`(batch_size, sequence_length)` scores; the lowest are remasked first."""
        raise NotImplementedError


@register_remasking_rule("prism")
class PrismRemasking(CountRemaskingRule):
    """PRISM: remask the tokens the quality head rates lowest, ranked by the head's logits (the official LLaDA
    sampler does the same; ranking by a float32 sigmoid would tie every token whose logit is above about 17)."""

    needs_quality = True

    def score(self, context: RemaskContext) -> torch.Tensor:
        if context.quality_logits is None:
            raise ValueError(
                "remasking='prism' needs quality scores, but the model output has no `quality_logits` (a plain MDM "
                "without a PRISM quality head). Wrap the backbone with PrismForMaskedDiffusion, or choose a rule that "
                f"needs no head: {sorted(n for n, c in REMASKING_RULES.items() if not c.needs_quality)}."
            )
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
    """ReMDM: each clean generated token is remasked with probability ``sigma_t`` (see [`sigma`])."""

    kind = "probability"
    #: The public ReMDM default of ``eta`` for this rule, used when the scheduler's ``eta`` is `None`.
    default_eta: float = 0.0

    def alphas(self, num_steps: int, config) -> List[float]:
        """Expected clean fraction after each of ``num_steps + 1`` step boundaries (``alphas[0] = 0``, last 1)."""
        return [k / num_steps for k in range(num_steps + 1)]

    def sigma(self, step: int, num_steps: int, alpha_t: float, alpha_s: float, eta: float, config) -> float:
        """The step's remasking probability ``sigma_t``."""
        raise NotImplementedError

    def token_sigma(self, context: RemaskContext, sigma: float) -> torch.Tensor:
        """Per-token remasking probabilities, `(batch_size, sequence_length)` or broadcastable to it."""
        return torch.full((1, 1), sigma, device=context.clean.device)


@register_remasking_rule("remdm_cap")
class RemdmCapRemasking(ProbabilityRemaskingRule):
    """ReMDM-cap: ``sigma_t = min(eta, (1 - alpha_s) / alpha_t)``."""

    default_eta = 0.008

    def sigma(self, step, num_steps, alpha_t, alpha_s, eta, config):
        if alpha_t <= 0.0:
            return 0.0
        return min(eta, max(0.0, (1.0 - alpha_s) / alpha_t))


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
        return min(eta, remdm_sigma_max(alpha_t, alpha_s))

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
    turns a step's planned number into per-row counts ``(batch_size,)``. The scheduler then caps each row's
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
        return [config.num_remask if on else 0 for on in active]


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
        sigma = min(eta, max(0.0, (1.0 - context.alpha_s) / context.alpha_t))
        prob = torch.full(context.num_clean.shape, sigma, dtype=torch.float32, device=context.num_clean.device)
        return torch.binomial(context.num_clean.float(), prob, generator=context.generator).long()

