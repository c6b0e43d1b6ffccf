"""``ferkit data convert``: FER2013 CSV <-> image folder, lossless both ways."""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

from ferkit import labels as L
from ferkit.data.dataset import SPLITS
from ferkit.data.tools._source import USAGE, Progress, natural_key, read_input, track
from ferkit.data.tools._writer import DatasetWriter, check_output, log_report
from ferkit.data.tools.report import ToolReport
from ferkit.imageio import to_model_channels

log = logging.getLogger(__name__)


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
        writer = DatasetWriter(out, [data])
        src = read_input(data, progress, csv_classes=classes)
        with writer:
            for it in track(progress, src.items, len(src.items), "writing"):
                writer.add(it, it.split_dir, it.label)
        return log_report(writer.report("convert", src))

    out = Path(out)
    csv_out = out if out.suffix.lower() == ".csv" else out / "fer2013.csv"
    check_output(out, [data])
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

    src = read_input(data, progress, keep=to_grey)
    unknown = sorted({it.label for it in src.items} - set(classes))
    if unknown:
        raise ValueError(f"{data}: class(es) {unknown} are not in the CSV's label set {list(classes)}; "
                         "give classes= (CLI --classes), e.g. ferplus or a comma list")
    index = {c: i for i, c in enumerate(classes)}
    order = {s: i for i, s in enumerate(SPLITS)}
    items = sorted(src.items, key=lambda it: (order[it.split], natural_key(it.name), it.origin))
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
            for it in track(progress, items, len(items), "writing"):
                w.writerow([index[it.label], " ".join(map(str, it.image.ravel().tolist())), USAGE[it.split]])
                counts[USAGE[it.split]][it.label] += 1
        os.replace(tmp, csv_out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    rep = ToolReport("convert", csv_out, {s: dict(sorted(c.items())) for s, c in counts.items()}, len(src.items),
                     len(items), list(src.skipped), notes=notes, unit="rows")
    return log_report(rep)
