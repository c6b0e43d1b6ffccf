"""Greedy weight soup: average the weights of fine-tunes of one model, keeping each one only if PublicTest gains.

    python benchmarks/weight_soup.py default RUNS/member_crop RUNS/stage3.pt RUNS/robust16 RUNS/ferplus_kd

Model soups (Wortsman et al. 2022): checkpoints fine-tuned from one initialisation often lie in one basin,
where their weight average is one model, as fast as each, that can beat all of them. The candidates
(same architecture and classes) are scored alone on FER2013 PublicTest (the 48x48 crops, through
``Recognizer.classify_crops``); then, best first, each is added to the soup when the uniform average so
far plus it scores higher than the soup without it. The uniform soup of all candidates is printed too.
PrivateTest is never used; ``--save FILE`` writes the greedy soup for ``robustness.py`` and ``ferkit eval``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from common import DATA, classify, fer_split, label_map_for

from ferkit.engine.checkpoint import build_from_checkpoint, export_weights, interpolate_checkpoints, load_checkpoint
from ferkit.infer.recognizer import Recognizer, TorchClassifier


def soup(ckpts: list[dict]) -> dict:
    """The uniform weight average of ``ckpts`` (a running mean, the n-th checkpoint entering with weight 1/n),
    with the first checkpoint's preprocessing and crop geometry."""
    out = ckpts[0]
    for n, c in enumerate(ckpts[1:], start=2):
        out = interpolate_checkpoints(out, c, 1.0 / n)
    return {**out, "preprocess": ckpts[0]["preprocess"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="checkpoints, run folders or 'default': fine-tunes of one model")
    ap.add_argument("--data", default=str(DATA / "fer2013"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", help="write the greedy soup here (float16 weights, as shipped)")
    args = ap.parse_args()
    if len(args.models) < 2:
        ap.error("give two or more models")
    torch.set_num_threads(args.threads)
    images, y = fer_split(Path(args.data), "val", 0, seed=0)

    def accuracy(ckpt: dict) -> float:
        model, pre = build_from_checkpoint(ckpt)
        rec = Recognizer(classifier=TorchClassifier(model, pre, torch.device("cpu"), args.threads), detector="haar")
        return classify(rec, images, y, label_map_for(rec))["accuracy"] * 100

    ckpts = [load_checkpoint(m) for m in args.models]
    alone = [accuracy(c) for c in ckpts]
    for m, a in zip(args.models, alone):
        print(f"{a:6.2f} %  {m}", flush=True)
    order = list(np.argsort(alone)[::-1])
    chosen, best = [order[0]], alone[order[0]]
    for i in order[1:]:
        a = accuracy(soup([ckpts[j] for j in chosen + [i]]))
        keep = a > best
        print(f"{a:6.2f} %  soup + {args.models[i]}: {'kept' if keep else 'left out'} (soup so far {best:.2f} %)", flush=True)
        if keep:
            chosen, best = chosen + [i], a
    print(f"{accuracy(soup(ckpts)):6.2f} %  uniform soup of all {len(ckpts)}")
    print(f"greedy soup: {', '.join(args.models[i] for i in chosen)}: PublicTest {best:.2f} %")
    if args.save:
        export_weights(soup([ckpts[i] for i in chosen]), args.save, half=True)
        print(f"wrote {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
