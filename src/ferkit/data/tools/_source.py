"""Reading a tool's input: every readable sample of a FER2013 CSV or an image folder, as the readers see it."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit import labels as L
from ferkit.data.dataset import SPLIT_ALIASES
from ferkit.data.readers import read_fer2013_csv, read_label_csv, scan_folder
from ferkit.imageio import ImageReadError, is_image_file, read_image

log = logging.getLogger(__name__)

# FER2013's names for the splits: the ``Usage`` column and the Kaggle file-name prefixes.
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
# The Kaggle layout keeps PublicTest and PrivateTest files together under test/.
KAGGLE_DIR = {"train": "train", "val": "test", "test": "test"}

# ``progress(iterable, total=..., desc=...)`` wraps a loop, e.g. ``functools.partial(tqdm, leave=False)``.
Progress = Callable[..., Iterable]


def track(progress: Progress | None, it: Iterable, total: int, desc: str) -> Iterable:
    """``it`` wrapped in ``progress`` (a progress bar), or as it is when there is none."""
    return progress(it, total=total, desc=desc) if progress else it


@dataclass
class Item:
    """One input sample."""

    label: str  # canonical class name
    split: str  # train / val / test
    split_dir: str  # the input's split folder ("test" holds val and test in the Kaggle layout); "" when flat
    name: str  # file name to write: the original name, or <Usage>_<row>.png for a CSV row
    origin: str  # where it came from, for messages: relative path, or file.csv:<line>
    path: Path | None = None  # the file to copy (folder input)
    image: np.ndarray | None = None  # decoded pixels (CSV input, or when the tool asked to keep them)


@dataclass
class Source:
    """A tool's input dataset: every readable sample, and the unreadable ones by message."""

    path: Path
    kind: str  # "csv" or "folder"
    items: list[Item]
    skipped: list[str]


def label_keys(rel: str, split_layout: bool) -> list[str]:
    """Keys a ``labels.csv`` row may use for a file (as read_image_folder): the path relative to the
    root, and the path below its split folder (``<class>/<name>``); the bare name is tried separately."""
    return [rel] + (["/".join(rel.split("/")[1:])] if split_layout else [])


def natural_key(name: str) -> list:
    """Sort key that orders numbers by value: ``Training_9.png`` before ``Training_10.png``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def read_input(
    data: str | Path,
    progress: Progress | None = None,
    keep: Callable[[np.ndarray], np.ndarray] | None = None,
    csv_classes: tuple[str, ...] | str = L.FER2013,
) -> Source:
    """List every readable sample of ``data`` (decoding each file once to check it).

    ``keep`` (folder input) transforms and keeps the decoded image; otherwise it is dropped
    and the file is later copied byte for byte.
    """
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset not found (expected a fer2013.csv file or an image folder)")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise ValueError(f"{path}: not a dataset; expected a FER2013-format .csv file or an image folder")
        fd = read_fer2013_csv(path, label_names=csv_classes)
        items = []
        for img, lab, split, src in zip(fd.images, fd.labels, fd.split, fd.sources):
            row = int(str(src).rsplit(":", 1)[1]) - 2  # source is file.csv:<line>; line 2 is data row 0
            items.append(Item(fd.label_names[lab], str(split), KAGGLE_DIR[str(split)], f"{USAGE[str(split)]}_{row}.png",
                              str(src), image=img))
        return Source(path, "csv", items, list(fd.meta.get("skipped", [])))

    scanned = scan_folder(path)
    flat = not any(p.is_dir() and p.name.lower() in SPLIT_ALIASES for p in path.iterdir())
    override: dict[str, str] = {}
    csv_path = path / "labels.csv"
    if csv_path.is_file():
        override = read_label_csv(csv_path)
        log.info("labels from %s override folder labels (%d rows)", csv_path, len(override))
    by_name = Counter(f.name for f, _, _ in scanned)
    items, skipped = [], []
    for f, split, folder in track(progress, scanned, len(scanned), "checking"):
        rel = f.relative_to(path).as_posix()
        # the same lookup as read_image_folder: full relative path, path below the split folder,
        # then the bare name when it is unique
        lab = next((override[k] for k in label_keys(rel, not flat) if k in override), None)
        if lab is None and by_name[f.name] == 1:
            lab = override.get(f.name)
        if not is_image_file(f):
            skipped.append(f"{f}: not an image file (extension {f.suffix or 'none'})")
            continue
        try:
            img = read_image(f)
        except ImageReadError as exc:
            skipped.append(str(exc))
            continue
        items.append(Item(L.canonical(lab if lab is not None else folder), split, "" if flat else rel.split("/")[0],
                          f.name, rel, path=f, image=keep(img) if keep else None))
    for msg in skipped[:20]:
        log.warning("skipped %s", msg)
    if len(skipped) > 20:
        log.warning("... and %d more unreadable files skipped", len(skipped) - 20)
    if not items:
        raise ValueError(f"{path}: no readable images ({len(skipped)} files skipped)")
    return Source(path, "folder", items, skipped)
