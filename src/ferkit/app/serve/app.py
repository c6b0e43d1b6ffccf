"""``create_app``: the ferkit web app assembled from its parts.

It builds the shared state once (the models and detectors, the upload limits,
the decode gate, the video-job store, the API key), keeps it on ``app.state``
(see :mod:`ferkit.app.serve.state`), adds the body-size middleware and the
error handlers, and includes one router per area; it handles no request itself.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI

from ferkit.app.serve.auth import ApiKey, install_log_redaction
from ferkit.app.serve.errors import install_error_handlers
from ferkit.app.serve.hub import ModelHub
from ferkit.app.serve.jobs import DEFAULT_JOB_TTL_S, VideoJobs
from ferkit.app.serve.limits import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_MAX_VIDEO_MB,
    DEFAULT_MAX_VIDEO_SECONDS,
    AdmissionGate,
    BodyLimit,
    Limits,
    default_max_decodes,
)
from ferkit.app.serve.routes import info, live, pages, predict, videos
from ferkit.app.serve.state import server_version
from ferkit.infer.recognizer import RecognizerSettings

API_DESCRIPTION = """Facial-expression recognition: photos, videos and a live camera. The web UI is at `/`.

Errors are JSON objects `{"error": "..."}` with a 4xx status, or 503 (with `Retry-After`) while the server has
as many images waiting as it queues. With an API key set on the server, every `/v1` request needs it in the
`X-API-Key` header.

**WebSocket `/v1/live`** (not listable in OpenAPI): query `model`, `detector`, `smooth` (0..1, the weight of the
past in the per-track probability smoothing). With an API key set, send it in the `X-API-Key` header, or offer the
subprotocols `ferkit` and `ferkit.key.<the key in base64url, no padding>` (what browsers can do), or send
`{"api_key": "..."}` as the first text message (within 10 s); `?api_key=` in the URL still works, but URLs end up
in logs. Send each camera frame as one binary message (JPEG or PNG); each is answered with one JSON message
`{frame, faces, width, height, model, detector, time_ms}`, faces carrying stable `track_id`s, or
`{frame, error, status}` for a bad frame. Send the next frame after the answer. A text message `{"reset": true}`
restarts tracking.
"""


def create_app(
    model: str | Sequence[str] = "default",
    recognizer: RecognizerSettings | None = None,
    api_key: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_video_mb: float = DEFAULT_MAX_VIDEO_MB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS,
    max_batch: int = 64,
    max_wait_ms: float = 2.0,
    job_ttl_s: float = DEFAULT_JOB_TTL_S,
    max_queued_videos: int = 8,
    work_dir: str | Path | None = None,
    max_decodes: int | None = None,
    max_queue: int = DEFAULT_MAX_QUEUE,
) -> FastAPI:
    """Build the ferkit web app: models are loaded here, so a bad model or detector fails now, not per request.

    model: one spec or several ("default", a checkpoint, a run folder, ``NAME=SPEC``); the first is the default.
    recognizer: how each model's recognizer is built (:class:`~ferkit.infer.recognizer.RecognizerSettings`: the
        default face detector, "haar" and "yunet" (when its weights are at hand) also chosen per request; device,
        backend, threads per forward pass, min_face, min_confidence (below it a face is labelled "uncertain")).
    api_key: when set, every ``/v1`` request needs it in the ``X-API-Key`` header (the WebSocket: that header, a
        ``ferkit.key.<base64url>`` subprotocol or a first message ``{"api_key": ...}``; ``?api_key=`` works too,
        and is blanked out of uvicorn's log lines).
    max_upload_mb / max_video_mb: request-body limits for images (and live frames) and videos.
    max_pixels: largest width x height of an image or video frame, checked before decoding.
    max_batch / max_wait_ms: micro-batching of concurrent requests (see :class:`~ferkit.app.serve.batcher.MicroBatcher`).
    work_dir: parent of the server's temporary folder for uploads and job outputs (default: the system's).
    max_decodes: images (photos, live frames) decoded and processed at once; each holds its decoded pixels,
        up to ``max_pixels`` x 3 bytes (None: :func:`default_max_decodes`, from the CPU count).
    max_queue: requests that may wait for one of those slots; any further one is answered 503.
    """
    limits = Limits(max_upload_mb, max_video_mb, max_pixels, max_video_seconds)  # checks they are positive
    if max_decodes is not None and max_decodes < 1:
        raise ValueError(f"max_decodes must be at least 1, got {max_decodes}")
    if max_queue < 0:
        raise ValueError(f"max_queue must be 0 or more, got {max_queue}")
    gate = AdmissionGate(default_max_decodes() if max_decodes is None else max_decodes, max_queue)
    hub = ModelHub(model, recognizer, max_batch=max_batch, max_wait_ms=max_wait_ms)
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ferkit-serve-", dir=work_dir))
    jobs = VideoJobs(hub, root, limits, ttl_s=job_ttl_s, max_queued=max_queued_videos)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.close()
        hub.close()
        shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(title="ferkit", version=server_version(), docs_url=None, redoc_url=None, lifespan=lifespan,
                  description=API_DESCRIPTION)
    app.state.hub, app.state.jobs, app.state.work_dir, app.state.gate = hub, jobs, root, gate
    app.state.upload_limits, app.state.api_key = limits, ApiKey(api_key)
    app.state.limits = {"max_upload_mb": max_upload_mb, "max_video_mb": max_video_mb, "max_pixels": max_pixels,
                        "max_video_seconds": max_video_seconds, "max_decodes": gate.limit, "max_queue": gate.max_waiting}
    install_log_redaction()
    app.add_middleware(BodyLimit, limit_for=limits.body_limit)
    install_error_handlers(app)
    for area in (predict, videos, info, live, pages):  # this order is the order of /openapi.json
        app.include_router(area.router)
    return app
