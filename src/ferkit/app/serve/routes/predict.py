"""``POST /v1/predict``: the faces and expressions in one uploaded image."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any

import cv2
from fastapi import APIRouter, File, Query, Security, UploadFile
from starlette.concurrency import run_in_threadpool

from ferkit.app.serve.auth import require_key
from ferkit.app.serve.schemas import ERRORS, PredictOut
from ferkit.app.serve.state import Gate, Hub, UploadLimits

router = APIRouter(prefix="/v1", dependencies=[Security(require_key)], responses=ERRORS)


@router.post("/predict", response_model=PredictOut, response_model_exclude_unset=True,
             summary="Faces and expressions in one image")
async def predict(hub: Hub, gate: Gate, limits: UploadLimits,
                  file: Annotated[UploadFile, File(description="an image: JPEG, PNG, BMP, TIFF, WebP")],
                  model: str | None = Query(None, description="a name from /v1/models; default: the server's"),
                  detector: str | None = Query(None, description="auto, yunet or haar (see /v1/models)"),
                  annotated: bool = Query(False, description="also return the annotated image (base64 JPEG)")) -> dict:
    t0 = time.perf_counter()
    model_name, det_name = hub.model(model), hub.detector(detector)

    def work() -> dict:
        img = limits.decode(file.file.read())
        faces = hub.recognize(img, model_name, det_name)
        out: dict[str, Any] = {"faces": [f.to_dict() for f in faces], "width": img.shape[1], "height": img.shape[0],
                               "model": model_name, "detector": det_name}
        if annotated:
            from ferkit.infer.render import draw_faces

            ok, buf = cv2.imencode(".jpg", draw_faces(img, faces), [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise RuntimeError("OpenCV could not encode the annotated image")
            out["annotated_jpeg"] = base64.b64encode(buf.tobytes()).decode("ascii")
        return out

    # The decoded image lives from decode to answer: the gate bounds how many exist at once (memory).
    async with gate.slot():
        out = await run_in_threadpool(work)
    out["time_ms"] = round(1000 * (time.perf_counter() - t0), 1)  # waiting for a slot included
    return out
