"""Evaluation of a PRISM Sudoku checkpoint: success rate of every sampler, quality AUROC and calibration.

Every method runs on the same model (the PRISM checkpoint: its backbone is the MDM for the baselines) and
the same number of model forwards (NFE = ``num_inference_steps``; the optional final scoring forward of
the pipeline is not used here). A puzzle counts as solved when the completed grid is a valid Sudoku that
keeps every given.

Methods: the named presets of [`prism_hf.sampling.presets`] (the table shared with the text and code
evaluations); ``METHODS`` are the ones an evaluation runs by default:

* ``vanilla-confidence``, ``vanilla-margin``, ``vanilla-random``: plain MDM sampling, no remasking, with
  that unmasking rule;
* ``remdm-conf``: ReMDM's confidence-weighted remasking (arXiv 2503.00307);
* ``random-remask``, ``confidence-remask``: remask as many tokens per step as PRISM does, chosen at random
  or by lowest unmasking confidence (these isolate what the learned head adds);
* ``prism``: remask the tokens with the lowest PRISM quality.

The recipe is the task's sampler settings ([`sampler_settings`]): the remasking methods use its unmasking rule, and
PRISM and the same-count baselines its remask count, window and PRISM-loop steps. Every method samples greedily.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ...evaluation.classification import binary_auroc
from ...modeling.modeling_prism import PrismForMaskedDiffusion
from ...sampling.pipeline_prism import PrismPipeline
from ...sampling.presets import METHOD_PRESETS, MethodPreset
from ...sampling.scheduling_prism import PrismScheduler
from .grids import SudokuInputError, SudokuSpec, is_valid_solution, rule_conflicts, solve, wrong_cells
from .recipes import SudokuRecipe
from .tokenization import SudokuTokenizer

__all__ = [
    "METHODS",
    "sampler_settings",
    "method_scheduler",
    "solve_puzzles",
    "evaluate",
    "auroc",
    "calibration",
    "format_table",
    "check_nfe",
]

METHODS = (
    "vanilla-confidence",
    "vanilla-margin",
    "vanilla-random",
    "remdm-conf",
    "random-remask",
    "confidence-remask",
    "prism",
)


def check_nfe(nfe) -> List[int]:
    """Validate one NFE or a list of them (each an int >= 1)."""
    values = [nfe] if isinstance(nfe, (int, np.integer)) else list(nfe)
    if not values:
        raise SudokuInputError("nfe is empty; pass at least one number of model forwards (>= 1).")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SudokuInputError(f"nfe={value!r} is not valid; the number of model forwards must be an int >= 1.")
    return [int(v) for v in values]


def sampler_settings(recipe: SudokuRecipe) -> Dict:
    """The recipe's sampler settings for the method presets: its unmasking rule and PRISM's remask counts (a fixed
    ``num_remask`` per step inside ``[step_on, step_off)``, then ``prism_loop_steps``)."""
    return dict(
        unmasking=recipe.unmasking, num_remask=recipe.num_remask, remask_schedule="fixed",
        step_on=recipe.step_on, step_off=recipe.step_off, prism_loop_steps=recipe.prism_loop_steps,
    )


def _method_preset(method: str) -> MethodPreset:
    try:
        return METHOD_PRESETS.lookup(method)
    except ValueError as err:
        raise SudokuInputError(str(err)) from None


def method_scheduler(method: str, recipe: SudokuRecipe) -> PrismScheduler:
    """The `PrismScheduler` of one evaluation method (a name of [`prism_hf.sampling.presets.METHOD_PRESETS`]) on
    the recipe's sampler settings, with greedy tokens."""
    return _method_preset(method).scheduler(sampler_settings(recipe), temperature=0.0)


