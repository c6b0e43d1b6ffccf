"""vs_peers' fer side, as seen from ferkit's process: the fer worker subprocess, the FER2013 crops both sides
score, and the bare network call each side times (used by vs_peers.py and latency_budget.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import torch

from ferkit.engine.export import OnnxClassifier
from ferkit.infer.recognizer import Recognizer, torch_threads
from ferkit.labels import FER2013, canonical, mapping

WORKER = Path(__file__).resolve().parent / "_fer_worker.py"


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


def fer2013_columns(probs: np.ndarray, names: tuple[str, ...] | list[str], who: str) -> np.ndarray:
    """Reorder probability columns to FER2013's class order, matching names."""
    m = mapping(names, FER2013)
    if sorted(m.tolist()) != list(range(len(FER2013))):
        raise ValueError(f"{who}: classes {list(names)} do not cover FER2013's {list(FER2013)} one to one")
    out = np.zeros((len(probs), len(FER2013)), np.float64)
    out[:, m] = probs
    return out




def model_only_fn(rec: Recognizer, crop_bgr: np.ndarray):
    """``(fn, input)``: the bare network call of ``rec`` (torch module or ONNX Runtime session) on a ready tensor."""
    pre = rec.preprocess
    batch = pre.prepare_images([crop_bgr], order="bgr")
    clf = rec.classifier
    if isinstance(clf, OnnxClassifier):  # session.run on a float32 array
        return clf, pre.to_array(batch)
    x = pre.to_tensor(batch)  # (1, C, S, S), float, normalised
    net = clf.model  # TorchClassifier

    def call(t):
        with torch.inference_mode(), torch_threads(clf.threads):  # as TorchClassifier.probs runs it
            return net(t)

    return call, x

