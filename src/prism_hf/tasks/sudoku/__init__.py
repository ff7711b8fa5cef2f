"""Sudoku with PRISM: grids, tokenizer, datasets, a small MDM backbone, training, evaluation and the CLI.

Quick start (CPU, about eleven minutes)::

    prism-hf sudoku demo --output-dir runs/sudoku

See ``docs/sudoku.md``.
"""

from .data import EVAL_SEED, TRAIN_SEED, VALIDATION_SEED, build_puzzle_dataset, build_training_dataset, puzzles_to_dataset
from .grids import (
    SudokuInputError,
    SudokuSpec,
    check_givens,
    count_solutions,
    generate_solved_grids,
    givens_conflicts,
    is_valid_solution,
    make_puzzles,
    nearest_completions,
    rule_conflicts,
    solve,
    wrong_cells,
)
from .heldout import GridIndex, GridSource, HeldOutPuzzles, held_out_puzzles, training_overlap
from .modeling import SudokuMDMConfig, SudokuMDMForMaskedLM
from .recipes import RECIPES, SudokuRecipe, get_recipe
from .tokenization import SudokuTokenizer, load_puzzles_csv, save_puzzles_csv

__all__ = [
    "SudokuSpec",
    "SudokuInputError",
    "SudokuTokenizer",
    "SudokuMDMConfig",
    "SudokuMDMForMaskedLM",
    "SudokuRecipe",
    "RECIPES",
    "get_recipe",
    "generate_solved_grids",
    "make_puzzles",
    "is_valid_solution",
    "givens_conflicts",
    "check_givens",
    "solve",
    "count_solutions",
    "rule_conflicts",
    "nearest_completions",
    "wrong_cells",
    "GridSource",
    "GridIndex",
    "HeldOutPuzzles",
    "held_out_puzzles",
    "training_overlap",
    "load_puzzles_csv",
    "save_puzzles_csv",
    "build_training_dataset",
    "build_puzzle_dataset",
    "puzzles_to_dataset",
    "TRAIN_SEED",
    "EVAL_SEED",
    "VALIDATION_SEED",
]
