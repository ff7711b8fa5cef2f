"""Unmasking rules: which masked positions a sampling step fills.

A rule turns the step's posterior into one score per position ([`UnmaskingRule.score`]) and chooses, in every row,
the positions to fill ([`UnmaskingRule.select`]: by default the ``num_unmask`` masked positions with the highest
score, ``num_unmask`` being a per-row count that the remasking rule decides). A new rule is one small class:

```python
from prism_hf.sampling.unmasking import UnmaskingRule, register_unmasking_rule


@register_unmasking_rule("low_entropy_first")
class LowEntropyFirst(UnmaskingRule):
    def score(self, probs, sampled_tokens, token_prob, generator=None):
        return (probs * probs.clamp_min(1e-12).log()).sum(-1)
```

Scores are only compared inside a row and only among masked positions, so their scale does not matter.
"""

from __future__ import annotations

from typing import Callable, Optional, Type

import torch

from ..utils.registry import Registry

__all__ = [
    "UnmaskingRule",
    "ConfidenceUnmasking",
    "MarginUnmasking",
    "EntropyUnmasking",
    "RandomUnmasking",
    "UNMASKING_RULES",
    "UNMASK_SCHEDULES",
    "register_unmasking_rule",
    "get_unmasking_rule",
    "scheduled_clean_count",
    "top_per_row",
]

#: ``unmask_schedule`` values: how a block's clean count grows step by step (see [`scheduled_clean_count`]).
UNMASK_SCHEDULES = ("ceil", "llada")


class RuleRegistry(Registry):
    """The [`~prism_hf.utils.registry.Registry`] of sampling rules (unmasking and remasking rules, remask schedules):
    it stamps each registered class with its ``name`` and says which decorator adds one."""

    def __init__(self, kind: str, argument: str, decorator_path: str):
        super().__init__(kind, argument, how_to_add=f"Add one with `@{decorator_path}('name')`.",
                         on_register=lambda name, cls: setattr(cls, "name", name))


UNMASKING_RULES: Registry = RuleRegistry("unmasking rule", "unmasking",
                                         "prism_hf.sampling.unmasking.register_unmasking_rule")


def register_unmasking_rule(name: str) -> Callable[[Type["UnmaskingRule"]], Type["UnmaskingRule"]]:
    """Class decorator: make an [`UnmaskingRule`] available as ``PrismScheduler(unmasking=name)``."""
    return UNMASKING_RULES.decorator(name)


def get_unmasking_rule(name: str) -> "UnmaskingRule":
    """An instance of the unmasking rule registered as ``name``; the error lists the valid names."""
    hint = "(LLaDA's remasking='low_confidence' is unmasking='confidence')" if name == "low_confidence" else ""
    return UNMASKING_RULES.lookup(name, hint=hint)()


def top_per_row(scores: torch.Tensor, counts: torch.Tensor, descending: bool) -> torch.BoolTensor:
    """Boolean mask of the ``counts[b]`` best entries of each row of ``scores``: the highest with
    ``descending=True``, the lowest otherwise. Entries that must never be chosen must already carry ``-inf``
    (``descending``) or ``+inf`` so that they sort last.

    Args:
        scores (`torch.Tensor` of shape `(batch_size, length)`).
        counts (`torch.LongTensor` of shape `(batch_size,)`).
        descending (`bool`).

    Returns:
        `torch.BoolTensor` of shape `(batch_size, length)`.
    """
    order = scores.argsort(dim=-1, descending=descending)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
    return ranks < counts.unsqueeze(-1)


def scheduled_clean_count(num_generated: torch.Tensor, done: int, steps: int, unmask_schedule: str) -> torch.Tensor:
    """Clean generated tokens a row should hold after step ``done - 1`` of ``steps`` (integer arithmetic: exact, and
    no float64, which some devices lack).

    Args:
        num_generated (`torch.LongTensor` of shape `(batch_size,)`): The block's generated positions per row, ``n``.
        done (`int`): Steps finished after this one, ``k + 1`` (at most ``steps``).
        steps (`int`): The block's schedule steps ``S``.
        unmask_schedule (`str`): `"ceil"`, ``ceil(n (k + 1) / S)``; or `"llada"`, LLaDA's ``get_num_transfer_tokens``
            (``n // S`` per step plus one more on each of the first ``n % S`` steps).

    Returns:
        `torch.LongTensor` of shape `(batch_size,)`.
    """
    if unmask_schedule == "llada":
        base = torch.div(num_generated, steps, rounding_mode="floor")
        return base * done + torch.clamp(num_generated - base * steps, max=done)
    return torch.div(num_generated * done + steps - 1, steps, rounding_mode="floor")


