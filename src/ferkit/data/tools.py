"""Dataset tools: class-count tables, stratified split, balancing by augmented
oversampling, relabelling, and FER2013 CSV <-> image-folder conversion.

Each tool reads a dataset (a FER2013-format CSV or an image folder, exactly as
:func:`ferkit.data.readers.load_dataset` sees it, ``labels.csv`` included) and
writes a *new* dataset. Guarantees, for every tool:

- Output goes to a new folder. A non-empty output folder, or one equal to or
  inside the input, is refused with :class:`FileExistsError`. The tool writes
  into a hidden sibling folder and renames it at the end, so a failed run
  leaves nothing behind.
- The input is never modified.
- No file is lost to a name collision (FER2013's own ``train/`` has two names
  used in two classes each): a second file with a name already written in the
  same folder is kept as ``<stem>-1<ext>`` (``-2``, ...), and the report lists it.
  Files in = files out, except classes a user drops on purpose (``relabel --to``).
- Unreadable files are reported by path and skipped; they never stop the run.

Each tool returns a :class:`ToolReport` (counts per split and class, what was
renamed, skipped or dropped); the CLI prints it. Library code only logs.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ferkit import labels as L
from ferkit.data.dataset import SPLIT_ALIASES, SPLITS, canonical_split
from ferkit.data.readers import scan_folder, split_from_name, load_dataset, read_fer2013_csv, read_label_csv
from ferkit.imageio import ImageReadError, is_image_file, read_image, to_model_channels, write_image

log = logging.getLogger(__name__)

# FER2013's names for the splits: the ``Usage`` column and the Kaggle file-name prefixes.
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
# The Kaggle layout keeps PublicTest and PrivateTest files together under test/.
KAGGLE_DIR = {"train": "train", "val": "test", "test": "test"}

# ``progress(iterable, total=..., desc=...)`` wraps a loop, e.g. ``functools.partial(tqdm, leave=False)``.
Progress = Callable[..., Iterable]


def _track(progress: Progress | None, it: Iterable, total: int, desc: str) -> Iterable:
    return progress(it, total=total, desc=desc) if progress else it


# ------------------------------------------------------------------ reports


def format_counts(counts: dict[str, dict[str, int]], classes: Sequence[str] | None = None) -> str:
    """A plain-text table of ``{split: {class: n}}``: one row per class, one column per split, totals."""
    cols = list(counts)
    if classes is None:
        classes = sorted({c for per in counts.values() for c in per})
    heads = [c or "(all)" for c in cols] + (["total"] if len(cols) != 1 else [])
    rows = []
    for name in classes:
        vals = [counts[s].get(name, 0) for s in cols]
        rows.append([name] + vals + ([sum(vals)] if len(cols) != 1 else []))
    tot = [sum(counts[s].values()) for s in cols]
    rows.append(["total"] + tot + ([sum(tot)] if len(cols) != 1 else []))
    w0 = max(len("class"), *(len(str(r[0])) for r in rows))
    widths = [max(len(h), *(len(str(r[i + 1])) for r in rows)) for i, h in enumerate(heads)]
    lines = ["class".ljust(w0) + "".join("  " + h.rjust(w) for h, w in zip(heads, widths))]
    for r in rows:
        lines.append(str(r[0]).ljust(w0) + "".join("  " + str(v).rjust(w) for v, w in zip(r[1:], widths)))
    return "\n".join(lines)


@dataclass
class ToolReport:
    """What a tool wrote.

    counts: ``{output split folder: {class: files written}}`` (``""`` for a layout without split
    folders; ``Training``/``PublicTest``/``PrivateTest`` for a CSV written by convert).
    files_in: readable input samples (files or CSV rows). files_out: files (or rows) written.
    renamed: ``(input, output)`` pairs kept under a new name after a name collision.
    dropped: ``{class: n}`` samples left out on purpose (``relabel`` to a smaller label set).
    augmented: ``{class: n}`` augmented copies added (``balance``).
    """

    tool: str
    out: Path
    counts: dict[str, dict[str, int]]
    files_in: int
    files_out: int
    skipped: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    augmented: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unit: str = "files"  # "rows" for a CSV

    def format(self, max_items: int = 10) -> str:
        """A human-readable summary: totals, the count table, collisions, skipped files, notes."""
        lines = [f"{self.tool}: wrote {self.files_out} {self.unit} to {self.out} (from {self.files_in} input samples)"]
        classes = sorted({c for per in self.counts.values() for c in per})
        lines.append(format_counts(self.counts, classes))
        if self.augmented:
            lines.append("augmented copies added: " + ", ".join(f"{c} {n}" for c, n in self.augmented.items()))
        if self.dropped:
            lines.append("left out on purpose: " + ", ".join(f"{c} {n}" for c, n in self.dropped.items()))
        if self.renamed:
            lines.append(f"{len(self.renamed)} name collision(s): kept under a new name")
            lines += [f"  {a} -> {b}" for a, b in self.renamed[:max_items]]
            if len(self.renamed) > max_items:
                lines.append(f"  ... and {len(self.renamed) - max_items} more")
        if self.skipped:
            lines.append(f"{len(self.skipped)} unreadable input(s) skipped:")
            lines += [f"  {s}" for s in self.skipped[:max_items]]
            if len(self.skipped) > max_items:
                lines.append(f"  ... and {len(self.skipped) - max_items} more")
        lines += self.notes
        return "\n".join(lines)


# ------------------------------------------------------------------ reading the input


@dataclass
class _Item:
    """One input sample."""

    label: str  # canonical class name
    split: str  # train / val / test
    split_dir: str  # the input's split folder ("test" holds val and test in the Kaggle layout); "" when flat
    name: str  # file name to write: the original name, or <Usage>_<row>.png for a CSV row
    origin: str  # where it came from, for messages: relative path, or file.csv:<line>
    path: Path | None = None  # the file to copy (folder input)
    image: np.ndarray | None = None  # decoded pixels (CSV input, or when the tool asked to keep them)


@dataclass
class _Input:
    path: Path
    kind: str  # "csv" or "folder"
    items: list[_Item]
    skipped: list[str]


def _label_keys(rel: str, split_layout: bool) -> list[str]:
    """Keys a ``labels.csv`` row may use for a file (as read_image_folder): the path relative to the
    root, and the path below its split folder (``<class>/<name>``); the bare name is tried separately."""
    return [rel] + (["/".join(rel.split("/")[1:])] if split_layout else [])


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _read_input(
    data: str | Path,
    progress: Progress | None = None,
    keep: Callable[[np.ndarray], np.ndarray] | None = None,
    csv_classes: tuple[str, ...] | str = L.FER2013,
) -> _Input:
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
            items.append(_Item(fd.label_names[lab], str(split), KAGGLE_DIR[str(split)], f"{USAGE[str(split)]}_{row}.png",
                               str(src), image=img))
        return _Input(path, "csv", items, list(fd.meta.get("skipped", [])))

    scanned = scan_folder(path)
    flat = not any(p.is_dir() and p.name.lower() in SPLIT_ALIASES for p in path.iterdir())
    override: dict[str, str] = {}
    csv_path = path / "labels.csv"
    if csv_path.is_file():
        override = read_label_csv(csv_path)
        log.info("labels from %s override folder labels (%d rows)", csv_path, len(override))
    by_name = Counter(f.name for f, _, _ in scanned)
    items, skipped = [], []
    for f, split, folder in _track(progress, scanned, len(scanned), "checking"):
        rel = f.relative_to(path).as_posix()
        # the same lookup as read_image_folder: full relative path, path below the split folder,
        # then the bare name when it is unique
        lab = next((override[k] for k in _label_keys(rel, not flat) if k in override), None)
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
        items.append(_Item(L.canonical(lab if lab is not None else folder), split, "" if flat else rel.split("/")[0],
                           f.name, rel, path=f, image=keep(img) if keep else None))
    for msg in skipped[:20]:
        log.warning("skipped %s", msg)
    if len(skipped) > 20:
        log.warning("... and %d more unreadable files skipped", len(skipped) - 20)
    if not items:
        raise ValueError(f"{path}: no readable images ({len(skipped)} files skipped)")
    return _Input(path, "folder", items, skipped)


# ------------------------------------------------------------------ writing the output


def _check_output(out: Path, inputs: Sequence[Path]) -> Path:
    """Refuse an output that is not new: non-empty, equal to an input, or inside an input folder."""
    res = out.resolve()
    for src in inputs:
        s = Path(src).resolve()
        if res == s or (s.is_dir() and s in res.parents):
            raise FileExistsError(f"{out}: the output is {'the input' if res == s else 'inside the input'} {src}; "
                                  "the tools never write into their input, give a new folder outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: output {'folder is not empty' if out.is_dir() else 'exists'}; give a new folder")
    return out


class _Writer:
    """Writes a new dataset folder: unique names, per split/class counts, atomic rename at the end."""

    def __init__(self, out: str | Path, inputs: Sequence[Path]):
        self.out = _check_output(Path(out), inputs)
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        self.taken: set[str] = set()
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.renamed: list[tuple[str, str]] = []
        self.written = 0

    def __enter__(self) -> _Writer:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)  # left by a killed earlier run of this same process id
        self.tmp.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        # every write went to a distinct name, so the folder must hold exactly that many files
        on_disk = sum(1 for p in self.tmp.rglob("*") if p.is_file())
        if on_disk != self.written:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise RuntimeError(f"{self.out}: wrote {self.written} files but {on_disk} are on disk; nothing was kept")
        if self.out.exists():
            self.out.rmdir()  # checked empty before
        self.tmp.rename(self.out)

    def _target(self, split_dir: str, label: str, name: str, origin: str) -> Path:
        folder = f"{split_dir}/{label}" if split_dir else label
        rel = f"{folder}/{name}"
        # lower-case keys: two names differing only in case would collide on macOS/Windows
        if rel.lower() in self.taken:
            stem, ext = os.path.splitext(name)
            k = 1
            while f"{folder}/{stem}-{k}{ext}".lower() in self.taken:
                k += 1
            rel = f"{folder}/{stem}-{k}{ext}"
            self.renamed.append((origin, rel))
            log.info("name collision: %s written as %s", origin, rel)
        self.taken.add(rel.lower())
        self.counts[split_dir][label] += 1
        self.written += 1
        dest = self.tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest

    def add(self, item: _Item, split_dir: str, label: str, name: str | None = None) -> None:
        """Copy the item's file unchanged, or write its pixels as PNG (CSV input)."""
        if item.path is not None and item.image is None:
            shutil.copyfile(item.path, self._target(split_dir, label, name or item.name, item.origin))
        else:
            name = os.path.splitext(name or item.name)[0] + ".png"
            write_image(self._target(split_dir, label, name, item.origin), item.image)

    def add_image(self, img: np.ndarray, split_dir: str, label: str, name: str, origin: str) -> None:
        write_image(self._target(split_dir, label, name, origin), img)

    def report(self, tool: str, src: _Input, **kw) -> ToolReport:
        order = {s: i for i, s in enumerate(SPLITS)}

        def key(s: str) -> tuple:
            return (order.get(SPLIT_ALIASES.get(s.lower(), ""), 9), s)

        counts = {s: dict(sorted(self.counts[s].items())) for s in sorted(self.counts, key=key)}
        return ToolReport(tool, self.out, counts, len(src.items), self.written, list(src.skipped), list(self.renamed), **kw)


