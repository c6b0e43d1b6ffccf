"""``ferkit serve``: a REST API, a live WebSocket and the browser UI in one FastAPI app.

    app = create_app(model="default", detector="auto", api_key=None)
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints (JSON errors are ``{"error": "..."}`` with a 4xx status):

- ``POST /v1/predict`` an image upload -> the faces (results.jsonl schema), image size, model, detector
- ``POST /v1/videos`` a video upload -> a job, processed in the background; ``GET /v1/videos/{id}``
  its progress and, when done, per-frame results and download links (``/video``, ``/csv``,
  ``/jsonl``, ``/timeline``, ``/source``); ``DELETE`` removes it and its files
- ``GET /v1/models`` the models and face detectors a request may choose from
- ``WS /v1/live`` JPEG frames in, faces (tracked and smoothed per connection) out
- ``GET /health``, ``GET /docs`` (served from local files), ``GET /openapi.json``, the UI at ``/``

All requests share each model through a :class:`~ferkit.app.batcher.MicroBatcher`:
their face crops are classified together in one forward pass. Video jobs go
through the same batcher, from one background worker thread, so a long video
never blocks the API.

Safety: request bodies are capped before they are read (413); an image's pixel
count is read from its header and checked before it is decoded (413), so a
decompression bomb is never decoded; content is checked by decoding, never by
the file name (422); uploads are written only into a server-owned temporary
folder under generated names and deleted with their job; an optional API key
(``X-API-Key`` header) guards everything under ``/v1``.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hmac
import io
import json
import logging
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, FastAPI, File, Query, Request, Security, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ferkit.app.batcher import MicroBatcher
from ferkit.infer.detectors import FaceDetector
from ferkit.infer.recognizer import Recognizer
from ferkit.infer.results import Face

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
API_KEY_HEADER = "X-API-Key"
DEFAULT_MAX_UPLOAD_MB = 20.0  # one photo or one live frame
DEFAULT_MAX_VIDEO_MB = 200.0
DEFAULT_MAX_PIXELS = 40_000_000  # above any camera's photos (a 50 MP phone shoots 12 MP by default), far below a bomb
DEFAULT_MAX_VIDEO_SECONDS = 900.0
DEFAULT_JOB_TTL_S = 3600.0  # a finished job's files are kept this long for downloads
OTHER_BODY_LIMIT = 64 * 1024  # bytes of any other request body (none of them takes one)
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


# ------------------------------------------------------------------ errors


class ApiError(Exception):
    """A client error: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _BodyTooLarge(Exception):
    pass


