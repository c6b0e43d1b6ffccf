"""Face detectors: OpenCV YuNet (best quality/speed, 5 landmarks) and OpenCV's Haar cascade (no download).

YuNet's weights ship inside the package (``weights/face_detection_yunet_2023mar.onnx``,
232 KB, Apache-2.0, see ``weights/YUNET_NOTICE.md``) and are verified by sha256 when
loaded, so ``create_detector("auto")`` is YuNet whenever OpenCV has
``cv2.FaceDetectorYN``; Haar is the fallback for an OpenCV without it, and
stays available by name. Other YuNet files can be given by path or
``$FERKIT_YUNET``; the download code (verified, cached) remains for installs that
lack the packaged file.

Both detectors work on a downscaled copy of large images (longest side
``max_side``, 1280 by default) and scale the boxes back: on the real photos in
``shared/data/photos`` YuNet finds every countable face at 640, 960 and 1280
pixels, while at full 2048-pixel resolution it adds false positives (a shoe,
an 18-pixel blob) and takes 3x as long.

``min_face`` (pixels of the original image) is the smallest face wanted: smaller
boxes are dropped, and YuNet works on a copy scaled by ``YUNET_RELIABLE_PX / min_face``
(never up), so a face of ``min_face`` pixels still reaches the size YuNet finds
reliably. The default (20) keeps every frame up to ``max_side`` at full size;
``min_face=80`` for a webcam halves each side (a quarter of the pixels, about a
quarter of YuNet's time).

YuNet runs on ONNX Runtime when it is installed (``runtime="auto"``): the same
network and weights with OpenCV's own pre- and post-processing (zero padding to
a multiple of 32, score = sqrt(cls * obj), OpenCV's NMS): on the 4 shared photos
and all 275 frames of the shared clip the same boxes, scores within 1e-5 and
landmarks within 0.001 pixel, in 2.1-2.3x less time (fastest of 40 calls, 640x480:
8.2 against 17.7 ms; 1280x720: 28 against 62 ms; one thread, on a 2-core Xeon VM
with AVX-512 whose other core was busy).
``runtime="opencv"`` keeps ``cv2.FaceDetectorYN``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from ferkit.infer.results import Detection
from ferkit.runtime import models_dir, onnxruntime_available, ort_session_options, sha256_file

log = logging.getLogger(__name__)

YUNET_FILE = "face_detection_yunet_2023mar.onnx"
YUNET_URL = f"https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/{YUNET_FILE}"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
YUNET_ENV = "FERKIT_YUNET"
YUNET_PACKAGED = Path(__file__).resolve().parent.parent / "weights" / YUNET_FILE  # shipped with ferkit
DETECTORS = ("auto", "yunet", "haar")
YUNET_RUNTIMES = ("auto", "onnxruntime", "opencv")
DEFAULT_MAX_SIDE = 1280  # longest side the detectors see; larger images are downscaled (see module docstring)
DEFAULT_MIN_FACE = 20  # smallest face wanted, pixels of the original image (longer box side)
# The face size (longer box side, pixels of the image YuNet sees) above which YuNet finds faces reliably; the working
# scale for min_face is YUNET_RELIABLE_PX / min_face. Measured by downscaling the shared data (YuNet at full size as
# the reference): the 13 faces of the photos are all found down to 28 px; on the clip (640x360, H.264, 726 faces)
# the share of faces >= min_face still found at min_face 48 / 64 / 80 is 98.9 / 94.4 / 98.5 % with 40 px,
# 98.0 / 88.6 / 97.6 % with 32 px and 92.6 / 82.4 / 97.2 % with 28 px.
YUNET_RELIABLE_PX = 40
YUNET_OUTPUTS = tuple(f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in (8, 16, 32))

_fallback_noticed = False  # the "auto -> Haar" notice is logged once per process


# ------------------------------------------------------------------ YuNet weights


def _download(url: str, dest: Path, sha256: str, timeout: float = 60.0) -> Path:
    """Fetch ``url`` into a temp file beside ``dest``, check its sha256, then move it into place atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading YuNet face-detector weights from %s", url)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    for block in iter(lambda: resp.read(1 << 16), b""):
                        h.update(block)
                        out.write(block)
            except (urllib.error.URLError, OSError) as exc:
                raise RuntimeError(
                    f"could not download the YuNet face-detector weights from {url} ({exc}); "
                    f"give a local copy of {YUNET_FILE} with ${YUNET_ENV} or a yunet path, or use the 'haar' detector"
                ) from exc
        got = h.hexdigest()
        if got != sha256:
            raise ValueError(f"{url}: downloaded file has sha256 {got}, expected {sha256}; "
                             f"refusing to use it (a corrupted or changed download)")
        os.replace(tmp, dest)  # atomic: a concurrent reader sees the old state or the whole verified file
    finally:
        tmp.unlink(missing_ok=True)
    log.info("saved YuNet weights to %s", dest)
    return dest


