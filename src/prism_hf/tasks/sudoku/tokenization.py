"""Sudoku token sequences, strings and CSV rows.

Token layout (the PRISM paper's Sudoku format): the ``n`` rows of a grid, each ``n`` digits, joined by
the separator token ``n + 1``; ``0`` is a blank (the mask token). A 9x9 grid is 89 tokens, e.g.
``5,3,0,0,7,0,0,0,0,10,6,0,...``. A CSV puzzle file holds one such row per line.
"""

from __future__ import annotations

import csv
import os
from typing import Optional, Sequence, Union

import numpy as np

from .grids import SudokuInputError, SudokuSpec, _as_spec, check_givens

__all__ = ["SudokuTokenizer", "load_puzzles_csv", "save_puzzles_csv"]

_BLANK_CHARS = ".0_"


def _spec_attribute(name: str, doc: str) -> property:
    """A read-only tokenizer attribute that is its grid spec's attribute ``name``."""
    return property(lambda self: getattr(self.spec, name), doc=doc)


class SudokuTokenizer:
    """Converts between grids ``(..., n, n)``, token ids ``(..., n * n + n - 1)``, strings and CSV rows.

    Args:
        spec (`SudokuSpec` or `int`): The grid shape (or its size: 4, 6, 9, ...).

    Example:
        ```python
        >>> tok = SudokuTokenizer(4)
        >>> tok.encode(np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])).tolist()[:6]
        [1, 2, 3, 4, 5, 3]
        ```
    """

    def __init__(self, spec: Union[SudokuSpec, int] = 9):
        self.spec = _as_spec(spec)

    # ----- ids: the spec's, the one place the token layout is written ------------------------------------------
    mask_token_id = _spec_attribute("mask_token_id", "Id of the blank / mask token (``0``).")
    separator_token_id = _spec_attribute("separator_token_id", "Id of the row separator (``n + 1``).")
    vocab_size = _spec_attribute("vocab_size", "Number of token ids (``n + 2``).")
    sequence_length = _spec_attribute("sequence_length", "Tokens per grid (``n * n + n - 1``).")

    def __len__(self) -> int:
        return self.vocab_size

    # ----- grids <-> tokens ------------------------------------------------------------------------------
    def encode(self, grids: np.ndarray) -> np.ndarray:
        """Grids ``(..., n, n)`` (0 = blank) to token ids ``(..., L)``, dtype ``int64``."""
        grids = self.spec.check_grids(grids)
        n = self.spec.size
        lead = grids.shape[:-2]
        tokens = np.full(lead + (self.sequence_length,), self.separator_token_id, dtype=np.int64)
        tokens[..., self.spec.cell_positions()] = grids.reshape(lead + (n * n,))
        return tokens

    def decode(self, token_ids: np.ndarray, name: str = "token_ids") -> np.ndarray:
        """Token ids ``(..., L)`` to grids ``(..., n, n)``; checks the separators and the digit range."""
        tokens = np.asarray(token_ids)
        if hasattr(token_ids, "detach"):
            tokens = token_ids.detach().cpu().numpy()
        self.check_tokens(tokens, name=name)
        n = self.spec.size
        return tokens[..., self.spec.cell_positions()].reshape(tokens.shape[:-1] + (n, n)).astype(np.int64)

    def cell_mask(self) -> np.ndarray:
        """Boolean ``(L,)``: ``True`` at cell positions, ``False`` at separators."""
        mask = np.zeros(self.sequence_length, dtype=bool)
        mask[self.spec.cell_positions()] = True
        return mask

    def check_tokens(self, tokens: np.ndarray, name: str = "token_ids", row_offset: int = 0, row_label: str = "row") -> None:
        """Raise `SudokuInputError` for a wrong length, a misplaced separator or a digit out of range."""
        tokens = np.asarray(tokens)
        L, n = self.sequence_length, self.spec.size
        if tokens.ndim < 1 or tokens.shape[-1] != L:
            raise SudokuInputError(
                f"{name} has {tokens.shape[-1] if tokens.ndim else 0} values per row; a {self.spec.name} Sudoku row has {L} "
                f"({n} rows of {n} digits joined by the separator {self.separator_token_id})."
            )
        flat = tokens.reshape(-1, L)
        cells = self.cell_mask()
        bad_sep = flat[:, ~cells] != self.separator_token_id
        if bad_sep.any():
            row, j = (int(v) for v in np.argwhere(bad_sep)[0])
            pos = int(np.flatnonzero(~cells)[j])
            raise SudokuInputError(
                f"{name} {row_label} {row + row_offset}: value {int(flat[row, pos])} at index {pos} should be the row separator "
                f"{self.separator_token_id}."
            )
        bad_digit = (flat[:, cells] < 0) | (flat[:, cells] > n)
        if bad_digit.any():
            row, j = (int(v) for v in np.argwhere(bad_digit)[0])
            pos = int(np.flatnonzero(cells)[j])
            raise SudokuInputError(
                f"{name} {row_label} {row + row_offset}: digit {int(flat[row, pos])} at index {pos} is out of range; valid cell "
                f"values are 0..{n} (0 = blank)."
            )

    # ----- strings -----------------------------------------------------------------------------------------
    def to_string(self, grid: np.ndarray, blank: str = ".") -> str:
        """One grid ``(n, n)`` as ``n * n`` characters, row by row (``n <= 9``); blanks as ``blank``."""
        grid = self.spec.check_grids(grid)
        if grid.ndim != 2:
            raise SudokuInputError(f"to_string takes one grid of shape ({self.spec.size}, {self.spec.size}); got {grid.shape}.")
        if self.spec.size > 9:
            raise SudokuInputError(f"to_string needs one character per digit, so size <= 9; got {self.spec.size}. Use CSV rows.")
        return "".join(blank if d == 0 else str(d) for d in grid.reshape(-1))

    def from_string(self, text: str) -> np.ndarray:
        """Parse ``n * n`` digit characters (``.``, ``0`` or ``_`` for blanks; whitespace and ``|`` ignored)."""
        chars = [c for c in text if not c.isspace() and c not in "|/-+"]
        n = self.spec.size
        if len(chars) != n * n:
            raise SudokuInputError(f"text has {len(chars)} cells; a {self.spec.name} Sudoku string has {n * n}.")
        values = []
        for i, c in enumerate(chars):
            if c in _BLANK_CHARS:
                values.append(0)
            elif c.isdigit() and 1 <= int(c) <= n:
                values.append(int(c))
            else:
                raise SudokuInputError(f"text cell {i} is {c!r}; valid characters are 1..{n} and blanks {_BLANK_CHARS!r}.")
        return np.array(values, dtype=np.int64).reshape(n, n)

    # ----- CSV rows ----------------------------------------------------------------------------------------
    def to_csv_row(self, grid: np.ndarray) -> str:
        """One grid as a comma-separated token row (the puzzle-file format)."""
        return ",".join(str(int(v)) for v in self.encode(grid).reshape(-1))

    def from_csv_row(self, row: Union[str, Sequence], row_index: int = 0) -> np.ndarray:
        """Parse one CSV row (a string or a list of fields) into a grid ``(n, n)``."""
        fields = row.strip().split(",") if isinstance(row, str) else list(row)
        try:
            values = np.array([int(str(f).strip()) for f in fields], dtype=np.int64)
        except ValueError:
            raise SudokuInputError(f"CSV row {row_index}: every field must be an integer; got {fields[:12]}...") from None
        self.check_tokens(values, name="CSV", row_offset=row_index)
        return self.decode(values)

    def __repr__(self) -> str:
        return f"SudokuTokenizer(size={self.spec.size}, box={self.spec.box_rows}x{self.spec.box_cols}, vocab_size={self.vocab_size})"


