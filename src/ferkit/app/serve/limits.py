"""What the server lets in: body sizes, image pixel counts (read from headers), upload types, and how many images
are decoded at once.

- :class:`Limits`: the configured limits, and the request-body limit of each endpoint.
- :class:`BodyLimit`: ASGI middleware refusing bodies over that limit (413) before or while they are read.
- :func:`image_header_size` / :func:`decode_image`: an image's pixel count is checked from its header,
  so a decompression bomb is never decoded; content is checked by decoding, never by the file name.
- :func:`sniff_image_format` / :func:`sniff_video_suffix`: what an upload's first bytes say it is.
- :class:`AdmissionGate`: the decode gate; at most ``limit`` decoded images at once, a bounded queue
  behind them, :class:`~ferkit.app.serve.errors.ServerBusy` (503) past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import threading
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import cv2
import numpy as np
from starlette.types import ASGIApp

from ferkit.app.serve.errors import ApiError, ServerBusy
from ferkit.imageio import sniff_image_format  # noqa: F401  (re-exported: what an upload's first bytes say)

DEFAULT_MAX_UPLOAD_MB = 20.0  # one photo or one live frame
DEFAULT_MAX_VIDEO_MB = 200.0
DEFAULT_MAX_PIXELS = 40_000_000  # above any camera's photos (a 50 MP phone shoots 12 MP by default), far below a bomb
DEFAULT_MAX_VIDEO_SECONDS = 900.0
OTHER_BODY_LIMIT = 64 * 1024  # bytes of any other request body (none of them takes one)
DEFAULT_MAX_QUEUE = 64  # images waiting for a decode slot; a waiting upload is spooled to disk past 1 MB
VIDEO_FORMATS = "MP4, MOV, WebM, MKV, AVI or another format FFmpeg reads"


def default_max_decodes() -> int:
    """Images decoded at once by default: two per CPU core (so that requests meet in the batcher), 2 to 16."""
    return min(16, max(2, 2 * (os.cpu_count() or 1)))


@dataclass(frozen=True)
class Limits:
    """Upload limits: request bodies of images (and live frames) and of videos in MB, pixels per image or video
    frame, and seconds per video."""

    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_video_mb: float = DEFAULT_MAX_VIDEO_MB
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_video_mb", "max_pixels", "max_video_seconds"):
            value = getattr(self, name)
            if not value or value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")

    @property
    def image_bytes(self) -> int:
        return int(self.max_upload_mb * 1e6)

    @property
    def video_bytes(self) -> int:
        return int(self.max_video_mb * 1e6)

    @property
    def ws_max_size(self) -> int:
        """The largest WebSocket message the server takes in (uvicorn's ``ws_max_size``): twice a live frame's limit,
        so that a frame over :attr:`image_bytes` reaches ``/v1/live`` and is answered there (413, then close 1009);
        only a message past this is cut off by the protocol layer with a bare close 1009."""
        return 2 * self.image_bytes + 64 * 1024  # + framing and a text message's JSON

    def body_limit(self, method: str, path: str) -> int:
        """The most bytes a request body to ``path`` may have (for :class:`BodyLimit`)."""
        if path.rstrip("/") == "/v1/videos" and method == "POST":
            return self.video_bytes
        if path.rstrip("/") == "/v1/predict":
            return self.image_bytes
        return OTHER_BODY_LIMIT

    def decode(self, data: bytes) -> np.ndarray:
        """:func:`decode_image` with this server's ``max_pixels``."""
        return decode_image(data, self.max_pixels)


# ------------------------------------------------------------------ request bodies


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies over a per-path byte limit with 413, before or while reading them.

    A declared Content-Length over the limit is answered at once, unread; a
    chunked body is counted as it streams and cut off at the limit, and
    whatever the app answered then is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, str], int]):
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


# ------------------------------------------------------------------ images


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


# ------------------------------------------------------------------ upload types


def sniff_video_suffix(head: bytes) -> str:
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


# ------------------------------------------------------------------ the decode gate


class AdmissionGate:
    """At most ``limit`` holders of a slot at once; up to ``max_waiting`` more wait in turn, any further one is refused.

    ``async with gate.slot(): ...`` waits on the event loop (no thread is held
    while waiting) and raises :class:`ServerBusy` when ``max_waiting`` requests
    already wait. Slots are handed over first come, first served. The state sits
    behind a thread lock, so one gate may serve several event loops (a test
    client and a server of one app) and the counters read from any thread.
    """

    def __init__(self, limit: int, max_waiting: int):
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {max_waiting}")
        self.limit = int(limit)
        self.max_waiting = int(max_waiting)
        self.active = 0  # slots held now
        self.peak = 0  # most slots ever held at once
        self.refused = 0  # requests turned away with ServerBusy
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)

    def stats(self) -> dict:
        with self._lock:
            return {"limit": self.limit, "active": self.active, "waiting": len(self._waiters), "peak": self.peak,
                    "max_waiting": self.max_waiting, "refused": self.refused}

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body of the ``async with``; raises ServerBusy when the queue is full."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.active < self.limit and not self._waiters:
                self._take()
                return
            if len(self._waiters) >= self.max_waiting:
                self.refused += 1
                raise ServerBusy(f"{self.active} being processed and {len(self._waiters)} waiting "
                                 f"(limits: {self.limit} at once, {self.max_waiting} waiting)")
            fut = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await fut  # resolved by _release, which hands its slot over without freeing it
        except BaseException:
            with self._lock:
                try:
                    self._waiters.remove((loop, fut))
                    handed = False
                except ValueError:
                    handed = True
            if handed and not fut.cancelled():  # the slot arrived as this task was cancelled: pass it on
                self._release()
            raise

    def _take(self) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)

    def _release(self) -> None:
        with self._lock:
            if not self._waiters:
                self.active -= 1
                return
            loop, fut = self._waiters.popleft()
        try:
            loop.call_soon_threadsafe(self._hand_over, fut)
        except RuntimeError:  # that waiter's loop is closed: nobody is left there to take the slot
            self._release()

    def _hand_over(self, fut: asyncio.Future) -> None:
        """In the waiter's loop: give it the slot, or, when it gave up meanwhile, the next one in line."""
        if fut.done():
            self._release()
        else:
            fut.set_result(None)
