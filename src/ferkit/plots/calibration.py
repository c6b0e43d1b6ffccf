"""Calibration figures: the reliability diagram and the coverage/accuracy curve of a min-confidence threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferkit.plots._mpl import pyplot


def plot_reliability(rel: dict, path: str | Path, title: str = "") -> None:
    """Reliability diagram from ``metrics.calibration_metrics(...)["reliability"]``: accuracy against confidence
    per bin (bars, the gap to the diagonal shaded), with the number of samples in each bin underneath."""
    plt = pyplot()
    bins = int(rel["bins"])
    edges = np.linspace(0.0, 1.0, bins + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1.0 / bins
    acc = np.array([a if a is not None else np.nan for a in rel["accuracy"]], np.float64)
    conf = np.array([c if c is not None else np.nan for c in rel["confidence"]], np.float64)
    count = np.asarray(rel["count"], np.float64)
    fig, (ax, axn) = plt.subplots(2, 1, figsize=(5, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = ~np.isnan(acc)
    ax.bar(centres[filled], acc[filled], width=width * 0.95, color="#4C72B0", edgecolor="white", label="accuracy in bin")
    gap_lo, gap_hi = np.minimum(acc, conf)[filled], np.maximum(acc, conf)[filled]
    ax.bar(centres[filled], gap_hi - gap_lo, bottom=gap_lo, width=width * 0.95, color="#DD8452", alpha=0.45,
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    axn.bar(centres, count, width=width * 0.95, color="#888888")
    for x, c in zip(centres, count):
        if c:
            axn.text(x, c, str(int(c)), ha="center", va="bottom", fontsize=6)
    axn.set_xlabel("confidence (top probability)")
    axn.set_ylabel("faces")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_coverage(curves: dict[str, list[dict]], path: str | Path, title: str = "") -> None:
    """Accuracy on the answered faces and the share answered (coverage) against the min-confidence threshold
    P, one colour per dataset (``metrics.coverage_curve`` rows)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, rows) in enumerate(curves.items()):
        colour = f"C{i}"
        t = [r["threshold"] for r in rows]
        ax.plot(t, [r["accuracy"] for r in rows], "-o", color=colour, ms=3, label=f"{name}: accuracy on answered")
        ax.plot(t, [r["coverage"] for r in rows], "--s", color=colour, ms=3, label=f"{name}: share answered")
    ax.set_xlabel("min confidence P (faces below: 'uncertain')")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
