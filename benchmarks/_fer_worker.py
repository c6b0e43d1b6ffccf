"""The `fer` package's side of ``benchmarks/vs_peers.py``; runs inside fer's own virtual environment.

Started by vs_peers.py as ``FER_PYTHON benchmarks/_fer_worker.py`` and driven over stdin/stdout,
one JSON object per line each way, so that ferkit and fer can be timed in alternating rounds
(this machine is shared and noisy). Requests (``{"cmd": ...}``):

    init      {threads}                          -> versions, labels, model input size (threads 0: fer's defaults)
    classify  {crops: npz, out: npy prefix}      -> accuracy variants' probabilities, saved as .npy
    latency   {crops: npz, warmup, runs}         -> ms per face, batch 1: crop -> probabilities, and model only
    e2e       {frames: [png paths], warmup, runs} -> ms per frame of ``FER().detect_emotions(frame)``; faces found
    video     {path, outdir}                     -> seconds of fer's own video analysis (``fer.classes.Video``) of
                                                    the whole file; faces found per frame
    quit

Replies are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. Only numpy and the standard
library are imported at module level, so vs_peers.py imports :func:`time_calls` from here and both
sides are timed by the same code.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any


def time_calls(fn: Callable[[Any], Any], items: Sequence[Any], warmup: int, runs: int) -> list[float]:
    """Milliseconds of ``runs`` calls ``fn(item)``, each timed alone, after ``warmup`` untimed calls.

    Items are taken in turn (``items[i % len(items)]``), so several different faces or frames are used.
    """
    n = len(items)
    for i in range(warmup):
        fn(items[i % n])
    out = []
    for i in range(runs):
        item = items[i % n]
        t0 = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


class FerSide:
    """The fer package as a user gets it: ``FER()`` = Haar cascade + the quantized TFLite mini-Xception."""

    def __init__(self, threads: int):
        import cv2
        import fer
        import tensorflow as tf
        from fer.fer import FER

        if threads:
            # Thread counts must be set before TensorFlow runs anything.
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
            cv2.setNumThreads(threads)  # the Haar cascade's detectMultiScale is parallel
            # FER() builds its TFLite interpreter with the default thread count and caches it on the class;
            # putting our own there first gives the same thread count as ferkit, through fer's own code path.
            path = os.path.join(os.path.dirname(fer.__file__), "data", "emotion_model_quantized.tflite")
            interp = tf.lite.Interpreter(model_path=path, num_threads=threads)
            interp.allocate_tensors()
            FER._tflite_interpreter_cache = interp

        self.cv2, self.tf = cv2, tf
        self.threads = threads
        self.fer_version = fer.__version__
        self.fer = FER()  # the defaults: Haar (mtcnn=False), use_tflite=True, offsets (10, 10), min_face_size 50
        interp = FER._tflite_interpreter_cache  # ours, or the one FER() made with its own thread count
        self.interp = interp
        self.labels = [FER._get_labels()[i] for i in range(len(FER._get_labels()))]
        self.size = tuple(int(v) for v in interp.get_input_details()[0]["shape"][1:3])  # (64, 64)
        self._in = interp.get_input_details()[0]["index"]
        self._out = interp.get_output_details()[0]["index"]
        self._keras = None

    # -- fer's per-face preprocessing after the crop (fer.py, detect_emotions) ---------------------------
    def prepare(self, grey_faces) -> Any:
        """uint8 grey crops -> float32 (N, 64, 64) in [-1, 1], exactly as detect_emotions does after cropping."""
        import numpy as np

        faces = np.array([self.cv2.resize(f, (self.size[1], self.size[0])) for f in grey_faces], dtype="float32")
        return (faces / 255.0 - 0.5) * 2.0

    def classify_whole(self, grey_faces) -> Any:
        """The whole crop through fer's preprocessing and its default classifier (TFLite), unrounded scores."""
        import numpy as np

        return np.asarray(self.fer._classify_emotions(self.prepare(grey_faces)), dtype=np.float32)

    def classify_pipeline(self, grey_faces) -> Any:
        """Each crop through ``detect_emotions(img, face_rectangles=[(0, 0, w, h)])``, fer's own code path.

        detect_emotions rounds scores to 2 decimals (ties); the unrounded output of its classifier
        call is captured instead.
        """
        import numpy as np

        captured: list = []
        orig = self.fer._classify_emotions

        def capture(x):
            out = orig(x)
            captured.append(np.asarray(out, dtype=np.float32))
            return out

        self.fer._classify_emotions = capture  # instance attribute: detect_emotions looks it up on self
        try:
            for f in grey_faces:
                bgr = self.cv2.cvtColor(f, self.cv2.COLOR_GRAY2BGR)  # detect_emotions converts BGR -> grey itself
                res = self.fer.detect_emotions(bgr, face_rectangles=[(0, 0, f.shape[1], f.shape[0])])
                if len(res) != 1:
                    raise RuntimeError(f"detect_emotions returned {len(res)} faces for one given rectangle")
        finally:
            del self.fer._classify_emotions
        return np.concatenate(captured)

    def classify_keras(self, grey_faces) -> Any:
        """The original Keras model (emotion_model.hdf5, ``FER(use_tflite=False)``) on the whole crop."""
        import numpy as np
        from fer.fer import FER

        if self._keras is None:
            self._keras = FER(use_tflite=False)._FER__emotion_classifier
        x = self.prepare(grey_faces)[..., None]  # (N, 64, 64, 1)
        return np.concatenate([np.asarray(self._keras(x[i : i + 256], training=False)) for i in range(0, len(x), 256)])

    # -- requests ------------------------------------------------------------------------------------
    def init(self) -> dict:
        import cv2
        import numpy as np

        return {
            "fer": self.fer_version,
            "tensorflow": self.tf.__version__,
            "opencv": cv2.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "labels": self.labels,
            "input_size": list(self.size),
            "classifier": "data/emotion_model_quantized.tflite (FER() default, use_tflite=True)",
            "detector": "OpenCV Haar haarcascade_frontalface_default (FER() default, mtcnn=False)",
            "threads": self.threads or "fer's defaults (TFLite, TensorFlow and OpenCV as FER() leaves them)",
        }

    def classify(self, crops: str, out: str) -> dict:
        import numpy as np

        faces = np.load(crops)["crops"]  # (N, H, W) uint8 grey
        variants = {"tflite_whole": self.classify_whole, "tflite_pipeline": self.classify_pipeline, "keras_whole": self.classify_keras}
        files, errors, seconds = {}, {}, {}
        for name, fn in variants.items():
            t0 = time.perf_counter()
            try:
                probs = fn(faces)
            except Exception as exc:  # a variant that fails is reported, the others still count
                errors[name] = f"{exc.__class__.__name__}: {exc}"
                continue
            seconds[name] = time.perf_counter() - t0
            files[name] = f"{out}_{name}.npy"
            np.save(files[name], probs)
        return {"files": files, "errors": errors, "seconds": seconds}

    def latency(self, crops: str, warmup: int, runs: int) -> dict:
        import numpy as np

        faces = list(np.load(crops)["crops"])
        ready = [self.prepare([f])[..., None] for f in faces]  # (1, 64, 64, 1) float32

        def model_only(x):
            self.interp.set_tensor(self._in, x)
            self.interp.invoke()
            return self.interp.get_tensor(self._out)

        return {
            "crop_ms": time_calls(lambda f: self.classify_whole([f]), faces, warmup, runs),
            "model_ms": time_calls(model_only, ready, warmup, runs),
        }

    def e2e(self, frames: list[str], warmup: int, runs: int) -> dict:
        imgs = []
        for p in frames:
            im = self.cv2.imread(p, self.cv2.IMREAD_COLOR)
            if im is None:
                raise FileNotFoundError(f"{p}: cannot read the frame")
            imgs.append(im)
        found = [[list(map(int, r["box"])) for r in self.fer.detect_emotions(im)] for im in imgs]
        return {"ms": time_calls(self.fer.detect_emotions, imgs, warmup, runs), "boxes": found}

    def video(self, path: str, outdir: str) -> dict:
        """fer's own video path: ``Video(path).analyze(FER())``, nothing saved or drawn, timed as a whole
        (decoding included); ``detect_emotions`` is wrapped to record each frame's boxes."""
        from fer.classes import Video

        boxes: list[list[list[int]]] = []
        orig = self.fer.detect_emotions

        def recording(img, *args, **kwargs):
            res = orig(img, *args, **kwargs)
            boxes.append([list(map(int, r["box"])) for r in res])
            return res

        self.fer.detect_emotions = recording  # instance attribute: Video.analyze calls detector.detect_emotions
        # Video.analyze calls cv2.waitKey(1) on every frame even with display=False; headless OpenCV (what fer's
        # environment gets, benchmarks/README.md) has no GUI and fails there. Nothing is shown: a no-op stands in.
        had_wait = hasattr(self.cv2, "waitKey")
        wait = getattr(self.cv2, "waitKey", None)
        self.cv2.waitKey = lambda *a, **k: -1
        try:
            t0 = time.perf_counter()
            Video(path, outdir=outdir).analyze(self.fer, display=False, output="pandas", save_frames=False,
                                               save_video=False, annotate_frames=False, zip_images=False)
            seconds = time.perf_counter() - t0
        finally:
            del self.fer.detect_emotions
            if had_wait:
                self.cv2.waitKey = wait
            else:
                del self.cv2.waitKey
        return {"seconds": seconds, "frames": len(boxes), "boxes": boxes}


def main() -> int:
    # Replies go to the original stdout; anything else printing to fd 1 (TensorFlow, fer's logging) goes to stderr.
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    side: FerSide | None = None
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        cmd = req.pop("cmd")
        try:
            if cmd == "quit":
                reply.write(json.dumps({"ok": True}) + "\n")
                break
            if cmd == "init":
                side = FerSide(int(req["threads"]))
                res = side.init()
            elif side is None:
                raise RuntimeError(f"{cmd!r} before 'init'")
            elif cmd in ("classify", "latency", "e2e", "video"):
                res = getattr(side, cmd)(**req)
            else:
                raise ValueError(f"unknown command {cmd!r}; expected init, classify, latency, e2e, video or quit")
            reply.write(json.dumps({"ok": True, **res}) + "\n")
        except Exception as exc:
            traceback.print_exc()
            reply.write(json.dumps({"ok": False, "error": f"{cmd}: {exc.__class__.__name__}: {exc}"}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
