"""Drawing results on images: a box per face, its label and confidence, and per-class probability bars.

Sizes scale with the image, so the overlay reads the same on a 640x360 video
frame and on a 2048-pixel photo. The input array is never modified.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import cv2
import numpy as np

from ferkit.infer.results import Face

# BGR colours per canonical emotion name; other names get a stable colour from their hash.
EMOTION_COLOURS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220),  # red
    "disgust": (40, 140, 40),  # green
    "fear": (160, 60, 150),  # purple
    "happy": (0, 210, 255),  # yellow
    "sad": (200, 120, 30),  # blue
    "surprise": (0, 140, 255),  # orange
    "neutral": (170, 170, 170),  # grey
    "uncertain": (96, 96, 96),  # dark grey: below --min-confidence, no answer given
    "contempt": (60, 90, 140),  # brown
}
FONT = cv2.FONT_HERSHEY_SIMPLEX


def emotion_colour(name: str) -> tuple[int, int, int]:
    """The BGR colour used for an emotion (stable for unknown names)."""
    if name in EMOTION_COLOURS:
        return EMOTION_COLOURS[name]
    h = zlib.crc32(name.encode())
    return (64 + h % 160, 64 + (h >> 8) % 160, 64 + (h >> 16) % 160)


def _ink(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``colour``."""
    b, g, r = colour
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def _scale(image: np.ndarray) -> float:
    """Overlay scale: 1.0 for a ~1000-pixel image, never so small that text becomes unreadable."""
    return max(0.45, max(image.shape[:2]) / 1000.0)


def draw_faces(image_bgr: np.ndarray, faces: Sequence[Face], bars: bool = True, show_track: bool = True) -> np.ndarray:
    """Return an annotated copy of ``image_bgr`` (grey input becomes BGR).

    Each face gets a box in its emotion's colour, ``#track label NN%`` above it,
    and, with ``bars``, a small panel of per-class probability bars beside it.
    """
    img = np.ascontiguousarray(image_bgr)
    out = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img[:, :, :3].copy()
    s = _scale(out)
    boxes = [tuple(int(v) for v in f.box) for f in faces]
    # Boxes, then bars, then tags: a tag is never hidden under another face's bars.
    for face, box in zip(faces, boxes):
        cv2.rectangle(out, box[:2], (box[0] + box[2], box[1] + box[3]), emotion_colour(face.label),
                      max(1, round(2 * s)), cv2.LINE_AA)
    if bars:
        panels: list[tuple[int, int, int, int]] = []
        for i, (face, box) in enumerate(zip(faces, boxes)):
            if face.probs:
                panel = _draw_bars(out, face, s, box, boxes[:i] + boxes[i + 1:] + panels)
                if panel is not None:
                    panels.append(panel)
    for face, box in zip(faces, boxes):
        _draw_tag(out, face, s, box, show_track)
    return out


def _draw_tag(out: np.ndarray, face: Face, s: float, box: tuple[int, int, int, int], show_track: bool) -> None:
    """``#track label NN%`` above the box (inside it when the box touches the top edge)."""
    W = out.shape[1]
    x, y = box[:2]
    colour = emotion_colour(face.label)
    fs, ft = 0.6 * s, max(1, round(1.5 * s))
    tag = f"{face.label} {100 * face.confidence:.0f}%"
    if show_track and face.track_id is not None:
        tag = f"#{face.track_id} {tag}"
    (tw, th), base = cv2.getTextSize(tag, FONT, fs, ft)
    pad = max(2, round(3 * s))
    ty = y - th - base - 2 * pad
    ty = ty if ty >= 0 else max(y, 0)
    tx = min(max(x, 0), max(W - tw - 2 * pad, 0))
    cv2.rectangle(out, (tx, ty), (tx + tw + 2 * pad, ty + th + base + 2 * pad), colour, -1)
    cv2.putText(out, tag, (tx + pad, ty + pad + th), FONT, fs, _ink(colour), ft, cv2.LINE_AA)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _draw_bars(out: np.ndarray, face: Face, s: float, box: tuple[int, int, int, int],
               others: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    """Per-class probability bars in a darkened panel right of the face, else left of it; returns the panel.

    In a crowd, a panel that would cover another face or panel is left out (the tag still gives
    label and confidence).
    """
    H, W = out.shape[:2]
    x, y, w, h = box
    fs, ft = 0.42 * s, max(1, round(s))
    names = list(face.probs)
    (nw, nh), base = cv2.getTextSize(max(names, key=len), FONT, fs, ft)
    pad = max(2, round(3 * s))
    row = nh + base + pad
    bar_len = round(70 * s)
    pw, ph = nw + bar_len + 3 * pad, row * len(names) + pad
    if pw > W or ph > H:
        return None
    py = min(max(y, 0), H - ph)
    for px in (x + w + pad, x - pad - pw):
        if 0 <= px <= W - pw and not any(_overlaps((px, py, pw, ph), o) for o in others):
            break
    else:
        return None
    roi = out[py:py + ph, px:px + pw]
    roi[:] = (0.45 * roi).astype(np.uint8)  # darken the panel background so text reads on any image
    for i, name in enumerate(names):
        p = float(face.probs[name])
        ry = py + pad + i * row
        cv2.putText(out, name, (px + pad, ry + nh), FONT, fs, (235, 235, 235), ft, cv2.LINE_AA)
        bx = px + 2 * pad + nw
        cv2.rectangle(out, (bx, ry + 1), (bx + bar_len, ry + nh), (80, 80, 80), -1)
        cv2.rectangle(out, (bx, ry + 1), (bx + max(1, round(bar_len * p)), ry + nh), emotion_colour(name), -1)
    return px, py, pw, ph
