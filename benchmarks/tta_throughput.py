"""Test-time-augmentation throughput: how many views go through the model at once.

``predict_probs`` (evaluation, ``ferkit eval --tta``, the trainer's validation and test figures and
the teacher pass of ``distill``) feeds the model at most ``batch_size`` views per forward pass, and on
a CPU at most ``CPU_VIEWS_PER_FORWARD``. This script times it on real FER2013 crops (PrivateTest
unless ``--split``) with the shipped model, in alternating rounds in one process, at several
views-per-forward sizes; the first of ``--sizes``, 5120, is what the code fed before that cap
(512 images x 10 views).

    python benchmarks/tta_throughput.py --data ../shared/data/fer2013 [--threads 2] [--images 1024]
    python benchmarks/tta_throughput.py --split train --images 0 --sizes 64 --rounds 1   # a distill teacher pass
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from ferkit.data.augment import TTA_VIEWS
from ferkit.data.readers import load_dataset
from ferkit.engine import steps as trainer  # predict_probs and its CPU_VIEWS_PER_FORWARD cap live in engine.steps
from ferkit.engine.checkpoint import load_model
from ferkit.engine.steps import images_to_tensor, predict_probs
from ferkit.runtime import autocast_dtype


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/fer2013", help="FER2013 (csv or image folders)")
    ap.add_argument("--model", default="default", help="checkpoint, run folder or 'default'")
    ap.add_argument("--tta", default="tencrop", choices=["flip", "tencrop"])
    ap.add_argument("--sizes", default="5120,512,128,64,32", help="views per forward pass to compare")
    ap.add_argument("--split", default="test", help="split whose images are used (test: PrivateTest; train: Training)")
    ap.add_argument("--images", type=int, default=1024, help="images per timing (0: the whole split)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, pre = load_model(args.model)
    model = model.to(memory_format=torch.channels_last)
    images = load_dataset(args.data).subset(args.split).images
    x = images_to_tensor(images[: args.images] if args.images else images)
    amp = autocast_dtype("auto", torch.device("cpu"))
    views = len(x) * TTA_VIEWS[args.tta]
    sizes = [int(s) for s in args.sizes.split(",")]
    times: dict[int, list[float]] = {s: [] for s in sizes}
    default_cap = trainer.CPU_VIEWS_PER_FORWARD
    predict_probs(model, x[:64], pre, args.tta, 512, amp, True)  # warm-up
    for _ in range(args.rounds):
        for s in sizes:
            trainer.CPU_VIEWS_PER_FORWARD = s  # lift or set the cap for this size
            t0 = time.perf_counter()
            predict_probs(model, x, pre, args.tta, s, amp, True)
            times[s].append(time.perf_counter() - t0)
    ref = statistics.median(times[sizes[0]])
    print(f"{args.tta}, {len(x)} {args.split} images ({views} views), {args.threads} threads, amp {amp}, median of {args.rounds} rounds; "
          f"ferkit's CPU default: {default_cap} views per forward")
    print("| views per forward | views/s | seconds | speed-up vs first |")
    print("|---:|---:|---:|---:|")
    for s in sizes:
        t = statistics.median(times[s])
        print(f"| {s} | {views / t:.0f} | {t:.1f} | {ref / t:.2f} |")


if __name__ == "__main__":
    main()