class _BodyLimit:
    """ASGI middleware: refuse request bodies over a per-path byte limit with 413, before or while reading them.

    A declared Content-Length over the limit is answered at once, unread; a
    chunked body is counted as it streams and cut off at the limit, and
    whatever the app answered then is replaced by the 413.
    """

    def __init__(self, app, limit_for: Callable[[str, str], int]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["method"], scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _too_large(send, limit)
        seen = 0
        state = {"over": False, "started": False}

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    state["over"] = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            if state["over"]:
                if not state["started"]:
                    state["started"] = True
                    await _too_large(send, limit)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if not state["started"]:
                state["started"] = True
                await _too_large(send, limit)


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"error": f"upload too large: the limit is {limit / 1e6:.3g} MB"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ())]
        where, name = (loc[0], ".".join(loc[1:])) if len(loc) > 1 else ("request", ".".join(loc))
        kind = {"body": "form field", "query": "query parameter", "path": "path parameter", "header": "header"}.get(where, where)
        if err.get("type") == "missing":
            parts.append(f"missing {kind} '{name}'")
        else:
            parts.append(f"{kind} '{name}': {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


# ------------------------------------------------------------------ image checks


def image_header_size(data: bytes, max_pixels: int) -> tuple[int, int, str]:
    """``(width, height, format)`` read from an image's header only; nothing is decoded.

    Raises ApiError 422 for bytes that are no image format Pillow knows, and
    413 for an image whose declared pixel count exceeds ``max_pixels``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            with Image.open(io.BytesIO(data)) as im:  # lazy: parses the header, decodes no pixel
                width, height, fmt = im.size[0], im.size[1], im.format or "?"
    except Image.DecompressionBombError as exc:
        raise ApiError(413, f"image refused: too many pixels ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ApiError(422, "the upload is not an image in a known format (JPEG, PNG, BMP, TIFF, WebP, ...)") from exc
    if width * height > max_pixels:
        raise ApiError(413, f"image refused: {width}x{height} = {width * height:,} pixels, the limit is {max_pixels:,}")
    return width, height, fmt


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Check the header against ``max_pixels``, then decode to uint8 BGR ``(H, W, 3)`` (EXIF rotation applied)."""
    if not data:
        raise ApiError(422, "empty upload (0 bytes); expected an image")
    image_header_size(data, max_pixels)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ApiError(422, "the upload could not be decoded as an image (corrupt or unsupported)")
    if img.shape[0] * img.shape[1] > max_pixels:  # a header that lied
        raise ApiError(413, f"image refused: {img.shape[1]}x{img.shape[0]} pixels, the limit is {max_pixels:,}")
    return img


_VIDEO_TYPES = {".mp4": "video/mp4", ".mkv": "video/webm", ".ogv": "video/ogg", ".avi": "video/x-msvideo"}


def _sniff_video_suffix(head: bytes) -> str:
    """A file suffix for the container in ``head`` (OpenCV/FFmpeg probe the content anyway; a suffix helps them)."""
    if head[4:8] == b"ftyp":
        return ".mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return ".avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return ".mkv"
    if head[:4] == b"OggS":
        return ".ogv"
    if head[:3] == b"FLV":
        return ".flv"
    if head[:4] == b"\x00\x00\x01\xba":
        return ".mpg"
    return ".video"


# ------------------------------------------------------------------ models, detectors, batching


class _DetectorPool:
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


class BatchedRecognizer(Recognizer):
    """A :class:`Recognizer` view whose classification goes through a shared :class:`MicroBatcher`.

    It shares the loaded model of ``base`` (no copy) and has a detector of its
    own, so each request, live connection or video job can use one without
    locking, while their crops meet in the batcher's single forward passes.
    """

    def __init__(self, base: Recognizer, batcher: MicroBatcher, detector: FaceDetector):
        # Deliberately no super().__init__: nothing is loaded. Only what recognize_frames and __repr__ use is
        # taken over; classification never reaches the base's model except through the batcher.
        self.backend, self.batch_size, self.device = base.backend, base.batch_size, base.device
        self.preprocess, self.model_name = base.preprocess, base.model_name
        self.detector = detector
        self._batcher = batcher

    def classify_crops(self, crops_bgr: list[np.ndarray]) -> np.ndarray:
        if not crops_bgr:
            return np.zeros((0, len(self.label_names)), np.float32)
        return self._batcher.submit(crops_bgr)


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

    def __init__(self, models: str | Sequence[str] = "default", detector: str = "auto", yunet_path: str | Path | None = None,
                 device: str = "auto", backend: str = "torch", max_batch: int = 64, max_wait_ms: float = 2.0,
                 threads: int | None = None):
        from ferkit.infer.detectors import create_detector, yunet_weights

        self.yunet_path = yunet_path
        first = create_detector(detector, yunet_path=yunet_path)
        self.default_detector = first.name
        names = {first.name, "haar"}
        if "yunet" not in names:
            try:
                yunet_weights(yunet_path, download=False)
                names.add("yunet")
            except FileNotFoundError:
                log.info("face detector 'yunet' not offered: its weights are not at hand")
        self.detector_names = sorted(names)
        self._pools = {n: _DetectorPool(lambda n=n: create_detector(n, yunet_path=yunet_path),
                                        first if n == first.name else None) for n in self.detector_names}
        self.specs = parse_models(models)
        self.default_model = next(iter(self.specs))
        self.recognizers: dict[str, Recognizer] = {}
        self.batchers: dict[str, MicroBatcher] = {}
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")

        def set_threads() -> None:
            if threads is not None:
                import torch

                torch.set_num_threads(threads)  # also here: OpenMP thread counts are per calling thread

        set_threads()
        try:
            for name, spec in self.specs.items():
                rec = Recognizer(model=spec, detector=first, device=device, backend=backend, threads=threads)
                self.recognizers[name] = rec
                self.batchers[name] = MicroBatcher(rec.classify_crops, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                                   name=f"batcher[{name}]", on_start=set_threads)
                log.info("model %r: %s", name, rec)
        except BaseException:
            self.close()  # a model that fails to load stops the batchers already started
            raise

    def model(self, requested: str | None) -> str:
        name = requested or self.default_model
        if name not in self.recognizers:
            raise ApiError(422, f"unknown model {name!r}; available: {', '.join(self.recognizers)}")
        return name

    def detector(self, requested: str | None) -> str:
        name = (requested or "auto").lower()
        if name == "auto":
            return self.default_detector
        if name not in self._pools:
            raise ApiError(422, f"unknown face detector {requested!r}; available: auto, {', '.join(self.detector_names)}")
        return name

    def new_detector(self, name: str) -> FaceDetector:
        from ferkit.infer.detectors import create_detector

        return create_detector(name, yunet_path=self.yunet_path)

    def recognizer(self, model: str, detector: FaceDetector) -> BatchedRecognizer:
        return BatchedRecognizer(self.recognizers[model], self.batchers[model], detector)

    def recognize(self, image_bgr: np.ndarray, model: str, detector: str) -> list[Face]:
        """Faces of one BGR image, with a borrowed detector and the model's shared batcher."""
        with self._pools[detector].borrow() as det:
            dets = det.detect(image_bgr)
        # The detector goes back to the pool before classification: the recognizer does not detect again.
        return self.recognizer(model, det).recognize_frames([image_bgr], detections=[dets])[0]

    def describe(self) -> dict:
        models = []
        for name, rec in self.recognizers.items():
            pre = rec.preprocess
            models.append({"name": name, "default": name == self.default_model, "labels": list(rec.label_names),
                           "input_size": pre.input_size, "channels": pre.channels, "backend": rec.backend})
        return {"models": models, "detectors": self.detector_names, "default_model": self.default_model,
                "default_detector": self.default_detector}

    def stats(self) -> dict:
        return {name: {"batches": b.stats.batches, "crops": b.stats.items, "requests": b.stats.requests,
                       "mean_batch": round(b.stats.mean_batch, 2), "largest_batch": b.stats.largest_batch,
                       "queued": b.queued} for name, b in self.batchers.items()}

    def close(self) -> None:
        for b in self.batchers.values():
            b.close()


# ------------------------------------------------------------------ video jobs


class _Cancelled(Exception):
    pass


@dataclass
class VideoJob:
    """One uploaded video and its recognition, run in the background."""

    id: str
    dir: Path  # server-owned: <work root>/<id>/
    input: Path  # the upload, under a generated name
    model: str
    detector: str
    options: dict
    labels: list[str]
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    frames_total: int | None = None
    status: str = "queued"  # queued -> running -> done | failed | cancelled
    frames_done: int = 0
    error: str | None = None
    summary: dict | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    _results: list | None = None

    @property
    def out(self) -> Path:
        return self.dir / "out"

    @property
    def progress(self) -> float | None:
        if self.status == "done":
            return 1.0
        if not self.frames_total:
            return None if self.status == "running" else 0.0
        return round(min(self.frames_done / self.frames_total, 0.999), 4)

    def results(self) -> list[dict]:
        """Every frame with its faces: ``[{"frame", "time_s", "faces": [...]}, ...]`` (read once, then kept)."""
        if self._results is None:
            with open(self.out / "frames.jsonl", encoding="utf-8") as fh:
                self._results = [json.loads(line) for line in fh if line.strip()]
        return self._results


class VideoJobs:
    """Queued video jobs processed one at a time by a worker thread; files removed ``ttl_s`` after a job ends."""

    def __init__(self, hub: ModelHub, root: Path, ttl_s: float = DEFAULT_JOB_TTL_S, max_queued: int = 8,
                 max_jobs: int = 64):
        self.hub = hub
        self.root = root
        self.ttl_s = ttl_s
        self.max_queued = max_queued
        self.max_jobs = max_jobs
        self._jobs: dict[str, VideoJob] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._worker, name="ferkit-video-jobs", daemon=True)
        self._thread.start()

    def create(self, upload, model: str, detector: str, options: dict, max_pixels: int, max_seconds: float) -> VideoJob:
        """Copy ``upload`` (a binary file object) into a new job folder, check it is a video within limits, queue it."""
        from ferkit.infer.sources import VideoSource

        self.expire()
        with self._lock:
            queued = sum(j.status in ("queued", "running") for j in self._jobs.values())
            if queued >= self.max_queued:
                raise ApiError(429, f"{queued} videos are waiting or running; try again when one has finished")
            if len(self._jobs) >= self.max_jobs:
                raise ApiError(429, f"{len(self._jobs)} video jobs are kept; delete some (DELETE /v1/videos/ID) or wait")
        job_id = uuid.uuid4().hex
        job_dir = self.root / job_id
        job_dir.mkdir(parents=True)
        try:
            head = upload.read(64)
            if not head:
                raise ApiError(422, "empty upload (0 bytes); expected a video")
            path = job_dir / f"input{_sniff_video_suffix(head)}"  # a generated name: the client's name is never used
            with open(path, "wb") as fh:
                fh.write(head)
                shutil.copyfileobj(upload, fh, 1 << 20)
            try:
                src = VideoSource(path)  # opens and decodes the first frame: content decides, not the name
            except (ValueError, OSError) as exc:
                raise ApiError(422, "the upload is not a readable video (OpenCV could not decode a frame)") from exc
            w, h = src.size or (0, 0)
            if w * h > max_pixels:
                raise ApiError(413, f"video refused: {w}x{h} frames = {w * h:,} pixels, the limit is {max_pixels:,}")
            if src.frame_count and src.fps and src.frame_count / src.fps > max_seconds:
                raise ApiError(413, f"video refused: {src.frame_count / src.fps:.0f} s long, the limit is {max_seconds:.0f} s")
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        job = VideoJob(job_id, job_dir, path, model, detector, options, list(self.hub.recognizers[model].label_names),
                       fps=src.fps, width=w, height=h, frames_total=src.frame_count)
        with self._lock:
            self._jobs[job_id] = job
        self._queue.put(job_id)
        log.info("video job %s queued: %dx%d, %s frames", job_id, w, h, src.frame_count)
        return job

    def get(self, job_id: str) -> VideoJob:
        self.expire()
        with self._lock:
            job = self._jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise ApiError(404, f"no video job {job_id!r} (unknown, deleted, or expired after {self.ttl_s:.0f} s)")
        return job

    def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        job.cancel.set()
        with self._lock:
            self._jobs.pop(job.id, None)
        if job.status != "running":  # a running job's folder is removed by the worker once it has stopped
            shutil.rmtree(job.dir, ignore_errors=True)

    def expire(self) -> None:
        now = time.time()
        with self._lock:
            old = [j for j in self._jobs.values() if j.finished is not None and now - j.finished > self.ttl_s]
            for j in old:
                del self._jobs[j.id]
        for j in old:
            shutil.rmtree(j.dir, ignore_errors=True)
            log.info("video job %s expired; its files are removed", j.id)

    def count(self) -> dict:
        with self._lock:
            out: dict[str, int] = {}
            for j in self._jobs.values():
                out[j.status] = out.get(j.status, 0) + 1
            return out

    def close(self) -> None:
        with self._lock:
            for j in self._jobs.values():
                j.cancel.set()
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _worker(self) -> None:
        while True:
            try:
                job_id = self._queue.get(timeout=60)
            except queue.Empty:
                self.expire()
                continue
            if job_id is None:
                return
            with self._lock:
                job = self._jobs.get(job_id)
            if job is None or job.cancel.is_set():
                continue
            self._run(job)
            if job.id not in self._jobs:  # deleted while running
                shutil.rmtree(job.dir, ignore_errors=True)

    def _run(self, job: VideoJob) -> None:
        from ferkit.infer.pipeline import run_predict

        job.status = "running"
        rec = self.hub.recognizer(job.model, self.hub.new_detector(job.detector))
        frames_path = job.out / "frames.jsonl"
        job.out.mkdir(parents=True, exist_ok=True)
        try:
            with open(frames_path, "w", encoding="utf-8") as frames:

                def on_frame(result) -> None:
                    frames.write(json.dumps({"frame": result.frame, "time_s": round(result.time_s, 4),
                                             "faces": [f.to_dict() for f in result.faces]}) + "\n")
                    job.frames_done += 1
                    if job.cancel.is_set():
                        raise _Cancelled()

                job.summary = run_predict(job.input, job.out, recognizer=rec, model=job.model,
                                          detect_every=job.options["detect_every"], smooth=job.options["smooth"],
                                          on_frame=on_frame, overwrite=True)
            _faces_csv(job.out / "results.jsonl", job.out / "faces.csv", job.labels)
            job.status = "done"
            log.info("video job %s done: %d frames in %.1f s", job.id, job.frames_done, job.summary.get("seconds", 0))
        except _Cancelled:
            job.status = "cancelled"
        except Exception as exc:  # noqa: BLE001 - the job fails, the server lives on
            log.exception("video job %s failed", job.id)
            # The message may name files of the job folder: show the client no server path.
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}".replace(str(job.dir), "<job>")
        finally:
            job.finished = time.time()


