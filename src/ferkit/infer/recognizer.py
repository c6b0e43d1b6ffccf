"""The Recognizer: image(s) in, one typed :class:`~ferkit.infer.results.Face` per face out.

    rec = Recognizer()                    # the shipped default model, YuNet if at hand else Haar
    faces = rec("photo.jpg")              # [Face(box, score, label, probs, landmarks), ...]
    per_frame = rec.recognize_frames([f1, f2, f3])   # all faces of all frames in one batch

Any ferkit checkpoint works: input size, channels, normalisation, face-crop
margin and label names come from the :class:`~ferkit.engine.preprocess.Preprocess`
stored in it, so deployment prepares faces exactly as training did.

The network itself sits behind a :class:`Classifier` (prepared uint8 crops in,
probabilities out, :mod:`ferkit.engine.classify`): :class:`TorchClassifier` for checkpoints,
:class:`OnnxClassifier` for ONNX Runtime, or any object
passed as ``Recognizer(classifier=...)`` (the server's batched one, a stub in tests).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ferkit.engine.checkpoint import SHIPPED_MODELS
from ferkit.engine.classify import Classifier, ModelRef, OnnxClassifier, TorchClassifier, torch_threads  # noqa: F401
from ferkit.engine.preprocess import Preprocess
from ferkit.imageio import read_bgr, to_model_channels, to_uint8
from ferkit.infer.align import crop_faces
from ferkit.infer.detectors import FaceDetector, create_detector
from ferkit.infer.quality import face_quality, is_low_quality
from ferkit.infer.results import Detection, Face, label_for
from ferkit.metrics import rescale_probs
from ferkit.runtime import models_dir, onnxruntime_available, select_device

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
TTA_MODES = ("none", "flip")
ONNX_CACHE_VERSION = 1  # bump when export_onnx changes what it writes
# The shipped models that come quantized to int8 (``ferkit export --int8``; the model card has the command):
# the default (also named "fer2013"). The FER+ model ships as a checkpoint only.
DEFAULT_INT8 = SHIPPED_MODELS["default"].with_name("default_int8.onnx")
SHIPPED_INT8 = {name: DEFAULT_INT8 for name, path in SHIPPED_MODELS.items() if path == SHIPPED_MODELS["default"]}


# ------------------------------------------------------------------ input normalisation


def _pil_to_array(image) -> np.ndarray:
    """A PIL image as a numpy array laid out RGB / RGBA / grey / 16-bit grey."""
    mode = image.mode
    if mode in ("L", "RGB", "RGBA"):
        return np.asarray(image)
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)  # I;16B etc.: native-endian uint16
    return np.asarray(image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB"))


def _check_array(img: np.ndarray) -> None:
    if img.size == 0:
        raise ValueError(f"empty image (shape {img.shape})")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image shape {img.shape} not understood; expected (H, W) grey, (H, W, 1), "
                         f"(H, W, 3) RGB/BGR or (H, W, 4) with alpha")
    if img.dtype in (np.uint8, np.uint16):
        return
    if np.issubdtype(img.dtype, np.floating):
        lo, hi = float(np.min(img)), float(np.max(img))
        if not (0.0 <= lo and hi <= 1.0):  # also false for NaN
            raise ValueError(f"float image values must lie in [0, 1], got range [{lo:g}, {hi:g}]; "
                             "divide 0-255 data by 255 or pass uint8")
        return
    raise ValueError(f"image dtype {img.dtype} not supported; expected uint8, uint16 or float in [0, 1]")


def as_bgr(image, order: str = "bgr") -> np.ndarray:
    """Any accepted image as uint8 BGR ``(H, W, 3)``.

    Accepts a file path (decoded; unreadable files raise ``ValueError`` naming
    the path), a PIL image, or a numpy array: grey ``(H, W)`` / ``(H, W, 1)``,
    3 channels laid out as ``order`` ("bgr" as OpenCV gives, or "rgb"), or 4
    with alpha (dropped); uint8, uint16 (scaled to 8 bits) or float in [0, 1].
    A uint8 BGR array is returned as is, without a copy.
    """
    if order not in ("bgr", "rgb"):
        raise ValueError(f"order must be 'bgr' or 'rgb', got {order!r}")
    if isinstance(image, (str, os.PathLike)):
        return read_bgr(image)  # decoded straight to BGR; ImageReadError (a ValueError) names the file
    if type(image).__module__.startswith("PIL."):
        img, order = _pil_to_array(image), "rgb"
    elif isinstance(image, np.ndarray):
        img = image
    else:
        raise ValueError(f"cannot read an image from a {type(image).__name__}; "
                         "give a file path, a PIL image or a numpy array")
    _check_array(img)
    img = to_uint8(img)
    if img.ndim == 3 and img.shape[2] == 3 and order == "bgr":
        return img
    rgb = to_model_channels(img, 3, order=order)
    # to_model_channels swaps R and B for order="bgr"; the swap is its own inverse, so this turns RGB into BGR.
    return to_model_channels(rgb, 3, order="bgr")


# ------------------------------------------------------------------ which classifier runs a model


def onnx_cache_path(ref: ModelRef) -> Path:
    """An ONNX export of the checkpoint (or ensemble) ``ref``, made once and cached under its digest."""
    from ferkit.engine.export import export_onnx

    stem = "ensemble" if ref.kind == "ensemble" else ref.path.stem
    path = models_dir() / "onnx" / f"{stem}-{ref.digest[:16]}-v{ONNX_CACHE_VERSION}.onnx"
    if not path.is_file():
        log.info("exporting %s to ONNX for the onnx backend (cached at %s)", ref.spec, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(ref, path)  # atomic: concurrent first uses each write a whole file
    return path


def int8_path(ref: ModelRef) -> Path:
    """The int8 ONNX file for ``ref``: shipped for the shipped models; any other is quantized with ``ferkit export``."""
    if ref.shipped in SHIPPED_INT8:
        path = SHIPPED_INT8[ref.shipped]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the shipped int8 model is missing; reinstall ferkit or use backend='onnx'")
        return path
    raise ValueError(f"backend 'onnx-int8' needs a calibrated int8 file for {ref.spec}: make one with\n"
                     f"  ferkit export --model {ref.spec} --format onnx --int8 --out model_int8.onnx\n"
                     "and pass model='model_int8.onnx' (only the shipped models come quantized)")


def resolve_backend(backend: str, ref: ModelRef, device: torch.device) -> str:
    """The backend "auto" stands for: "onnx-int8" for a shipped model on a CPU with ONNX Runtime
    installed, "onnx" for an ``.onnx`` file, else "torch"; any other backend as given (an ``.onnx`` file
    asked to run on "torch" runs on "onnx": it holds no torch module).

    Why int8 on CPU: against the torch model it took ``benchmarks/vs_peers.py``'s frame rates from 45.0 to
    79.5 frames/s on 640x480 frames with one face, 11.2 to 21.8 on 1280x720 frames with six, 38.7 to 71.1 on
    the shared clip (a 2-core Xeon VM, load average 4-6), for 70.13 against 70.24 % on FER2013 PrivateTest."""
    if ref.kind == "onnx":
        if backend == "torch":
            log.info("%s is an ONNX file: using the onnx backend", ref.spec)
        return "onnx" if backend in ("auto", "torch") else backend
    if backend != "auto":
        return backend
    int8 = SHIPPED_INT8.get(ref.shipped or "")
    if int8 is not None and device.type == "cpu" and int8.is_file() and onnxruntime_available():
        return "onnx-int8"
    return "torch"


def load_classifier(ref: ModelRef, backend: str, device: torch.device, threads: int | None = None) -> Classifier:
    """The :class:`Classifier` that runs ``ref`` on ``backend`` (resolved: see :func:`resolve_backend`): a
    :class:`TorchClassifier` (``threads`` per forward pass, 1 if not given), or an :class:`OnnxClassifier` of the
    ``.onnx`` file, the cached export or the shipped int8 file (CUDA when asked and present)."""
    if backend == "torch":
        if threads:
            torch.set_num_threads(int(threads))
        return TorchClassifier.load(ref, device, threads=threads or 1)  # why 1: TorchClassifier
    if ref.kind == "onnx":
        path = ref.path
    else:
        path = int8_path(ref) if backend == "onnx-int8" else onnx_cache_path(ref)
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
    clf = OnnxClassifier(path, threads=threads, providers=providers)
    if backend == "onnx-int8" and not clf.model_spec.get("quantized"):
        log.warning("%s is not an int8 file (made without `ferkit export --int8`): running it as it is", path)
    return clf


# ------------------------------------------------------------------ the recognizer


@dataclass(frozen=True)
class RecognizerSettings:
    """Everything that decides how a :class:`Recognizer` is built, declared once. The CLI, the predict
    pipeline, Ray's workers and the server each make one of these and build their recognizers from it.

    ``model``: "default" (shipped), a checkpoint file, a run folder, an exported ``.onnx`` file, several
    checkpoints joined by commas (an ensemble), or a :class:`ModelRef`. ``detector``: "auto", "yunet", "haar"
    or a :class:`FaceDetector`. ``device``: "auto" (cuda if available), "cpu", "cuda", ... ``backend``: "auto"
    (:func:`resolve_backend`: the shipped model runs as "onnx-int8" on a CPU), "torch", "onnx" (ONNX Runtime;
    a checkpoint is exported once and cached) or "onnx-int8" (the shipped model quantized to int8: faster per
    face on a CPU, a little less accurate; the model card has both figures). ``threads``: CPU threads of the
    classifier and of YuNet on ONNX Runtime (None: one ONNX Runtime thread per core, idle ones sleeping rather
    than spinning, see :func:`~ferkit.runtime.ort_session_options`, and one thread per torch forward pass, see
    :class:`TorchClassifier`: defaults that hold up on a busy machine); for the torch backend a number also
    sets ``torch.set_num_threads``, which is process-wide. ``min_face``: the smallest face wanted, in pixels
    of the images to come (None: 20); a larger one lets YuNet work on a smaller copy of each image
    (:mod:`ferkit.infer.detectors`). ``min_confidence``: a face whose top calibrated probability is below it
    is labelled "uncertain" (its probabilities are still given). ``tta``: "flip" also classifies each face
    mirrored and averages the two (twice the classifier's work, none of the detector's). ``batch_size``:
    faces per forward pass. ``score_threshold``: the detector's.
    """

    model: str | Path | ModelRef = "default"
    detector: str | FaceDetector = "auto"
    yunet_path: str | Path | None = None
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None
    min_face: int | None = None
    min_confidence: float = 0.0
    tta: str = "none"
    batch_size: int = 64
    score_threshold: float = 0.6

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.tta not in TTA_MODES:
            raise ValueError(f"unknown tta {self.tta!r}; valid: {', '.join(TTA_MODES)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be a probability in [0, 1], got {self.min_confidence}")

    def replace(self, **changes) -> RecognizerSettings:
        """A copy with ``changes`` (checked like the original)."""
        return dataclasses.replace(self, **changes)

    def portable(self) -> RecognizerSettings:
        """The same settings with absolute file paths (model files, YuNet's weights), for processes that run in
        another folder or on another machine (Ray's workers). The model stays a spec string (a ref holds weights)."""
        ref = ModelRef.resolve(self.model)
        refs = ref.members or (ref,)
        model = ",".join(r.spec if r.shipped else str(r.path.resolve()) for r in refs)
        return self.replace(model=model, yunet_path=str(Path(self.yunet_path).resolve()) if self.yunet_path else None)


class Recognizer:
    """Detect faces, crop them as the model was trained, and classify their expressions.

    ``Recognizer(model, **options)``: the options are the fields of :class:`RecognizerSettings` (model,
    detector, yunet_path, backend, device, threads, min_face, min_confidence, tta, batch_size,
    score_threshold), which documents each; :meth:`from_settings` builds one from a settings object.
    ``classifier``: a ready :class:`Classifier` to use instead of loading the model (the server's batched
    one, a stub in tests); ``model`` and ``backend`` then only name it. Every face carries its ``quality``
    and ``low_quality`` flag (:mod:`ferkit.infer.quality`).
    """

    def __init__(self, model: str | Path | ModelRef = "default", *, classifier: Classifier | None = None, **options):
        try:
            settings = RecognizerSettings(model=model, **options)
        except TypeError as exc:  # an option that is no setting: name the valid ones
            valid = ", ".join(f.name for f in dataclasses.fields(RecognizerSettings) if f.name != "model")
            raise TypeError(f"Recognizer: {exc}; valid options: {valid}, classifier") from None
        self._build(settings, classifier)

    @classmethod
    def from_settings(cls, settings: RecognizerSettings, classifier: Classifier | None = None) -> Recognizer:
        """The recognizer ``settings`` describe (with ``classifier``: over that classifier, nothing loaded)."""
        rec = cls.__new__(cls)
        rec._build(settings, classifier)
        return rec

    def _build(self, settings: RecognizerSettings, classifier: Classifier | None) -> None:
        if classifier is not None and not isinstance(classifier, Classifier):
            raise TypeError(f"classifier: expected an object with .preprocess and .probs(batch), "
                            f"got a {type(classifier).__name__}")
        s = settings
        self.device = select_device(s.device)
        backend = s.backend
        if classifier is None:
            ref = ModelRef.resolve(s.model)  # the one place the spec becomes a file
            backend = resolve_backend(backend, ref, self.device)
            classifier = load_classifier(ref, backend, self.device, s.threads)
        self.settings = s.replace(backend=backend)
        self.classifier: Classifier = classifier
        self.backend = backend
        self.batch_size = s.batch_size
        self.tta = s.tta
        self.min_confidence = float(s.min_confidence)
        self.model_name = str(s.model)
        self.detector = create_detector(s.detector, yunet_path=s.yunet_path, score_threshold=s.score_threshold,
                                        min_face=s.min_face, threads=s.threads)

    @property
    def preprocess(self) -> Preprocess:
        """The model's preprocessing (input size, channels, normalisation, labels, crop geometry)."""
        return self.classifier.preprocess

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.preprocess.label_names

    @property
    def crop_geometry(self):
        """How this model wants faces from this detector cropped (stored in the model's ``Preprocess``)."""
        return self.preprocess.crop_for(self.detector.name)

    def __repr__(self) -> str:
        tta = f", tta={self.tta!r}" if self.tta != "none" else ""
        return (f"Recognizer(model={self.model_name!r}, backend={self.backend!r}, device={str(self.device)!r}, "
                f"detector={self.detector.name!r}{tta}, labels={list(self.label_names)})")

    # -------------------------------------------------------------- steps

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in a uint8 BGR image (boxes in its pixels, best score first)."""
        return self.detector.detect(image_bgr)

    def classify_crops(self, crops_bgr: list[np.ndarray]) -> np.ndarray:
        """Expression probabilities ``(N, K)`` float32 for BGR face crops of any size (over ``label_names``), at the
        model's crop temperature; :meth:`recognize_frames` applies the detector's own to the faces it found."""
        step, k = self.batch_size, len(self.label_names)
        out = []
        for i in range(0, len(crops_bgr), step):
            batch = self.preprocess.prepare_images(crops_bgr[i : i + step], order="bgr")  # uint8 (n, S, S[, 3])
            if self.tta == "flip":  # each face and its mirror image (columns reversed) in one forward pass
                both = np.asarray(self.classifier.probs(np.concatenate([batch, batch[:, :, ::-1]])))
                probs = (both[: len(batch)] + both[len(batch) :]) / 2
            else:
                probs = np.asarray(self.classifier.probs(batch))
            if probs.shape != (len(batch), k):  # a plugged-in classifier that disagrees with its own label set
                raise ValueError(f"classifier {type(self.classifier).__name__} returned shape {probs.shape} for "
                                 f"{len(batch)} faces; expected ({len(batch)}, {k}) over {list(self.label_names)}")
            out.append(probs)
        if len(out) == 1:
            return out[0]
        return np.concatenate(out) if out else np.zeros((0, k), np.float32)

    def recognize_frames(self, frames_bgr: list[np.ndarray],
                         detections: list[list[Detection]] | None = None) -> list[list[Face]]:
        """Faces of several BGR frames, all classified in one batch (chunks of ``batch_size``).

        With ``detections`` (one list per frame) no detector runs: the given
        boxes are cropped and classified, e.g. boxes carried by a tracker
        between detection frames.
        """
        frames = [as_bgr(f, order="bgr") for f in frames_bgr]
        if detections is None:
            detections = [self.detect(f) for f in frames]
        elif len(detections) != len(frames):
            raise ValueError(f"got {len(detections)} detection lists for {len(frames)} frames")
        geo = self.crop_geometry
        crops = []
        for frame, dets in zip(frames, detections):
            crops.extend(crop_faces(frame, dets, geo.margin, geo.offset_y, geo.align))
        probs = self.classify_crops(crops)  # at the crops' temperature
        factor = self.preprocess.temperature_for(self.detector.name) / self.preprocess.temperature
        if factor != 1.0 and len(probs):  # faces this detector found: the temperature fitted end to end for them
            probs = rescale_probs(probs, factor)
        names = self.label_names
        results, k = [], 0
        for dets in detections:
            faces = []
            for det in dets:
                p = {n: float(v) for n, v in zip(names, probs[k])}
                q = face_quality(det, crops[k])
                k += 1
                faces.append(Face(box=tuple(int(v) for v in det.box), score=float(det.score),
                                  label=label_for(p, self.min_confidence), probs=p, landmarks=det.landmarks,
                                  quality=q, low_quality=is_low_quality(q)))
            results.append(faces)
        return results

    def __call__(self, image, order: str = "bgr") -> list[Face]:
        """Faces in one image: a numpy array (``order`` says whether 3-channel data is "bgr" or "rgb"),
        a PIL image or a file path. An image without faces gives ``[]``."""
        return self.recognize_frames([as_bgr(image, order=order)])[0]
