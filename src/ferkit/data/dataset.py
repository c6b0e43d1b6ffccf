"""The one in-memory form every reader produces: :class:`FerData`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ferkit import labels as L

# Splits are normalised to three names. FER2013: Training -> train,
# PublicTest -> val (checkpoint selection), PrivateTest -> test (reported).
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "publictest": "val",
    "test": "test",
    "testing": "test",
    "privatetest": "test",
}


# Not a split: every sample whatever its split, for scoring a folder root/<class>/* (which reads as all train).
ALL = "all"


def canonical_split(name: str, allow_all: bool = False) -> str:
    """Map a split name or alias (Training, PublicTest, valid, ...) to train/val/test; with ``allow_all``
    also accept ``"all"`` (every sample, for selecting what to score; never a split of a sample)."""
    key = str(name).strip().lower()
    if allow_all and key == ALL:
        return ALL
    if key not in SPLIT_ALIASES:
        also = f", or {ALL!r} for every image" if allow_all else ""
        raise ValueError(f"unknown split {name!r}; expected one of {sorted(SPLIT_ALIASES)}{also}")
    return SPLIT_ALIASES[key]


@dataclass
class FerData:
    """Decoded images with labels, splits and provenance.

    images: uint8 ``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB, all one size.
    labels: int64 ``(N,)`` index into ``label_names`` (the majority label for soft data).
    split:  ``(N,)`` str array of "train" / "val" / "test".
    sources: ``(N,)`` str array naming where each sample came from (relative path or ``file.csv:row``).
    soft:   optional float32 ``(N, K)`` label distribution (FER+ votes), rows sum to 1.
    """

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    label_names: tuple[str, ...]
    sources: np.ndarray
    soft: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.split = np.asarray(self.split, dtype=str)
        self.sources = np.asarray(self.sources, dtype=str)
        self.label_names = tuple(self.label_names)
        for name in ("labels", "split", "sources"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"FerData: {name} has {len(getattr(self, name))} entries for {n} images")
        if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
            raise ValueError(f"FerData: images must be uint8 (N,H,W) or (N,H,W,C), got {self.images.dtype} {self.images.shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.label_names)):
            raise ValueError("FerData: a label index is outside label_names")
        if self.soft is not None:
            self.soft = np.asarray(self.soft, dtype=np.float32)
            if self.soft.shape != (n, len(self.label_names)):
                raise ValueError(f"FerData: soft labels shape {self.soft.shape}, expected {(n, len(self.label_names))}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return 1 if self.images.ndim == 3 else self.images.shape[3]

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def select(self, index: np.ndarray) -> FerData:
        """A new FerData holding the samples at ``index`` (bool mask or integer indices)."""
        index = np.asarray(index)
        return FerData(
            images=self.images[index],
            labels=self.labels[index],
            split=self.split[index],
            label_names=self.label_names,
            sources=self.sources[index],
            soft=None if self.soft is None else self.soft[index],
            meta=dict(self.meta),
        )

    def subset(self, split: str) -> FerData:
        """Samples of one split (aliases such as PrivateTest accepted), or of all of them for ``"all"``."""
        split = canonical_split(split, allow_all=True)
        return self.select(np.ones(len(self), bool) if split == ALL else self.split == split)

    def splits(self) -> list[str]:
        present = set(self.split.tolist())
        return [s for s in SPLITS if s in present]

    def class_counts(self) -> dict[str, dict[str, int]]:
        """``{split: {class: count}}`` with every class listed (zero counts included)."""
        out = {}
        for s in self.splits():
            c = Counter(self.labels[self.split == s].tolist())
            out[s] = {name: int(c.get(i, 0)) for i, name in enumerate(self.label_names)}
        return out

    def remap(self, target: tuple[str, ...] | list[str] | str) -> FerData:
        """Map classes onto another label set by name; samples with no counterpart are dropped.

        Example: FER2013-7 -> ``"fer5"`` keeps angry/happy/neutral/sad/surprise.
        """
        target = L.resolve_labels(target)
        m = L.mapping(self.label_names, target)
        if (m < 0).all():
            raise ValueError(f"no class of {list(self.label_names)} exists in target {list(target)}")
        soft = None
        if self.soft is not None:
            keep_cols = np.where(m >= 0)[0]
            soft = np.zeros((len(self), len(target)), np.float32)
            soft[:, m[keep_cols]] = self.soft[:, keep_cols]
        new_labels = m[self.labels]
        keep = new_labels >= 0
        if soft is not None:
            mass = soft.sum(1)
            keep &= mass > 0
            soft = soft / np.maximum(mass, 1e-12)[:, None]
        out = FerData(
            images=self.images,
            labels=np.where(keep, new_labels, 0),
            split=self.split,
            label_names=target,
            sources=self.sources,
            soft=soft,
            meta=dict(self.meta),
        )
        return out.select(keep)

    def summary(self) -> str:
        """A Markdown class-count table (rows: classes, columns: splits)."""
        counts = self.class_counts()
        cols = list(counts)
        lines = ["| class | " + " | ".join(cols) + " | total |", "|---" * (len(cols) + 2) + "|"]
        for name in self.label_names:
            row = [counts[s][name] for s in cols]
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + f" | {sum(row)} |")
        tot = [sum(counts[s].values()) for s in cols]
        lines.append("| **total** | " + " | ".join(str(v) for v in tot) + f" | {sum(tot)} |")
        return "\n".join(lines)
