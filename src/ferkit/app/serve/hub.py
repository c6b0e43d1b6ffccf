"""The models and face detectors a server offers: loaded once, shared by every request.

:class:`ModelHub` loads each model (``NAME=SPEC``, see :func:`parse_models`)
into a :class:`~ferkit.infer.recognizer.Recognizer`, puts its classifier behind
a :class:`~ferkit.app.serve.batcher.BatchedClassifier`, and hands requests
cheap recognizers over that batcher, each with a detector of its own: detectors
keep per-image state, so requests borrow them from a :class:`DetectorPool`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ferkit.app.serve.batcher import BatchedClassifier, MicroBatcher
from ferkit.app.serve.errors import ApiError
from ferkit.infer.detectors import FaceDetector
from ferkit.infer.recognizer import Recognizer, RecognizerSettings
from ferkit.infer.results import Face

log = logging.getLogger(__name__)


class DetectorPool:
    """Detectors keep per-image state (YuNet's input size), so each request borrows an instance of its own."""

    def __init__(self, factory: Callable[[], FaceDetector], first: FaceDetector | None = None):
        self._factory = factory
        self._free: list[FaceDetector] = [first] if first is not None else []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self) -> Iterator[FaceDetector]:
        with self._lock:
            det = self._free.pop() if self._free else None
        if det is None:
            det = self._factory()
        try:
            yield det
        finally:
            with self._lock:
                self._free.append(det)


def _model_name(spec: str, taken: set[str]) -> str:
    """The name clients use for a model: ``NAME=SPEC`` gives NAME, else the run folder's or file's name."""
    p = Path(spec)
    name = p.parent.name if p.stem in ("best", "last", "model") and p.parent.name else p.stem
    base, k = name or "model", 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    return name


def parse_models(models: str | Sequence[str]) -> dict[str, str]:
    """``["default", "vgg=runs/vgg9", "runs/x/best.pt"]`` -> ``{"default": "default", "vgg": "runs/vgg9", "x": ...}``."""
    specs = [models] if isinstance(models, (str, Path)) else list(models)
    if not specs:
        raise ValueError("no model given; use 'default' for the shipped model")
    out: dict[str, str] = {}
    for item in specs:
        item = str(item)
        if "=" in item and not Path(item).exists():
            name, spec = item.split("=", 1)
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                raise ValueError(f"model name {name!r} in {item!r}: use letters, digits, '_', '.', '-'")
            if name in out:
                raise ValueError(f"model name {name!r} given twice")
        else:
            spec, name = item, "default" if item == "default" else _model_name(item, set(out))
        out[name] = spec
    return out