def _log_report(rep: ToolReport) -> ToolReport:
    log.debug("%s: wrote %d %s to %s", rep.tool, rep.files_out, rep.unit, rep.out)
    return rep


# ------------------------------------------------------------------ stats


@dataclass
class DatasetStats:
    """Class counts of a dataset: ``counts`` is ``{split: {class: n}}`` with every class listed."""

    path: Path
    label_names: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    image_size: tuple[int, int]
    channels: int
    skipped: list[str] = field(default_factory=list)

    def table(self) -> str:
        return format_counts(self.counts, self.label_names)

    def format(self) -> str:
        n = sum(sum(c.values()) for c in self.counts.values())
        h, w = self.image_size
        lines = [f"{self.path}: {n} images, {h}x{w}, {'grey' if self.channels == 1 else 'RGB'}, {len(self.label_names)} classes",
                 self.table()]
        if self.skipped:
            lines.append(f"{len(self.skipped)} unreadable input(s) skipped, e.g. {self.skipped[0]}")
        return "\n".join(lines)


def dataset_stats(
    data: str | Path,
    labels: tuple[str, ...] | str | None = None,
    csv_path: str | Path | None = None,
    plot_path: str | Path | None = None,
) -> DatasetStats:
    """Class counts per split of ``data`` (optionally mapped onto ``labels`` by name, e.g. ``"fer5"``).

    ``csv_path`` writes the table as CSV (``class,<splits>,total``); ``plot_path`` a bar chart PNG.
    Neither may exist already or lie inside the input.
    """
    data = Path(data)
    for p in (csv_path, plot_path):
        if p is not None:
            _check_output(Path(p), [data])
            Path(p).parent.mkdir(parents=True, exist_ok=True)
    fd = load_dataset(data, labels=labels)
    st = DatasetStats(data, fd.label_names, fd.class_counts(), fd.image_size, fd.channels, list(fd.meta.get("skipped", [])))
    if csv_path is not None:
        cols = list(st.counts)
        with open(csv_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["class", *cols, "total"])
            for name in st.label_names:
                vals = [st.counts[s][name] for s in cols]
                w.writerow([name, *vals, sum(vals)])
            tot = [sum(st.counts[s].values()) for s in cols]
            w.writerow(["total", *tot, sum(tot)])
        log.info("wrote class counts to %s", csv_path)
    if plot_path is not None:
        from ferkit.plots import plot_class_counts  # matplotlib only when a plot is asked for

        plot_class_counts(st.counts, st.label_names, plot_path, title=data.name)
        log.info("wrote class-count chart to %s", plot_path)
    return st


