"""The Recognizer: image(s) in, one typed :class:`~ferkit.infer.results.Face` per face out.

    rec = Recognizer()                    # the shipped default model, YuNet if at hand else Haar
    faces = rec("photo.jpg")              # [Face(box, score, label, probs, landmarks), ...]
    per_frame = rec.recognize_frames([f1, f2, f3])   # all faces of all frames in one batch

Any ferkit checkpoint works: input size, channels, normalisation, face-crop
margin and label names come from the :class:`~ferkit.engine.preprocess.Preprocess`
stored in it, so deployment prepares faces exactly as training did.

The network itself sits behind a :class:`Classifier` (prepared uint8 crops in,
probabilities out): :class:`TorchClassifier` for checkpoints,
:class:`~ferkit.engine.export.OnnxClassifier` for ONNX Runtime, or any object
passed as ``Recognizer(classifier=...)`` (the server's batched one, a stub in tests).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

from ferkit.engine.checkpoint import SHIPPED_MODELS, ensemble_members, load_model, model_digest, resolve_checkpoint_path
from ferkit.engine.preprocess import Preprocess
from ferkit.imageio import read_bgr, to_model_channels, to_uint8
from ferkit.infer.align import crop_faces
from ferkit.infer.detectors import FaceDetector, create_detector
from ferkit.infer.quality import face_quality, is_low_quality
from ferkit.infer.results import Detection, Face, label_for
from ferkit.metrics import rescale_probs
from ferkit.runtime import models_dir, onnxruntime_available, select_device

if TYPE_CHECKING:
    from ferkit.engine.export import OnnxClassifier

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
TTA_MODES = ("none", "flip")
ONNX_CACHE_VERSION = 1  # bump when export_onnx changes what it writes
# The shipped models quantized to int8 (``ferkit export --int8``; the model cards have the commands).
SHIPPED_INT8 = {name: path.with_name(f"{path.stem}_int8.onnx") for name, path in SHIPPED_MODELS.items()}
DEFAULT_INT8 = SHIPPED_INT8["default"]


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


# ------------------------------------------------------------------ the recognizer


def _onnx_path_for(model: str | Path) -> Path:
    """An ONNX export of the checkpoint ``model``, made once and cached under the checkpoint's content hash."""
    from ferkit.engine.export import export_onnx

    stem = "ensemble" if ensemble_members(model) else resolve_checkpoint_path(model).stem
    path = models_dir() / "onnx" / f"{stem}-{model_digest(model)[:16]}-v{ONNX_CACHE_VERSION}.onnx"
    if not path.is_file():
        log.info("exporting %s to ONNX for the onnx backend (cached at %s)", model, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, path)  # atomic: concurrent first uses each write a whole file
    return path


def _int8_path_for(model: str | Path) -> Path:
    """The int8 ONNX file for ``model``: shipped for the shipped models; any other is quantized with ``ferkit export``."""
    if str(model) in SHIPPED_INT8:
        path = SHIPPED_INT8[str(model)]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the shipped int8 model is missing; reinstall ferkit or use backend='onnx'")
        return path
    raise ValueError(f"backend 'onnx-int8' needs a calibrated int8 file for {model}: make one with\n"
                     f"  ferkit export --model {model} --format onnx --int8 --out model_int8.onnx\n"
                     "and pass model='model_int8.onnx' (only the shipped models come quantized)")


