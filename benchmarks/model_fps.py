"""Frames per second of ``Recognizer(model=M)`` with its defaults, for several models in one run.

    python benchmarks/model_fps.py default ferplus default,ferplus --frames 60 --rounds 3

Frames: the shared clip's frames (1-7 faces each), resized to 640x480 (a webcam's size), decoded once
before timing. Each model runs with ``Recognizer``'s defaults (backend "auto": the shipped int8 file
for the default model on a CPU, PyTorch otherwise), one frame per call (detection, crop,
classification of every face), after a warm-up, in alternating rounds so that the machine's load
drifts over all models alike. Prints frames/s per model and its ratio to the first; the README's
model table takes its frames/s column from this.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from ferkit.infer.recognizer import Recognizer

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "video" / "short_hamilton_clip.mp4"


def clip_frames(path: Path, n: int, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """``n`` frames spread over the clip, resized to ``size`` (w, h)."""
    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or n
    want = set(np.linspace(0, total - 1, n).astype(int).tolist())
    frames, i = [], 0
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        if i in want:
            frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
        i += 1
    cap.release()
    if not frames:
        raise FileNotFoundError(f"{path}: no frames read")
    return frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--frames", type=int, default=60, help="frames per round per model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--video", default=str(CLIP))
    args = ap.parse_args()

    frames = clip_frames(Path(args.video), args.frames)
    recs = {m: Recognizer(model=m) for m in args.models}
    spent = {m: 0.0 for m in args.models}
    faces = {m: 0 for m in args.models}
    for rec in recs.values():
        for f in frames[:5]:
            rec(f)  # warm-up
    for _ in range(args.rounds):
        for m, rec in recs.items():
            t0 = time.perf_counter()
            for f in frames:
                faces[m] += len(rec(f))
            spent[m] += time.perf_counter() - t0
    n = args.frames * args.rounds
    first = args.models[0]
    print("| model | backend | frames/s (640x480, clip frames) | vs first | faces per frame |\n|---|---|---:|---:|---:|")
    for m, rec in recs.items():
        fps = n / spent[m]
        print(f"| {m} | {rec.backend} | {fps:.1f} | {spent[first] / spent[m]:.2f}x | {faces[m] / n:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
