"""Write a tiny local instruction dataset with the columns of OpenCoder-LLM/opc-sft-stage2 (educational_instruct).

It stands in for the Hub dataset in offline runs of `examples/train_code.py`: each row has an
``instruction`` (the prompt) and an ``output`` (the response: a short Python function), plus ``entry_point``
and ``testcase`` so the same rows can be executed by the sandbox.

    python examples/make_tiny_code_data.py --output data/tiny_code.jsonl --num-examples 256
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

_OPS = [
    ("add", "returns x plus {k}", "return x + {k}", lambda x, k: x + k),
    ("sub", "returns x minus {k}", "return x - {k}", lambda x, k: x - k),
    ("mul", "returns x times {k}", "return x * {k}", lambda x, k: x * k),
    ("mod", "returns x modulo {k}", "return x % {k}", lambda x, k: x % k),
    ("max", "returns the larger of x and {k}", "return max(x, {k})", lambda x, k: max(x, k)),
]


def make_rows(num_examples: int, seed: int = 0) -> list:
    """Deterministic rows ``{"instruction", "output", "entry_point", "testcase"}``."""
    if num_examples < 1:
        raise ValueError(f"num_examples={num_examples} must be >= 1.")
    rng = random.Random(seed)
    rows = []
    for i in range(num_examples):
        name, phrase, body, fn = _OPS[i % len(_OPS)]
        k = rng.randint(1, 9)
        entry = f"{name}_{k}"
        x = rng.randint(0, 20)
        rows.append(
            {
                "instruction": f"Write a Python function {entry}(x) that {phrase.format(k=k)}.",
                "output": f"def {entry}(x):\n    {body.format(k=k)}\n",
                "entry_point": entry,
                "testcase": [f"assert {entry}({x}) == {fn(x, k)}"],
            }
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True, help="Path of the .jsonl file to write.")
    parser.add_argument("--num-examples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8") as f:
        for row in make_rows(args.num_examples, args.seed):
            f.write(json.dumps(row) + "\n")
    print(f"wrote {args.num_examples} rows to {args.output}")


if __name__ == "__main__":
    main()