@runtime_checkable
class Classifier(Protocol):
    """What the Recognizer classifies faces with: prepared face crops in, expression probabilities out.

    ``preprocess`` is the checkpoint's :class:`Preprocess` (input size, channels, labels, crop
    geometry); ``probs`` takes a batch exactly as ``preprocess.prepare_images`` gives it.
    """

    preprocess: Preprocess

    def probs(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(N, S, S)`` or ``(N, S, S, 3)`` -> float32 ``(N, K)`` over ``preprocess.label_names``."""
        ...


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads in the calling thread, then restore the setting (None: as it is)."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class TorchClassifier:
    """A PyTorch model as a :class:`Classifier` (``Preprocess.to_tensor`` normalises, softmax at the end).

    ``threads``: intra-op threads of each forward pass on a CPU, set for the call only (None: torch's own
    setting). The Recognizer passes 1 unless told otherwise: with other processes busy on a 2-core machine,
    torch's default two threads spin-wait for the busy core (the shipped model on a batch of one face 599
    against 12.9 ms, of 64 faces 983 against 531 ms; the shared clip with YuNet on OpenCV 5.8 against
    31.0 frames/s in ``benchmarks/vs_peers.py``).
    """

    def __init__(self, model: torch.nn.Module, preprocess: Preprocess, device: torch.device, threads: int | None = None):
        if device.type == "cpu":
            # channels_last: 5-25% faster convolutions on CPU (measured with the default model), same results.
            model = model.to(memory_format=torch.channels_last)
        self.model = model.eval()
        self.preprocess = preprocess
        self.device = device
        self.threads = threads if device.type == "cpu" else None

    @classmethod
    def load(cls, model: str | Path, device: torch.device, threads: int | None = None) -> TorchClassifier:
        """``model``: "default", a checkpoint file or a run folder, loaded weights-only onto ``device``."""
        net, pre = load_model(model, device)
        return cls(net, pre, device, threads)

    def probs(self, batch: np.ndarray) -> np.ndarray:
        x = self.preprocess.to_tensor(batch, self.device)  # (n, C, S, S), float, normalised
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)  # matches the model's layout (see __init__)
        with torch.inference_mode(), torch_threads(self.threads):
            logits = self.model(x)
        return self.preprocess.probs(logits).cpu().numpy()  # calibrated: softmax(logits / temperature)


def _onnx_classifier(model: str | Path, backend: str, device: torch.device, threads: int | None) -> OnnxClassifier:
    """The :class:`~ferkit.engine.export.OnnxClassifier` for ``backend`` "onnx" or "onnx-int8" (CUDA when asked and present)."""
    from ferkit.engine.export import OnnxClassifier

    if str(model).lower().endswith(".onnx"):
        path = Path(model)
    else:
        path = _int8_path_for(model) if backend == "onnx-int8" else _onnx_path_for(model)
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
    clf = OnnxClassifier(path, threads=threads, providers=providers)
    if backend == "onnx-int8" and not clf.model_spec.get("quantized"):
        log.warning("%s is not an int8 file (made without `ferkit export --int8`): running it as it is", path)
    return clf


def resolve_backend(backend: str, model: str | Path, device: torch.device) -> str:
    """The backend "auto" stands for: "onnx-int8" for a shipped model on a CPU with ONNX Runtime
    installed, "onnx" for an ``.onnx`` file, else "torch"; any other backend as given.

    Why int8 on CPU: against the torch model it took ``benchmarks/vs_peers.py``'s frame rates from 45.0 to
    79.5 frames/s on 640x480 frames with one face, 11.2 to 21.8 on 1280x720 frames with six, 38.7 to 71.1 on
    the shared clip (a 2-core Xeon VM, load average 4-6), for 70.13 against 70.24 % on FER2013 PrivateTest."""
    if backend != "auto":
        return backend
    if str(model).lower().endswith(".onnx"):
        return "onnx"
    int8 = SHIPPED_INT8.get(str(model))
    if int8 is not None and device.type == "cpu" and int8.is_file() and onnxruntime_available():
        return "onnx-int8"
    return "torch"


class Recognizer:
    """Detect faces, crop them as the model was trained, and classify their expressions.

    ``model``: "default" (shipped), a checkpoint file, a run folder, or an
    exported ``.onnx`` file. ``detector``: "auto", "yunet", "haar" or a
    :class:`FaceDetector`. ``device``: "auto" (cuda if available), "cpu",
    "cuda", ... ``backend``: "auto" (:func:`resolve_backend`: the shipped
    model runs as "onnx-int8" on a CPU), "torch", "onnx" (ONNX Runtime; a
    checkpoint is exported once and cached) or "onnx-int8" (the shipped model
    quantized to int8: faster per face on a CPU, a little less accurate; the
    model card has both figures). ``batch_size``: faces per forward pass.
    ``threads``: CPU threads of the classifier and of YuNet on ONNX Runtime
    (None: one ONNX Runtime thread per core, idle ones sleeping rather than
    spinning, see :func:`~ferkit.runtime.ort_session_options`, and one
    thread per torch forward pass, see :class:`TorchClassifier`: defaults that
    hold up on a busy machine); for the torch backend a number also sets
    ``torch.set_num_threads``, which is process-wide. ``min_face``: the smallest
    face wanted, in pixels of the images to come (None: 20); a larger one lets YuNet work
    on a smaller copy of each image (:mod:`ferkit.infer.detectors`).
    ``classifier``: a ready :class:`Classifier` to use instead of loading
    ``model``; ``model`` and ``backend`` then only name it. ``tta``: "flip"
    also classifies each face mirrored and averages the two (twice the
    classifier's work, none of the detector's). ``min_confidence``: a face whose top calibrated
    probability is below it is labelled "uncertain" (its probabilities are still given).
    Every face carries its ``quality`` and ``low_quality`` flag (:mod:`ferkit.infer.quality`).
    """

    def __init__(self, model: str | Path = "default", detector: str | FaceDetector = "auto", device: str = "auto",
                 backend: str = "auto", yunet_path: str | Path | None = None, batch_size: int = 64,
                 threads: int | None = None, score_threshold: float = 0.6, classifier: Classifier | None = None,
                 min_face: int | None = None, tta: str = "none", min_confidence: float = 0.0):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if tta not in TTA_MODES:
            raise ValueError(f"unknown tta {tta!r}; valid: {', '.join(TTA_MODES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be a probability in [0, 1], got {min_confidence}")
        if classifier is not None and not isinstance(classifier, Classifier):
            raise TypeError(f"classifier: expected an object with .preprocess and .probs(batch), "
                            f"got a {type(classifier).__name__}")
        self.device = select_device(device)
        if classifier is None:
            backend = resolve_backend(backend, model, self.device)
            if str(model).lower().endswith(".onnx") and backend == "torch":
                log.info("%s is an ONNX file: using the onnx backend", model)
                backend = "onnx"
            if backend == "torch":
                if threads:
                    torch.set_num_threads(int(threads))
                classifier = TorchClassifier.load(model, self.device, threads=threads or 1)  # why 1: TorchClassifier
            else:
                classifier = _onnx_classifier(model, backend, self.device, threads)
        self.classifier: Classifier = classifier
        self.backend = backend
        self.batch_size = int(batch_size)
        self.tta = tta
        self.min_confidence = float(min_confidence)
        self.model_name = str(model)
        self.detector = create_detector(detector, yunet_path=yunet_path, score_threshold=score_threshold,
                                        min_face=min_face, threads=threads)

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
