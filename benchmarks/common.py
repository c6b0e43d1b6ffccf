"""What the benchmarks share: where the shared data is, FER2013's classes, loading and scoring its faces and
SFEW-dev end to end, and the timing statistics, system description and report writing of the speed benchmarks.

The shared folder is ``$FERKIT_SHARED``, else ``../shared`` beside the repository (as for the tests). Scripts
import this module and ferkit's public API, never each other.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ferkit.labels import FER2013

if TYPE_CHECKING:
    from ferkit.engine.preprocess import CropGeometry
    from ferkit.infer.recognizer import Recognizer

# torch, OpenCV and the rest of ferkit are imported where used: a script that only needs the paths (serve_load.py,
# ray_throughput.py) stays light.

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERKIT_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"

__all__ = ["DATA", "FER2013", "REPO", "SHARED", "YUNET"]  # FER2013: re-exported from ferkit.labels

# ------------------------------------------------------------------ FER2013 faces and SFEW-dev photos


def fer_split(root: Path, split: str, limit: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """One split's uint8 faces of a FER2013-layout dataset and their FER2013 class indices; a seeded ``limit``."""
    from ferkit.data.readers import load_dataset

    data = load_dataset(root).subset(split)
    idx = np.arange(len(data))
    if limit and limit < len(data):
        idx = np.sort(np.random.default_rng(seed).choice(len(data), limit, replace=False))
    names = list(data.label_names)
    y = np.array([FER2013.index(names[c]) for c in data.labels[idx]])
    return [data.images[i] for i in idx], y


