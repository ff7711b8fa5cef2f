"""Sudoku task module: grids, generator, puzzles, validator, solver, tokenizer, CSV, datasets, backbone, bad input."""

import json

import numpy as np
import pytest
import torch

from prism_hf.tasks.sudoku import (
    SudokuInputError,
    SudokuMDMConfig,
    SudokuMDMForMaskedLM,
    SudokuSpec,
    SudokuTokenizer,
    build_puzzle_dataset,
    build_training_dataset,
    check_givens,
    count_solutions,
    generate_solved_grids,
    givens_conflicts,
    is_valid_solution,
    load_puzzles_csv,
    make_puzzles,
    nearest_completions,
    rule_conflicts,
    save_puzzles_csv,
    solve,
    wrong_cells,
)

SOLVED_4 = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])


# ----- spec -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,boxes,length", [(4, (2, 2), 19), (6, (2, 3), 41), (9, (3, 3), 89), (12, (3, 4), 155)])
def test_spec_layout(size, boxes, length):
    spec = SudokuSpec.from_size(size)
    assert (spec.box_rows, spec.box_cols) == boxes
    assert spec.sequence_length == length
    assert spec.vocab_size == size + 2 and spec.separator_token_id == size + 1 and spec.mask_token_id == 0
    assert SudokuSpec.from_sequence_length(length) == spec


@pytest.mark.parametrize("size", [5, 7, 3, 11])
def test_size_not_a_product_is_rejected(size):
    with pytest.raises(SudokuInputError, match=f"size={size} is not a product a\\*b"):
        SudokuSpec.from_size(size)


def test_bad_box_rows_and_sequence_length():
    with pytest.raises(SudokuInputError, match="box_rows=4 does not divide size=6"):
        SudokuSpec.from_size(6, box_rows=4)
    with pytest.raises(SudokuInputError, match="a row of 50 tokens is no Sudoku layout"):
        SudokuSpec.from_sequence_length(50)


# ----- generator, validator, puzzles, solver ------------------------------------------------------------
@pytest.mark.parametrize("size", [4, 6, 8, 9])
def test_generated_grids_are_valid_and_diverse(size):
    grids = generate_solved_grids(300, size, seed=3)
    assert grids.shape == (300, size, size)
    assert is_valid_solution(grids).all()
    distinct = len(np.unique(grids.reshape(300, -1), axis=0))
    assert distinct > (250 if size > 4 else 100)  # 4x4 has only 288 grids in total


def test_generator_is_seeded():
    a, b, c = (generate_solved_grids(20, 9, seed=s) for s in (5, 5, 6))
    assert (a == b).all() and not (a == c).all()


def test_validator_catches_each_kind_of_mistake():
    assert is_valid_solution(SOLVED_4)
    row_dup = SOLVED_4.copy(); row_dup[0, 0] = 2                       # digit twice in row 0
    latin = np.array([[1, 2, 3, 4], [2, 3, 4, 1], [3, 4, 1, 2], [4, 1, 2, 3]])  # rows/cols fine, boxes broken
    blank = SOLVED_4.copy(); blank[1, 1] = 0
    assert not is_valid_solution(row_dup)
    assert not is_valid_solution(latin)
    assert not is_valid_solution(blank)
    puzzle = SOLVED_4.copy(); puzzle[0] = 0
    other = SOLVED_4.copy(); other[[0, 1]] = other[[1, 0]]  # valid grid that does not keep the givens
    assert is_valid_solution(other)
    assert not is_valid_solution(other, puzzles=SOLVED_4)
    assert is_valid_solution(np.stack([SOLVED_4, latin, other])).tolist() == [True, False, True]
    assert is_valid_solution(SOLVED_4, puzzles=puzzle)


def test_make_puzzles_blanks_and_uniqueness():
    solutions = generate_solved_grids(30, 6, seed=1)
    puzzles = make_puzzles(solutions, (20, 22), seed=2)
    blanks = (puzzles == 0).sum(axis=(1, 2))
    assert blanks.min() >= 20 and blanks.max() <= 22
    assert ((puzzles == 0) | (puzzles == solutions)).all()
    unique = make_puzzles(solutions[:8], 22, seed=2, unique=True)
    for puzzle, solution in zip(unique, solutions[:8]):
        found = solve(puzzle, max_solutions=2)
        assert len(found) == 1 and (found[0] == solution).all()


