"""The one token sampler of prism_hf: a categorical draw from posterior logits, shared by the PRISM loss (its
proposals) and the scheduler (the tokens a sampling step may write).

[`sample_tokens`] draws by inverse CDF: one uniform per draw and a binary search in the cumulative distribution
(on CPU far cheaper than `torch.multinomial` or a Gumbel race over a large vocabulary). A token can be suppressed (the
mask token: filling a position with the mask would not fill it); it is removed *before* the temperature and the
top-k / top-p filters, so the filters never keep only that token, and every probability returned is renormalised
without it. The probability reported for a drawn token ("confidence") comes from the model's own, untempered and
unfiltered posterior by default, as LLaDA's ``generate``, the official PRISM sampler and Fast-dLLM order by it.

Training never imports sampling, and sampling never imports training: both import this module.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple, Optional

import torch

__all__ = ["TOP_P_MODES", "CONFIDENCE_SOURCES", "TokenDraw", "top_p_filter", "top_k_filter", "sample_tokens"]

#: ``top_p_mode`` values: which tokens a nucleus keeps (see [`top_p_filter`]).
TOP_P_MODES = ("transformers", "mdlm")
#: ``confidence_source`` values: which distribution the reported token probabilities come from.
CONFIDENCE_SOURCES = ("model", "sampling")

# Vocabularies up to this size take the short-row path: on CPU, max + exp + sum costs less than PyTorch's softmax and
# topk kernels over rows this short (Sudoku: 11 tokens).
_SHORT_VOCAB = 64


class TokenDraw(NamedTuple):
    """What [`sample_tokens`] returns (a named tuple: ``tokens, token_prob, probs = sample_tokens(...)`` works).

    Args:
        tokens (`torch.LongTensor` of shape `(...)`, or `(num_samples, ...)`): The drawn token ids (`...` is the
            logits' shape without the vocabulary dimension).
        token_prob (`torch.FloatTensor`, same shape as ``tokens``): Each drawn token's probability under the
            distribution named by ``confidence_source`` (renormalised without the suppressed token).
        probs (`torch.FloatTensor` of shape `(..., vocab_size)`, *optional*): That whole distribution, when
            ``return_probs=True`` (else `None`); the suppressed token has probability 0.
    """

    tokens: torch.LongTensor
    token_prob: torch.Tensor
    probs: Optional[torch.Tensor]


def top_p_filter(logits: torch.Tensor, top_p: Optional[float], mode: str = "transformers") -> torch.Tensor:
    """Set the logits outside the nucleus of ``softmax(logits)`` to ``-inf`` (the most likely token always stays).

    Args:
        logits (`torch.Tensor` of shape `(..., vocab_size)`): Logits (already divided by any temperature).
        top_p (`float`, *optional*): Nucleus mass in ``(0, 1]``; `None` or 1 keeps everything.
        mode (`str`): ``"transformers"`` keeps the smallest set of most likely tokens whose mass reaches ``top_p``
            (the token that crosses ``top_p`` stays; transformers' ``TopPLogitsWarper``). ``"mdlm"`` keeps the
            tokens whose cumulative mass, themselves included, is at most ``top_p`` (the crossing token goes), as the
            public MDLM, ReMDM and PRISM text samplers do.

    Returns:
        `torch.Tensor`: The filtered logits, same shape (a new tensor; ``logits`` itself when nothing is filtered).
    """
    if mode not in TOP_P_MODES:
        raise ValueError(f"top_p_mode={mode!r} is not valid; choose one of {list(TOP_P_MODES)}.")
    if top_p is None or top_p >= 1.0:
        return logits
    sorted_logits, sorted_idx = logits.sort(dim=-1, descending=True)
    sorted_probs = sorted_logits.softmax(-1)
    cumulative = sorted_probs.cumsum(-1)
    if mode == "transformers":
        drop_sorted = (cumulative - sorted_probs) >= top_p  # the tokens ranked above already reach top_p
    else:
        drop_sorted = cumulative > top_p
        drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, sorted_idx, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def top_k_filter(logits: torch.Tensor, top_k: Optional[int]) -> torch.Tensor:
    """Set every logit below the ``top_k``-th largest of its row to ``-inf`` (ties with it stay).

    Args:
        logits (`torch.Tensor` of shape `(..., vocab_size)`).
        top_k (`int`, *optional*): Tokens kept per row; `None` (or at least the vocabulary size) keeps everything.

    Returns:
        `torch.Tensor`: The filtered logits (``logits`` itself when nothing is filtered).
    """
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    kth = logits.topk(top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def _check_arguments(temperature: Any, top_k: Any, top_p: Any, top_p_mode: Any, num_samples: Any,
                     confidence_source: Any) -> None:
    real = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)  # noqa: E731
    if not (real(temperature) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature={temperature!r} is not valid; it must be a finite number >= 0 (0 is greedy, "
                         "1 samples from the posterior).")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} is not valid; use None (no filter) or an int >= 1.")
    if top_p is not None and not (real(top_p) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p={top_p!r} is not valid; use None (no nucleus) or a number in (0, 1] (the nucleus mass).")
    if top_p_mode not in TOP_P_MODES:
        raise ValueError(f"top_p_mode={top_p_mode!r} is not valid; choose one of {list(TOP_P_MODES)}.")
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral)
                                    or num_samples < 1):
        raise ValueError(f"num_samples={num_samples!r} is not valid; use None (one draw, no sample dimension) or an "
                         "int >= 1.")
    if confidence_source not in CONFIDENCE_SOURCES:
        raise ValueError(f"confidence_source={confidence_source!r} is not valid; choose one of "
                         f"{list(CONFIDENCE_SOURCES)}.")


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    if logits.shape[-1] <= _SHORT_VOCAB:  # short rows: max + exp + sum beats PyTorch's CPU softmax kernel
        unnormalised = (logits - logits.amax(-1, keepdim=True)).exp_()
        return unnormalised / unnormalised.sum(-1, keepdim=True)
    return logits.softmax(-1)


def _suppress(logits: torch.Tensor, token_id: Optional[int], inplace: bool) -> torch.Tensor:
    if token_id is None or not 0 <= token_id < logits.shape[-1]:
        return logits
    index = torch.tensor([token_id], device=logits.device)
    if inplace:
        return logits.index_fill_(-1, index, float("-inf"))
    return logits.index_fill(-1, index, float("-inf"))


def _greedy(logits: torch.Tensor, return_probs: bool):
    """Argmax and its probability (the drawn token is the mode, so temperature and filters change nothing)."""
    if logits.shape[-1] <= _SHORT_VOCAB:
        # The argmax has exp(0) = 1 in the unnormalised row, so its probability is 1 / sum.
        best, tokens = logits.max(-1)
        unnormalised = (logits - best.unsqueeze(-1)).exp_()
        total = unnormalised.sum(-1)
        probs = unnormalised / total.unsqueeze(-1) if return_probs else None
        return tokens, total.reciprocal(), probs
    # Long rows: softmax is one fused kernel (logsumexp-based forms cost several passes over (..., V)).
    probs = logits.softmax(-1)
    token_prob, tokens = probs.max(-1)
    return tokens, token_prob, probs if return_probs else None


def sample_tokens(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    top_p_mode: str = "transformers",
    suppress_token_id: Optional[int] = None,
    num_samples: Optional[int] = None,
    confidence_source: str = "model",
    return_probs: bool = False,
    generator: Optional[torch.Generator] = None,
    inplace: bool = False,
) -> TokenDraw:
    """Draw tokens from ``softmax(logits / temperature)`` by inverse CDF, never the suppressed token.

    Args:
        logits (`torch.Tensor` of shape `(..., vocab_size)`): Posterior logits (any float dtype; computed in float32).
        temperature (`float`): ``0`` is greedy (argmax; the filters then change nothing); ``> 0`` samples from the
            tempered distribution.
        top_k (`int`, *optional*): Keep only the ``top_k`` most likely tokens before the draw.
        top_p (`float`, *optional*): Keep only the nucleus of mass ``top_p`` in ``(0, 1]`` (after top-k), in the
            sense of ``top_p_mode``.
        top_p_mode (`str`): `"transformers"` or `"mdlm"` (the PRISM text recipe); see [`top_p_filter`].
        suppress_token_id (`int`, *optional*): A token never drawn (the mask token), removed before everything else;
            ignored when outside the vocabulary.
        num_samples (`int`, *optional*): Independent draws per position: the outputs get a leading dimension of this
            size. `None` draws once and adds no dimension (the same random numbers as ``num_samples=1``).
        confidence_source (`str`): Where ``token_prob`` and ``probs`` come from: `"model"`, the untempered and
            unfiltered posterior (renormalised without the suppressed token); or `"sampling"`, the tempered and
            filtered distribution the tokens were drawn from. The same at temperature 0 or 1 without filters.
        return_probs (`bool`): Also return that whole distribution (rules such as margin and entropy read it).
        generator (`torch.Generator`, *optional*): Source of the uniforms (one per draw).
        inplace (`bool`): ``logits`` is a scratch tensor that may be overwritten (saves a copy of `(..., V)`).

    Returns:
        [`TokenDraw`]: ``tokens`` and ``token_prob`` of shape `(...)` (or `(num_samples, ...)`), and ``probs`` of
        shape `(..., vocab_size)` or `None`.
    """
    _check_arguments(temperature, top_k, top_p, top_p_mode, num_samples, confidence_source)
    inplace = inplace or logits.dtype != torch.float32  # .float() of another dtype is a fresh copy already
    logits = _suppress(logits.float(), suppress_token_id, inplace)
    vocab_size = logits.shape[-1]
    draws = 1 if num_samples is None else num_samples
    if temperature == 0:
        tokens, token_prob, probs = _greedy(logits, return_probs)
        tokens, token_prob = tokens.unsqueeze(-1).expand(*tokens.shape, draws), token_prob.unsqueeze(-1).expand(
            *token_prob.shape, draws)
    else:
        filtered = top_k_filter(logits / temperature if temperature != 1.0 else logits, top_k)
        draw_probs = _softmax(top_p_filter(filtered, top_p, top_p_mode))
        # Inverse CDF: the CDF need not be renormalised, since the uniforms are scaled by its last value.
        cdf = draw_probs.cumsum(-1)
        u = torch.rand(cdf.shape[:-1] + (draws,), device=cdf.device, generator=generator, dtype=cdf.dtype)
        tokens = torch.searchsorted(cdf, u * cdf[..., -1:], right=True).clamp_(max=vocab_size - 1)
        probs = draw_probs
        filtered_out = (top_k is not None and top_k < vocab_size) or (top_p is not None and top_p < 1.0)
        if confidence_source == "model" and (temperature != 1.0 or filtered_out):
            probs = _softmax(logits)
        token_prob = probs.gather(-1, tokens)
        probs = probs if return_probs else None
    if num_samples is None:
        return TokenDraw(tokens.squeeze(-1), token_prob.squeeze(-1), probs)
    return TokenDraw(tokens.movedim(-1, 0).contiguous(), token_prob.movedim(-1, 0).contiguous(), probs)
