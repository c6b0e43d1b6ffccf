"""``POST /v1/predict``: the faces and expressions in one uploaded image."""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any

import cv2
from fastapi import APIRouter, File, Query, Security, UploadFile
from starlette.concurrency import run_in_threadpool

from ferkit.app.serve.auth import require_key
from ferkit.app.serve.errors import ApiError
from ferkit.app.serve.limits import sniff_image_format, sniff_video_suffix
from ferkit.app.serve.schemas import ERRORS, PredictOut
from ferkit.app.serve.state import Gate, Hub, UploadLimits

router = APIRouter(prefix="/v1", dependencies=[Security(require_key)], responses=ERRORS)

# Video containers by the suffix limits.sniff_video_suffix gives them, as a user would name them.
_VIDEO_NAMES = {".mp4": "an MP4/MOV", ".avi": "an AVI", ".mkv": "a Matroska/WebM", ".ogv": "an Ogg", ".flv": "an FLV",
                ".mpg": "an MPEG"}


def refuse_video(head: bytes) -> None:
    """ApiError 415 when ``head`` starts a video container: the answer names the endpoint that takes videos."""
    kind = _VIDEO_NAMES.get(sniff_video_suffix(head)) if sniff_image_format(head) is None else None  # HEIC is 'ftyp' too
    if kind is not None:
        raise ApiError(415, f"the upload is {kind} video, not an image: expected one image (JPEG, PNG, BMP, TIFF, WebP); "
                            "recognise videos with POST /v1/videos (the Video tab)")


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
        data = file.file.read()
        refuse_video(data[:64])
        img = limits.decode(data)
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
