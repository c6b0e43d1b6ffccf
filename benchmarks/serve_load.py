"""Load test of ``ferkit serve`` on loopback: N concurrent clients posting a one-face 640x480 photo.

Starts ``ferkit serve`` as a subprocess on a free loopback port (so that the
clients and the server do not share one Python interpreter lock), or uses a
server already running on this machine (``--url``), then runs a bounded load:
``--clients`` threads, each with its own keep-alive connection, each sending
``--requests`` POST /v1/predict requests one after another. Reports throughput,
latency percentiles, errors, the server's batching and decoding counters
(/health), and the server process's peak memory during the load (its peak
resident set, VmHWM from /proc, reset after the warm-up; Linux only; for
``--url`` give ``--server-pid``).

The photo is real: the largest face of a photo from ``shared/data/photos``, cut
out with its surroundings at 4:3 and resized to 640x480 (``--size``).

    python benchmarks/serve_load.py                          # 8 clients x 200 requests
    python benchmarks/serve_load.py --clients 4 --requests 20 --json out.json
    python benchmarks/serve_load.py --clients 50 --requests 1 --size 4000x3000   # a burst of 12 MP photos

Targets: no errors and p95 latency under 200 ms on a 2-core CPU (issue 5); a
burst of large photos costs a bounded amount of memory (issue 15: about 5 GB
for 50 requests before decodes were bounded).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import cv2
import httpx
import numpy as np
from common import SHARED


def one_face_photo(photo: Path, yunet: Path | None, size: tuple[int, int] = (640, 480)) -> bytes:
    """JPEG bytes: the largest face of ``photo`` with its surroundings, 4:3, resized to ``size``."""
    from ferkit.infer.detectors import create_detector

    img = cv2.imread(str(photo))
    if img is None:
        raise FileNotFoundError(f"{photo}: not a readable photo")
    faces = create_detector("yunet" if yunet else "auto", yunet_path=yunet).detect(img)
    if not faces:
        raise ValueError(f"{photo}: no face found to build the benchmark photo from")
    x, y, w, h = max(faces, key=lambda d: d.box[2] * d.box[3]).box
    ch = min(img.shape[0], int(h / 0.4))  # the face fills ~40% of the frame height, as in a webcam picture
    cw = min(img.shape[1], ch * size[0] // size[1])
    ch = cw * size[1] // size[0]
    cx, cy = x + w // 2, y + h // 2
    x0 = min(max(cx - cw // 2, 0), img.shape[1] - cw)
    y0 = min(max(cy - ch // 2, 0), img.shape[0] - ch)
    crop = cv2.resize(img[y0:y0 + ch, x0:x0 + cw], size, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def read_memory_mb(pid: int) -> dict | None:
    """``{"rss": now, "peak": peak resident set}`` of a process in MB, from /proc (Linux); None elsewhere."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = {k: v.split() for k, _, v in (line.partition(":") for line in text.splitlines())}
    try:
        return {"rss": round(int(fields["VmRSS"][0]) / 1024, 1), "peak": round(int(fields["VmHWM"][0]) / 1024, 1)}
    except (KeyError, IndexError, ValueError):
        return None


def reset_peak_memory(pid: int) -> bool:
    """Restart a process's peak-RSS count at its current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def oversized_video(path: Path, side: int = 8000, frames: int = 2) -> Path:
    """A small MJPEG .mov whose frames are ``side`` x ``side`` black pixels (64 MP by default: over the server's
    40 MP limit), a few hundred KB on disk; decoding one frame would take about ``side**2 * 3`` bytes."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width = stream.height = side
        stream.pix_fmt = "yuvj420p"
        black = av.VideoFrame.from_ndarray(np.zeros((side, side, 3), np.uint8), format="rgb24")
        for _ in range(frames):
            for packet in stream.encode(black):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def video_burst(url: str, video: Path, n: int, headers: dict) -> dict:
    """``n`` concurrent POST /v1/videos of ``video``: status codes and the first error message."""
    data = video.read_bytes()
    codes: list[int] = []
    first_error: list[str] = []

    def one() -> None:
        with httpx.Client(base_url=url, timeout=120, headers=headers) as c:
            r = c.post("/v1/videos", files={"file": (video.name, data, "video/quicktime")})
            codes.append(r.status_code)
            if r.status_code >= 400 and not first_error:
                first_error.append(r.json().get("error", r.text)[:200])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"uploads": n, "bytes_each": len(data), "status_codes": {str(c): codes.count(c) for c in sorted(set(codes))},
            "error": first_error[0] if first_error else None, "seconds": round(time.perf_counter() - t0, 2)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "ferkit.app.cli", "-q", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--detector", args.detector, "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.max_decodes:
        cmd += ["--max-decodes", str(args.max_decodes)]
    cmd += ["--backend", args.backend]
    for m in args.model or []:
        cmd += ["--model", m]
    if args.yunet:
        cmd += ["--yunet", str(args.yunet)]
    env = {**os.environ, "FERKIT_API_KEY": ""}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < 120:
        if proc.poll() is not None:
            raise RuntimeError(f"ferkit serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("ferkit serve did not answer /health within 120 s")


def _check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"--url must point at this machine (127.0.0.0/8, ::1 or localhost), got {url}")


