"""How often the PRISM loss's proposals are wrong, by how complete the training grid is.

The Sudoku quality head is scored on completed grids. It learns to flag wrong cells there only if nearly
complete training grids carry wrong proposals; this prints that share for a backbone (or a PRISM checkpoint)
at several proposal temperatures (docs/sudoku.md, "Why the temperature matters").

    python benchmarks/sudoku_proposal_errors.py --backbone outputs/sudoku-demo/backbone --temperatures 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", required=True,
                        help="A folder written by `prism-hf sudoku pretrain` (or a PRISM checkpoint of `finetune`).")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--num-grids", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=None, help="Seed of the grids (default: VALIDATION_SEED).")
    parser.add_argument("--output", default=None, help="Also write the figures as JSON here.")
    args = parser.parse_args(argv)

    from prism_hf.tasks.sudoku.data import VALIDATION_SEED
    from prism_hf.tasks.sudoku.diagnostics import proposal_error_rates
    from prism_hf.tasks.sudoku.train import load_backbone, load_prism

    torch.set_num_threads(1)
    path = args.backbone
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        parser.error(f"--backbone {path!r} holds no model (no config.json); pass a folder written by "
                     "`prism-hf sudoku pretrain` or `finetune`.")
    with open(config) as f:
        is_prism = "head_type" in json.load(f)
    model = load_prism(path) if is_prism else load_backbone(path)
    rates = proposal_error_rates(model, args.temperatures, num_grids=args.num_grids,
                                 seed=VALIDATION_SEED if args.seed is None else args.seed)
    bins = [f"{low}-{high} masked" for low, high in rates["bins"]]
    print(f"share of wrong proposals in PRISM training states ({args.num_grids} grids, {path})")
    print("temperature | " + " | ".join(bins))
    for t, row in rates["wrong_rate"].items():
        print(f"{t:11g} | " + " | ".join("-" if r is None else f"{r:.3f}" for r in row))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"checkpoint": path, **rates, "wrong_rate": {str(t): r for t, r in rates["wrong_rate"].items()}}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