class ModelHub:
    """The loaded models (each behind its own batcher) and the face detectors requests may choose from."""

    def __init__(self, models: str | Sequence[str] = "default", settings: RecognizerSettings | None = None,
                 max_batch: int = 64, max_wait_ms: float = 2.0):
        """``models``: one spec or several (:func:`parse_models`); ``settings``: how every model's recognizer is
        built (detector, device, backend, threads, min_face, min_confidence; its ``model`` is replaced by each)."""
        from ferkit.infer.detectors import create_detector, yunet_weights

        settings = settings or RecognizerSettings()
        yunet_path, min_face, threads = settings.yunet_path, settings.min_face, settings.threads
        self.yunet_path = yunet_path
        self.min_face = min_face  # None: the detectors' default
        self.min_confidence = float(settings.min_confidence)  # below it a face is labelled "uncertain"
        first = create_detector(settings.detector, yunet_path=yunet_path, min_face=min_face)
        self.default_detector = first.name
        names = {first.name, "haar"}
        if "yunet" not in names:
            try:
                yunet_weights(yunet_path, download=False)
                names.add("yunet")
            except FileNotFoundError:
                log.info("face detector 'yunet' not offered: its weights are not at hand")
        self.detector_names = sorted(names)
        self._pools = {n: DetectorPool(lambda n=n: create_detector(n, yunet_path=yunet_path, min_face=self.min_face),
                                        first if n == first.name else None) for n in self.detector_names}
        self.specs = parse_models(models)
        self.default_model = next(iter(self.specs))
        self.recognizers: dict[str, Recognizer] = {}  # as loaded; requests classify through self.classifiers
        self.classifiers: dict[str, BatchedClassifier] = {}

        def set_threads() -> None:
            if threads is not None:
                import torch

                torch.set_num_threads(threads)  # also here: OpenMP thread counts are per calling thread

        set_threads()
        try:
            for name, spec in self.specs.items():
                rec = Recognizer.from_settings(settings.replace(model=spec, detector=first))
                self.recognizers[name] = rec
                self.classifiers[name] = BatchedClassifier(rec.classifier, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                                           name=f"batcher[{name}]", on_start=set_threads)
                log.info("model %r: %s", name, rec)
        except BaseException:
            self.close()  # a model that fails to load stops the batchers already started
            raise

    @property
    def batchers(self) -> dict[str, MicroBatcher]:
        """Each model's batcher (its counters: ``batchers[name].stats``)."""
        return {name: clf.batcher for name, clf in self.classifiers.items()}

    def model(self, requested: str | None) -> str:
        """The model a request asked for (None: the default); ApiError 422 naming the available ones."""
        name = requested or self.default_model
        if name not in self.recognizers:
            raise ApiError(422, f"unknown model {name!r}; available: {', '.join(self.recognizers)}")
        return name

    def detector(self, requested: str | None) -> str:
        """The face detector a request asked for ("auto" or None: the default); ApiError 422 naming the others."""
        name = (requested or "auto").lower()
        if name == "auto":
            return self.default_detector
        if name not in self._pools:
            raise ApiError(422, f"unknown face detector {requested!r}; available: auto, {', '.join(self.detector_names)}")
        return name

    def new_detector(self, name: str) -> FaceDetector:
        """A detector of one's own, for a live connection or a video job (they keep per-image state)."""
        from ferkit.infer.detectors import create_detector

        return create_detector(name, yunet_path=self.yunet_path, min_face=self.min_face)

    def recognizer(self, model: str, detector: FaceDetector) -> Recognizer:
        """A recognizer of ``model`` with ``detector`` (the caller's own) whose faces go through the shared batcher.

        Cheap: nothing is loaded, so each request, live connection or video job
        takes one and uses it without locking.
        """
        base = self.recognizers[model]
        return Recognizer.from_settings(base.settings.replace(detector=detector), classifier=self.classifiers[model])

    def recognize(self, image_bgr: np.ndarray, model: str, detector: str) -> list[Face]:
        """Faces of one BGR image, with a borrowed detector and the model's shared batcher."""
        with self._pools[detector].borrow() as det:
            dets = det.detect(image_bgr)
        # The detector goes back to the pool before classification: the recognizer does not detect again.
        return self.recognizer(model, det).recognize_frames([image_bgr], detections=[dets])[0]

    def describe(self) -> dict:
        """What ``GET /v1/models`` answers: each model's labels, input and backend, and the detectors."""
        models = []
        for name, rec in self.recognizers.items():
            pre = rec.preprocess
            models.append({"name": name, "default": name == self.default_model, "labels": list(rec.label_names),
                           "input_size": pre.input_size, "channels": pre.channels, "backend": rec.backend})
        return {"models": models, "detectors": self.detector_names, "default_model": self.default_model,
                "default_detector": self.default_detector}

    def stats(self) -> dict:
        """Each model's batching counters, for ``GET /health``."""
        return {name: {"batches": b.stats.batches, "crops": b.stats.items, "requests": b.stats.requests,
                       "mean_batch": round(b.stats.mean_batch, 2), "largest_batch": b.stats.largest_batch,
                       "queued": b.queued} for name, b in self.batchers.items()}

    def close(self) -> None:
        for clf in self.classifiers.values():
            clf.close()
