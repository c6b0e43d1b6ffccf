"""How usable a detected face is for expression recognition: size, sharpness, head turn and detector score.

Every :class:`~ferkit.infer.results.Face` carries ``quality`` (the four measures) and ``low_quality``
(any measure past its :data:`LOW_QUALITY` threshold). The thresholds were chosen on SFEW-dev (film
faces, end to end with YuNet) so that flagged faces are measurably less often classified right; the
figures and the command are in ``docs/calibration.md``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ferkit.infer.results import Detection

BLUR_SIDE = 64  # the crop is measured at this side, so sharpness compares across face sizes

# A face is low quality when any measure is past its threshold (chosen on SFEW-dev: docs/calibration.md).
LOW_QUALITY = {
    "min_size_px": 40,  # the box's longer side, in pixels of the image
    "min_blur": 50.0,  # variance of the Laplacian of the grey crop at BLUR_SIDE px
    "max_abs_yaw_deg": 30.0,  # head turned further than this (from YuNet's landmarks)
    "min_detector_score": 0.85,
}


def yaw_degrees(landmarks: np.ndarray | None) -> float | None:
    """Approximate head yaw in degrees from 5 landmarks (eyes, nose tip, mouth corners; YuNet order), None
    without landmarks: the nose tip's sideways offset from the eyes' midpoint, as a share of half the eye
    distance, read as the sine of the turn. 0 for a frontal face, the sign gives the side."""
    if landmarks is None:
        return None
    lm = np.asarray(landmarks, np.float64)
    (rx, ry), (lx, ly), (nx, ny) = lm[0], lm[1], lm[2]
    ex, ey = lx - rx, ly - ry
    half = math.hypot(ex, ey) / 2
    if half < 1e-6:
        return None
    # the nose's offset along the eye line, from the eyes' midpoint (in-plane roll removed)
    off = ((nx - (rx + lx) / 2) * ex + (ny - (ry + ly) / 2) * ey) / (2 * half)
    return math.degrees(math.asin(max(-1.0, min(1.0, off / half))))


def blur_score(crop_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the crop in grey at :data:`BLUR_SIDE` px: low for blurred or tiny faces."""
    grey = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY) if crop_bgr.ndim == 3 else crop_bgr
    grey = cv2.resize(grey, (BLUR_SIDE, BLUR_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def face_quality(det: Detection, crop_bgr: np.ndarray) -> dict:
    """``{"detector_score", "size_px", "blur", "yaw_deg"}`` of a detection and its crop (yaw None without landmarks)."""
    yaw = yaw_degrees(det.landmarks)
    return {"detector_score": round(float(det.score), 4), "size_px": int(max(det.box[2], det.box[3])),
            "blur": round(blur_score(crop_bgr), 1), "yaw_deg": None if yaw is None else round(yaw, 1)}


def is_low_quality(q: dict, thresholds: dict | None = None) -> bool:
    """True when any measure of ``q`` (from :func:`face_quality`) is past its threshold (:data:`LOW_QUALITY`)."""
    t = LOW_QUALITY if thresholds is None else thresholds
    return bool(q["size_px"] < t["min_size_px"] or q["blur"] < t["min_blur"]
                or (q["yaw_deg"] is not None and abs(q["yaw_deg"]) > t["max_abs_yaw_deg"])
                or q["detector_score"] < t["min_detector_score"])
