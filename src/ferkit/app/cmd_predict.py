"""``ferkit predict``: every face's expression in a photo, a folder, a video, a webcam or a stream."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.app.args import add_backend, add_detector, add_device, add_min_confidence, add_model, add_threads, positive_int

DEFAULT_OUT = Path("runs") / "predict"  # numbered folders under it: runs/predict/1, runs/predict/2, ...
PROGRESS_EVERY_S = 10.0  # seconds between progress lines when stderr is not a terminal (no bar there)
MAX_TRACK_LINES = 20  # a long video may hold hundreds of tracks: the longest are listed, the rest counted
ENGINES = ("local", "ray")
# Options that only the ray engine reads, with their defaults: given to the local engine, they would be ignored silently.
RAY_ONLY = {"address": None, "workers": 2, "gpus_per_worker": 0.0, "batch_size": 16, "format": "jsonl"}


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) (the weight of the past), got {text!r}")
    return v


def register(sub, formatter) -> None:
    p = sub.add_parser(
        "predict",
        help="recognise facial expressions in a photo, folder, video, webcam or stream",
        formatter_class=formatter,
        description="Detect every face and recognise its expression; write results.jsonl (one object per face per frame:\n"
        "source, frame, time_s, track_id, box [x, y, w, h], score, label, probs), annotated images or an annotated\n"
        "video, and for videos an emotion-over-time CSV and plot. Examples:\n"
        "  ferkit predict photo.jpg                                  # one photo, the shipped model -> runs/predict/1\n"
        "  ferkit predict photos/ --out out/                         # a folder, recursively\n"
        "  ferkit predict clip.mp4 --out out/ --detect-every 3       # a video, detector on every 3rd frame\n"
        "  ferkit predict 0 --out out/ --show                        # webcam 0 with a live window (Ctrl-C or q stops)\n"
        "  ferkit predict rtsp://camera/stream --out out/ --max-frames 3000\n"
        "  ferkit predict clip.mp4 --out out/ --model runs/vgg9 --detector yunet --yunet face_detection_yunet_2023mar.onnx\n"
        "  ferkit predict photos/ | jq .label                        # JSON lines on stdout when it is not a terminal\n"
        "Prints a line per image (faces left to right) or, for videos, one per face track. In videos each face keeps\n"
        "a track_id while it stays in view, and its probabilities are smoothed over time (--smooth is the weight of\n"
        "the past; --no-smooth shows each frame's own prediction). Without --out, and when stdout is not a terminal,\n"
        "the results go to stdout as JSON lines (results.jsonl's schema) and the human lines to stderr.\n"
        "At scale (pip install -e \".[ray]\"): --engine ray spreads images in batches, and whole videos (tracking\n"
        "intact), over a pool of Ray actors, one model each; it writes results.jsonl (or --format parquet) and\n"
        "summary.json only, and a rerun with the same --out skips the sources already done:\n"
        "  ferkit predict photos/ clips/ --engine ray --workers 4 --out out/      # a local Ray on this machine\n"
        "  ferkit predict /data/faces/ --engine ray --address auto --workers 32 --gpus-per-worker 0.25 --out out/",
    )
    p.add_argument("source", nargs="+",
                   help="image file, folder, video file, webcam index (0, 1, ...) or stream URL (rtsp://, http://); "
                        "with --engine ray, any number of image files, video files and folders")
    p.add_argument("--out", "-o",
                   help=f"output folder; if not given, a new numbered one: {DEFAULT_OUT}/1, {DEFAULT_OUT}/2, ... "
                        "(a folder holding an earlier run is refused unless --overwrite)")
    add_model(p)
    add_detector(p)
    add_min_confidence(p)
    add_backend(p)
    add_device(p)
    add_threads(p)
    p.add_argument("--detect-every", type=positive_int, default=1, metavar="N",
                   help="videos: run the face detector on every N-th frame and follow the faces by optical flow in between")
    p.add_argument("--no-track", action="store_true", help="videos: no track ids and no smoothing")
    smooth = p.add_mutually_exclusive_group()
    smooth.add_argument("--smooth", type=_fraction, default=0.6, metavar="A",
                        help="videos: EMA weight of the past for each track's probabilities, in [0, 1)")
    smooth.add_argument("--no-smooth", action="store_true", help="videos: no temporal smoothing")
    p.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N frames (videos, cameras, streams)")
    p.add_argument("--max-pixels", type=positive_int, metavar="N",
                   help="largest width x height of an image or video frame decoded; a larger file is refused (in a "
                        "folder: reported and skipped) from its header, before decoding (default: $FERKIT_MAX_PIXELS, "
                        "else 100000000)")
    p.add_argument("--no-annotate", action="store_true",
                   help="write results.jsonl (and timeline) only, no annotated images or video")
    p.add_argument("--show", action="store_true", help="open a live window (needs a display and OpenCV with GUI support)")
    p.add_argument("--overwrite", action="store_true", help="write into an output folder that holds an earlier run")
    scale = p.add_argument_group("scaling out (--engine ray; pip install -e \".[ray]\")")
    scale.add_argument("--engine", choices=ENGINES, default="local",
                       help="local: this process; ray: a pool of Ray actors, on this machine or a cluster (resumable)")
    scale.add_argument("--address", metavar="ADDR",
                       help="the Ray cluster to run on (auto, ray://HEAD:10001, HEAD:6379); if not given, a local Ray")
    scale.add_argument("--workers", type=positive_int, default=2, metavar="N",
                       help="Ray actors, one model each, each reserving --threads CPUs (1 if not given) and running "
                            "that many model threads")
    scale.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                       help="GPUs per actor (0.25: four actors share a GPU); with 0 the actors run on CPUs")
    scale.add_argument("--batch-size", type=positive_int, default=16, metavar="N", help="images per actor call")
    scale.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl",
                       help="results.jsonl, or results.parquet (one row per face, the same columns)")
    p.set_defaults(func=run)


def _new_run_dir(base: Path) -> tuple[Path, list[Path]]:
    """Create and return the first free ``base/N`` (N = 1, 2, ...; never an existing one), with the
    parents this created (removed again if the run fails before writing anything)."""
    created = [d for d in (base.parent, base) if not d.exists()]
    base.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        out = base / str(n)
        try:
            out.mkdir()  # atomic: two runs started at once get different folders
        except FileExistsError:
            n += 1
            continue
        return out, [out, *reversed(created)]


def face_summary(faces) -> str:
    """``2 faces (neutral 56%, happy 75%)``: count, then label and confidence of each face from left to right."""
    n = len(faces)
    text = f"{n} face{'' if n == 1 else 's'}"
    if n:
        text += " (" + ", ".join(f"{f.label} {100 * f.confidence:.0f}%" for f in sorted(faces, key=lambda f: f.box[0])) + ")"
    return text


@dataclass
class _Track:
    frames: int = 0
    first_s: float = 0.0
    last_s: float = 0.0
    labels: Counter = field(default_factory=Counter)
    confidence: float = 0.0  # summed over frames; ``frames`` counts detections for untracked faces

    def line(self, name: str, noun: str = "frame") -> str:
        label, count = self.labels.most_common(1)[0]
        return (f"  {name}: {self.frames} {noun}{'' if self.frames == 1 else 's'} ({self.first_s:.1f}-{self.last_s:.1f} s), "
                f"mostly {label} ({100 * count / self.frames:.0f}%), mean confidence {self.confidence / self.frames:.2f}")


class _Reporter:
    """What the user sees while predict runs, as a sink of :func:`~ferkit.infer.pipeline.run_predict` (start, write,
    close): a line per image (or per track at the end, for videos), and progress: a bar on a terminal, else a line
    every PROGRESS_EVERY_S seconds."""

    def __init__(self, human, max_frames: int | None):
        self.human, self.max_frames = human, max_frames
        self.clock = time.perf_counter
        self.done = 0
        self.tracks: dict[int | None, _Track] = {}
        self.bar = None
        self.src, self.total, self.unit = None, None, "image"

    def start(self, source) -> None:
        from tqdm import tqdm

        self.src = source
        self.unit = "frame" if source.is_video else "image"
        total = source.frame_count
        if self.max_frames is not None:
            total = min(total, self.max_frames) if total else self.max_frames
        self.total = total
        self.start_time = self.last = self.last_progress = self.clock()
        # A bar only on a terminal: a log file or a pipe would receive every \r update.
        if sys.stderr.isatty():
            self.bar = tqdm(total=total, unit=self.unit, desc="predict", dynamic_ncols=True, leave=False)

    def say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.human)
        else:
            print(line, file=self.human, flush=True)

    def write(self, result) -> None:
        now = self.clock()
        seconds, self.last = now - self.last, now
        self.done += 1
        if self.src.is_video:
            for face in result.faces:
                t = self.tracks.setdefault(face.track_id, _Track(first_s=result.time_s))
                t.frames += 1
                t.last_s = result.time_s
                t.labels[face.label] += 1
                t.confidence += face.confidence
        else:
            self.say(f"{result.name}: {face_summary(result.faces)} {1000 * seconds:.0f} ms")
        if self.bar is not None:
            self.bar.update(1)
        elif now - self.last_progress >= PROGRESS_EVERY_S:
            self.last_progress = now
            rate = self.done / max(now - self.start_time, 1e-9)
            count = (f"{self.done}/{self.total} {self.unit}s ({100 * self.done / self.total:.0f}%)" if self.total
                     else f"{self.done} {self.unit}s")
            print(f"predict: {count}, {rate:.1f} {self.unit}s/s", file=sys.stderr, flush=True)

    def track_lines(self) -> list[str]:
        """One line per face track of a video: frames seen, time span, most frequent label and its share, mean confidence."""
        named = sorted(((k, t) for k, t in self.tracks.items() if k is not None), key=lambda kt: -kt[1].frames)
        lines = [t.line(f"track {k}") for k, t in sorted(named[:MAX_TRACK_LINES], key=lambda kt: kt[0])]
        if len(named) > MAX_TRACK_LINES:
            lines.append(f"  ... and {len(named) - MAX_TRACK_LINES} shorter tracks (see results.jsonl)")
        if None in self.tracks:  # --no-track: one line for all faces
            lines.append(self.tracks[None].line("untracked faces", noun="detection"))
        return lines

    def close(self) -> dict[str, str]:
        if self.bar is not None:
            self.bar.close()
        return {}


def _run_ray(args) -> int:
    """``--engine ray``: :func:`ferkit.infer.distributed.predict_ray` over every source given."""
    import logging

    from ferkit.app.args import recognizer_settings
    from ferkit.errors import UsageError
    from ferkit.infer.distributed import import_ray, predict_ray

    if args.show:
        raise UsageError("--show needs --engine local: the ray engine writes results only, no live window")
    if args.gpus_per_worker < 0:
        raise UsageError(f"--gpus-per-worker: expected a number >= 0, got {args.gpus_per_worker}")
    import_ray()  # first: a missing extra fails before anything else, and Ray Data sets up its loggers on import
    if not getattr(args, "verbose", False):
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # Ray Data's plan and timing lines: -v shows them
    out = Path(args.out) if args.out else _new_run_dir(DEFAULT_OUT)[0]
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= PROGRESS_EVERY_S or done == total:
            last[0] = now
            print(f"predict: {done}/{total} sources ({100 * done / total:.0f}%)", file=sys.stderr, flush=True)

    summary = predict_ray(
        args.source, out, address=args.address, workers=args.workers,
        recognizer=recognizer_settings(args),
        gpus_per_worker=args.gpus_per_worker, cpus_per_worker=float(args.threads or 1), batch_size=args.batch_size,
        detect_every=args.detect_every, track=not args.no_track, smooth=None if args.no_smooth else args.smooth,
        max_frames=args.max_frames, max_pixels=args.max_pixels, format=args.format, overwrite=args.overwrite,
        on_progress=progress,
    )
    print(f"{summary['sources']} source(s) ({summary['images']} image(s), {summary['videos']} video(s)): "
          f"{summary['done_before']} done before, {summary['processed']} now on {summary['workers']} Ray worker(s); "
          f"{summary['faces']} face(s) in {summary['frames']} frame(s)")
    for f in summary["skipped"]:
        print(f"skipped {f['file']}: {f['reason']} (a rerun tries it again)")
    print(f"wrote {summary['files']['results']}")
    print(f"wrote {summary['files']['summary']}")
    print(f"results saved to {out}")
    return 0


def run(args) -> int:
    if args.engine == "ray":
        return _run_ray(args)
    from ferkit.errors import UsageError

    given = [f"--{k.replace('_', '-')}" for k, default in RAY_ONLY.items() if getattr(args, k) != default]
    if given:
        raise UsageError(f"{', '.join(given)}: only with --engine ray")
    if len(args.source) > 1:
        raise UsageError(f"{len(args.source)} sources given; the local engine takes one (a folder holds many), "
                         "--engine ray takes several")
    args.source = args.source[0]
    return _run_local(args)


def _run_local(args) -> int:
    from ferkit.app.args import recognizer_settings
    from ferkit.imageio import pixel_limit
    from ferkit.infer.pipeline import SUMMARY_NAME, run_predict
    from ferkit.infer.sinks import JsonlSink, display_available

    if args.threads is not None:
        import cv2
        import torch

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    show = args.show
    if show:
        ok, why = display_available()
        if not ok:
            print(f"ferkit predict: --show: no live window, {why}; writing the outputs only", file=sys.stderr)
            show = False
    # Without --out, a pipe gets the results as JSON lines; the lines for people then go to stderr.
    json_lines = args.out is None and not sys.stdout.isatty()
    human = sys.stderr if json_lines else sys.stdout
    settings = recognizer_settings(args)  # checked now: a bad option fails before any folder is made

    made: list[Path] = []
    out = Path(args.out) if args.out else None
    if out is None:
        out, made = _new_run_dir(DEFAULT_OUT)
    report = _Reporter(human, args.max_frames)
    sinks = [JsonlSink(sys.stdout), report] if json_lines else [report]
    try:
        with pixel_limit(args.max_pixels):
            # run_predict opens the source (leaving --out out of it), then builds the recognizer from the settings
            summary = run_predict(
                args.source, out, settings, detect_every=args.detect_every, track=not args.no_track,
                smooth=None if args.no_smooth else args.smooth, max_frames=args.max_frames,
                annotate=not args.no_annotate, show=show, overwrite=args.overwrite, sinks=sinks,
            )
    except BaseException as exc:
        for d in made:  # a numbered folder made for this run, still empty: leave no trace
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        if isinstance(exc, KeyboardInterrupt) and (out / SUMMARY_NAME).is_file():  # Ctrl-C or SIGTERM
            print(f"stopped after {report.done} {report.unit}(s); the results up to there are saved in {out}",
                  file=human, flush=True)
        raise
    unit = report.unit

    def say(line: str) -> None:
        print(line, file=human)

    files = summary["files"]
    for line in report.track_lines():
        say(line)
    say(f"{summary['source']}: {summary['faces']} face(s) in {summary['frames']} {unit}(s), "
        f"{summary['fps']} {unit}s/s" + (" (interrupted)" if summary["interrupted"] else ""))
    for f in summary["skipped"]:
        say(f"skipped {f['reason']}")
    say(f"wrote {files['results']}")
    if "annotated" in files:
        say(f"wrote {summary['annotated_images']} annotated image(s) to {files['annotated']}")
    for key in ("video", "timeline_csv", "timeline_png", "summary"):
        if key in files:
            say(f"wrote {files[key]}")
    say(f"results saved to {out}")
    return 0
