"""The Sudoku demo against its targets: wall time, PRISM's margin over the best baseline, quality AUROC.

Runs ``prism-hf sudoku demo`` from scratch in a new folder (nothing reused), times the whole command, reads
``results.json`` and prints every method's success rate with the three targets of the demo:

- the whole demo finishes within 15 minutes on a 2-core CPU;
- PRISM's success rate beats the best baseline by at least 10 points at the demo's NFE;
- the quality head's AUROC for wrong cells is at least 0.9.

    python benchmarks/bench_sudoku_demo.py                  # the default (demo) recipe
    python benchmarks/bench_sudoku_demo.py --recipe tiny    # seconds: checks the script itself
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIME_BUDGET_S = 15 * 60
MARGIN_TARGET = 0.10
AUROC_TARGET = 0.9


def summarise(results: dict, wall_s: float) -> dict:
    """Per-NFE table of success rates, PRISM's margin over the best other method, and the targets met."""
    by_nfe: dict = {}
    for record in results["records"]:
        by_nfe.setdefault(record["nfe"], {})[record["method"]] = record["success_rate"]
    rows = []
    for nfe, rates in sorted(by_nfe.items()):
        baselines = {m: r for m, r in rates.items() if m != "prism"}
        best = max(baselines, key=baselines.get) if baselines else None
        margin = rates.get("prism", float("nan")) - (baselines[best] if best else float("nan"))
        rows.append({"nfe": nfe, "success_rate": rates, "best_baseline": best, "prism_margin": margin})
    auroc = results.get("quality_auroc")
    return {
        "wall_s": round(wall_s, 1),
        "num_puzzles": results.get("num_puzzles"),
        "grid_size": results.get("grid_size"),
        "quality_auroc": auroc,
        "wrong_cell_label": results.get("wrong_cell_label"),
        "quality_auroc_rule_conflict": results.get("quality_auroc_rule_conflict"),
        "per_nfe": rows,
        "targets": {
            f"wall <= {TIME_BUDGET_S} s": wall_s <= TIME_BUDGET_S,
            f"prism margin >= {MARGIN_TARGET:.2f}": all(r["prism_margin"] >= MARGIN_TARGET for r in rows),
            f"quality AUROC >= {AUROC_TARGET}": auroc is not None and auroc >= AUROC_TARGET,
        },
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="demo", help="demo (default), paper or tiny")
    parser.add_argument("--output-dir", default=None, help="Keep the run here (default: a temporary folder).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of a table.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sudoku-") as tmp:
        out = Path(args.output_dir or tmp) / "run"
        if out.exists():
            raise ValueError(f"--output-dir {out.parent}: {out} exists; the benchmark times a run from scratch.")
        cmd = [sys.executable, "-m", "prism_hf.cli", "sudoku", "demo", "--recipe", args.recipe, "--output-dir", str(out)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        summary = summarise(json.loads((out / "results.json").read_text()), wall)
    if args.json:
        print(json.dumps(summary))
        return summary
    print(f"sudoku demo (recipe {args.recipe}): {summary['grid_size']}x{summary['grid_size']}, "
          f"{summary['num_puzzles']} held-out puzzles, wall {summary['wall_s']} s")
    for row in summary["per_nfe"]:
        print(f"NFE {row['nfe']}:")
        for method, rate in sorted(row["success_rate"].items(), key=lambda kv: -kv[1]):
            print(f"  {method:<20} {100 * rate:6.1f}%")
        print(f"  prism - best baseline ({row['best_baseline']}): {100 * row['prism_margin']:+.1f} points")
    print(f"quality AUROC for wrong cells ({summary['wrong_cell_label']} label): {summary['quality_auroc']}; "
          f"for cells that break a rule: {summary['quality_auroc_rule_conflict']}")
    for target, met in summary["targets"].items():
        print(f"  target {target}: {'met' if met else 'NOT met'}")
    return summary


if __name__ == "__main__":
    main()
