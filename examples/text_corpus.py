"""Offline stand-ins for the text recipe: a synthetic corpus, a GPT-2-like tokenizer, a tiny MDLM, a tiny GPT-2.

Nothing is downloaded: the corpus is a few hundred lines drawn from a small English-like grammar, so a
2-layer model can learn something from it in a few steps, and the tokenizer is built in-process with
`tokenizers`. The tokenizer mimics GPT-2 the way MDLM uses it: one ``<|endoftext|>`` token (EOS, also the
document separator when packing) and *no* mask token; the MDLM backbone's vocabulary is
``len(tokenizer) + 1`` and its mask id is the last id.

    python examples/text_corpus.py --output_dir data/tiny_text --num_lines 400

writes

* ``train.txt`` and ``validation.txt`` (one document per line: the layout of the `datasets` "text" builder),
* ``tokenizer/`` (the word-level `PreTrainedTokenizerFast`),
* ``tiny-mdlm/``: an MDLM-shaped backbone saved as a *remote-code* folder (``config.json`` with an ``auto_map``
  to a modeling file inside the folder), so it loads like ``kuleshov-group/mdlm-owt``:
  ``AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)``,
* ``tiny-gpt2/``: a random 2-layer GPT-2 with a character-level tokenizer, the offline stand-in for the
  Gen PPL / MAUVE judge ``gpt2-large`` (a different tokenizer, so re-tokenisation is exercised).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Dict, List

EOS_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<|unk|>"

_DETERMINERS = ["the", "a", "every", "some"]
_ADJECTIVES = ["small", "old", "bright", "quiet", "green", "heavy", "quick", "strange"]
_NOUNS = ["cat", "river", "model", "city", "teacher", "garden", "machine", "song", "letter", "ship"]
_VERBS = ["finds", "sees", "follows", "builds", "remembers", "carries", "answers", "paints"]
_ADVERBS = ["slowly", "again", "today", "quietly", "together"]
_PREPOSITIONS = ["near", "under", "beyond", "with"]
_CONNECTIVES = ["and", "but", "because", "while"]
_PUNCTUATION = [".", ",", "?"]

WORDS = sorted(
    set(_DETERMINERS + _ADJECTIVES + _NOUNS + _VERBS + _ADVERBS + _PREPOSITIONS + _CONNECTIVES + _PUNCTUATION)
)


def _noun_phrase(rng: random.Random) -> List[str]:
    words = [rng.choice(_DETERMINERS)]
    if rng.random() < 0.6:
        words.append(rng.choice(_ADJECTIVES))
    words.append(rng.choice(_NOUNS))
    if rng.random() < 0.25:
        words += [rng.choice(_PREPOSITIONS)] + [rng.choice(_DETERMINERS), rng.choice(_NOUNS)]
    return words


def _sentence(rng: random.Random) -> List[str]:
    words = _noun_phrase(rng) + [rng.choice(_VERBS)] + _noun_phrase(rng)
    if rng.random() < 0.4:
        words.append(rng.choice(_ADVERBS))
    if rng.random() < 0.3:
        words += [",", rng.choice(_CONNECTIVES)] + _noun_phrase(rng) + [rng.choice(_VERBS)] + _noun_phrase(rng)
    return words + [rng.choice([".", ".", ".", "?"])]


def synthetic_lines(num_lines: int = 400, seed: int = 0) -> List[str]:
    """``num_lines`` documents of one to four sentences from a small grammar (about 45 distinct words)."""
    if not isinstance(num_lines, int) or num_lines < 1:
        raise ValueError(f"num_lines={num_lines!r} must be a positive integer.")
    rng = random.Random(seed)
    return [" ".join(w for _ in range(rng.randint(1, 4)) for w in _sentence(rng)) for _ in range(num_lines)]


def word_tokenizer():
    """A word-level `PreTrainedTokenizerFast` over the grammar's words, GPT-2-like: ``<|endoftext|>`` is EOS,
    BOS and padding, and there is no mask token (MDLM appends the mask id after the vocabulary)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([EOS_TOKEN, UNK_TOKEN] + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=EOS_TOKEN, unk_token=UNK_TOKEN
    )


def write_text_corpus(output_dir, num_lines: int = 400, seed: int = 0, validation_fraction: float = 0.25) -> Dict[str, str]:
    """Write ``train.txt``, ``validation.txt`` and ``tokenizer/`` under ``output_dir``; return the paths."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction={validation_fraction!r} must be in (0, 1).")
    lines = synthetic_lines(num_lines, seed)
    n_valid = max(1, int(round(num_lines * validation_fraction)))
    if n_valid >= num_lines:
        raise ValueError(f"num_lines={num_lines} is too small to hold out a validation split; use at least 2.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text("\n".join(lines[n_valid:]) + "\n")
    (out / "validation.txt").write_text("\n".join(lines[:n_valid]) + "\n")
    word_tokenizer().save_pretrained(out / "tokenizer")
    return {"train": str(out / "train.txt"), "validation": str(out / "validation.txt"), "tokenizer": str(out / "tokenizer")}


def write_tiny_mdlm(output_dir, tokenizer=None, hidden_dim: int = 32, n_blocks: int = 2, model_length: int = 64,
                    seed: int = 0) -> str:
    """Save a tiny model of the native MDLM port (vocabulary ``len(tokenizer) + 1``, mask = last id), the class that
    loads ``kuleshov-group/mdlm-owt`` without remote code."""
    import prism_hf.testing as testing

    tokenizer = tokenizer or word_tokenizer()
    model = testing.tiny_mdlm(vocab_size=len(tokenizer) + 1, hidden_dim=hidden_dim, n_blocks=n_blocks,
                              model_length=model_length, seed=seed)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    return str(out)


def write_tiny_gpt2(output_dir, n_embd: int = 32, n_layer: int = 2, n_positions: int = 128, seed: int = 0) -> str:
    """Save a random tiny `GPT2LMHeadModel` with the character-level tokenizer of `prism_hf.testing`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from prism_hf.testing import tiny_char_tokenizer

    tokenizer = tiny_char_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=4,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    out = Path(output_dir)
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def main(argv=None) -> Dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_lines", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validation_fraction", type=float, default=0.25)
    args = parser.parse_args(argv)
    paths = write_text_corpus(args.output_dir, args.num_lines, args.seed, args.validation_fraction)
    paths["tiny_mdlm"] = write_tiny_mdlm(Path(args.output_dir) / "tiny-mdlm", seed=args.seed)
    paths["tiny_gpt2"] = write_tiny_gpt2(Path(args.output_dir) / "tiny-gpt2", seed=args.seed)
    for split, path in paths.items():
        print(f"{split}: {path}")
    return paths


if __name__ == "__main__":
    main()
