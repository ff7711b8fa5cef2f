"""`code_eval_sandboxed`: pass@k by executing candidate programs in prism_hf's process sandbox.

Load it offline by path: `evaluate.load(prism_hf.metrics.CODE_EVAL_SANDBOXED)`.
"""

import datasets
import evaluate

from prism_hf.evaluation import Sandbox, pass_at_k


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

_DESCRIPTION = """\
pass@k (the unbiased estimator of Chen et al. 2021) of candidate programs, each executed against its task's tests in a
separate process with a wall-clock limit, a memory limit, a process limit, no network, a temporary working directory
and nothing left running afterwards (see prism_hf's docs/code_eval.md for what this does and does not protect
against). Same inputs as the `code_eval` metric; unlike it, programs never run inside the evaluating process.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[str]]`): candidate programs per task.
    references (`list[str]`): test code per task; candidate j of task i passes when
        `predictions[i][j] + "\\n" + references[i]` exits with status 0 within the limits.
    k (`list[int]`, defaults to `[1]`): the values of k; every task needs at least max(k) candidates.
    num_workers (`int`, defaults to 4): programs executed at a time.
    timeout (`float`, defaults to 3.0): wall-clock seconds per program.
    memory_limit_mb (`int`, defaults to 1024): address-space limit per process, in MiB.
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


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CodeEvalSandboxed(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
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
    ):
        sandbox = Sandbox(timeout=timeout, memory_limit_mb=memory_limit_mb, max_processes=max_processes)
        result = pass_at_k(
            predictions, references, k=k, task_ids=task_ids, sandbox=sandbox, num_workers=num_workers
        )
        outcomes = [[vars(outcome).copy() for outcome in rows] for rows in result.outcomes]
        return result.pass_at_k, outcomes
