"""Sweep comparison figures: validation curves of every configuration, and accuracy bars with error bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ferkit.plots._mpl import pyplot


def plot_sweep_curves(configs: Sequence[str], runs: list[dict], path: str | Path) -> None:
    """Validation accuracy per epoch of every configuration: mean over seeds, band from min to max.

    ``configs``: configuration names in legend order; ``runs``: one dict per run with ``config``
    and ``val_curve`` (accuracy per epoch), as :func:`ferkit.engine.sweep.collect_runs` gives them.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    n = len(configs)
    fig, ax = plt.subplots(figsize=(9 if n > 8 else 7.5, 4.5))
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    for i, name in enumerate(configs):
        curves = [r["val_curve"] for r in runs if r["config"] == name and r["val_curve"]]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        arr = np.full((len(curves), length), np.nan)  # (seeds, epochs); shorter runs padded with NaN
        for j, c in enumerate(curves):
            arr[j, : len(c)] = c
        ep = np.arange(1, length + 1)
        color = cmap(i % cmap.N)
        ax.plot(ep, np.nanmean(arr, 0), color=color, label=f"{name} (n={len(curves)})", lw=1.6,
                marker="o" if length <= 15 else None, ms=3)
        if len(curves) > 1:
            ax.fill_between(ep, np.nanmin(arr, 0), np.nanmax(arr, 0), color=color, alpha=0.18, lw=0)
    ax.set_xlabel("epoch"), ax.set_ylabel("validation accuracy"), ax.grid(alpha=0.3)
    ax.set_title("validation accuracy: mean over seeds, band = min to max", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweep_bars(rows: list[dict], path: str | Path) -> None:
    """Best val and test accuracy per configuration: bars at the mean, error bars one standard deviation.

    ``rows``: one dict per configuration with ``config``, ``n_seeds``, ``val_acc_mean``/``_std`` and
    ``test_acc_mean``/``_std``, as :func:`ferkit.engine.sweep.summarize_runs` gives them.
    """
    plt = pyplot()
    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * n + 2.5), 4.5))
    x = np.arange(n)
    w = 0.38
    bars = ((-w / 2, "val", "best val (selection)", "C0"), (w / 2, "test", "test at selected epoch", "C1"))
    for off, key, label, color in bars:
        means = np.array([r[f"{key}_acc_mean"] for r in rows], float)
        stds = np.nan_to_num(np.array([r[f"{key}_acc_std"] for r in rows], float))
        ax.bar(x + off, np.nan_to_num(means), w, yerr=stds, capsize=3, label=label, color=color, alpha=0.85)
    finite = [v for r in rows for v in (r["val_acc_mean"], r["test_acc_mean"]) if not math.isnan(v)]
    if finite:  # zoom on the range that differs; bars start below the lowest mean
        lo = max(0.0, min(finite) - 0.08)
        ax.set_ylim(lo, min(1.0, max(finite) + 0.06))
    ax.set_xticks(x, [f"{r['config']}\n(n={r['n_seeds']})" for r in rows], rotation=35 if n > 4 else 0,
                  ha="right" if n > 4 else "center", fontsize=8)
    ax.set_ylabel("accuracy"), ax.grid(axis="y", alpha=0.3), ax.legend(fontsize=8)
    ax.set_title("mean over seeds; error bars: one standard deviation", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