def test_solver_counts_solutions():
    assert count_solutions(np.zeros((4, 4), dtype=int), limit=5) == 5
    puzzle = SOLVED_4.copy(); puzzle[0, 0] = 0
    assert solve(puzzle)[0].tolist() == SOLVED_4.tolist()


def test_rule_conflicts_marks_every_cell_of_a_clash():
    grid = SOLVED_4.copy()
    assert not rule_conflicts(grid).any()
    grid[0, 0] = 2  # 2 is already in row 0 (col 1) and box 0 (cell (2, 1) is outside it)
    clash = rule_conflicts(grid)
    expected = np.zeros((4, 4), dtype=bool)
    expected[0, 0] = expected[0, 1] = True  # row 0 and box 0
    expected[2, 0] = True  # column 0 holds 2 at (2, 0)
    assert clash.tolist() == expected.tolist()
    blanks = grid.copy()
    blanks[1:] = 0
    assert not rule_conflicts(blanks[None])[0, 1:].any()  # blanks never clash


def test_nearest_completion_is_the_solution_of_a_unique_puzzle():
    puzzle = make_puzzles(SOLVED_4[None], 9, seed=0, unique=True)[0]
    assert count_solutions(puzzle, limit=3) == 1
    (r1, c1), (r2, c2) = map(tuple, np.argwhere(puzzle == 0)[[0, -1]])
    grid = SOLVED_4.copy()
    grid[r1, c1] = grid[r1, c1] % 4 + 1
    grid[r2, c2] = grid[r2, c2] % 4 + 1  # two wrong digits
    nearest = nearest_completions(puzzle, grid)
    assert len(nearest) == 1 and nearest[0].tolist() == SOLVED_4.tolist()
    wrong, fallbacks = wrong_cells(puzzle[None], grid[None])
    assert fallbacks == 0 and sorted(map(tuple, np.argwhere(wrong[0]))) == sorted([(r1, c1), (r2, c2)])


def test_wrong_cells_of_a_many_solution_puzzle_are_judged_against_the_closest_repair():
    spec = SudokuSpec.from_size(6)
    solutions = generate_solved_grids(20, spec, seed=3)
    puzzles = make_puzzles(solutions, 28, seed=4, spec=spec)
    rng = np.random.default_rng(0)
    checked = 0
    for puzzle in puzzles:
        others = solve(puzzle, spec, max_solutions=2)
        if len(others) < 2:
            continue
        # The second solution is a valid completion: nothing in it is wrong, though it differs from the first.
        other = others[1]
        assert not wrong_cells(puzzle[None], other[None], spec)[0].any()
        # Break one generated cell of it: that cell is among the wrong ones, and every repair is at distance 1.
        r, c = map(int, np.argwhere(puzzle == 0)[rng.integers((puzzle == 0).sum())])
        broken = other.copy()
        broken[r, c] = broken[r, c] % 6 + 1
        nearest = nearest_completions(puzzle, broken, spec)
        assert all(int((n != broken).sum()) == 1 for n in nearest)
        wrong = wrong_cells(puzzle[None], broken[None], spec)[0][0]
        assert wrong[r, c] and wrong[puzzle != 0].sum() == 0
        checked += 1
    assert checked >= 3


def test_wrong_cells_falls_back_to_the_solution_or_says_why():
    puzzle = np.zeros((4, 4), dtype=int)
    grid = SOLVED_4.copy()
    grid[0, 0] = 2
    assert nearest_completions(puzzle, grid, node_limit=1) is None
    wrong, fallbacks = wrong_cells(puzzle[None], grid[None], solutions=SOLVED_4[None], node_limit=1)
    assert fallbacks == 1 and wrong[0].sum() == 1 and wrong[0, 0, 0]
    with pytest.raises(SudokuInputError, match=r"node_limit=1 \(or puzzles\[0\] has no solution\); raise node_limit"):
        wrong_cells(puzzle[None], grid[None], node_limit=1)
    with pytest.raises(SudokuInputError, match=r"grids has shape \(2, 4, 4\) but puzzles has \(1, 4, 4\)"):
        wrong_cells(puzzle[None], np.stack([grid, grid]))
    assert nearest_completions(puzzle, grid, max_changes=0) is None  # the grid needs one change
    assert len(nearest_completions(puzzle, grid, max_changes=1)) >= 1
    with pytest.raises(SudokuInputError, match=r"max_changes=-1 is not valid; use None \(no limit\) or an int >= 0"):
        nearest_completions(puzzle, grid, max_changes=-1)
    with pytest.raises(SudokuInputError, match="one puzzle and one grid of shape"):
        nearest_completions(puzzle, grid[None])