# ------------------------------------------------------------------ split


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
    writer = _Writer(out, [data])
    src = _read_input(data, progress)
    pooled: dict[str, list[_Item]] = defaultdict(list)
    fixed: list[_Item] = []
    for it in src.items:
        (pooled[it.label] if pool_splits is None or it.split in pool_splits else fixed).append(it)
    rng = np.random.default_rng(seed)
    assigned: list[tuple[_Item, str]] = [(it, it.split) for it in fixed]
    for label in sorted(pooled):
        group = sorted(pooled[label], key=lambda it: it.origin)  # independent of directory listing order
        n = len(group)
        n_test, n_val = math.floor(n * test + 0.5), math.floor(n * val + 0.5)
        perm = rng.permutation(n)
        for rank, i in enumerate(perm):
            assigned.append((group[i], "test" if rank < n_test else "val" if rank < n_test + n_val else "train"))
    assigned.sort(key=lambda a: a[0].origin)
    with writer:
        for it, split in _track(progress, assigned, len(assigned), "writing"):
            writer.add(it, split, it.label, _avoid_prefix_split(it.name, split))
    return _log_report(writer.report("split", src))


# ------------------------------------------------------------------ balance


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
    writer = _Writer(out, [data])
    src = _read_input(data, progress)
    train: dict[str, list[_Item]] = defaultdict(list)
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
        for it in _track(progress, src.items, len(src.items), "copying"):
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

        def flush(part: list[tuple[_Item, int]]) -> None:
            # decoded per chunk so memory stays flat however many copies are made
            imgs = [it.image if it.image is not None else read_image(it.path) for it, _ in part]
            for (it, k), img in zip(part, _augment(imgs, cfg, gen)):
                stem = os.path.splitext(it.name)[0]
                writer.add_image(img, it.split_dir, it.label, f"{stem}_aug{k:03d}.png", f"{it.origin} (augmented copy {k})")
            part.clear()

        part: list[tuple[_Item, int]] = []
        for job in _track(progress, jobs, len(jobs), "augmenting"):
            part.append(job)
            if len(part) == 256:
                flush(part)
        flush(part)
    return _log_report(writer.report("balance", src, augmented=augmented, notes=notes))


