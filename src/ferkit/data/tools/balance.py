"""``ferkit data balance``: oversample the train split's smaller classes with augmented copies."""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

from ferkit.data.tools._source import Item, Progress, read_input, track
from ferkit.data.tools._writer import DatasetWriter, log_report
from ferkit.data.tools.report import ToolReport
from ferkit.imageio import read_image

log = logging.getLogger(__name__)


def _augment(images: list[np.ndarray], cfg, gen) -> list[np.ndarray]:
    """Augment uint8 images with :class:`~ferkit.data.augment.BatchAugment`, keeping each one's size."""
    import torch

    from ferkit.data.augment import BatchAugment

    out: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        by_shape[im.shape].append(i)
    for shape, idx in by_shape.items():
        h, w = shape[:2]
        side = max(h, w)  # BatchAugment outputs squares; other shapes are resized back below
        aug = BatchAugment(cfg, side)
        x = torch.from_numpy(np.stack([images[i] for i in idx]))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (B, C, H, W) uint8
        y = aug(x.float() / 255.0, gen)  # (B, C, side, side) float in [0, 1]
        y = (y * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
        y = y[:, 0] if len(shape) == 2 else y.permute(0, 2, 3, 1)
        for j, i in enumerate(idx):
            im = np.ascontiguousarray(y[j].numpy())
            out[i] = im if (h, w) == (side, side) else cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
    return out  # type: ignore[return-value]


def balance_dataset(
    data: str | Path,
    out: str | Path,
    target: int | str = "max",
    multiplier: float = 1.0,
    seed: int = 0,
    augment=None,
    progress: Progress | None = None,
) -> ToolReport:
    """Oversample the train split's smaller classes with augmented copies; other splits are copied as they are.

    Every class of the train split is brought up to ``target`` (``"max"``: the largest class)
    times ``multiplier`` files; classes already above it keep all their files (nothing is
    dropped). Originals are copied unchanged; each new file is ``<stem>_aug<k>.png``, the
    k-th augmented copy of ``<stem>`` (originals are used in turn, so each serves about equally).
    ``augment``: an :class:`~ferkit.data.augment.AugmentConfig` (default: its defaults).
    """
    import torch

    from ferkit.data.augment import AugmentConfig

    if multiplier <= 0:
        raise ValueError(f"multiplier must be > 0, got {multiplier}")
    if not (target == "max" or (isinstance(target, int) and not isinstance(target, bool) and target > 0)):
        raise ValueError(f"target must be 'max' or a positive number of images, got {target!r}")
    cfg = augment or AugmentConfig()
    data = Path(data)
    writer = DatasetWriter(out, [data])
    src = read_input(data, progress)
    train: dict[str, list[Item]] = defaultdict(list)
    for it in src.items:
        if it.split == "train":
            train[it.label].append(it)
    if not train:
        raise ValueError(f"{data}: no training samples to balance (splits found: {sorted({i.split for i in src.items})})")
    base = max(len(v) for v in train.values()) if target == "max" else int(target)
    goal = math.floor(base * multiplier + 0.5)
    classes = sorted({it.label for it in src.items})
    notes = [f"target: {goal} training files per class ({target} x {multiplier})"]
    for c in classes:
        if c not in train:
            notes.append(f"class {c} has no training files: nothing to oversample")
            log.warning("%s: class %s has no training files; it cannot be oversampled", data, c)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    augmented: dict[str, int] = {}
    with writer:
        for it in track(progress, src.items, len(src.items), "copying"):
            writer.add(it, it.split_dir, it.label)
        jobs = []  # (source item, copy number)
        for c in sorted(train):
            group = sorted(train[c], key=lambda it: it.origin)
            need = goal - len(group)
            if need <= 0:
                continue
            rounds = math.ceil(need / len(group))
            order = np.concatenate([rng.permutation(len(group)) for _ in range(rounds)])[:need]
            used: Counter = Counter()
            for i in order.tolist():
                used[i] += 1
                jobs.append((group[i], used[i]))
            augmented[c] = need

        def flush(part: list[tuple[Item, int]]) -> None:
            # decoded per chunk so memory stays flat however many copies are made
            imgs = [it.image if it.image is not None else read_image(it.path) for it, _ in part]
            for (it, k), img in zip(part, _augment(imgs, cfg, gen)):
                stem = os.path.splitext(it.name)[0]
                writer.add_image(img, it.split_dir, it.label, f"{stem}_aug{k:03d}.png", f"{it.origin} (augmented copy {k})")
            part.clear()

        part: list[tuple[Item, int]] = []
        for job in track(progress, jobs, len(jobs), "augmenting"):
            part.append(job)
            if len(part) == 256:
                flush(part)
        flush(part)
    return log_report(writer.report("balance", src, augmented=augmented, notes=notes))
