"""``GET /v1/models`` (what a request may choose) and ``GET /health`` (liveness and counters, no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Security

from ferkit.app.serve.auth import require_key
from ferkit.app.serve.schemas import ERRORS
from ferkit.app.serve.state import Gate, Hub, Jobs, server_version

router = APIRouter()


@router.get("/v1/models", dependencies=[Security(require_key)], responses=ERRORS,
            summary="Models and face detectors a request may choose")
def list_models(hub: Hub) -> dict:
    return hub.describe()


@router.get("/health", summary="Liveness, batching and job counters")
def health(hub: Hub, gate: Gate, jobs: Jobs) -> dict:
    return {"status": "ok", "version": server_version(), "models": list(hub.recognizers), "batching": hub.stats(),
            "decoding": gate.stats(), "video_jobs": jobs.count()}
