"""``WS /v1/live``: camera frames in, tracked faces out, one answer per frame."""

from __future__ import annotations

import contextlib
import json
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from ferkit.app.serve.auth import API_KEY_HEADER, LIVE_KEY_HELP, LIVE_SUBPROTOCOL, key_from_first_message, key_from_subprotocols
from ferkit.app.serve.errors import ApiError, ServerBusy
from ferkit.app.serve.state import Gate, Hub, Key, UploadLimits

router = APIRouter()


@router.websocket("/v1/live")
async def live(ws: WebSocket, hub: Hub, gate: Gate, limits: UploadLimits, key: Key, model: str | None = None,
               detector: str | None = None, smooth: float = 0.6, api_key: str | None = None):
    """Binary JPEG (or PNG) frames in; per frame one JSON message ``{frame, faces, width, height, time_ms}`` out.

    A text message ``{"reset": true}`` restarts tracking. A bad frame is answered with ``{"error": ...}``.
    The API key: the X-API-Key header, a ``ferkit.key.<base64url>`` subprotocol, a first message
    ``{"api_key": ...}``, or (discouraged: URLs get logged, though the key is blanked there) ``?api_key=``.
    """
    from ferkit.infer.tracking import Tracker

    offered = list(ws.scope.get("subprotocols") or [])
    await ws.accept(subprotocol=LIVE_SUBPROTOCOL if LIVE_SUBPROTOCOL in offered else None)
    try:
        given = api_key or ws.headers.get(API_KEY_HEADER) or key_from_subprotocols(offered)
        if given is None and not key.ok(None):
            given = await key_from_first_message(ws)
        if not key.ok(given):
            raise ApiError(401, LIVE_KEY_HELP)
        model_name, det_name = hub.model(model), hub.detector(detector)
        if not 0.0 <= smooth < 1.0:
            raise ApiError(422, f"smooth must be in [0, 1), got {smooth}")
    except ApiError as exc:
        await ws.send_json({"error": exc.message, "status": exc.status})
        await ws.close(code=1008)
        return
    except WebSocketDisconnect:
        return
    tracker = Tracker(max_age=10, smoothing=smooth or None, min_confidence=hub.min_confidence)
    det = hub.new_detector(det_name)  # this connection's own: frames of one connection come one at a time
    rec = hub.recognizer(model_name, det)
    n = 0

    def run_frame(data: bytes) -> dict:
        t0 = time.perf_counter()
        img = limits.decode(data)
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
            if len(data) > limits.image_bytes:
                # No camera page sends this: answer why, then close as the protocol layer does past twice the
                # limit (1009, message too big), so the client learns the limit instead of seeing a bare close.
                await ws.send_json({"frame": n, "error": f"frame too large: {len(data) / 1e6:.3g} MB, the limit is "
                                    f"{limits.max_upload_mb:g} MB (the server's --max-upload-mb)", "status": 413})
                await ws.close(code=1009)
                return
            try:
                async with gate.slot():  # live frames share the photos' bound on decoded images
                    reply = await run_in_threadpool(run_frame, data)
            except ApiError as exc:
                reply = {"frame": n, "error": exc.message, "status": exc.status}
            except ServerBusy as exc:
                reply = {"frame": n, "error": f"server busy: {exc}; frame skipped", "status": 503}
            n += 1
            await ws.send_json(reply)
    except WebSocketDisconnect:
        pass
