"""vs_peers' inputs with known faces: frames cut from the shared photos, group-photo windows, clip frames, and
the clip streamed through ``predict_stream``; faces found are matched against the faces present."""

from __future__ import annotations

import argparse
import ast
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from common import REPO

from ferkit.infer.detectors import YuNetDetector
from ferkit.infer.pipeline import predict_stream
from ferkit.infer.recognizer import Recognizer

TRUE_FACES_FILE = REPO / "tests" / "test_detectors.py"  # TRUE_FACES: every face a person counts in the photos
FRAME_W, FRAME_H = 640, 480
FACE_FRACTIONS = (0.42, 0.55, 0.7)  # face box height / frame height (0.42: ~200 px at 480, a person at a webcam)
GROUP_PHOTO = "test_image.jpg"  # six counted faces


def true_faces(path: Path = TRUE_FACES_FILE) -> dict[str, list[tuple[int, int]]]:
    """``TRUE_FACES`` of tests/test_detectors.py (photo -> centres of the faces a person counts), read, not imported."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TRUE_FACES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError(f"{path}: no TRUE_FACES table")


def _inside(box, point) -> bool:
    x, y, w, h = box
    return x <= point[0] < x + w and y <= point[1] < y + h


def match(boxes: list, present: list) -> tuple[int, int]:
    """``(present faces whose centre lies in a box, boxes holding no present face's centre)``."""
    found = sum(any(_inside(b, c) for b in boxes) for c in present)
    extra = sum(not any(_inside(b, c) for c in present) for b in boxes)
    return found, extra


def _cut(img: np.ndarray, cx: float, cy: float, win_h: float, size: tuple[int, int]) -> tuple[np.ndarray, Callable]:
    """A ``size`` (w, h) frame showing the window of height ``win_h`` centred on (cx, cy), padded black outside the
    image; and the map from image to frame coordinates."""
    w_out, h_out = size
    x0, y0 = int(round(cx - win_h * w_out / h_out / 2)), int(round(cy - win_h / 2))
    x1, y1 = x0 + int(round(win_h * w_out / h_out)), y0 + int(round(win_h))
    pad = [max(0, -y0), max(0, y1 - img.shape[0]), max(0, -x0), max(0, x1 - img.shape[1])]
    win = img[max(0, y0):min(y1, img.shape[0]), max(0, x0):min(x1, img.shape[1])]
    win = cv2.copyMakeBorder(win, *pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    interp = cv2.INTER_AREA if win.shape[0] > h_out else cv2.INTER_LINEAR
    sx, sy = w_out / (x1 - x0), h_out / (y1 - y0)
    return cv2.resize(win, size, interpolation=interp), lambda p: ((p[0] - x0) * sx, (p[1] - y0) * sy)


def _in_frame(points, size) -> list[tuple[float, float]]:
    return [p for p in points if 0 <= p[0] < size[0] and 0 <= p[1] < size[1]]


def one_face_frames(photos: Path, ref: YuNetDetector, size: tuple[int, int], faces: dict) -> list[dict]:
    """Frames of ``size`` with one counted face each, cut from the photos (module docstring, step 3)."""
    frames = []
    for name, centres in faces.items():
        img = cv2.imread(str(photos / name), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{photos / name}: not a readable image")
        full = ref.detect(img)
        for c in centres:
            boxes = [d.box for d in full if _inside(d.box, c)]
            if not boxes or boxes[0][3] < 70:  # too small to stand for a webcam face once scaled up
                continue
            x, y, w, h = boxes[0]
            for frac in FACE_FRACTIONS:  # tighter windows when a neighbour's face shows
                frame, to_frame = _cut(img, x + w / 2, y + h / 2, h / frac, size)
                present = _in_frame([to_frame(p) for p in centres], size)
                if len(present) == 1 and match([d.box for d in ref.detect(frame)], present) == (1, 0):
                    frames.append({"image": frame, "present": present, "source": name})
                    break
    if not frames:
        raise RuntimeError(f"{photos}: no {size[0]}x{size[1]} frame with exactly one face could be made")
    return frames


def group_frames(photos: Path, ref: YuNetDetector, size: tuple[int, int], faces: dict) -> list[dict]:
    """16:9 windows of the group photo holding all its counted faces, at three zooms, and their mirror images."""
    img = cv2.imread(str(photos / GROUP_PHOTO), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{photos / GROUP_PHOTO}: not a readable image")
    centres = faces[GROUP_PHOTO]
    boxes = [d.box for d in ref.detect(img) if any(_inside(d.box, c) for c in centres)]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    frames = []
    for zoom in (1.0, 1.1, 1.25):  # window height: the photo's 16:9 band, then wider views padded black
        win_h = img.shape[1] * size[1] / size[0] * zoom
        frame, to_frame = _cut(img, (x0 + x1) / 2, (y0 + y1) / 2, win_h, size)
        present = _in_frame([to_frame(p) for p in centres], size)
        if len(present) != len(centres):
            raise RuntimeError(f"{GROUP_PHOTO}: a {zoom}x window loses a face")
        for flip in (False, True):
            f, pts = (cv2.flip(frame, 1), [(size[0] - 1 - px, py) for px, py in present]) if flip else (frame, present)
            frames.append({"image": np.ascontiguousarray(f), "present": pts,
                           "source": f"{GROUP_PHOTO} x{zoom}{' mirrored' if flip else ''}"})
    return frames


def clip_reference(video: Path, ref: YuNetDetector) -> tuple[list[np.ndarray], list[list[tuple]]]:
    """The clip's frames and, per frame, the boxes YuNet finds at full resolution (the faces-present reference)."""
    cap = cv2.VideoCapture(str(video))
    frames, boxes = [], []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
        boxes.append([d.box for d in ref.detect(f)])
    cap.release()
    if not frames:
        raise ValueError(f"{video}: no frames could be read")
    return frames, boxes


def _centres(boxes, scale: float = 1.0) -> list[tuple[float, float]]:
    return [((x + w / 2) * scale, (y + h / 2) * scale) for x, y, w, h in boxes]


def crowd_frames(clip: list[np.ndarray], ref_boxes: list[list[tuple]], n: int = 8) -> list[dict]:
    """``n`` clip frames where the reference finds 5-7 faces, evenly spread, upscaled 2x (1280x720 from 640x360)."""
    pick = [i for i, b in enumerate(ref_boxes) if 5 <= len(b) <= 7]
    pick = [pick[j] for j in np.linspace(0, len(pick) - 1, min(n, len(pick))).round().astype(int)]
    return [{"image": cv2.resize(clip[i], None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR),
             "present": _centres(ref_boxes[i], 2.0), "source": f"clip frame {i}"} for i in pick]



class cv2_threads:
    """OpenCV's thread count for a block (None: leave it), restored after."""

    def __init__(self, n: int | None):
        self.n, self.old = n, cv2.getNumThreads()

    def __enter__(self):
        if self.n is not None:
            cv2.setNumThreads(self.n)

    def __exit__(self, *exc):
        if self.n is not None:
            cv2.setNumThreads(self.old)


def stream_pass(rec: Recognizer, video: Path, max_frames: int | None) -> tuple[float, list[list[tuple]]]:
    """Seconds of ``predict_stream(video, rec)`` with its defaults (nothing drawn), and each frame's boxes."""
    boxes = []
    t0 = time.perf_counter()
    for r in predict_stream(str(video), rec, max_frames=max_frames):
        boxes.append([f.box for f in r.faces])
    return time.perf_counter() - t0, boxes


def video_stats(seconds: list[float], boxes: list[list], ref: list[list]) -> dict:
    n = len(boxes)
    found = extra = 0
    for b, r in zip(boxes, ref):
        f, e = match(b, _centres(r))
        found, extra = found + f, extra + e
    return {"fps": n * len(seconds) / sum(seconds), "passes_s": [round(v, 2) for v in seconds], "frames": n,
            "found": found, "present": sum(len(r) for r in ref[:n]), "extra": extra}


# ------------------------------------------------------------------ helpers



def frame_rows(args: argparse.Namespace, work: Path, clip: list[np.ndarray], ref_boxes: list) -> dict[str, list[dict]]:
    """The rows of section 3: name -> frames (image, present centres, source), each written as PNG for fer."""
    photos, faces = Path(args.photos), true_faces()
    ref = YuNetDetector(args.yunet, min_face=0, max_side=None)
    rows = {
        "640x480, 1 face": one_face_frames(photos, ref, (640, 480), faces),
        "1280x720, 1 face": one_face_frames(photos, ref, (1280, 720), faces),
        "1280x720, 6 faces (group photo)": group_frames(photos, ref, (1280, 720), faces),
        "1280x720, 5-7 faces (clip frames, 2x)": crowd_frames(clip, ref_boxes),
        "1920x1080, 1 face": one_face_frames(photos, ref, (1920, 1080), faces),
    }
    for r, (name, frames) in enumerate(rows.items()):
        for i, f in enumerate(frames):
            f["path"] = str(work / f"row{r}_{i:02d}.png")
            cv2.imwrite(f["path"], f["image"])
    return rows