def sfew_images(root: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """SFEW-dev's photos as BGR images and their FER2013 class indices."""
    import cv2

    from ferkit.data.readers import load_dataset

    data = load_dataset(root).subset("val")
    names = list(data.label_names)
    y = np.array([FER2013.index(names[c]) for c in data.labels])
    imgs = [cv2.cvtColor(im, cv2.COLOR_RGB2BGR) if im.ndim == 3 else cv2.cvtColor(im, cv2.COLOR_GRAY2BGR) for im in data.images]
    return imgs, y


# ------------------------------------------------------------------ scoring over FER2013's classes


def label_map_for(rec: Recognizer) -> np.ndarray:
    """Model class index -> FER2013 index (-1 for classes FER2013 lacks, e.g. FER+'s contempt)."""
    return np.array([FER2013.index(n) if n in FER2013 else -1 for n in rec.label_names])


def to_fer2013(probs: np.ndarray, label_map: np.ndarray) -> np.ndarray:
    """A model's probabilities ``(N, K)`` over FER2013's 7 classes ``(N, 7)``, renormalised over them (an 8-class
    FER+ model is scored on the 7 shared classes: its contempt never counts as an answer)."""
    out = np.zeros((len(probs), len(FER2013)), np.float32)
    keep = label_map >= 0
    out[:, label_map[keep]] = probs[:, keep]
    return out / np.maximum(out.sum(1, keepdims=True), 1e-12)


def shared_argmax(probs: np.ndarray, label_map: np.ndarray) -> np.ndarray:
    """The FER2013 class of each row's most probable class among those FER2013 has."""
    return to_fer2013(probs, label_map).argmax(1)


def classify(rec: Recognizer, images: list[np.ndarray], y: np.ndarray, lmap: np.ndarray) -> dict:
    from ferkit.metrics import classification_metrics

    probs = rec.classify_crops(images)
    pred = shared_argmax(probs, lmap)
    onehot = np.eye(len(FER2013), dtype=np.float32)[np.where(pred >= 0, pred, (y + 1) % len(FER2013))]
    m = classification_metrics(y, onehot, FER2013)
    return {"n": len(y), "accuracy": float((pred == y).mean()), "macro_f1": m["macro_f1"]}


def pct(v: float) -> str:
    return f"{100 * v:.2f} %"


# ------------------------------------------------------------------ end to end on scenes


@dataclass
class Scene:
    image: np.ndarray  # BGR
    label: int  # FER2013 index
    det: object | None  # the scored Detection, None when not found


def detect_scenes(images: list[np.ndarray], labels: np.ndarray, detector, pick: str) -> list[Scene]:
    """Run the detector once per image; ``pick``: "centre" (the box over the image centre) or "largest"."""
    from ferkit.infer.crop_search import pick_face

    return [Scene(img, int(y), pick_face(detector.detect(img), img, pick)) for img, y in zip(images, labels)]


def score_scenes(rec: Recognizer, scenes: list[Scene], geo: CropGeometry, label_map: np.ndarray) -> dict:
    """Accuracy (none found = wrong), accuracy on found faces, share found and macro-F1 over all faces."""
    from ferkit.infer.align import crop_faces
    from ferkit.metrics import classification_metrics

    found = [s for s in scenes if s.det is not None]
    crops = [crop_faces(s.image, [s.det], geo.margin, geo.offset_y, geo.align)[0] for s in found]
    probs = rec.classify_crops(crops) if crops else np.zeros((0, len(rec.label_names)), np.float32)
    pred = np.full(len(scenes), -1)
    fi = [i for i, s in enumerate(scenes) if s.det is not None]
    if len(fi):
        pred[fi] = shared_argmax(probs, label_map)
    y = np.array([s.label for s in scenes])
    onehot = np.zeros((len(scenes), len(FER2013)), np.float32)
    ok = pred >= 0
    onehot[np.where(ok)[0], pred[ok]] = 1.0
    onehot[~ok, (y[~ok] + 1) % len(FER2013)] = 1.0  # a missed face is a wrong answer for macro-F1 too
    m = classification_metrics(y, onehot, FER2013)
    return {"n": len(scenes), "found": float(ok.mean()), "accuracy": float((pred == y).mean()),
            "accuracy_found": float((pred[ok] == y[ok]).mean()) if ok.any() else float("nan"), "macro_f1": m["macro_f1"]}


# ------------------------------------------------------------------ timing and reports


def ms_stats(samples: list[float]) -> dict:
    s = np.asarray(samples)
    return {"median_ms": float(np.median(s)), "p10_ms": float(np.percentile(s, 10)), "p90_ms": float(np.percentile(s, 90)),
            "mean_ms": float(s.mean()), "calls": int(s.size)}


def system_info(threads: int) -> dict:
    import cv2
    import torch

    cpu = platform.processor()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads or "library defaults",
            "python": platform.python_version(),
            "torch": torch.__version__, "opencv": cv2.__version__, "numpy": np.__version__,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None



def parse_run_args(ap: argparse.ArgumentParser, rounds: int, threads: int | None = None) -> argparse.Namespace:
    """Add the timing and output options both benchmarks take, parse, and check ``--out`` / ``--fer-python``.

    ``threads``: the default of ``--threads`` (None: all cores; 0 stands for each library's own default)."""
    ap.add_argument("--rounds", type=int, default=rounds, help="alternating ferkit/fer timing rounds")
    ap.add_argument("--warmup", type=int, default=20, help="untimed calls before each timed round")
    ap.add_argument("--threads", type=int, default=(os.cpu_count() or 1) if threads is None else threads,
                    help="threads for every library on both sides" + (" (0: each library's default)" if threads == 0 else ""))
    ap.add_argument("--out", help="write results here as JSON, and the same name with .md as a Markdown report")
    args = ap.parse_args()
    if args.out and not args.out.endswith(".json"):
        raise SystemExit(f"--out {args.out}: expected a file name ending in .json")
    if args.fer_python and not Path(args.fer_python).is_file():
        raise SystemExit(f"--fer-python {args.fer_python}: no such file (set up fer's environment: benchmarks/README.md)")
    return args


def write_report(out: str, res: dict, report: str) -> None:
    """``res`` as JSON to ``out`` and ``report`` (Markdown) beside it, same name with .md."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    path.with_suffix(".md").write_text(report)
    print(f"wrote {path} and {path.with_suffix('.md')}")


# ------------------------------------------------------------------ main
