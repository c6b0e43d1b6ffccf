"""``ferkit serve``: the web UI and REST API on a local uvicorn server."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os

from ferkit.app.args import add_backend, add_detector, add_device, add_min_confidence, add_threads, recognizer_settings

log = logging.getLogger(__name__)

API_KEY_ENV = "FERKIT_API_KEY"


def register(sub, formatter) -> None:
    # No import of the server here: `ferkit --help` must stay fast and work without the [serve] extra.
    p = sub.add_parser(
        "serve",
        help="web UI and REST API: photos, videos and a live camera in the browser",
        formatter_class=formatter,
        description="Start a local web server with the ferkit UI (open the printed address in a browser) and a REST API:\n"
        "  POST /v1/predict (image -> faces), POST /v1/videos (video -> job), GET /v1/videos/ID (progress, results,\n"
        "  downloads), GET /v1/models, GET /health, WebSocket /v1/live, API docs at /docs. For example\n"
        "  ferkit serve --model default --model vgg=runs/vgg9 --detector yunet\n"
        "  curl -F file=@photo.jpg http://127.0.0.1:8000/v1/predict\n"
        f"Binds to 127.0.0.1 (this machine only) unless --host says otherwise; set --api-key (or ${API_KEY_ENV})\n"
        "before serving other machines.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 serves every network interface")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--model", "-m", action="append", metavar="[NAME=]SPEC",
                   help="model to serve: 'default', a checkpoint, a run folder or an .onnx file; repeat to offer "
                        "several (the first is the default; clients choose with ?model=NAME); none given: 'default'")
    add_detector(p)  # the default one; clients may choose another per request
    add_min_confidence(p)
    add_backend(p)
    add_device(p)
    p.add_argument("--api-key",
                   help=f"require this key in the X-API-Key header of /v1 requests; not given: ${API_KEY_ENV} if set")
    # Limits left unset take the server's own defaults (stated in the help, printed at start).
    unset = argparse.SUPPRESS
    p.add_argument("--max-upload-mb", type=float, default=unset, help="largest image upload or live frame (default: 20)")
    p.add_argument("--max-video-mb", type=float, default=unset, help="largest video upload (default: 200)")
    p.add_argument("--max-pixels", type=int, default=unset,
                   help="largest width x height of an image or video frame (default: 40000000)")
    p.add_argument("--max-video-seconds", type=float, default=unset, help="longest video accepted (default: 900)")
    p.add_argument("--max-batch", type=int, default=unset, help="most face crops per batched forward pass (default: 64)")
    p.add_argument("--max-wait-ms", type=float, default=unset,
                   help="how long the batcher waits for more requests once one has arrived (default: 2)")
    add_threads(p)
    p.add_argument("--max-decodes", type=int, default=unset,
                   help="images (photos, live frames) decoded and processed at once; each holds its pixels in memory "
                        "(default: 2 per CPU core, 2 to 16)")
    p.add_argument("--max-queue", type=int, default=unset,
                   help="images that may wait for a decode slot; further requests get 503 (default: 64)")
    p.add_argument("--job-ttl", type=float, default=unset,
                   help="seconds a finished video job's files are kept for download (default: 3600)")
    p.add_argument("--work-dir",
                   help="where the server's temporary upload folder is made; not given: the system's temp folder")
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    import uvicorn

    from ferkit.app.serve import create_app

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    # Read the key from the environment here, not as an argparse default: --help would print it.
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not _is_loopback(args.host) and api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach this machine can use the server "
                    "(set --api-key or $%s)", args.host, API_KEY_ENV)
    options = {"max_upload_mb": "max_upload_mb", "max_video_mb": "max_video_mb", "max_pixels": "max_pixels",
               "max_video_seconds": "max_video_seconds", "max_batch": "max_batch", "max_wait_ms": "max_wait_ms",
               "job_ttl": "job_ttl_s", "max_decodes": "max_decodes", "max_queue": "max_queue"}
    given = {key: getattr(args, name, None) for name, key in options.items()}
    app = create_app(
        model=args.model or ["default"], recognizer=recognizer_settings(args, model="default"), api_key=api_key,
        work_dir=args.work_dir, **{k: v for k, v in given.items() if v is not None},
    )
    lim = app.state.limits
    hub = app.state.hub
    shown = f"[{args.host}]" if ":" in args.host else args.host
    if args.host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    print(f"ferkit serve: models {', '.join(hub.recognizers)}; face detectors {', '.join(hub.detector_names)} "
          f"(default {hub.default_detector}); limits {lim['max_upload_mb']:g} MB per image, {lim['max_video_mb']:g} MB "
          f"and {lim['max_video_seconds']:g} s per video, {lim['max_pixels']:,} pixels, {lim['max_decodes']} images "
          f"decoded at once ({lim['max_queue']} waiting); "
          f"API key {'required' if api_key else 'off'}")
    print(f"ferkit serve: open http://{shown}:{args.port}/  (API docs at /docs; stop with Ctrl-C)", flush=True)
    level = logging.getLogger().getEffectiveLevel()
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if level <= logging.INFO else "warning",
                ws_max_size=app.state.upload_limits.ws_max_size)
    return 0
