"""Save a tiny LLaDA-shaped backbone and a character-level tokenizer as a *remote-code* model folder.

The folder looks like a Hub LLaDA checkpoint: ``config.json`` with an ``auto_map`` pointing at a modeling file
inside the folder, the weights as safetensors, and a tokenizer with a chat template and a mask token. Loading
it therefore takes the same path as ``GSAI-ML/LLaDA-8B-Instruct`` (``trust_remote_code=True``), offline.

    python examples/make_tiny_llada.py --output data/tiny-llada
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import prism_hf.testing as testing


def make_tiny_llada(output: Path, d_model: int = 64, n_layers: int = 2, n_heads: int = 4, seed: int = 0,
                    max_sequence_length: int = 2048) -> Path:
    tokenizer = testing.tiny_char_tokenizer()
    model = testing.tiny_llada(
        vocab_size=len(tokenizer), d_model=d_model, n_layers=n_layers, n_heads=n_heads, seed=seed,
        mask_token_id=tokenizer.mask_token_id, max_sequence_length=max_sequence_length,
    )
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    shutil.copyfile(testing.__file__, output / "modeling_tiny_llada.py")
    config_path = output / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {
        "AutoConfig": "modeling_tiny_llada.TinyLLaDAConfig",
        "AutoModel": "modeling_tiny_llada.TinyLLaDAModelLM",
    }
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
    print(f"wrote a tiny LLaDA-shaped remote-code model to {args.output}")


if __name__ == "__main__":
    main()