def _faces_csv(jsonl: Path, out: Path, labels: list[str]) -> None:
    """One CSV row per face per frame: frame, time, track, box, detector score, label, one column per class."""
    with open(jsonl, encoding="utf-8") as src, open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["frame", "time_s", "track_id", "x", "y", "w", "h", "score", "label", *labels])
        for line in src:
            if not line.strip():
                continue
            r = json.loads(line)
            w.writerow([r["frame"], r["time_s"], "" if r["track_id"] is None else r["track_id"], *r["box"], r["score"],
                        r["label"], *(r["probs"].get(k, "") for k in labels)])


# ------------------------------------------------------------------ response schemas (for the OpenAPI docs)


class ErrorOut(BaseModel):
    error: str


class FaceOut(BaseModel):
    track_id: int | None = Field(None, description="stable id across frames (video, live); null for photos")
    box: list[int] = Field(..., description="x, y, w, h in pixels of the image")
    score: float = Field(..., description="face-detector confidence")
    label: str = Field(..., description="most probable expression")
    probs: dict[str, float] = Field(..., description="expression -> probability")
    landmarks: list[list[float]] | None = Field(None, description="5 (x, y) points: eyes, nose tip, mouth corners (YuNet)")


class PredictOut(BaseModel):
    faces: list[FaceOut]
    width: int
    height: int
    model: str
    detector: str
    time_ms: float
    annotated_jpeg: str | None = Field(None, description="with ?annotated=1: the annotated image, base64 JPEG")


