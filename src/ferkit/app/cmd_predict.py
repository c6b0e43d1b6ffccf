"""``ferkit predict``: every face's expression in a photo, a folder, a video, a webcam or a stream."""

from __future__ import annotations

import argparse
import sys

from ferkit.app.args import add_model


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
        "  ferkit predict photo.jpg --out out/                       # one photo, the shipped model\n"
        "  ferkit predict photos/ --out out/                         # a folder, recursively\n"
        "  ferkit predict clip.mp4 --out out/ --detect-every 3       # a video, detector on every 3rd frame\n"
        "  ferkit predict 0 --out out/ --show                        # webcam 0 with a live window (Ctrl-C or q stops)\n"
        "  ferkit predict rtsp://camera/stream --out out/ --max-frames 3000\n"
        "  ferkit predict clip.mp4 --out out/ --model runs/vgg9 --detector yunet --yunet face_detection_yunet_2023mar.onnx\n"
        "In videos each face keeps a track_id while it stays in view, and its probabilities are smoothed over time\n"
        "(--smooth is the weight of the past; --no-smooth shows each frame's own prediction).",
    )
    p.add_argument("source", help="image file, folder, video file, webcam index (0, 1, ...) or stream URL (rtsp://, http://)")
    p.add_argument("--out", "-o", required=True, help="output folder (refused if it holds an earlier run, unless --overwrite)")
    add_model(p)
    p.add_argument("--detector", choices=("auto", "yunet", "haar"), default="auto",
                   help="face detector; auto = YuNet when its weights are at hand, else Haar (with a notice)")
    p.add_argument("--yunet", metavar="PATH",
                   help="another YuNet weights file (default: the one shipped in the package, or $FERKIT_YUNET)")
    p.add_argument("--backend", choices=("torch", "onnx", "onnx-int8"), default="torch",
                   help="classifier runtime: PyTorch, ONNX Runtime, or ONNX Runtime with the shipped int8 model (fastest on a CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for the classifier and OpenCV; if not given, the libraries' defaults "
                        "(1 is often fastest when other programs keep the cores busy)")
    p.add_argument("--detect-every", type=int, default=1, metavar="N",
                   help="videos: run the face detector on every N-th frame and follow the faces by optical flow in between")
    p.add_argument("--no-track", action="store_true", help="videos: no track ids and no smoothing")
    smooth = p.add_mutually_exclusive_group()
    smooth.add_argument("--smooth", type=_fraction, default=0.6, metavar="A",
                        help="videos: EMA weight of the past for each track's probabilities, in [0, 1)")
    smooth.add_argument("--no-smooth", action="store_true", help="videos: no temporal smoothing")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (videos, cameras, streams)")
    p.add_argument("--no-annotate", action="store_true",
                   help="write results.jsonl (and timeline) only, no annotated images or video")
    p.add_argument("--show", action="store_true", help="open a live window (needs a display and OpenCV with GUI support)")
    p.add_argument("--overwrite", action="store_true", help="write into an output folder that holds an earlier run")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from ferkit.infer.pipeline import display_available, run_predict
    from ferkit.infer.sources import open_source

    if args.detect_every < 1:
        raise ValueError(f"--detect-every must be >= 1, got {args.detect_every}")
    if args.max_frames is not None and args.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
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

    src = open_source(args.source, exclude=[args.out])
    total = src.frame_count
    if args.max_frames is not None:
        total = min(total, args.max_frames) if total else args.max_frames
    unit = "frame" if src.is_video else "image"
    bar = tqdm(total=total, unit=unit, desc="predict", dynamic_ncols=True, disable=None)
    try:
        summary = run_predict(
            src,
            args.out,
            model=args.model,
            detector=args.detector,
            yunet_path=args.yunet,
            backend=args.backend,
            device=args.device,
            threads=args.threads,
            detect_every=args.detect_every,
            track=not args.no_track,
            smooth=None if args.no_smooth else args.smooth,
            max_frames=args.max_frames,
            annotate=not args.no_annotate,
            show=show,
            overwrite=args.overwrite,
            on_frame=lambda _: bar.update(1),
        )
    finally:
        bar.close()
        src.close()

    files = summary["files"]
    print(f"{summary['source']}: {summary['faces']} face(s) in {summary['frames']} {unit}(s), "
          f"{summary['fps']} {unit}s/s" + (" (interrupted)" if summary["interrupted"] else ""))
    for f in summary["skipped"]:
        print(f"skipped {f['reason']}")
    print(f"wrote {files['results']}")
    if "annotated" in files:
        print(f"wrote {summary['annotated_images']} annotated image(s) to {files['annotated']}")
    for key in ("video", "timeline_csv", "timeline_png", "summary"):
        if key in files:
            print(f"wrote {files[key]}")
    return 0
