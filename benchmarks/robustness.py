"""How well a model holds up outside FER2013's own crops: image changes, the deployment path, real film faces.

    python benchmarks/robustness.py --model default --out runs/bench/robustness.json
    python benchmarks/robustness.py --model RUN_DIR --limit 500 --skip-e2e          # a quick look
    python benchmarks/robustness.py --model RUN_DIR --calibrate --skip-changes   # the crop each detector would get

Every number goes through the deployment code (``Recognizer.classify_crops``, which applies the
checkpoint's own Preprocess; ``Recognizer.detect`` and ``crop_faces`` for the end-to-end parts), with
the torch backend unless ``--backend`` says otherwise.

What is measured
----------------
1. **Image changes**, on FER2013 PrivateTest (3,589 48x48 crops; ``--limit N`` a seeded N of them),
   accuracy and macro-F1 beside the clean figure:
   - framing: zoom 0.8-1.4 (above 1 the face is zoomed out: the crop is padded by replicating its
     border to ``zoom`` times its side and resized back to 48x48; below 1 a centre crop of ``zoom``
     times the side is resized up) and shifts of 10 % of the side left, right, up and down
     (replicated border);
   - rotation by -20 and +20 degrees (replicated border);
   - Gaussian blur (sigma 1.0 px at 48 px), Gaussian noise (std 10 grey levels), JPEG quality 20;
   - low light (gamma 2.5: pixel = 255 (p / 255) ** 2.5) and low contrast (40 % of the contrast
     around the image's mean);
   - low resolution: the face at 24 px, resized back up.
2. **End-to-end proxy**: every PublicTest and PrivateTest face placed on a larger canvas and put
   through the real detector -> alignment -> crop -> model. The 48x48 face is upscaled 3x
   (bicubic, 144 px) into the middle of a 320x320 canvas whose surroundings are its own
   mirror image, blurred (sigma 12 px) so that no second sharp face appears. The face scored is the
   detection that covers the canvas centre; a face not found counts as wrong in ``accuracy`` and
   is left out of ``accuracy_found``. Per detector (YuNet, Haar).
3. **SFEW-dev end to end** (848 film faces, ``../shared/data/sfew-dev``; never trained on): each
   143x181 image as it is, through the detector; the largest face is scored, none found counts as
   wrong. Also the whole image squashed to the model's input with no detector (what
   ``ferkit eval --data sfew-dev --split val`` reports).
4. ``--interpolate A --alphas 0,0.25,...``: weight-space interpolation between checkpoint A and ``--model`` B
   (``ferkit.engine.checkpoint.interpolate_checkpoints``: (1 - alpha) A + alpha B, for B fine-tuned from A).
   With several alphas it only compares them, on what may be used to choose: PublicTest accuracy clean and
   zoomed out 1.3x, the end-to-end proxy's PublicTest and SFEW-dev (YuNet, one crop geometry for all:
   ``--geometry``). With one alpha the interpolated model is what the rest of the run measures (``ferkit export
   --interpolate`` writes it).
5. ``--calibrate``: the crop geometry (margin, vertical offset, alignment on/off) per detector,
   chosen by the mean of the end-to-end proxy's **PublicTest** accuracy and SFEW-dev's (PrivateTest
   is never used to choose), by the library's search (``ferkit.infer.crop_search``); the rest of the
   run then measures the chosen crops. To write a model with them: ``ferkit calibrate --detector D
   --crop-proxy FER2013 --crop-photos SFEW --out FILE`` (the same search).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from common import DATA, classify, detect_scenes, fer_split, label_map_for, pct, score_scenes, sfew_images

from ferkit.engine.preprocess import CropGeometry
from ferkit.infer.crop_search import proxy_canvas, search_crop_geometry
from ferkit.infer.crosseval import photo_settings
from ferkit.infer.detectors import create_detector
from ferkit.infer.recognizer import Recognizer

# ------------------------------------------------------------------ image changes (uint8 grey 48x48 in and out)


def _pad_to(img: np.ndarray, side: int, dx: int = 0, dy: int = 0) -> np.ndarray:
    """``img`` centred (then moved by dx, dy) in a ``side`` square, the rest replicating its border."""
    h, w = img.shape[:2]
    left, top = (side - w) // 2 + dx, (side - h) // 2 + dy
    m = np.float32([[1, 0, left], [0, 1, top]])
    return cv2.warpAffine(img, m, (side, side), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


def zoom(img: np.ndarray, z: float) -> np.ndarray:
    s = img.shape[0]
    if z >= 1.0:
        big = _pad_to(img, int(round(s * z)))
        return cv2.resize(big, (s, s), interpolation=cv2.INTER_AREA)
    c = int(round(s * z))
    o = (s - c) // 2
    return cv2.resize(img[o : o + c, o : o + c], (s, s), interpolation=cv2.INTER_LINEAR)


def shift(img: np.ndarray, fx: float, fy: float) -> np.ndarray:
    s = img.shape[0]
    return _pad_to(img, s, int(round(fx * s)), int(round(fy * s)))


def rotate(img: np.ndarray, deg: float) -> np.ndarray:
    s = img.shape[0]
    m = cv2.getRotationMatrix2D(((s - 1) / 2, (s - 1) / 2), deg, 1.0)
    return cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def blur(img: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma)


def noise(img: np.ndarray, std: float = 10.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, std, img.shape), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int = 20) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def gamma(img: np.ndarray, g: float = 2.5) -> np.ndarray:
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** g, 0, 255).astype(np.uint8)
    return lut[img]


def low_contrast(img: np.ndarray, k: float = 0.4) -> np.ndarray:
    m = img.mean()
    return np.clip((img.astype(np.float32) - m) * k + m, 0, 255).astype(np.uint8)


def low_res(img: np.ndarray, side: int = 24) -> np.ndarray:
    s = img.shape[0]
    small = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (s, s), interpolation=cv2.INTER_LINEAR)


ZOOMS = (0.8, 0.9, 1.1, 1.2, 1.3, 1.4)
CHANGES = {
    "clean": lambda im, i: im,
    **{f"zoom {z}": (lambda z: lambda im, i: zoom(im, z))(z) for z in ZOOMS},
    "shift left 10%": lambda im, i: shift(im, -0.1, 0),
    "shift right 10%": lambda im, i: shift(im, 0.1, 0),
    "shift up 10%": lambda im, i: shift(im, 0, -0.1),
    "shift down 10%": lambda im, i: shift(im, 0, 0.1),
    "rotate -20": lambda im, i: rotate(im, -20),
    "rotate +20": lambda im, i: rotate(im, 20),
    "blur sigma 1": lambda im, i: blur(im),
    "noise std 10": lambda im, i: noise(im, seed=i),
    "jpeg q20": lambda im, i: jpeg(im),
    "low light gamma 2.5": lambda im, i: gamma(im),
    "low contrast 40%": lambda im, i: low_contrast(im),
    "low resolution 24px": lambda im, i: low_res(im),
}

# ------------------------------------------------------------------ end to end


def markdown(res: dict) -> str:
    lines = [f"# Robustness of `{res['model']}` ({res['backend']} backend)", ""]
    if "changes" in res:
        clean = res["changes"]["clean"]["accuracy"]
        lines += [f"## Image changes, FER2013 PrivateTest ({res['changes']['clean']['n']} faces)", "",
                  "| change | accuracy | vs clean | macro-F1 |", "| --- | ---: | ---: | ---: |"]
        for name, m in res["changes"].items():
            lines.append(f"| {name} | {pct(m['accuracy'])} | {100 * (m['accuracy'] - clean):+.2f} | {m['macro_f1']:.3f} |")
        z = [res["changes"][f"zoom {v}"]["accuracy"] for v in ZOOMS if v <= 1.3]
        lines += ["", f"Worst drop over zoom 0.8-1.3: {100 * (clean - min(z)):.2f} points.", ""]
    for key, title in (("proxy", "End-to-end proxy (FER2013 faces on a 320x320 canvas)"), ("sfew", "SFEW-dev end to end")):
        if key not in res:
            continue
        lines += [f"## {title}", "", "| detector | split | crop (margin, offset_y, align) | found | accuracy | accuracy on found | macro-F1 |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
        for det, per in res[key].items():
            for split, m in per.items():
                g = m["geometry"]
                lines.append(f"| {det} | {split} | {g['margin']:.2f}, {g['offset_y']:+.2f}, {'on' if g['align'] else 'off'} | "
                             f"{pct(m['found'])} | {pct(m['accuracy'])} | {pct(m['accuracy_found'])} | {m['macro_f1']:.3f} |")
        lines.append("")
    if "sfew_squashed" in res:
        m = res["sfew_squashed"]
        lines += [f"SFEW-dev, whole image squashed to the model input (no detector): {pct(m['accuracy'])}, macro-F1 {m['macro_f1']:.3f}.", ""]
    if "calibration" in res:
        lines += ["## Crop calibration (chosen on the proxy's PublicTest + SFEW-dev; PrivateTest not used)", ""]
        for det, c in res["calibration"].items():
            b, o = c["best"], c["before"]
            per = lambda g: ", ".join(f"{k} {pct(v['accuracy'])}" for k, v in g["sets"].items())  # noqa: E731
            lines.append(f"- {det}: margin {b['margin']:.2f}, offset_y {b['offset_y']:+.2f}, align {'on' if b['align'] else 'off'}: "
                         f"{per(b)} (the model's previous geometry: {per(o)})")
        lines.append("")
    return "\n".join(lines)


def interpolated_file(a: str, b: str, alpha: float) -> str:
    """Write ``(1 - alpha) a + alpha b`` to a temporary checkpoint file; its path."""
    import tempfile

    from ferkit.engine.checkpoint import interpolate_checkpoints, load_checkpoint, save_checkpoint

    path = Path(tempfile.mkdtemp(prefix="ferkit-interp-")) / f"alpha{alpha:g}.pt"
    save_checkpoint(interpolate_checkpoints(load_checkpoint(a), load_checkpoint(b), alpha), path)
    return str(path)


def compare_alphas(args, alphas: list[float], log) -> int:
    """Part 4 with several alphas: the selection figures of each interpolation point (no PrivateTest)."""
    val_imgs, val_y = fer_split(Path(args.data), "val", args.limit, seed=0)
    sfew_imgs, sfew_y = sfew_images(Path(args.sfew))
    det = create_detector("yunet")
    proxy = detect_scenes([proxy_canvas(im) for im in val_imgs], val_y, det, "centre")
    sfew = detect_scenes(sfew_imgs, sfew_y, det, "largest")
    rows = []
    for alpha in alphas:
        rec = Recognizer(model=interpolated_file(args.interpolate, args.model, alpha), backend="torch", detector="haar",
                         device="cpu", batch_size=256, threads=args.threads or None)
        m, o, a = (float(v) for v in args.geometry.split(","))
        lmap, geo = label_map_for(rec), CropGeometry(m, o, bool(a))
        row = {"alpha": alpha, "val": classify(rec, val_imgs, val_y, lmap)["accuracy"],
               "val_zoom_1.3": classify(rec, [zoom(im, 1.3) for im in val_imgs], val_y, lmap)["accuracy"],
               "proxy_val": score_scenes(rec, proxy, geo, lmap)["accuracy"], "sfew": score_scenes(rec, sfew, geo, lmap)["accuracy"]}
        rows.append(row)
        log(" ".join(f"{k} {v:.4f}" for k, v in row.items()))
    lines = [f"# Interpolation (1 - alpha) {args.interpolate} + alpha {args.model}", "",
             "| alpha | PublicTest | PublicTest zoom 1.3 | proxy PublicTest (YuNet) | SFEW-dev (YuNet) |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['alpha']:g} | {pct(r['val'])} | {pct(r['val_zoom_1.3'])} | {pct(r['proxy_val'])} | {pct(r['sfew'])} |" for r in rows]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"interpolate": args.interpolate, "model": args.model, "rows": rows}, indent=2))
        Path(args.out).with_suffix(".md").write_text(report)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="'default', a checkpoint, a run folder or an exported .onnx file")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnx", "onnx-int8"))
    ap.add_argument("--data", default=str(DATA / "fer2013"), help="FER2013 Kaggle-layout folder")
    ap.add_argument("--sfew", default=str(DATA / "sfew-dev"), help="SFEW-dev folder (val/<class>/*.png)")
    ap.add_argument("--detectors", default="yunet,haar", help="detectors for the end-to-end parts, comma list")
    ap.add_argument("--limit", type=int, default=0, help="a seeded N faces per FER2013 split (0: all 3,589)")
    ap.add_argument("--skip-changes", action="store_true", help="skip part 1")
    ap.add_argument("--skip-e2e", action="store_true", help="skip parts 2 and 3")
    ap.add_argument("--calibrate", action="store_true", help="choose the crop geometry per detector (part 4)")
    ap.add_argument("--margins", default="-0.05,0,0.05,0.1,0.15", help="calibration grid: margins")
    ap.add_argument("--offsets", default="-0.1,-0.05,0,0.05", help="calibration grid: vertical offsets")
    ap.add_argument("--interpolate", metavar="A", help="checkpoint A to interpolate with --model (part 4)")
    ap.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="with --interpolate: weights of --model, comma list")
    ap.add_argument("--geometry", default="0,0,1", help="with several --alphas: the crop (margin, offset_y, align 1/0) "
                    "every point is compared with")
    ap.add_argument("--tta", default="none", choices=("none", "flip"),
                    help="the Recognizer's test-time augmentation: flip averages each face and its mirror image")
    ap.add_argument("--threads", type=int, default=0, help="torch / ONNX Runtime / OpenCV threads (0: their default)")
    ap.add_argument("--out", help="write results as JSON here, and the same name with .md as a Markdown report")
    args = ap.parse_args()
    if args.out and not args.out.endswith(".json"):
        raise SystemExit(f"--out {args.out}: expected a file name ending in .json")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)

    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    model_name = args.model
    if args.interpolate:
        alphas = [float(v) for v in args.alphas.split(",")]
        if len(alphas) > 1:
            return compare_alphas(args, alphas, log)
        args.model = interpolated_file(args.interpolate, args.model, alphas[0])
        model_name = f"(1 - {alphas[0]}) {args.interpolate} + {alphas[0]} {model_name}"
    rec = Recognizer(model=args.model, backend=args.backend, detector="haar", device="cpu", batch_size=256,
                     threads=args.threads or None, tta=args.tta)
    lmap = label_map_for(rec)
    res: dict = {"model": model_name, "backend": args.backend, "tta": args.tta, "limit": args.limit}

    if not args.skip_changes:
        test_imgs, test_y = fer_split(Path(args.data), "test", args.limit, seed=0)
        res["changes"] = {}
        for name, fn in CHANGES.items():
            res["changes"][name] = classify(rec, [fn(im, i) for i, im in enumerate(test_imgs)], test_y, lmap)
            log(f"{name}: {pct(res['changes'][name]['accuracy'])}")

    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    if not args.skip_e2e or args.calibrate:
        sets = {}
        for split in ("val", "test"):
            imgs, y = fer_split(Path(args.data), split, args.limit, seed=0)
            sets[split] = ([proxy_canvas(im) for im in imgs], y, "centre")
        sets["sfew"] = (*sfew_images(Path(args.sfew)), "largest")
        res["sfew_squashed"] = classify(rec, sets["sfew"][0], sets["sfew"][1], lmap)
        scenes = {}
        for det_name in detectors:
            det = create_detector(det_name)
            for key, (imgs, y, pick) in sets.items():
                scenes[det_name, key] = detect_scenes(imgs, y, det, pick)
            log(f"{det_name}: detected")
        base = rec.preprocess
        if args.calibrate:
            res["calibration"] = {}
            for det_name in detectors:
                scorer = photo_settings(args.model, detector=det_name, threads=args.threads or None)
                fit = search_crop_geometry(scorer, proxy=args.data, photos=args.sfew,
                                           margins=tuple(float(v) for v in args.margins.split(",")),
                                           offsets=tuple(float(v) for v in args.offsets.split(",")), limit=args.limit)
                res["calibration"][det_name] = {k: fit[k] for k in ("best", "before", "grid", "fitted_on")}
                log(f"calibrate {det_name}: {fit['best']}")
            base.crop_geometry = {**base.crop_geometry,
                                  **{d: {k: c["best"][k] for k in ("margin", "offset_y", "align")} for d, c in res["calibration"].items()}}
        if not args.skip_e2e:
            res["proxy"], res["sfew"] = {}, {}
            for det_name in detectors:
                g = base.crop_for(det_name)
                res["proxy"][det_name] = {s: {**score_scenes(rec, scenes[det_name, s], g, lmap), "geometry": g.to_dict()}
                                          for s in ("val", "test")}
                res["sfew"][det_name] = {"val": {**score_scenes(rec, scenes[det_name, "sfew"], g, lmap), "geometry": g.to_dict()}}
                log(f"{det_name}: proxy test {pct(res['proxy'][det_name]['test']['accuracy'])}, "
                    f"sfew {pct(res['sfew'][det_name]['val']['accuracy'])}")
    res["seconds"] = round(time.perf_counter() - t0, 1)
    report = markdown(res)
    print(report)
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=2))
        path.with_suffix(".md").write_text(report)
        print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
