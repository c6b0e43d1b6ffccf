"""ferkit against the `fer` package (PyPI ``fer``, Justin Shenk), side by side in one run.

    python benchmarks/vs_peers.py --fer-python FER_VENV/bin/python --out /tmp/vs_peers.json
    python benchmarks/vs_peers.py --fer-python FER_VENV/bin/python --limit 300 --frames 50 --latency-calls 200 \
        --rounds 2 --lever-frames 10 --video-rounds 1 --video-lever-frames 30            # a quick check

fer runs in its own virtual environment (TensorFlow; see benchmarks/README.md), in a subprocess
(``benchmarks/_fer_worker.py``) that this script drives over JSON lines. Both sides get the same
inputs and are timed by the same function (``time_calls`` in _fer_worker.py: warm-up calls, then
every call timed alone), in alternating rounds, because this machine is shared and its load drifts.
Threads: by default each library keeps its own defaults (ferkit's ``Recognizer()``, fer's ``FER()``:
the comparison of defaults); ``--threads N`` gives N to torch / ONNX Runtime / TFLite / TensorFlow /
OpenCV on both sides.

What is measured
----------------
1. Accuracy and macro-F1 on FER2013 PrivateTest: the 3,589 48x48 crops
   ``fer2013/test/<class>/PrivateTest_*.jpg`` (``--limit N``: a seeded random N of them).
   ferkit: the model (default: the shipped one) through ``Recognizer.classify_crops``, which applies
   the checkpoint's own Preprocess. Classes are matched by name; fer's outputs are
   0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral (``FER._get_labels``), which
   are FER2013's own names and order, so the mapping is the identity.
2. Per-face classifier latency, batch 1, the median over many calls after warm-up:
   ``crop`` = a 48x48 crop to probabilities, each library's own resize/normalise included
   (ferkit: ``classify_crops([crop])``; fer: its post-crop steps + ``FER._classify_emotions``);
   ``model`` = the network call alone on a ready input tensor.
   ferkit's compared backend is the first of ``--backends``: by default ``onnx-int8``, the shipped
   model quantized to int8 (fer's TFLite model is quantized too, and ``Recognizer()`` runs it on a
   CPU); every backend's accuracy is measured in step 1, so what int8 costs in accuracy is in the
   same report.
3. Frames/s on the frames users have, one row per kind of frame, detection + crop + classification
   of every face, one frame per call: ferkit's ``Recognizer()`` with its defaults against fer's
   ``FER().detect_emotions(frame)`` (Haar cascade + TFLite). Rows:

   - 640x480, 1280x720 and 1920x1080 BGR frames with one real face, cut from ../shared/data/photos
     around each face a person counts there (``TRUE_FACES`` in tests/test_detectors.py), the face
     0.42 of the frame's height (a person at a webcam; 0.55 or 0.7 where a neighbour's face would
     show), the rest of the window padded black where it leaves the photo; kept only where exactly
     one counted face lies in the frame and YuNet at full size finds exactly it;
   - 1280x720 with 6 faces: 16:9 windows of test_image.jpg holding its six counted faces, at three
     zooms, and their mirror images;
   - 1280x720 with 5-7 faces: frames of the shared clip where YuNet finds 5-7 faces, upscaled 2x.

   Faces present: the counted faces of the photos, and for clip frames the faces YuNet finds at the
   clip's full resolution (score >= 0.6, no minimum size; the reference, not a ground truth). A
   face is found when its centre lies in one of the pipeline's boxes; a box holding no present face
   is counted as extra. So a speed-up can never come from missing faces unseen.
4. The shared clip as a file: ferkit's ``predict_stream(clip, Recognizer())`` with its defaults
   (tracking, smoothing, scene cuts; nothing drawn) against fer's own video analysis
   (``fer.classes.Video(clip).analyze(FER())``, nothing saved or drawn), each timed from opening the
   file to the last frame (decoding included), whole passes in alternating rounds; faces found per
   frame against YuNet's at full resolution, as above.
5. Levers: ferkit variants on the same rows and the clip, each changing one default (or bringing
   back the defaults before issue 17), to show what each choice buys and what it costs in faces
   found: ``min_face``, YuNet on OpenCV instead of ONNX Runtime, the torch classifier instead of
   int8, Haar, and thread counts with the machine's other work running.

How fer is given a FER2013 crop (read from fer 25.10.3, fer/fer.py)
-------------------------------------------------------------------
``FER.detect_emotions(img, face_rectangles)`` turns the image grey, pads it by 40 px of the mean of
its bottom two rows, makes each box square, widens it by ``offsets`` = 10 px on every side, crops,
resizes to 64x64 (cv2.resize, bilinear), scales to [-1, 1] and calls ``FER._classify_emotions``
(by default the quantized TFLite mini-Xception, ``use_tflite=True``); scores come back rounded to
2 decimals. Its model (oarriaga/face_classification's FER2013 mini-Xception) was trained on whole
48x48 FER2013 images resized to 64x64 with that same scaling, and a FER2013 image already is a face
crop framed by a face detector. So fer is scored three ways, always on its unrounded scores
(rounding creates ties):

- ``tflite_whole``: the whole crop through fer's own post-crop steps and classifier call: the view
  its model was trained on, and what its pipeline does with a face box that frames the face the way
  FER2013 does.
- ``tflite_pipeline``: literally ``detect_emotions(crop, face_rectangles=[(0, 0, 48, 48)])``. Here the
  fixed 10-px offsets add 21% of flat grey per side to a 48-px box (on a real frame they add real
  context, about 5% of a 200-px face); it shows what that costs, it is not the comparison.
- ``keras_whole``: the original Keras model (``emotion_model.hdf5``, ``FER(use_tflite=False)``) on the
  whole crop.

ferkit's accuracy is compared with the best of the three; latency and frame rates use ``FER()`` as
a user gets it (TFLite). Targets: higher accuracy than fer (issue 3); ferkit's defaults against
fer's, in one run (issue 17): at least 5x fer's frames/s at 640x480 and 1280x720 with one face, at
least 3x with 5-7 faces, at least 100 frames/s at 640x480 on 2 cores, and in every row at least as
many faces found as fer.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from _fer_worker import time_calls  # the one timing protocol, shared with the fer side
from ferkit.infer.detectors import YuNetDetector
from ferkit.infer.pipeline import predict_stream
from ferkit.infer.recognizer import Recognizer, TorchClassifier, torch_threads
from ferkit.labels import FER2013, canonical, mapping
from ferkit.metrics import classification_metrics

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FERKIT_SHARED", REPO.parent / "shared"))
WORKER = Path(__file__).resolve().parent / "_fer_worker.py"
TRUE_FACES_FILE = REPO / "tests" / "test_detectors.py"  # TRUE_FACES: every face a person counts in the photos
FRAME_W, FRAME_H = 640, 480
FACE_FRACTIONS = (0.42, 0.55, 0.7)  # face box height / frame height (0.42: ~200 px at 480, a person at a webcam)
GROUP_PHOTO = "test_image.jpg"  # six counted faces
FER_NAME = "fer FER()"
DEFAULT_NAME = "ferkit Recognizer()"


# ------------------------------------------------------------------ the fer subprocess


class FerWorker:
    """``_fer_worker.py`` running in fer's virtual environment; :meth:`ask` sends one request, returns its reply."""

    def __init__(self, python: str, log_path: Path):
        if not Path(python).is_file():
            raise FileNotFoundError(f"{python}: no such Python for the fer environment (see benchmarks/README.md)")
        self.log_path = log_path
        self._log = open(log_path, "w")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([python, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=env)

    def ask(self, cmd: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self._log.flush()
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the fer worker exited during {cmd!r}; its log ({self.log_path}) ends with:\n{tail}")
        rep = json.loads(line)
        if not rep.pop("ok"):
            raise RuntimeError(f"fer worker: {rep['error']} (details in {self.log_path})")
        return rep

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
        self._log.close()


# ------------------------------------------------------------------ inputs: FER2013 crops


def load_crops(fer_root: Path, limit: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """PrivateTest crops ``(N, 48, 48)`` uint8 grey, labels (FER2013 indices) and relative paths."""
    test = fer_root / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{test}: no FER2013 test folder (expected the Kaggle layout test/<class>/PrivateTest_*.jpg)")
    items = []
    for cdir in sorted(p for p in test.iterdir() if p.is_dir()):
        idx = FER2013.index(canonical(cdir.name)) if canonical(cdir.name) in FER2013 else None
        if idx is None:
            raise ValueError(f"{cdir}: class folder {cdir.name!r} is not a FER2013 class {list(FER2013)}")
        items += [(p, idx) for p in sorted(cdir.glob("PrivateTest_*.jpg"))]
    if not items:
        raise FileNotFoundError(f"{test}: no PrivateTest_*.jpg files")
    if limit:
        pick = np.random.default_rng(seed).permutation(len(items))[:limit]
        items = [items[i] for i in sorted(pick)]
    crops = []
    for p, _ in items:
        im = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise ValueError(f"{p}: not a readable image")
        crops.append(im)
    return np.stack(crops), np.array([i for _, i in items]), [str(p.relative_to(fer_root)) for p, _ in items]


# ------------------------------------------------------------------ inputs: frames with known faces


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


# ------------------------------------------------------------------ ferkit pipelines


class Built(dict):
    """name -> ``(recognizer, OpenCV threads while it runs or None)``, each built on first use."""

    def __init__(self, builders: dict[str, Callable[[], tuple[Recognizer, int | None]]]):
        super().__init__()
        self.builders = builders

    def __missing__(self, name: str) -> tuple[Recognizer, int | None]:
        self[name] = self.builders[name]()
        return self[name]


def variants(args: argparse.Namespace) -> dict[str, Callable[[], tuple[Recognizer, int | None]]]:
    """ferkit pipelines by name -> a builder giving ``(recognizer, OpenCV threads while it runs or None)``.

    The first is ``Recognizer()`` as a user gets it; each other changes one thing (section 5)."""
    th = args.threads or None
    y = args.yunet

    def rec(**kw) -> tuple[Recognizer, None]:
        return Recognizer(args.model, device="cpu", yunet_path=y, threads=th, **kw), None

    def before(threads: int | None) -> tuple[Recognizer, int | None]:
        # The defaults before issue 17: the torch classifier with torch's own thread count, YuNet on OpenCV;
        # `--threads 1` then set torch and OpenCV to one thread.
        clf = TorchClassifier.load(args.model, torch.device("cpu"), threads=threads or th)
        return Recognizer(args.model, device="cpu", classifier=clf, backend="torch",
                          detector=YuNetDetector(y, runtime="opencv", threads=threads or th)), threads

    return {
        DEFAULT_NAME: lambda: rec(),
        "min_face=48": lambda: rec(min_face=48),
        "min_face=80": lambda: rec(min_face=80),
        "YuNet on OpenCV": lambda: rec(detector=YuNetDetector(y, runtime="opencv", threads=th)),
        "torch classifier": lambda: rec(backend="torch"),
        "Haar detector": lambda: rec(detector="haar"),
        "threads=1": lambda: (Recognizer(args.model, device="cpu", yunet_path=y, threads=1), 1),
        "threads=2": lambda: (Recognizer(args.model, device="cpu", yunet_path=y, threads=2), 2),
        "before issue 17 (torch, YuNet on OpenCV)": lambda: before(None),
        "before issue 17, --threads 1": lambda: before(1),
    }


FRAME_LEVERS = ("min_face=48", "min_face=80", "YuNet on OpenCV", "torch classifier", "Haar detector", "threads=1",
                "threads=2", "before issue 17, --threads 1")
VIDEO_LEVERS = FRAME_LEVERS + ("before issue 17 (torch, YuNet on OpenCV)",)  # its torch threads spin: too slow for every row


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


def to_fer2013(probs: np.ndarray, names: tuple[str, ...] | list[str], who: str) -> np.ndarray:
    """Reorder probability columns to FER2013's class order, matching names."""
    m = mapping(names, FER2013)
    if sorted(m.tolist()) != list(range(len(FER2013))):
        raise ValueError(f"{who}: classes {list(names)} do not cover FER2013's {list(FER2013)} one to one")
    out = np.zeros((len(probs), len(FER2013)), np.float64)
    out[:, m] = probs
    return out


def ms_stats(samples: list[float]) -> dict:
    s = np.asarray(samples)
    return {"median_ms": float(np.median(s)), "p10_ms": float(np.percentile(s, 10)), "p90_ms": float(np.percentile(s, 90)),
            "mean_ms": float(s.mean()), "calls": int(s.size)}


def model_only_fn(rec: Recognizer, crop_bgr: np.ndarray):
    """``(fn, input)``: the bare network call of ``rec`` (torch module or ONNX Runtime session) on a ready tensor."""
    pre = rec.preprocess
    batch = pre.prepare_images([crop_bgr], order="bgr")
    from ferkit.engine.export import OnnxClassifier

    clf = rec.classifier
    if isinstance(clf, OnnxClassifier):  # session.run on a float32 array
        return clf, pre.to_array(batch)
    x = pre.to_tensor(batch)  # (1, C, S, S), float, normalised
    net = clf.model  # TorchClassifier

    def call(t):
        with torch.inference_mode(), torch_threads(clf.threads):  # as TorchClassifier.probs runs it
            return net(t)

    return call, x


def system_info(threads: int) -> dict:
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


# ------------------------------------------------------------------ report


def _ff(v: dict) -> str:
    """faces found/present (+extra)"""
    return f"{v['found']}/{v['present']}" + (f" (+{v['extra']})" if v["extra"] else "")


def markdown(res: dict) -> str:
    s = res["summary"]
    fmt = {"acc": "{:.2%}", "f1": "{:.4f}", "ms": "{:.3f} ms", "fps": "{:.1f}", "x": "{:.2f}x", "faces": "{}"}
    sysinfo = res["system"]
    lines = [
        "# ferkit vs fer", "",
        f"{sysinfo['date']}, {sysinfo['cpu']} ({sysinfo['cpu_count']} cores), threads: {sysinfo['threads']}; "
        f"load average before/after {res['load_before']} / {res['load_after']}; "
        f"{res['accuracy']['n']} PrivateTest crops{' (limited)' if res['args']['limit'] else ''}, "
        f"ferkit model `{res['args']['model']}`. Frames/s taken while other work runs are noisy; the rounds "
        "alternate ferkit and fer, so the ratios within this run hold better than the absolute figures.", "",
        "| measure | ferkit | fer | ratio ferkit / fer | target | met |",
        "|---|---:|---:|---:|---|:---:|",
    ]
    for row in s:
        f = fmt[row["unit"]]
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.3f}"
        lines.append(f"| {row['measure']} | {f.format(row['ferkit'])} | {f.format(row['fer'])} | {ratio} | "
                     f"{row['target']} | {'' if row['target'].startswith('(') else 'yes' if row['met'] else '**no**'} |")
    lines += ["", "## Frames/s by kind of frame: `Recognizer()` against `FER().detect_emotions`", "",
              "| frames | n | ferkit frames/s | fer frames/s | ratio | faces found/present ferkit | fer |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in res["rows"].items():
        fk, fe = r["ferkit"], r["fer"]
        lines.append(f"| {name} | {r['frames']} | {fk['fps']:.1f} | {fe['fps']:.1f} | {fk['fps'] / fe['fps']:.2f}x | "
                     f"{_ff(fk)} | {_ff(fe)} |")
    v = res["video"]
    lines.append(f"| the clip as a file: `predict_stream` against fer's `Video.analyze` | {v['ferkit']['frames']} | "
                 f"{v['ferkit']['fps']:.1f} | {v['fer']['fps']:.1f} | {v['ferkit']['fps'] / v['fer']['fps']:.2f}x | "
                 f"{_ff(v['ferkit'])} | {_ff(v['fer'])} |")
    lines += ["", "Faces present: the faces counted in the photos (tests/test_detectors.py `TRUE_FACES`); for clip frames, "
              "those YuNet finds at the clip's full resolution. (+N): boxes holding no present face. Frames/s: calls / total "
              "time of the timed calls; the clip: frames / wall time of whole passes, decoding included.", "",
              "## Levers: ferkit variants, each changing one default", "",
              "frames/s, faces found/present (+extra); every row of a column on the same frames, alternating with the "
              "others.", "",
              "| variant | " + " | ".join(list(res["levers"]["rows"]) + ["clip (first frames)"]) + " |",
              "|---" + "|---:" * (len(res["levers"]["rows"]) + 1) + "|"]
    names = list(next(iter(res["levers"]["rows"].values())))
    for vname in dict.fromkeys(names + list(res["levers"]["video"])):
        cells = []
        for col in res["levers"]["rows"].values():
            cells.append(f"{col[vname]['fps']:.1f}, {_ff(col[vname])}" if vname in col else "")
        vv = res["levers"]["video"].get(vname)
        cells.append(f"{vv['fps']:.1f}, {_ff(vv)}" if vv else "")
        lines.append(f"| {vname} | " + " | ".join(cells) + " |")
    lines += ["", "## Accuracy on FER2013 PrivateTest", "",
              "| classifier | accuracy | macro-F1 |", "|---|---:|---:|"]
    for name, m in res["accuracy"]["models"].items():
        lines.append(f"| {name} | {m['accuracy']:.2%} | {m['macro_f1']:.4f} |")
    for name, err in res["accuracy"].get("fer_errors", {}).items():
        lines.append(f"| fer {name} | failed: {err} | |")
    lines += ["", "Per-class F1:", "", "| class | " + " | ".join(res["accuracy"]["models"]) + " |",
              "|---" + "|---:" * len(res["accuracy"]["models"]) + "|"]
    for c in FER2013:
        lines.append(f"| {c} | " + " | ".join(f"{m['per_class'][c]['f1']:.3f}" for m in res["accuracy"]["models"].values()) + " |")
    lines += ["", "Label mapping (fer -> FER2013, by name): "
              + ", ".join(f"{k} -> {v}" for k, v in res["accuracy"]["fer_label_mapping"].items()), "",
              "## Per-face classifier latency (batch 1)", "",
              "| classifier | crop -> probs, median | p90 | model only, median | p90 |", "|---|---:|---:|---:|---:|"]
    for name, v in res["latency"].items():
        lines.append(f"| {name} | {v['crop']['median_ms']:.3f} ms | {v['crop']['p90_ms']:.3f} ms | "
                     f"{v['model']['median_ms']:.3f} ms | {v['model']['p90_ms']:.3f} ms |")
    lines += ["", "Details of the protocol: the docstring of benchmarks/vs_peers.py.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ shared with latency_budget.py


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


def time_rows(args, rows, fer, builders) -> tuple[dict, dict]:
    """Sections 3 and 5 on the frames: ``(per-row ferkit default vs fer, per-row lever variants)``."""
    per_round = max(1, args.frames // args.rounds)
    lever_round = max(1, args.lever_frames // args.rounds)
    names = [DEFAULT_NAME] + (list(FRAME_LEVERS) if args.lever_frames else [])
    ms = {row: {k: [] for k in names + [FER_NAME]} for row in rows}
    found = {row: {} for row in rows}
    for rnd in range(args.rounds):
        for row, frames in rows.items():
            images = [f["image"] for f in frames]
            for k in names:
                rec, cv_threads = builders[k]
                with cv2_threads(cv_threads):
                    if rnd == 0:
                        found[row][k] = [match([d.box for d in rec.detect(im)], f["present"]) for im, f in zip(images, frames)]
                    if k == DEFAULT_NAME:
                        ms[row][k] += time_calls(rec, images, args.warmup, per_round)
                    else:  # fewer frames: the levers are for comparing with each other and the default
                        ms[row][k] += time_calls(rec, images, max(2, args.warmup // 4), lever_round)
            r = fer.ask("e2e", frames=[f["path"] for f in frames], warmup=args.warmup, runs=per_round)
            ms[row][FER_NAME] += r["ms"]
            found[row][FER_NAME] = [match(b, f["present"]) for b, f in zip(r["boxes"], frames)]
        print(f"  round {rnd + 1}/{args.rounds} done", flush=True)
    table, levers = {}, {}
    for row, frames in rows.items():
        stats = {}
        for k, v in ms[row].items():
            st = ms_stats(v)
            stats[k] = {"fps": 1e3 / st["mean_ms"], **st, "found": sum(f for f, _ in found[row][k]),
                        "present": sum(len(f["present"]) for f in frames), "extra": sum(e for _, e in found[row][k])}
        table[row] = {"frames": len(frames), "ferkit": stats[DEFAULT_NAME], "fer": stats[FER_NAME],
                      "sources": [f["source"] for f in frames]}
        levers[row] = {k: stats[k] for k in names}
    return table, levers


def time_video(args, fer, builders, video: Path, ref_boxes: list, work: Path) -> tuple[dict, dict]:
    """Section 4 (whole passes, alternating) and the clip's levers (the first ``--video-lever-frames`` frames)."""
    secs = {DEFAULT_NAME: [], FER_NAME: []}
    boxes: dict[str, list] = {}
    lever_n = args.video_lever_frames
    lever_names = [DEFAULT_NAME, *VIDEO_LEVERS] if lever_n else []
    lever_secs: dict[str, list[float]] = {k: [] for k in lever_names}
    lever_boxes: dict[str, list] = {}
    default_rec, _ = builders[DEFAULT_NAME]
    for rnd in range(args.video_rounds):
        s, boxes[DEFAULT_NAME] = stream_pass(default_rec, video, None)
        secs[DEFAULT_NAME].append(s)
        r = fer.ask("video", path=str(video), outdir=str(work / "fer_video"))
        secs[FER_NAME].append(r["seconds"])
        boxes[FER_NAME] = r["boxes"]
        for k in lever_names:  # the default again on the same first frames, for the lever table
            rec, cv_threads = builders[k]
            with cv2_threads(cv_threads):
                s, lever_boxes[k] = stream_pass(rec, video, lever_n)
            lever_secs[k].append(s)
        print(f"  clip round {rnd + 1}/{args.video_rounds} done", flush=True)
    video_res = {k: video_stats(secs[k], boxes[k], ref_boxes) for k in secs}
    video_res["reference"] = "YuNet at the clip's full resolution, score >= 0.6, no minimum size"
    levers = {k: video_stats(v, lever_boxes[k], ref_boxes) for k, v in lever_secs.items()}
    return video_res, levers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fer-python", required=True, help="python of the fer virtual environment (benchmarks/README.md)")
    ap.add_argument("--model", default="default", help="ferkit model: 'default', a checkpoint or a run folder")
    ap.add_argument("--backends", default="onnx-int8,onnx,torch",
                    help="ferkit backends for accuracy and latency, comma list (the first one is compared; onnx-int8 "
                         "is the shipped int8 file, so it needs --model default)")
    ap.add_argument("--data", default=str(SHARED / "data" / "fer2013"), help="FER2013 Kaggle-layout folder")
    ap.add_argument("--photos", default=str(SHARED / "data" / "photos"), help="photos the frames are cut from")
    ap.add_argument("--video", default=str(SHARED / "data" / "video" / "short_hamilton_clip.mp4"), help="the clip")
    ap.add_argument("--yunet", default=str(SHARED / "models" / "face_detection_yunet_2023mar.onnx"), help="YuNet weights")
    ap.add_argument("--limit", type=int, default=0, help="score only a seeded random N PrivateTest crops (0: all 3,589)")
    ap.add_argument("--latency-calls", type=int, default=1000, help="timed batch-1 calls per classifier, over all rounds")
    ap.add_argument("--frames", type=int, default=200, help="timed frames per row for ferkit and for fer, over all rounds")
    ap.add_argument("--lever-frames", type=int, default=50, help="timed frames per row for each lever variant (0: none)")
    ap.add_argument("--video-rounds", type=int, default=2, help="alternating whole passes over the clip per side")
    ap.add_argument("--video-lever-frames", type=int, default=100,
                    help="frames of the clip per pass for each lever variant, one pass per round (0: none)")
    args = parse_run_args(ap, rounds=5, threads=0)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    th = args.threads or None
    if th:
        torch.set_num_threads(th)
        cv2.setNumThreads(th)
    work = Path(tempfile.mkdtemp(prefix="ferkit-vs-peers-"))
    load_before = loadavg()

    # -------- inputs
    crops, y, crop_paths = load_crops(Path(args.data), args.limit or None)
    crops_bgr = [cv2.cvtColor(c, cv2.COLOR_GRAY2BGR) for c in crops]
    np.savez(work / "crops.npz", crops=crops)
    lat_crops = crops[:64]  # latency cycles over 64 different faces
    np.savez(work / "lat_crops.npz", crops=lat_crops)
    video = Path(args.video)
    clip, ref_boxes = clip_reference(video, YuNetDetector(args.yunet, min_face=0, max_side=None))
    rows = frame_rows(args, work, clip, ref_boxes)
    del clip
    print(f"{len(crops)} PrivateTest crops; frames: " + "; ".join(f"{k} {len(v)}" for k, v in rows.items())
          + f"; the clip: {len(ref_boxes)} frames, {sum(map(len, ref_boxes))} faces; scratch in {work}", flush=True)

    # -------- the two sides
    fer = FerWorker(args.fer_python, work / "fer_worker.log")
    try:
        fer_info = fer.ask("init", threads=args.threads)
        recs = {b: Recognizer(args.model, detector="haar", device="cpu", backend=b, threads=th) for b in backends}
        builders = Built(variants(args))
        main_rec = recs[backends[0]]

        # -------- 1. accuracy
        print("accuracy ...", flush=True)
        models, crops_per_s = {}, {}
        for b, rec in recs.items():
            t0 = time.perf_counter()
            p = rec.classify_crops(crops_bgr)
            crops_per_s[f"ferkit ({b}), batches of {rec.batch_size}"] = len(crops) / (time.perf_counter() - t0)
            models[f"ferkit ({b})"] = classification_metrics(y, to_fer2013(p, rec.label_names, f"ferkit {args.model}"), FER2013)
        rep = fer.ask("classify", crops=str(work / "crops.npz"), out=str(work / "fer_probs"))
        for name, f in rep["files"].items():
            models[f"fer {name}"] = classification_metrics(y, to_fer2013(np.load(f), fer_info["labels"], "fer"), FER2013)
            crops_per_s[f"fer {name}"] = len(crops) / rep["seconds"][name]  # TFLite runs face by face inside fer
        print("  crops/s over the whole set: " + "; ".join(f"{k} {v:.0f}" for k, v in crops_per_s.items()), flush=True)
        fer_variants = {k: v for k, v in models.items() if k.startswith("fer ")}
        if not fer_variants:
            raise RuntimeError(f"every fer accuracy variant failed: {rep['errors']}")
        fer_best = max(fer_variants, key=lambda k: fer_variants[k]["accuracy"])
        ferkit_main = f"ferkit ({backends[0]})"

        # -------- 2. latency, alternating rounds
        print("latency ...", flush=True)
        per_round = max(1, args.latency_calls // args.rounds)
        lat = {f"ferkit ({b})": {"crop": [], "model": []} for b in backends} | {"fer (TFLite)": {"crop": [], "model": []}}
        lat_bgr = crops_bgr[: len(lat_crops)]
        for _ in range(args.rounds):
            for b, rec in recs.items():
                lat[f"ferkit ({b})"]["crop"] += time_calls(lambda c: rec.classify_crops([c]), lat_bgr, args.warmup, per_round)
                fn, x = model_only_fn(rec, lat_bgr[0])
                lat[f"ferkit ({b})"]["model"] += time_calls(fn, [x], args.warmup, per_round)
            r = fer.ask("latency", crops=str(work / "lat_crops.npz"), warmup=args.warmup, runs=per_round)
            lat["fer (TFLite)"]["crop"] += r["crop_ms"]
            lat["fer (TFLite)"]["model"] += r["model_ms"]
        latency = {k: {kind: ms_stats(v[kind]) for kind in v} for k, v in lat.items()}

        # -------- 3 + 5. frames/s per kind of frame, alternating rounds
        print("frames/s per kind of frame ...", flush=True)
        table, row_levers = time_rows(args, rows, fer, builders)

        # -------- 4 + 5. the clip as a file
        print("the clip ...", flush=True)
        video_res, video_levers = time_video(args, fer, builders, video, ref_boxes, work)
        default_info = repr(builders[DEFAULT_NAME][0])
    finally:
        fer.close()

    # -------- summary
    acc_f, acc_p = models[ferkit_main]["accuracy"], models[fer_best]["accuracy"]
    f1_f, f1_p = models[ferkit_main]["macro_f1"], models[fer_best]["macro_f1"]
    lat_f, lat_p = latency[ferkit_main]["crop"]["median_ms"], latency["fer (TFLite)"]["crop"]["median_ms"]
    mod_f, mod_p = latency[ferkit_main]["model"]["median_ms"], latency["fer (TFLite)"]["model"]["median_ms"]
    summary = [
        {"measure": f"PrivateTest accuracy (ferkit {backends[0]}; fer: {fer_best[4:]})", "unit": "acc", "ferkit": acc_f,
         "fer": acc_p, "ratio": acc_f / acc_p, "target": "ferkit > fer", "met": acc_f > acc_p},
        {"measure": "PrivateTest macro-F1", "unit": "f1", "ferkit": f1_f, "fer": f1_p, "ratio": f1_f / f1_p,
         "target": "(reported)", "met": f1_f > f1_p},
        {"measure": f"per-face latency, crop -> probs, median (ferkit {backends[0]})", "unit": "ms", "ferkit": lat_f,
         "fer": lat_p, "ratio": lat_f / lat_p, "target": "ratio <= 1", "met": lat_f <= lat_p},
        {"measure": "per-face latency, model only, median", "unit": "ms", "ferkit": mod_f, "fer": mod_p,
         "ratio": mod_f / mod_p, "target": "(reported)", "met": mod_f <= mod_p},
    ]
    targets = {"640x480, 1 face": 5.0, "1280x720, 1 face": 5.0, "1280x720, 6 faces (group photo)": 3.0,
               "1280x720, 5-7 faces (clip frames, 2x)": 3.0}
    for row, r in table.items():
        fk, fe = r["ferkit"]["fps"], r["fer"]["fps"]
        want = targets.get(row)
        summary.append({"measure": f"frames/s, {row}", "unit": "fps", "ferkit": fk, "fer": fe, "ratio": fk / fe,
                        "target": f"ratio >= {want:g}" if want else "(reported)", "met": want is None or fk / fe >= want})
        if row == "640x480, 1 face":
            summary.append({"measure": "frames/s, 640x480, 1 face, ferkit alone", "unit": "fps", "ferkit": fk, "fer": fe,
                            "ratio": None, "target": "ferkit >= 100", "met": fk >= 100})
    video_res = {"ferkit": video_res.pop(DEFAULT_NAME), "fer": video_res.pop(FER_NAME), **video_res}
    faces_rows = {**table, "the clip": video_res}
    for row, r in faces_rows.items():
        summary.append({"measure": f"faces found (of present), {row}", "unit": "faces",
                        "ferkit": f"{r['ferkit']['found']}/{r['ferkit']['present']}",
                        "fer": f"{r['fer']['found']}/{r['fer']['present']}", "ratio": None, "target": "ferkit >= fer",
                        "met": r["ferkit"]["found"] >= r["fer"]["found"]})
    fk, fe = video_res["ferkit"]["fps"], video_res["fer"]["fps"]
    summary.append({"measure": "frames/s, the clip as a file (predict_stream vs Video.analyze)", "unit": "fps", "ferkit": fk,
                    "fer": fe, "ratio": fk / fe, "target": "(reported)", "met": True})
    res = {
        "args": vars(args),
        "system": system_info(args.threads),
        "fer": fer_info,
        "ferkit_default": default_info,
        "load_before": load_before,
        "load_after": loadavg(),
        "summary": summary,
        "rows": table,
        "video": video_res,
        "levers": {"rows": row_levers, "video": video_levers},
        "accuracy": {
            "n": int(len(y)),
            "data": str(Path(args.data) / "test" / "<class>" / "PrivateTest_*.jpg"),
            "compared": {"ferkit": ferkit_main, "fer": fer_best},
            "fer_label_mapping": {n: FER2013[i] for n, i in zip(fer_info["labels"], mapping(fer_info["labels"], FER2013))},
            "ferkit_label_mapping": {n: FER2013[i] for n, i in zip(main_rec.label_names, mapping(main_rec.label_names, FER2013))},
            "fer_errors": rep["errors"],
            "models": models,
            "crop_files": crop_paths if args.limit else "all",
            "crops_per_s (accuracy pass, first call, not a latency)": crops_per_s,
        },
        "latency": latency,
    }

    # -------- print
    report = markdown(res)
    print("\n" + report)
    if args.out:
        write_report(args.out, res, report)
    shutil.rmtree(work, ignore_errors=True)  # kept after a failure: it holds the fer worker's log
    return 0


if __name__ == "__main__":
    sys.exit(main())
