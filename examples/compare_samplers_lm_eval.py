"""Run one lm-evaluation-harness task with several samplers on the same checkpoint and print one table.

The default compares ``remasking=none`` (vanilla MDM), ``remdm_conf`` (ReMDM-conf) and ``prism`` at the same step
count; each row shows the task's metric, the NFE per request and the sampler settings, all read from lm-eval's
results (``results["config"]["prism"]``, written by ``prism_hf.evaluation.lm_eval_model.PrismLM``).

A PRISM checkpoint on a harness task (any rule without a head also runs on a plain backbone):

    python examples/compare_samplers_lm_eval.py --pretrained runs/prism-llada-code --tasks gsm8k \\
        --model_args gen_length=256,block_length=32,num_inference_steps=128 --batch_size 8 --limit 200 \\
        --sampler_args "prism:remask_schedule=budget,remask_budget=12"

Named methods instead of rules (the preset table of the Sudoku, code and text evaluations,
``prism_hf.sampling.presets``): ``--task_settings`` holds the task's unmasking rule and PRISM's remask counts, and
each method takes the ones it uses (PRISM and the same-count baselines ``confidence-remask`` / ``random-remask`` take
the counts, a ``vanilla-*`` baseline its own unmasking rule):

    python examples/compare_samplers_lm_eval.py --pretrained runs/prism-llada-code --tasks gsm8k \\
        --model_args gen_length=256,block_length=32,num_inference_steps=128 --batch_size 8 --limit 200 \\
        --methods vanilla-confidence,remdm-conf,confidence-remask,prism \\
        --task_settings unmasking=confidence,remask_schedule=budget,remask_budget=12

Offline demo (no argument): writes a local task (sort six digits), trains a tiny LLaDA-shaped model and its PRISM
head on that task for a few seconds on the CPU, and compares the samplers on held-out examples:

    python examples/compare_samplers_lm_eval.py
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

DEMO_TASK = "prism_demo_sort"
DEFAULT_SAMPLERS = ("none", "remdm_conf", "prism")
#: Settings of the three samplers in the demo (same steps for all; the other knobs keep the scheduler's defaults).
DEMO_SAMPLER_ARGS = {"prism": "remask_schedule=fixed,num_remask=1"}
#: The same counts as task settings, for ``--methods`` (PRISM and the same-count baselines take them).
DEMO_TASK_SETTINGS = {"remask_schedule": "fixed", "num_remask": "1"}


# ----- the offline demo: a local task and a tiny model trained on it ----------------------------------------------
def _sort_example(rng: random.Random, digits: int = 6) -> Dict[str, str]:
    question = "".join(rng.choice("0123456789") for _ in range(digits))
    return {"question": question, "answer": "".join(sorted(question))}


def write_demo_task(folder: Path, num_docs: int = 64, seed: int = 1234) -> Path:
    """A generate_until task over a local jsonl (exact match of the sorted digits): ``folder/sort.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with open(folder / "sort.jsonl", "w") as f:
        for _ in range(num_docs):
            f.write(json.dumps(_sort_example(rng)) + "\n")
    (folder / "sort.yaml").write_text(
        f"task: {DEMO_TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / 'sort.jsonl'}\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: \"sort {{question}}:\"\ndoc_to_target: answer\n"
        "target_delimiter: \"\"\ngeneration_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 6\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    return folder


def train_demo_model(output: Path, steps: int = 600, batch_size: int = 64, seed: int = 0) -> Path:
    """Train a tiny PRISM model (backbone and quality head together, PRISM loss with the MDM term) to sort digits,
    and save it with its character tokenizer. Training examples come from another seed than the task's."""
    from prism_hf import PrismForMaskedDiffusion
    from prism_hf.training.losses import prism_step
    from prism_hf.testing import tiny_char_tokenizer, tiny_llada

    torch.manual_seed(seed)
    rng = random.Random(seed + 1)
    tokenizer = tiny_char_tokenizer()
    backbone = tiny_llada(vocab_size=len(tokenizer), d_model=64, n_layers=2, seed=seed,
                          mask_token_id=tokenizer.mask_token_id)
    model = PrismForMaskedDiffusion.from_backbone(backbone, mask_token_id=tokenizer.mask_token_id, head_type="mlp")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small gains nothing from threads, and loses much on a busy machine
    for _ in range(steps):
        rows = []
        for _ in range(batch_size):
            example = _sort_example(rng)
            prompt = tokenizer.encode(f"sort {example['question']}:")
            rows.append((prompt, tokenizer.encode(example["answer"])))
        ids = torch.tensor([p + a for p, a in rows])
        maskable = torch.zeros_like(ids, dtype=torch.bool)
        maskable[:, len(rows[0][0]):] = True  # every prompt has the same length
        out = prism_step(model, ids, maskable, tokenizer.mask_token_id, num_update_tokens=2, mdm_loss_weight=1.0,
                         generator=generator)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


# ----- the comparison -----------------------------------------------------------------------------------------------
def _parse_sampler_args(items: List[str]) -> Dict[str, str]:
    parsed = {}
    for item in items:
        name, sep, args = item.partition(":")
        if not sep:
            raise ValueError(f"--sampler_args {item!r} must read 'REMASKING:key=value,...' (e.g. 'prism:num_remask=2').")
        parsed[name] = args
    return parsed


def _main_metric(task_results: Dict[str, Any]) -> tuple:
    for key, value in task_results.items():
        if "," in key and "stderr" not in key and isinstance(value, (int, float)):  # "metric,filter" keys
            return key.split(",")[0], float(value)
    raise ValueError(f"No metric in the task results {sorted(task_results)}.")


def _sampler_summary(info: Dict[str, Any]) -> str:
    """The scheduler fields that differ from PrismScheduler's defaults, and the generation arguments."""
    from prism_hf.sampling.scheduling_prism import PrismScheduler

    defaults = PrismScheduler().config
    changed = {k: v for k, v in info["sampler"].items() if k != "remasking" and defaults.get(k, v) != v}
    generation = {k: v for k, v in info["generation"].items() if v is not None and k != "max_length"}
    return ", ".join(f"{k}={v}" for k, v in {**changed, **generation}.items()) or "defaults"


def _parse_task_settings(text: str) -> Dict[str, str]:
    """``"unmasking=random,num_remask=2"`` -> ``{"unmasking": "random", "num_remask": "2"}``, keys checked against
    the task sampler fields of ``prism_hf.sampling.presets``."""
    from prism_hf.sampling.presets import TASK_SAMPLER_FIELDS

    settings = {}
    for item in (part for part in text.split(",") if part):
        key, sep, value = item.partition("=")
        if not sep or key not in TASK_SAMPLER_FIELDS:
            raise ValueError(f"--task_settings {item!r} must read KEY=VALUE with KEY one of {list(TASK_SAMPLER_FIELDS)}.")
        settings[key] = value
    return settings


def _check_no_key_twice(model_args: str, task_settings: Dict[str, str], sampler_args: Dict[str, str]) -> None:
    """A --task_settings key also in --model_args or in a --sampler_args would reach lm-eval twice, and its parser keeps
    the last value silently (so a method that takes the setting would run with the other value): refuse it. (A
    --sampler_args key may repeat a --model_args one: it is that sampler's own value, given last.)"""
    for name, given in (("--model_args", model_args), *((f"--sampler_args {rule}:...", a) for rule, a in sampler_args.items())):
        twice = sorted(set(task_settings) & {item.partition("=")[0] for item in given.split(",") if item})
        if twice:
            raise ValueError(f"{twice} given in both --task_settings and {name}; give each setting once.")


def method_model_args(method: str, task_settings: Dict[str, str]) -> str:
    """``method=NAME`` and the task settings the method uses (``PrismLM`` refuses one it would not use)."""
    from prism_hf.sampling.presets import METHOD_PRESETS

    used = METHOD_PRESETS.lookup(method).scheduler_kwargs(task_settings)
    return ",".join([f"method={method}"] + [f"{k}={v}" for k, v in task_settings.items() if used.get(k) == v])


def compare_samplers(
    pretrained: str,
    task: str,
    include_path: Optional[str] = None,
    samplers=DEFAULT_SAMPLERS,
    model_args: str = "",
    sampler_args: Optional[Dict[str, str]] = None,
    limit: Optional[float] = None,
    batch_size: int = 8,
    device: Optional[str] = None,
    include_defaults: bool = True,
    methods: Optional[List[str]] = None,
    task_settings: Optional[Dict[str, str]] = None,
) -> List[Dict[str, Any]]:
    """Evaluate ``task`` once per remasking rule in ``samplers`` or, when ``methods`` is given, once per named method
    (each with the ``task_settings`` it uses); one row per sampler (metric, NFE, settings)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import prism_hf.evaluation.lm_eval_model  # noqa: F401  (registers "prism" when the .pth hook is not installed)

    if methods is not None:
        runs = [(method, method_model_args(method, task_settings or {})) for method in methods]
    else:
        runs = [(remasking, f"remasking={remasking}") for remasking in samplers]
    task_manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
    rows = []
    for name, sampler in runs:
        args = ",".join(a for a in (f"pretrained={pretrained}", sampler, model_args,
                                    (sampler_args or {}).get(name, "")) if a)
        results = simple_evaluate(model="prism", model_args=args, tasks=[task], task_manager=task_manager,
                                  limit=limit, batch_size=batch_size, device=device)
        info = results["config"]["prism"]
        metric, value = _main_metric(results["results"][task])
        nfe = {kind: counts["nfe_per_request"] for kind, counts in info["nfe"].items()}
        rows.append({"remasking": info["sampler"]["remasking"], "method": info.get("method"), "metric": metric,
                     "value": value, "nfe_per_request": nfe, "num_docs": results["n-samples"][task]["effective"],
                     "settings": _sampler_summary(info), "sampler": info["sampler"], "generation": info["generation"]})
    return rows


def format_table(rows: List[Dict[str, Any]], task: str) -> str:
    metric = rows[0]["metric"] if rows else "metric"
    by_method = any(row.get("method") for row in rows)
    lines = [f"task: {task} ({rows[0]['num_docs'] if rows else 0} documents)",
             f"| {'method' if by_method else 'remasking'} | {metric} | NFE / request | sampler settings |",
             "|---|---:|---:|---|"]
    for row in rows:
        nfe = ", ".join(f"{v:.1f}" if len(row["nfe_per_request"]) == 1 else f"{k} {v:.1f}"
                        for k, v in row["nfe_per_request"].items())
        settings = row["settings"] if not by_method else f"remasking={row['remasking']}, {row['settings']}"
        lines.append(f"| {row['method'] if by_method else row['remasking']} | {row['value']:.3f} | {nfe} | {settings} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", help="PRISM checkpoint or backbone; omit for the offline demo.")
    parser.add_argument("--tasks", help="One lm-eval task (the demo's own by default).")
    parser.add_argument("--include_path", help="Folder of extra task YAMLs.")
    parser.add_argument("--samplers", default=None, help=f"Remasking rules to compare (default: {','.join(DEFAULT_SAMPLERS)}).")
    parser.add_argument("--methods", default=None, help="Named methods to compare instead of rules (prism_hf.sampling.presets: "
                        "prism, vanilla-confidence, remdm-conf, confidence-remask, ...).")
    parser.add_argument("--task_settings", default="", help="With --methods: the task's unmasking rule and PRISM's remask "
                        "counts, e.g. unmasking=random,num_remask=1; each method takes those it uses.")
    parser.add_argument("--model_args", default="", help="Shared --model_args, e.g. gen_length=256,num_inference_steps=128.")
    parser.add_argument("--sampler_args", action="append", default=[], help="'RULE:key=value,...' for one sampler (or "
                        "METHOD:... with --methods); a key also in --model_args takes this value for that sampler.")
    parser.add_argument("--limit", type=float, help="Documents per task (count or fraction).")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default=None)
    parser.add_argument("--workdir", type=Path, help="Demo: where the task and model go (default: a temporary folder).")
    parser.add_argument("--demo_train_steps", type=int, default=600, help="Demo: training steps of the tiny model.")
    parser.add_argument("--output", type=Path, help="Also write the rows as JSON here.")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    if args.methods is not None and args.samplers is not None:
        parser.error("--methods and --samplers: pass one (a method names its own remasking rule).")
    if args.task_settings and args.methods is None:
        parser.error("--task_settings goes with --methods; with --samplers put settings in --model_args / --sampler_args.")
    try:
        sampler_args = _parse_sampler_args(args.sampler_args)
        task_settings = _parse_task_settings(args.task_settings)
        methods = None if args.methods is None else [m for m in args.methods.split(",") if m]
        if methods is not None:
            from prism_hf.sampling.presets import METHOD_PRESETS

            for method in methods:
                METHOD_PRESETS.lookup(method)  # an unknown name fails before any training or evaluation
        _check_no_key_twice(args.model_args, task_settings, sampler_args)
    except ValueError as error:
        parser.error(str(error))
    demo = args.pretrained is None
    with tempfile.TemporaryDirectory() as tmp:
        if demo:
            workdir = args.workdir or Path(tmp)
            write_demo_task(workdir / "tasks")
            pretrained = str(train_demo_model(workdir / "model", steps=args.demo_train_steps))
            task, include_path = args.tasks or DEMO_TASK, str(workdir / "tasks")
            model_args = args.model_args or "num_inference_steps=3,mc_num=8"
            if methods is None:
                sampler_args = {**DEMO_SAMPLER_ARGS, **sampler_args}
            else:  # the demo's PRISM counts as task settings, for PRISM and the same-count baselines
                task_settings = {**DEMO_TASK_SETTINGS, **task_settings}
        else:
            if not args.tasks or "," in args.tasks:
                parser.error("--tasks takes exactly one task when --pretrained is given.")
            pretrained, task, include_path, model_args = args.pretrained, args.tasks, args.include_path, args.model_args
        rows = compare_samplers(
            pretrained, task, include_path=include_path,
            samplers=[s for s in (args.samplers or ",".join(DEFAULT_SAMPLERS)).split(",") if s],
            model_args=model_args, sampler_args=sampler_args, limit=args.limit, batch_size=args.batch_size,
            device=args.device, include_defaults=not demo, methods=methods, task_settings=task_settings,
        )
    print(format_table(rows, task))
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2, default=str))
    return rows


if __name__ == "__main__":
    main()
