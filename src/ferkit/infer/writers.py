"""Writers for recognition results: results.jsonl, annotated images and videos, emotion timelines.

All of them stream: a row or a frame is written as it comes, so a long video
needs constant memory. Each writer is a context manager.
"""

from __future__ import annotations

import csv
import json
import logging
import warnings
from pathlib import Path
from typing import TextIO

import cv2
import numpy as np

from ferkit.infer.results import FrameResult

log = logging.getLogger(__name__)


def _same_file(a: Path, b: Path | None) -> bool:
    if b is None:
        return False
    try:
        return a.resolve() == Path(b).resolve() or (a.exists() and Path(b).exists() and a.samefile(b))
    except OSError:
        return False


class _TextFileWriter:
    """A writer over one text file handle ``self._fh``: close() and use as a context manager."""

    _fh: TextIO

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JsonlWriter(_TextFileWriter):
    """``results.jsonl``: one JSON object per face per frame (see :meth:`FrameResult.records`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", encoding="utf-8")
        self.rows = 0

    def write(self, result: FrameResult) -> None:
        for rec in result.records():
            self._fh.write(json.dumps(rec) + "\n")
            self.rows += 1


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a results.jsonl back (one dict per face)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


class VideoWriter:
    """An MP4 (``mp4v``) video written frame by frame with cv2.VideoWriter.

    ``size`` is (width, height); frames of another size are resized to it.
    Raises RuntimeError when OpenCV cannot create the file.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], fourcc: str = "mp4v"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not fps or fps <= 0:
            raise ValueError(f"{self.path}: fps must be positive, got {fps}")
        self.fps, self.size = float(fps), (int(size[0]), int(size[1]))
        self._w = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), self.fps, self.size)
        if not self._w.isOpened():
            raise RuntimeError(f"{self.path}: OpenCV cannot write a {fourcc} video here (codec or folder not writable)")
        self.frames = 0

    def write(self, image_bgr: np.ndarray) -> None:
        if (image_bgr.shape[1], image_bgr.shape[0]) != self.size:
            image_bgr = cv2.resize(image_bgr, self.size, interpolation=cv2.INTER_AREA)
        if image_bgr.ndim == 2:
            image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
        self._w.write(np.ascontiguousarray(image_bgr))
        self.frames += 1

    def close(self) -> None:
        if self._w is not None:
            self._w.release()
            self._w = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AnnotatedImageWriter:
    """Annotated copies of images as ``root/<relative name>.jpg`` (the input's suffix replaced by .jpg).

    Two inputs that map to the same name in one run are both kept (``name_2.jpg``, ...),
    and an output is never written over an input file.
    """

    def __init__(self, root: str | Path, quality: int = 92):
        self.root = Path(root)
        self.quality = quality
        self._used: set[str] = set()
        self.written: list[Path] = []

    def path_for(self, name: str, source: Path | None = None) -> Path:
        rel = Path(name).with_suffix(".jpg")
        candidate, k = rel, 1
        while candidate.as_posix() in self._used or _same_file(self.root / candidate, source):
            k += 1
            candidate = rel.with_name(f"{rel.stem}_{k}{rel.suffix}")
        self._used.add(candidate.as_posix())
        return self.root / candidate

    def write(self, image_bgr: np.ndarray, name: str, source: Path | None = None) -> Path:
        path = self.path_for(name, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError(f"{path}: OpenCV could not encode the annotated image")
        buf.tofile(str(path))
        self.written.append(path)
        return path


class TimelineWriter(_TextFileWriter):
    """Emotion over time for a video: ``timeline.csv`` (one row per frame) and ``timeline.png``.

    A row holds ``frame, time_s, faces`` and the mean probability of each emotion
    over the frame's faces (empty when the frame has no face). With
    ``per_track=True`` the CSV holds one row per tracked face instead
    (``frame, time_s, track_id, <emotions>``) and the plot shows the mean.
    """

    def __init__(self, csv_path: str | Path, label_names: tuple[str, ...] | list[str], per_track: bool = False):
        self.path = Path(csv_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.label_names = list(label_names)
        self.per_track = per_track
        self._fh = open(self.path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._fh)
        key = ["track_id"] if per_track else ["faces"]
        self._csv.writerow(["frame", "time_s", *key, *self.label_names])
        self.rows = 0

    def write(self, result: FrameResult) -> None:
        if self.per_track:
            for f in result.faces:
                self._csv.writerow([result.frame, f"{result.time_s:.4f}", f.track_id,
                                    *(f"{f.probs.get(k, 0.0):.5f}" for k in self.label_names)])
                self.rows += 1
            return
        if result.faces:
            mean = np.mean([[f.probs.get(k, 0.0) for k in self.label_names] for f in result.faces], axis=0)
            values = [f"{v:.5f}" for v in mean]
        else:
            values = [""] * len(self.label_names)
        self._csv.writerow([result.frame, f"{result.time_s:.4f}", len(result.faces), *values])
        self.rows += 1


def plot_timeline(csv_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Plot a timeline CSV written by :class:`TimelineWriter`: mean probability per emotion over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ferkit.infer.render import emotion_colour

    with open(csv_path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    per_track = header[2] == "track_id"
    names = header[3:]
    # Mean over the faces of each frame; NaN where a frame has no face leaves a gap in the lines.
    frames: dict[int, tuple[float, list[np.ndarray]]] = {}
    for r in rows:
        vals = np.array([float(v) if v else np.nan for v in r[3:]])
        t, lst = frames.setdefault(int(r[0]), (float(r[1]), []))
        lst.append(vals)
    times = np.array([frames[k][0] for k in sorted(frames)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # frames without faces: a NaN on purpose
        probs = np.array([np.nanmean(frames[k][1], axis=0) for k in sorted(frames)]).reshape(len(times), len(names))

    fig, ax = plt.subplots(figsize=(10, 3.6))
    for j, name in enumerate(names):
        b, g, r = emotion_colour(name)
        ax.plot(times, probs[:, j], label=name, color=(r / 255, g / 255, b / 255), linewidth=1.4)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mean probability" + (" over tracks" if per_track else " over faces"))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)

