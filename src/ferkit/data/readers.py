"""Dataset readers: FER2013 CSV, image folders (Kaggle layout, labels.csv), FER+ votes.

Every reader returns a :class:`~ferkit.data.dataset.FerData`. Unreadable files,
and images larger than the pixel limit (:func:`ferkit.imageio.current_max_pixels`,
checked in the header before decoding), are reported by path (a warning, and
``meta["skipped"]``) and skipped; they never stop the whole load.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import logging
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ferkit import labels as L
from ferkit.data import cache
from ferkit.data.dataset import SPLIT_ALIASES, FerData, canonical_split
from ferkit.imageio import (DEFAULT_MAX_PIXELS, ImageReadError, current_max_pixels, is_image_file, read_image,
                            resize_image, to_model_channels)

log = logging.getLogger(__name__)

# Kaggle FER2013 file names carry the original Usage split.
_KAGGLE_PREFIX = re.compile(r"^(Training|PublicTest|PrivateTest)_", re.IGNORECASE)
_PATH_COLUMNS = ("file", "path", "pth", "image", "filename", "file_name", "image_path", "jpg_path")
_LABEL_COLUMNS = ("label", "emotion", "expression", "class", "category")
FERPLUS_VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")


def _report_skipped(skipped: list[str]) -> None:
    for msg in skipped[:20]:
        log.warning("skipped %s", msg)
    if len(skipped) > 20:
        log.warning("... and %d more unreadable files skipped", len(skipped) - 20)


# ---------------------------------------------------------------- CSV files

# A FER2013-format row holds a whole image in one field, about 4 characters a pixel ("255 "): 48x48 is 9 KB, and
# `ferkit data convert --size 200` writes 160 KB, over the 128 KB Python's csv accepts by default. This allows a
# 2048x2048 grey image, and still stops a file that is no CSV (a missing closing quote) being read as one field.
CSV_FIELD_LIMIT = 32 * 2**20  # characters


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of each non-blank row of a CSV file, read as UTF-8 with or without the byte-order
    mark Excel writes. Raises ValueError naming the file and the line for text that is not UTF-8 or not CSV."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)  # process-wide; only ever raised
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            for row in reader:
                if row:  # a blank line is no row
                    yield reader.line_num, row
        except UnicodeDecodeError:
            line, byte = _first_non_utf8(path)
            raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x}); is it a CSV file? If so, save it "
                             "as CSV UTF-8") from None
        except csv.Error as exc:
            raise ValueError(f"{path}:{reader.line_num}: not a readable CSV row ({exc})") from None


def _first_non_utf8(path: Path) -> tuple[int, int]:
    """``(line number, byte)`` of the first byte of ``path`` that is not UTF-8 (the text reader decodes a whole
    chunk at once, so its own line count says nothing); ``(0, 0)`` when there is none."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    with open(path, "rb") as fh:
        while chunk := fh.read(2**20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return lines + exc.object[: exc.start].count(b"\n"), exc.object[exc.start]
            lines += chunk.count(b"\n")
    return 0, 0


# ---------------------------------------------------------------- FER2013 CSV


def read_fer2013_csv(path: str | Path, label_names: tuple[str, ...] | str = L.FER2013, use_cache: bool = True) -> FerData:
    """Read the original ``fer2013.csv`` (columns ``emotion,pixels[,Usage]``).

    ``emotion`` is an index into ``label_names`` (FER2013 order by default);
    ``Usage`` (Training/PublicTest/PrivateTest) becomes train/val/test, and all
    rows are train when the column is absent. The image size is the most common
    (square) pixel count; a row with another count is reported by line and skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file")
    names = L.resolve_labels(label_names)

    def build() -> FerData:
        with contextlib.closing(_csv_rows(path)) as reader:  # row by row: millions of rows are never held as text
            _, header = next(reader, (0, None))
            if header is None:
                raise ValueError(f"{path}: empty CSV; expected a header 'emotion,pixels,Usage'")
            cols = {c.strip().lower(): i for i, c in enumerate(header)}
            missing = [c for c in ("emotion", "pixels") if c not in cols]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; found {header}, expected 'emotion,pixels,Usage'")
            ie, ip, iu = cols["emotion"], cols["pixels"], cols.get("usage")
            need = max(ie, ip, -1 if iu is None else iu) + 1
            parsed, skipped = [], []
            for line_no, row in reader:
                try:
                    if len(row) < need:
                        raise ValueError(f"{len(row)} field(s), expected {len(header)} ({','.join(header)})")
                    pix = np.array(row[ip].split(), dtype=np.int64)
                    if pix.size == 0:
                        raise ValueError("no pixels")
                    if pix.min() < 0 or pix.max() > 255:
                        raise ValueError("pixel values outside 0..255")
                    lab = int(row[ie])
                    if not 0 <= lab < len(names):
                        raise ValueError(f"emotion {lab} outside 0..{len(names) - 1}")
                    split = canonical_split(row[iu]) if iu is not None else "train"
                except (ValueError, IndexError) as exc:
                    skipped.append(f"{path}:{line_no}: {exc}")
                    continue
                parsed.append((line_no, pix.astype(np.uint8), lab, split))
            images, labels, splits, sources = [], [], [], []
            if parsed:
                # the image size is the most common pixel count, so one damaged row (even the first) is
                # the row skipped, not all the others
                n_pix = Counter(len(p[1]) for p in parsed).most_common(1)[0][0]
                side = int(round(n_pix**0.5))
                if side * side != n_pix:
                    raise ValueError(f"{path}: most rows have {n_pix} pixels, which is not a square image")
            for line_no, pix, lab, split in parsed:
                if len(pix) != n_pix:
                    skipped.append(f"{path}:{line_no}: {len(pix)} pixels, expected {n_pix} ({side}x{side})")
                    continue
                images.append(pix.reshape(side, side))
                labels.append(lab)
                splits.append(split)
                sources.append(f"{path.name}:{line_no}")
        _report_skipped(skipped)
        if not images:
            raise ValueError(f"{path}: no valid rows ({len(skipped)} rows skipped)")
        return FerData(np.stack(images), labels, splits, names, sources, meta={"skipped": skipped, "reader": "fer2013_csv", "root": str(path)})

    data = cache.cached("fer2013csv", [path], {"labels": names}, build, use_cache)
    return data


# ------------------------------------------------------------- image folders


def split_from_name(fname: str, folder_split: str) -> str:
    m = _KAGGLE_PREFIX.match(fname)
    return canonical_split(m.group(1)) if m else folder_split


def _find_column(header: list[str], choices: tuple[str, ...], path: Path, what: str) -> int:
    low = [h.strip().lower() for h in header]
    for c in choices:
        if c in low:
            return low.index(c)
    raise ValueError(f"{path}: no {what} column; found {header}, expected one of {list(choices)}")


def read_label_csv(path: Path) -> dict[str, str]:
    """Read a (file, label) CSV into ``{relative path: label name}``."""
    rows = list(_csv_rows(path))
    if not rows:
        raise ValueError(f"{path}: empty label CSV; expected columns 'file,label'")
    ip = _find_column(rows[0][1], _PATH_COLUMNS, path, "file")
    il = _find_column(rows[0][1], _LABEL_COLUMNS, path, "label")
    out = {}
    for i, r in rows[1:]:
        if len(r) <= max(ip, il):
            raise ValueError(f"{path}:{i}: row has {len(r)} fields, expected at least {max(ip, il) + 1}")
        out[r[ip].strip().replace("\\", "/").lstrip("./")] = r[il].strip()
    return out


def scan_folder(root: Path) -> list[tuple[Path, str, str]]:
    """List (file, split, class folder) for ``root/<split>/<class>/*`` or ``root/<class>/*``."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not subdirs:
        raise ValueError(f"{root}: no class or split folders found; expected root/<split>/<class>/* or root/<class>/*")
    split_dirs = [p for p in subdirs if p.name.lower() in SPLIT_ALIASES]
    if split_dirs:
        other = [p.name for p in subdirs if p not in split_dirs]
        if other:
            log.info("%s: split folders %s found; ignoring other folders %s", root, [p.name for p in split_dirs], other)
        groups = [(d, canonical_split(d.name)) for d in split_dirs]
    else:
        groups = [(root, "train")]
    items = []
    for base, split in groups:
        for cdir in sorted(p for p in base.iterdir() if p.is_dir()):
            for f in sorted(cdir.rglob("*")):
                if f.is_file() and not f.name.startswith("."):
                    items.append((f, split_from_name(f.name, split), cdir.name))
    return items


def scan_named(root: Path, pattern: str) -> list[tuple[Path, str, str]]:
    """``(file, "train", class)`` for every image file under ``root``, the class read from its name by ``pattern``
    (group ``label``, else group 1) as a class name, synonym or two-letter code (:data:`ferkit.labels.CODES`)."""
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"--label-pattern {pattern!r} is not a regular expression: {exc}") from None
    if rx.groups < 1:
        raise ValueError(f"--label-pattern {pattern!r} has no group: put the class part of the name in (...)")
    items = []
    for f in sorted(root.rglob("*")):
        if not f.is_file() or f.name.startswith(".") or not is_image_file(f):
            continue
        m = rx.search(f.name)
        if m is None:
            raise ValueError(f"{f}: the file name does not match --label-pattern {pattern!r}")
        code = m.group("label") if "label" in rx.groupindex else m.group(1)
        items.append((f, "train", L.from_code(code)))
    return items


def _decode_all(files: list[Path], channels: int | None) -> list[np.ndarray | str]:
    """Decode files in threads (OpenCV releases the GIL); failures come back as messages."""

    def one(f: Path) -> np.ndarray | str:
        if not is_image_file(f):
            return f"{f}: not an image file (extension {f.suffix or 'none'})"
        try:
            return read_image(f, channels)
        except ImageReadError as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, files, chunksize=256))


def _common_size(imgs: list[np.ndarray], image_size: int | None) -> tuple[int, int]:
    if image_size:
        return int(image_size), int(image_size)
    (h, w), _ = Counter(im.shape[:2] for im in imgs).most_common(1)[0]
    return h, w


def read_image_folder(
    root: str | Path,
    label_names: tuple[str, ...] | str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    labels_csv: str | Path | None = None,
    use_cache: bool = True,
    label_pattern: str | None = None,
) -> FerData:
    """Read ``root/<split>/<class>/*`` (or ``root/<class>/*``) image folders.

    - ``label_pattern``: a regex instead of class folders: every image under ``root`` (flat or not) is one
      sample of the train split, its class the pattern's group ``label`` (else its first group) matched in
      the file name: a class name, a synonym or a two-letter code (JAFFE's ``KA.AN1.39.tiff``:
      ``'^[A-Z]+\\.([A-Z]{2})'``). A file the pattern does not match is an error naming it.

    - Kaggle FER2013 names ``PublicTest_*`` / ``PrivateTest_*`` set the split to val / test.
    - ``labels.csv`` (``file,label``) in ``root`` (or ``labels_csv``) overrides folder labels;
      its paths are relative to ``root`` (a bare file name matches when it is unique).
    - ``label_names``: the class order; default is a known vocabulary when the class
      names match one (FER2013's order for its 7 folders), else sorted names.
    - ``image_size``: resize everything to this square size; default the most common size
      (others are resized to it). ``channels``: 1 or 3; default 1 when every file is grey.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such dataset folder")
    items = scan_named(root, label_pattern) if label_pattern else scan_folder(root)
    if not items:
        raise ValueError(f"{root}: the class folders hold no files")
    csv_path = Path(labels_csv) if labels_csv else root / "labels.csv"
    files = [f for f, _, _ in items]
    fp_files = files + ([csv_path] if csv_path.is_file() else [])
    opts = {"labels": label_names, "size": image_size, "channels": channels, "csv": str(csv_path) if csv_path.is_file() else None}
    if label_pattern:
        opts["pattern"] = label_pattern
    if current_max_pixels() != DEFAULT_MAX_PIXELS:  # a file skipped as too large under one limit may load under another
        opts["max_pixels"] = current_max_pixels()

    def build() -> FerData:
        override = {}
        if csv_path.is_file():
            override = read_label_csv(csv_path)
            log.info("labels from %s override folder labels (%d rows)", csv_path, len(override))
        by_name = Counter(f.name for f in files)
        # in root/<class>/* the path below a split folder would be the bare name, which may not be unique
        has_split_dirs = any(p.is_dir() and p.name.lower() in SPLIT_ALIASES for p in root.iterdir())
        cls_of = []
        for f, _, folder in items:
            rel = f.relative_to(root).as_posix()
            rel_split = "/".join(rel.split("/")[1:]) if has_split_dirs else None
            lab = override.get(rel) or (override.get(rel_split) if rel_split else None)
            if lab is None and by_name[f.name] == 1:
                lab = override.get(f.name)
            cls_of.append(L.canonical(lab if lab is not None else folder))
        found = sorted(set(cls_of))
        if label_names is not None:
            names = L.resolve_labels(label_names)
            L.check_known(found, names, f"{root}: class folder/label")
        else:
            names = next((v for v in L.VOCABULARIES.values() if set(v) == set(found)), tuple(found))
        decoded = _decode_all(files, channels)
        ok = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
        skipped = [d for d in decoded if isinstance(d, str)]
        _report_skipped(skipped)
        if not ok:
            raise ValueError(f"{root}: no readable images ({len(skipped)} files skipped)")
        imgs = [decoded[i] for i in ok]
        ch = channels or (1 if all(im.ndim == 2 for im in imgs) else 3)
        h, w = _common_size(imgs, image_size)
        out = np.empty((len(imgs), h, w) if ch == 1 else (len(imgs), h, w, 3), np.uint8)
        for j, im in enumerate(imgs):
            out[j] = resize_image(to_model_channels(im, ch), (h, w))  # the interpolation rule Preprocess uses too
        idx = {n: i for i, n in enumerate(names)}
        return FerData(
            images=out,
            labels=[idx[cls_of[i]] for i in ok],
            split=[items[i][1] for i in ok],
            label_names=names,
            sources=[files[i].relative_to(root).as_posix() for i in ok],
            meta={"skipped": skipped, "reader": "image_folder", "root": str(root)},
        )

    data = cache.cached("folder", fp_files, opts, build, use_cache)
    if use_cache and data.meta.get("skipped"):
        log.warning("%s: %d unreadable files were skipped (see meta['skipped'])", root, len(data.meta["skipped"]))
    return data


# ------------------------------------------------------------------ FER+ votes


def ferplus_targets(votes: np.ndarray, mode: str = "majority") -> tuple[np.ndarray, np.ndarray]:
    """FER+ vote processing (as in Microsoft's FERPlus code).

    ``votes``: ``(N, 10)`` counts in FER+ column order (8 emotions, unknown, NF).
    Single votes are treated as noise and removed. ``majority`` keeps a sample
    only when one emotion has more than half the remaining votes; ``soft`` keeps
    it when the top vote is an emotion (not unknown / not-a-face) and returns the
    emotion vote distribution. Returns ``(keep mask (N,), soft (N, 8))``.
    """
    v = np.asarray(votes, dtype=np.float32).copy()
    v[v <= 1] = 0
    total = v.sum(1)
    top = v.argmax(1)
    emo = v[:, :8]
    if mode == "majority":
        keep = (top < 8) & (v.max(1) > 0.5 * total)
        soft = np.zeros_like(emo)
        soft[np.arange(len(v)), np.minimum(top, 7)] = 1.0
    elif mode == "soft":
        keep = (top < 8) & (emo.sum(1) > 0)
        soft = emo / np.maximum(emo.sum(1, keepdims=True), 1e-12)
    else:
        raise ValueError(f"unknown FER+ mode {mode!r}; expected 'majority' or 'soft'")
    return keep, soft


def _ferplus_votes(votes_csv: str | Path, images: str | Path, join_csv: str | Path | None,
                   use_cache: bool) -> tuple[FerData, np.ndarray, np.ndarray]:
    """``(base, votes (N, 10), has (N,))``: the FER2013 images of ``images`` with their FER+ vote rows
    (``has`` False where an image has no row; its votes are zeros)."""
    votes_csv, images = Path(votes_csv), Path(images)
    rows = [r for _, r in _csv_rows(votes_csv)]  # a BOM (Excel's CSV UTF-8) accepted, bad text named by file and line
    if not rows:
        raise ValueError(f"{votes_csv}: empty; expected fer2013new.csv with its header row")
    header = [h.strip().lower() for h in rows[0]]
    need = list(FERPLUS_VOTE_COLUMNS) + ["unknown", "nf"]
    missing = [c for c in need if c not in header]
    if missing:
        raise ValueError(f"{votes_csv}: missing vote column(s) {missing}; expected fer2013new.csv columns {need}")
    vote_idx = [header.index(c) for c in need]
    votes = np.array([[float(r[i]) for i in vote_idx] for r in rows[1:]], dtype=np.float32)

    if images.is_file():
        base = read_fer2013_csv(images, use_cache=use_cache)
        if len(base) != len(votes):
            raise ValueError(f"{images} has {len(base)} valid rows but {votes_csv} has {len(votes)}; they must be row-aligned")
        row_of = np.arange(len(base))
    else:
        if join_csv is None:
            raise ValueError("read_ferplus: a join table (join_csv, e.g. jpg_to_ferplus.csv) is needed for an image folder")
        base = read_image_folder(images, label_names=L.FER2013, use_cache=use_cache)
        with open(join_csv, newline="", encoding="utf-8-sig") as fh:  # with or without Excel's byte-order mark
            jrows = list(csv.DictReader(fh))
        if not jrows or "jpg_path" not in jrows[0] or "fer2013_rows" not in jrows[0]:
            raise ValueError(f"{join_csv}: expected columns jpg_path, fer2013_rows")
        # reused FER+ names list two rows; the later row's image is the one that exists
        join = {r["jpg_path"]: int(r["fer2013_rows"].split(";")[-1]) for r in jrows if r["fer2013_rows"].strip()}
        row_of = np.array([join.get(s, -1) for s in base.sources])
        log.info("FER+ join: %d of %d images have votes", int((row_of >= 0).sum()), len(base))
    has = row_of >= 0
    return base, np.where(has[:, None], votes[np.where(has, row_of, 0)], 0.0), has


def read_ferplus(
    votes_csv: str | Path,
    images: str | Path,
    join_csv: str | Path | None = None,
    mode: str = "majority",
    use_cache: bool = True,
) -> FerData:
    """FER+ labels on FER2013 images.

    ``votes_csv`` is ``fer2013new.csv`` (row-aligned with ``fer2013.csv``).
    ``images`` is either the original ``fer2013.csv`` (joined row by row) or a
    Kaggle image folder joined through ``join_csv`` (columns ``jpg_path`` and
    ``fer2013_rows``, e.g. ``jpg_to_ferplus.csv``). Samples whose votes say
    unknown / not-a-face are dropped the FER+ way (see :func:`ferplus_targets`).
    Labels are FER+'s 8 classes (with contempt).
    """
    base, votes, has = _ferplus_votes(votes_csv, images, join_csv, use_cache)
    keep, soft = ferplus_targets(votes, mode)
    keep &= has
    data = FerData(
        images=base.images,
        labels=soft.argmax(1),
        split=base.split,
        label_names=L.FERPLUS,
        sources=base.sources,
        soft=soft if mode == "soft" else None,
        meta={**base.meta, "reader": f"ferplus_{mode}", "votes": str(votes_csv)},
    )
    log.info("FER+ %s: kept %d of %d samples", mode, int(keep.sum()), len(keep))
    return data.select(keep)


def mix_ferplus(
    votes_csv: str | Path,
    images: str | Path,
    weight: float,
    join_csv: str | Path | None = None,
    use_cache: bool = True,
) -> FerData:
    """FER2013's labels and FER+'s votes at once: every FER2013 image keeps its label (7 classes), and its
    ``soft`` target is ``(1 - weight)`` x the label's one-hot + ``weight`` x the FER+ vote distribution over
    FER2013's 7 classes (contempt's votes left out, single votes dropped as in :func:`ferplus_targets`).
    Images without usable votes (no FER+ row, or unknown / not-a-face on top) keep the one-hot alone."""
    if not 0.0 < weight < 1.0:
        raise ValueError(f"mix_ferplus: weight must be in (0, 1), got {weight}")
    base, votes, has = _ferplus_votes(votes_csv, images, join_csv, use_cache)
    if tuple(base.label_names) != L.FER2013:
        base = base.remap(L.FER2013)
    keep, soft8 = ferplus_targets(votes, "soft")
    to7 = L.mapping(L.FERPLUS, L.FER2013)  # contempt -> -1
    dist = np.zeros((len(base), len(L.FER2013)), np.float32)
    for j, i in enumerate(to7):
        if i >= 0:
            dist[:, i] += soft8[:, j]
    mass = dist.sum(1)
    usable = keep & has & (mass > 0)
    dist = dist / np.maximum(mass, 1e-12)[:, None]
    onehot = np.eye(len(L.FER2013), dtype=np.float32)[base.labels]
    w = np.where(usable, weight, 0.0).astype(np.float32)[:, None]
    out = base.select(np.arange(len(base)))
    out.soft = (1.0 - w) * onehot + w * dist
    out.meta = {**base.meta, "reader": f"ferplus_mix_{weight:g}", "votes": str(votes_csv)}
    log.info("FER2013 labels mixed with FER+ votes (weight %.2f) on %d of %d images", weight, int(usable.sum()), len(base))
    return out


# ---------------------------------------------------------------- dispatcher


def load_dataset(
    path: str | Path,
    labels: tuple[str, ...] | str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    use_cache: bool = True,
    ferplus: str | None = None,
    ferplus_mode: str = "majority",
    join_csv: str | Path | None = None,
    ferplus_mix: float = 0.0,
    label_pattern: str | None = None,
) -> FerData:
    """Load any supported dataset from a path: a ``.csv`` file (FER2013 format) or an image folder.

    ``labels`` remaps classes by name afterwards (e.g. ``"fer5"``); ``ferplus``
    (a ``fer2013new.csv``) swaps in FER+ labels for the FER2013 images, or with
    ``ferplus_mix`` > 0 mixes its votes into FER2013's labels (:func:`mix_ferplus`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset not found (expected a fer2013.csv file or an image folder)")
    if label_pattern and (ferplus or path.is_file()):
        raise ValueError(f"{path}: label_pattern reads an image folder (labels in the file names), not a CSV or FER+ votes")
    if ferplus and ferplus_mix:
        data = mix_ferplus(ferplus, path, ferplus_mix, join_csv=join_csv, use_cache=use_cache)
    elif ferplus:
        data = read_ferplus(ferplus, path, join_csv=join_csv, mode=ferplus_mode, use_cache=use_cache)
    elif path.is_file():
        data = read_fer2013_csv(path, use_cache=use_cache)
    else:
        data = read_image_folder(path, image_size=image_size, channels=channels, use_cache=use_cache, label_pattern=label_pattern)
    if labels is not None:
        data = data.remap(labels)
    if image_size and data.image_size != (image_size, image_size):
        data = resize_data(data, image_size)
    if channels and data.channels != channels:
        data.images = np.stack([to_model_channels(im, channels) for im in data.images])
    return data


def resize_data(data: FerData, size: int) -> FerData:
    """Resize every image to ``size`` x ``size`` (:func:`ferkit.imageio.resize_image`, the rule Preprocess uses)."""
    imgs = np.stack([resize_image(im, size) for im in data.images])
    out = data.select(np.arange(len(data)))
    out.images = imgs
    return out