def test_givens_that_break_a_rule_are_rejected():
    bad = np.zeros((2, 9, 9), dtype=int)
    bad[1, 0, 0] = bad[1, 4, 0] = 7  # digit 7 twice in column 0
    assert givens_conflicts(bad).tolist() == [False, True]
    with pytest.raises(SudokuInputError, match=r"puzzles\[1\] is not a valid puzzle: its givens put digit 7 2 times in column 0"):
        check_givens(bad)
    with pytest.raises(SudokuInputError, match="not a valid puzzle"):
        solve(bad[1])


def test_digit_out_of_range_in_a_grid():
    with pytest.raises(SudokuInputError, match="holds digit 5 .* valid digits are 0..4"):
        is_valid_solution(np.full((4, 4), 5))


# ----- tokenizer and CSV -------------------------------------------------------------------------------
def test_tokenizer_round_trips_tokens_strings_and_csv():
    tok = SudokuTokenizer(9)
    grids = make_puzzles(generate_solved_grids(5, 9, seed=0), 40, seed=1)
    tokens = tok.encode(grids)
    assert tokens.shape == (5, 89)
    assert (tokens[:, 9::10] == 10).all()
    assert (tok.decode(tokens) == grids).all()
    for grid in grids:
        assert (tok.from_string(tok.to_string(grid)) == grid).all()
        assert (tok.from_csv_row(tok.to_csv_row(grid)) == grid).all()
    assert tok.from_string("12.. 34.. ....  ....".replace(" ", "") + "." * 65)[0, :4].tolist() == [1, 2, 0, 0]


def test_paper_file_format_loads(tmp_path):
    grids = generate_solved_grids(7, 9, seed=4)
    path = tmp_path / "p.csv"
    save_puzzles_csv(path, make_puzzles(grids, 50, seed=0))
    first = path.read_text().splitlines()[0].split(",")
    assert len(first) == 89 and first[9] == "10"
    loaded = load_puzzles_csv(path)
    assert loaded.shape == (7, 9, 9) and ((loaded == 0).sum(axis=(1, 2)) == 50).all()


def _write(tmp_path, rows):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def test_csv_row_of_wrong_length(tmp_path):
    tok = SudokuTokenizer(9)
    good = tok.encode(generate_solved_grids(1, 9, seed=0))[0].tolist()
    path = _write(tmp_path, [good, good[:-1]])
    with pytest.raises(SudokuInputError, match="line 2: 88 values; a 9x9 Sudoku row has 89"):
        load_puzzles_csv(path)
    with pytest.raises(SudokuInputError, match="88 values per row"):
        tok.from_csv_row(",".join(map(str, good[:-1])))


def test_csv_digit_out_of_range(tmp_path):
    tok = SudokuTokenizer(9)
    row = tok.encode(generate_solved_grids(1, 9, seed=0))[0].tolist()
    row[3] = 12
    with pytest.raises(SudokuInputError, match="line 1: digit 12 at index 3 is out of range; valid cell values are 0..9"):
        load_puzzles_csv(_write(tmp_path, [row]))
    row[3] = 4
    row[9] = 3  # separator position
    with pytest.raises(SudokuInputError, match="should be the row separator 10"):
        load_puzzles_csv(_write(tmp_path, [row]))


def test_csv_givens_that_break_a_rule(tmp_path):
    tok = SudokuTokenizer(6)
    puzzle = np.zeros((6, 6), dtype=int)
    puzzle[0, 0] = puzzle[0, 5] = 3
    with pytest.raises(SudokuInputError, match="digit 3 2 times in row 0"):
        load_puzzles_csv(_write(tmp_path, [tok.encode(puzzle).tolist()]))


