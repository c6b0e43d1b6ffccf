"""Choose an ensemble: every subset of some trained models, scored on what may be used to choose.

    python benchmarks/ensemble_select.py default runs/member_crop runs/ferplus stage3.pt --out runs/bench/ensembles.json

Each candidate classifies, once (cached by the model's content hash under ``--cache``):

- FER2013 PublicTest and PrivateTest, the 48x48 crops as they are;
- SFEW-dev end to end (848 film faces; YuNet, the largest face, the crop geometry of ``--geometry``;
  a face not found counts as wrong).

Then every subset of up to ``--max-size`` candidates is scored by averaging its members' probabilities
over the 7 FER2013 classes, which is what ``--model a,b,c`` computes (:class:`ferkit.models.ensemble.Ensemble`:
an 8-class FER+ member's probabilities are renormalised over the 7 shared classes). The subset chosen
has the best PublicTest accuracy among those at least as good as the first candidate on SFEW-dev;
PrivateTest is printed beside each row, never used to choose. Confirm the choice with
``ferkit eval --model a,b,c --split test`` (that is the figure to report).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from robustness import FER2013, SHARED, detect_scenes, fer_split, label_map_for, sfew_images, to_fer2013

from ferkit.engine.checkpoint import model_digest
from ferkit.engine.preprocess import CropGeometry
from ferkit.infer.align import crop_faces
from ferkit.infer.detectors import create_detector
from ferkit.infer.recognizer import Recognizer
from ferkit.runtime import cache_dir


def fer2013_probs(rec: Recognizer, images: list[np.ndarray]) -> np.ndarray:
    """The model's probabilities over FER2013's 7 classes (renormalised over them), (N, 7)."""
    lmap = label_map_for(rec)
    probs = rec.classify_crops(images) if images else np.zeros((0, len(lmap)), np.float32)
    return to_fer2013(probs, lmap)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="candidates: 'default', 'ferplus', checkpoints or run folders; the first "
                    "is the reference an ensemble must match on SFEW-dev")
    ap.add_argument("--max-size", type=int, default=4, help="largest ensemble tried")
    ap.add_argument("--data", default=str(SHARED / "data" / "fer2013"))
    ap.add_argument("--sfew", default=str(SHARED / "data" / "sfew-dev"))
    ap.add_argument("--geometry", default="-0.05,0,1", help="SFEW crop: margin, offset_y, align 1/0 (the shipped model's)")
    ap.add_argument("--cache", default=str(cache_dir() / "ensemble_select"), help="per-model probabilities")
    ap.add_argument("--out", help="write every subset's figures here as JSON")
    args = ap.parse_args()

    fer = {s: fer_split(Path(args.data), s, 0, seed=0) for s in ("val", "test")}
    sfew_imgs, sfew_y = sfew_images(Path(args.sfew))
    m, o, a = (float(v) for v in args.geometry.split(","))
    geo = CropGeometry(m, o, bool(a))
    crops = None  # SFEW-dev face crops, detected once, only if some candidate is not cached
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    probs: dict[str, dict[str, np.ndarray]] = {}
    for spec in args.models:
        f = cache / f"{model_digest(spec)[:20]}-{args.geometry}.npz"
        if not f.is_file():
            if crops is None:
                scenes = detect_scenes(sfew_imgs, sfew_y, create_detector("yunet"), "largest")
                found = np.array([s.det is not None for s in scenes])
                crops = (found, [crop_faces(s.image, [s.det], geo.margin, geo.offset_y, geo.align)[0]
                                 for s in scenes if s.det is not None])
            rec = Recognizer(model=spec, backend="torch", detector="haar", device="cpu", batch_size=256)
            sf = np.zeros((len(sfew_y), len(FER2013)), np.float32)
            sf[crops[0]] = fer2013_probs(rec, crops[1])  # a face not found: all zeros, never right
            np.savez(f, val=fer2013_probs(rec, fer["val"][0]), test=fer2013_probs(rec, fer["test"][0]), sfew=sf)
        probs[spec] = dict(np.load(f))
        print(f"{spec}: cached in {f}", file=sys.stderr)

    ys = {"val": fer["val"][1], "test": fer["test"][1], "sfew": sfew_y}
    rows = []
    for size in range(1, min(args.max_size, len(args.models)) + 1):
        for combo in itertools.combinations(args.models, size):
            row = {"models": list(combo)}
            for part, y in ys.items():
                p = sum(probs[c][part] for c in combo) / size
                row[part] = float(((p.sum(1) > 0) & (p.argmax(1) == y)).mean())
            rows.append(row)
    ref = rows[0]["sfew"]  # the first candidate alone
    eligible = [r for r in rows if r["sfew"] >= ref]
    best = max(eligible, key=lambda r: r["val"])
    print("| models | PublicTest | SFEW-dev e2e | PrivateTest |\n| --- | ---: | ---: | ---: |")
    for r in sorted(rows, key=lambda r: -r["val"]):
        mark = " **chosen**" if r is best else ""
        print(f"| {', '.join(r['models'])}{mark} | {100 * r['val']:.2f} % | {100 * r['sfew']:.2f} % | {100 * r['test']:.2f} % |")
    print(f"\nchosen (best PublicTest with SFEW-dev >= {100 * ref:.2f} %): --model {','.join(best['models'])}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"rows": rows, "chosen": best, "geometry": args.geometry}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
