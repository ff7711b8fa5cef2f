"""Sudoku grids of size ``n = a * b``: layout, random solved grids, puzzles, validation and a small solver.

A grid has ``n`` rows and columns and boxes of ``box_rows x box_cols`` cells (``a x b``). Digits are
``1..n``; ``0`` is a blank (and, in token form, the mask). Everything here works on batches of grids as
numpy arrays of shape ``(num_grids, n, n)``; the only per-grid Python code is the backtracking solver,
used for uniqueness checks and to seed the generator's pool.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "SudokuSpec",
    "SudokuInputError",
    "generate_solved_grids",
    "make_puzzles",
    "is_valid_solution",
    "givens_conflicts",
    "check_givens",
    "count_solutions",
    "solve",
    "rule_conflicts",
    "nearest_completions",
    "wrong_cells",
]


class SudokuInputError(ValueError):
    """Raised for a malformed grid, puzzle row or size (a `ValueError`, so callers may catch either)."""


@dataclass(frozen=True)
class SudokuSpec:
    """The shape of a Sudoku and its token layout.

    Args:
        box_rows (`int`): Rows per box (``a``).
        box_cols (`int`): Columns per box (``b``). The grid size is ``n = box_rows * box_cols``.

    Token layout (the PRISM paper's format for 9x9): the ``n`` rows of ``n`` digits joined by a
    separator token, so a sequence has ``n * n + n - 1`` tokens (89 for 9x9). Token ``0`` is the
    mask / blank, ``1..n`` are digits, ``n + 1`` is the row separator; the vocabulary has ``n + 2`` ids.
    """

    box_rows: int
    box_cols: int

    def __post_init__(self):
        for name in ("box_rows", "box_cols"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise SudokuInputError(f"{name}={value!r} must be a positive int.")
        if self.size < 2:
            raise SudokuInputError(f"box_rows={self.box_rows}, box_cols={self.box_cols} give a {self.size}x{self.size} grid; need n >= 2.")

    # ----- construction -------------------------------------------------------------------------------
    @classmethod
    def from_size(cls, size: int, box_rows: Optional[int] = None) -> "SudokuSpec":
        """The spec of an ``size x size`` Sudoku, with the most square box shape unless ``box_rows`` is given.

        ``size`` must factor as ``a * b`` with ``a, b >= 2`` (4 = 2x2, 6 = 2x3, 8 = 2x4, 9 = 3x3, 12 = 3x4,
        16 = 4x4, ...); a prime size such as 5 or 7 has no boxes and is rejected.
        """
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
            raise SudokuInputError(f"size={size!r} must be an int such as 4, 6 or 9.")
        if box_rows is not None:
            if box_rows < 2 or size % box_rows or size // box_rows < 2:
                raise SudokuInputError(
                    f"box_rows={box_rows} does not divide size={size} into boxes of at least 2x2; valid box_rows: "
                    f"{_box_row_choices(size) or 'none'}."
                )
            return cls(int(box_rows), int(size // box_rows))
        choices = _box_row_choices(size)
        if not choices:
            raise SudokuInputError(
                f"size={size} is not a product a*b of two integers >= 2, so it has no Sudoku boxes; valid sizes "
                "include 4, 6, 8, 9, 10, 12, 16."
            )
        a = max(c for c in choices if c * c <= size)
        return cls(a, size // a)

    @classmethod
    def from_sequence_length(cls, length: int) -> "SudokuSpec":
        """The spec whose token layout has ``length`` tokens (``n * n + n - 1``)."""
        n = int(round((-1 + math.sqrt(1 + 4 * (length + 1))) / 2))
        if n * n + n - 1 != length:
            valid = ", ".join(f"{k * k + k - 1} ({k}x{k})" for k in (4, 6, 8, 9, 12, 16))
            raise SudokuInputError(f"a row of {length} tokens is no Sudoku layout; valid lengths: {valid}.")
        return cls.from_size(n)

    # ----- sizes and ids -----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return self.box_rows * self.box_cols

    @property
    def num_cells(self) -> int:
        return self.size * self.size

    @property
    def sequence_length(self) -> int:
        return self.num_cells + self.size - 1

    @property
    def mask_token_id(self) -> int:
        return 0

    @property
    def separator_token_id(self) -> int:
        return self.size + 1

    @property
    def vocab_size(self) -> int:
        return self.size + 2

    @property
    def name(self) -> str:
        return f"{self.size}x{self.size}"

    def to_dict(self) -> dict:
        return {"box_rows": self.box_rows, "box_cols": self.box_cols}

    # ----- layout -------------------------------------------------------------------------------------
    def cell_positions(self) -> np.ndarray:
        """Token index of every cell in row-major order, shape ``(n * n,)``."""
        n = self.size
        return (np.arange(n)[:, None] * (n + 1) + np.arange(n)[None, :]).reshape(-1)

    def cell_coordinates(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and box index of each cell in row-major order, each of shape ``(n * n,)``."""
        n = self.size
        rows = np.repeat(np.arange(n), n)
        cols = np.tile(np.arange(n), n)
        boxes = (rows // self.box_rows) * (n // self.box_cols) + cols // self.box_cols
        return rows, cols, boxes

    def check_grids(self, grids: np.ndarray, name: str = "grids", allow_blanks: bool = True) -> np.ndarray:
        """Validate the shape ``(..., n, n)`` and digit range of a grid array and return it as ``int64``."""
        grids = np.asarray(grids)
        n = self.size
        if grids.ndim < 2 or grids.shape[-2:] != (n, n):
            raise SudokuInputError(f"{name} has shape {grids.shape}; a {self.name} Sudoku needs (..., {n}, {n}).")
        if not np.issubdtype(grids.dtype, np.integer):
            raise SudokuInputError(f"{name} has dtype {grids.dtype}; digits must be integers.")
        low = 0 if allow_blanks else 1
        bad = (grids < low) | (grids > n)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise SudokuInputError(
                f"{name} holds digit {int(grids[where])} at index {where}; valid digits are {low}..{n}"
                + (" (0 = blank)." if allow_blanks else ".")
            )
        return grids.astype(np.int64)


def _box_row_choices(size: int) -> List[int]:
    return [a for a in range(2, size) if size % a == 0 and size // a >= 2]


def _as_spec(spec: Union[SudokuSpec, int]) -> SudokuSpec:
    return spec if isinstance(spec, SudokuSpec) else SudokuSpec.from_size(spec)


# ----- validation -------------------------------------------------------------------------------------
def _units(grids: np.ndarray, spec: SudokuSpec) -> np.ndarray:
    """All rows, columns and boxes as ``(B, 3 * n, n)``."""
    b, n = grids.shape[0], spec.size
    boxes = grids.reshape(b, n // spec.box_rows, spec.box_rows, n // spec.box_cols, spec.box_cols)
    boxes = boxes.transpose(0, 1, 3, 2, 4).reshape(b, n, n)
    return np.concatenate([grids, grids.transpose(0, 2, 1), boxes], axis=1)


def _digit_counts(grids: np.ndarray, spec: SudokuSpec) -> np.ndarray:
    """How often each digit ``0..n`` occurs in each unit: ``(B, 3 * n, n + 1)``."""
    units = _units(grids, spec)
    one_hot = units[..., None] == np.arange(spec.size + 1)
    return one_hot.sum(axis=2)


def is_valid_solution(grids: np.ndarray, spec: Union[SudokuSpec, int, None] = None, puzzles: Optional[np.ndarray] = None) -> np.ndarray:
    """Which grids are complete, valid solutions (and, when ``puzzles`` is given, keep its givens).

    Args:
        grids (`np.ndarray` of shape `(B, n, n)` or `(n, n)`): Candidate solutions; 0 (blank) counts as wrong.
        spec (`SudokuSpec` or `int`, *optional*): Grid shape; inferred from ``grids`` when omitted.
        puzzles (`np.ndarray` of shape `(B, n, n)`, *optional*): The puzzles; every given must be kept.

    Returns:
        `np.ndarray` of bool, shape `(B,)` (or a scalar bool for one grid).
    """
    grids = np.asarray(grids)
    single = grids.ndim == 2
    spec = _as_spec(spec if spec is not None else grids.shape[-1])
    grids = spec.check_grids(grids.reshape(-1, spec.size, spec.size) if not single else grids[None])
    counts = _digit_counts(grids, spec)
    ok = (counts[..., 1:] == 1).all(axis=(1, 2))
    if puzzles is not None:
        puzzles = spec.check_grids(np.asarray(puzzles).reshape(grids.shape), name="puzzles")
        ok &= ((puzzles == 0) | (puzzles == grids)).all(axis=(1, 2))
    return ok[0] if single else ok


def givens_conflicts(puzzles: np.ndarray, spec: Union[SudokuSpec, int, None] = None) -> np.ndarray:
    """Which puzzles have givens that already break a rule (a digit twice in a row, column or box): ``(B,)`` bool."""
    puzzles = np.asarray(puzzles)
    spec = _as_spec(spec if spec is not None else puzzles.shape[-1])
    puzzles = spec.check_grids(puzzles.reshape(-1, spec.size, spec.size), name="puzzles")
    return (_digit_counts(puzzles, spec)[..., 1:] > 1).any(axis=(1, 2))


def check_givens(puzzles: np.ndarray, spec: Union[SudokuSpec, int, None] = None, name: str = "puzzles") -> None:
    """Raise `SudokuInputError` naming the first puzzle whose givens break a rule, with the unit and digit."""
    puzzles = np.asarray(puzzles)
    spec = _as_spec(spec if spec is not None else puzzles.shape[-1])
    flat = spec.check_grids(puzzles.reshape(-1, spec.size, spec.size), name=name)
    counts = _digit_counts(flat, spec)[..., 1:]
    bad = np.argwhere(counts > 1)
    if len(bad):
        index, unit, digit = (int(v) for v in bad[0])
        kind, which = ("row", "column", "box")[unit // spec.size], unit % spec.size
        raise SudokuInputError(
            f"{name}[{index}] is not a valid puzzle: its givens put digit {digit + 1} {int(counts[index, unit, digit])} "
            f"times in {kind} {which} (0-based); each digit may appear at most once per row, column and box."
        )


def rule_conflicts(grids: np.ndarray, spec: Union[SudokuSpec, int, None] = None) -> np.ndarray:
    """Cells whose digit occurs more than once in their row, column or box: ``(B, n, n)`` bool (blanks never).

    In a filled grid these are the cells that take part in a broken rule; a wrong digit always breaks one,
    but the other cell of a clashing pair may well be right.
    """
    grids = np.asarray(grids)
    single = grids.ndim == 2
    spec = _as_spec(spec if spec is not None else grids.shape[-1])
    grids = spec.check_grids(grids[None] if single else grids.reshape(-1, spec.size, spec.size))
    b, n = grids.shape[0], spec.size
    counts = _digit_counts(grids, spec)  # (B, 3n, n+1)
    rows = np.take_along_axis(counts[:, :n], grids, axis=2)
    cols = np.take_along_axis(counts[:, n : 2 * n], grids.transpose(0, 2, 1), axis=2).transpose(0, 2, 1)
    boxes = grids.reshape(b, n // spec.box_rows, spec.box_rows, n // spec.box_cols, spec.box_cols)
    boxes = boxes.transpose(0, 1, 3, 2, 4).reshape(b, n, n)
    in_box = np.take_along_axis(counts[:, 2 * n :], boxes, axis=2)
    in_box = in_box.reshape(b, n // spec.box_rows, n // spec.box_cols, spec.box_rows, spec.box_cols)
    in_box = in_box.transpose(0, 1, 3, 2, 4).reshape(b, n, n)
    out = (grids != 0) & ((rows > 1) | (cols > 1) | (in_box > 1))
    return out[0] if single else out


# ----- solver -----------------------------------------------------------------------------------------
def _candidates_setup(puzzle: np.ndarray, spec: SudokuSpec):
    n = spec.size
    full = (1 << (n + 1)) - 2  # bits 1..n
    rows = [0] * n
    cols = [0] * n
    boxes = [0] * n
    empties = []
    for r in range(n):
        for c in range(n):
            d = int(puzzle[r, c])
            box = (r // spec.box_rows) * (n // spec.box_cols) + c // spec.box_cols
            if d:
                rows[r] |= 1 << d
                cols[c] |= 1 << d
                boxes[box] |= 1 << d
            else:
                empties.append((r, c, box))
    return full, rows, cols, boxes, empties


def _most_constrained(empties, rows, cols, boxes, full):
    """The blank cell with the fewest candidate digits: ``(index in empties, candidate bits, count)``."""
    best, best_options, best_count = None, 0, 99
    for idx, (r, c, b) in enumerate(empties):
        options = full & ~(rows[r] | cols[c] | boxes[b])
        count = bin(options).count("1")
        if count < best_count:
            best, best_options, best_count = idx, options, count
            if count <= 1:
                break
    return best, best_options, best_count


def _toggle(grid, rows, cols, boxes, r, c, b, d):
    """Place digit ``d`` in the empty cell ``(r, c)`` (box ``b``), or take it back out: the unit bitmasks are
    XOR-ed, so the same call undoes itself."""
    bit = 1 << d
    rows[r] ^= bit
    cols[c] ^= bit
    boxes[b] ^= bit
    grid[r, c] = 0 if grid[r, c] else d


def _branch(empties, rows, cols, boxes, full, size):
    """The step of both backtracking searches: the most constrained blank cell ``(r, c, box)``, the other blank cells,
    and the cell's candidate digits in ascending order; `None` when that cell has no candidate (a dead end)."""
    best, options, count = _most_constrained(empties, rows, cols, boxes, full)
    if count == 0:
        return None
    return empties[best], empties[:best] + empties[best + 1 :], [d for d in range(1, size + 1) if options >> d & 1]


def _completions(grid, size, rows, cols, boxes, empties, full, rng=None, target=None, budget=None, nodes=None,
                 node_limit=None):
    """Depth-first search over the valid completions of ``grid``, most constrained blank cell first; yields each one
    (``grid`` itself, filled in place: copy what you keep).

    ``rng`` shuffles the digits tried at each cell (a random solved-grid sampler on an empty grid). With ``target``
    and ``budget``, only completions that differ from ``target`` in exactly ``budget`` blank cells are searched.
    ``nodes`` (a one-item list) counts the nodes visited, and the search stops once it passes ``node_limit``.
    """
    if nodes is not None:
        nodes[0] += 1
        if nodes[0] > node_limit:
            return
    if not empties:
        if not budget:
            yield grid
        return
    step = _branch(empties, rows, cols, boxes, full, size)
    if step is None:
        return
    (r, c, b), rest, digits = step
    if rng is not None:
        rng.shuffle(digits)
    for d in digits:
        cost = 0 if target is None or d == target[r, c] else 1
        if budget is not None and cost > budget:
            continue
        _toggle(grid, rows, cols, boxes, r, c, b, d)
        yield from _completions(grid, size, rows, cols, boxes, rest, full, rng, target,
                                None if budget is None else budget - cost, nodes, node_limit)
        _toggle(grid, rows, cols, boxes, r, c, b, d)
        if nodes is not None and nodes[0] > node_limit:
            return


def solve(puzzle: np.ndarray, spec: Union[SudokuSpec, int, None] = None, max_solutions: int = 1,
          rng: Optional[np.random.Generator] = None) -> List[np.ndarray]:
    """Up to ``max_solutions`` solutions of one puzzle ``(n, n)`` (0 = blank), by backtracking.

    A reference solver for uniqueness checks and tests, not for bulk use (it is plain Python).
    ``rng`` shuffles the digit order, which turns it into a random solved-grid sampler on an empty grid.
    """
    puzzle = np.asarray(puzzle)
    spec = _as_spec(spec if spec is not None else puzzle.shape[-1])
    puzzle = spec.check_grids(puzzle, name="puzzle")
    if puzzle.ndim != 2:
        raise SudokuInputError(f"solve takes one puzzle of shape ({spec.size}, {spec.size}); got {puzzle.shape}.")
    check_givens(puzzle[None], spec, name="puzzle")
    full, rows, cols, boxes, empties = _candidates_setup(puzzle, spec)
    search = _completions(puzzle.copy(), spec.size, rows, cols, boxes, empties, full, rng=rng)
    return [grid.copy() for grid in itertools.islice(search, max_solutions)]


def count_solutions(puzzle: np.ndarray, spec: Union[SudokuSpec, int, None] = None, limit: int = 2) -> int:
    """Number of solutions of one puzzle, counted up to ``limit``."""
    return len(solve(puzzle, spec, max_solutions=limit))


# ----- generation -------------------------------------------------------------------------------------
def _random_permutations(rng: np.random.Generator, num: int, size: int) -> np.ndarray:
    return np.argsort(rng.random((num, size)), axis=1)


def _symmetry_index(rng: np.random.Generator, num: int, blocks: int, per_block: int) -> np.ndarray:
    """Random line orders that keep bands (or stacks) together: permute the blocks, then lines inside each."""
    block_order = _random_permutations(rng, num, blocks)
    inner = np.argsort(rng.random((num, blocks, per_block)), axis=2)
    return (block_order[:, :, None] * per_block + inner).reshape(num, blocks * per_block)


def generate_solved_grids(num: int, spec: Union[SudokuSpec, int] = 9, seed: Union[int, Sequence[int], None] = 0,
                          pool_size: int = 64) -> np.ndarray:
    """``num`` random valid solved grids, shape ``(num, n, n)``, dtype ``int64``.

    A small pool of seed grids is drawn by randomised backtracking (``pool_size`` calls of a Python
    solver, milliseconds each); every output grid is then one pool grid under a random validity-preserving
    transform, applied to the whole batch at once with numpy: relabel the digits, permute bands and the
    rows inside each band, permute stacks and the columns inside each stack, and transpose (square boxes
    only). Each transform class holds ``n! * (a!)^b * b! * (b!)^a * a!`` grids (about 1.2e12 for 9x9), so
    the output is diverse while generation stays vectorised.

    Args:
        num (`int`): Number of grids.
        spec (`SudokuSpec` or `int`): Grid shape or size (4, 6, 9, ...).
        seed (`int` or `Sequence[int]`, *optional*): Seed of a `numpy.random.Generator` (a sequence of ints is a
            seed sequence, e.g. ``(seed, round)``); the same seed gives the same grids.
        pool_size (`int`): Number of backtracking seed grids.
    """
    spec = _as_spec(spec)
    if not isinstance(num, (int, np.integer)) or num < 0:
        raise SudokuInputError(f"num={num!r} must be a non-negative int.")
    if pool_size < 1:
        raise SudokuInputError(f"pool_size={pool_size!r} must be >= 1.")
    rng = np.random.default_rng(seed)
    n, a, b = spec.size, spec.box_rows, spec.box_cols
    pool = np.stack([solve(np.zeros((n, n), dtype=np.int64), spec, rng=rng)[0] for _ in range(min(pool_size, max(num, 1)))])
    grids = pool[rng.integers(0, len(pool), size=num)]
    # Digit relabelling: a lookup table per grid (index 0 stays 0).
    relabel = np.concatenate([np.zeros((num, 1), dtype=np.int64), 1 + _random_permutations(rng, num, n)], axis=1)
    grids = np.take_along_axis(relabel, grids.reshape(num, -1), axis=1).reshape(num, n, n)
    # Bands are `n // a` groups of `a` rows; stacks are `n // b` groups of `b` columns.
    row_order = _symmetry_index(rng, num, n // a, a)
    col_order = _symmetry_index(rng, num, n // b, b)
    grids = np.take_along_axis(grids, row_order[:, :, None].repeat(n, axis=2), axis=1)
    grids = np.take_along_axis(grids, col_order[:, None, :].repeat(n, axis=1), axis=2)
    if a == b:
        flip = rng.random(num) < 0.5
        grids[flip] = grids[flip].transpose(0, 2, 1)
    return grids


def make_puzzles(solutions: np.ndarray, num_blanks: Union[int, Tuple[int, int]], seed: Union[int, Sequence[int], None] = 0,
                 unique: bool = False, spec: Union[SudokuSpec, int, None] = None) -> np.ndarray:
    """Blank cells of solved grids to make puzzles (0 = blank).

    Args:
        solutions (`np.ndarray` of shape `(B, n, n)`): Solved grids.
        num_blanks (`int` or `(low, high)`): Blanks per puzzle, or an inclusive range drawn per puzzle.
        seed (`int` or `Sequence[int]`, *optional*): Seed of the blank positions.
        unique (`bool`): Keep only a unique solution: blanks are removed in random order and a blank
            that would allow a second solution is restored (so a puzzle may end with fewer blanks
            than asked). Plain Python backtracking per puzzle: fine for thousands of 4x4/6x6 puzzles or
            hundreds of 9x9 ones.

    Returns:
        `np.ndarray` of shape `(B, n, n)`: the puzzles.
    """
    solutions = np.asarray(solutions)
    spec = _as_spec(spec if spec is not None else solutions.shape[-1])
    solutions = spec.check_grids(solutions, name="solutions", allow_blanks=False)
    if solutions.ndim != 3:
        raise SudokuInputError(f"solutions must have shape (B, {spec.size}, {spec.size}); got {solutions.shape}.")
    low, high = (num_blanks, num_blanks) if np.isscalar(num_blanks) else tuple(num_blanks)
    if not (0 <= low <= high <= spec.num_cells):
        raise SudokuInputError(f"num_blanks={num_blanks!r} must lie in 0..{spec.num_cells} (low <= high).")
    rng = np.random.default_rng(seed)
    num = len(solutions)
    blanks = rng.integers(low, high + 1, size=num)
    order = _random_permutations(rng, num, spec.num_cells)  # blanking order of the cells
    rank = np.argsort(order, axis=1)
    puzzles = solutions.reshape(num, -1).copy()
    if not unique:
        puzzles[rank < blanks[:, None]] = 0
        return puzzles.reshape(solutions.shape)
    for i in range(num):
        removed = 0
        for cell in order[i]:
            if removed >= blanks[i]:
                break
            keep = puzzles[i, cell]
            puzzles[i, cell] = 0
            if count_solutions(puzzles[i].reshape(spec.size, spec.size), spec, limit=2) > 1:
                puzzles[i, cell] = keep
            else:
                removed += 1
    return puzzles.reshape(solutions.shape)


def nearest_completions(puzzle: np.ndarray, grid: np.ndarray, spec: Union[SudokuSpec, int, None] = None,
                        max_changes: Optional[int] = None, node_limit: int = 100_000) -> Optional[List[np.ndarray]]:
    """Every valid completion of ``puzzle`` that is closest to ``grid`` (fewest cells changed).

    Iterative deepening on the number of changed cells: the first depth with a completion gives all of them.
    For a puzzle with one solution this is that solution; for a puzzle with several, it is the repair of the
    generated grid that changes the fewest cells.

    Args:
        puzzle (`np.ndarray` of shape `(n, n)`): The puzzle (0 = blank); its givens must not break a rule.
        grid (`np.ndarray` of shape `(n, n)`): A completed (or partly completed) grid for that puzzle.
        max_changes (`int`, *optional*): Largest distance tried (all generated cells by default).
        node_limit (`int`): Search nodes allowed in all (every depth together); ``None`` is returned past it.

    Returns:
        `List[np.ndarray]` of the nearest completions, or ``None`` when the search gave up (node limit,
        ``max_changes``) or the puzzle has no solution.
    """
    puzzle = np.asarray(puzzle)
    spec = _as_spec(spec if spec is not None else puzzle.shape[-1])
    puzzle = spec.check_grids(puzzle, name="puzzle")
    grid = spec.check_grids(np.asarray(grid), name="grid")
    if puzzle.ndim != 2 or grid.shape != puzzle.shape:
        raise SudokuInputError(
            f"nearest_completions takes one puzzle and one grid of shape ({spec.size}, {spec.size}); got {puzzle.shape} "
            f"and {grid.shape}."
        )
    check_givens(puzzle[None], spec, name="puzzle")
    if max_changes is not None and (isinstance(max_changes, bool) or not isinstance(max_changes, (int, np.integer))
                                    or max_changes < 0):
        raise SudokuInputError(f"max_changes={max_changes!r} is not valid; use None (no limit) or an int >= 0.")
    num_blank = int((puzzle == 0).sum())
    limit = num_blank if max_changes is None else min(int(max_changes), num_blank)
    nodes = [0]  # shared by every depth: node_limit bounds the whole search
    for budget in range(limit + 1):
        full, rows, cols, boxes, empties = _candidates_setup(puzzle, spec)
        search = _completions(puzzle.copy(), spec.size, rows, cols, boxes, empties, full, target=grid, budget=budget,
                              nodes=nodes, node_limit=node_limit)
        found = [completion.copy() for completion in search]
        if found:
            return found
        if nodes[0] > node_limit:
            return None
    return None


def wrong_cells(puzzles: np.ndarray, grids: np.ndarray, spec: Union[SudokuSpec, int, None] = None,
                solutions: Optional[np.ndarray] = None, node_limit: int = 100_000) -> Tuple[np.ndarray, int]:
    """Which generated cells are wrong: those that some nearest valid completion of the puzzle changes.

    A puzzle with one solution has one nearest completion, its solution, so a cell is wrong exactly when it
    differs from the solution. A puzzle with several solutions is judged against the completions closest to
    the generated grid (not against the grid it was cut from, which the model has no reason to reproduce);
    when several repairs tie, a cell any of them changes counts as wrong. Givens are never wrong.

    Args:
        puzzles, grids (`np.ndarray` of shape `(B, n, n)`): Puzzles (0 = blank) and generated grids.
        solutions (`np.ndarray` of shape `(B, n, n)`, *optional*): Used for a grid whose search runs past
            ``node_limit`` (wrong = differs from that solution); without them such a grid raises.
        node_limit (`int`): Search nodes allowed per grid (see `nearest_completions`).

    Returns:
        `(np.ndarray of bool (B, n, n), int)`: the wrong cells, and how many grids fell back to ``solutions``.
    """
    puzzles = np.asarray(puzzles)
    spec = _as_spec(spec if spec is not None else puzzles.shape[-1])
    puzzles = spec.check_grids(puzzles.reshape(-1, spec.size, spec.size), name="puzzles")
    grids = np.asarray(grids)
    if grids.size != puzzles.size:
        raise SudokuInputError(f"grids has shape {grids.shape} but puzzles has {puzzles.shape}: one grid per puzzle.")
    grids = spec.check_grids(grids.reshape(puzzles.shape), name="grids")
    wrong = np.zeros(puzzles.shape, dtype=bool)
    fallbacks = 0
    for i in range(len(puzzles)):
        if is_valid_solution(grids[i], spec, puzzles=puzzles[i]):
            continue
        nearest = nearest_completions(puzzles[i], grids[i], spec, node_limit=node_limit)
        if nearest is None:
            if solutions is None:
                raise SudokuInputError(
                    f"grids[{i}]: no nearest completion found within node_limit={node_limit} (or puzzles[{i}] has no "
                    "solution); raise node_limit or pass solutions to fall back on."
                )
            fallbacks += 1
            wrong[i] = grids[i] != np.asarray(solutions)[i]
        else:
            wrong[i] = (np.stack(nearest) != grids[i][None]).any(axis=0)
    wrong &= puzzles == 0
    return wrong, fallbacks
