"""Training throughput: the real data path against the model-only step, in one process.

The data path is everything ferkit adds to a training step: indexing the
decoded uint8 cache, conversion to float, batched augmentation on the device,
normalisation. The reference is the same model, optimizer, batch size and
precision stepping on a batch already in memory. Both are timed in alternating
rounds in one process (this machine is shared and noisy) and the medians are
compared.

    python benchmarks/train_throughput.py --data ../shared/data/fer2013 [--recipe default_fer2013] [--threads 2]

Target: the data path adds at most 15% to the step time on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from ferkit.engine.config import load_config
from ferkit.engine.trainer import Trainer
from ferkit.runtime import autocast


def model_only_epoch(tr: Trainer, steps: int) -> float:
    """Images/s of ``steps`` optimizer steps on one fixed, already-normalised batch."""
    bs = tr.cfg.batch_size
    x = tr.transform(tr.train_t.x[:bs])  # prepared once, outside the timing
    y = tr.train_t.y[:bs]
    tr.net.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        with autocast(tr.device, tr.amp):
            logits = tr.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=tr.cfg.label_smoothing)
        tr.opt.zero_grad(set_to_none=True)
        loss.backward()
        tr.opt.step()
        loss.item()  # the real loop syncs on the loss every step too
    return steps * bs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/fer2013")
    ap.add_argument("--recipe", default="default_fer2013")
    ap.add_argument("--images", type=int, default=3840, help="training images per timed epoch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch default)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()

    cfg = load_config(args.recipe, [f"data={args.data}", f"train_limit={args.images}", "val_limit=100", f"threads={args.threads}"])
    t0 = time.perf_counter()
    tr = Trainer(cfg, tempfile.mkdtemp(prefix="ferkit-bench-"))
    setup_s = time.perf_counter() - t0
    steps = tr.steps_per_epoch
    tr.train_one_epoch()  # warm-up (allocator, oneDNN kernels)
    real, ref = [], []
    for _ in range(args.rounds):
        real.append(tr.train_one_epoch()["train_img_s"])
        ref.append(model_only_epoch(tr, steps))
    r, m = statistics.median(real), statistics.median(ref)
    out = {
        "model": cfg.model,
        "model_kwargs": cfg.model_kwargs,
        "batch_size": cfg.batch_size,
        "amp": str(tr.amp),
        "threads": torch.get_num_threads(),
        "augment": cfg.augment,
        "images_per_epoch": steps * cfg.batch_size,
        "setup_s (dataset from cache + model)": round(setup_s, 2),
        "real_epoch_img_s": [round(v, 1) for v in real],
        "model_only_img_s": [round(v, 1) for v in ref],
        "median_real_img_s": round(r, 1),
        "median_model_only_img_s": round(m, 1),
        "data_path_overhead": round(m / r - 1, 4),  # extra time per image, relative to the model step
    }
    print(json.dumps(out, indent=2))
    print(f"data path adds {100 * (m / r - 1):.1f}% to the model step (target <= 15%)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
