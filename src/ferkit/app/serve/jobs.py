"""Video jobs: an uploaded video is checked, queued, and recognised in the background, one job at a time.

:class:`VideoJobs` keeps the jobs of one server. Uploads land only in the
server's own folder under generated names; one worker thread runs
:func:`~ferkit.infer.pipeline.run_predict` on each through the model's shared
batcher (so a long video never blocks the API), and a finished job's files are
removed ``ttl_s`` after it ends or when the client deletes it.
"""

from __future__ import annotations

import csv
import json
import logging
import queue
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ferkit.app.serve.errors import ApiError
from ferkit.app.serve.hub import ModelHub
from ferkit.app.serve.limits import VIDEO_FORMATS, Limits, sniff_image_format, sniff_video_suffix
from ferkit.infer.sinks import FALLBACK_FPS, Sink

log = logging.getLogger(__name__)

DEFAULT_JOB_TTL_S = 3600.0  # a finished job's files are kept this long for downloads
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class _Cancelled(Exception):
    pass


class _TooLong(Exception):
    """A video found longer than the server's limit while it is decoded (its container stated no duration, or a wrong one)."""


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
    name: str = "upload"  # the uploaded file's own name: the ``source`` of its results (never a server path)
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

    def __init__(self, hub: ModelHub, root: Path, limits: Limits, ttl_s: float = DEFAULT_JOB_TTL_S, max_queued: int = 8,
                 max_jobs: int = 64):
        self.hub = hub
        self.root = root
        self.limits = limits
        self.ttl_s = ttl_s
        self.max_queued = max_queued
        self.max_jobs = max_jobs
        self._jobs: dict[str, VideoJob] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._worker, name="ferkit-video-jobs", daemon=True)
        self._thread.start()

    def create(self, upload: BinaryIO, model: str, detector: str, options: dict, name: str | None = None) -> VideoJob:
        """Copy ``upload`` into a new job folder, check it is a video within :attr:`limits`, queue it.

        ``options``: ``detect_every`` and ``smooth``, as :func:`~ferkit.infer.pipeline.run_predict` takes them.
        """
        from ferkit.imageio import ImageTooLargeError
        from ferkit.infer.sources import VideoSource

        max_pixels, max_seconds = self.limits.max_pixels, self.limits.max_video_seconds

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
            image = sniff_image_format(head)
            if image is not None:  # FFmpeg would read it as a one-frame video, which no player shows as one
                raise ApiError(415, f"the upload is a {image} image, not a video: expected a video file "
                                    f"({VIDEO_FORMATS}); recognise photos with POST /v1/predict (the Photo tab)")
            path = job_dir / f"input{sniff_video_suffix(head)}"  # a generated name: the client's name is never used
            with open(path, "wb") as fh:
                fh.write(head)
                shutil.copyfileobj(upload, fh, 1 << 20)
            try:
                # The frame size is checked from the header, before anything is decoded; then the first frame is
                # decoded: content decides, not the name.
                src = VideoSource(path, max_pixels=max_pixels)
            except ImageTooLargeError as exc:
                shown = f"{exc.size[0]}x{exc.size[1]} frames = " if exc.size else ""
                raise ApiError(413, f"video refused: {shown}{exc.pixels:,} pixels, the limit is {max_pixels:,}") from exc
            except (ValueError, OSError) as exc:
                raise ApiError(422, "the upload is not a readable video (OpenCV could not decode a frame); "
                                    f"expected a video file ({VIDEO_FORMATS})") from exc
            w, h = src.size or (0, 0)
            if src.frame_count and src.fps and src.frame_count / src.fps > max_seconds:
                raise ApiError(413, f"video refused: {src.frame_count / src.fps:.0f} s long, the limit is {max_seconds:.0f} s")
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        job = VideoJob(job_id, job_dir, path, model, detector, options, list(self.hub.recognizers[model].label_names),
                       fps=src.fps, width=w, height=h, frames_total=src.frame_count,
                       name=Path(name).name if name else "upload")
        with self._lock:
            self._jobs[job_id] = job
        self._queue.put(job_id)
        log.info("video job %s queued: %dx%d, %s frames", job_id, w, h, src.frame_count)
        return job

    def get(self, job_id: str) -> VideoJob:
        """The job ``job_id``; ApiError 404 for an unknown, deleted or expired one (or a malformed id)."""
        self.expire()
        with self._lock:
            job = self._jobs.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise ApiError(404, f"no video job {job_id!r} (unknown, deleted, or expired after {self.ttl_s:.0f} s)")
        return job

    def delete(self, job_id: str) -> None:
        """Cancel the job and remove its folder (a running job's, once its worker has stopped)."""
        job = self.get(job_id)
        job.cancel.set()
        with self._lock:
            self._jobs.pop(job.id, None)
        if job.status != "running":  # a running job's folder is removed by the worker once it has stopped
            shutil.rmtree(job.dir, ignore_errors=True)

    def expire(self) -> None:
        """Forget jobs finished more than ``ttl_s`` ago and remove their files."""
        now = time.time()
        with self._lock:
            old = [j for j in self._jobs.values() if j.finished is not None and now - j.finished > self.ttl_s]
            for j in old:
                del self._jobs[j.id]
        for j in old:
            shutil.rmtree(j.dir, ignore_errors=True)
            log.info("video job %s expired; its files are removed", j.id)

    def count(self) -> dict:
        """Jobs kept, by status, for ``GET /health``."""
        with self._lock:
            out: dict[str, int] = {}
            for j in self._jobs.values():
                out[j.status] = out.get(j.status, 0) + 1
            return out

    def close(self) -> None:
        """Cancel every job and stop the worker (at shutdown)."""
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
        from ferkit.infer.sources import VideoSource

        job.status = "running"
        rec = self.hub.recognizer(job.model, self.hub.new_detector(job.detector))
        job.out.mkdir(parents=True, exist_ok=True)
        try:
            src = VideoSource(job.input, max_pixels=self.limits.max_pixels, label=job.name)
            job.summary = run_predict(src, job.out, rec, detect_every=job.options["detect_every"],
                                      smooth=job.options["smooth"], overwrite=True,
                                      sinks=[_JobLog(job, self.limits.max_video_seconds)])
            faces_csv(job.out / "results.jsonl", job.out / "faces.csv", job.labels)
            job.status = "done"
            log.info("video job %s done: %d frames in %.1f s", job.id, job.frames_done, job.summary.get("seconds", 0))
        except _Cancelled:
            job.status = "cancelled"
        except _TooLong as exc:
            log.warning("video job %s: %s", job.id, exc)
            job.status, job.error = "failed", str(exc)
        except Exception as exc:  # the job fails, the server lives on
            log.exception("video job %s failed", job.id)
            # The message may name files of the job folder: show the client no server path.
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}".replace(str(job.dir), "<job>")
        finally:
            job.finished = time.time()