def run_load(url: str, photo: bytes, clients: int, requests: int, params: dict, headers: dict,
             max_seconds: float) -> dict:
    latencies: list[float] = []  # seconds, of every request that got an answer
    errors: list[str] = []
    attempts = [0]
    server_ms: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds
    start = threading.Barrier(clients + 1)

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30.0, headers=headers) as c:
            start.wait()
            for _ in range(requests):
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                with lock:
                    attempts[0] += 1
                try:
                    r = c.post("/v1/predict", params=params, files={"file": ("bench.jpg", photo, "image/jpeg")})
                    dt = time.perf_counter() - t0
                    ok = r.status_code == 200 and len(r.json()["faces"]) >= 1
                    with lock:
                        latencies.append(dt)
                        if ok:
                            server_ms.append(r.json()["time_ms"])
                        else:
                            errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000.0
    percentiles = {"p50": 50, "p95": 95, "p99": 99, "max": 100}
    return {
        "clients": clients,
        "requests": attempts[0],
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:5],
        "seconds": round(wall, 2),
        "throughput_rps": round(len(latencies) / wall, 2) if wall > 0 else None,
        "latency_ms": {k: round(float(np.percentile(lat, q)), 1) for k, q in percentiles.items()} if len(lat) else {},
        "server_time_ms_mean": round(statistics.fmean(server_ms), 1) if server_ms else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients")
    ap.add_argument("--requests", type=int, default=200, help="requests per client")
    ap.add_argument("--photo", type=Path, default=SHARED / "data" / "photos" / "two_people.jpg",
                    help="photo whose largest face makes the request image")
    ap.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the request image (large ones test memory)")
    ap.add_argument("--url", help="an already running server on this machine (default: start `ferkit serve`)")
    ap.add_argument("--api-key", help="X-API-Key for --url")
    ap.add_argument("--model", action="append", help="model(s) for the started server (default: the shipped one)")
    ap.add_argument("--detector", default="yunet", choices=("auto", "yunet", "haar"))
    ap.add_argument("--yunet", type=Path, default=SHARED / "models" / "face_detection_yunet_2023mar.onnx",
                    help="YuNet weights (the shared test copy by default)")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--backend", default="torch", choices=("torch", "onnx"), help="server's inference backend")
    ap.add_argument("--threads", type=int, default=0, help="server's CPU threads per forward pass (0: all cores)")
    ap.add_argument("--max-decodes", type=int, default=0,
                    help="started server's --max-decodes: images decoded at once (0: the server's default)")
    ap.add_argument("--server-pid", type=int, help="with --url: the server's process id, to report its memory")
    ap.add_argument("--warmup", type=int, default=5, help="requests sent before timing")
    ap.add_argument("--max-seconds", type=float, default=600, help="stop the load after this long, whatever is left")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--video-burst", type=int, default=0, metavar="N",
                    help="instead of the photo load: N concurrent uploads of a small video whose frames are over the "
                         "server's pixel limit (8000x8000), reporting the status codes and the server's peak memory")
    args = ap.parse_args()
    if args.video_burst:
        return video_burst_main(args)
    if args.clients < 1 or args.requests < 1:
        raise SystemExit("--clients and --requests must be at least 1")
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        if len(size) != 2 or min(size) < 16:
            raise ValueError
    except ValueError:
        raise SystemExit(f"--size must be WIDTHxHEIGHT in pixels, e.g. 640x480, got {args.size!r}") from None
    yunet = args.yunet if args.yunet and args.yunet.is_file() else None
    args.yunet = yunet
    photo = one_face_photo(args.photo, yunet, size)

    proc = None
    if args.url:
        _check_loopback(args.url)
        url = args.url.rstrip("/")
    else:
        proc, url = start_server(args)
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    pid = proc.pid if proc is not None else args.server_pid
    try:
        with httpx.Client(base_url=url, timeout=60, headers=headers) as c:
            for _ in range(args.warmup):
                c.post("/v1/predict", files={"file": ("w.jpg", photo, "image/jpeg")}).raise_for_status()
            before = c.get("/health").json()["batching"]
        # The peak memory of the load alone: the model loading before it peaks too.
        peak_reset = pid is not None and reset_peak_memory(pid)
        memory_before = read_memory_mb(pid) if pid is not None else None
        result = run_load(url, photo, args.clients, args.requests, {}, headers, args.max_seconds)
        memory_after = read_memory_mb(pid) if pid is not None else None
        health = httpx.get(f"{url}/health", timeout=10).json()
        after = health["batching"]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    name = next(iter(after))
    batches = after[name]["batches"] - before[name]["batches"]
    crops = after[name]["crops"] - before[name]["crops"]
    result["mean_batch"] = round(crops / batches, 2) if batches else None
    result["largest_batch"] = after[name]["largest_batch"]
    result["photo"] = f"{args.photo.name}: largest face, {size[0]}x{size[1]} JPEG ({len(photo)} bytes)"
    result["decoding"] = health.get("decoding")  # the server's bound on images decoded at once, and its peak
    result["server_memory_mb"] = None
    if memory_before and memory_after:
        result["server_memory_mb"] = {"before_load": memory_before["rss"], "after_load": memory_after["rss"],
                                      "peak": memory_after["peak"],
                                      "peak_of": "the load" if peak_reset else "the server's whole life"}
    result["detector"] = args.detector if yunet or args.detector != "yunet" else "auto"
    result["server_threads"] = args.threads or "default"
    result["cpu_count"] = os.cpu_count()
    result["load_average_1min"] = round(os.getloadavg()[0], 2)  # this machine is shared: say how busy it was

    lat = result["latency_ms"]
    print(f"{result['clients']} clients x {args.requests} requests: {result['requests']} done in {result['seconds']} s, "
          f"{result['errors']} errors")
    print(f"throughput {result['throughput_rps']} requests/s; latency p50 {lat.get('p50')} ms, p95 {lat.get('p95')} ms, "
          f"p99 {lat.get('p99')} ms, max {lat.get('max')} ms; server time {result['server_time_ms_mean']} ms mean")
    print(f"load average {result['load_average_1min']} on {result['cpu_count']} CPUs")
    print(f"batching: {result['mean_batch']} face crops per forward pass on average (largest {result['largest_batch']})")
    dec = result["decoding"]
    if dec:
        print(f"decoding: at most {dec['peak']} images at once (bound {dec['limit']}), {dec['refused']} refused with 503")
    mem = result["server_memory_mb"]
    if mem:
        print(f"server memory: peak RSS {mem['peak']:.0f} MB during {mem['peak_of']} "
              f"({mem['before_load']:.0f} MB before the load, {mem['after_load']:.0f} MB after)")
    else:
        print("server memory: not measured (needs Linux /proc and the server's pid: start it here or give --server-pid)")
    for e in result["error_examples"]:
        print(f"  error: {e}")
    if lat.get("p95") is not None:
        print(f"target p95 < 200 ms and no errors: {'met' if lat['p95'] < 200 and not result['errors'] else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def video_burst_main(args) -> None:
    """The --video-burst run: what a burst of oversized videos costs the server (they are refused from their headers)."""
    import tempfile

    proc, url = start_server(args) if not args.url else (None, args.url.rstrip("/"))
    pid = proc.pid if proc is not None else args.server_pid
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            video = oversized_video(Path(tmp) / "oversized.mov")
            reset = pid is not None and reset_peak_memory(pid)
            before = read_memory_mb(pid) if pid is not None else None
            result = video_burst(url, video, args.video_burst, headers)
            after = read_memory_mb(pid) if pid is not None else None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    result["server_memory_mb"] = ({"before": before["rss"], "peak": after["peak"], "after": after["rss"],
                                   "peak_of": "the burst" if reset else "the server's whole life"}
                                  if before and after else None)
    result["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(f"{result['uploads']} concurrent uploads of a {result['bytes_each']:,}-byte video of 8000x8000 frames: "
          f"status {result['status_codes']} in {result['seconds']} s; first error: {result['error']}")
    mem = result["server_memory_mb"]
    if mem:
        print(f"server memory: {mem['before']:.0f} MB before, peak {mem['peak']:.0f} MB during {mem['peak_of']}, "
              f"{mem['after']:.0f} MB after (one decoded frame would be {8000 * 8000 * 3 / 2**20:.0f} MB)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