# ----- datasets ------------------------------------------------------------------------------------------
def test_datasets_builders():
    train = build_training_dataset(16, 6, seed=1)
    assert train.column_names == ["input_ids", "maskable"]
    row = train[0]
    assert row["input_ids"].shape == (41,) and int(row["maskable"].sum()) == 36
    assert (row["input_ids"][~row["maskable"].bool()] == 7).all()
    evalset = build_puzzle_dataset(4, 4, num_blanks=6, seed=9, unique=True)
    ex = evalset[0]
    assert int((ex["input_ids"] == 0).sum()) <= 6 and (ex["maskable"].bool() == (ex["input_ids"] == 0)).all()
    tok = SudokuTokenizer(4)
    assert is_valid_solution(tok.decode(ex["solution_ids"].numpy()))


# ----- backbone ------------------------------------------------------------------------------------------
def test_backbone_loads_with_auto_classes_and_wraps_in_prism(tmp_path):
    from transformers import AutoConfig, AutoModelForMaskedLM

    from prism_hf import PrismForMaskedDiffusion

    model = SudokuMDMForMaskedLM(SudokuMDMConfig(box_rows=2, box_cols=3, hidden_size=32, num_hidden_layers=1, num_attention_heads=2))
    assert model.config.vocab_size == 8 and model.config.mask_token_id == 0
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "sudoku_mdm"
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    ids = torch.as_tensor(SudokuTokenizer(6).encode(generate_solved_grids(2, 6, seed=0)))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    prism = PrismForMaskedDiffusion.from_backbone(model, head_type="linear")
    assert prism.mask_token_id == 0
    out = prism(ids)
    assert out.logits.shape == (2, 41, 8) and out.quality_logits.shape == (2, 41)
    # cells can only predict digits, separators only the separator
    best = out.logits.argmax(-1)
    cells = torch.as_tensor(SudokuTokenizer(6).cell_mask())
    assert ((best[:, cells] >= 1) & (best[:, cells] <= 6)).all() and (best[:, ~cells] == 7).all()


