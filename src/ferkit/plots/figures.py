"""Figures of images and time series: prediction galleries, saliency grids, emotion timelines."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ferkit.plots._mpl import pyplot


def heat_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 image with ``heat`` (``(H, W)`` in [0, 1]) blended over it in the 'jet' colour map."""
    import matplotlib

    rgb = np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image
    colours = matplotlib.colormaps["jet"](heat)[..., :3] * 255.0
    return np.clip((1 - alpha) * rgb + alpha * colours, 0, 255).astype(np.uint8)


def plot_image_grid(rows: list[tuple[str, list[tuple[np.ndarray, str]]]], n: int, path: str | Path, title: str) -> None:
    """One row per ``(row label, [(uint8 image, caption), ...])``, ``n`` columns; an empty row says "none"."""
    plt = pyplot()
    nrows = max(1, len(rows))
    fig, axes = plt.subplots(nrows, n, figsize=(max(n * 0.95 + 0.9, 5.5), nrows * 1.08 + 0.7), squeeze=False)
    for r in range(nrows):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if r >= len(rows):
                continue
            label, cells = rows[r]
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
            if c >= len(cells):
                if c == 0:
                    ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=7, color="grey", transform=ax.transAxes)
                continue
            im, cap = cells[c]
            ax.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(cap, fontsize=6, pad=2)
    # Wrapped to the figure's width (about 13 characters per inch at 8 pt): the subset line is long.
    width = max(20, int(fig.get_figwidth() * 13))
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.splitlines()), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_explanations(cells: list[dict], path: str | Path | BinaryIO, title: str = "", per_row: int | None = None) -> Path | BinaryIO:
    """A PNG grid (to a path or a binary file object): per image original | saliency | Grad-CAM overlay.

    ``cells``: dicts with ``image`` (uint8), ``saliency`` and ``gradcam`` (``(H, W)`` in [0, 1]), ``title`` and
    ``wrong`` (drawn in red)."""
    plt = pyplot()
    n = len(cells)
    per_row = per_row or (1 if n <= 3 else 2)
    rows = math.ceil(n / per_row)
    fig, axes = plt.subplots(rows, 3 * per_row, figsize=(3 * per_row * 1.75, rows * 2.1 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, e in enumerate(cells):
        r, c = divmod(i, per_row)
        a0, a1, a2 = axes[r, 3 * c], axes[r, 3 * c + 1], axes[r, 3 * c + 2]
        a0.imshow(e["image"], cmap="gray" if e["image"].ndim == 2 else None, vmin=0, vmax=255)
        a1.imshow(e["saliency"], cmap="inferno", vmin=0, vmax=1)
        a2.imshow(heat_overlay(e["image"], e["gradcam"]))
        a0.set_title(e["title"], fontsize=7, loc="left", color="firebrick" if e["wrong"] else "black")
        a1.set_title("saliency", fontsize=7)
        a2.set_title("Grad-CAM", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if isinstance(path, (str, Path)):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_timeline(times: np.ndarray, probs: np.ndarray, names: list[str], colours: list[tuple[float, float, float]],
                  path: str | Path, title: str = "", ylabel: str = "mean probability") -> Path:
    """Probability per emotion over time: ``probs`` ``(T, K)`` at ``times`` (s); NaN leaves a gap."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for j, name in enumerate(names):
        ax.plot(times, probs[:, j], label=name, color=colours[j], linewidth=1.4)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
