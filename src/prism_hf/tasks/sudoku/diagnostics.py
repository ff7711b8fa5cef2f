"""Diagnostics of PRISM fine-tuning on Sudoku.

[`proposal_error_rates`] measures how often the proposals of the PRISM loss are wrong, by how complete the
training grid is. The quality head is scored on completed grids, so it needs wrong proposals in *nearly
complete* training grids to learn from; with a sharp backbone and proposals drawn at temperature 1 there are
almost none (see ``docs/sudoku.md``, "Why the temperature matters").
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ...training.losses import forward_mask, sample_proposals
from .data import VALIDATION_SEED
from .grids import SudokuInputError, generate_solved_grids
from .tokenization import SudokuTokenizer

__all__ = ["proposal_error_rates", "DEFAULT_MASKED_BINS"]

#: Bins of the number of masked cells (inclusive; ``None`` = every cell) used by [`proposal_error_rates`].
DEFAULT_MASKED_BINS: Tuple[Tuple[int, Optional[int]], ...] = ((1, 4), (5, 8), (9, 16), (17, None))


def _resolve_bins(bins: Optional[Sequence[Tuple[int, Optional[int]]]], cells: int) -> List[Tuple[int, int]]:
    """Inclusive ``(low, high)`` bins of the number of masked cells, ``None`` ends replaced by ``cells``, checked."""
    if bins is None:
        bins = [(low, high if high is None else min(high, cells)) for low, high in DEFAULT_MASKED_BINS if low <= cells]
    resolved = []
    for low, high in bins:
        high = cells if high is None else high
        if not 1 <= low <= high <= cells:
            raise SudokuInputError(f"bins: ({low}, {high}) must satisfy 1 <= low <= high <= {cells} (cells in the grid).")
        resolved.append((int(low), int(high)))
    return resolved


def _check_arguments(model, temperatures, num_grids, batch_size):
    """The model's grid spec and the temperatures as floats, after every argument check."""
    backbone = getattr(model, "backbone", model)
    spec = getattr(getattr(backbone, "config", None), "sudoku_spec", None)
    if spec is None:
        raise SudokuInputError(f"model={type(model).__name__} is not a Sudoku backbone or a PRISM model built on one.")
    if not isinstance(num_grids, int) or num_grids < 1:
        raise SudokuInputError(f"num_grids={num_grids!r} must be an int >= 1.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SudokuInputError(f"batch_size={batch_size!r} must be an int >= 1.")
    temperatures = [float(t) for t in temperatures]
    if not temperatures or any(not t >= 0.0 for t in temperatures):
        raise SudokuInputError(f"temperatures={temperatures} must be a non-empty list of values >= 0 (0 = greedy).")
    return spec, temperatures


def _count_wrong(model, ids, maskable, spec, temperatures, resolved, generator, batch_size):
    """Masked cells and wrong proposals per bin: ``(total (B,), {temperature: wrong (B,)})``."""
    device = next(model.parameters()).device
    wrong = {t: np.zeros(len(resolved)) for t in temperatures}
    total = np.zeros(len(resolved))
    for start in range(0, len(ids), batch_size):
        x = ids[start:start + batch_size]
        z, masked, _ = forward_mask(x, maskable[start:start + batch_size], spec.mask_token_id, generator=generator)
        logits = model(input_ids=z.to(device)).logits.float().cpu()
        count = masked.sum(-1)
        rows = [(count >= low) & (count <= high) for low, high in resolved]
        for b, row in enumerate(rows):
            total[b] += masked[row].sum().item()
        for t in temperatures:
            proposals, _ = sample_proposals(logits, t, generator, suppress_token_id=spec.mask_token_id)
            bad = (proposals != x) & masked
            for b, row in enumerate(rows):
                wrong[t][b] += bad[row].sum().item()
    return total, wrong


@torch.no_grad()
def proposal_error_rates(
    model,
    temperatures: Sequence[float] = (1.0,),
    num_grids: int = 2000,
    seed: int = VALIDATION_SEED,
    bins: Optional[Sequence[Tuple[int, Optional[int]]]] = None,
    batch_size: int = 500,
) -> Dict:
    """Share of wrong PRISM proposals in training states, by the number of masked cells.

    Builds the states the PRISM loss trains on: solved grids (``num_grids`` from ``seed``) masked by the MDM
    forward process (``t ~ U(eps, 1)``), one forward of ``model``, and a proposal drawn at every masked cell
    at each temperature ([`sample_proposals`], the mask token suppressed, as in the loss). The ``k`` positions
    the loss keeps are a uniform subset of the masked cells, so the rate over all masked cells is the rate of
    the kept ones.

    Args:
        model: A Sudoku backbone ([`SudokuMDMForMaskedLM`]) or a PRISM checkpoint built on one.
        temperatures (`Sequence[float]`): Proposal temperatures (``0`` = greedy).
        num_grids (`int`): Solved grids to mask.
        seed (`int`): Seed of the grids and of the masking / sampling.
        bins (`Sequence[(int, int | None)]`, *optional*): Inclusive ranges of the number of masked cells; ``None``
            as the upper end means every cell. Default: [`DEFAULT_MASKED_BINS`], cut to the grid's cell count.
        batch_size (`int`): Grids per forward.

    Returns:
        `dict`: ``{"bins": [[low, high], ...], "num_masked_cells": [...], "wrong_rate": {temperature: [...]}}``,
        with one entry per bin (``None`` for a bin with no masked cell).
    """
    spec, temperatures = _check_arguments(model, temperatures, num_grids, batch_size)
    resolved = _resolve_bins(bins, spec.num_cells)
    tokenizer = SudokuTokenizer(spec)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.as_tensor(tokenizer.encode(generate_solved_grids(num_grids, spec, seed=seed)))
    maskable = torch.zeros_like(ids, dtype=torch.bool)
    maskable[:, torch.as_tensor(spec.cell_positions())] = True
    was_training = model.training
    model.eval()
    try:
        total, wrong = _count_wrong(model, ids, maskable, spec, temperatures, resolved, generator, batch_size)
    finally:
        model.train(was_training)
    return {
        "bins": [list(b) for b in resolved],
        "num_masked_cells": total.astype(int).tolist(),
        "wrong_rate": {t: [float(w / n) if n else None for w, n in zip(wrong[t], total)] for t in temperatures},
    }
