"""Decoding speed: key/value caching, threshold parallel decoding and quality-guided decoding, side by side in one run.

A LLaDA-shaped native model (`prism_hf.models.llada`) with random weights; batch 8, prompt 32, gen_length 256, block 32,
128 steps (the issue's shape; change it with the flags). Two weight settings:

* ``random``: the random model as built (near-uniform posteriors: threshold decoding finds few confident tokens);
* ``sharpened``: its output projection scaled up, so that the posterior is confident, as a trained model's is.

For each sampler it reports the wall time (median of ``--repeats`` interleaved runs), NFE, generated tokens per second,
tokens processed per forward, and token agreement with the uncached vanilla sampler (share of generated tokens that are
the same). Rows:

* uncached vanilla (LLaDA's low-confidence sampler), prefix and dual cache, threshold parallel decoding;
* PRISM with each cache mode (a random quality head: speed only), quality-guided decoding;
* Fast-dLLM's own published ``generate`` / ``generate_with_prefix_cache`` / ``generate_with_dual_cache`` on the same
  weights (the published LLaDA model code with the weights loaded by name), and ours at the same batch, when
  ``../shared/reference_models`` is present (else the rows are skipped with a message). Fast-dLLM's functions take one
  prompt (batch 1), so that comparison runs at batch 1. Its SDPA is called directly instead of through
  ``torch.compile`` (compiling on a CPU costs minutes and computes the same attention).

Then the ratios the targets are about: dual cache vs uncached at equal steps (target >= 3x faster), PRISM dual vs
vanilla dual (<= 1.05), our dual + threshold vs Fast-dLLM's dual + threshold (<= 1.0).

    python benchmarks/bench_decoding.py                      # the issue's shape (~10 min on a 2-core CPU)
    python benchmarks/bench_decoding.py --quick              # a smaller shape, for a smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from prism_hf import PrismForMaskedDiffusion
from prism_hf.sampling.pipeline_prism import PrismPipeline
from prism_hf.sampling.scheduling_prism import PrismScheduler
from prism_hf.testing import tiny_llada

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = ROOT.parent / "shared" / "reference_models"


def build_model(args, sharpen: float) -> PrismForMaskedDiffusion:
    backbone = tiny_llada(
        vocab_size=args.vocab, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, seed=0,
        max_sequence_length=4096, mlp_hidden_size=args.d_model * 8 // 3,
    )
    with torch.no_grad():
        backbone.get_output_embeddings().weight.mul_(sharpen)
    model = PrismForMaskedDiffusion.from_backbone(backbone).eval()
    with torch.no_grad():
        for p in model.quality_head.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return model


SAMPLERS = {
    # name: (model kind, scheduler kwargs)
    "vanilla": ("plain", dict(remasking="none")),
    "vanilla + prefix cache": ("plain", dict(remasking="none", kv_cache="prefix")),
    "vanilla + dual cache": ("plain", dict(remasking="none", kv_cache="dual")),
    "threshold 0.9": ("plain", dict(remasking="none", confidence_threshold=0.9)),
    "dual cache + threshold 0.9": ("plain", dict(remasking="none", kv_cache="dual", confidence_threshold=0.9)),
    "vanilla on the PRISM model + dual cache": ("prism", dict(remasking="none", kv_cache="dual")),
    "prism": ("prism", dict(remasking="prism", remask_schedule="budget", remask_budget=6)),
    "prism + prefix cache": ("prism", dict(remasking="prism", remask_schedule="budget", remask_budget=6, kv_cache="prefix")),
    "prism + dual cache": ("prism", dict(remasking="prism", remask_schedule="budget", remask_budget=6, kv_cache="dual")),
    "quality-guided (dual, thr 0.9, q 0.5)": (
        "prism", dict(remasking="prism", num_remask=2, kv_cache="dual", confidence_threshold=0.9, quality_threshold=0.5)
    ),
}


def run_ours(model, kind, scheduler_kwargs, ids, args) -> Dict[str, object]:
    target = model if kind == "prism" else model.backbone
    pipe = PrismPipeline(model=target, scheduler=PrismScheduler(unmasking="confidence", **scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(input_ids=ids, gen_length=args.gen_length, block_length=args.block_length,
               num_inference_steps=args.steps, return_quality=False, output_type="seq")
    return {"sequences": out.sequences, "nfe": out.nfe, "tokens_processed": out.tokens_processed}


def load_fastdllm():
    """Fast-dLLM's published samplers and the published LLaDA model class, imported from ../shared (never copied)."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from reference_models import load_reference_package
    finally:
        sys.path.pop(0)
    package = load_reference_package("llada")
    modeling = sys.modules[f"{package.__name__}.modeling_llada"]
    import torch.nn.functional as F

    def plain_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **_):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)

    modeling.scaled_dot_product_attention = plain_sdpa  # see the module docstring
    # generate.py imports `model.modeling_llada`, its own package layout.
    sys.modules.setdefault("model", package)
    sys.modules.setdefault("model.modeling_llada", modeling)
    spec = importlib.util.spec_from_file_location("fastdllm_generate", REFERENCE_DIR / "fastdllm" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    return package, generate


def reference_backbone(package, native) -> torch.nn.Module:
    config = {k: v for k, v in native.config.to_dict().items() if k in package.LLaDAConfig().to_dict()}
    ref_config = package.LLaDAConfig(**config)
    ref_config.use_cache = False  # transformers 5 drops the field the published code reads
    ref = package.LLaDAModelLM(ref_config).eval()
    result = ref.load_state_dict(native.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"weights do not map onto the published model: {result}")
    return ref


def median_times(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Median wall time of each function over ``repeats`` rounds, the functions interleaved within a round."""
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a == b).float().mean())


def bench_setting(args, sharpen: float, fastdllm) -> Dict[str, dict]:
    model = build_model(args, sharpen)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab - 1, (args.batch, args.prompt), generator=g)
    results: Dict[str, dict] = {}
    fns = {}
    for name, (kind, kwargs) in SAMPLERS.items():
        results[name] = run_ours(model, kind, kwargs, ids, args)  # also a warm-up
        fns[name] = lambda kind=kind, kwargs=kwargs: run_ours(model, kind, kwargs, ids, args)
    if fastdllm is not None:
        package, generate = fastdllm
        ref = reference_backbone(package, model.backbone)
        single = ids[:1]
        mask_id = model.mask_token_id
        fast_kwargs = dict(steps=args.steps, gen_length=args.gen_length, block_length=args.block_length, temperature=0.0,
                           remasking="low_confidence", mask_id=mask_id)
        reference_runs = {
            "Fast-dLLM generate (batch 1)": lambda: generate.generate(ref, single, **fast_kwargs),
            "Fast-dLLM dual cache (batch 1)": lambda: generate.generate_with_dual_cache(ref, single, **fast_kwargs),
            "Fast-dLLM dual cache + threshold 0.9 (batch 1)": lambda: generate.generate_with_dual_cache(
                ref, single, threshold=0.9, **fast_kwargs),
        }
        ours_single = {
            "ours vanilla (batch 1)": dict(remasking="none"),
            "ours dual cache (batch 1)": dict(remasking="none", kv_cache="dual"),
            "ours dual cache + threshold 0.9 (batch 1)": dict(remasking="none", kv_cache="dual", confidence_threshold=0.9),
        }
        with torch.no_grad():
            for name, fn in reference_runs.items():
                x, nfe = fn()
                results[name] = {"sequences": x[:, args.prompt:], "nfe": nfe, "tokens_processed": None}
                fns[name] = fn
        for name, kwargs in ours_single.items():
            results[name] = run_ours(model, "plain", kwargs, single, args)
            fns[name] = lambda kwargs=kwargs: run_ours(model, "plain", kwargs, single, args)
    elif fastdllm is None:
        print(f"  (Fast-dLLM rows skipped: the published code is not at {REFERENCE_DIR})")
    times = median_times(fns, args.repeats)
    base = results["vanilla"]["sequences"]
    base_single = results.get("ours vanilla (batch 1)", {}).get("sequences")
    same_as_fastdllm = {}
    for ours, theirs in (("ours vanilla (batch 1)", "Fast-dLLM generate (batch 1)"),
                         ("ours dual cache (batch 1)", "Fast-dLLM dual cache (batch 1)"),
                         ("ours dual cache + threshold 0.9 (batch 1)", "Fast-dLLM dual cache + threshold 0.9 (batch 1)")):
        if ours in results and theirs in results:
            same_as_fastdllm[ours] = agreement(results[ours]["sequences"], results[theirs]["sequences"])
    for name, row in results.items():
        row["seconds"] = times[name]
        generated = row["sequences"].numel()
        row["tokens_per_second"] = generated / times[name]
        reference = base_single if "batch 1" in name else base
        row["agreement_with_uncached"] = agreement(row["sequences"], reference)
        row["tokens_per_forward"] = None if row["tokens_processed"] is None else row["tokens_processed"] / row["nfe"]
        row["agreement_with_fastdllm"] = same_as_fastdllm.get(name)
        del row["sequences"]
    return results


def print_table(title: str, results: Dict[str, dict]) -> None:
    print(f"\n== {title}")
    print(f"{'sampler':48s} {'seconds':>8s} {'NFE':>5s} {'tok/s':>8s} {'tok/fwd':>8s} {'agree':>6s}")
    for name, row in results.items():
        per_forward = "-" if row["tokens_per_forward"] is None else f"{row['tokens_per_forward']:.0f}"
        print(f"{name:48s} {row['seconds']:8.2f} {row['nfe']:5d} {row['tokens_per_second']:8.1f} {per_forward:>8s} "
              f"{row['agreement_with_uncached']:6.3f}")
    for name, row in results.items():
        if row.get("agreement_with_fastdllm") is not None:
            print(f"  token agreement of {name} with Fast-dLLM's counterpart: {row['agreement_with_fastdllm']:.3f}")


def ratios(results: Dict[str, dict]) -> Dict[str, Optional[float]]:
    t = {name: row["seconds"] for name, row in results.items()}
    out = {
        "uncached / dual cache (target >= 3)": t["vanilla"] / t["vanilla + dual cache"],
        "uncached / prefix cache": t["vanilla"] / t["vanilla + prefix cache"],
        "prism dual / vanilla dual (target <= 1.05)": t["prism + dual cache"] / t["vanilla + dual cache"],
        "prism dual / vanilla dual on the same PRISM model (the head's forward in both)": (
            t["prism + dual cache"] / t["vanilla on the PRISM model + dual cache"]),
        "prism uncached / vanilla uncached": t["prism"] / t["vanilla"],
        "uncached / dual + threshold": t["vanilla"] / t["dual cache + threshold 0.9"],
    }
    if "Fast-dLLM dual cache + threshold 0.9 (batch 1)" in t:
        out["ours dual+thr / Fast-dLLM dual+thr, batch 1 (target <= 1.0)"] = (
            t["ours dual cache + threshold 0.9 (batch 1)"] / t["Fast-dLLM dual cache + threshold 0.9 (batch 1)"])
        out["ours dual / Fast-dLLM dual, batch 1"] = t["ours dual cache (batch 1)"] / t["Fast-dLLM dual cache (batch 1)"]
        out["ours vanilla / Fast-dLLM generate, batch 1"] = t["ours vanilla (batch 1)"] / t["Fast-dLLM generate (batch 1)"]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--sharpen", type=float, default=40.0, help="output-projection scale of the 'sharpened' run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--quick", action="store_true", help="batch 4, gen_length 64, block 16, 32 steps, 1 repeat")
    parser.add_argument("--no-reference", action="store_true", help="skip the Fast-dLLM rows")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.gen_length, args.block_length, args.steps, args.repeats = 4, 64, 16, 32, 1
    for name in ("batch", "prompt", "gen_length", "block_length", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    if args.gen_length % args.block_length:
        parser.error(f"--block-length={args.block_length} must divide --gen-length={args.gen_length}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fastdllm = None
    if not args.no_reference and (REFERENCE_DIR / "fastdllm" / "generate.py").is_file():
        fastdllm = load_fastdllm()
    print(f"shape: batch {args.batch}, prompt {args.prompt}, gen_length {args.gen_length}, block {args.block_length}, "
          f"steps {args.steps}; model d_model {args.d_model}, {args.layers} layers, vocab {args.vocab}; "
          f"{torch.get_num_threads()} threads; median of {args.repeats}")
    report = {}
    with torch.no_grad():
        for title, sharpen in (("random weights", 1.0), (f"sharpened logits (x{args.sharpen:g})", args.sharpen)):
            results = bench_setting(args, sharpen, fastdllm)
            print_table(title, results)
            report[title] = {"results": results, "ratios": ratios(results)}
            for name, value in report[title]["ratios"].items():
                print(f"  {name}: {value:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
