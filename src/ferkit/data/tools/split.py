"""``ferkit data split``: a stratified, seeded train/val/test split into a new folder."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ferkit.data.dataset import canonical_split
from ferkit.data.readers import split_from_name
from ferkit.data.tools._source import Item, Progress, read_input, track
from ferkit.data.tools._writer import DatasetWriter, log_report
from ferkit.data.tools.report import ToolReport


def _avoid_prefix_split(name: str, split: str) -> str:
    """A Kaggle FER2013 prefix decides the split when read back (PublicTest_ -> val), so a file dealt
    to another split gets that split's name in front: ``PublicTest_1.jpg`` in train -> ``train_PublicTest_1.jpg``."""
    return name if split_from_name(name, split) == split else f"{split}_{name}"


def split_dataset(
    data: str | Path,
    out: str | Path,
    val: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    from_splits: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> ToolReport:
    """Stratified, seeded split into ``out/train|val|test/<class>/``.

    The samples of ``from_splits`` (default: all) are pooled and dealt out per class:
    ``n * test`` to test and ``n * val`` to val (rounded half up), the rest to train. Samples of
    other splits keep their split. Files are copied unchanged (CSV rows are written as PNG).
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val={val}, test={test}: fractions must be >= 0 with val + test < 1")
    pool_splits = {canonical_split(s) for s in from_splits} if from_splits else None
    data = Path(data)
    writer = DatasetWriter(out, [data])
    src = read_input(data, progress)
    pooled: dict[str, list[Item]] = defaultdict(list)
    fixed: list[Item] = []
    for it in src.items:
        (pooled[it.label] if pool_splits is None or it.split in pool_splits else fixed).append(it)
    rng = np.random.default_rng(seed)
    assigned: list[tuple[Item, str]] = [(it, it.split) for it in fixed]
    for label in sorted(pooled):
        group = sorted(pooled[label], key=lambda it: it.origin)  # independent of directory listing order
        n = len(group)
        n_test, n_val = math.floor(n * test + 0.5), math.floor(n * val + 0.5)
        perm = rng.permutation(n)
        for rank, i in enumerate(perm):
            assigned.append((group[i], "test" if rank < n_test else "val" if rank < n_test + n_val else "train"))
    assigned.sort(key=lambda a: a[0].origin)
    with writer:
        for it, split in track(progress, assigned, len(assigned), "writing"):
            writer.add(it, split, it.label, _avoid_prefix_split(it.name, split))
    return log_report(writer.report("split", src))
