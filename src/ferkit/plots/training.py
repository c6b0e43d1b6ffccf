"""Plots written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferkit.plots._mpl import pyplot


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> None:
    """Loss and accuracy per epoch (train vs validation) side by side."""
    plt = pyplot()
    if not history:
        return
    ep = [h["epoch"] for h in history]
    # A line needs two points: a short run (one epoch draws none) marks each epoch's point as well.
    marker = "o" if len(ep) <= 20 else None
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ep, [h["train_loss"] for h in history], label="train", marker=marker)
    a.plot(ep, [h["val_loss"] for h in history], label="val", marker=marker)
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, [h["train_acc"] for h in history], label="train", marker=marker)
    b.plot(ep, [h["val_acc"] for h in history], label="val", marker=marker)
    best = int(np.argmax([h["val_acc"] for h in history]))
    b.scatter([ep[best]], [history[best]["val_acc"]], color="C1", zorder=3, label=f"best {history[best]['val_acc']:.3f}")
    b.set_xlabel("epoch"), b.set_ylabel("accuracy"), b.legend(), b.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: np.ndarray | list, labels: list[str], path: str | Path, title: str = "", normalize: bool = True) -> None:
    """Confusion matrix heat map; rows are true classes (normalised to recall when ``normalize``)."""
    plt = pyplot()
    cm = np.asarray(cm, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            txt = f"{shown[i, j]:.2f}\n({int(cm[i, j])})" if normalize else str(int(cm[i, j]))
            ax.text(j, i, txt, ha="center", va="center", fontsize=7, color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_class_counts(counts: dict[str, dict[str, int]], classes: list[str] | tuple[str, ...], path: str | Path, title: str = "") -> None:
    """Grouped bar chart: one group per class, one bar per split."""
    plt = pyplot()
    splits = list(counts)
    x = np.arange(len(classes))
    width = 0.8 / max(len(splits), 1)
    fig, ax = plt.subplots(figsize=(1.5 + 0.9 * len(classes), 4))
    for i, s in enumerate(splits):
        vals = [counts[s].get(c, 0) for c in classes]
        bars = ax.bar(x + (i - (len(splits) - 1) / 2) * width, vals, width, label=s)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