class VideoJobOut(BaseModel):
    id: str
    status: str = Field(..., description="queued, running, done, failed or cancelled")
    progress: float | None = Field(None, description="0..1; null while the frame count is unknown")
    frames_done: int
    frames_total: int | None
    fps: float | None
    width: int | None
    height: int | None
    model: str
    detector: str
    labels: list[str]
    error: str | None = None
    summary: dict | None = None
    links: dict[str, str]
    results: list[dict] | None = Field(None, description="when done: [{frame, time_s, faces: [...]}] for every frame")


_ERRORS = {s: {"model": ErrorOut} for s in (401, 404, 413, 422, 429)}
_API_DESCRIPTION = """Facial-expression recognition: photos, videos and a live camera. The web UI is at `/`.

Errors are JSON objects `{"error": "..."}` with a 4xx status. With an API key set on the server, every `/v1`
request needs it in the `X-API-Key` header.

**WebSocket `/v1/live`** (not listable in OpenAPI): query `model`, `detector`, `smooth` (0..1, the weight of the
past in the per-track probability smoothing), `api_key`. Send each camera frame as one binary message (JPEG or
PNG); each is answered with one JSON message `{frame, faces, width, height, model, detector, time_ms}`, faces
carrying stable `track_id`s, or `{frame, error, status}` for a bad frame. Send the next frame after the answer. A
text message `{"reset": true}` restarts tracking.
"""


