"""The REST API and live WebSocket of ``ferkit serve``, through FastAPI's TestClient, on real photos and video."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import struct
import threading
import time
import warnings
import zlib

import cv2
import numpy as np
import pytest
from conftest import PHOTOS, VIDEO, YUNET

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx vs httpx2
    from fastapi.testclient import TestClient

from ferkit.app.serve import create_app, limits  # noqa: E402
from ferkit.infer.recognizer import RecognizerSettings  # noqa: E402

KEY = "test-key-123"
H = {"X-API-Key": KEY}
LABELS = {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(model="default", api_key=KEY, max_upload_mb=2, max_video_mb=5, max_pixels=20_000_000,
                     recognizer=RecognizerSettings(detector="yunet", yunet_path=YUNET, device="cpu"),
                     work_dir=tmp_path_factory.mktemp("serve_work"))
    with TestClient(app) as c:
        yield c
    assert not app.state.work_dir.exists(), "the server's upload folder must be removed at shutdown"


def _photo(name: str) -> bytes:
    return (PHOTOS / name).read_bytes()


def _post_image(client, data: bytes, name: str = "photo.jpg", **params):
    return client.post("/v1/predict", files={"file": (name, data, "image/jpeg")}, params=params, headers=H)


def _png_header_only(width: int, height: int, rows: int = 4) -> bytes:
    """A small PNG that declares ``width`` x ``height`` RGB pixels but carries only a few rows of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress((b"\x00" + b"\x00" * (3 * width)) * rows, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ------------------------------------------------------------------ photos


def test_predict_returns_every_face_in_the_results_jsonl_schema(client):
    r = _post_image(client, _photo("two_people.jpg"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["width"], out["height"]) == (1126, 661)
    assert out["model"] == "default" and out["detector"] == "yunet"
    assert len(out["faces"]) == 2  # two people, counted by eye
    for face in out["faces"]:
        assert set(face) == {"track_id", "box", "score", "label", "probs", "landmarks", "quality", "low_quality"}
        x, y, w, h = face["box"]
        assert all(isinstance(v, int) for v in face["box"]) and w > 40 and h > 40
        assert 0 <= x and x + w <= 1126 and 0 <= y and y + h <= 661
        assert set(face["probs"]) == LABELS and abs(sum(face["probs"].values()) - 1) < 1e-3
        assert face["label"] == max(face["probs"], key=face["probs"].get)
        assert face["track_id"] is None  # a photo has no tracks
        assert np.asarray(face["landmarks"]).shape == (5, 2)
    # The two people stand left and right of the middle.
    assert sorted(f["box"][0] < 563 for f in out["faces"]) == [False, True]


def test_predict_matches_the_recognizer_and_annotates(client):
    from ferkit.infer.recognizer import Recognizer

    # The server's default backend, as the Recognizer's: "auto" (the shipped int8 model on a CPU).
    rec = Recognizer(detector="yunet", yunet_path=YUNET, device="cpu", backend="auto")
    assert client.app.state.hub.recognizers["default"].backend == rec.backend
    expected = rec(str(PHOTOS / "kit_with_rose.jpg"))
    r = _post_image(client, _photo("kit_with_rose.jpg"), annotated=1)
    assert r.status_code == 200, r.text
    got = r.json()
    assert [f["box"] for f in got["faces"]] == [list(f.box) for f in expected]
    assert [f["label"] for f in got["faces"]] == [f.label for f in expected]
    for g, e in zip(got["faces"], expected):
        assert all(abs(g["probs"][k] - e.probs[k]) < 1e-3 for k in LABELS)
    jpeg = cv2.imdecode(np.frombuffer(base64.b64decode(got["annotated_jpeg"]), np.uint8), cv2.IMREAD_COLOR)
    assert jpeg.shape == (700, 501, 3)
    assert np.abs(jpeg.astype(int) - cv2.imread(str(PHOTOS / "kit_with_rose.jpg")).astype(int)).mean() > 1  # boxes drawn


def test_concurrent_requests_are_batched_and_each_gets_its_own_faces(client):
    photos = ["kit_with_rose.jpg", "two_people.jpg"] * 3
    alone = {name: _post_image(client, _photo(name)).json()["faces"] for name in set(photos)}
    before = client.app.state.hub.batchers["default"].stats.requests
    results: dict[int, dict] = {}

    def worker(i: int, name: str) -> None:
        results[i] = _post_image(client, _photo(name)).json()

    threads = [threading.Thread(target=worker, args=(i, n)) for i, n in enumerate(photos)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, name in enumerate(photos):
        got = results[i]["faces"]
        assert [f["box"] for f in got] == [f["box"] for f in alone[name]]
        assert [f["label"] for f in got] == [f["label"] for f in alone[name]]
    assert client.app.state.hub.batchers["default"].stats.requests - before == len(photos)


def _instrumented_decoder(monkeypatch) -> tuple[dict, threading.Event]:
    """Replace the server's image decoder by one that counts how many decodes run at once and holds each one
    until the returned event is set (a large photo's decode, as long as the test needs)."""
    seen = {"now": 0, "most": 0, "calls": 0}
    lock = threading.Lock()
    release = threading.Event()
    real = limits.decode_image

    def counting(data, max_pixels):
        with lock:
            seen["now"] += 1
            seen["calls"] += 1
            seen["most"] = max(seen["most"], seen["now"])
        try:
            release.wait(timeout=30)
            return real(data, max_pixels)
        finally:
            with lock:
                seen["now"] -= 1

    monkeypatch.setattr(limits, "decode_image", counting)
    return seen, release


def _burst(client, n: int, release: threading.Event, until) -> list:
    """``n`` requests at once; the held decodes are released once ``until()`` holds (or after 20 s)."""
    results: list = [None] * n

    def worker(i: int) -> None:
        results[i] = _post_image(client, _photo("kit_with_rose.jpg"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    t0 = time.time()
    while not until() and time.time() - t0 < 20:
        time.sleep(0.02)
    release.set()
    for t in threads:
        t.join()
    return results


def test_concurrent_image_decodes_are_bounded_and_every_request_is_served(client, monkeypatch):
    gate = client.app.state.gate
    assert gate.limit == limits.default_max_decodes() and gate.limit >= 2
    seen, release = _instrumented_decoder(monkeypatch)
    n = gate.limit + 4
    results = _burst(client, n, release, lambda: gate.stats()["waiting"] == n - gate.limit)
    assert [r.status_code for r in results] == [200] * n
    assert all(len(r.json()["faces"]) == 2 for r in results)  # the waiting ones were served correctly too
    assert seen["calls"] == n and seen["most"] == gate.limit  # the bound was reached, never passed
    health = client.get("/health").json()["decoding"]
    assert health["limit"] == gate.limit and health["active"] == 0 and health["waiting"] == 0


def test_requests_beyond_the_decode_queue_get_503_with_retry_after(client, monkeypatch):
    gate = client.app.state.gate
    monkeypatch.setattr(gate, "max_waiting", 1)
    _, release = _instrumented_decoder(monkeypatch)
    n = gate.limit + 3
    refused_before = gate.refused
    results = _burst(client, n, release, lambda: gate.refused - refused_before == 2)
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * (gate.limit + 1) + [503] * 2  # the bound, plus the one that may wait
    for r in results:
        if r.status_code == 503:
            assert r.json()["error"].startswith("server busy:") and r.headers["Retry-After"] == "1"
    assert gate.refused - refused_before == 2


def test_models_health_and_offline_docs(client):
    models = client.get("/v1/models", headers=H).json()
    assert models["default_model"] == "default" and models["default_detector"] == "yunet"
    assert set(models["detectors"]) == {"haar", "yunet"}
    assert set(models["models"][0]["labels"]) == LABELS
    health = client.get("/health")  # no key needed
    assert health.status_code == 200 and health.json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/videos", "/v1/videos/{job_id}", "/v1/models", "/health"} <= set(spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "http://" not in docs.text and "https://" not in docs.text  # no CDN: every asset from this server
    for src in __import__("re").findall(r'(?:src|href)="([^"]+)"', docs.text):
        assert client.get(src).status_code == 200, src
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and "default-src 'self'" in redoc.headers["Content-Security-Policy"]
    scripts = re.findall(r'<script src="([^"]+)"', redoc.text)
    assert scripts and all(client.get(s).status_code == 200 and "cdn.redoc.ly" not in client.get(s).text for s in scripts)
    page = client.get("/")
    assert page.status_code == 200 and 'id="photo-input"' in page.text
    for asset in ("/", "/static/app.js", "/static/style.css"):
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", client.get(asset).text), asset  # no CDN, no fonts


def test_haar_detector_can_be_chosen_per_request(client):
    r = _post_image(client, _photo("two_people.jpg"), detector="haar")
    assert r.status_code == 200 and r.json()["detector"] == "haar"
    assert len(r.json()["faces"]) >= 1
    assert all(f["landmarks"] is None for f in r.json()["faces"])  # Haar gives no landmarks


# ------------------------------------------------------------------ bad input


def test_wrong_or_missing_api_key_is_401(client):
    data = _photo("kit_with_rose.jpg")
    no_key = client.post("/v1/predict", files={"file": ("a.jpg", data, "image/jpeg")})
    bad_key = client.post("/v1/predict", files={"file": ("a.jpg", data, "image/jpeg")}, headers={"X-API-Key": "nope"})
    for r in (no_key, bad_key, client.get("/v1/models")):
        assert r.status_code == 401
        assert "API key" in r.json()["error"]


@pytest.mark.parametrize("params, word", [({"model": "vgg-nope"}, "unknown model"),
                                          ({"detector": "mtcnn"}, "unknown face detector")])
def test_unknown_model_or_detector_is_422_naming_the_choices(client, params, word):
    r = _post_image(client, _photo("kit_with_rose.jpg"), **params)
    assert r.status_code == 422
    assert word in r.json()["error"] and ("default" in r.json()["error"] or "haar" in r.json()["error"])


def test_text_file_named_jpg_is_422(client):
    r = _post_image(client, b"this is not an image, whatever its name says\n" * 20, name="holiday.jpg")
    assert r.status_code == 422
    assert "not an image" in r.json()["error"]


def test_missing_file_field_is_422(client):
    r = client.post("/v1/predict", data={"photo": "x"}, headers=H)
    assert r.status_code == 422
    assert r.json() == {"error": "missing form field 'file'"}


def test_too_large_upload_is_413_declared_or_streamed(client):
    big = b"\xff" * 2_500_000  # over the 2 MB limit of this server
    r = _post_image(client, big)
    assert r.status_code == 413 and "too large" in r.json()["error"]

    def chunks():  # no Content-Length: the server counts while reading and stops at the limit
        for _ in range(10):
            yield b"0" * 500_000

    r = client.post("/v1/predict", content=chunks(), headers={**H, "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "too large" in r.json()["error"]


@pytest.mark.parametrize("size", [(50_000, 50_000), (6_000, 4_000)])
def test_decompression_bomb_is_refused_from_its_header_without_decoding(client, monkeypatch, size):
    bomb = _png_header_only(*size)
    assert len(bomb) < 1_000_000  # small on the wire, huge once decoded

    def no_decode(*args, **kwargs):
        raise AssertionError("the server decoded an image over the pixel limit")

    monkeypatch.setattr(limits.cv2, "imdecode", no_decode)
    r = _post_image(client, bomb, name="bomb.png")
    assert r.status_code == 413
    assert "pixels" in r.json()["error"]


# ------------------------------------------------------------------ videos


def _short_clip(path, frames: int = 30) -> None:
    """The first ``frames`` frames of the real test video, as an MP4."""
    cap = cv2.VideoCapture(str(VIDEO))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = None
    for _ in range(frames):
        ok, img = cap.read()
        assert ok
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (img.shape[1], img.shape[0]))
        writer.write(img)
    writer.release()
    cap.release()


def _wait_done(client, job_id: str, timeout: float = 90.0) -> dict:
    t0 = time.time()
    progress = []
    while time.time() - t0 < timeout:
        job = client.get(f"/v1/videos/{job_id}", params={"results": "false"}, headers=H).json()
        progress.append(job["progress"])
        if job["status"] not in ("queued", "running"):
            return job | {"seen_progress": progress}
        time.sleep(0.3)
    raise AssertionError(f"video job not done after {timeout} s: {job}")


def test_video_job_lifecycle(client, tmp_path):
    clip = tmp_path / "clip.mp4"
    _short_clip(clip, 30)
    with open(clip, "rb") as fh:
        r = client.post("/v1/videos", files={"file": ("../../../etc/evil name.mp4", fh, "video/mp4")},
                        params={"detect_every": 2}, headers=H)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["frames_total"] == 30 and (job["width"], job["height"]) == (640, 360)
    # The upload lives in the server's own folder under a generated name; the client's name is used nowhere.
    job_dir = client.app.state.work_dir / job["id"]
    assert (job_dir / "input.mp4").is_file()
    assert not list(client.app.state.work_dir.rglob("*evil*"))
    # The job runs in the background: the API answers photos meanwhile.
    assert _post_image(client, _photo("kit_with_rose.jpg")).status_code == 200
    assert client.get(f"/v1/videos/{job['id']}", params={"results": "false"}, headers=H).json()["status"] != "done"

    done = _wait_done(client, job["id"])
    assert done["status"] == "done", done
    assert done["progress"] == 1.0 and all(p is None or 0 <= p <= 1 for p in done["seen_progress"])

    full = client.get(f"/v1/videos/{job['id']}", headers=H).json()
    results = full["results"]
    assert [r["frame"] for r in results] == list(range(30))
    assert results[-1]["time_s"] > 0.9  # 30 frames at 29.97 fps
    faces = [f for r in results for f in r["faces"]]
    assert sum(bool(r["faces"]) for r in results) >= 25  # people on stage in nearly every frame
    assert all(isinstance(f["track_id"], int) and f["label"] in LABELS for f in faces)

    table = list(csv.DictReader(io.StringIO(client.get(full["links"]["csv"], headers=H).text)))
    assert len(table) == len(faces)
    assert set(LABELS) <= set(table[0]) and {"frame", "time_s", "track_id", "x", "y", "w", "h", "label"} <= set(table[0])
    jsonl = client.get(full["links"]["jsonl"], headers=H).text.strip().splitlines()
    assert len(jsonl) == len(faces) and json.loads(jsonl[0])["frame"] == 0

    video = client.get(full["links"]["video"], headers=H)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    annotated = tmp_path / "annotated.mp4"
    annotated.write_bytes(video.content)
    cap = cv2.VideoCapture(str(annotated))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 30
    cap.release()
    assert client.get(full["links"]["source"], headers=H).content == clip.read_bytes()

    assert client.delete(f"/v1/videos/{job['id']}", headers=H).status_code == 204
    assert client.get(f"/v1/videos/{job['id']}", headers=H).status_code == 404
    assert not job_dir.exists()  # uploads and outputs are cleaned up


def test_a_photo_sent_as_a_video_is_415_naming_the_expected_formats(client):
    before = set(client.app.state.work_dir.iterdir())
    png = cv2.imencode(".png", cv2.imread(str(PHOTOS / "kit_with_rose.jpg")))[1].tobytes()
    for name, data, kind in (("kit.jpg", _photo("kit_with_rose.jpg"), "JPEG"), ("kit.mp4", png, "PNG")):
        r = client.post("/v1/videos", files={"file": (name, data, "video/mp4")}, headers=H)
        assert r.status_code == 415, r.text
        error = r.json()["error"]
        assert f"a {kind} image, not a video" in error and "expected a video file (MP4, MOV, WebM" in error
        assert "/v1/predict" in error  # where a photo goes instead
    assert set(client.app.state.work_dir.iterdir()) == before


def test_bad_video_uploads_are_refused_and_leave_no_files(client):
    before = set(client.app.state.work_dir.iterdir())
    r = client.post("/v1/videos", files={"file": ("movie.mp4", b"not a video at all\n" * 100, "video/mp4")}, headers=H)
    assert r.status_code == 422 and "not a readable video" in r.json()["error"]
    r = client.post("/v1/videos", files={"file": ("big.mp4", b"\0" * 5_500_000, "video/mp4")}, headers=H)
    assert r.status_code == 413
    assert set(client.app.state.work_dir.iterdir()) == before
    assert client.get("/v1/videos/0123456789abcdef0123456789abcdef", headers=H).status_code == 404
    assert client.get("/v1/videos/..%2F..%2Fetc", headers=H).status_code == 404


# ------------------------------------------------------------------ live WebSocket


def test_live_websocket_tracks_faces_across_frames(client):
    img = cv2.imread(str(PHOTOS / "kit_with_rose.jpg"))
    frames = [img, np.roll(img, 4, axis=1), np.roll(img, 8, axis=1)]  # the people move a little
    replies = []
    with client.websocket_connect(f"/v1/live?api_key={KEY}&detector=yunet") as ws:
        for f in frames:
            ws.send_bytes(cv2.imencode(".jpg", f)[1].tobytes())
            replies.append(ws.receive_json())
        ws.send_bytes(b"not a jpeg")
        bad = ws.receive_json()
    assert [r["frame"] for r in replies] == [0, 1, 2]
    assert all(len(r["faces"]) == 2 for r in replies)
    ids = [sorted(f["track_id"] for f in r["faces"]) for r in replies]
    assert ids[0] == ids[1] == ids[2] and len(set(ids[0])) == 2  # each person keeps one track id
    assert all(f["label"] in LABELS for r in replies for f in r["faces"])
    assert bad["status"] == 422 and "not an image" in bad["error"]  # a bad frame is answered, the connection lives


def test_live_websocket_without_key_is_refused(client):
    frame = _photo("kit_with_rose.jpg")
    with client.websocket_connect("/v1/live") as ws:
        ws.send_bytes(frame)  # a frame where the key should have come first
        reply = ws.receive_json()
    assert reply["status"] == 401 and "API key" in reply["error"] and "subprotocol" in reply["error"]
    with client.websocket_connect("/v1/live") as ws:
        ws.send_text(json.dumps({"api_key": "wrong"}))
        reply = ws.receive_json()
    assert reply["status"] == 401 and "API key" in reply["error"]
    with client.websocket_connect("/v1/live", subprotocols=["ferkit", "ferkit.key." + _b64url("wrong")]) as ws:
        reply = ws.receive_json()
    assert reply["status"] == 401


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_live_websocket_takes_the_key_as_a_subprotocol_or_a_first_message(client):
    """Browsers cannot set headers on a WebSocket: the key comes as a subprotocol or a first message, not in the URL."""
    frame = _photo("kit_with_rose.jpg")
    with client.websocket_connect("/v1/live", subprotocols=["ferkit", "ferkit.key." + _b64url(KEY)]) as ws:
        assert ws.accepted_subprotocol == "ferkit"  # a browser drops a connection whose offer is not answered
        ws.send_bytes(frame)
        by_protocol = ws.receive_json()
    with client.websocket_connect("/v1/live") as ws:
        ws.send_text(json.dumps({"api_key": KEY}))  # not answered: the next answer is the frame's
        ws.send_bytes(frame)
        by_message = ws.receive_json()
    for reply in (by_protocol, by_message):
        assert "error" not in reply and reply["frame"] == 0 and len(reply["faces"]) == 2


def test_api_key_in_a_url_never_reaches_the_server_log(client):
    """uvicorn logs each request's path with its query; a key given as ?api_key= is blanked out in those lines."""
    import logging
    import socket

    import httpx
    import uvicorn
    from websockets.sync.client import connect

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The same app, served by uvicorn as `ferkit serve` does (its lifespan is the test client's).
    config = uvicorn.Config(client.app, host="127.0.0.1", port=port, log_level="info", lifespan="off")
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    capture = Capture()
    capture.setFormatter(logging.Formatter("%(name)s %(message)s"))
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error")]
    for lg in loggers:  # added after uvicorn's own logging set-up, which would remove it
        lg.addHandler(capture)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        t0 = time.time()
        while not srv.started:
            assert time.time() - t0 < 30 and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        frame = _photo("kit_with_rose.jpg")
        with connect(f"ws://127.0.0.1:{port}/v1/live?api_key={KEY}&detector=yunet") as ws:
            ws.send(frame)
            assert len(json.loads(ws.recv())["faces"]) == 2  # the key worked
        with connect(f"ws://127.0.0.1:{port}/v1/live?detector=yunet&api%5Fkey={KEY}") as ws:
            ws.send(frame)
            assert "faces" in json.loads(ws.recv())
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models?api_key={KEY}", timeout=10).status_code == 401
    finally:
        srv.should_exit = True
        thread.join(timeout=15)
        for lg in loggers:
            lg.removeHandler(capture)
    log = "\n".join(lines)
    assert "/v1/live?api_key=***&detector=yunet" in log and "api%5Fkey=***" in log  # the lines are there, blanked
    assert "/v1/models?api_key=***" in log
    assert KEY not in log


# ------------------------------------------------------------------ the command line


def test_ferkit_serve_command_serves_with_the_key_from_the_environment(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "FERKIT_API_KEY": "env-key"}
    proc = subprocess.Popen([sys.executable, "-m", "ferkit.app.cli", "serve", "--port", str(port), "--detector", "haar",
                             "--work-dir", str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
        files = {"file": ("a.jpg", _photo("kit_with_rose.jpg"), "image/jpeg")}
        assert httpx.post(f"{url}/v1/predict", files=files, timeout=30).status_code == 401
        r = httpx.post(f"{url}/v1/predict", files=files, headers={"X-API-Key": "env-key"}, timeout=30)
        assert r.status_code == 200 and r.json()["detector"] == "haar"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/" in out and "API key required" in out
    assert "env-key" not in out  # the key is never printed
    assert not list(tmp_path.iterdir())  # the upload folder is removed at shutdown


@pytest.mark.unit  # no data from ../shared
def test_ferkit_serve_with_a_missing_model_fails_with_one_line(tmp_path, capsys):
    from ferkit.app.cli import main

    assert main(["serve", "--model", str(tmp_path / "nope.pt"), "--detector", "haar"]) == 1
    err = capsys.readouterr().err
    assert "nope.pt" in err and "Traceback" not in err