def packaged_yunet() -> Path | None:
    """The YuNet weights shipped in the package, verified; None if the file is absent (a trimmed install).

    A packaged file whose sha256 differs is damaged: that is an error naming the file, not a silent fallback."""
    if not YUNET_PACKAGED.is_file():
        return None
    got = sha256_file(YUNET_PACKAGED)
    if got != YUNET_SHA256:
        raise ValueError(f"{YUNET_PACKAGED}: the YuNet weights shipped with ferkit are damaged (sha256 {got}, expected "
                         f"{YUNET_SHA256}); reinstall ferkit, or use detector='haar'")
    return YUNET_PACKAGED


def _local_yunet(path: str | Path | None) -> Path | None:
    """The weights given by argument, else by ``$FERKIT_YUNET``, else the packaged file, else a verified cached
    copy, else None."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"{p}: YuNet weights not found (expected {YUNET_FILE})")
        return p
    env = os.environ.get(YUNET_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"{p}: YuNet weights named by ${YUNET_ENV} not found")
        return p
    packaged = packaged_yunet()
    if packaged is not None:
        return packaged
    cached = models_dir() / YUNET_FILE
    if cached.is_file():
        got = sha256_file(cached)
        if got == YUNET_SHA256:
            return cached
        log.warning("%s: cached YuNet weights have sha256 %s, expected %s; ignoring them", cached, got, YUNET_SHA256)
    return None


def yunet_weights(path: str | Path | None = None, download: bool = True) -> Path:
    """Path of the YuNet weights: ``path`` > ``$FERKIT_YUNET`` > the packaged file > the cache > a verified
    download into the cache.

    A given path or environment variable that names no file is an error (not a
    silent download). With ``download=False`` and nothing local, raises
    :class:`FileNotFoundError` saying how to get the file.
    """
    local = _local_yunet(path)
    if local is not None:
        return local
    dest = models_dir() / YUNET_FILE
    if not download:
        raise FileNotFoundError(f"YuNet weights not found: no path given, ${YUNET_ENV} unset and no {dest}; "
                                f"download {YUNET_URL} (sha256 {YUNET_SHA256}) and set ${YUNET_ENV} to it")
    return _download(YUNET_URL, dest, YUNET_SHA256)


# ------------------------------------------------------------------ detectors


def _as_detector_input(image: np.ndarray) -> np.ndarray:
    """uint8 BGR ``(H, W, 3)``; grey is replicated (both detectors want 3 channels or grey of their own)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"detector input must be uint8, got {image.dtype} (use ferkit.infer.recognizer.as_bgr)")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"detector input must be a BGR image (H, W, 3), got shape {image.shape}")
    return image


def working_scale(height: int, width: int, max_side: int | None, min_face: int, reliable_px: int | None) -> float:
    """The factor (<= 1) a detector scales an image by: its longest side at most ``max_side``, and a face of
    ``min_face`` pixels no smaller than ``reliable_px`` (None: the detector does not scale for ``min_face``)."""
    s = 1.0
    if max_side:
        s = min(s, max_side / max(height, width))
    if reliable_px and min_face > reliable_px:
        s = min(s, reliable_px / min_face)
    return s


def _downscale(image: np.ndarray, s: float) -> tuple[np.ndarray, float]:
    """``(image scaled by s, the factor used)``; with s >= 1 the image itself, not a copy."""
    if s >= 1.0:
        return image, 1.0
    h, w = image.shape[:2]
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), s  # AREA: no aliasing of small faces


