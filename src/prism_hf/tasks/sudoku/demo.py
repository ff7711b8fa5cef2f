"""The Sudoku demo end to end: MDM pretraining, PRISM fine-tuning, evaluation of every method, report.

Output folder layout (each stage is skipped when its output exists, so a killed run resumes)::

    DIR/backbone/           pretrained MDM (SudokuMDMForMaskedLM) + sudoku_recipe.json
    DIR/prism/              PRISM checkpoint (PrismForMaskedDiffusion) + sudoku_recipe.json
    DIR/eval_puzzles.csv    the held-out puzzles (eval seed, no completion a training grid), one token row per line
    DIR/eval_solutions.csv  the grid each held-out puzzle was cut from (one reference solution; there may be others)
    DIR/eval_cache/         one JSON per finished (method, NFE)
    DIR/results.json        the table, quality AUROC, calibration, timings
    DIR/quality_grids.png   completed grids with wrong / low-quality cells highlighted
    DIR/reliability.png     reliability diagram of the quality head
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, Optional, Sequence


from .grids import SudokuInputError
from .heldout import HeldOutPuzzles, held_out_puzzles
from .recipes import SudokuRecipe
from .tokenization import load_puzzles_csv, save_puzzles_csv

__all__ = ["eval_puzzles", "run_evaluation", "run_demo", "write_report"]


def eval_puzzles(recipe: SudokuRecipe, checkpoint: Optional[str] = None) -> HeldOutPuzzles:
    """The held-out puzzles of a recipe (from ``recipe.eval_seed``), none of whose completions is a grid the
    checkpoint was trained on (its recorded training grids; the recipe's own without a checkpoint).

    See [`held_out_puzzles`].
    """
    from .train import checkpoint_training_sources

    sources = checkpoint_training_sources(checkpoint, recipe) if checkpoint is not None else None
    return held_out_puzzles(recipe, sources=sources)


def write_report(result: Dict, output: str, figures_dir: Optional[str] = None,
                 low_quality_threshold: float = 0.5) -> Dict:
    """Write the results JSON (and the two figures when ``figures_dir`` is given); returns the result."""
    from .plots import plot_quality_grids, plot_reliability

    if figures_dir:
        os.makedirs(figures_dir, exist_ok=True)
        result["figures"] = {
            "quality_grids": plot_quality_grids(result, os.path.join(figures_dir, "quality_grids.png"),
                                                low_quality_threshold=low_quality_threshold),
            "reliability": plot_reliability(result, os.path.join(figures_dir, "reliability.png")),
        }
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump(result, f, indent=2)
    return result


def run_evaluation(checkpoint: str, recipe: Optional[SudokuRecipe] = None, puzzles_path: Optional[str] = None,
                   methods: Optional[Sequence[str]] = None, nfe: Optional[Sequence[int]] = None,
                   cache_dir: Optional[str] = None, show_progress: bool = True) -> Dict:
    """Evaluate a PRISM checkpoint on a puzzle file (or on the recipe's generated held-out puzzles)."""
    from .evaluation import check_nfe, evaluate
    from .train import load_prism

    if nfe is not None:
        nfe = check_nfe(nfe)
    model = load_prism(checkpoint)
    recipe = recipe or SudokuRecipe.load(checkpoint)
    model_spec = model.backbone.config.sudoku_spec
    solutions = None
    if puzzles_path is not None:
        puzzles = load_puzzles_csv(puzzles_path)
        if puzzles.shape[-1] != model_spec.size:
            raise SudokuInputError(
                f"checkpoint={checkpoint!r} is a {model_spec.name} Sudoku model but puzzles={puzzles_path!r} holds "
                f"{puzzles.shape[-1]}x{puzzles.shape[-1]} grids; evaluate it with a checkpoint of that size."
            )
        held_out = None
    else:
        held_out = eval_puzzles(recipe, checkpoint)
        puzzles, solutions = held_out.puzzles, held_out.solutions
    result = evaluate(model, puzzles, recipe, solutions=solutions, methods=methods, nfe=nfe, cache_dir=cache_dir,
                      show_progress=show_progress)
    if held_out is not None:
        result["held_out"] = held_out.report
    return result


def run_demo(output_dir: str, recipe: SudokuRecipe, methods: Optional[Sequence[str]] = None,
             nfe: Optional[Sequence[int]] = None, show_progress: bool = True, print_fn=print) -> Dict:
    """Pretrain, fine-tune with PRISM, evaluate every method on held-out puzzles and write the report."""
    import torch

    from .evaluation import check_nfe, format_table
    from .train import finetune, pretrain

    if nfe is not None:
        nfe = check_nfe(nfe)
    os.makedirs(output_dir, exist_ok=True)
    timing_path = os.path.join(output_dir, "timing.json")
    timing = json.load(open(timing_path)) if os.path.isfile(timing_path) else {}

    def timed(name, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        elapsed = time.perf_counter() - start
        if elapsed > 1.0 or name not in timing:  # a skipped stage keeps the time it took when it ran
            timing[name] = round(elapsed, 1)
        with open(timing_path, "w") as f:
            json.dump(timing, f, indent=2)
        return out

    timing["num_threads"] = torch.get_num_threads()
    backbone_dir = os.path.join(output_dir, "backbone")
    prism_dir = os.path.join(output_dir, "prism")
    print_fn(f"[1/3] MDM pretraining of a {recipe.spec.name} backbone -> {backbone_dir}")
    timed("pretrain_s", pretrain, recipe, backbone_dir, show_progress)
    print_fn(f"[2/3] PRISM fine-tuning -> {prism_dir}")
    timed("finetune_s", finetune, recipe, backbone_dir, prism_dir, show_progress)
    print_fn("[3/3] evaluation on held-out puzzles (eval seed never used in training)")
    held_out = timed("held_out_s", eval_puzzles, recipe, prism_dir)
    puzzles, solutions = held_out.puzzles, held_out.solutions
    report = held_out.report
    print_fn(f"      {len(puzzles)} held-out puzzles from {report['num_candidates']} candidates; rejected because a "
             f"training grid completes them: {report['num_rejected_solution_in_training']} (their own solution) + "
             f"{report['num_rejected_completion_in_training']} (another completion)")
    save_puzzles_csv(os.path.join(output_dir, "eval_puzzles.csv"), puzzles)
    save_puzzles_csv(os.path.join(output_dir, "eval_solutions.csv"), solutions)

    def evaluate_stage():
        from .evaluation import evaluate
        from .train import load_prism

        model = load_prism(prism_dir)
        return evaluate(model, puzzles, recipe, solutions=solutions, methods=methods, nfe=nfe,
                        cache_dir=os.path.join(output_dir, "eval_cache"), show_progress=show_progress)

    result = timed("evaluate_s", evaluate_stage)
    timing["total_s"] = round(sum(v for k, v in timing.items() if k.endswith("_s") and k != "total_s"), 1)
    result["timing"] = timing
    result["recipe"] = recipe.to_dict()
    result["held_out"] = report
    result["checkpoint"] = prism_dir
    result["puzzles"] = os.path.join(output_dir, "eval_puzzles.csv")
    write_report(result, os.path.join(output_dir, "results.json"), figures_dir=output_dir,
                 low_quality_threshold=recipe.low_quality_threshold)
    print_fn(format_table(result))
    print_fn(f"timings (s): {json.dumps(timing)}")
    print_fn(f"results: {os.path.join(output_dir, 'results.json')}; figures: quality_grids.png, reliability.png")
    return result