def solve_puzzles(puzzles: np.ndarray, spec: SudokuSpec, show_progress: bool = False) -> np.ndarray:
    """Reference solutions (the first one found; puzzles loaded from a file may have several), ``(N, n, n)``."""
    out = np.empty_like(puzzles)
    for i in tqdm(range(len(puzzles)), desc="solving reference grids", disable=not show_progress):
        found = solve(puzzles[i], spec, max_solutions=1)
        if not found:
            raise SudokuInputError(f"puzzles[{i}] has no solution.")
        out[i] = found[0]
    return out


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count one half); NaN with one class.
    The one AUROC of the package, [`prism_hf.evaluation.classification.binary_auroc`], as a float."""
    return float(binary_auroc(np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)))


def calibration(quality: np.ndarray, correct: np.ndarray, num_bins: int = 10) -> Dict:
    """Reliability bins of the predicted quality against the empirical rate of correct cells, and the ECE."""
    quality = np.asarray(quality, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.digitize(quality, edges[1:-1]), 0, num_bins - 1)
    counts = np.bincount(index, minlength=num_bins)
    mean_q = np.bincount(index, weights=quality, minlength=num_bins) / np.maximum(counts, 1)
    rate = np.bincount(index, weights=correct, minlength=num_bins) / np.maximum(counts, 1)
    ece = float((counts * np.abs(mean_q - rate)).sum() / max(counts.sum(), 1))
    return {
        "bin_edges": edges.tolist(),
        "count": counts.tolist(),
        "mean_quality": mean_q.tolist(),
        "fraction_correct": rate.tolist(),
        "ece": ece,
    }


def _fingerprint(*arrays: np.ndarray, extra: str = "") -> str:
    h = hashlib.sha1(extra.encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _read_cache(path: str) -> Optional[Dict]:
    """A cached record, or ``None`` when there is none or it cannot be read (it is then recomputed)."""
    try:
        with open(path) as f:
            cached = json.load(f)
    except (OSError, ValueError):
        return None
    return cached if isinstance(cached, dict) and "record" in cached else None


def _write_cache(path: str, payload: Dict) -> None:
    """Write atomically (a temporary file, then a rename), so a crash never leaves a half-written record."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f)
    os.replace(tmp, path)


@torch.no_grad()
def _run_method(model, tokens: torch.Tensor, method: str, nfe: int, recipe: SudokuRecipe, seed: int,
                batch_size: int, progress) -> torch.Tensor:
    scheduler = method_scheduler(method, recipe)
    pipe = PrismPipeline(model=model, scheduler=scheduler)
    # PRISM-loop steps count in the NFE budget: the schedule gets the rest.
    schedule_steps = nfe - scheduler.num_loop_steps
    if schedule_steps < 1:
        raise SudokuInputError(
            f"nfe={nfe} leaves no schedule step after prism_loop_steps={scheduler.num_loop_steps}; use nfe > prism_loop_steps."
        )
    outputs = []
    for start in range(0, len(tokens), batch_size):
        generator = torch.Generator(device=tokens.device).manual_seed(seed + start)
        out = pipe(
            input_ids=tokens[start : start + batch_size], gen_length=0, num_inference_steps=schedule_steps, generator=generator,
            output_type="seq", return_quality=False, show_progress=False,
        )
        if out.nfe != nfe:
            raise RuntimeError(f"{method} made {out.nfe} model forwards; the comparison needs exactly nfe={nfe}.")
        outputs.append(out.sequences)
        if progress is not None:
            progress.update(1)
    return torch.cat(outputs)


@torch.no_grad()
def _quality(model: PrismForMaskedDiffusion, tokens: torch.Tensor, batch_size: int) -> np.ndarray:
    qualities = [model(input_ids=tokens[i : i + batch_size]).quality_logits.sigmoid() for i in range(0, len(tokens), batch_size)]
    return torch.cat(qualities).cpu().numpy()


def _check_inputs(model: PrismForMaskedDiffusion, puzzles: np.ndarray, recipe: SudokuRecipe,
                  methods: Optional[Sequence[str]], nfe: Optional[Iterable[int]]):
    """Every argument check of [`evaluate`], before any work: returns ``(puzzles, methods, nfes)``."""
    recipe.validate()
    spec = recipe.spec
    model_spec = model.backbone.config.sudoku_spec
    puzzles = np.asarray(puzzles)
    if puzzles.ndim != 3 or puzzles.shape[1:] != (model_spec.size, model_spec.size):
        raise SudokuInputError(
            f"puzzles have shape {puzzles.shape}, but the checkpoint is a {model_spec.name} Sudoku model: it needs "
            f"puzzles of shape (N, {model_spec.size}, {model_spec.size})."
        )
    if (model_spec.box_rows, model_spec.box_cols) != (spec.box_rows, spec.box_cols):
        raise SudokuInputError(f"recipe is for {spec.name} grids but the checkpoint is a {model_spec.name} model.")
    methods = list(METHODS) if methods is None else list(methods)
    for method in methods:
        _method_preset(method)
    nfes = check_nfe(recipe.nfe if nfe is None else list(nfe))
    if not (puzzles == 0).any(axis=(1, 2)).all():
        raise SudokuInputError("every puzzle needs at least one blank (0) cell.")
    return puzzles, methods, nfes


def _scoring_method(recipe: SudokuRecipe) -> str:
    """The vanilla sampler whose final grids the quality head is scored on (its mistakes are never corrected)."""
    return f"vanilla-{recipe.unmasking}" if f"vanilla-{recipe.unmasking}" in METHODS else "vanilla-confidence"