def load_puzzles_csv(path: Union[str, os.PathLike], spec: Union[SudokuSpec, int, None] = None,
                     check_givens_valid: bool = True, limit: Optional[int] = None) -> np.ndarray:
    """Read a puzzle file (one comma-separated token row per line) into grids ``(N, n, n)``.

    The grid size is inferred from the row length (89 -> 9x9, 41 -> 6x6, 19 -> 4x4) unless ``spec``
    is given. Rows of the wrong length, misplaced separators, digits out of range and (when
    ``check_givens_valid``) givens that already break a rule raise `SudokuInputError` naming the line.
    A file of solved grids (no blanks) loads the same way. The file is read as UTF-8; a byte-order mark (as
    some editors write) is skipped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SudokuInputError(f"puzzles={path!r} is not a file.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            numbered = [(i + 1, r) for i, r in enumerate(csv.reader(f)) if r and any(field.strip() for field in r)]
    except UnicodeDecodeError as err:
        raise SudokuInputError(
            f"puzzles={path!r} is not a UTF-8 text file ({err.reason} at byte {err.start}); a puzzle file holds one "
            "comma-separated row of integers per line."
        ) from None
    line_numbers = [i for i, _ in numbered]
    rows = [r for _, r in numbered]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise SudokuInputError(f"puzzles={path!r} holds no rows.")
    if spec is None:
        spec = SudokuSpec.from_sequence_length(len(rows[0]))
    tokenizer = SudokuTokenizer(spec)
    L = tokenizer.sequence_length
    for line, r in zip(line_numbers, rows):
        if len(r) != L:
            raise SudokuInputError(
                f"{path} line {line}: {len(r)} values; a {tokenizer.spec.name} Sudoku row has {L}."
            )
    values = [[v.strip() for v in r] for r in rows]
    bad = [(line, j, v) for line, r in zip(line_numbers, values) for j, v in enumerate(r) if not _is_integer_text(v)]
    if bad:
        line, j, v = bad[0]
        raise SudokuInputError(
            f"{path} line {line}: field {j + 1} is {v!r}; every field must be an integer token id (0 = blank, 1..n digits, "
            "n + 1 the row separator)."
        )
    tokens = np.array(values, dtype=np.int64)
    try:
        tokenizer.check_tokens(tokens, name=path, row_label="line")
    except SudokuInputError:
        # Name the line of the file (blank lines are skipped, so row i is not line i + 1): recheck row by row.
        for line, row in zip(line_numbers, tokens):
            try:
                tokenizer.check_tokens(row[None], name=path, row_offset=line, row_label="line")
            except SudokuInputError as err:
                raise SudokuInputError(str(err)) from None
        raise
    grids = tokenizer.decode(tokens)
    if check_givens_valid:
        check_givens(grids, tokenizer.spec, name=f"{path} puzzles")
    return grids


def _is_integer_text(text: str) -> bool:
    body = text[1:] if text[:1] in "+-" else text
    return body.isascii() and body.isdigit() and len(body) <= 18  # longer cannot be a token id (and overflows int64)


def save_puzzles_csv(path: Union[str, os.PathLike], grids: np.ndarray, spec: Union[SudokuSpec, int, None] = None) -> None:
    """Write grids ``(N, n, n)`` as a puzzle file (one comma-separated token row per line)."""
    grids = np.asarray(grids)
    tokenizer = SudokuTokenizer(spec if spec is not None else grids.shape[-1])
    tokens = tokenizer.encode(grids).reshape(-1, tokenizer.sequence_length)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        for row in tokens:
            f.write(",".join(str(int(v)) for v in row) + "\n")
