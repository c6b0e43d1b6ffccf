"""What YuNet's score threshold trades: faces found on the end-to-end proxy against extra boxes on real video.

    python benchmarks/detector_threshold.py --thresholds 0.6,0.5,0.4,0.3 --sheet runs/bench/below_threshold.png

For each threshold: the share of FER2013 PublicTest faces found on the proxy's scenes (``robustness.py``'s
canvas; the box over the centre), and how many boxes the detector returns on every frame of the shared
video clip. A box the higher threshold rejects is a face found only when it is a face: ``--sheet`` writes
a contact sheet of the clip's boxes scored between the lowest threshold and ``--current`` (every
``--every``-th frame), to look at what a lower threshold would add.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from common import DATA, detect_scenes, fer_split

from ferkit.infer.crop_search import proxy_canvas
from ferkit.infer.detectors import create_detector


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--thresholds", default="0.6,0.5,0.4,0.3,0.2", help="comma list")
    ap.add_argument("--current", type=float, default=0.6, help="the shipped threshold (create_detector's default)")
    ap.add_argument("--data", default=str(DATA / "fer2013"))
    ap.add_argument("--video", default=str(DATA / "video" / "short_hamilton_clip.mp4"))
    ap.add_argument("--sheet", help="PNG contact sheet of the clip's boxes below --current")
    ap.add_argument("--every", type=int, default=5, help="with --sheet: every N-th frame")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    thresholds = sorted((float(t) for t in args.thresholds.split(",")), reverse=True)
    det = create_detector("yunet", score_threshold=min(thresholds), threads=args.threads)

    images, y = fer_split(Path(args.data), "val", 0, seed=0)
    scenes = detect_scenes([proxy_canvas(face) for face in images], y, det, "centre")
    centre = np.array([s.det.score if s.det else 0.0 for s in scenes])  # 0: no box over the centre at the lowest threshold

    cap = cv2.VideoCapture(args.video)
    if not cap.isOpened():
        raise SystemExit(f"{args.video}: cannot open the video")
    scores, tiles, frames = [], [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames += 1
        for d in det.detect(frame):
            scores.append(d.score)
            if args.sheet and d.score < args.current and frames % args.every == 0:
                x, y, bw, bh = (int(v) for v in d.box)
                tile = cv2.resize(frame[max(y, 0) : y + bh, max(x, 0) : x + bw], (64, 64))
                cv2.putText(tile, f"{d.score:.2f}", (1, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 255, 0), 1)
                tiles.append(tile)
    scores = np.array(scores)

    print(f"| threshold | proxy PublicTest faces found ({len(centre)}) | boxes on {Path(args.video).name} ({frames} frames) |")
    print("| ---: | ---: | ---: |")
    for t in thresholds:
        print(f"| {t:g} | {(centre >= t).mean() * 100:.2f} % | {(scores >= t).sum()} |")
    if args.sheet and tiles:
        n = len(tiles)
        tiles += [np.zeros_like(tiles[0])] * (-n % 10)
        cv2.imwrite(args.sheet, np.vstack([np.hstack(tiles[r : r + 10]) for r in range(0, len(tiles), 10)]))
        print(f"wrote {args.sheet}: {n} boxes scored below {args.current}, from every {args.every}th frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
