"""Typed recognition results, shared by the Recognizer, sources, tracking, rendering and writers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Detection:
    """A face found by a detector, in pixels of the original image."""

    box: tuple[int, int, int, int]  # x, y, w, h
    score: float
    landmarks: np.ndarray | None = None  # (5, 2) float: right eye, left eye, nose tip, mouth corners (YuNet order)


UNCERTAIN = "uncertain"  # the label of a face whose top calibrated probability is below the asked minimum


def label_for(probs: dict[str, float], min_confidence: float = 0.0) -> str:
    """The label of a face: its most probable class, or :data:`UNCERTAIN` when that class's probability is
    below ``min_confidence`` (the one rule, used by the Recognizer and by the tracker after smoothing)."""
    best = max(probs, key=probs.__getitem__)
    return UNCERTAIN if probs[best] < min_confidence else best


@dataclass
class Face:
    """One recognised face."""

    box: tuple[int, int, int, int]  # x, y, w, h in pixels of the original image
    score: float  # detector confidence
    label: str  # most probable expression, or "uncertain" (below the Recognizer's min_confidence)
    probs: dict[str, float]  # expression -> calibrated probability, over the model's classes
    landmarks: np.ndarray | None = None
    track_id: int | None = None
    quality: dict | None = None  # detector_score, size_px, blur, yaw_deg (ferkit.infer.quality.face_quality)
    low_quality: bool | None = None  # quality below ferkit.infer.quality.LOW_QUALITY thresholds

    @property
    def confidence(self) -> float:
        """The top probability (also when the label is "uncertain")."""
        return max(self.probs.values())

    @property
    def expression(self) -> str:
        """The most probable class, even when the label says "uncertain"."""
        return max(self.probs, key=self.probs.__getitem__)

    def to_dict(self) -> dict:
        return {
            "track_id": self.track_id,
            "box": [int(v) for v in self.box],
            "score": round(float(self.score), 4),
            "label": self.label,
            "probs": {k: round(float(v), 5) for k, v in self.probs.items()},
            "landmarks": None if self.landmarks is None else np.round(self.landmarks, 1).tolist(),
            "quality": self.quality,
            "low_quality": self.low_quality,
        }


@dataclass
class FrameResult:
    """All faces of one frame (or one image) of a source."""

    source: str  # file path, "webcam:0", or a stream URL
    frame: int  # frame index (0 for a still image)
    time_s: float  # timestamp within the source (0.0 for a still image)
    faces: list[Face] = field(default_factory=list)
    image: np.ndarray | None = None  # the BGR frame, when kept for drawing
    name: str = ""  # the frame's name within its source: relative to a folder's root (for output file names)
    path: Path | None = None  # the image or video file it comes from; None for cameras and streams
    _lines: list[str] | None = field(default=None, init=False, repr=False, compare=False)

    def records(self) -> list[dict]:
        """One JSON-ready dict per face (the results.jsonl schema)."""
        return [{"source": self.source, "frame": self.frame, "time_s": round(self.time_s, 4), **f.to_dict()} for f in self.faces]

    def json_lines(self) -> list[str]:
        """:meth:`records` as JSON text, one line per face; made once, on the first call, and shared by every
        writer of the frame (so set ``source`` and the faces before)."""
        if self._lines is None:
            self._lines = [json.dumps(r) for r in self.records()]
        return self._lines