# ------------------------------------------------------------------ relabel


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``["anger=angry", "disgust=angry"]`` -> ``{"angry": "angry", "disgust": "angry"}`` (canonical names)."""
    out = {}
    for p in pairs:
        old, sep, new = p.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ValueError(f"bad class mapping {p!r}; expected OLD=NEW, e.g. anger=angry")
        out[L.canonical(old)] = L.canonical(new)
    return out


def relabel_dataset(
    data: str | Path,
    out: str | Path,
    labels_csv: str | Path | None = None,
    mapping: dict[str, str] | Sequence[str] | None = None,
    to: tuple[str, ...] | str | None = None,
    progress: Progress | None = None,
) -> ToolReport:
    """Copy ``data`` with new class labels; the split layout is kept.

    Applied in order: ``labels_csv`` (``file,label`` rows; file is the path relative to the
    dataset root, the path below its split folder, or a bare name when unique; for a CSV input the
    name ``Training_<row>.png`` that convert gives it), then ``mapping`` (``{old: new}`` or
    ``["old=new", ...]``, merging or renaming classes), then ``to`` (a label set such as ``"fer5"``:
    classes outside it are dropped and counted in the report).
    """
    data = Path(data)
    inputs = [data] + ([Path(labels_csv)] if labels_csv else [])
    writer = _Writer(out, inputs)
    if mapping is not None and not isinstance(mapping, dict):
        mapping = parse_mapping(mapping)
    mapping = {L.canonical(k): L.canonical(v) for k, v in (mapping or {}).items()}
    target = L.resolve_labels(to) if to is not None else None
    if labels_csv is None and not mapping and target is None:
        raise ValueError("relabel: nothing to do; give a labels CSV, a class mapping (old=new) or a target label set")
    src = _read_input(data, progress)
    found = sorted({it.label for it in src.items})
    notes = []

    new_label = [it.label for it in src.items]
    if labels_csv is not None:
        table = read_label_csv(Path(labels_csv))
        by_name = Counter(it.name for it in src.items)
        used = set()
        for i, it in enumerate(src.items):
            keys = _label_keys(it.origin, it.split_dir != "") if src.kind == "folder" else []
            keys += [it.name] if by_name[it.name] == 1 else []
            hit = next((k for k in keys if k in table), None)
            if hit is not None:
                new_label[i] = L.canonical(table[hit])
                used.add(hit)
        unused = [k for k in table if k not in used]
        if unused:
            # a typo or a file missing from the dataset must not pass silently
            log.warning("%s: %d row(s) name no file of %s, e.g. %s", labels_csv, len(unused), data, unused[:3])
            notes.append(f"{len(unused)} row(s) of {labels_csv} matched no file, e.g. {unused[:3]}")
        notes.append(f"{len(used)} file(s) labelled from {labels_csv}")
    if mapping:
        present = set(found) | set(new_label)
        unknown = sorted(set(mapping) - present)
        if unknown:
            raise ValueError(f"class mapping names unknown class(es) {unknown}; the dataset's classes are {sorted(present)}")
        new_label = [mapping.get(v, v) for v in new_label]
    dropped: Counter = Counter()
    with writer:
        for it, lab in _track(progress, list(zip(src.items, new_label)), len(src.items), "copying"):
            if target is not None:
                idx = L.mapping([lab], target)[0]
                if idx < 0:
                    dropped[lab] += 1
                    continue
                lab = target[idx]
            writer.add(it, it.split_dir, lab)
    if dropped:
        notes.append(f"(classes not in {list(target)})")
    return _log_report(writer.report("relabel", src, dropped=dict(sorted(dropped.items())), notes=notes))


# ------------------------------------------------------------------ convert


def convert_dataset(
    data: str | Path,
    out: str | Path,
    classes: tuple[str, ...] | str = L.FER2013,
    size: int = 48,
    progress: Progress | None = None,
) -> ToolReport:
    """Convert between the FER2013 CSV and an image folder; the direction follows the input.

    - CSV (``emotion,pixels[,Usage]``) -> folder in the Kaggle layout: ``train/<class>/Training_<row>.png``,
      ``test/<class>/PublicTest_<row>.png``, ``test/<class>/PrivateTest_<row>.png`` (lossless PNG;
      ``<row>`` is the 0-based data row).
    - folder -> CSV in the original format: ``emotion,pixels,Usage`` with ``emotion`` indexing ``classes``
      (FER2013 order by default), ``size`` x ``size`` grey pixels (other images are converted to grey and
      resized, with a notice), rows ordered train/val/test, then by file name (numbers in natural order,
      so a CSV -> folder -> CSV round trip gives back the same file). ``out`` is the CSV file when it
      ends in ``.csv``, else a new folder that receives ``fer2013.csv``.
    """
    data = Path(data)
    classes = L.resolve_labels(classes)
    if data.is_file():
        writer = _Writer(out, [data])
        src = _read_input(data, progress, csv_classes=classes)
        with writer:
            for it in _track(progress, src.items, len(src.items), "writing"):
                writer.add(it, it.split_dir, it.label)
        return _log_report(writer.report("convert", src))

    out = Path(out)
    csv_out = out if out.suffix.lower() == ".csv" else out / "fer2013.csv"
    _check_output(out, [data])
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: dataset not found (expected a fer2013.csv file or an image folder)")
    changed = Counter()

    def to_grey(img: np.ndarray) -> np.ndarray:
        # (H, W) or (H, W, 3) -> (size, size) grey
        if img.ndim == 3:
            changed["colour"] += 1
            img = to_model_channels(img, 1)
        if img.shape != (size, size):
            changed["size"] += 1
            interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
            img = cv2.resize(img, (size, size), interpolation=interp)
        return img

    src = _read_input(data, progress, keep=to_grey)
    unknown = sorted({it.label for it in src.items} - set(classes))
    if unknown:
        raise ValueError(f"{data}: class(es) {unknown} are not in the CSV's label set {list(classes)}; "
                         "give classes= (CLI --classes), e.g. ferplus or a comma list")
    index = {c: i for i, c in enumerate(classes)}
    order = {s: i for i, s in enumerate(SPLITS)}
    items = sorted(src.items, key=lambda it: (order[it.split], _natural_key(it.name), it.origin))
    notes = []
    if changed:
        msg = (f"{changed['colour']} colour image(s) converted to grey, {changed['size']} image(s) resized to "
               f"{size}x{size} (the FER2013 CSV holds {size}x{size} grey pixels)")
        log.warning("%s: %s", data, msg)
        notes.append("notice: " + msg)
    csv_out.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv_out.with_name(f".{csv_out.name}.partial-{os.getpid()}")
    counts: dict[str, Counter] = defaultdict(Counter)
    try:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["emotion", "pixels", "Usage"])
            for it in _track(progress, items, len(items), "writing"):
                w.writerow([index[it.label], " ".join(map(str, it.image.ravel().tolist())), USAGE[it.split]])
                counts[USAGE[it.split]][it.label] += 1
        os.replace(tmp, csv_out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    rep = ToolReport("convert", csv_out, {s: dict(sorted(c.items())) for s, c in counts.items()}, len(src.items),
                     len(items), list(src.skipped), notes=notes, unit="rows")
    return _log_report(rep)