class UnmaskingRule:
    """Base class. Subclasses implement [`score`]; higher scores are unmasked first."""

    name: str = ""
    #: Whether [`score`] reads ``probs`` beyond the drawn token's probability (lets the scheduler skip work).
    needs_full_probs: bool = False

    def select(
        self,
        scores: torch.Tensor,
        masked: torch.BoolTensor,
        num_unmask: torch.LongTensor,
        token_prob: torch.Tensor,
        confidence_threshold: Optional[float] = None,
    ) -> torch.BoolTensor:
        """Which masked positions a step fills.

        Args:
            scores (`torch.Tensor` of shape `(batch_size, sequence_length)`): [`score`] at masked positions, ``-inf``
                elsewhere.
            masked (`torch.BoolTensor` of shape `(batch_size, sequence_length)`): The positions that may be filled.
            num_unmask (`torch.LongTensor` of shape `(batch_size,)`): How many to fill per row (the remasking rule's
                count).
            token_prob (`torch.Tensor` of shape `(batch_size, sequence_length)`): Probability of each drawn token.
            confidence_threshold (`float`, *optional*): Fast-dLLM's parallel decoding: fill instead every masked
                position whose drawn token has at least this probability and, in a row with none, the one this rule
                ranks first (``num_unmask`` is then not read).

        Returns:
            `torch.BoolTensor` of shape `(batch_size, sequence_length)`: the positions to fill.
        """
        if confidence_threshold is None:
            return top_per_row(scores, num_unmask, descending=True) & masked
        unmasked = masked & (token_prob >= confidence_threshold)
        fallback = top_per_row(scores, (~unmasked.any(-1) & masked.any(-1)).long(), descending=True)
        return unmasked | (fallback & masked)

    def score(
        self,
        probs: torch.Tensor,
        sampled_tokens: torch.LongTensor,
        token_prob: torch.Tensor,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Score every position.

        Args:
            probs (`torch.Tensor` of shape `(batch_size, sequence_length, vocab_size)`): The posterior the scores
                read: the model's untempered posterior (scheduler ``confidence_source="model"``, the default) or the
                tempered, top-k / top-p filtered one the tokens were drawn from (``"sampling"``); the mask token has
                probability 0. `None` unless the rule sets ``needs_full_probs``.
            sampled_tokens (`torch.LongTensor` of shape `(batch_size, sequence_length)`): The drawn tokens.
            token_prob (`torch.Tensor` of shape `(batch_size, sequence_length)`): That posterior at the drawn token.
            generator (`torch.Generator`, *optional*): For rules that draw random numbers.

        Returns:
            `torch.Tensor` of shape `(batch_size, sequence_length)`: Higher means "unmask sooner".
        """
        raise NotImplementedError


@register_unmasking_rule("confidence")
class ConfidenceUnmasking(UnmaskingRule):
    """Probability of the drawn token (LLaDA's ``remasking='low_confidence'``: the most confident masks are filled
    first, the least confident stay masked). With the scheduler's default ``confidence_source="model"`` this is the
    untempered posterior's probability, as in LLaDA, the official PRISM sampler and Fast-dLLM."""

    def score(self, probs, sampled_tokens, token_prob, generator=None):
        return token_prob


@register_unmasking_rule("margin")
class MarginUnmasking(UnmaskingRule):
    """Gap between the two most likely tokens, ``p_top1 - p_top2``."""

    needs_full_probs = True

    def score(self, probs, sampled_tokens, token_prob, generator=None):
        if probs.shape[-1] < 2:
            return token_prob
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1]


@register_unmasking_rule("entropy")
class EntropyUnmasking(UnmaskingRule):
    """Negative entropy of the posterior: the most peaked distributions are filled first."""

    needs_full_probs = True

    def score(self, probs, sampled_tokens, token_prob, generator=None):
        return (probs * probs.clamp_min(1e-12).log()).sum(-1)


@register_unmasking_rule("random")
class RandomUnmasking(UnmaskingRule):
    """Uniformly random positions (the public Sudoku and text recipes; the quality head catches mistakes)."""

    def score(self, probs, sampled_tokens, token_prob, generator=None):
        return torch.rand(token_prob.shape, device=token_prob.device, generator=generator)
