"""Parameter counts and per-GPU training memory of the LLaDA-8B / Dream-7B code recipe, computed on the meta device.

Builds the native ports (`prism_hf.models.llada`, `prism_hf.models.dream`) at the real Hub configurations on the meta
device (no memory, no download), wraps them in `PrismForMaskedDiffusion` with the recipe's quality head, applies the
recipe's LoRA (r=256, alpha=256 on q/k/v) with peft, and counts what is trained. From those counts it prints the bytes
per GPU of weights, gradients and AdamW state for DDP, ZeRO-2 and ZeRO-3 on ``--num-gpus`` GPUs:

* frozen backbone weights in the load dtype (bf16: 2 bytes); they are never given gradients or optimizer state;
* trained parameters (LoRA + head) kept in float32 (4 bytes), with float32 gradients (4 bytes) and AdamW's two float32
  moments (8 bytes): 16 bytes per trained parameter;
* DDP replicates everything; ZeRO-2 shards gradients and optimizer state over the GPUs; ZeRO-3 also shards the weights.

Activations are not included: they depend on batch, length and activation checkpointing (docs/code.md discusses them).

    python benchmarks/memory_8b.py [--num-gpus 8] [--lora-r 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from typing import Dict

import torch

GiB = 1024**3

# The published config.json of each checkpoint, as far as the architecture goes.
LLADA_8B = dict(
    d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288, mlp_ratio=4, vocab_size=126464,
    embedding_size=126464, mask_token_id=126336, eos_token_id=126081, pad_token_id=126081, max_sequence_length=4096,
    rope_theta=500000.0, rms_norm_eps=1e-5, weight_tying=False, include_bias=False, block_type="llama",
    layer_norm_type="rms", activation_type="silu", use_cache=False,
)
DREAM_7B = dict(
    vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, hidden_act="silu", max_position_embeddings=131072, rms_norm_eps=1e-6, rope_theta=1000000.0,
    tie_word_embeddings=False, mask_token_id=151666, pad_token_id=151643, bos_token_id=151643, eos_token_id=151643,
)


def build_meta(family: str) -> torch.nn.Module:
    """The native backbone at its real size, on the meta device."""
    if family == "llada":
        from prism_hf.models.llada import LLaDAConfig, LLaDAModelLM

        config, cls = LLaDAConfig(**LLADA_8B), LLaDAModelLM
    elif family == "dream":
        from prism_hf.models.dream import DreamConfig, DreamModel

        config, cls = DreamConfig(**DREAM_7B), DreamModel
    else:
        raise ValueError(f"family={family!r} is not valid; choose 'llada' or 'dream'.")
    with torch.device("meta"):
        return cls(config)


def count(family: str, lora_r: int, lora_targets=("q_proj", "k_proj", "v_proj"), head: str = "mlp") -> Dict[str, int]:
    from peft import LoraConfig

    from prism_hf import PrismForMaskedDiffusion

    backbone = build_meta(family)
    total_backbone = sum(p.numel() for p in backbone.parameters())
    with torch.device("meta"):
        model = PrismForMaskedDiffusion.from_backbone(backbone, head_type=head)
        model.enable_lora(LoraConfig(r=lora_r, lora_alpha=lora_r, lora_dropout=0.1, target_modules=list(lora_targets)))
    lora = sum(p.numel() for n, p in model.backbone.named_parameters() if "lora_" in n)
    head_params = sum(p.numel() for p in model.quality_head.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trained != lora + head_params:
        raise AssertionError(f"{family}: trained parameters {trained} != LoRA {lora} + head {head_params}")
    return {"backbone": total_backbone, "lora": lora, "head": head_params, "trained": trained}


def per_gpu_bytes(counts: Dict[str, int], num_gpus: int, weight_bytes: int = 2) -> Dict[str, Dict[str, float]]:
    frozen = counts["backbone"] * weight_bytes
    trained_weights = counts["trained"] * 4
    grads = counts["trained"] * 4
    adam = counts["trained"] * 8
    plans = {
        "DDP": (frozen + trained_weights, grads, adam),
        "ZeRO-2": (frozen + trained_weights, grads / num_gpus, adam / num_gpus),
        "ZeRO-3": ((frozen + trained_weights) / num_gpus, grads / num_gpus, adam / num_gpus),
    }
    return {
        name: {"weights": w, "gradients": g, "optimizer": o, "total": w + g + o} for name, (w, g, o) in plans.items()
    }


def main(argv=None) -> Dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-gpus", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=256)
    parser.add_argument("--families", nargs="+", default=["llada", "dream"], choices=["llada", "dream"])
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.num_gpus < 1:
        parser.error(f"--num-gpus={args.num_gpus} must be >= 1")
    if args.lora_r < 1:
        parser.error(f"--lora-r={args.lora_r} must be >= 1")
    results = {}
    for family in args.families:
        counts = count(family, args.lora_r)
        memory = per_gpu_bytes(counts, args.num_gpus)
        results[family] = {"counts": counts, "per_gpu_bytes": memory}
        print(f"\n== {family}: {counts['backbone'] / 1e9:.3f}B backbone parameters")
        print(f"   LoRA r={args.lora_r} on q/k/v: {counts['lora'] / 1e6:.1f}M; mlp head: {counts['head'] / 1e6:.1f}M; "
              f"trained: {counts['trained'] / 1e6:.1f}M ({100 * counts['trained'] / counts['backbone']:.2f}% of the backbone)")
        print(f"   per GPU on {args.num_gpus} GPUs (bf16 frozen weights; fp32 trained weights, grads, AdamW), GiB:")
        print(f"   {'plan':8s} {'weights':>9s} {'grads':>9s} {'optim':>9s} {'total':>9s}")
        for plan, row in memory.items():
            print(f"   {plan:8s} {row['weights'] / GiB:9.2f} {row['gradients'] / GiB:9.2f} {row['optimizer'] / GiB:9.2f} "
                  f"{row['total'] / GiB:9.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
