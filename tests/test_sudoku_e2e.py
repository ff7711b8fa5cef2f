"""Sudoku end to end on the `tiny` recipe (seconds): the CLI's demo, evaluate, resume, and bad input."""

import json
import os

import numpy as np
import pytest

from prism_hf.tasks.sudoku import SudokuInputError, generate_solved_grids, make_puzzles, save_puzzles_csv
from prism_hf.tasks.sudoku.cli import main
from prism_hf.tasks.sudoku.evaluation import METHODS, auroc, calibration, check_nfe


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sudoku_demo")
    assert main(["demo", "--recipe", "tiny", "--output-dir", str(out), "--no-progress"]) == 0
    return out


def test_demo_leaves_checkpoints_results_and_figures(demo_dir, capsys):
    for name in ("backbone/config.json", "prism/config.json", "prism/model.safetensors", "results.json",
                 "quality_grids.png", "reliability.png", "eval_puzzles.csv"):
        assert (demo_dir / name).is_file(), name
    result = json.loads((demo_dir / "results.json").read_text())
    assert result["grid_size"] == 4
    assert np.isnan(result["quality_auroc"]) or 0.0 <= result["quality_auroc"] <= 1.0
    assert [r["method"] for r in result["records"]] == list(METHODS)
    for record in result["records"]:
        assert set(record) >= {"method", "nfe", "success_rate", "num_puzzles"}
        assert record["nfe"] == 4 and record["num_puzzles"] == 12
    assert (demo_dir / "quality_grids.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_rerun_skips_finished_stages(demo_dir, capsys):
    weights = [demo_dir / "backbone" / "model.safetensors", demo_dir / "prism" / "model.safetensors"]
    before = [w.stat().st_mtime_ns for w in weights]
    cached = sorted(os.listdir(demo_dir / "eval_cache"))
    assert len(cached) == len(METHODS)
    assert main(["demo", "--recipe", "tiny", "--output-dir", str(demo_dir), "--no-progress"]) == 0
    assert [w.stat().st_mtime_ns for w in weights] == before
    assert sorted(os.listdir(demo_dir / "eval_cache")) == cached
    assert "prism" in capsys.readouterr().out


def test_evaluate_on_a_puzzle_file_with_methods_and_several_nfe(demo_dir, tmp_path, capsys):
    output = tmp_path / "r.json"
    code = main(["evaluate", "--checkpoint", str(demo_dir / "prism"), "--puzzles", str(demo_dir / "eval_puzzles.csv"),
                 "--output", str(output), "--methods", "prism", "vanilla-random", "--nfe", "2", "3", "--no-progress"])
    assert code == 0
    result = json.loads(output.read_text())
    assert [(r["method"], r["nfe"]) for r in result["records"]] == [
        ("prism", 2), ("vanilla-random", 2), ("prism", 3), ("vanilla-random", 3)
    ]
    assert result["grid_size"] == 4 and "quality_auroc" in result
    assert "prism" in capsys.readouterr().out


def test_evaluate_generated_puzzles_unique_or_not_and_labels_wrong_cells(demo_dir, tmp_path):
    from prism_hf.tasks.sudoku import count_solutions, load_puzzles_csv, wrong_cells

    for flag, path in (("--unique-puzzles", "u.json"), ("--no-unique-puzzles", "m.json")):
        code = main(["evaluate", "--checkpoint", str(demo_dir / "prism"), "--output", str(tmp_path / path), "--methods",
                     "prism", "--num-eval-puzzles", "8", "--num-blanks", "9", "10", flag, "--no-progress"])
        assert code == 0
    unique, many = (json.loads((tmp_path / p).read_text()) for p in ("u.json", "m.json"))
    for result in (unique, many):
        assert result["wrong_cell_label"] == "nearest_completion" and result["wrong_cell_label_fallbacks"] == 0
        example = result["quality_example"]
        puzzles, grids = np.array(example["puzzles"]), np.array(example["grids"])
        # The stored wrong cells are the ones the label function gives, never a given.
        assert np.array_equal(np.array(example["wrong"]), wrong_cells(puzzles, grids)[0])
        assert not np.array(example["wrong"])[puzzles != 0].any()
    assert all(count_solutions(p, limit=2) == 1 for p in np.array(unique["quality_example"]["puzzles"]))
    assert any(count_solutions(p, limit=2) > 1 for p in np.array(many["quality_example"]["puzzles"]))
    assert load_puzzles_csv(str(demo_dir / "eval_puzzles.csv")).shape[1:] == (4, 4)


def test_evaluate_rejects_a_checkpoint_for_another_grid_size(demo_dir, tmp_path, capsys):
    puzzles = tmp_path / "nine.csv"
    save_puzzles_csv(puzzles, make_puzzles(generate_solved_grids(3, 9, seed=0), 40, seed=0))
    code = main(["evaluate", "--checkpoint", str(demo_dir / "prism"), "--puzzles", str(puzzles),
                 "--output", str(tmp_path / "r.json"), "--no-progress"])
    assert code == 2
    assert "is a 4x4 Sudoku model but puzzles=" in capsys.readouterr().err


def test_finetune_takes_recipe_overrides(demo_dir, tmp_path, monkeypatch):
    import prism_hf.trainer

    seen = {}

    class Recording(prism_hf.trainer.PrismTrainer):
        def __init__(self, *a, **kw):
            seen["args"] = kw["args"]
            super().__init__(*a, **kw)

    monkeypatch.setattr(prism_hf.trainer, "PrismTrainer", Recording)
    out = tmp_path / "p"
    code = main(["finetune", "--backbone", str(demo_dir / "backbone"), "--output-dir", str(out), "--recipe", "tiny",
                 "--num-proposals", "2", "--proposal-temperature", "2.5", "--head", "linear", "--finetune-steps", "1",
                 "--no-progress"])
    assert code == 0
    recipe = json.loads((out / "sudoku_recipe.json").read_text())
    assert recipe["num_proposals"] == 2 and recipe["head"] == "linear" and recipe["finetune_steps"] == 1
    assert recipe["proposal_temperature"] == 2.5
    args = seen["args"]
    assert (args.num_proposals, args.proposal_temperature, args.num_update_tokens, args.mdm_loss_weight) == (2, 2.5, 4, 5.0)
    assert json.loads((out / "config.json").read_text())["head_type"] == "linear"


def test_finetune_rejects_a_backbone_for_another_grid_size(demo_dir, tmp_path, capsys):
    code = main(["finetune", "--backbone", str(demo_dir / "backbone"), "--output-dir", str(tmp_path / "p"),
                 "--recipe", "tiny", "--size", "6", "--no-progress"])
    assert code == 2
    assert "is a 4x4 Sudoku model" in capsys.readouterr().err


def test_nfe_below_one_is_rejected(demo_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--checkpoint", str(demo_dir / "prism"), "--nfe", "0"])
    assert exc.value.code == 2
    assert "--nfe 0 is not valid" in capsys.readouterr().err
    with pytest.raises(SudokuInputError, match="nfe=0 is not valid"):
        check_nfe([4, 0])


def test_grid_size_not_a_product_on_the_command_line(tmp_path, capsys):
    assert main(["pretrain", "--recipe", "tiny", "--size", "7", "--output-dir", str(tmp_path)]) == 2
    assert "size=7 is not a product" in capsys.readouterr().err


def test_auroc_and_calibration():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auroc([1, 1, 1], [0, 1, 1]) == 0.5
    cal = calibration(np.array([0.05, 0.95, 0.95, 0.55]), np.array([0, 1, 0, 1]), num_bins=10)
    assert cal["count"][0] == 1 and cal["count"][9] == 2 and cal["fraction_correct"][9] == 0.5
    assert abs(cal["ece"] - (0.05 + 2 * 0.45 + 0.45) / 4) < 1e-9


def test_prism_hf_entry_point_dispatches_sudoku(demo_dir, tmp_path, capsys):
    from prism_hf.cli import main as prism_hf_main

    output = tmp_path / "r.json"
    code = prism_hf_main(["sudoku", "evaluate", "--checkpoint", str(demo_dir / "prism"), "--output", str(output),
                          "--methods", "vanilla-margin", "--no-progress"])
    assert code == 0
    assert json.loads(output.read_text())["records"][0]["method"] == "vanilla-margin"
    with pytest.raises(SystemExit):
        prism_hf_main(["sudoku", "demo", "--help"])
    assert "--output-dir" in capsys.readouterr().out
