"""Crop calibration as a library step: choose, per detector, the face crop a model sees, and store it in the model.

    fit = search_crop_geometry("default", proxy="../shared/data/fer2013", photos="../shared/data/sfew-dev")  # YuNet
    save_crop_geometry("default", fit, "default_yunet.pt")

A detector's face box is not the framing a model was trained on (YuNet's box is taller and narrower than
FER2013's crops), so each detector gets its own :class:`~ferkit.engine.preprocess.CropGeometry`: a margin, a
vertical offset and eye alignment on or off. The search scores every point of a small grid end to end (the
detector, :func:`~ferkit.infer.align.crop_faces`, the model) on labelled data and keeps the best:

- **proxy** (``proxy=``): the faces of a face-crop dataset's selection split (FER2013 PublicTest by default),
  each upscaled 3x (bicubic, 144 px) into the middle of a 320x320 canvas whose surroundings are its own mirror
  image, blurred (sigma 12 px) so that no second sharp face appears (:func:`proxy_canvas`); the face scored is
  the detection that covers the canvas centre;
- **photos** (``photos=``): a labelled set of whole photos (e.g. SFEW-dev film faces), the largest face scored.

A face not found counts as a wrong answer, so a geometry is never rewarded for losing faces; the score is the
mean accuracy over the sets given (the shipped model: the proxy's PublicTest and SFEW-dev; PrivateTest is never
used to choose). The detector runs once per image; only the crop and the model run once per grid point. A class
the data lacks is never an answer (an 8-class FER+ model on FER2013's 7), and images of classes the model lacks
are left out, as in ``ferkit eval``.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ferkit.data.readers import load_dataset
from ferkit.engine.checkpoint import export_weights
from ferkit.engine.classify import ModelRef
from ferkit.engine.evaluate import drop_absent, model_part
from ferkit.engine.preprocess import CropGeometry, Preprocess
from ferkit.infer.align import crop_faces
from ferkit.infer.crosseval import photo_settings, photo_split
from ferkit.infer.recognizer import Recognizer, RecognizerSettings, as_bgr
from ferkit.infer.results import Detection

log = logging.getLogger(__name__)

# The grid the shipped models were searched on (fractions of the face box's longer side).
DEFAULT_MARGINS = (-0.05, 0.0, 0.05, 0.1, 0.15)
DEFAULT_OFFSETS = (-0.1, -0.05, 0.0, 0.05)


def proxy_canvas(face: np.ndarray, up: int = 144, size: int = 320) -> np.ndarray:
    """A face crop (uint8 grey ``(h, w)`` or RGB ``(h, w, 3)``) as a BGR ``size`` x ``size`` scene: upscaled to
    ``up`` px in the middle, surrounded by its own mirror image blurred (so the detector sees a face with
    surroundings, and no second sharp face)."""
    f = cv2.resize(face, (up, up), interpolation=cv2.INTER_CUBIC)
    p = (size - up) // 2
    c = cv2.copyMakeBorder(f, p, size - up - p, p, size - up - p, cv2.BORDER_REFLECT_101)
    c = cv2.GaussianBlur(c, (0, 0), 12)
    c[p : p + up, p : p + up] = f
    return cv2.cvtColor(c, cv2.COLOR_GRAY2BGR) if c.ndim == 2 else cv2.cvtColor(c, cv2.COLOR_RGB2BGR)


def over_centre(dets: list[Detection], image: np.ndarray) -> list[Detection]:
    """The detections whose box covers the image's centre, in the detector's order (best score first)."""
    h, w = image.shape[:2]
    return [d for d in dets if d.box[0] <= w / 2 <= d.box[0] + d.box[2] and d.box[1] <= h / 2 <= d.box[1] + d.box[3]]


def pick_face(dets: list[Detection], image: np.ndarray, pick: str) -> Detection | None:
    """The face scored in ``image``: ``pick`` "centre" (the best box over the image centre) or "largest"."""
    if pick == "centre":
        dets = over_centre(dets, image)
    elif pick == "largest":
        dets = sorted(dets, key=lambda d: -d.box[2] * d.box[3])
    else:
        raise ValueError(f"pick {pick!r}: expected 'centre' or 'largest'")
    return dets[0] if dets else None


@dataclass
class Scenes:
    """Labelled BGR images with the face the detector found in each (None: not found). ``labels`` index the
    model's classes; ``absent``: the model's classes this data lacks (never an answer)."""

    name: str
    images: list[np.ndarray]
    labels: np.ndarray
    faces: list[Detection | None]
    absent: list[int]


def load_scenes(rec: Recognizer, data: str | Path, kind: str, split: str = "val", limit: int = 0, seed: int = 0) -> Scenes:
    """One labelled set ready to score crops on: ``kind`` "proxy" (face crops on :func:`proxy_canvas`, the face
    over the centre) or "photos" (whole photos, the largest face); a seeded ``limit`` images (0: all)."""
    if kind not in ("proxy", "photos"):
        raise ValueError(f"kind {kind!r}: expected 'proxy' or 'photos'")
    ds = load_dataset(data)
    split = photo_split(ds, split) if kind == "photos" else split
    part, _, absent = model_part(ds, split, rec.preprocess, data)
    idx = np.arange(len(part))
    if limit and limit < len(part):
        idx = np.sort(np.random.default_rng(seed).choice(len(part), limit, replace=False))
    if kind == "proxy":
        images = [proxy_canvas(part.images[i]) for i in idx]
    else:
        images = [as_bgr(part.images[i], order="rgb") for i in idx]
    pick = "centre" if kind == "proxy" else "largest"
    faces = [pick_face(rec.detect(im), im, pick) for im in images]
    name = f"{Path(str(data)).name} {split}" + (" (proxy scenes)" if kind == "proxy" else "")
    found = np.mean([f is not None for f in faces]) if faces else float("nan")
    log.info("%s: %d images, %s found a face in %.1f %%", name, len(images), rec.detector.name, 100 * found)
    return Scenes(name, images, part.labels[idx].astype(int), faces, absent)


def score_geometry(rec: Recognizer, scenes: Scenes, geo: CropGeometry) -> dict:
    """Accuracy of ``rec``'s model on ``scenes`` with faces cropped by ``geo`` (a face not found is wrong),
    accuracy on the faces found, and the share found."""
    hit = [i for i, f in enumerate(scenes.faces) if f is not None]
    crops = [crop_faces(scenes.images[i], [scenes.faces[i]], geo.margin, geo.offset_y, geo.align)[0] for i in hit]
    right = np.zeros(len(scenes.labels), bool)
    if crops:
        probs = drop_absent(np.array(rec.classify_crops(crops), np.float32), scenes.absent)
        right[hit] = probs.argmax(1) == scenes.labels[hit]
    n = max(len(scenes.labels), 1)
    return {"accuracy": float(right.sum() / n), "accuracy_found": float(right[hit].mean()) if hit else float("nan"),
            "found": len(hit) / n}


def search_crop_geometry(recognizer: str | Path | ModelRef | RecognizerSettings, proxy: str | Path | None = None,
                         photos: str | Path | None = None, margins: tuple[float, ...] = DEFAULT_MARGINS,
                         offsets: tuple[float, ...] = DEFAULT_OFFSETS, aligns: tuple[bool, ...] | None = None,
                         proxy_split: str = "val", photo_split_name: str = "val", limit: int = 0) -> dict:
    """Score every crop geometry of the grid ``margins`` x ``offsets`` x ``aligns`` for the recognizer's detector
    end to end on ``proxy`` and/or ``photos`` (see the module's docstring) and return the best (highest mean
    accuracy; the first in grid order on a tie). ``recognizer``: the settings of the Recognizer that scores, or a
    model spec scored as :func:`~ferkit.infer.crosseval.photo_settings` says (YuNet, CPU, the exact torch model).
    ``aligns`` None: on and off for a detector that gives eye landmarks, off for one that does not. Returns
    ``detector`` (resolved), ``best``, ``before`` (the model's present geometry, scored the same way), ``grid``
    (every point), ``fitted_on`` and ``n`` (images per set)."""
    if proxy is None and photos is None:
        raise ValueError("a crop search needs labelled data: proxy (a face-crop dataset such as FER2013) and/or "
                         "photos (whole photos such as SFEW-dev)")
    if not margins or not offsets:
        raise ValueError(f"an empty grid: margins {list(margins)}, offsets {list(offsets)}")
    rec = Recognizer.from_settings(photo_settings(recognizer, batch_size=256))
    sets = []
    if proxy is not None:
        sets.append(load_scenes(rec, proxy, "proxy", proxy_split, limit))
    if photos is not None:
        sets.append(load_scenes(rec, photos, "photos", photo_split_name, limit))
    if aligns is None:
        landmarks = any(f is not None and f.landmarks is not None for s in sets for f in s.faces)
        aligns = (True, False) if landmarks else (False,)

    def scored(geo: CropGeometry) -> dict:
        per = {s.name: score_geometry(rec, s, geo) for s in sets}
        score = float(np.mean([m["accuracy"] for m in per.values()]))
        return {**geo.to_dict(), "score": score, "sets": per}

    grid = []
    for m, o, a in itertools.product(margins, offsets, aligns):
        grid.append(scored(CropGeometry(float(m), float(o), bool(a))))
        log.info("crop %s: margin %+.2f offset_y %+.2f align %s: score %.4f", rec.detector.name, m, o, a, grid[-1]["score"])
    best = max(grid, key=lambda r: r["score"])
    before = scored(rec.crop_geometry)
    return {"detector": rec.detector.name, "best": best, "before": before, "grid": grid,
            "fitted_on": " + ".join(s.name for s in sets), "n": {s.name: len(s.labels) for s in sets}}


def apply_crop_geometry(pre: Preprocess, fit: dict) -> Preprocess:
    """``pre`` with ``fit``'s best geometry for its detector (a temperature fitted for that detector is kept)."""
    det, best = fit["detector"], fit["best"]
    kept = {k: v for k, v in (pre.crop_geometry.get(det) or {}).items() if k == "temperature"}
    geometry = {"margin": float(best["margin"]), "offset_y": float(best["offset_y"]), "align": bool(best["align"]), **kept}
    out = Preprocess.from_dict({**pre.to_dict(), "crop_geometry": {**pre.crop_geometry, det: geometry}})
    return out


def save_crop_geometry(model_spec: str | Path | ModelRef, fit: dict, out: str | Path) -> Path:
    """Write ``model_spec`` with ``fit``'s best crop for its detector to the new checkpoint file ``out``
    (inference weights only; float16 weights stay float16). ``calibration["<detector> crop"]`` records the
    search: the grid, the best and the previous geometry, the data it was chosen on."""
    ref = ModelRef.resolve(model_spec)
    if ref.kind == "onnx":
        raise ValueError(f"{ref.spec}: an ONNX file cannot be rewritten here; calibrate the checkpoint it was "
                         "exported from, then export that")
    ckpt = dict(ref.checkpoint)  # a copy: its preprocess is replaced below, and the ref's stays as loaded
    ckpt["preprocess"] = apply_crop_geometry(Preprocess.from_dict(ckpt["preprocess"]), fit).to_dict()
    record = {**(ckpt.get("calibration") or {}), f"{fit['detector']} crop": {
        "fitted_on": fit["fitted_on"], "n": dict(fit["n"]), "best": _plain(fit["best"]), "before": _plain(fit["before"]),
        "grid": [_plain(r) for r in fit["grid"]]}}
    half = any(v.dtype == torch.float16 for v in ckpt["state_dict"].values())  # a file shipped in float16 stays so
    export_weights(ckpt, out, half=half, extra={"calibration": record})
    return Path(out)


def _plain(row: dict) -> dict:
    """A grid row as plain data a weights-only checkpoint can hold (per-set accuracies, no NaN-only dicts)."""
    return {"margin": row["margin"], "offset_y": row["offset_y"], "align": row["align"], "score": row["score"],
            "sets": {k: {"accuracy": v["accuracy"], "found": v["found"]} for k, v in row["sets"].items()}}
