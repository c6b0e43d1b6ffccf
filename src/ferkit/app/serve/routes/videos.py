"""``/v1/videos``: queue a video, follow its job, download its results, delete it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Security, UploadFile
from fastapi.responses import FileResponse

from ferkit.app.serve.auth import require_key
from ferkit.app.serve.errors import ApiError
from ferkit.app.serve.jobs import VideoJob
from ferkit.app.serve.schemas import ERRORS, VideoJobOut
from ferkit.app.serve.state import Hub, Jobs

router = APIRouter(prefix="/v1", dependencies=[Security(require_key)], responses=ERRORS)

# What a job's outputs are served as: ``what`` in the URL -> (file in the job's out folder, media type).
DOWNLOADS = {"video": ("annotated.mp4", "video/mp4"), "csv": ("faces.csv", "text/csv"),
             "jsonl": ("results.jsonl", "application/x-ndjson"), "timeline": ("timeline.csv", "text/csv")}
# Media types of uploads, by the suffix the server gave them from their content (see limits.sniff_video_suffix).
VIDEO_TYPES = {".mp4": "video/mp4", ".mkv": "video/webm", ".ogv": "video/ogg", ".avi": "video/x-msvideo"}


def job_view(job: VideoJob, request: Request, results: bool) -> dict:
    """A job as :class:`VideoJobOut`: status, progress, links to its downloads, and (when done and asked) its frames."""
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


@router.post("/videos", response_model=VideoJobOut, status_code=202, summary="Queue a video for recognition")
def create_video(request: Request, hub: Hub, jobs: Jobs,
                 file: Annotated[UploadFile, File(description="a video: MP4, AVI, MKV/WebM, ...")],
                 model: str | None = Query(None, description="a name from /v1/models"),
                 detector: str | None = Query(None, description="auto, yunet or haar"),
                 detect_every: int = Query(1, ge=1, le=30, description="run the detector on every N-th frame"),
                 smooth: float = Query(0.6, ge=0.0, lt=1.0, description="probability smoothing per track (0: off)")) -> dict:
    model_name, det_name = hub.model(model), hub.detector(detector)
    job = jobs.create(file.file, model_name, det_name, {"detect_every": detect_every, "smooth": smooth or None},
                      name=file.filename)
    return job_view(job, request, results=False)


@router.get("/videos/{job_id}", response_model=VideoJobOut, name="video_status", summary="A video job's progress and results")
def video_status(job_id: str, request: Request, jobs: Jobs,
                 results: bool = Query(True, description="include the per-frame results when done")) -> dict:
    return job_view(jobs.get(job_id), request, results)


@router.delete("/videos/{job_id}", status_code=204, summary="Cancel a video job and delete its files")
def delete_video(job_id: str, jobs: Jobs) -> None:
    jobs.delete(job_id)


@router.get("/videos/{job_id}/{what}", summary="Download: video (annotated), csv (per face), jsonl, timeline (csv), source",
            response_class=FileResponse)
def video_file(job_id: str, what: str, jobs: Jobs):
    job = jobs.get(job_id)
    if what == "source":
        return FileResponse(job.input, media_type=VIDEO_TYPES.get(job.input.suffix, "application/octet-stream"))
    if what not in DOWNLOADS:
        raise ApiError(404, f"no download {what!r}; choose from: source, {', '.join(DOWNLOADS)}")
    if job.status != "done":
        raise ApiError(409, f"video job {job.id} is {job.status}; downloads are ready when it is done")
    name, media = DOWNLOADS[what]
    path = job.out / name
    if not path.is_file():
        raise ApiError(404, f"video job {job.id} has no {what} output")
    return FileResponse(path, media_type=media, filename=f"ferkit-{job.id[:8]}-{name}")
