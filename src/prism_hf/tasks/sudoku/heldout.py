"""Held-out Sudoku puzzles that share nothing with training.

A puzzle leaks when a grid the model was trained on completes it: the model may have seen its solution, or
(for a puzzle with several solutions, as in the demo) another valid completion of its givens, which counts as
solved just the same. Drawing evaluation grids from another seed does not prevent this on small grids: a 6x6
Sudoku has only 28,200,960 solved grids, the demo trains on about 400,000 of them, and a demo puzzle (8-10
givens) has a median of about 60 completions, so more than half of freshly drawn puzzles have a training grid
among their completions.

[`held_out_puzzles`] therefore builds the evaluation set against the training grids themselves: it draws
candidate puzzles, enumerates every completion of each one with the backtracking solver ([`solve`]), and keeps
only the puzzles none of whose completions (their own solution included) is a training grid. A puzzle with more
completions than ``max_completions`` cannot be certified and is dropped too. The training grids are those the
trainers saw, regenerated from the [`GridSource`]s a run records next to its weights (``training_data.json``).

[`training_overlap`] measures the result independently of that construction, by scanning every training grid
against every puzzle's givens (the benchmark reports it; it must be 0).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .grids import SudokuInputError, SudokuSpec, generate_solved_grids, make_puzzles, solve

__all__ = [
    "GridSource",
    "TRAINING_DATA_FILENAME",
    "TRAINING_POOL_SIZE",
    "pretraining_source",
    "finetuning_source",
    "save_training_sources",
    "load_training_sources",
    "training_grids",
    "GridIndex",
    "HeldOutPuzzles",
    "candidate_puzzles",
    "held_out_puzzles",
    "training_overlap",
]

#: File a training stage writes next to its weights: the grid sources of every stage that trained those weights.
TRAINING_DATA_FILENAME = "training_data.json"
#: Backtracking seed grids of the training-grid generator (see `generate_solved_grids`).
TRAINING_POOL_SIZE = 256
#: Backtracking seed grids of each round of held-out candidates.
_EVAL_POOL_SIZE = 64


@dataclass(frozen=True)
class GridSource:
    """One stream of training grids: ``generate_solved_grids(num_grids, spec, seed=seed, pool_size=pool_size)``.

    Args:
        stage (`str`): ``"pretrain"`` or ``"finetune"``.
        num_grids (`int`): Grids drawn (steps x batch size: each is seen once).
        seed (`int`): Seed of the generator.
        box_rows, box_cols (`int`): Box shape of the grids.
        pool_size (`int`): Backtracking seed grids of the generator.
    """

    stage: str
    num_grids: int
    seed: int
    box_rows: int
    box_cols: int
    pool_size: int = TRAINING_POOL_SIZE

    @property
    def spec(self) -> SudokuSpec:
        return SudokuSpec(self.box_rows, self.box_cols)

    def grids(self) -> np.ndarray:
        """The solved grids of this source, ``(num_grids, n, n)``."""
        return generate_solved_grids(self.num_grids, self.spec, seed=self.seed, pool_size=self.pool_size)


def pretraining_source(recipe) -> GridSource:
    """The grids MDM pretraining draws for a [`SudokuRecipe`] (``train_seed``, steps x batch size)."""
    spec = recipe.spec
    return GridSource("pretrain", recipe.pretrain_steps * recipe.pretrain_batch_size, recipe.train_seed,
                      spec.box_rows, spec.box_cols)


def finetuning_source(recipe) -> GridSource:
    """The grids PRISM fine-tuning draws for a [`SudokuRecipe`] (``train_seed + 1``, steps x batch size)."""
    spec = recipe.spec
    return GridSource("finetune", recipe.finetune_steps * recipe.finetune_batch_size, recipe.train_seed + 1,
                      spec.box_rows, spec.box_cols)


def save_training_sources(directory: str, sources: Sequence[GridSource]) -> None:
    """Write ``training_data.json`` (every grid source that trained the weights in ``directory``)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, TRAINING_DATA_FILENAME), "w") as f:
        json.dump({"sources": [asdict(s) for s in sources]}, f, indent=2)


