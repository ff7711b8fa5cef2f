"""`datasets` builders for Sudoku: solved grids for training, puzzles with solutions for evaluation.

Rows carry ``input_ids`` (token ids in the Sudoku layout) and ``maskable`` (1 at cells, 0 at row
separators), the columns that `prism_hf.training.collator.MaskedDiffusionCollator` reads, so the datasets plug straight
into `MDMTrainer` and `PrismTrainer`. Evaluation datasets add ``solution_ids``.

Seeds: training grids and evaluation puzzles must come from different seeds. The CLI uses
``TRAIN_SEED`` for training data and ``EVAL_SEED`` (never used in training or tuning) for evaluation
puzzles.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from .grids import SudokuSpec, _as_spec, generate_solved_grids, make_puzzles
from .tokenization import SudokuTokenizer

__all__ = ["build_training_dataset", "build_puzzle_dataset", "puzzles_to_dataset", "TRAIN_SEED", "EVAL_SEED", "VALIDATION_SEED"]

TRAIN_SEED = 1
#: Seed of the demo's held-out evaluation puzzles. Never used for training or for choosing settings: the demo's
#: settings were chosen on puzzles from ``VALIDATION_SEED``.
EVAL_SEED = 20261129
#: Seed of the puzzles used to choose the demo's settings (see docs/sudoku.md).
VALIDATION_SEED = 777


def build_training_dataset(num_grids: int, spec: Union[SudokuSpec, int] = 9, seed: int = TRAIN_SEED,
                           pool_size: int = 256):
    """A `datasets.Dataset` of ``num_grids`` random solved grids (``input_ids``, ``maskable``).

    The MDM (and PRISM) forward process masks cells at random, so training needs only solved grids.
    """
    import datasets

    spec = _as_spec(spec)
    tokenizer = SudokuTokenizer(spec)
    grids = generate_solved_grids(num_grids, spec, seed=seed, pool_size=pool_size)
    tokens = tokenizer.encode(grids)
    maskable = np.broadcast_to(tokenizer.cell_mask().astype(np.int8), tokens.shape)
    features = datasets.Features(
        {"input_ids": datasets.Sequence(datasets.Value("int8")), "maskable": datasets.Sequence(datasets.Value("int8"))}
    )
    return datasets.Dataset.from_dict(
        {"input_ids": tokens.astype(np.int8), "maskable": np.ascontiguousarray(maskable)}, features=features
    ).with_format("torch")


def puzzles_to_dataset(puzzles: np.ndarray, solutions: Optional[np.ndarray] = None,
                       spec: Union[SudokuSpec, int, None] = None):
    """A `datasets.Dataset` of puzzles (``input_ids``: blanks as the mask id 0; ``maskable``: 1 at blanks)
    and, when given, their ``solution_ids``."""
    import datasets

    puzzles = np.asarray(puzzles)
    tokenizer = SudokuTokenizer(spec if spec is not None else puzzles.shape[-1])
    tokens = tokenizer.encode(puzzles)
    columns = {"input_ids": tokens.astype(np.int8), "maskable": (tokens == tokenizer.mask_token_id).astype(np.int8)}
    if solutions is not None:
        columns["solution_ids"] = tokenizer.encode(tokenizer.spec.check_grids(solutions, "solutions", allow_blanks=False)).astype(np.int8)
    return datasets.Dataset.from_dict(columns).with_format("torch")


def build_puzzle_dataset(num_puzzles: int, spec: Union[SudokuSpec, int] = 9,
                         num_blanks: Union[int, Tuple[int, int]] = (50, 51), seed: int = EVAL_SEED,
                         unique: bool = True, pool_size: int = 64):
    """Random puzzles with their solutions, as a `datasets.Dataset` (see [`puzzles_to_dataset`]).

    ``seed`` drives both the solved grids and the blanks; keep it apart from the training seed.
    """
    spec = _as_spec(spec)
    solutions = generate_solved_grids(num_puzzles, spec, seed=seed, pool_size=pool_size)
    puzzles = make_puzzles(solutions, num_blanks, seed=seed + 1, unique=unique, spec=spec)
    return puzzles_to_dataset(puzzles, solutions, spec)
