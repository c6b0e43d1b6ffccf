"""The JSON shapes the REST API answers with, as pydantic models: they document the API in OpenAPI (/docs).

A face is the results.jsonl schema of ``ferkit predict`` (:meth:`ferkit.infer.results.Face.to_dict`).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    error: str


class QualityOut(BaseModel):
    detector_score: float = Field(..., description="face-detector confidence")
    size_px: int = Field(..., description="the face box's longer side, pixels")
    blur: float = Field(..., description="variance of the Laplacian of the grey crop at 64 px (low: blurred or tiny)")
    yaw_deg: float | None = Field(None, description="head turn from the landmarks, degrees (null without landmarks)")


class FaceOut(BaseModel):
    track_id: int | None = Field(None, description="stable id across frames (video, live); null for photos")
    box: list[int] = Field(..., description="x, y, w, h in pixels of the image")
    score: float = Field(..., description="face-detector confidence")
    label: str = Field(..., description="most probable expression, or 'uncertain' when its probability is below the "
                                         "server's --min-confidence")
    probs: dict[str, float] = Field(..., description="expression -> calibrated probability (also for 'uncertain')")
    landmarks: list[list[float]] | None = Field(None, description="5 (x, y) points: eyes, nose tip, mouth corners (YuNet)")
    quality: QualityOut | None = Field(None, description="how usable the face is for expression recognition")
    low_quality: bool | None = Field(None, description="any quality measure past its threshold (ferkit.infer.quality)")


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


# The error answers any /v1 endpoint may give.
ERRORS = {s: {"model": ErrorOut} for s in (401, 404, 413, 415, 422, 429, 503)}
