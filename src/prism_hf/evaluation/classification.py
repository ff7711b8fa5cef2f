"""Scores of a binary classifier, shared by training metrics (the quality head's AUROC in `PrismTrainer`) and task
evaluations (the Sudoku head's AUROC for wrong cells)."""

from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = ["binary_auroc"]


def binary_auroc(scores: Any, targets: Any, valid: Optional[Any] = None) -> torch.Tensor:
    """Area under the ROC curve of ``scores`` for binary ``targets`` (Mann-Whitney U, ties counted half).

    Returns ``NaN`` when the valid entries hold only one class (AUROC is undefined). Ranks are accumulated in
    float64, so the result is exact for any realistic number of entries.

    Args:
        scores (`torch.Tensor` or array-like of any shape): Higher = more likely positive. float64 input keeps its
            precision (no ties are created by a cast).
        targets (`torch.Tensor` or array-like of the same shape): ``1`` / ``0`` (or booleans); above 0.5 is positive.
        valid (`torch.Tensor` or array-like of the same shape, *optional*): Entries to use (others shift nothing).

    Returns:
        `torch.Tensor`: a 0-dim tensor on the device of ``scores``, float64 for float64 scores, else float32.
    """
    scores = torch.as_tensor(scores).detach()
    scores = (scores if scores.dtype == torch.float64 else scores.float()).flatten()
    positive = torch.as_tensor(targets, device=scores.device).detach().flatten().double() > 0.5
    if positive.numel() != scores.numel():
        raise ValueError(f"targets has {positive.numel()} entries but scores has {scores.numel()}; they must match.")
    if valid is None:
        weight = torch.ones_like(scores, dtype=torch.float64)
    else:
        weight = torch.as_tensor(valid, device=scores.device).detach().flatten().double()
        if weight.numel() != scores.numel():
            raise ValueError(f"valid has {weight.numel()} entries but scores has {scores.numel()}; they must match.")
    order = torch.argsort(scores)
    s, pos, w = scores[order], positive[order].double(), weight[order]
    # Average rank of each distinct score among valid entries (1-based), ties sharing their mean rank.
    _, inverse, counts = torch.unique_consecutive(s, return_inverse=True, return_counts=True)
    group_weight = torch.zeros(counts.shape, dtype=torch.float64, device=s.device).index_add_(0, inverse, w)
    mean_rank = group_weight.cumsum(0) - (group_weight - 1.0) / 2.0
    ranks = mean_rank[inverse]
    n_pos = (pos * w).sum()
    n_neg = ((1.0 - pos) * w).sum()
    if float(n_pos) == 0.0 or float(n_neg) == 0.0:
        return torch.tensor(float("nan"), dtype=torch.float64 if scores.dtype == torch.float64 else torch.float32,
                            device=scores.device)
    rank_sum = (ranks * pos * w).sum()
    area = (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
    return area if scores.dtype == torch.float64 else area.float()
