"""Sampling benchmark: the four ratios of the PRISM sampler, in one run (CPU, ~1 minute with the defaults).

1. Sampler overhead against its floor: wall time of a full PRISM sampling run / (NFE x one bare backbone forward
   at the same shape), batch 16. Target <= 1.05 (the head and the remasking must cost next to nothing).
2. PRISM sampling time / vanilla sampling time at equal steps. Target <= 1.03.
3. NFE of PRISM == NFE of vanilla at equal steps (remasking costs no extra forward).
4. A naive per-row loop sampler (the shape of the public research code: Python loops over rows, `.item()` per
   row) against `PrismScheduler` at batch 64: the speed-up, sampler alone and end to end.

Wall times are the best of ``--repeats`` interleaved runs (the least disturbed by other processes).

    python benchmarks/bench_sampling.py                 # defaults: d_model 256, 4 layers, vocab 1024
    python benchmarks/bench_sampling.py --repeats 5 --steps 32 --gen-length 96
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable, Dict

import torch

from prism_hf import PrismForMaskedDiffusion
from prism_hf.sampling.pipeline_prism import PrismPipeline
from prism_hf.sampling.scheduling_prism import PrismScheduler
from prism_hf.testing import tiny_llada


def best_time(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


class ForwardTimer:
    """Accumulates the wall time spent inside a module's forward (hooks), so that a run's overhead can be measured
    against the forwards of the same run: robust to the machine load drifting between measurements."""

    def __init__(self, module: torch.nn.Module):
        self.total = 0.0
        self.calls = 0
        self._start = 0.0
        self._handles = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _pre(self, module, args):
        self._start = time.perf_counter()

    def _post(self, module, args, output):
        self.total += time.perf_counter() - self._start
        self.calls += 1

    def reset(self):
        self.total, self.calls = 0.0, 0

    def remove(self):
        for handle in self._handles:
            handle.remove()


def timed_run(pipe, timers, call: dict):
    """(wall seconds, [seconds inside each timed module's forwards], output) of one pipeline run."""
    for timer in timers:
        timer.reset()
    start = time.perf_counter()
    out = pipe(**call)
    return time.perf_counter() - start, [timer.total for timer in timers], out


def build_model(vocab: int, d_model: int, layers: int, seed: int = 0, head: str = "mlp") -> PrismForMaskedDiffusion:
    backbone = tiny_llada(vocab_size=vocab, d_model=d_model, n_layers=layers, seed=seed, max_sequence_length=512)
    return PrismForMaskedDiffusion.from_backbone(backbone, head_type=head).eval()


def make_pipe(model, **scheduler_kwargs) -> PrismPipeline:
    pipe = PrismPipeline(model=model, scheduler=PrismScheduler(**scheduler_kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----- the naive baseline: the shape of the public research code --------------------------------------------------
@torch.no_grad()
def naive_prism_sample(model, prompt: torch.Tensor, gen_length: int, steps: int, num_remask: int, mask_id: int):
    """Per-row Python loops with `.item()` per row (as in the public PRISM scripts), same math as ours:
    confidence unmasking, the r lowest-quality tokens remasked, per-row counts."""
    batch, prompt_length = prompt.shape
    x = torch.cat([prompt, torch.full((batch, gen_length), mask_id, dtype=torch.long)], dim=1)
    nfe = 0
    for step in range(steps):
        out = model(x)
        nfe += 1
        logits, quality = out.logits, torch.sigmoid(out.quality_logits)
        last = step == steps - 1
        for b in range(batch):
            row = x[b]
            is_mask = row == mask_id
            is_mask[:prompt_length] = False
            n = gen_length
            num_masked = int(is_mask.sum().item())
            num_clean = n - num_masked
            target = n if last else -(-n * (step + 1) // steps)
            r = 0 if last else min(num_remask, num_clean, n - target)
            remask_idx = []
            if r > 0:
                q = quality[b].clone()
                q[:prompt_length] = float("inf")
                q[is_mask] = float("inf")
                remask_idx = torch.topk(-q, r).indices.tolist()
            u = min(max(target - num_clean + r, 0), num_masked)
            probs = torch.softmax(logits[b].float(), dim=-1)
            probs[:, mask_id] = 0.0
            probs = probs / probs.sum(-1, keepdim=True)
            conf, tokens = probs.max(-1)
            conf = torch.where(is_mask, conf, torch.full_like(conf, -1.0))
            if u > 0:
                idx = torch.topk(conf, u).indices
                for i in idx.tolist():
                    x[b, i] = tokens[i].item()
            for i in remask_idx:
                x[b, i] = mask_id
    return x[:, prompt_length:], nfe


def naive_step_only(logits, quality, x, prompt_length, gen_length, step, steps, num_remask, mask_id):
    batch = x.shape[0]
    x = x.clone()
    for b in range(batch):
        is_mask = x[b] == mask_id
        is_mask[:prompt_length] = False
        num_masked = int(is_mask.sum().item())
        num_clean = gen_length - num_masked
        target = -(-gen_length * (step + 1) // steps)
        r = min(num_remask, num_clean, gen_length - target)
        q = quality[b].clone()
        q[:prompt_length] = float("inf")
        q[is_mask] = float("inf")
        remask_idx = torch.topk(-q, r).indices.tolist() if r > 0 else []
        u = min(max(target - num_clean + r, 0), num_masked)
        probs = torch.softmax(logits[b].float(), dim=-1)
        probs[:, mask_id] = 0.0
        probs = probs / probs.sum(-1, keepdim=True)
        conf, tokens = probs.max(-1)
        conf = torch.where(is_mask, conf, torch.full_like(conf, -1.0))
        for i in torch.topk(conf, u).indices.tolist():
            x[b, i] = tokens[i].item()
        for i in remask_idx:
            x[b, i] = mask_id
    return x


def main() -> Dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--head", default="mlp", help="quality head type: mlp (LLaDA recipe), linear (Sudoku), transformer")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--gen-length", type=int, default=48)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--num-remask", type=int, default=2)
    parser.add_argument("--naive-batch", type=int, default=64)
    parser.add_argument("--naive-d-model", type=int, default=64, help="model width for the batch-64 naive comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    # ----- 1-3: overhead, PRISM / vanilla, NFE -----------------------------------------------------------------
    model = build_model(args.vocab, args.d_model, args.layers, head=args.head)
    mask_id = model.mask_token_id
    prompt = torch.randint(0, mask_id, (args.batch, args.prompt_length))
    seq = torch.cat([prompt, torch.full((args.batch, args.gen_length), mask_id)], dim=1)
    prism = make_pipe(model, unmasking="confidence", remasking="prism", num_remask=args.num_remask)
    vanilla = make_pipe(model, unmasking="confidence", remasking="none")
    call = dict(input_ids=prompt, gen_length=args.gen_length, num_inference_steps=args.steps, return_quality=False)

    with torch.no_grad():
        backbone_forward = lambda: model.backbone(input_ids=seq)  # noqa: E731
        prism_forward = lambda: model(seq)  # noqa: E731
        backbone_forward(), prism_forward()
    prism(**call), vanilla(**call)  # warm-up
    timers = [ForwardTimer(model.backbone), ForwardTimer(model)]
    t_backbone = t_prism_forward = t_prism = t_vanilla = float("inf")
    ratios_prism, ratios_vanilla, ratios_prism_model = [], [], []
    for _ in range(args.repeats):  # interleaved, so that every figure sees the same machine load
        with torch.no_grad():
            t_prism_forward = min(t_prism_forward, best_time(prism_forward, 2))
        wall, (inside, inside_model), out_prism = timed_run(prism, timers, call)
        t_prism = min(t_prism, wall)
        ratios_prism.append(wall / inside)
        ratios_prism_model.append(wall / inside_model)
        wall, (inside, _), out_vanilla = timed_run(vanilla, timers, call)
        t_vanilla = min(t_vanilla, wall)
        ratios_vanilla.append(wall / inside)
    for timer in timers:
        timer.remove()
    with torch.no_grad():
        t_backbone = best_time(backbone_forward, args.repeats)
    overhead_prism = statistics.median(ratios_prism)
    overhead_vanilla = statistics.median(ratios_vanilla)
    overhead_sampler_only = statistics.median(ratios_prism_model)

    # ----- 4: naive per-row sampler vs ours at batch 64 ---------------------------------------------------------
    small = build_model(args.vocab, args.naive_d_model, 2, seed=1)
    small_prompt = torch.randint(0, mask_id, (args.naive_batch, args.prompt_length))
    ours_small = make_pipe(small, unmasking="confidence", remasking="prism", num_remask=args.num_remask)
    small_call = dict(input_ids=small_prompt, gen_length=args.gen_length, num_inference_steps=args.steps, return_quality=False)
    ours_out = ours_small(**small_call)
    naive_out, naive_nfe = naive_prism_sample(small, small_prompt, args.gen_length, args.steps, args.num_remask, mask_id)
    same_tokens = bool(torch.equal(ours_out.sequences, naive_out))
    t_ours_e2e = t_naive_e2e = float("inf")
    for _ in range(args.repeats):  # interleaved
        t_ours_e2e = min(t_ours_e2e, best_time(lambda: ours_small(**small_call), 1))
        t_naive_e2e = min(t_naive_e2e, best_time(
            lambda: naive_prism_sample(small, small_prompt, args.gen_length, args.steps, args.num_remask, mask_id), 1))
    # the sampler alone, on one mid-run step's model output
    small_seq = torch.cat([small_prompt, torch.full((args.naive_batch, args.gen_length), mask_id)], dim=1)
    half = args.gen_length // 2
    small_seq[:, args.prompt_length : args.prompt_length + half] = torch.randint(0, mask_id, (args.naive_batch, half))
    with torch.no_grad():
        out = small(small_seq)
    step = args.steps // 2
    scheduler = ours_small.scheduler
    scheduler.set_timesteps(args.steps)
    maskable = torch.ones_like(small_seq, dtype=torch.bool)
    maskable[:, : args.prompt_length] = False
    ours_step = lambda: scheduler.step(out.logits, step, small_seq, mask_token_id=mask_id,  # noqa: E731
                                       quality_logits=out.quality_logits, maskable=maskable)
    naive_step = lambda: naive_step_only(out.logits, torch.sigmoid(out.quality_logits), small_seq,  # noqa: E731
                                         args.prompt_length, args.gen_length, step, args.steps, args.num_remask, mask_id)
    t_ours_step = t_naive_step = float("inf")
    for _ in range(args.repeats):
        t_ours_step = min(t_ours_step, best_time(ours_step, 3))
        t_naive_step = min(t_naive_step, best_time(naive_step, 3))

    figures = {
        "overhead_prism": overhead_prism,
        "overhead_vanilla": overhead_vanilla,
        "overhead_prism_vs_prism_forward": overhead_sampler_only,
        "overhead_vs_separate_backbone_forward": t_prism / (out_prism.nfe * t_backbone),
        "prism_over_vanilla_time": t_prism / t_vanilla,
        "prism_over_vanilla_load_normalised": overhead_prism / overhead_vanilla,
        "nfe_prism": out_prism.nfe,
        "nfe_vanilla": out_vanilla.nfe,
        "naive_speedup_sampler_only": t_naive_step / t_ours_step,
        "naive_speedup_end_to_end": t_naive_e2e / t_ours_e2e,
        "naive_same_tokens": same_tokens,
        "naive_nfe": naive_nfe,
    }
    print(f"model: tiny LLaDA-style, d_model {args.d_model}, {args.layers} layers, vocab {args.vocab}, {args.head} head; "
          f"batch {args.batch}, "
          f"prompt {args.prompt_length} + gen {args.gen_length}, {args.steps} steps, num_remask {args.num_remask}, "
          f"torch threads {torch.get_num_threads()}, best/median of {args.repeats} interleaved runs")
    print(f"  one backbone forward {t_backbone * 1e3:.1f} ms, one PRISM forward (backbone + head) {t_prism_forward * 1e3:.1f} ms; "
          f"PRISM run {t_prism * 1e3:.0f} ms, vanilla run {t_vanilla * 1e3:.0f} ms")
    print(f"1. overhead: PRISM run wall / (NFE x backbone forward, timed inside the same run) = {overhead_prism:.3f} "
          f"(target <= 1.05); vanilla {overhead_vanilla:.3f}; against the PRISM forwards (backbone + head) of the run: "
          f"{overhead_sampler_only:.3f}; against a separately timed backbone forward: "
          f"{figures['overhead_vs_separate_backbone_forward']:.3f}")
    print(f"2. PRISM / vanilla time at {args.steps} steps = {figures['prism_over_vanilla_load_normalised']:.3f} load-normalised "
          f"(ratio of the overheads), {figures['prism_over_vanilla_time']:.3f} raw best-of  (target <= 1.03)")
    print(f"3. NFE PRISM = {out_prism.nfe}, NFE vanilla = {out_vanilla.nfe}  (equal: {out_prism.nfe == out_vanilla.nfe})")
    print(f"4. naive per-row sampler vs PrismScheduler at batch {args.naive_batch} (d_model {args.naive_d_model}, 2 layers): "
          f"sampler alone {t_naive_step * 1e3:.1f} ms vs {t_ours_step * 1e3:.2f} ms per step = "
          f"{figures['naive_speedup_sampler_only']:.1f}x; end to end {t_naive_e2e:.2f} s vs {t_ours_e2e:.2f} s = "
          f"{figures['naive_speedup_end_to_end']:.2f}x (same tokens: {same_tokens})")
    if args.json:
        print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
