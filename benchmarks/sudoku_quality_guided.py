"""Quality-guided decoding on a Sudoku PRISM checkpoint: success rate against the average number of forwards.

PRISM at several NFE (every puzzle gets exactly that many forwards: its success-rate curve) against quality-guided
decoding (``quality_threshold``, optionally with ``confidence_threshold``): the schedule fills the grid as PRISM does,
then up to REFINE refinement steps remask and redo the cells the quality head scores below the threshold; a puzzle
stops at the first forward that finds it full with every cell at or above the threshold, so easy puzzles take fewer
forwards. Same unmasking rule and remask count as the recipe. Reports, for each setting, the share of puzzles solved
(any valid completion counts, as in the demo) and the mean and spread of the forwards per puzzle (``nfe_per_row``).

    python benchmarks/sudoku_quality_guided.py --checkpoint outputs/sudoku-demo/prism \\
        --puzzles outputs/sudoku-demo/eval_puzzles.csv [--prism-nfe 12 16 20 24 28] [--guided 12+4 16+8 20+8 24+8]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from prism_hf.sampling.pipeline_prism import PrismPipeline
from prism_hf.sampling.scheduling_prism import PrismScheduler
from prism_hf.tasks.sudoku import SudokuRecipe, SudokuTokenizer, load_puzzles_csv
from prism_hf.tasks.sudoku.evaluation import method_scheduler
from prism_hf.tasks.sudoku.grids import is_valid_solution
from prism_hf.tasks.sudoku.train import load_prism


def run(model, scheduler, tokens, steps, batch_size, seed):
    pipe = PrismPipeline(model=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    sequences, forwards = [], []
    for start in range(0, len(tokens), batch_size):
        out = pipe(input_ids=tokens[start : start + batch_size], gen_length=0, num_inference_steps=steps,
                   generator=torch.Generator().manual_seed(seed + start), output_type="seq", return_quality=False)
        sequences.append(out.sequences)
        forwards.append(out.nfe_per_row)
    return torch.cat(sequences), torch.cat(forwards).float()


def _schedule_plus_refine(text: str):
    try:
        schedule, refine = (int(part) for part in text.split("+"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not SCHEDULE+REFINE, e.g. 12+4") from None
    if schedule < 1 or refine < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: need at least 1 schedule step and 0 or more refinement steps")
    return schedule, refine


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a PRISM Sudoku checkpoint (the demo's prism/ folder)")
    parser.add_argument("--puzzles", required=True, help="puzzles CSV (the demo's eval_puzzles.csv)")
    parser.add_argument("--prism-nfe", type=int, nargs="+", default=[12, 16, 20, 24, 28],
                        help="NFE of the PRISM reference points (each puzzle gets exactly that many forwards)")
    parser.add_argument("--guided", type=_schedule_plus_refine, nargs="+",
                        default=[(12, 4), (16, 8), (20, 8), (24, 8)],
                        help="quality-guided settings, SCHEDULE+REFINE steps (the sum caps the forwards)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.9])
    parser.add_argument("--confidence", type=float, default=None, help="also use confidence_threshold")
    parser.add_argument("--num-puzzles", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    for value in args.thresholds + ([] if args.confidence is None else [args.confidence]):
        if not 0.0 < value <= 1.0:
            parser.error(f"threshold {value} must be in (0, 1]")
    if any(n < 1 for n in args.prism_nfe):
        parser.error("--prism-nfe values must be >= 1")
    recipe = SudokuRecipe.load(args.checkpoint)
    model = load_prism(args.checkpoint).eval()
    spec = recipe.spec
    tokenizer = SudokuTokenizer(spec)
    puzzles = load_puzzles_csv(args.puzzles, spec)
    if args.num_puzzles is not None:
        puzzles = puzzles[: args.num_puzzles]
    tokens = torch.as_tensor(tokenizer.encode(puzzles))
    prism = method_scheduler("prism", recipe)
    base = {k: v for k, v in dict(prism.config).items() if not k.startswith("_")}
    rows = []

    def record(name, scheduler, schedule_steps):
        with torch.no_grad():
            sequences, forwards = run(model, scheduler, tokens, schedule_steps, recipe.eval_batch_size, recipe.eval_seed)
        solved = is_valid_solution(tokenizer.decode(sequences.numpy()), spec, puzzles=puzzles)
        rows.append({"method": name, "success_rate": float(solved.mean()), "mean_nfe": float(forwards.mean()),
                     "std_nfe": float(forwards.std()), "max_nfe": int(forwards.max())})
        print(f"{name:44s} solved {100 * solved.mean():5.1f}%   NFE {forwards.mean():5.2f} +- {forwards.std():4.2f} "
              f"(max {int(forwards.max())})", flush=True)

    print(f"{len(puzzles)} puzzles, {spec.name}; the recipe's sampler (unmasking={base['unmasking']!r}, "
          f"num_remask={base['num_remask']}), greedy")
    for nfe in args.prism_nfe:
        steps = nfe - prism.num_loop_steps
        if steps < 1:
            parser.error(f"--prism-nfe {nfe} leaves no schedule step after prism_loop_steps={prism.num_loop_steps}")
        record(f"prism (nfe {nfe})", prism, steps)
    for schedule_steps, refine in args.guided:
        for threshold in args.thresholds:
            kwargs = dict(base, quality_threshold=threshold, confidence_threshold=args.confidence, prism_loop_steps=refine)
            name = f"quality-guided {schedule_steps}+{refine}, q>={threshold:g}" + (
                "" if args.confidence is None else f", conf>={args.confidence:g}")
            record(name, PrismScheduler(**kwargs), schedule_steps)
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "puzzles": args.puzzles, "rows": rows},
                                              indent=2))
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
