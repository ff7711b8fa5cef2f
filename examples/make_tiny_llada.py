"""Save a tiny LLaDA and a character-level tokenizer in the folder layout of the Hub's LLaDA checkpoints.

The folder looks like ``GSAI-ML/LLaDA-8B-Instruct`` at a tiny width: a ``config.json`` with the Hub's field names,
``architectures`` and ``auto_map`` (naming the published ``configuration_llada`` / ``modeling_llada`` files, which are
not written: prism_hf never runs them), the weights as safetensors, and a tokenizer with a chat template and a mask
token. Loading it therefore takes the same path as the Hub checkpoint: `PrismForMaskedDiffusion.from_backbone(folder)`
uses the native port `prism_hf.models.llada`, with no ``trust_remote_code``, offline.

    python examples/make_tiny_llada.py --output data/tiny-llada
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import prism_hf.testing as testing

#: What the Hub's config.json says about where its (remote) code lives.
HUB_AUTO_MAP = {
    "AutoConfig": "configuration_llada.LLaDAConfig",
    "AutoModel": "modeling_llada.LLaDAModelLM",
    "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
}


def make_tiny_llada(output: Path, d_model: int = 64, n_layers: int = 2, n_heads: int = 4, seed: int = 0,
                    max_sequence_length: int = 2048) -> Path:
    """Write the tiny model and tokenizer to ``output`` and return it."""
    tokenizer = testing.tiny_char_tokenizer()
    model = testing.tiny_llada(
        vocab_size=len(tokenizer), d_model=d_model, n_layers=n_layers, n_heads=n_heads, seed=seed,
        mask_token_id=tokenizer.mask_token_id, max_sequence_length=max_sequence_length,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    config_path = output / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = dict(HUB_AUTO_MAP)
    config["architectures"] = ["LLaDAModelLM"]
    config_path.write_text(json.dumps(config, indent=2))
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make_tiny_llada(args.output, d_model=args.d_model, n_layers=args.n_layers, seed=args.seed)
    print(f"wrote a tiny LLaDA in the Hub's layout to {args.output}")


if __name__ == "__main__":
    main()
