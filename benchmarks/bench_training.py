"""Cost of a PRISM training step relative to a plain masked diffusion (MDM) step, measured side by side.

Four variants on the same model, batch and sequence length, each a full optimizer step
(forward(s), backward, AdamW update):

- ``mdm``: the plain MDM step (one forward on the masked input, cross-entropy weighted 1/t);
- ``prism-full``: PRISM with a trained backbone (forward on z with gradients, forward on y, both losses);
- ``prism-full-logits``: as ``prism-full`` but the forward on y also computes the vocabulary logits it does not use
  (``skip_unused_logits=False``);
- ``prism-frozen``: PRISM with a frozen backbone (forward on z without gradients; only the head learns).

Timing: the variants run interleaved, round-robin, after warm-up steps; the median wall-clock time and the
median process CPU time per step are reported, with ratios to ``mdm`` (CPU time is the steadier figure on a
shared machine; use ``--threads 1`` so that idle-spinning worker threads do not count). Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` during one step above
what was allocated before it; on CPU, the same quantity from the PyTorch profiler's memory timeline (tensor
memory, not the process's resident size). Both count activations, gradients and temporaries of one
steady-state step; parameters and AdamW state, which exist before the step, are not counted.

    python benchmarks/bench_training.py                     # small default, < 1 min on a laptop CPU
    python benchmarks/bench_training.py --hidden-size 1024 --layers 12 --vocab-size 32000 --seq-len 512 \\
        --batch-size 8 --device cuda                        # a ~200M-parameter model on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

# prism-full and prism-frozen run as PrismTrainer does by default (the forward on y skips the vocabulary
# projection); prism-full-logits computes the full logits in both forwards, for comparison.
VARIANTS = ("mdm", "prism-full", "prism-full-logits", "prism-frozen")


def build_backbone(args):
    """A LLaDA-interface bidirectional transformer of the requested size (random weights)."""
    from prism_hf.testing import tiny_llada

    return tiny_llada(vocab_size=args.vocab_size, d_model=args.hidden_size, n_layers=args.layers,
                      n_heads=args.heads, max_sequence_length=max(256, args.seq_len), seed=0)


def build(args):
    from prism_hf.modeling.modeling_prism import PrismForMaskedDiffusion

    return PrismForMaskedDiffusion.from_backbone(build_backbone(args), head_type=args.head).to(args.device).train()


def make_step(variant, args):
    """Returns ``step(batch)`` doing one optimizer step of ``variant`` on a fresh model."""
    from prism_hf.training.losses import forward_mask, mdm_loss, prism_step

    # The MDM baseline is the bare backbone (no head); PRISM wraps the same backbone.
    model = build_backbone(args).to(args.device).train() if variant == "mdm" else build(args)
    mask_id = model.config.mask_token_id
    if variant == "prism-frozen":
        model.freeze_backbone()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator(device=args.device).manual_seed(0)

    def step(input_ids, maskable):
        optimizer.zero_grad(set_to_none=True)
        if variant == "mdm":
            noisy, masked, t = forward_mask(input_ids, maskable, mask_id, generator=generator)
            logits = model(input_ids=noisy).logits
            loss = mdm_loss(logits, input_ids, masked, t)
        else:
            loss = prism_step(model, input_ids, maskable, mask_id, num_update_tokens=args.num_update_tokens,
                              num_proposals=args.num_proposals, mdm_loss_weight=0.5,
                              train_backbone=variant != "prism-frozen", generator=generator,
                              skip_unused_logits=variant != "prism-full-logits").loss
        loss.backward()
        optimizer.step()

    return step


def make_batch(args):
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, args.vocab_size - 1, (args.batch_size, args.seq_len), generator=g).to(args.device)
    return input_ids, torch.ones_like(input_ids, dtype=torch.bool)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_variants(args):
    """Median wall-clock and process CPU seconds per step of each variant (interleaved round-robin)."""
    batch = make_batch(args)
    steps = {v: make_step(v, args) for v in VARIANTS}
    for _ in range(args.warmup):
        for v in VARIANTS:
            steps[v](*batch)
    wall = {v: [] for v in VARIANTS}
    cpu = {v: [] for v in VARIANTS}
    for _ in range(args.steps):
        for v in VARIANTS:
            sync(args.device)
            start, start_cpu = time.perf_counter(), time.process_time()
            steps[v](*batch)
            sync(args.device)
            wall[v].append(time.perf_counter() - start)
            cpu[v].append(time.process_time() - start_cpu)
    return ({v: statistics.median(ts) for v, ts in wall.items()}, {v: statistics.median(ts) for v, ts in cpu.items()})


def _cpu_peak_bytes(fn):
    """Peak bytes of tensor memory during ``fn()`` above the level at its start, from the profiler's memory
    timeline (the same data as ``torch.profiler``'s ``export_memory_timeline``)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
    totals = [sum(row) for row in sizes]
    return max(totals) - totals[0]


def memory_of_variant(variant, args):
    """Peak memory of one steady-state step above the memory held before it (bytes): activations, gradients
    and temporaries; parameters and AdamW state, held before the step, are not counted."""
    batch = make_batch(args)
    step = make_step(variant, args)
    step(*batch)  # AdamW state exists from here on, as in steady-state training
    if torch.device(args.device).type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(*batch)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    return _cpu_peak_bytes(lambda: step(*batch))


def memory_variants(args):
    return {v: memory_of_variant(v, args) for v in VARIANTS}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--head", default="mlp", help="quality head type")
    p.add_argument("--num-update-tokens", type=int, default=8, help="k")
    p.add_argument("--num-proposals", type=int, default=1, help="n_y")
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    times, cpu_times = time_variants(args)
    memory = None if args.no_memory else memory_variants(args)
    n_params = sum(p.numel() for p in build(args).parameters())
    result = {
        "device": args.device, "params": n_params, "batch_size": args.batch_size, "seq_len": args.seq_len,
        "num_update_tokens": args.num_update_tokens, "num_proposals": args.num_proposals,
        "threads": torch.get_num_threads(),
        "step_seconds": times, "time_ratio_vs_mdm": {v: times[v] / times["mdm"] for v in VARIANTS},
        "step_cpu_seconds": cpu_times, "cpu_time_ratio_vs_mdm": {v: cpu_times[v] / cpu_times["mdm"] for v in VARIANTS},
    }
    if memory is not None:
        result["peak_memory_bytes"] = memory
        result["memory_ratio_vs_mdm"] = {v: memory[v] / memory["mdm"] for v in VARIANTS}
    if args.json:
        print(json.dumps(result))
        return
    print(f"device={args.device} params={n_params / 1e6:.2f}M batch={args.batch_size} seq_len={args.seq_len} "
          f"k={args.num_update_tokens} n_y={args.num_proposals} threads={torch.get_num_threads()} "
          f"(median of {args.steps} interleaved steps)")
    header = f"{'variant':<18}{'wall (ms)':>11}{'vs mdm':>8}{'cpu (ms)':>11}{'vs mdm':>8}"
    if memory is not None:
        header += f"{'peak mem (MiB)':>16}{'vs mdm':>8}"
    print(header)
    for v in VARIANTS:
        line = (f"{v:<18}{times[v] * 1e3:>11.1f}{times[v] / times['mdm']:>7.2f}x"
                f"{cpu_times[v] * 1e3:>11.1f}{cpu_times[v] / cpu_times['mdm']:>7.2f}x")
        if memory is not None:
            line += f"{memory[v] / 2**20:>16.1f}{memory[v] / memory['mdm']:>7.2f}x"
        print(line)


if __name__ == "__main__":
    main()