# ------------------------------------------------------------------ the app


def create_app(
    model: str | Sequence[str] = "default",
    detector: str = "auto",
    api_key: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_video_mb: float = DEFAULT_MAX_VIDEO_MB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS,
    yunet_path: str | Path | None = None,
    device: str = "auto",
    backend: str = "torch",
    max_batch: int = 64,
    max_wait_ms: float = 2.0,
    threads: int | None = None,
    job_ttl_s: float = DEFAULT_JOB_TTL_S,
    max_queued_videos: int = 8,
    work_dir: str | Path | None = None,
) -> FastAPI:
    """Build the ferkit web app: models are loaded here, so a bad model or detector fails now, not per request.

    model: one spec or several ("default", a checkpoint, a run folder, ``NAME=SPEC``); the first is the default.
    detector: the default face detector ("auto", "yunet", "haar"); "haar" (and "yunet" when its weights
        are at hand) may also be chosen per request.
    api_key: when set, every ``/v1`` request needs it in the ``X-API-Key`` header (the WebSocket: ``?api_key=``).
    max_upload_mb / max_video_mb: request-body limits for images (and live frames) and videos.
    max_pixels: largest width x height of an image or video frame, checked before decoding.
    max_batch / max_wait_ms: micro-batching of concurrent requests (see :class:`MicroBatcher`).
    threads: CPU threads per model forward pass (None: PyTorch's default, all cores). On a machine whose cores
        are busy with other work, 1 avoids threads spinning while they wait for a core.
    work_dir: parent of the server's temporary folder for uploads and job outputs (default: the system's).
    """
    for n, v in (("max_upload_mb", max_upload_mb), ("max_video_mb", max_video_mb), ("max_pixels", max_pixels),
                 ("max_video_seconds", max_video_seconds)):
        if not v or v <= 0:
            raise ValueError(f"{n} must be positive, got {v}")
    hub = ModelHub(model, detector, yunet_path=yunet_path, device=device, backend=backend, max_batch=max_batch,
                   max_wait_ms=max_wait_ms, threads=threads)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ferkit-serve-", dir=work_dir))
    jobs = VideoJobs(hub, root, ttl_s=job_ttl_s, max_queued=max_queued_videos)
    image_limit, video_limit = int(max_upload_mb * 1e6), int(max_video_mb * 1e6)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.close()
        hub.close()
        shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(title="ferkit", version=_version(), docs_url=None, redoc_url=None, lifespan=lifespan,
                  description=_API_DESCRIPTION)
    app.state.hub, app.state.jobs, app.state.work_dir = hub, jobs, root
    app.state.limits = {"max_upload_mb": max_upload_mb, "max_video_mb": max_video_mb, "max_pixels": max_pixels,
                        "max_video_seconds": max_video_seconds}

    def limit_for(method: str, path: str) -> int:
        if path.rstrip("/") == "/v1/videos" and method == "POST":
            return video_limit
        if path.rstrip("/") == "/v1/predict":
            return image_limit
        return OTHER_BODY_LIMIT

    app.add_middleware(_BodyLimit, limit_for=limit_for)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal server error ({type(exc).__name__}); see the server log"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="needed when the server has an API key")

    def key_ok(given: str | None) -> bool:
        return api_key is None or (given is not None and hmac.compare_digest(given.encode(), api_key.encode()))

    def require_key(given: str | None = Security(key_header)) -> None:
        if not key_ok(given):
            raise ApiError(401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header")

    v1 = APIRouter(prefix="/v1", dependencies=[Security(require_key)], responses=_ERRORS)

    @v1.post("/predict", response_model=PredictOut, response_model_exclude_unset=True,
             summary="Faces and expressions in one image")
    def predict(file: Annotated[UploadFile, File(description="an image: JPEG, PNG, BMP, TIFF, WebP")],
                model: str | None = Query(None, description="a name from /v1/models; default: the server's"),
                detector: str | None = Query(None, description="auto, yunet or haar (see /v1/models)"),
                annotated: bool = Query(False, description="also return the annotated image (base64 JPEG)")) -> dict:
        t0 = time.perf_counter()
        model_name, det_name = hub.model(model), hub.detector(detector)
        img = decode_image(file.file.read(), max_pixels)
        faces = hub.recognize(img, model_name, det_name)
        out: dict[str, Any] = {"faces": [f.to_dict() for f in faces], "width": img.shape[1], "height": img.shape[0],
                               "model": model_name, "detector": det_name}
        if annotated:
            from ferkit.infer.render import draw_faces

            ok, buf = cv2.imencode(".jpg", draw_faces(img, faces), [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise RuntimeError("OpenCV could not encode the annotated image")
            out["annotated_jpeg"] = base64.b64encode(buf.tobytes()).decode("ascii")
        out["time_ms"] = round(1000 * (time.perf_counter() - t0), 1)
        return out

    def job_view(job: VideoJob, request: Request, results: bool) -> dict:
        base = str(request.url_for("video_status", job_id=job.id).path)
        links = {"self": base, "source": f"{base}/source"}
        if job.status == "done":
            links.update(video=f"{base}/video", csv=f"{base}/csv", jsonl=f"{base}/jsonl", timeline=f"{base}/timeline")
        summary = None
        if job.summary:
            summary = {k: job.summary.get(k) for k in ("frames", "faces", "seconds", "fps", "detect_every", "smooth")}
        return {"id": job.id, "status": job.status, "progress": job.progress, "frames_done": job.frames_done,
                "frames_total": job.frames_total, "fps": job.fps, "width": job.width, "height": job.height,
                "model": job.model, "detector": job.detector, "labels": job.labels, "error": job.error,
                "summary": summary, "links": links,
                "results": job.results() if results and job.status == "done" else None}

    @v1.post("/videos", response_model=VideoJobOut, status_code=202, summary="Queue a video for recognition")
    def create_video(request: Request,
                     file: Annotated[UploadFile, File(description="a video: MP4, AVI, MKV/WebM, ...")],
                     model: str | None = Query(None, description="a name from /v1/models"),
                     detector: str | None = Query(None, description="auto, yunet or haar"),
                     detect_every: int = Query(1, ge=1, le=30, description="run the detector on every N-th frame"),
                     smooth: float = Query(0.6, ge=0.0, lt=1.0, description="probability smoothing per track (0: off)")) -> dict:
        model_name, det_name = hub.model(model), hub.detector(detector)
        job = jobs.create(file.file, model_name, det_name, {"detect_every": detect_every, "smooth": smooth or None},
                          max_pixels, max_video_seconds)
        return job_view(job, request, results=False)

    @v1.get("/videos/{job_id}", response_model=VideoJobOut, name="video_status", summary="A video job's progress and results")
    def video_status(job_id: str, request: Request,
                     results: bool = Query(True, description="include the per-frame results when done")) -> dict:
        return job_view(jobs.get(job_id), request, results)

    @v1.delete("/videos/{job_id}", status_code=204, summary="Cancel a video job and delete its files")
    def delete_video(job_id: str) -> None:
        jobs.delete(job_id)

    downloads = {"video": ("annotated.mp4", "video/mp4"), "csv": ("faces.csv", "text/csv"),
                 "jsonl": ("results.jsonl", "application/x-ndjson"), "timeline": ("timeline.csv", "text/csv")}

    @v1.get("/videos/{job_id}/{what}", summary="Download: video (annotated), csv (per face), jsonl, timeline (csv), source",
            response_class=FileResponse)
    def video_file(job_id: str, what: str):
        job = jobs.get(job_id)
        if what == "source":
            return FileResponse(job.input, media_type=_VIDEO_TYPES.get(job.input.suffix, "application/octet-stream"))
        if what not in downloads:
            raise ApiError(404, f"no download {what!r}; choose from: source, {', '.join(downloads)}")
        if job.status != "done":
            raise ApiError(409, f"video job {job.id} is {job.status}; downloads are ready when it is done")
        name, media = downloads[what]
        path = job.out / name
        if not path.is_file():
            raise ApiError(404, f"video job {job.id} has no {what} output")
        return FileResponse(path, media_type=media, filename=f"ferkit-{job.id[:8]}-{name}")

    @v1.get("/models", summary="Models and face detectors a request may choose")
    def list_models() -> dict:
        return hub.describe()

    app.include_router(v1)

    @app.get("/health", summary="Liveness, batching and job counters")
    def health() -> dict:
        return {"status": "ok", "version": _version(), "models": list(hub.recognizers), "batching": hub.stats(),
                "video_jobs": jobs.count()}

    @app.websocket("/v1/live")
    async def live(ws: WebSocket, model: str | None = None, detector: str | None = None, smooth: float = 0.6,
                   api_key: str | None = None):
        """Binary JPEG (or PNG) frames in; per frame one JSON message ``{frame, faces, width, height, time_ms}`` out.

        A text message ``{"reset": true}`` restarts tracking. A bad frame is answered with ``{"error": ...}``.
        """
        from ferkit.infer.tracking import Tracker

        await ws.accept()
        try:
            if not key_ok(api_key or ws.headers.get(API_KEY_HEADER)):
                raise ApiError(401, "missing or wrong API key: add ?api_key=... to the WebSocket URL")
            model_name, det_name = hub.model(model), hub.detector(detector)
            if not 0.0 <= smooth < 1.0:
                raise ApiError(422, f"smooth must be in [0, 1), got {smooth}")
        except ApiError as exc:
            await ws.send_json({"error": exc.message, "status": exc.status})
            await ws.close(code=1008)
            return
        tracker = Tracker(max_age=10, smoothing=smooth or None)
        det = hub.new_detector(det_name)  # this connection's own: frames of one connection come one at a time
        rec = hub.recognizer(model_name, det)
        n = 0

        def run_frame(data: bytes) -> dict:
            t0 = time.perf_counter()
            img = decode_image(data, max_pixels)
            faces = tracker.update(rec.recognize_frames([img])[0])
            return {"frame": n, "faces": [f.to_dict() for f in faces], "width": img.shape[1], "height": img.shape[0],
                    "model": model_name, "detector": det_name, "time_ms": round(1000 * (time.perf_counter() - t0), 1)}

        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                if msg.get("text") is not None:
                    with contextlib.suppress(ValueError, AttributeError):
                        if json.loads(msg["text"]).get("reset"):
                            tracker.reset()
                    continue
                data = msg.get("bytes") or b""
                try:
                    if len(data) > image_limit:
                        raise ApiError(413, f"frame too large: the limit is {max_upload_mb:g} MB")
                    reply = await run_in_threadpool(run_frame, data)
                except ApiError as exc:
                    reply = {"frame": n, "error": exc.message, "status": exc.status}
                n += 1
                await ws.send_json(reply)
        except WebSocketDisconnect:
            pass

    _add_docs(app)
    _add_ui(app)
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ferkit")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        return "0"


def _add_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc from local files (the fastapi-offline package ships them).

    FastAPI's own docs pages load their JavaScript from a CDN, which a machine
    without network (or a browser that should not call out) cannot use. Without
    fastapi-offline installed, /docs is a plain page listing the endpoints of
    /openapi.json.
    """
    try:
        import fastapi_offline

        assets = Path(fastapi_offline.__file__).resolve().parent / "static"
    except ImportError:
        assets = None
    if assets is not None and (assets / "swagger-ui-bundle.js").is_file():
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def swagger(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title="ferkit API",
                                       swagger_js_url=f"{root}/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url=f"{root}/docs-assets/swagger-ui.css",
                                       swagger_favicon_url=f"{root}/docs-assets/favicon.png")

        @app.get("/redoc", include_in_schema=False)
        async def redoc(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title="ferkit API",
                                  redoc_js_url=f"{root}/docs-assets/redoc.standalone.js",
                                  redoc_favicon_url=f"{root}/docs-assets/favicon.png", with_google_fonts=False)
    else:

        @app.get("/docs", include_in_schema=False)
        async def plain_docs() -> FileResponse:
            return FileResponse(STATIC_DIR / "docs.html")


def _add_ui(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
