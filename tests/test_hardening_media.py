"""Hardening (issue 25), media part, on real files made in each test: animated images and videos held to the pixel
limit from their headers, a video with no stated length held to the server's length limit as it is decoded, a
predict run stopped by SIGTERM or SIGINT that still leaves playable, complete outputs, the leftovers of a killed
`ferkit data split`, and a live frame just over the upload limit answered rather than cut off."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import VIDEO, YUNET, make_fer_slice

from ferkit.app.cli import main
from ferkit.imageio import ImageTooLargeError, pixel_limit
from ferkit.infer.sources import LiveSource, VideoSource

KEY = "media-key"
H = {"X-API-Key": KEY}


def clip_frames(n: int) -> list[np.ndarray]:
    """The first ``n`` frames of the real test clip, BGR (640x360), decoded by PyAV (tests stub out cv2.VideoCapture)."""
    frames = []
    with av.open(str(VIDEO)) as clip:
        for frame in clip.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == n:
                return frames
    raise AssertionError(f"{VIDEO} has fewer than {n} frames")


def encode(path: Path, frames: list[np.ndarray], fmt: str | None = None, size: tuple[int, int] | None = None,
           rate: int = 25) -> Path:
    """Write ``frames`` (resized to ``size``) as H.264 with PyAV; ``fmt="h264"``: a raw stream, no container."""
    w, h = size or (frames[0].shape[1], frames[0].shape[0])
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=rate, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(cv2.resize(img, (w, h))), format="bgr24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def gif_bomb(path: Path, side: int = 16000) -> Path:
    """A 35-byte GIF whose header declares ``side`` x ``side`` (256 MP by default): one frame, no pixels sent."""
    screen = struct.pack("<HHBBB", side, side, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"  # 2-colour global palette
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0) + b"\x02\x02\x44\x01\x00"  # one LZW block
    path.write_bytes(b"GIF89a" + screen + image + b"\x3b")
    return path


@pytest.fixture()
def no_capture(monkeypatch):
    """cv2.VideoCapture fails the test: a source over the pixel limit must be refused before OpenCV probes it
    (FFmpeg's probe decodes a first frame: 370 MB of RSS for a 12000x12000 one)."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"cv2.VideoCapture{args} opened: a frame source over the pixel limit was probed by decoding")

    monkeypatch.setattr(cv2, "VideoCapture", refuse)


# ------------------------------------------------------------------ 2. animated images and videos: the pixel limit


def test_predict_refuses_a_gif_bomb_and_a_large_video_from_their_headers(tmp_path, capsys, no_capture):
    """`ferkit predict bomb.gif --max-pixels 1000000` decoded 256 MP (3.1 GB RSS) and exited 0; a video of
    frames over the limit was decoded too. Both are refused from the header, before OpenCV opens them."""
    bomb = gif_bomb(tmp_path / "bomb.gif")
    assert bomb.stat().st_size == 35
    big = encode(tmp_path / "big.mov", clip_frames(2), size=(1600, 1200))
    for path, shown in ((bomb, "16000x16000 = 256,000,000 pixels"), (big, "1600x1200 = 1,920,000 pixels")):
        out = tmp_path / f"out_{path.suffix[1:]}"
        assert main(["predict", str(path), "--out", str(out), "--max-pixels", "1000000", "--device", "cpu"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert f"{path}: {shown}, more than the limit of 1,000,000" in err and "--max-pixels" in err, err
        assert not out.exists()


def test_every_frame_source_holds_to_the_limit_of_still_images(tmp_path):
    """The limit in force (--max-pixels, $FERKIT_MAX_PIXELS) guards video files, GIFs and streams alike; a video
    under it is read as before."""
    big = encode(tmp_path / "big.mp4", clip_frames(3), size=(1600, 1200))
    with pixel_limit(1_000_000):
        for open_it in (lambda: VideoSource(big), lambda: LiveSource(str(big)), lambda: VideoSource(gif_bomb(tmp_path / "b.gif"))):
            with pytest.raises(ImageTooLargeError, match="more than the limit of 1,000,000"):
                open_it()
    with pytest.raises(ImageTooLargeError) as info:
        VideoSource(big, max_pixels=1_919_999)
    assert (info.value.size, info.value.pixels, info.value.limit) == ((1600, 1200), 1_920_000, 1_919_999)
    src = VideoSource(big, max_pixels=1_920_000)
    assert src.size == (1600, 1200) and [f.image.shape for f in src] == [(1200, 1600, 3)] * 3


# ------------------------------------------------------------------ the server: /v1/videos and /v1/live


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's note about httpx
        from fastapi.testclient import TestClient

    from ferkit.app.serve import create_app
    from ferkit.infer.recognizer import RecognizerSettings

    app = create_app(model="default", api_key=KEY, max_upload_mb=1, max_video_mb=5, max_pixels=1_000_000,
                     max_video_seconds=1,
                     recognizer=RecognizerSettings(detector="yunet", yunet_path=YUNET, device="cpu", threads=1),
                     work_dir=tmp_path_factory.mktemp("serve_media"))
    with TestClient(app) as c:
        yield c


def _post_video(client, path: Path):
    with open(path, "rb") as fh:
        return client.post("/v1/videos", files={"file": (path.name, fh, "video/mp4")}, headers=H)


def _finished(client, job: dict, timeout: float = 120) -> dict:
    """The video job ``job`` polled until it is no longer queued or running."""
    t0 = time.time()
    while job["status"] in ("queued", "running"):
        assert time.time() - t0 < timeout, job
        time.sleep(0.2)
        job = client.get(f"/v1/videos/{job['id']}", params={"results": "false"}, headers=H).json()
    return job


def test_server_refuses_a_video_over_the_pixel_limit_from_its_header(client, tmp_path, no_capture):
    """/v1/videos answered 413 only after decoding the first frame; now from the header, before OpenCV opens it."""
    before = set(client.app.state.work_dir.iterdir())
    r = _post_video(client, encode(tmp_path / "big.mp4", clip_frames(2), size=(1600, 1200)))
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "video refused: 1600x1200 frames = 1,920,000 pixels, the limit is 1,000,000"
    assert set(client.app.state.work_dir.iterdir()) == before  # the upload is gone


def test_server_stops_a_raw_h264_stream_at_the_length_limit_while_decoding(client, tmp_path):
    """A raw .h264 states no length, so `--max-video-seconds` passed it whole (10 minutes in 299 KB). Its frames
    are counted as they are decoded, and the job fails at the limit, saying why."""
    raw = encode(tmp_path / "clip.h264", clip_frames(60), fmt="h264")  # 60 frames: 2.4 s at FFmpeg's 25 fps for raw H.264
    r = _post_video(client, raw)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["frames_total"] is None  # no length stated: the upload check cannot see it
    job = _finished(client, job)
    assert job["status"] == "failed", job
    assert job["error"].startswith("video refused: longer than the limit of 1 s (stopped at frame 25, 1.04 s in"), job
    assert job["frames_done"] == 25  # 1 s at 25 fps; not the 60 sent


def test_live_frame_over_the_upload_limit_is_answered_then_closed(client):
    with client.websocket_connect(f"/v1/live?api_key={KEY}") as ws:
        ws.send_bytes(b"\xff" * 1_500_000)  # just over this server's 1 MB limit
        reply = ws.receive_json()
        ws.send_bytes(b"x")  # were the connection still open, this would be answered (422) instead of the close
        closing = ws.receive()
    assert reply["status"] == 413, reply
    assert reply["error"] == "frame too large: 1.5 MB, the limit is 1 MB (the server's --max-upload-mb)"
    assert closing == {"type": "websocket.close", "code": 1009, "reason": ""}


def test_ferkit_serve_answers_a_live_frame_just_over_max_upload_mb(tmp_path):
    """Under uvicorn a frame 1 KB over --max-upload-mb was cut off by the protocol layer (close 1009, no reason):
    uvicorn's ws_max_size was the limit itself. The server now takes in twice the limit and answers."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("FERKIT_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "ferkit.app.cli", "serve", "--port", str(port), "--detector", "haar",
                             "--max-upload-mb", "1", "--threads", "1", "--work-dir", str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ws = None
        for _ in range(300):
            try:
                ws = connect(f"ws://127.0.0.1:{port}/v1/live", max_size=None, open_timeout=2)
                break
            except (OSError, TimeoutError):
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
        assert ws is not None, "ferkit serve did not start"
        with ws:
            ws.send(b"\xff" * 1_500_000)
            reply = json.loads(ws.recv(timeout=30))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
        assert reply["status"] == 413 and "the limit is 1 MB (the server's --max-upload-mb)" in reply["error"], reply
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


# ------------------------------------------------------------------ 7. predict stopped by a signal


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_predict_stopped_by_a_signal_leaves_playable_complete_outputs(tmp_path, sig):
    """SIGTERM (timeout, Docker, systemd) killed predict at once: annotated.mp4 of 48 bytes, an empty timeline,
    no summary. SIGINT left no summary.json and no timeline.png. Both now stop as Ctrl-C on a camera does."""
    out = tmp_path / "o"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A handled signal is reset to its default in the child, an ignored one stays ignored (as in a shell's background
    # job): SIGINT handled here while the child starts, so that its Python turns SIGINT into KeyboardInterrupt.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ferkit.app.cli", "predict", str(VIDEO), "--out", str(out),
                                 "--threads", "1", "--device", "cpu"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, old)
    try:
        t0 = time.time()
        while not ((out / "results.jsonl").is_file() and (out / "results.jsonl").stat().st_size > 0):
            assert proc.poll() is None, proc.communicate()
            assert time.time() - t0 < 120, "no results written in 120 s"
            time.sleep(0.05)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, (proc.returncode, stderr)
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == ("terminated" if sig == signal.SIGTERM
                                                                             else "interrupted"), stderr
    assert f"the results up to there are saved in {out}" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and 0 < summary["frames"] < 275  # stopped before the clip's end
    with av.open(str(out / "annotated.mp4")) as video:
        decoded = sum(1 for _ in video.decode(video=0))
    assert decoded == summary["frames"]  # playable, up to the last frame recognised
    timeline = (out / "timeline.csv").read_text().strip().splitlines()
    assert len(timeline) == 1 + summary["frames"]
    assert (out / "timeline.png").stat().st_size > 0 and summary["files"]["timeline_png"] == str(out / "timeline.png")


# ------------------------------------------------------------------ 8a. leftovers of a killed `ferkit data split`


def test_data_split_removes_what_a_killed_run_left_and_spares_a_running_one(tmp_path, caplog):
    """kill -9 during `ferkit data split` left .OUT.partial-PID/ for good; the next run removes it, saying so, and
    leaves alone the one of a process still running."""
    data = make_fer_slice(tmp_path / "fer", per_class=2)
    out = tmp_path / "split"
    # A real run killed by SIGKILL in the middle of writing.
    killed = subprocess.Popen([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from ferkit.data.tools._writer import DatasetWriter\n"
        "w = DatasetWriter(sys.argv[1], [Path(sys.argv[2])]).__enter__()\n"
        "(w.tmp / 'train').mkdir(); (w.tmp / 'train' / 'half.png').write_bytes(b'x')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"), str(out), str(data)])
    assert killed.wait(timeout=60) == -signal.SIGKILL
    dead = tmp_path / f".split.partial-{killed.pid}"
    assert (dead / "train" / "half.png").is_file()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        alive = tmp_path / f".split.partial-{sleeper.pid}"
        alive.mkdir()
        with caplog.at_level(logging.INFO):
            assert main(["data", "split", str(data), "--out", str(out)]) == 0
        assert not dead.exists() and alive.is_dir()
        assert f"{dead}: removed, the unfinished output of an earlier run (process {killed.pid}, no longer running)" in caplog.text
        assert f"{alive}: left alone, the unfinished output of process {sleeper.pid}, which still runs" in caplog.text
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sum(1 for p in out.rglob("*") if p.is_file()) == sum(1 for p in data.rglob("*") if p.is_file())
    assert {p.name for p in tmp_path.iterdir() if ".partial-" in p.name} == {alive.name}



def test_server_results_name_the_uploaded_file_not_a_server_path(client, tmp_path):
    """results.jsonl said "source": "/tmp/ferkit-serve-.../input.mp4": a server path, and the upload's name lost."""
    r = _post_video(client, encode(tmp_path / "my holiday.mp4", clip_frames(12)))
    assert r.status_code == 202, r.text
    job = r.json()
    job = _finished(client, job)
    assert job["status"] == "done", job
    lines = (client.app.state.work_dir / job["id"] / "out" / "results.jsonl").read_text().splitlines()
    sources = {json.loads(line)["source"] for line in lines}
    assert sources == {"my holiday.mp4"}


def test_a_jpeg_named_mp4_is_read_as_the_photo_it_is(tmp_path, capsys, caplog):
    """A photo saved with a video's name was read as a one-frame video; its content decides now."""
    photo = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos" / "two_people.jpg"
    fake = tmp_path / "two_people.mp4"
    fake.write_bytes(photo.read_bytes())
    with caplog.at_level(logging.WARNING):
        assert main(["predict", str(fake), "--out", str(tmp_path / "out"), "--threads", "1"]) == 0
    assert "a JPEG image named .mp4; reading it as a photo" in caplog.text
    assert (tmp_path / "out" / "annotated" / "two_people.mp4").exists() or any((tmp_path / "out" / "annotated").iterdir())
    assert not (tmp_path / "out" / "annotated.mp4").exists()  # no one-frame video
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["faces"] == 2
