"""Images/s of the ray engine (``ferkit.predict_ray``) with 1 and 2 workers against the single process.

The input is a temporary folder of copies of real images: the shared photos (2-6 faces each, 0.3-1 MP) and
FER2013 test crops (48x48, mostly no face for YuNet at that size), so detection and classification both count.
Each configuration recognises the whole folder from scratch, end to end: the single process loads its model
and runs ``run_predict`` (what ``ferkit predict FOLDER --no-annotate`` does); the ray runs start their actors
(one model each) on a Ray that is already up, as on a cluster, and write results.jsonl. ``steady`` leaves out
the start (model loading, actor start-up): images/s from the first finished image (single process) or batch
(ray) to the last.

    python benchmarks/ray_throughput.py                              # 25 copies of the 4 photos + 100 crops
    python benchmarks/ray_throughput.py --copies 100 --crops 400 --out ray_throughput.md
    python benchmarks/ray_throughput.py --address auto --workers 1,2,8,32     # on a running Ray cluster

Needs ``pip install -e ".[ray]"``. Timings taken while something else uses the CPU are not comparable:
the table states the load average at the start.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import SHARED


def make_folder(root: Path, copies: int, crops: int) -> int:
    """``copies`` copies of each shared photo and ``crops`` FER2013 test crops under ``root``; the image count."""
    photos = sorted((SHARED / "data" / "photos").glob("*.jpg"))
    if not photos:
        raise SystemExit(f"no photos in {SHARED / 'data' / 'photos'}; set FERKIT_SHARED to the shared/ folder")
    for i in range(copies):
        d = root / "photos" / f"{i:04d}"
        d.mkdir(parents=True)
        for p in photos:
            shutil.copy(p, d / p.name)
    fer = sorted((SHARED / "data" / "fer2013" / "test").rglob("*.jpg"))[:crops]
    for p in fer:
        (root / "fer" / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / "fer" / p.parent.name / p.name)
    return copies * len(photos) + len(fer)


def single_process(folder: Path, out: Path, threads: int, yunet: str | None) -> tuple[float, float]:
    """(wall seconds, steady images/s) of ``run_predict`` over ``folder`` with ``threads`` model threads."""
    import cv2

    from ferkit.infer.pipeline import run_predict
    from ferkit.infer.recognizer import Recognizer
    from ferkit.infer.sinks import Sink

    class Clock(Sink):
        def write(self, result) -> None:
            marks.append(time.perf_counter())

    cv2.setNumThreads(threads)
    marks: list[float] = []
    t0 = time.perf_counter()
    rec = Recognizer(detector="yunet" if yunet else "auto", yunet_path=yunet, device="cpu", threads=threads)
    run_predict(folder, out, rec, annotate=False, sinks=[Clock()])
    wall = time.perf_counter() - t0
    return wall, (len(marks) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 else float("nan")


def ray_run(folder: Path, out: Path, workers: int, batch_size: int, yunet: str | None) -> tuple[float, float]:
    """(wall seconds, steady images/s) of ``predict_ray`` over ``folder`` on ``workers`` actors of 1 CPU each."""
    from ferkit.infer.distributed import predict_ray
    from ferkit.infer.recognizer import RecognizerSettings

    marks: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    settings = RecognizerSettings(detector="yunet" if yunet else "auto", yunet_path=yunet, device="cpu")
    predict_ray([folder], out, workers=workers, batch_size=batch_size, recognizer=settings, on_progress=lambda done, _: marks.append((time.perf_counter(), done)))
    wall = time.perf_counter() - t0
    if len(marks) < 2:
        return wall, float("nan")
    (t_first, done_first), (t_last, done_last) = marks[0], marks[-1]
    return wall, (done_last - done_first) / (t_last - t_first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=25, help="copies of each of the 4 shared photos")
    ap.add_argument("--crops", type=int, default=100, help="FER2013 test crops added")
    ap.add_argument("--workers", default="1,2", help="comma list of Ray worker counts to run")
    ap.add_argument("--batch-size", type=int, default=8, help="images per actor call")
    ap.add_argument("--address", help="a running Ray cluster (auto, ray://HEAD:10001); if not given, a local Ray")
    ap.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (ignored with --address)")
    ap.add_argument("--yunet", default=str(SHARED / "models" / "face_detection_yunet_2023mar.onnx"),
                    help="YuNet weights (default: ../shared's copy; '' for the detector that ships with ferkit)")
    ap.add_argument("--out", help="also write the Markdown table to this file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from ferkit.infer.distributed import import_ray

    ray = import_ray()
    yunet = args.yunet or None
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ferkit_ray_bench_") as tmp:
        folder = Path(tmp) / "in"
        n = make_folder(folder, args.copies, args.crops)
        rows = []
        for threads in (1, 2):
            wall, steady = single_process(folder, Path(tmp) / f"local{threads}", threads, yunet)
            rows.append((f"single process, {threads} thread{'s' if threads > 1 else ''}", wall, steady))
            print(f"{rows[-1][0]}: {n / wall:.1f} images/s", flush=True)
        if args.address:
            ray.init(address=args.address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        try:
            for w in (int(v) for v in args.workers.split(",")):
                wall, steady = ray_run(folder, Path(tmp) / f"ray{w}", w, args.batch_size, yunet)
                rows.append((f"ray, {w} worker{'s' if w > 1 else ''} x 1 thread", wall, steady))
                print(f"{rows[-1][0]}: {n / wall:.1f} images/s", flush=True)
        finally:
            ray.shutdown()

    base = n / rows[0][1]
    lines = [(f"{n} images ({args.copies} copies of the 4 shared photos, {args.crops} FER2013 crops), YuNet, CPU; "
              f"{os.cpu_count()} cores, load average {load:.1f} at the start"),
             "", "| engine | wall s | images/s | vs single process, 1 thread | steady images/s |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {wall:.1f} | {n / wall:.1f} | {n / wall / base:.2f}x | {steady:.1f} |" for name, wall, steady in rows]
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        Path(args.out).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
