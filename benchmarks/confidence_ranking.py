"""How well does a confidence score tell right answers from wrong ones on real faces?

    python benchmarks/confidence_ranking.py            # default and ferplus, SFEW-dev and JAFFE-dev, end to end

For each dev set (YuNet, the model's calibrated crop, the largest face; no face found = wrong, confidence 0),
the accuracy on the most confident half of the faces under several ranking scores: the top probability
(what ``--min-confidence`` thresholds), the margin between the top two, the entropy, agreement with the
mirror image (flip TTA), the face-quality flag, and agreement with a second model. Prints a Markdown table
(docs/calibration.md has the run of 2026-12-03).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from common import DATA

from ferkit.data.readers import load_dataset
from ferkit.infer.crosseval import largest_faces
from ferkit.infer.recognizer import Recognizer


def top_share(score: np.ndarray, correct: np.ndarray, share: float = 0.5) -> float:
    """Accuracy on the ``share`` of faces with the highest ``score`` (ties in order)."""
    k = max(1, int(round(share * len(score))))
    return float(correct[np.argsort(-score, kind="stable")[:k]].mean())


def probs_on(rec: Recognizer, images: list, names: tuple[str, ...]) -> tuple[np.ndarray, list]:
    """Probabilities over ``names`` (the first model's classes; others renormalised over them) and the faces."""
    p, faces = largest_faces(rec, images)
    idx = [rec.label_names.index(n) for n in names]
    q = p[:, idx]
    s = q.sum(1, keepdims=True)
    return np.where(s > 0, q / np.maximum(s, 1e-12), 0.0), faces


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--second", default="ferplus", help="the model whose agreement is tried as a score")
    ap.add_argument("--sets", default=f"{DATA / 'sfew-dev'},{DATA / 'jaffe-dev'}")
    args = ap.parse_args()

    rec = Recognizer(args.model, detector="yunet", backend="torch", device="cpu", threads=1)
    flip = Recognizer(args.model, detector="yunet", backend="torch", device="cpu", threads=1, tta="flip")
    other = Recognizer(args.second, detector="yunet", backend="torch", device="cpu", threads=1)
    names = rec.label_names
    rows: dict[str, list[str]] = {}
    sets = args.sets.split(",")
    for path in sets:
        ds = load_dataset(path).subset("val")
        y = np.array([names.index(ds.label_names[c]) for c in ds.labels])
        images = list(ds.images)
        p, faces = probs_on(rec, images, names)
        pf, _ = probs_on(flip, images, names)
        po, _ = probs_on(other, images, names)
        top = p.argmax(1)
        correct = (top == y) & (p.sum(1) > 0)
        s = np.sort(p, 1)
        low = np.array([bool(f.low_quality) if f is not None else True for f in faces])
        scores = {
            "top probability (what --min-confidence uses)": s[:, -1],
            "margin between the top two": s[:, -1] - s[:, -2],
            "negative entropy": (p * np.log(np.clip(p, 1e-12, 1))).sum(1),
            "top probability if the mirror image agrees, else 0": s[:, -1] * (pf.argmax(1) == top),
            "min of the face's and its mirror image's probability of the class": np.minimum(s[:, -1], pf[np.arange(len(p)), top]),
            "top probability x 0.8 when low_quality": s[:, -1] * np.where(low, 0.8, 1.0),
            f"mean of its and {args.second}'s probability of its class": (s[:, -1] + po[np.arange(len(p)), top]) / 2,
        }
        for name, sc in scores.items():
            rows.setdefault(name, []).append(f"{100 * top_share(sc, correct):.1f} %")
    heads = [Path(p).name for p in sets]
    print(f"| ranking score ({args.model}) | " + " | ".join(f"{h}, most confident 50 %" for h in heads) + " |")
    print("| --- |" + " ---: |" * len(heads))
    for name, vals in rows.items():
        print(f"| {name} | " + " | ".join(vals) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