def test_backbone_rejects_wrong_length_and_mask_id():
    model = SudokuMDMForMaskedLM(SudokuMDMConfig(box_rows=2, box_cols=2, hidden_size=16, num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(SudokuInputError, match=r"takes \(batch_size, 19\) tokens"):
        model(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match="mask_token_id=3"):
        SudokuMDMConfig(box_rows=2, box_cols=2, mask_token_id=3)


@pytest.mark.parametrize("offset", [0, 1])
def test_recipe_rejects_an_eval_seed_used_in_training(offset):
    from prism_hf.tasks.sudoku import get_recipe

    with pytest.raises(SudokuInputError, match=r"eval_seed=\d+ is a training seed .* never used in training"):
        get_recipe("demo", train_seed=10, eval_seed=10 + offset)
    assert get_recipe("demo", train_seed=10, eval_seed=12).eval_seed == 12


def test_recipe_rejects_a_negative_proposal_temperature():
    from prism_hf.tasks.sudoku import get_recipe

    with pytest.raises(SudokuInputError, match=r"proposal_temperature=-1.0 is not valid; use 0 \(greedy proposals\)"):
        get_recipe("demo", proposal_temperature=-1.0)
    assert get_recipe("demo", proposal_temperature=0.0).proposal_temperature == 0.0


def _tiny_backbone():
    torch.manual_seed(0)
    return SudokuMDMForMaskedLM(SudokuMDMConfig(box_rows=2, box_cols=2, hidden_size=16, num_hidden_layers=1, num_attention_heads=2))


def test_proposal_error_rates_bins_and_a_uniform_proposal_model():
    from prism_hf.tasks.sudoku.diagnostics import proposal_error_rates

    model = _tiny_backbone()
    rates = proposal_error_rates(model, temperatures=[1.0, 1e4], num_grids=600, seed=5, bins=[(1, 4), (5, None)])
    assert rates["bins"] == [[1, 4], [5, 16]]
    assert all(n > 0 for n in rates["num_masked_cells"])
    # At a huge temperature the proposal is uniform over the 5 tokens other than the mask (4 digits and the row
    # separator), so 4 in 5 are wrong, whatever the grid.
    for rate in rates["wrong_rate"][1e4]:
        assert abs(rate - 0.8) < 0.03
    assert model.training  # the model's mode is restored


def test_proposal_error_rates_rejects_bad_arguments():
    from prism_hf.tasks.sudoku.diagnostics import proposal_error_rates

    model = _tiny_backbone()
    with pytest.raises(SudokuInputError, match=r"bins: \(0, 4\) must satisfy 1 <= low <= high <= 16"):
        proposal_error_rates(model, bins=[(0, 4)], num_grids=4)
    with pytest.raises(SudokuInputError, match=r"temperatures=\[-1.0\] must be a non-empty list of values >= 0"):
        proposal_error_rates(model, temperatures=[-1], num_grids=4)
    with pytest.raises(SudokuInputError, match="num_grids=0 must be an int >= 1"):
        proposal_error_rates(model, num_grids=0)
    with pytest.raises(SudokuInputError, match="is not a Sudoku backbone"):
        proposal_error_rates(torch.nn.Linear(2, 2))


def test_proposal_errors_script(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sudoku_proposal_errors.py"
    spec = importlib.util.spec_from_file_location("sudoku_proposal_errors", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _tiny_backbone().save_pretrained(tmp_path / "bb")
    out = tmp_path / "rates.json"
    assert script.main(["--backbone", str(tmp_path / "bb"), "--temperatures", "0", "1", "--num-grids", "50",
                        "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "temperature | 1-4 masked | 5-8 masked | 9-16 masked" in printed
    assert set(json.loads(out.read_text())["wrong_rate"]) == {"0.0", "1.0"}
    with pytest.raises(SystemExit):
        script.main(["--backbone", str(tmp_path / "missing")])
    assert "holds no model (no config.json)" in capsys.readouterr().err


# ----- held-out puzzles: no completion a training grid ----------------------------------------------------
def _completions_oracle(puzzles, train):
    """For each puzzle, whether some completion (enumerated by the solver) is a training grid (a Python set)."""
    seen = {g.tobytes() for g in np.asarray(train, dtype=np.int64)}
    return [any(c.astype(np.int64).tobytes() in seen for c in solve(p, max_solutions=10**6)) for p in puzzles]


def test_grid_index_membership_matches_a_python_set():
    from prism_hf.tasks.sudoku import GridIndex

    train = generate_solved_grids(400, 4, seed=1)  # 4x4 has 288 grids: many duplicates
    queries = generate_solved_grids(300, 4, seed=2)
    index = GridIndex(train)
    expected = {g.tobytes() for g in train}
    assert len(index) == len(expected)
    assert index.contains(queries).tolist() == [q.tobytes() in expected for q in queries]
    assert index.contains(train).all()


def test_grid_index_stays_exact_when_every_hash_collides(monkeypatch):
    from prism_hf.tasks.sudoku import GridIndex, heldout

    monkeypatch.setattr(heldout, "_row_hashes", lambda flat, chunk=0: np.zeros(len(flat), dtype=np.uint64))
    train = generate_solved_grids(40, 6, seed=1)
    queries = np.concatenate([train[:5], generate_solved_grids(20, 6, seed=9)])
    expected = {g.tobytes() for g in train}
    assert GridIndex(train).contains(queries).tolist() == [q.tobytes() in expected for q in queries]


def test_grid_index_rejects_another_shape():
    from prism_hf.tasks.sudoku import GridIndex

    with pytest.raises(SudokuInputError, match=r"this index holds \(4, 4\) grids"):
        GridIndex(generate_solved_grids(3, 4, seed=0)).contains(generate_solved_grids(3, 6, seed=0))


def test_training_sources_are_the_grids_the_trainers_get():
    from prism_hf.tasks.sudoku import get_recipe
    from prism_hf.tasks.sudoku.heldout import finetuning_source, pretraining_source

    recipe = get_recipe("tiny", train_seed=5)
    tok = SudokuTokenizer(recipe.spec)
    for source, seed in ((pretraining_source(recipe), 5), (finetuning_source(recipe), 6)):
        assert source.seed == seed
        dataset = build_training_dataset(source.num_grids, recipe.spec, seed=source.seed, pool_size=source.pool_size)
        assert np.array_equal(tok.decode(dataset[:]["input_ids"].numpy()), source.grids())


def test_held_out_puzzles_share_no_completion_with_training():
    from prism_hf.tasks.sudoku import get_recipe, held_out_puzzles, training_overlap
    from prism_hf.tasks.sudoku.heldout import candidate_puzzles, finetuning_source, pretraining_source, training_grids

    # 4x4 with 96 training grids: a plain draw from the eval seed overlaps training (a third of all 288 grids).
    recipe = get_recipe("tiny", num_eval_puzzles=30, num_blanks=(7, 9))
    train = training_grids([pretraining_source(recipe), finetuning_source(recipe)])
    held = held_out_puzzles(recipe)
    assert held.puzzles.shape == held.solutions.shape == (30, 4, 4)
    assert is_valid_solution(held.solutions, puzzles=held.puzzles).all()
    assert not any(_completions_oracle(held.puzzles, train))
    assert training_overlap(held.puzzles, train, solutions=held.solutions) == {
        "num_puzzles": 30, "num_training_grids": len(train), "puzzles_with_a_training_completion": 0,
        "training_grids_fitting_givens": 0, "solutions_in_training": 0,
    }
    report = held.report
    rejected = report["num_rejected_solution_in_training"] + report["num_rejected_completion_in_training"]
    assert rejected > 0 and report["num_candidates"] >= 30 + rejected
    assert report["num_training_grids"] == len(train)
    # Same recipe, same puzzles.
    assert np.array_equal(held_out_puzzles(recipe).puzzles, held.puzzles)
    # The audit counts what the solver-based oracle finds on the plain draw.
    plain, plain_solutions = candidate_puzzles(recipe, recipe.eval_seed, 0)
    oracle = _completions_oracle(plain, train)
    audit = training_overlap(plain, train, solutions=plain_solutions)
    assert audit["puzzles_with_a_training_completion"] == sum(oracle) > 0
    seen = {g.tobytes() for g in train.astype(np.int64)}
    assert audit["solutions_in_training"] == sum(s.astype(np.int64).tobytes() in seen for s in plain_solutions)


def test_held_out_puzzles_with_several_solutions_check_every_completion():
    from prism_hf.tasks.sudoku import get_recipe, held_out_puzzles
    from prism_hf.tasks.sudoku.heldout import finetuning_source, pretraining_source, training_grids

    recipe = get_recipe("tiny", num_eval_puzzles=20, num_blanks=(10, 11))  # several completions per puzzle
    held = held_out_puzzles(recipe)
    assert held.report["completions_per_puzzle"]["max"] > 1
    assert held.report["num_rejected_completion_in_training"] > 0  # rejected for a completion other than its own solution
    assert not any(_completions_oracle(held.puzzles, training_grids([pretraining_source(recipe), finetuning_source(recipe)])))


def test_held_out_puzzles_say_when_training_covers_the_grid_space():
    from prism_hf.tasks.sudoku import get_recipe, held_out_puzzles

    recipe = get_recipe("tiny", pretrain_steps=40, pretrain_batch_size=64)  # 2560 draws: every 4x4 grid
    with pytest.raises(SudokuInputError, match=r"num_eval_puzzles=12: only 0 of 36 candidate 4x4 puzzles have no training "
                                               r"grid among their completions .* Ask for fewer puzzles"):
        held_out_puzzles(recipe, max_rounds=3)
    with pytest.raises(SudokuInputError, match="max_completions=0 is not valid; use an int >= 1"):
        held_out_puzzles(recipe, max_completions=0)


def test_held_out_puzzles_drop_candidates_with_too_many_completions():
    from prism_hf.tasks.sudoku import get_recipe, held_out_puzzles

    recipe = get_recipe("tiny", num_eval_puzzles=4, num_blanks=(10, 11))
    held = held_out_puzzles(recipe, max_completions=2)
    assert held.report["num_rejected_too_many_completions"] > 0
    assert all(count_solutions(p, limit=3) == 1 for p in held.puzzles)


# ----- recipes: every field checked on construction -------------------------------------------------------
@pytest.mark.parametrize("field,value,message", [
    ("num_eval_puzzles", 0, r"num_eval_puzzles=0 is not valid; use an int >= 1"),
    ("eval_batch_size", 0, r"eval_batch_size=0 is not valid; use an int >= 1"),
    ("num_remask", -1, r"num_remask=-1 is not valid; use an int >= 0"),
    ("num_remask", True, r"num_remask=True is not valid; use an int >= 0"),
    ("pretrain_steps", 2.5, r"pretrain_steps=2.5 is not valid; use an int >= 1"),
    ("finetune_learning_rate", float("nan"), r"finetune_learning_rate=nan is not valid; use a finite float > 0"),
    ("mdm_loss_weight", -1.0, r"mdm_loss_weight=-1.0 is not valid"),
    ("proposal_temperature", float("inf"), r"proposal_temperature=inf is not valid"),
    ("step_on", 1.5, r"step_on=1.5 is not valid; use a float in \[0, 1\]"),
    ("unmasking", "best", r"unmasking='best' is not valid; choose one of \['confidence', 'margin', 'entropy', 'random'\]"),
    ("head", "cnn", r"head='cnn' is not a quality head type; choose one of \['linear', 'mlp', 'transformer'\]"),
    ("num_attention_heads", 3, r"hidden_size=64 is not a multiple of num_attention_heads=3"),
    ("prism_loop_steps", 12, r"prism_loop_steps=12 leaves no schedule step in nfe=12"),
    ("num_blanks", (5, 2), r"num_blanks=\(5, 2\) must satisfy 1 <= low <= high <= 36"),
    ("unique_puzzles", "yes", r"unique_puzzles='yes' is not valid; use True or False"),
])
def test_recipe_rejects_a_bad_field(field, value, message):
    from prism_hf.tasks.sudoku import get_recipe

    with pytest.raises(SudokuInputError, match=message):
        get_recipe("demo", **{field: value})


def test_recipe_validate_catches_a_field_changed_in_place_and_load_a_corrupt_file(tmp_path):
    from prism_hf.tasks.sudoku import SudokuRecipe, get_recipe

    recipe = get_recipe("tiny")
    recipe.eval_batch_size = 0
    with pytest.raises(SudokuInputError, match="eval_batch_size=0 is not valid"):
        recipe.validate()
    (tmp_path / "sudoku_recipe.json").write_text('{"size": 4,')
    with pytest.raises(SudokuInputError, match=r"sudoku_recipe.json is not valid JSON .*rerun the stage that wrote it"):
        SudokuRecipe.load(str(tmp_path))
    (tmp_path / "sudoku_recipe.json").write_text("[1, 2]")
    with pytest.raises(SudokuInputError, match="holds a list, not a recipe object"):
        SudokuRecipe.load(str(tmp_path))


# ----- puzzle files: byte-order mark, encodings, fields -----------------------------------------------------
def test_puzzle_file_with_a_utf8_byte_order_mark_loads(tmp_path):
    grids = make_puzzles(generate_solved_grids(3, 6, seed=0), 20, seed=0)
    plain = tmp_path / "plain.csv"
    save_puzzles_csv(plain, grids)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes().replace(b"\n", b"\r\n"))  # as a Windows editor saves it
    assert np.array_equal(load_puzzles_csv(bom), grids)


def test_puzzle_file_that_is_not_text_or_has_a_bad_field(tmp_path):
    binary = tmp_path / "weights.csv"
    binary.write_bytes(b"\x80\x81\xfe\x00" * 10)
    with pytest.raises(SudokuInputError, match=r"is not a UTF-8 text file .* one comma-separated row of integers per line"):
        load_puzzles_csv(binary)
    tok = SudokuTokenizer(4)
    row = tok.encode(SOLVED_4).tolist()
    bad = list(map(str, row))
    bad[2] = "x"
    path = tmp_path / "bad_field.csv"
    path.write_text(",".join(map(str, row)) + "\n\n" + ",".join(bad) + "\n")  # line 2 is blank
    with pytest.raises(SudokuInputError, match=r"line 3: field 3 is 'x'; every field must be an integer token id"):
        load_puzzles_csv(path)
    row[3] = 9
    path.write_text("\n" + ",".join(map(str, row)) + "\n")
    with pytest.raises(SudokuInputError, match=r"line 2: digit 9 at index 3 is out of range"):
        load_puzzles_csv(path)
