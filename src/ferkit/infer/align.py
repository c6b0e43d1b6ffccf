"""Face crops for the classifier: eye-levelled, square, with a margin, padded at image borders."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ferkit.infer.results import Detection


def eye_angle(landmarks: np.ndarray) -> float:
    """Angle in degrees of the line from the right eye to the left eye (YuNet order: landmarks[0], landmarks[1]).

    0 for level eyes; positive when the face is tilted clockwise on screen (image y points down).
    """
    (rx, ry), (lx, ly) = np.asarray(landmarks, dtype=np.float64)[:2]
    return math.degrees(math.atan2(ly - ry, lx - rx))


def crop_transform(det: Detection, margin: float, offset_y: float = 0.0, align: bool = True) -> tuple[np.ndarray, int]:
    """The 2x3 affine matrix taking image pixels to crop pixels, and the crop side.

    The crop is a square of side ``max(w, h) * (1 + 2 * margin)`` centred on the
    box, moved down by ``offset_y * max(w, h)`` (up when negative), and rotated
    about the box centre so the eyes are level when landmarks exist and ``align``.
    """
    x, y, w, h = det.box
    size = max(w, h)
    side = max(1, int(round(size * (1.0 + 2.0 * margin))))
    cx, cy = x + (w - 1) / 2.0, y + (h - 1) / 2.0 + offset_y * size  # pixel-centre coordinates
    half = (side - 1) / 2.0
    angle = eye_angle(det.landmarks) if align and det.landmarks is not None else 0.0
    if angle == 0.0:
        # No rotation: an integer shift, so the crop holds the image's own pixels (no interpolation blur).
        return np.array([[1.0, 0.0, round(half - cx)], [0.0, 1.0, round(half - cy)]]), side
    m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)  # positive angle turns the image counter-clockwise on screen
    m[:, 2] += (half - cx, half - cy)
    return m, side


def crop_faces(image_bgr: np.ndarray, detections: list[Detection], margin: float, offset_y: float = 0.0,
               align: bool = True) -> list[np.ndarray]:
    """BGR crops ``(S, S, 3)`` (S per face), one per detection, at the image's own resolution.

    The geometry (``margin``, ``offset_y``, ``align``) is :func:`crop_transform`'s; a model's calibrated
    geometry per detector is ``Preprocess.crop_for(detector_name)``. Parts of the square that
    fall outside the image repeat the border pixels, so faces at the edge keep
    their position in the crop instead of being shifted or squeezed.
    """
    crops = []
    for det in detections:
        m, side = crop_transform(det, margin, offset_y, align)
        crops.append(cv2.warpAffine(image_bgr, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return crops