def load_training_sources(directory: str) -> Optional[List[GridSource]]:
    """The grid sources recorded in ``directory`` (``None`` for a folder written before they were recorded)."""
    path = os.path.join(directory, TRAINING_DATA_FILENAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return [GridSource(**source) for source in json.load(f)["sources"]]
    except (ValueError, KeyError, TypeError) as err:
        raise SudokuInputError(f"{path} is not a valid {TRAINING_DATA_FILENAME} ({err}); rerun the training stage.") from None


def training_grids(sources: Sequence[GridSource]) -> np.ndarray:
    """Every training grid of ``sources``, concatenated: ``(sum of num_grids, n, n)``, dtype ``int8`` (the paper
    recipe trains on 17.9M 9x9 grids: 1.5 GB as ``int8``, eight times that as ``int64``)."""
    if not sources:
        raise SudokuInputError("sources is empty; pass the grid sources of at least one training stage.")
    specs = {(s.box_rows, s.box_cols) for s in sources}
    if len(specs) != 1:
        raise SudokuInputError(f"sources mix grid shapes {sorted(specs)}; one training run uses one grid shape.")
    return np.concatenate([s.grids().astype(np.int8) for s in sources])


# ----- exact membership in a large set of grids -------------------------------------------------------------
def _row_hashes(flat: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """A 64-bit hash of each row of ``flat`` ``(N, C)``: the dot product with fixed random odd weights, mod 2**64."""
    weights = np.random.default_rng(0x5D0C).integers(1, 2**63, size=flat.shape[1], dtype=np.uint64) | np.uint64(1)
    out = np.empty(len(flat), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, len(flat), chunk):
            out[start : start + chunk] = (flat[start : start + chunk].astype(np.uint64) * weights).sum(axis=1)
    return out


class GridIndex:
    """Exact set membership for solved grids, for sets of millions: sorted 64-bit hashes, every hit verified
    cell by cell (so a hash collision never gives a wrong answer).

    Args:
        grids (`np.ndarray` of shape `(N, n, n)`): The set (duplicates are fine).
    """

    def __init__(self, grids: np.ndarray):
        grids = np.asarray(grids)
        if grids.ndim != 3 or grids.shape[1] != grids.shape[2]:
            raise SudokuInputError(f"grids has shape {grids.shape}; a GridIndex takes (N, n, n) grids.")
        flat = grids.reshape(len(grids), -1).astype(np.int8)
        hashes = _row_hashes(flat)
        order = np.argsort(hashes, kind="stable")
        hashes, flat = hashes[order], flat[order]
        # Drop exact duplicates (same hash and same cells as the previous entry): equal hashes left are collisions.
        duplicate = np.zeros(len(flat), dtype=bool)
        duplicate[1:] = (hashes[1:] == hashes[:-1]) & (flat[1:] == flat[:-1]).all(axis=1)
        self._hashes, self._grids = hashes[~duplicate], flat[~duplicate]
        self.size = grids.shape[1]

    def __len__(self) -> int:
        """Number of distinct grids."""
        return len(self._grids)

    def contains(self, grids: np.ndarray) -> np.ndarray:
        """Which of ``grids`` ``(M, n, n)`` are in the set: ``(M,)`` bool."""
        grids = np.asarray(grids)
        if grids.ndim != 3 or grids.shape[1:] != (self.size, self.size):
            raise SudokuInputError(f"grids has shape {grids.shape}; this index holds ({self.size}, {self.size}) grids.")
        flat = grids.reshape(len(grids), -1).astype(np.int8)
        hashes = _row_hashes(flat)
        position = np.searchsorted(self._hashes, hashes)
        found = np.zeros(len(flat), dtype=bool)
        pending = np.arange(len(flat))
        # Walk the run of equal hashes after each insertion point (length 1 unless 64-bit hashes collide).
        while len(pending):
            pos = position[pending]
            inside = pos < len(self._hashes)
            pending, pos = pending[inside], pos[inside]
            same_hash = self._hashes[pos] == hashes[pending]
            pending, pos = pending[same_hash], pos[same_hash]
            found[pending] |= (self._grids[pos] == flat[pending]).all(axis=1)
            position[pending] += 1
        return found


# ----- held-out puzzles ---------------------------------------------------------------------------------
@dataclass
class HeldOutPuzzles:
    """Puzzles of which no completion is a training grid.

    Args:
        puzzles (`np.ndarray` of shape `(N, n, n)`): The puzzles (0 = blank).
        solutions (`np.ndarray` of shape `(N, n, n)`): The grid each puzzle was cut from.
        report (`dict`): How they were drawn: candidates tried, rejections by reason, training grids, and the
            number of completions per puzzle (kept and all candidates), see [`held_out_puzzles`].
    """

    puzzles: np.ndarray
    solutions: np.ndarray
    report: Dict


def _summary(counts: np.ndarray) -> Dict:
    if not len(counts):
        return {"median": None, "mean": None, "max": None}
    return {"median": float(np.median(counts)), "mean": round(float(counts.mean()), 2), "max": int(counts.max())}


def candidate_puzzles(recipe, seed: int, round_index: int = 0):
    """One round of candidate evaluation puzzles, before any are kept out: ``recipe.num_eval_puzzles`` solved grids
    from the seed sequence ``(seed, round_index)`` and their puzzles (blanks from ``(seed, round_index, 1)``).

    Returns:
        `(np.ndarray, np.ndarray)`: puzzles and solutions, each ``(num_eval_puzzles, n, n)``.
    """
    spec = recipe.spec
    solutions = generate_solved_grids(recipe.num_eval_puzzles, spec, seed=[seed, round_index], pool_size=_EVAL_POOL_SIZE)
    puzzles = make_puzzles(solutions, recipe.num_blanks, seed=[seed, round_index, 1], unique=recipe.unique_puzzles,
                           spec=spec)
    return puzzles, solutions


def _training_index(recipe, sources: Optional[Sequence[GridSource]]):
    """The training grid sources (the recipe's own by default), checked against the recipe's grid shape, and an
    index of their grids: ``(sources, number of training grids, GridIndex)``."""
    spec = recipe.spec
    sources = list(sources) if sources is not None else [pretraining_source(recipe), finetuning_source(recipe)]
    train = training_grids(sources)
    if train.shape[1:] != (spec.size, spec.size) or (sources[0].box_rows, sources[0].box_cols) != (spec.box_rows, spec.box_cols):
        raise SudokuInputError(
            f"the training grids are {sources[0].spec.name} (boxes {sources[0].box_rows}x{sources[0].box_cols}) but the "
            f"recipe asks for {spec.name} puzzles (boxes {spec.box_rows}x{spec.box_cols})."
        )
    return sources, len(train), GridIndex(train)


def _judge_candidates(puzzles: np.ndarray, solutions: np.ndarray, index: GridIndex, spec: SudokuSpec,
                      max_completions: int):
    """Enumerate every completion of each candidate and look them up among the training grids.

    Returns:
        ``(keep, counts, certified, rejected)``: which candidates are held out ``(P,)``, their numbers of completions
        ``(P,)``, which were enumerated in full ``(P,)``, and the rejections of this round by reason.
    """
    own_solution_seen = index.contains(solutions)
    completions = [solve(p, spec, max_solutions=max_completions) for p in puzzles]
    counts = np.array([len(c) for c in completions])
    certified = counts < max_completions
    owner = np.repeat(np.arange(len(puzzles)), counts)
    seen = np.zeros(len(puzzles), dtype=bool)
    if len(owner):
        np.logical_or.at(seen, owner, index.contains(np.concatenate(completions)))
    seen |= own_solution_seen  # also when the enumeration stopped before reaching the own solution
    rejected = {
        "solution_in_training": int(own_solution_seen.sum()),
        "completion_in_training": int((seen & ~own_solution_seen).sum()),
        "too_many_completions": int((~certified & ~seen).sum()),
    }
    return certified & ~seen, counts, certified, rejected


def held_out_puzzles(recipe, sources: Optional[Sequence[GridSource]] = None, seed: Optional[int] = None,
                     max_completions: int = 100_000, max_rounds: int = 64) -> HeldOutPuzzles:
    """``recipe.num_eval_puzzles`` puzzles none of whose valid completions is a training grid.

    Candidates are drawn in rounds of ``num_eval_puzzles`` ([`candidate_puzzles`]: round ``r`` cuts
    ``recipe.num_blanks`` blanks into solved grids of the seed sequence ``(seed, r)``, leaving one solution each
    when ``recipe.unique_puzzles``). Every completion of each candidate is enumerated with [`solve`] and looked up
    among the training grids; a candidate is kept when none is there (its own solution is one of them), and when
    it has fewer than ``max_completions`` completions (more cannot be certified). The first
    ``num_eval_puzzles`` kept candidates, in drawing order, are the held-out set: the same recipe, sources and
    seed always give the same puzzles.

    Args:
        recipe ([`SudokuRecipe`]): Grid shape, blanks, uniqueness, ``num_eval_puzzles`` and (by default) the
            training grids and ``eval_seed``.
        sources (`Sequence[GridSource]`, *optional*): The training grids to keep out; by default the recipe's own
            ([`pretraining_source`], [`finetuning_source`]). Pass a checkpoint's recorded sources
            ([`load_training_sources`]) when its stages ran with different recipes.
        seed (`int`, *optional*): Seed of the candidates; ``recipe.eval_seed`` by default (pass a validation seed
            to build validation puzzles the same way).
        max_completions (`int`): Completions enumerated per candidate before it is dropped as uncertifiable.
        max_rounds (`int`): Rounds of candidates before giving up with a `SudokuInputError`.

    Returns:
        [`HeldOutPuzzles`]: ``puzzles``, ``solutions`` ``(num_eval_puzzles, n, n)`` and a ``report`` dict with
        ``seed``, ``num_candidates``, ``num_rejected_solution_in_training`` (the candidate's own solution is a
        training grid), ``num_rejected_completion_in_training`` (another completion is),
        ``num_rejected_too_many_completions``, ``num_training_grids``, ``num_distinct_training_grids`` and the
        median / mean / max number of completions of the kept puzzles and of all certified candidates.
    """
    spec = recipe.spec
    seed = recipe.eval_seed if seed is None else seed
    for name, value in (("max_completions", max_completions), ("max_rounds", max_rounds)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SudokuInputError(f"{name}={value!r} is not valid; use an int >= 1.")
    sources, num_training_grids, index = _training_index(recipe, sources)
    wanted = recipe.num_eval_puzzles
    kept_puzzles, kept_solutions, kept_counts, all_counts = [], [], [], []
    rejected = {"solution_in_training": 0, "completion_in_training": 0, "too_many_completions": 0}
    num_candidates = 0
    for round_index in range(max_rounds):
        puzzles, solutions = candidate_puzzles(recipe, seed, round_index)
        num_candidates += len(puzzles)
        keep, counts, certified, round_rejected = _judge_candidates(puzzles, solutions, index, spec, max_completions)
        rejected = {reason: rejected[reason] + round_rejected[reason] for reason in rejected}
        all_counts.append(counts[certified])
        kept_puzzles.append(puzzles[keep])
        kept_solutions.append(solutions[keep])
        kept_counts.append(counts[keep])
        if sum(len(k) for k in kept_puzzles) >= wanted:
            break
    else:
        found = sum(len(k) for k in kept_puzzles)
        raise SudokuInputError(
            f"num_eval_puzzles={wanted}: only {found} of {num_candidates} candidate {spec.name} puzzles have no training "
            f"grid among their completions (the {len(index)} distinct training grids cover too much of the grid space "
            f"for puzzles with {recipe.num_blanks} blanks). Ask for fewer puzzles, fewer blanks or fewer training grids."
        )
    report = {
        "seed": int(seed),
        "num_puzzles": int(wanted),
        "num_candidates": int(num_candidates),
        **{f"num_rejected_{reason}": count for reason, count in rejected.items()},
        "num_training_grids": int(num_training_grids),
        "num_distinct_training_grids": int(len(index)),
        "max_completions": int(max_completions),
        "completions_per_puzzle": _summary(np.concatenate(kept_counts)[:wanted]),
        "completions_per_candidate": _summary(np.concatenate(all_counts)),
        "training_sources": [asdict(s) for s in sources],
    }
    return HeldOutPuzzles(np.concatenate(kept_puzzles)[:wanted], np.concatenate(kept_solutions)[:wanted], report)


def training_overlap(puzzles: np.ndarray, train: Union[np.ndarray, Sequence[GridSource]],
                     solutions: Optional[np.ndarray] = None, chunk: int = 4096) -> Dict:
    """Measure how much of an evaluation set training covers, by scanning every training grid.

    This is the audit of [`held_out_puzzles`], computed another way (a direct comparison of each training grid
    with each puzzle's givens, no solver and no hashing), so that the benchmark's overlap figure is measured
    rather than assumed.

    Args:
        puzzles (`np.ndarray` of shape `(P, n, n)`): Puzzles (0 = blank).
        train (`np.ndarray` of shape `(N, n, n)` or `Sequence[GridSource]`): The training grids or their sources.
        solutions (`np.ndarray` of shape `(P, n, n)`, *optional*): Reference solutions; also count those that are
            training grids verbatim.
        chunk (`int`): Training grids compared at once (memory ``chunk * P * n * n`` bytes).

    Returns:
        `dict`: ``num_puzzles``, ``puzzles_with_a_training_completion`` (puzzles whose givens some training grid
        fits: that grid is a valid completion), ``training_grids_fitting_givens`` (summed over puzzles) and, with
        ``solutions``, ``solutions_in_training``.
    """
    train = np.asarray(train) if isinstance(train, np.ndarray) else training_grids(train)
    puzzles = np.asarray(puzzles)
    if puzzles.ndim != 3 or train.ndim != 3 or puzzles.shape[1:] != train.shape[1:]:
        raise SudokuInputError(f"puzzles {puzzles.shape} and training grids {train.shape} must both be (N, n, n) of one size.")
    flat_puzzles = puzzles.reshape(len(puzzles), -1).astype(np.int8)
    given = flat_puzzles != 0
    flat_train = train.reshape(len(train), -1).astype(np.int8)
    fits = np.zeros(len(puzzles), dtype=np.int64)
    verbatim = np.zeros(len(puzzles), dtype=bool)
    flat_solutions = None if solutions is None else np.asarray(solutions).reshape(len(puzzles), -1).astype(np.int8)
    for start in range(0, len(flat_train), chunk):
        block = flat_train[start : start + chunk][:, None, :]  # (chunk, 1, C)
        fits += ((block == flat_puzzles[None]) | ~given[None]).all(axis=2).sum(axis=0)
        if flat_solutions is not None:
            verbatim |= (block == flat_solutions[None]).all(axis=2).any(axis=0)
    out = {
        "num_puzzles": int(len(puzzles)),
        "num_training_grids": int(len(train)),
        "puzzles_with_a_training_completion": int((fits > 0).sum()),
        "training_grids_fitting_givens": int(fits.sum()),
    }
    if flat_solutions is not None:
        out["solutions_in_training"] = int(verbatim.sum())
    return out