def _clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Integer (x, y, w, h) clipped to the image, or None when nothing of the box is inside."""
    x0, y0 = max(0, int(math.floor(x))), max(0, int(math.floor(y)))
    x1, y1 = min(width, int(math.ceil(x + w))), min(height, int(math.ceil(y + h)))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def merge_overlapping(dets: list[Detection], max_overlap: float = 0.5) -> list[Detection]:
    """One box per face: drop a detection when more than ``max_overlap`` of the smaller of it and a better-scored
    one is shared with that one.

    The detectors' own NMS compares IoU, which lets a small box inside a large one survive (YuNet on the shared
    clip, frames 152-154: a second, forehead box over one face, IoU 0.23-0.27 but 64-72 % of the small box
    inside the large one). Neighbouring faces in a crowd overlap by a few per cent and are kept."""
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        x, y, w, h = d.box
        for k in kept:
            kx, ky, kw, kh = k.box
            iw = min(x + w, kx + kw) - max(x, kx)
            ih = min(y + h, ky + kh) - max(y, ky)
            if iw > 0 and ih > 0 and iw * ih > max_overlap * min(w * h, kw * kh):
                break
        else:
            kept.append(d)
    return kept


class FaceDetector:
    """Base class: ``detect(image_bgr)`` -> detections in pixels of the given image, best score first, one per face
    (overlapping boxes merged by :func:`merge_overlapping`).

    An instance holds an OpenCV network/cascade and is not thread-safe: use one per thread.
    """

    name: str = "base"
    reliable_px: int | None = None  # see working_scale; None: only max_side scales the image

    def __init__(self, score_threshold: float = 0.6, min_face: int = DEFAULT_MIN_FACE,
                 max_side: int | None = DEFAULT_MAX_SIDE):
        if min_face < 0:
            raise ValueError(f"min_face must be >= 0 pixels, got {min_face}")
        self.score_threshold = float(score_threshold)
        self.min_face = int(min_face)  # pixels of the original image, longer box side
        self.max_side = max_side

    def scale_for(self, height: int, width: int) -> float:
        """The factor this detector scales an image of ``height`` x ``width`` by before detecting."""
        return working_scale(height, width, self.max_side, self.min_face, self.reliable_px)

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in a uint8 BGR ``(H, W, 3)`` (or grey) image; boxes lie inside the image."""
        image = _as_detector_input(image_bgr)
        height, width = image.shape[:2]
        small, s = _downscale(image, self.scale_for(height, width))
        out = []
        for box, score, lm in self._detect(small, s):
            # YuNet on a tiny image (10x10) now and then returns uninitialised memory: inf, nan.
            if not (np.isfinite(box).all() and np.isfinite(score) and (lm is None or np.isfinite(lm).all())):
                continue
            if score < self.score_threshold or max(box[2], box[3]) / s < self.min_face:
                continue
            clipped = _clip_box(*(v / s for v in box), width, height)
            if clipped is None:
                continue
            if lm is not None:
                lm = (lm / s).astype(np.float32)
            out.append(Detection(clipped, float(score), lm))
        return merge_overlapping(out)

    def _detect(self, image: np.ndarray, scale: float) -> list[tuple[tuple[float, float, float, float], float, np.ndarray | None]]:
        """Raw ``(box, score, landmarks)`` in pixels of ``image``, which is the original downscaled by ``scale``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(score_threshold={self.score_threshold}, min_face={self.min_face}, max_side={self.max_side})"


class _YuNetOnnx:
    """YuNet's network on ONNX Runtime with ``cv2.FaceDetectorYN``'s pre- and post-processing
    (OpenCV's modules/objdetect/src/face_detect.cpp); ``detect(bgr)`` gives its ``(N, 15)`` rows.

    The file's shapes are fixed at 640x640; OpenCV reshapes the network per image, so here, in memory,
    the input's height and width and the outputs' anchor axis are made symbolic and the intermediate shapes dropped.
    """

    def __init__(self, weights: Path, score_threshold: float, nms_threshold: float, top_k: int, threads: int | None):
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(weights))
        if sorted(o.name for o in model.graph.output) != sorted(YUNET_OUTPUTS) or len(model.graph.input) != 1:
            raise ValueError(f"{weights}: not the 2023 YuNet (outputs {[o.name for o in model.graph.output]})")
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
        for out in model.graph.output:
            out.type.tensor_type.shape.dim[1].dim_param = f"{out.name}_anchors"
        del model.graph.value_info[:]  # intermediate shapes stated for 640x640; ONNX Runtime infers them per image
        # Idle workers sleep: spinning ones steal the core the classifier or another process needs (see OnnxClassifier).
        self.session = ort.InferenceSession(model.SerializeToString(), sess_options=ort_session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.input_name = model.graph.input[0].name
        self.score_threshold, self.nms_threshold, self.top_k = score_threshold, nms_threshold, top_k
        self._blob = np.zeros((1, 3, 0, 0), np.float32)
        self._blob_for = (0, 0)

    def detect(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32  # zero padding to a multiple of the largest stride
        if self._blob_for != (h, w):
            # Kept between frames of one size (a video): a fresh 11 MB buffer for 1280x720 cost 1.3 ms a frame.
            self._blob = np.zeros((1, 3, ph, pw), np.float32)  # (1, 3, H, W), BGR 0-255, as cv2.dnn.blobFromImage gives
            self._blob_for = (h, w)
        blob = self._blob
        blob[0, :, :h, :w] = image.transpose(2, 0, 1)  # the padding stays zero
        out = dict(zip(YUNET_OUTPUTS, self.session.run(list(YUNET_OUTPUTS), {self.input_name: blob})))
        rows = []
        for stride in (8, 16, 32):
            cols = pw // stride
            score = np.sqrt(np.clip(out[f"cls_{stride}"].reshape(-1), 0, 1) * np.clip(out[f"obj_{stride}"].reshape(-1), 0, 1))
            idx = np.flatnonzero(score >= self.score_threshold)
            if idx.size == 0:
                continue
            r, c = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
            b = out[f"bbox_{stride}"].reshape(-1, 4)[idx]
            k = out[f"kps_{stride}"].reshape(-1, 10)[idx]
            bw, bh = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
            x0, y0 = (c + b[:, 0]) * stride - bw / 2, (r + b[:, 1]) * stride - bh / 2
            lm = np.empty_like(k)
            lm[:, 0::2], lm[:, 1::2] = (k[:, 0::2] + c[:, None]) * stride, (k[:, 1::2] + r[:, None]) * stride
            rows.append(np.column_stack([x0, y0, bw, bh, lm, score[idx]]).astype(np.float32))
        if not rows:
            return np.zeros((0, 15), np.float32)
        faces = np.concatenate(rows)
        if len(faces) > 1:  # OpenCV's NMS on boxes truncated to integers, as FaceDetectorYN does
            boxes = [tuple(int(v) for v in f[:4]) for f in faces]
            keep = cv2.dnn.NMSBoxes(boxes, faces[:, 14].tolist(), self.score_threshold, self.nms_threshold, top_k=self.top_k)
            faces = faces[np.asarray(keep, dtype=np.int64).reshape(-1)]
        return faces


class YuNetDetector(FaceDetector):
    """OpenCV's YuNet: boxes, scores and 5 landmarks (eyes, nose tip, mouth corners).

    ``runtime``: "auto" (ONNX Runtime when installed, else OpenCV), "onnxruntime" or "opencv"
    (``cv2.FaceDetectorYN``); both give the same faces (module docstring). ``threads``: ONNX Runtime's
    intra-op threads (None: one per core this process may use; idle threads sleep either way).
    """

    name = "yunet"
    reliable_px = YUNET_RELIABLE_PX

    def __init__(self, weights: str | Path | None = None, score_threshold: float = 0.6, min_face: int = DEFAULT_MIN_FACE,
                 max_side: int | None = DEFAULT_MAX_SIDE, nms_threshold: float = 0.3, download: bool = True,
                 runtime: str = "auto", threads: int | None = None):
        super().__init__(score_threshold, min_face, max_side)
        if runtime not in YUNET_RUNTIMES:
            raise ValueError(f"unknown YuNet runtime {runtime!r}; valid: {', '.join(YUNET_RUNTIMES)}")
        self.weights = yunet_weights(weights, download=download)
        self._onnx: _YuNetOnnx | None = None
        self._net = None
        if runtime == "onnxruntime" or (runtime == "auto" and onnxruntime_available()):
            try:
                self._onnx = _YuNetOnnx(self.weights, self.score_threshold, nms_threshold, 5000, threads)
            except Exception as exc:  # any file ONNX Runtime refuses (onnx and ORT raise their own types): OpenCV may read it
                if runtime == "onnxruntime":
                    raise ValueError(f"{self.weights}: ONNX Runtime cannot run these YuNet weights ({exc})") from exc
                log.info("%s: YuNet on OpenCV, not ONNX Runtime (%s)", self.weights, exc)
        if self._onnx is None:
            try:
                self._net = cv2.FaceDetectorYN.create(str(self.weights), "", (320, 320), self.score_threshold,
                                                      nms_threshold, 5000)
            except cv2.error as exc:
                raise ValueError(f"{self.weights}: OpenCV cannot load these YuNet weights ({exc.msg.strip()})") from exc
        self.runtime = "onnxruntime" if self._onnx is not None else "opencv"
        self._size = (320, 320)

    def _detect(self, image, scale):
        image = np.ascontiguousarray(image)
        if self._onnx is not None:
            faces = self._onnx.detect(image)
        else:
            h, w = image.shape[:2]
            if (w, h) != self._size:
                self._net.setInputSize((w, h))
                self._size = (w, h)
            _, faces = self._net.detect(image)
            if faces is None:
                return []
        # Each row: x, y, w, h, 5 landmark (x, y) pairs, score.
        return [(tuple(map(float, f[:4])), float(f[14]), f[4:14].reshape(5, 2).copy()) for f in faces]

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", runtime={self.runtime!r})"


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade: needs no download, finds fewer faces, gives no landmarks.

    Its score is the cascade's final-stage weight squashed to (0, 1) with a
    logistic (weight 0 -> 0.5); it ranks detections but is not a calibrated
    probability.
    """

    name = "haar"

    def __init__(self, score_threshold: float = 0.6, min_face: int = DEFAULT_MIN_FACE, max_side: int | None = DEFAULT_MAX_SIDE,
                 scale_factor: float = 1.1, min_neighbors: int = 5):
        super().__init__(score_threshold, min_face, max_side)
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise RuntimeError(f"{path}: OpenCV's Haar cascade is missing or unreadable; reinstall opencv-python-headless<5")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def _detect(self, image, scale):
        grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))  # equalised: robust to lighting
        m = max(1, int(self.min_face * scale))
        boxes, _, weights = self._cascade.detectMultiScale3(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(m, m), outputRejectLevels=True)
        weights = np.asarray(weights, dtype=np.float64).ravel()
        return [(tuple(map(float, b)), float(1.0 / (1.0 + math.exp(-wt))), None) for b, wt in zip(boxes, weights)]