def _run_records(model, tokens: torch.Tensor, puzzles: np.ndarray, recipe: SudokuRecipe, jobs, seed: int,
                 cache_dir: Optional[str], fingerprint: str, show_progress: bool):
    """Run every ``(method, nfe)`` job (or reuse its cached record); returns the records and the final sequences of
    the scoring method at the first NFE (`None` when that job came from the cache or did not run)."""
    spec, tokenizer, batch_size = recipe.spec, SudokuTokenizer(recipe.spec), recipe.eval_batch_size
    num_batches = -(-len(puzzles) // batch_size)
    scoring = (_scoring_method(recipe), jobs[0][1])
    records, scored_sequences = [], None
    progress = tqdm(total=num_batches * len(jobs), desc="sudoku evaluation", disable=not show_progress)
    for method, steps in jobs:
        cache_file = os.path.join(cache_dir, f"{method}_nfe{steps}.json") if cache_dir else None
        cached = _read_cache(cache_file) if cache_file else None
        if cached is not None and cached.get("fingerprint") == fingerprint:
            records.append(cached["record"])
            progress.update(num_batches)
            continue
        progress.set_postfix_str(f"{method} nfe={steps}")
        sequences = _run_method(model, tokens, method, steps, recipe, seed, batch_size, progress)
        solved = is_valid_solution(tokenizer.decode(sequences.cpu().numpy()), spec, puzzles=puzzles)
        record = {"method": method, "nfe": steps, "success_rate": float(solved.mean()),
                  "num_puzzles": int(len(puzzles)), "num_solved": int(solved.sum())}
        records.append(record)
        if (method, steps) == scoring:
            scored_sequences = sequences
        if cache_file:
            _write_cache(cache_file, {"fingerprint": fingerprint, "record": record})
    progress.close()
    return records, scored_sequences


def _quality_report(model, sequences: torch.Tensor, puzzles: np.ndarray, solutions: np.ndarray,
                    recipe: SudokuRecipe) -> Dict:
    """Score the quality head on the final grids ``sequences``: AUROC against wrong cells (changed by a nearest
    valid completion; the solution, for a unique puzzle), against rule conflicts and against the reference
    solutions, calibration, and the first puzzles' grids for the figure."""
    spec, tokenizer = recipe.spec, SudokuTokenizer(recipe.spec)
    quality = _quality(model, sequences, recipe.eval_batch_size)
    grids = tokenizer.decode(sequences.cpu().numpy())
    cell_quality = quality[:, spec.cell_positions()].reshape(grids.shape)
    generated = puzzles == 0
    wrong, fallbacks = wrong_cells(puzzles, grids, spec, solutions=solutions)
    clashing = rule_conflicts(grids, spec)
    q, w = cell_quality[generated], wrong[generated]
    keep = min(len(puzzles), 64)
    return {
        "quality_auroc": auroc(1.0 - q, w),
        "quality_auroc_rule_conflict": auroc(1.0 - q, clashing[generated]),
        "quality_auroc_vs_reference_solution": auroc(1.0 - q, (grids != solutions)[generated]),
        "wrong_cell_label": "nearest_completion",
        "wrong_cell_label_fallbacks": int(fallbacks),
        "wrong_cell_fraction": float(w.mean()) if len(w) else float("nan"),
        "rule_conflict_fraction": float(clashing[generated].mean()) if len(w) else float("nan"),
        "calibration": calibration(q, ~w),
        "quality_example": {
            "puzzles": puzzles[:keep].tolist(),
            "grids": grids[:keep].tolist(),
            "quality": cell_quality[:keep].round(4).tolist(),
            "wrong": wrong[:keep].tolist(),
        },
    }


def evaluate(
    model: PrismForMaskedDiffusion,
    puzzles: np.ndarray,
    recipe: SudokuRecipe,
    solutions: Optional[np.ndarray] = None,
    methods: Optional[Sequence[str]] = None,
    nfe: Optional[Iterable[int]] = None,
    cache_dir: Optional[str] = None,
    seed: Optional[int] = None,
    show_progress: bool = True,
) -> Dict:
    """Run every method at every NFE on ``puzzles`` and score the quality head.

    Args:
        model ([`PrismForMaskedDiffusion`]): A PRISM Sudoku checkpoint.
        puzzles (`np.ndarray` of shape `(N, n, n)`): Puzzles, 0 = blank. Their size must match the model's.
        recipe ([`SudokuRecipe`]): Sampler settings (unmasking rule, remask count, window, default NFE).
        solutions (`np.ndarray` of shape `(N, n, n)`, *optional*): Reference solutions (the grids the puzzles
            were cut from); solved with the backtracking solver when omitted. Wrong cells are labelled against the
            nearest valid completion of each puzzle (`wrong_cells`); these grids only serve when that search gives
            up and for the diagnostic ``quality_auroc_vs_reference_solution``.
        methods (`Sequence[str]`, *optional*): Names of [`prism_hf.sampling.presets.METHOD_PRESETS`];
            ``METHODS`` by default.
        nfe (`Iterable[int]`, *optional*): Numbers of model forwards; ``[recipe.nfe]`` by default.
        cache_dir (`str`, *optional*): Each finished (method, NFE) record is stored here and reused by a rerun on
            the same model and puzzles.
        seed (`int`, *optional*): Sampler seed (random rules); ``recipe.eval_seed`` by default.
        show_progress (`bool`): Progress bar over methods x NFE x batches.

    Returns:
        `dict`: ``grid_size``, ``box_rows``, ``box_cols``, ``num_puzzles``, ``records`` (one
        ``{"method", "nfe", "success_rate", "num_puzzles", "num_solved"}`` per method and NFE),
        ``quality_auroc`` (wrong = changed by the nearest valid completion), ``quality_auroc_rule_conflict``
        (wrong = the digit repeats in its row, column or box), ``calibration``, and ``quality_example`` (grids,
        quality and wrong-cell flags of the first puzzles, for the figure).
    """
    puzzles, methods, nfes = _check_inputs(model, puzzles, recipe, methods, nfe)
    spec = recipe.spec
    seed = recipe.eval_seed if seed is None else seed
    if solutions is None:
        solutions = solve_puzzles(puzzles, spec, show_progress=show_progress)
    device = next(model.parameters()).device
    tokens = torch.as_tensor(SudokuTokenizer(spec).encode(puzzles), device=device)
    model.eval()
    fingerprint = _fingerprint(puzzles, *(p.detach().cpu().numpy() for p in model.state_dict().values()),
                               extra=json.dumps([recipe.unmasking, recipe.num_remask, recipe.step_on, recipe.step_off,
                                                 recipe.prism_loop_steps, seed, recipe.eval_batch_size]))
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
    jobs = [(m, t) for t in nfes for m in methods]
    records, scored_sequences = _run_records(model, tokens, puzzles, recipe, jobs, seed, cache_dir, fingerprint,
                                             show_progress)
    scoring_method = _scoring_method(recipe)
    if scored_sequences is None:
        scored_sequences = _run_method(model, tokens, scoring_method, nfes[0], recipe, seed, recipe.eval_batch_size, None)
    return {
        "grid_size": spec.size,
        "box_rows": spec.box_rows,
        "box_cols": spec.box_cols,
        "num_puzzles": int(len(puzzles)),
        "quality_scored_method": scoring_method,
        "quality_scored_nfe": nfes[0],
        "records": records,
        "sampler": {"unmasking": recipe.unmasking, "num_remask": recipe.num_remask, "step_on": recipe.step_on,
                    "step_off": recipe.step_off, "prism_loop_steps": recipe.prism_loop_steps, "temperature": 0.0},
        **_quality_report(model, scored_sequences, puzzles, solutions, recipe),
    }


def format_table(result: Dict) -> str:
    """The results as a plain-text table (one row per method and NFE, best baseline and PRISM's margin)."""
    lines = [
        f"Sudoku {result['grid_size']}x{result['grid_size']}, {result['num_puzzles']} held-out puzzles",
        f"{'method':<20} {'NFE':>5} {'success':>9} {'solved':>12}",
    ]
    for rec in result["records"]:
        lines.append(
            f"{rec['method']:<20} {rec['nfe']:>5} {100 * rec['success_rate']:>8.1f}% {rec['num_solved']:>6}/{rec['num_puzzles']:<5}"
        )
    for steps in sorted({r["nfe"] for r in result["records"]}):
        at = [r for r in result["records"] if r["nfe"] == steps]
        prism = [r for r in at if r["method"] == "prism"]
        baselines = [r for r in at if r["method"] != "prism"]
        if prism and baselines:
            best = max(baselines, key=lambda r: r["success_rate"])
            lines.append(
                f"NFE {steps}: prism - best baseline ({best['method']}) = "
                f"{100 * (prism[0]['success_rate'] - best['success_rate']):+.1f} points"
            )
    lines.append(
        f"quality AUROC for wrong cells: {result['quality_auroc']:.3f} (final grids of {result['quality_scored_method']}, "
        f"NFE {result['quality_scored_nfe']}; {100 * result['wrong_cell_fraction']:.1f}% of generated cells wrong); "
        f"ECE {result['calibration']['ece']:.3f}"
    )
    if "quality_auroc_rule_conflict" in result:
        lines.append(
            f"  wrong = changed by the nearest valid completion; AUROC for cells that break a rule: "
            f"{result['quality_auroc_rule_conflict']:.3f} ({100 * result['rule_conflict_fraction']:.1f}% of cells)"
        )
    return "\n".join(lines)
