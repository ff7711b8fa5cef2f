"""Unmasking rules: which masked positions a sampling step fills.

A rule turns the step's posterior into one score per position; the scheduler fills, in every row, the
``num_unmask`` masked positions with the highest score (``num_unmask`` is a per-row count). A new rule is
one small class:

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

from typing import Callable, Dict, Optional, Type

import torch

__all__ = [
    "UnmaskingRule",
    "ConfidenceUnmasking",
    "MarginUnmasking",
    "EntropyUnmasking",
    "RandomUnmasking",
    "UNMASKING_RULES",
    "register_unmasking_rule",
    "get_unmasking_rule",
]

UNMASKING_RULES: Dict[str, Type["UnmaskingRule"]] = {}


def register_unmasking_rule(name: str) -> Callable[[Type["UnmaskingRule"]], Type["UnmaskingRule"]]:
    """Class decorator: make an [`UnmaskingRule`] available as ``PrismScheduler(unmasking=name)``."""

    def decorator(cls: Type["UnmaskingRule"]) -> Type["UnmaskingRule"]:
        if name in UNMASKING_RULES and UNMASKING_RULES[name] is not cls:
            raise ValueError(f"unmasking rule {name!r} is already registered to {UNMASKING_RULES[name].__name__}.")
        UNMASKING_RULES[name] = cls
        cls.name = name
        return cls

    return decorator


def get_unmasking_rule(name: str) -> "UnmaskingRule":
    """An instance of the unmasking rule registered as ``name``; the error lists the valid names."""
    try:
        return UNMASKING_RULES[name]()
    except (KeyError, TypeError):
        hint = " (LLaDA's remasking='low_confidence' is unmasking='confidence')" if name == "low_confidence" else ""
        raise ValueError(
            f"unmasking={name!r} is not a known unmasking rule{hint}; valid rules: {sorted(UNMASKING_RULES)}. "
            "Add one with `@prism_hf.sampling.unmasking.register_unmasking_rule('name')`."
        ) from None


class UnmaskingRule:
    """Base class. Subclasses implement [`score`]; higher scores are unmasked first."""

    name: str = ""
    #: Whether [`score`] reads ``probs`` beyond the drawn token's probability (lets the scheduler skip work).
    needs_full_probs: bool = False

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
