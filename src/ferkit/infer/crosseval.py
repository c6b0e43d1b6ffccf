"""Evaluation across datasets, and end to end as a user meets the model (``ferkit eval --data A --photos B``).

Two kinds of labelled set:

- **crops** (``--data``): face crops such as FER2013's, scored by :func:`ferkit.engine.evaluate.evaluate`;
- **photos** (``--photos``): whole photos, scored end to end by :func:`evaluate_photos`: the detector runs on
  the whole image, the largest face found is cropped as the model was calibrated for that detector and
  classified, and an image where no face is found counts as a wrong answer with confidence 0 (a row of zero
  probabilities). SFEW-dev (film faces) and JAFFE-dev (posed studio photos) are scored so.

The **real-face score** is the mean accuracy over the photo sets: with SFEW-dev and JAFFE-dev, the figure that
chooses the shipped default (``docs/models.md``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit.data.dataset import canonical_split
from ferkit.data.readers import load_dataset
from ferkit.engine.classify import ModelRef
from ferkit.engine.evaluate import SplitPredictions, drop_absent, evaluate, model_part, scored_result, write_outputs
from ferkit.infer.recognizer import Recognizer, RecognizerSettings, as_bgr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSet:
    """One dataset of a cross-dataset evaluation: its path (None: the model's own), ``kind`` "crops" or
    "photos", and for FER2013 crops the FER+ votes to score against instead of its labels."""

    data: str | None
    kind: str = "crops"
    ferplus: str | None = None

    @property
    def name(self) -> str:
        base = Path(self.data).name if self.data else "trained-on data"
        return base + (" (FER+ labels)" if self.ferplus else "")


def photo_split(ds, split: str) -> str:
    """``split`` when the dataset has it; else its only split (a dev set such as SFEW-dev holds only ``val``)."""
    split = canonical_split(split, allow_all=True)
    present = ds.splits()
    if split in present or split == "all" or len(present) != 1:
        return split
    log.info("the dataset has only the %r split: scoring it", present[0])
    return present[0]


def largest_faces(rec: Recognizer, images: list[np.ndarray]) -> tuple[np.ndarray, list]:
    """The model's calibrated probabilities ``(N, K)`` for the largest face of each image (zeros where no face
    is found), and that :class:`~ferkit.infer.results.Face` (or None) per image. Images: uint8 grey or RGB."""
    probs = np.zeros((len(images), len(rec.label_names)), np.float32)
    faces: list = [None] * len(images)
    step = max(1, rec.batch_size)
    for start in range(0, len(images), step):
        frames = [as_bgr(im, order="rgb") for im in images[start : start + step]]  # dataset RGB/grey -> BGR
        dets = []
        for f in frames:
            found = rec.detect(f)
            dets.append([max(found, key=lambda d: d.box[2] * d.box[3])] if found else [])
        for i, fs in enumerate(rec.recognize_frames(frames, dets)):
            if fs:
                faces[start + i] = fs[0]
                probs[start + i] = [fs[0].probs[n] for n in rec.label_names]
    return probs, faces


def photo_settings(base: str | Path | ModelRef | RecognizerSettings = "default", **changes) -> RecognizerSettings:
    """The recognizer settings photos are scored with: for a model ``base``, YuNet, the CPU, the "torch" backend
    (the exact model; a shipped model's int8 file is a little less accurate, "auto" scores what ``Recognizer()``
    runs); settings ``base`` as they are; ``changes`` on top."""
    if isinstance(base, RecognizerSettings):
        return base.replace(**changes)
    return RecognizerSettings(**({"model": base, "detector": "yunet", "device": "cpu", "backend": "torch"} | changes))


def predict_photos(recognizer: str | Path | ModelRef | RecognizerSettings = "default", data: str | Path = "",
                   split: str = "val", label_pattern: str | None = None) -> tuple[SplitPredictions, list, str]:
    """The model's probabilities end to end on a labelled set of whole photos (see the module's docstring), the
    :class:`~ferkit.infer.results.Face` scored in each photo (None where none was found), and the name of the
    detector that ran ("auto" resolved). ``recognizer``: the settings of the Recognizer that scores them, or a
    model spec run with :func:`photo_settings`."""
    settings = photo_settings(recognizer)
    ref = ModelRef.resolve(settings.model)  # once: the Recognizer runs it, the result names it
    rec = Recognizer.from_settings(settings.replace(model=ref))
    pre = rec.preprocess
    ckpt = ref.record
    ds = load_dataset(data, label_pattern=label_pattern)
    split = photo_split(ds, split)
    part, unmapped, absent = model_part(ds, split, pre, data)
    log.info("evaluating %s end to end (%s) on %d %s images of %s", ref, rec.detector.name, len(part), split, data)
    probs, faces = largest_faces(rec, list(part.images))
    drop_absent(probs, absent)
    sp = SplitPredictions(ckpt, pre, part, {"none": probs}, split, Path(data), False, unmapped, absent,
                          f"end to end: {rec.detector.name}, the largest face")
    return sp, faces, rec.detector.name


def evaluate_photos(recognizer: str | Path | ModelRef | RecognizerSettings = "default", data: str | Path = "",
                    split: str = "val", out_dir: str | Path | None = None, label_pattern: str | None = None,
                    min_confidence: float | None = None) -> dict:
    """Score a model end to end on a labelled set of whole photos (:func:`predict_photos`).

    Returns :func:`ferkit.engine.evaluate.evaluate`'s metrics dict (calibration included, with the coverage at
    ``min_confidence`` when given) with ``end_to_end`` (detector, crop, share of images with a face found) and
    ``quality`` (per image: the face's quality measures and ``low_quality`` flag, or None).
    """
    sp, faces, detector = predict_photos(recognizer, data, split, label_pattern)
    result = scored_result(sp.ckpt, sp.part, sp.probs, sp.pre, sp.split, sp.data_path, False, sp.unmapped, sp.absent,
                           min_confidence)
    result["end_to_end"] = {"detector": detector, "crop": sp.pre.crop_for(detector).to_dict(),
                            "found": float(np.mean([f is not None for f in faces])) if faces else float("nan")}
    result["quality"] = [None if f is None else {**f.quality, "low_quality": f.low_quality} for f in faces]
    result["never_predicted"] = []
    if out_dir is not None:
        write_outputs(result, sp.part, sp.probs, np.zeros(len(sp.part), bool), out_dir)
    return result


def evaluate_sets(model_spec: str | Path | ModelRef, sets: list[EvalSet], split: str = "test", tta: str = "none",
                  out_dir: str | Path | None = None, batch_size: int | None = None, device: str = "auto",
                  duplicates: str | None = None, ferplus_mode: str | None = None, join_csv: str | None = None,
                  recognizer: RecognizerSettings | None = None, label_pattern: str | None = None,
                  min_confidence: float | None = None) -> list[dict]:
    """Evaluate one model on every set (each result gets ``"set"``: its name and kind); with ``out_dir`` and
    several sets, each set's outputs go to a subfolder, with ``table.md``, ``table.json`` and ``coverage.png``.
    Photo sets are scored by a Recognizer built from ``recognizer`` (its model replaced by ``model_spec``; None:
    :func:`photo_settings`, on ``device``)."""
    model_spec = ModelRef.resolve(model_spec)  # once for every set
    photos = photo_settings(recognizer or photo_settings(device="cpu" if device == "auto" else device), model=model_spec)
    many = len(sets) > 1
    results = []
    for i, s in enumerate(sets):
        sub = None if out_dir is None else (Path(out_dir) / f"{i + 1}-{_slug(s.name)}" if many else Path(out_dir))
        if s.kind == "photos":
            r = evaluate_photos(photos, s.data, split, out_dir=sub, label_pattern=label_pattern,
                                min_confidence=min_confidence)
        elif s.kind == "crops":
            r = evaluate(model_spec, data=s.data, split=split, tta=tta, out_dir=sub, batch_size=batch_size, device=device,
                         duplicates=duplicates, ferplus_mode=ferplus_mode, ferplus=s.ferplus,
                         join_csv=join_csv if s.ferplus else None, min_confidence=min_confidence)
        else:
            raise ValueError(f"unknown kind of evaluation set {s.kind!r}; valid: crops, photos")
        r["set"] = {"name": s.name, "kind": s.kind}
        results.append(r)
    if out_dir is not None and many:
        from ferkit.plots import plot_coverage

        out = Path(out_dir)
        (out / "table.md").write_text(format_table(model_spec, results, min_confidence) + "\n")
        rows = [table_row(r) for r in results]
        (out / "table.json").write_text(json.dumps({"model": str(model_spec), "rows": rows,
                                                    "real_face_score": real_face_score(results)}, indent=2))
        plot_coverage({r["set"]["name"]: r["calibration"]["coverage"] for r in results}, out / "coverage.png",
                      f"{model_spec}: answered share and accuracy by min confidence")
    return results


def _slug(name: str) -> str:
    """A folder name for a dataset's name: "fer2013 (FER+ labels)" -> "fer2013-fer-labels"."""
    return re.sub(r"-+", "-", "".join(c if c.isalnum() or c in "-_" else "-" for c in name)).strip("-").lower() or "data"


def table_row(r: dict) -> dict:
    """The cross-dataset table's figures of one result."""
    cal = r["calibration"]
    return {"dataset": r["set"]["name"], "kind": r["set"]["kind"], "split": r["split_title"], "n": r["n"],
            "accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "ece": cal["ece"],
            "found": (r.get("end_to_end") or {}).get("found"), "classes_left_out": r["classes_left_out"],
            "unmapped": {k: v for k, v in r["unmapped"].items() if v}, "coverage": cal["coverage"]}


def real_face_score(results: list[dict]) -> float | None:
    """The mean accuracy over the photo sets (end to end), None without any."""
    acc = [r["accuracy"] for r in results if r["set"]["kind"] == "photos"]
    return float(np.mean(acc)) if acc else None


def format_table(model_spec: str | Path | ModelRef, results: list[dict], min_confidence: float | None = None) -> str:
    """A Markdown table: per dataset n, accuracy, macro-F1 and ECE (and the answered share and accuracy at
    ``min_confidence``), the classes left out, and the real-face score over the photo sets."""
    head = "| dataset | how | split | n | accuracy | macro-F1 | ECE |"
    sep = "|---|---|---|---:|---:|---:|---:|"
    if min_confidence is not None:
        head += f" answered at P {min_confidence:g} | accuracy answered |"
        sep += "---:|---:|"
    lines = [f"## {model_spec}", "", head + " notes |", sep + "---|"]
    for r in results:
        row = table_row(r)
        e2e = r.get("end_to_end") or {}
        how = "crops" if row["kind"] == "crops" else f"end to end ({e2e.get('detector')}, {100 * row['found']:.1f} % found)"
        notes = []
        if row["classes_left_out"]:
            notes.append(f"model classes not in the data: {', '.join(row['classes_left_out'])}")
        if row["unmapped"]:
            left = ", ".join(f"{k} {v}" for k, v in row["unmapped"].items())
            notes.append(f"images of classes the model lacks, left out: {left}")
        cells = (f"| {row['dataset']} | {how} | {row['split']} | {row['n']} | {100 * row['accuracy']:.2f} % | "
                 f"{row['macro_f1']:.3f} | {row['ece']:.3f} |")
        if min_confidence is not None:
            c = r["calibration"]["at_min_confidence"]
            acc = "—" if c["accuracy"] != c["accuracy"] else f"{100 * c['accuracy']:.1f} %"
            cells += f" {100 * c['coverage']:.1f} % | {acc} |"
        lines.append(cells + f" {'; '.join(notes)} |")
    score = real_face_score(results)
    if score is not None:
        lines += ["", f"Real-face score (mean accuracy of the end-to-end sets): **{100 * score:.2f}**"]
    return "\n".join(lines)
