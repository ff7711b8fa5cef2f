"""Figures of the Sudoku evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

__all__ = ["plot_reliability", "plot_quality_grids"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reliability(result: Dict, path: str) -> str:
    """Reliability diagram of the quality head: mean predicted quality vs fraction of correct cells per bin."""
    plt = _pyplot()
    cal = result["calibration"]
    edges = np.asarray(cal["bin_edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    counts = np.asarray(cal["count"])
    rate = np.asarray(cal["fraction_correct"])
    fig, (ax, ax_hist) = plt.subplots(2, 1, figsize=(4.5, 5.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    shown = counts > 0
    ax.bar(centers[shown], rate[shown], width=width * 0.9, color="#4c72b0", edgecolor="black", label="fraction correct")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_ylabel("fraction of cells correct")
    ax.set_ylim(0, 1)
    ax.set_title(f"PRISM quality calibration (ECE {cal['ece']:.3f}, AUROC {result['quality_auroc']:.3f})", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    ax_hist.bar(centers, counts, width=width * 0.9, color="#999999")
    ax_hist.set_yscale("log")
    ax_hist.set_xlabel("predicted quality sigmoid(head)")
    ax_hist.set_ylabel("cells")
    ax_hist.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_quality_grids(result: Dict, path: str, num_grids: int = 6, low_quality_threshold: float = 0.5,
                       box_rows: Optional[int] = None, box_cols: Optional[int] = None) -> str:
    """Completed grids with each generated cell shaded by its quality (red = low), wrong digits in red and
    cells whose quality is below ``low_quality_threshold`` outlined (the paper's Figure 3, right).

    Grids with mistakes are shown first, those with the fewest wrong cells first (the typical case: one clash to
    repair), then correct grids.
    """
    plt = _pyplot()
    from matplotlib.colors import Normalize

    example = result["quality_example"]
    puzzles = np.asarray(example["puzzles"])
    grids = np.asarray(example["grids"])
    quality = np.asarray(example["quality"])
    a = box_rows or result["box_rows"]
    b = box_cols or result["box_cols"]
    n = a * b
    if "wrong" in example:
        wrong = np.asarray(example["wrong"], dtype=bool) & (puzzles == 0)
    else:  # results written before the nearest-completion label
        wrong = (grids != np.asarray(example["solutions"])) & (puzzles == 0)
    num_wrong = wrong.sum(axis=(1, 2))
    order = np.argsort(np.where(num_wrong > 0, num_wrong, np.iinfo(np.int64).max), kind="stable")[:num_grids]
    cols = min(3, len(order))
    rows = -(-len(order) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    cmap = plt.get_cmap("RdYlGn")
    norm = Normalize(0, 1)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        shade = np.where(puzzles[i] == 0, quality[i], np.nan)
        image = np.ones((n, n, 4))
        image[puzzles[i] != 0] = (0.85, 0.85, 0.85, 1.0)
        generated = puzzles[i] == 0
        image[generated] = cmap(norm(shade[generated]))
        ax.imshow(image, extent=(0, n, n, 0))
        for r in range(n):
            for c in range(n):
                color = "black" if puzzles[i, r, c] else ("red" if wrong[i, r, c] else "#1a1a1a")
                weight = "bold" if wrong[i, r, c] or puzzles[i, r, c] else "normal"
                ax.text(c + 0.5, r + 0.5, str(grids[i, r, c]), ha="center", va="center", color=color,
                        fontsize=max(6, 60 // n), fontweight=weight)
                if generated[r, c] and quality[i, r, c] < low_quality_threshold:
                    ax.add_patch(plt.Rectangle((c + 0.06, r + 0.06), 0.88, 0.88, fill=False, edgecolor="#d45500", lw=2))
        for k in range(n + 1):
            ax.plot([0, n], [k, k], color="black", lw=2 if k % a == 0 else 0.5)
            ax.plot([k, k], [0, n], color="black", lw=2 if k % b == 0 else 0.5)
        ax.set_xlim(0, n)
        ax.set_ylim(n, 0)
        ax.set_title(f"puzzle {i}: {int(wrong[i].sum())} wrong", fontsize=9)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=norm)
    fig.colorbar(sm, ax=axes.ravel().tolist(), shrink=0.6, label="quality of generated cell")
    fig.suptitle(
        f"{result['quality_scored_method']} outputs scored by the PRISM head (red digit = wrong; orange box = quality < "
        f"{low_quality_threshold})", fontsize=9,
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