class _JobLog(Sink):
    """A video job's ``frames.jsonl`` (what the UI's timeline reads as the job runs), its progress count, the
    length limit counted frame by frame, and its Cancel button: a sink of the job's prediction run."""

    def __init__(self, job: VideoJob, max_seconds: float):
        self.job, self.max_seconds = job, max_seconds
        self.fps = job.fps or FALLBACK_FPS
        self.fh = open(job.out / "frames.jsonl", "w", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def write(self, result) -> None:
        job = self.job
        # The length checked at upload is what the container states; a raw stream (.h264) states none,
        # and a container may understate it. So the frames are counted as they are decoded, too.
        seconds = max(result.time_s, (job.frames_done + 1) / self.fps)
        if seconds > self.max_seconds:
            raise _TooLong(f"video refused: longer than the limit of {self.max_seconds:g} s (stopped at frame "
                           f"{result.frame}, {seconds:.2f} s in; its container stated no length or a "
                           "shorter one); send a shorter video")
        self.fh.write(json.dumps({"frame": result.frame, "time_s": round(result.time_s, 4),
                                  "faces": [f.to_dict() for f in result.faces]}) + "\n")
        self.fh.flush()
        job.frames_done += 1
        if job.cancel.is_set():
            raise _Cancelled()

    def close(self) -> dict[str, str]:
        self.fh.close()
        return {}


def faces_csv(jsonl: Path, out: Path, labels: list[str]) -> None:
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
