"""Choose a model or ensemble on real faces: every subset of some candidates, ranked by the real-face score.

    python benchmarks/ensemble_select.py default ferplus runs/joint/epochs/epoch_004.pt --out runs/bench/select.json

Each candidate is scored once (cached by its content hash under ``--cache``) with the library's own paths:

- FER2013 PublicTest and PrivateTest, the 48x48 crops (:func:`ferkit.engine.evaluate.predict_split`);
- SFEW-dev (film faces) and JAFFE-dev (posed studio photos) end to end (:func:`ferkit.infer.crosseval.predict_photos`:
  YuNet, the candidate's own calibrated crop, the largest face; a face not found counts wrong).

A subset averages its members' probabilities over FER2013's 7 classes (an 8-class FER+ member renormalised over
them), as ``--model a,b,c`` does; end to end each member here keeps its own crop, where ``--model a,b,c`` crops
as the first member does, so confirm a choice with ``ferkit eval --model a,b,c --data ... --photos ...``.

The **real-face score** is the mean of SFEW-dev and JAFFE-dev accuracy. A subset is eligible when its PublicTest
accuracy is at most ``--gate`` points below the first candidate's (the reference) and neither dev set is more than
``--max-drop`` points below the reference's; the eligible subset with the best real-face score is chosen.
PrivateTest is printed, never used to choose. The shipping rule of ``docs/models.md``: a new default must beat the
reference's real-face score by at least 3 points.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from common import DATA

from ferkit.engine.checkpoint import model_digest
from ferkit.engine.evaluate import predict_split
from ferkit.infer.crosseval import photo_settings, predict_photos
from ferkit.labels import FER2013
from ferkit.runtime import cache_dir

PARTS = ("val", "test", "sfew", "jaffe")


def to_fer2013(probs: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """``(N, K)`` over ``names`` -> ``(N, 7)`` over FER2013's classes, renormalised (rows of zeros stay zero)."""
    out = np.zeros((len(probs), len(FER2013)), np.float32)
    for j, n in enumerate(names):
        if n in FER2013:
            out[:, FER2013.index(n)] = probs[:, j]
    s = out.sum(1, keepdims=True)
    return np.where(s > 0, out / np.maximum(s, 1e-12), 0.0)


def score_candidate(spec: str, fer: str, sfew: str, jaffe: str) -> dict[str, np.ndarray]:
    """Probabilities over FER2013's classes and the labels, per part."""
    out = {}
    for part, split in (("val", "val"), ("test", "test")):
        sp = predict_split(spec, fer, split, device="cpu", ferplus_mode="off")
        out[part], out[part + "_y"] = to_fer2013(sp.probs["none"], sp.pre.label_names), _fer_labels(sp)
    for part, data in (("sfew", sfew), ("jaffe", jaffe)):
        sp, _, _ = predict_photos(photo_settings(spec, threads=1), data, "val")
        out[part], out[part + "_y"] = to_fer2013(sp.probs["none"], sp.pre.label_names), _fer_labels(sp)
    return out


def _fer_labels(sp) -> np.ndarray:
    return np.array([FER2013.index(sp.part.label_names[c]) for c in sp.part.labels])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="candidates: 'default', 'ferplus', checkpoints or run folders; the first "
                    "is the reference")
    ap.add_argument("--max-size", type=int, default=3, help="largest ensemble tried")
    ap.add_argument("--gate", type=float, default=2.0, help="PublicTest points a choice may lose against the reference")
    ap.add_argument("--max-drop", type=float, default=2.0, help="points either dev set may lose against the reference")
    ap.add_argument("--fer", default=str(DATA / "fer2013"))
    ap.add_argument("--sfew", default=str(DATA / "sfew-dev"))
    ap.add_argument("--jaffe", default=str(DATA / "jaffe-dev"))
    ap.add_argument("--cache", default=str(cache_dir() / "ensemble_select"), help="per-model probabilities")
    ap.add_argument("--out", help="write every subset's figures here as JSON")
    args = ap.parse_args()

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    probs: dict[str, dict[str, np.ndarray]] = {}
    for spec in args.models:
        f = cache / f"{model_digest(spec)[:20]}-v2.npz"
        if not f.is_file():
            np.savez(f, **score_candidate(spec, args.fer, args.sfew, args.jaffe))
        probs[spec] = dict(np.load(f))
        print(f"{spec}: cached in {f}", file=sys.stderr)

    rows = []
    for size in range(1, min(args.max_size, len(args.models)) + 1):
        for combo in itertools.combinations(args.models, size):
            row = {"models": list(combo)}
            for part in PARTS:
                p = sum(probs[c][part] for c in combo) / size
                y = probs[combo[0]][part + "_y"]
                row[part] = float(((p.sum(1) > 0) & (p.argmax(1) == y)).mean())
            row["real"] = (row["sfew"] + row["jaffe"]) / 2
            rows.append(row)
    ref = rows[0]
    eligible = [r for r in rows if r["val"] >= ref["val"] - args.gate / 100
                and min(r["sfew"] - ref["sfew"], r["jaffe"] - ref["jaffe"]) >= -args.max_drop / 100]
    best = max(eligible, key=lambda r: r["real"])
    print("| models | PublicTest | SFEW-dev | JAFFE-dev | real-face score | PrivateTest |\n|---|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: -r["real"]):
        mark = " **chosen**" if r is best else ("" if r in eligible else " (not eligible)")
        print(f"| {', '.join(r['models'])}{mark} | {100 * r['val']:.2f} % | {100 * r['sfew']:.2f} % | "
              f"{100 * r['jaffe']:.2f} % | {100 * r['real']:.2f} | {100 * r['test']:.2f} % |")
    gain = 100 * (best["real"] - ref["real"])
    print(f"\nchosen: --model {','.join(best['models'])} (real-face score {100 * best['real']:.2f}, {gain:+.2f} points "
          f"against {ref['models'][0]}; the shipping rule asks for +3)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"rows": rows, "chosen": best, "gate": args.gate, "max_drop": args.max_drop},
                                             indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