def create_detector(name: str | FaceDetector = "auto", yunet_path: str | Path | None = None, score_threshold: float = 0.6,
                    min_face: int | None = None, max_side: int | None = DEFAULT_MAX_SIDE,
                    threads: int | None = None) -> FaceDetector:
    """A face detector by name: ``"yunet"``, ``"haar"``, or ``"auto"``.

    ``"auto"`` is YuNet (the packaged weights, or ``yunet_path`` / ``$FERKIT_YUNET``)
    whenever OpenCV has ``cv2.FaceDetectorYN`` and the weights are at hand without a
    network, and otherwise Haar, with one logged notice saying why. A
    :class:`FaceDetector` instance is returned as is. ``min_face``: the smallest face
    wanted, in pixels of the images to come (module docstring; None: ``DEFAULT_MIN_FACE``); ``threads``: YuNet's
    ONNX Runtime threads.
    """
    global _fallback_noticed
    if isinstance(name, FaceDetector):
        return name
    key = str(name).lower()
    opts = dict(score_threshold=score_threshold, min_face=DEFAULT_MIN_FACE if min_face is None else min_face,
                max_side=max_side)
    if key == "yunet":
        return YuNetDetector(yunet_path, threads=threads, **opts)
    if key == "haar":
        return HaarDetector(**opts)
    if key == "auto":
        has_yunet = hasattr(cv2, "FaceDetectorYN")
        local = _local_yunet(yunet_path) if has_yunet else None
        if local is not None:
            return YuNetDetector(local, threads=threads, **opts)
        if not has_yunet:
            msg = (f"face detector: using OpenCV's Haar cascade, which finds fewer faces, because this OpenCV "
                   f"({cv2.__version__}) has no cv2.FaceDetectorYN; install opencv-python-headless>=4.8 for YuNet")
        else:
            msg = (f"face detector: using OpenCV's Haar cascade, which finds fewer faces, because the YuNet weights are "
                   f"not at hand (not in the package, no path given, ${YUNET_ENV} unset, nothing in {models_dir()}). "
                   f"Reinstall ferkit, or choose the 'yunet' detector once with network access (downloads {YUNET_FILE}, "
                   f"230 KB, sha256-verified, cached)")
        if not _fallback_noticed:
            log.warning(msg)
            _fallback_noticed = True
        else:
            log.debug(msg)
        return HaarDetector(**opts)
    raise ValueError(f"unknown face detector {name!r}; valid: {', '.join(DETECTORS)}")
