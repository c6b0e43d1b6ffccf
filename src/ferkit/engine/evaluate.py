"""Evaluation of a trained model on one dataset split: ``evaluate(model, data, split)``.

The dataset's classes are mapped onto the model's classes *by name*, and images
are brought to the model's channels and size by :meth:`Preprocess.prepare_images`,
as in training and deployment, so ``ferkit eval`` on a run folder reproduces
the test figure the trainer wrote into ``summary.json``.

For FER2013 it also reports a leak-free figure: 568 test images (280
PublicTest, 288 PrivateTest) have a byte-identical copy in Training, listed in
the dataset's ``duplicates.csv``; the leak-free metrics leave those out.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ferkit import labels as L
from ferkit.data.augment import TTA_VIEWS
from ferkit.data.dataset import ALL, FerData, canonical_split
from ferkit.data.readers import load_dataset
from ferkit.engine.classify import ModelRef
from ferkit.engine.preprocess import Preprocess
from ferkit.engine.steps import images_to_tensor, predict_probs
from ferkit.metrics import (
    accuracy_of_most_confident,
    calibration_markdown,
    calibration_metrics,
    classification_metrics,
    confusion_markdown,
    coverage_curve,
    coverage_markdown,
    never_predicted,
    never_predicted_note,
    per_class_markdown,
)
from ferkit.runtime import autocast_dtype, select_device

log = logging.getLogger(__name__)

TTA_MODES = tuple(TTA_VIEWS)  # none, flip, tencrop
DUPLICATES_NAME = "duplicates.csv"
# FER2013's own names for the three splits (Kaggle file-name prefixes / fer2013.csv Usage).
FER2013_SPLIT_NAMES = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
_FER2013_FILE = re.compile(r"^(Training|PublicTest|PrivateTest)_")


def leaked_sources(duplicates_csv: str | Path) -> set[str]:
    """Relative paths (``test/<class>/<name>.jpg``) of images with a byte-identical copy under ``train/``.

    ``duplicates_csv`` has FER2013's ``duplicates.csv`` columns ``group_id, jpg_path, ...``:
    one row per file, files of one group being identical.
    """
    path = Path(duplicates_csv)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such duplicates file (expected FER2013's duplicates.csv)")
    groups: dict[str, list[str]] = defaultdict(list)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"group_id", "jpg_path"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; "
                             "expected 'group_id,jpg_path,...' (FER2013 duplicates.csv)")
        for row in reader:
            groups[row["group_id"]].append(row["jpg_path"].strip().replace("\\", "/"))
    leaked = set()
    for paths in groups.values():
        if any(p.startswith("train/") for p in paths):
            leaked.update(p for p in paths if not p.startswith("train/"))
    return leaked


def _find_duplicates(data_path: Path, given: str | Path | None) -> Path | None:
    if given is not None:
        return Path(given)
    auto = data_path / DUPLICATES_NAME
    return auto if data_path.is_dir() and auto.is_file() else None


def _is_fer2013(part: FerData) -> bool:
    first = Path(str(part.sources[0])).name if len(part) else ""
    return bool(_FER2013_FILE.match(first)) or str(part.meta.get("reader", "")).startswith(("fer2013", "ferplus"))


def split_title(part: FerData, split: str) -> str:
    """``test`` or, for FER2013, ``test (FER2013 PrivateTest)``; for ``all``, ``every split (train + test)``
    (``the whole dataset`` when it has one split, as a folder of class folders does)."""
    if split == ALL:
        present = part.splits()
        names = [FER2013_SPLIT_NAMES[s] for s in present] if _is_fer2013(part) else present
        return f"every split ({' + '.join(names)})" if len(names) > 1 else "the whole dataset"
    return f"{split} (FER2013 {FER2013_SPLIT_NAMES[split]})" if _is_fer2013(part) else split


def split_images(part: FerData, split: str) -> str:
    """``test (FER2013 PrivateTest) images``, or ``images of every split (...)`` for ``all``: for figure captions."""
    title = split_title(part, split)
    return f"images of {title}" if split == ALL else f"{title} images"


def _split_role(split: str, cfg: dict, same_data: bool) -> str:
    """What a figure on this split means for this model (selection on the reported split is called out)."""
    trained_on = cfg.get("data") or "none"
    if split == ALL:
        if same_data:
            return ("every image of the dataset the model was trained on, its training images included, so this is "
                    "not an estimate of accuracy on new faces; report the test split instead")
        return (f"every image of a dataset other than the one named in the checkpoint ({trained_on}), whatever its "
                "split; if the model learned from some of these images, this figure is optimistic")
    if split == canonical_split(cfg.get("train_split", "train")):
        role = "the training split: the model learned from these images, so this is not an estimate of accuracy on new faces"
    elif split == canonical_split(cfg.get("val_split", "val")):
        role = ("the validation split: the checkpoint was selected on it during training, "
                "so this figure is optimistic; report the test split instead")
    else:
        role = "the held-out test split: not used for training or for choosing the checkpoint; this is the figure to report"
    if same_data:
        return role
    return f"from a dataset other than the one named in the checkpoint ({trained_on}); if it holds the same images, it is {role}"


def trained_dataset(cfg: dict, model: str | Path | ModelRef, option: str = "--data") -> str:
    """The dataset a checkpoint's config names, when it can be found from here; else an error asking for one
    with ``option`` (the command's option that gives a dataset, e.g. ``ferkit export``'s ``--calib``).

    The path is stored as it was given at training time, often relative (``../shared/...``), so it
    resolves only from the folder training ran in.
    """
    trained_on = str(cfg.get("data") or "")
    if not trained_on:
        raise ValueError(f"{model}: the model does not name the dataset it was trained on; give one with {option} PATH "
                         "(a fer2013.csv or an image folder)")
    if not Path(trained_on).exists():
        raise FileNotFoundError(f"{model}: the model was trained on {trained_on}, which is not found from here "
                                f"({Path.cwd()}); give the dataset with {option} PATH (a fer2013.csv or an image folder)")
    return trained_on


FERPLUS_MODES = ("majority", "soft", "off")


def load_eval_data(data: str | Path | None, cfg: dict, model: str | Path | ModelRef,
                   ferplus_mode: str | None = None) -> tuple[FerData, Path, bool]:
    """The dataset to evaluate on (``data``; None: the one ``cfg``, the model's training config, names), with the
    label source training used when it is that dataset (FER+ votes, ``join_csv``): ``(dataset, its path, same)``.

    ``ferplus_mode``: how a model trained on FER+ votes is scored: None as in training, "majority" (the
    protocol of Barsoum et al.: a label only where most raters agree), "soft" (the top vote), or "off"
    (the dataset's own labels, e.g. FER2013's)."""
    if ferplus_mode is not None and ferplus_mode not in FERPLUS_MODES:
        raise ValueError(f"unknown ferplus_mode {ferplus_mode!r}; valid: {', '.join(FERPLUS_MODES)}")
    trained_on = cfg.get("data") or ""
    if data is None:
        data = trained_dataset(cfg, model)
    path = Path(data)
    same = bool(trained_on) and path.exists() and Path(trained_on).exists() and path.resolve() == Path(trained_on).resolve()
    # a model trained on FER2013's labels mixed with FER+ votes (ferplus_mix) answers FER2013's classes: its labels
    ferplus = cfg.get("ferplus") if same and ferplus_mode != "off" and not cfg.get("ferplus_mix") else None
    mode = ferplus_mode or cfg.get("ferplus_mode", "majority")
    if ferplus:
        log.info("labels: FER+ votes from %s (%s%s)", ferplus, mode, ", as in training" if ferplus_mode is None else "")
    join = cfg.get("join_csv") if same else None
    ds = load_dataset(path, ferplus=ferplus, ferplus_mode=mode, join_csv=join)
    return ds, path, same


def _score(y: np.ndarray, probs: dict[str, np.ndarray], names: tuple[str, ...], min_confidence: float | None = None) -> dict:
    """Plain (no TTA) metrics with their calibration, with the TTA metrics under ``"tta"`` (None without TTA)."""
    out = {**classification_metrics(y, probs["none"], names),
           "calibration": calibration_summary(y, probs["none"], min_confidence)}
    mode = next((m for m in probs if m != "none"), None)
    out["tta"] = {"mode": mode, **classification_metrics(y, probs[mode], names)} if mode else None
    return out


def calibration_summary(y: np.ndarray, probs: np.ndarray, min_confidence: float | None = None) -> dict:
    """ECE, Brier, NLL and the reliability bins; the coverage/accuracy curve over min-confidence thresholds
    (and at ``min_confidence``); the accuracy on the most confident half and quarter (how well the confidence
    ranks right answers before wrong ones)."""
    out = {**calibration_metrics(y, probs), "coverage": coverage_curve(y, probs),
           "accuracy_most_confident_50": accuracy_of_most_confident(y, probs, 0.5),
           "accuracy_most_confident_25": accuracy_of_most_confident(y, probs, 0.25)}
    if min_confidence is not None:
        out["at_min_confidence"] = coverage_curve(y, probs, [min_confidence])[0]
    return out


def load_eval_model(model_spec: str | Path | ModelRef,
                    device: str = "auto") -> tuple[dict, torch.nn.Module, Preprocess, torch.device]:
    """``(checkpoint-like dict, model in eval mode, Preprocess, device)`` for a checkpoint, run folder, ensemble
    or exported ``.onnx`` file (run by ONNX Runtime on the CPU): anything :meth:`ModelRef.resolve` takes."""
    ref = ModelRef.resolve(model_spec)
    dev = torch.device("cpu") if ref.kind == "onnx" else select_device(device)
    model, pre = ref.build(dev)
    return ref.record, model, pre, dev


def model_part(ds: FerData, split: str, pre: Preprocess, data_path: str | Path) -> tuple[FerData, dict, list[int]]:
    """One split of ``ds`` with its classes mapped onto the model's by name: ``(part, unmapped, absent)``.
    ``unmapped``: images left out because the model lacks their class, per class; ``absent``: the model's
    classes the dataset lacks (their probabilities are zeroed and the rest renormalised by :func:`drop_absent`)."""
    part = ds.subset(split)
    if len(part) == 0:
        raise ValueError(empty_split_message(data_path, split, ds))
    to_model = L.mapping(part.label_names, pre.label_names)
    unmapped = {n: int((part.labels == i).sum()) for i, n in enumerate(part.label_names) if to_model[i] < 0}
    try:
        part = part.remap(pre.label_names)
    except ValueError as exc:
        raise ValueError(f"the dataset's classes {list(ds.label_names)} share no name with the model's classes "
                         f"{list(pre.label_names)}: nothing to evaluate") from exc
    if sum(unmapped.values()):
        log.info("left out %d images of classes the model does not know: %s", sum(unmapped.values()), unmapped)
    if len(part) == 0:
        raise ValueError(f"{data_path}: the {split!r} split holds no image of the model's classes {list(pre.label_names)}")
    # Classes of the model that the dataset does not have (an 8-class FER+ model on FER2013's 7) can never be
    # right: the model is scored on the shared classes, its probabilities renormalised over them.
    absent = [i for i, n in enumerate(pre.label_names) if n not in ds.label_names]
    if absent:
        log.info("scoring on the %d classes the model shares with the dataset; left out of its predictions: %s",
                 len(pre.label_names) - len(absent), [pre.label_names[i] for i in absent])
    return part, unmapped, absent


def drop_absent(probs: np.ndarray, absent: list[int]) -> np.ndarray:
    """Zero the ``absent`` classes' probabilities and renormalise each row over the rest, in place (a row of
    zeros, an answer not given, stays zero)."""
    if absent:
        probs[:, absent] = 0.0
        probs /= np.maximum(probs.sum(1, keepdims=True), 1e-12)
    return probs


def scored_result(ckpt: dict, part: FerData, probs: dict[str, np.ndarray], pre: Preprocess, split: str, data_path: Path,
                  same_data: bool, unmapped: dict, absent: list[int], min_confidence: float | None = None) -> dict:
    """The metrics dict :func:`evaluate` returns, from the model's probabilities on ``part`` (``"none"`` and
    optionally one TTA mode), without the leak-free figures."""
    cfg = ckpt.get("config") or {}
    return {
        "model": ckpt["path"],
        "architecture": ckpt["model"]["name"],
        "temperature": float(pre.temperature),
        "data": str(data_path),
        "split": split,
        "split_title": split_title(part, split),
        "split_role": _split_role(split, cfg, same_data),
        "unmapped": unmapped,
        "classes_left_out": [pre.label_names[i] for i in absent],
        **_score(part.labels, probs, pre.label_names, min_confidence),
        "leak_free": None,
    }


@dataclass
class SplitPredictions:
    """A model's probabilities on one split of a dataset, with what scoring them needs.

    ``probs``: TTA mode ("none", and the asked one) -> ``(N, K)`` calibrated probabilities over
    ``pre.label_names``, classes the data lacks zeroed (:func:`drop_absent`); a row of zeros is an answer not
    given. ``part``: the split, its labels mapped onto the model's classes; with a ``limit``, a stratified sample
    of ``total`` images (``seed``). ``what`` names the split's images (:func:`split_images`); ``model`` is the
    module that scored them (None where a Recognizer did)."""

    ckpt: dict
    pre: Preprocess
    part: FerData
    probs: dict[str, np.ndarray]
    split: str
    data_path: Path
    same_data: bool
    unmapped: dict
    absent: list[int]
    labels_from: str | None = None
    total: int = 0  # images of the split before ``limit`` (0: as many as ``part``)
    seed: int = 0
    what: str = ""
    model: torch.nn.Module | None = None

    @property
    def subset(self) -> str:
        """Which images these are, e.g. "600 of 3,589 test (FER2013 PrivateTest) images (stratified sample, seed 0)"."""
        n, what = len(self.part), self.what or f"{self.split} images"
        total = max(self.total, n)
        if n < total:
            return f"{n:,} of {total:,} {what} (stratified sample, seed {self.seed})"
        return f"all {n:,} {what}"


def predict_split(model_spec: str | Path | ModelRef = "default", data: str | Path | None = None, split: str = "test",
                  tta: str = "none", batch_size: int | None = None, device: str = "auto", ferplus_mode: str | None = None,
                  ferplus: str | Path | None = None, join_csv: str | Path | None = None, limit: int = 0,
                  seed: int = 0) -> SplitPredictions:
    """The one path from a model and a dataset split to the model's probabilities on it (the other arguments are
    :func:`evaluate`'s): evaluation, galleries, reports and temperature fitting all score through it.
    ``limit`` > 0 scores a seeded (``seed``), class-stratified sample of that many images (quick looks)."""
    if tta not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {tta!r}; expected one of {', '.join(TTA_MODES)}")
    split = canonical_split(split, allow_all=True)
    ref = ModelRef.resolve(model_spec)
    ckpt, model, pre, dev = load_eval_model(ref, device)
    cfg = ckpt.get("config") or {}
    labels_from = None
    if ferplus is not None:
        if data is None:
            data = trained_dataset(cfg, ref)
        mode = ferplus_mode if ferplus_mode not in (None, "off") else "majority"
        ds, data_path, same_data = load_dataset(data, ferplus=ferplus, ferplus_mode=mode, join_csv=join_csv), Path(data), False
        labels_from = f"FER+ votes ({mode}) of {ferplus}"
    else:
        ds, data_path, same_data = load_eval_data(data, cfg, ref, ferplus_mode)
    part, unmapped, absent = model_part(ds, split, pre, data_path)
    total, what = len(part), split_images(part, split)
    if limit > 0:
        from ferkit.engine.builders import stratified_subset

        part = stratified_subset(part, limit, seed)

    x = images_to_tensor(pre.prepare_images(part.images))  # uint8 (N, C, S, S): the model's channels and size
    amp = autocast_dtype(cfg.get("amp", "auto"), dev)
    bs = batch_size or int(cfg.get("eval_batch_size", 512))
    channels_last = bool(cfg.get("channels_last", False))
    n = f"{len(part):,} of {total:,}" if len(part) < total else f"{len(part):,}"
    log.info("evaluating %s on %s %s of %s", ckpt["path"], n, what, data_path)
    probs = {"none": predict_probs(model, x, pre, "none", bs, amp, channels_last)}
    if tta != "none":
        probs[tta] = predict_probs(model, x, pre, tta, bs, amp, channels_last)
    for p in probs.values():
        drop_absent(p, absent)
    return SplitPredictions(ckpt, pre, part, probs, split, data_path, same_data, unmapped, absent, labels_from,
                            total, seed, what, model)


def evaluate(
    model_spec: str | Path | ModelRef = "default",
    data: str | Path | None = None,
    split: str = "test",
    tta: str = "none",
    out_dir: str | Path | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    duplicates: str | Path | None = None,
    ferplus_mode: str | None = None,
    ferplus: str | Path | None = None,
    join_csv: str | Path | None = None,
    min_confidence: float | None = None,
) -> dict:
    """Evaluate a model (checkpoint file, run folder, ``"default"``, ensemble, ``.onnx`` file or
    :class:`ModelRef`) on one split of a dataset.

    ``data``: a fer2013.csv or an image folder; default the dataset the model was trained on.
    ``split``: train/val/test or an alias (Training, PublicTest, PrivateTest), or ``"all"`` (every image).
    Always reports the plain (no TTA) figures at the top level, with their calibration (ECE, Brier, NLL,
    reliability bins, coverage curve) under ``"calibration"``; with ``tta`` flip or
    tencrop also the ``"tta"`` figures. ``duplicates``: FER2013's duplicates.csv
    (default: ``duplicates.csv`` in the dataset folder, when present) for the
    ``"leak_free"`` figures. ``ferplus`` (+ ``join_csv`` for an image folder): score against the FER+ votes
    of these FER2013 images (``ferplus_mode``, default majority) whatever the model was trained on. With
    ``out_dir``, writes metrics.json, summary.md, predictions.csv, confusion matrix and reliability plots there.
    ``min_confidence``: also the share answered and their accuracy at that threshold (``calibration.at_min_confidence``).
    Returns the metrics dict.
    """
    if duplicates is not None and not Path(duplicates).is_file():  # fail before the slow part
        raise FileNotFoundError(f"{duplicates}: no such duplicates file (expected FER2013's duplicates.csv)")
    sp = predict_split(model_spec, data, split, tta, batch_size, device, ferplus_mode, ferplus, join_csv)
    part, probs, pre, data_path, split = sp.part, sp.probs, sp.pre, sp.data_path, sp.split
    result = scored_result(sp.ckpt, part, probs, pre, split, data_path, sp.same_data, sp.unmapped, sp.absent, min_confidence)
    if sp.labels_from:
        result["labels_from"] = sp.labels_from
    ckpt = sp.ckpt
    y = part.labels

    leaked = np.zeros(len(part), bool)
    dup_path = _find_duplicates(data_path, duplicates)
    if dup_path is not None and split in ("val", "test"):  # a leak is a test image also in train
        leaked = np.isin(part.sources, sorted(leaked_sources(dup_path)))
        keep = ~leaked
        result["leak_free"] = {
            "dropped": int(leaked.sum()),
            "duplicates": str(dup_path),
            **_score(y[keep], {m: p[keep] for m, p in probs.items()}, pre.label_names),
        }
        log.info("leak-free: left out %d of %d images that have an identical copy in the training split", leaked.sum(), len(part))
    elif dup_path is None and _is_fer2013(part):
        log.info("no %s in %s: no leak-free figure (pass duplicates=... to get one)", DUPLICATES_NAME, data_path)

    result["never_predicted"] = never_predicted(result)
    if result["never_predicted"]:
        log.warning("%s: %s", ckpt["path"], never_predicted_note(result["never_predicted"]))
    if out_dir is not None:
        write_outputs(result, part, probs, leaked, out_dir)
    return result


def empty_split_message(data: str | Path, split: str, ds: FerData) -> str:
    """Why there is nothing to score; a folder of class folders reads as one train split, so point at 'all'."""
    hint = ""
    if ds.splits() == ["train"] and split != "train":
        hint = "; a folder root/<class>/* reads as the train split: --split all scores every image"
    return f"{data}: the {split!r} split is empty (splits present: {ds.splits()}){hint}"


def write_outputs(result: dict, part: FerData, probs: dict[str, np.ndarray], leaked: np.ndarray, out_dir: str | Path) -> None:
    """Write metrics.json, summary.md, predictions.csv, confusion.png (and confusion_tta.png) into ``out_dir``."""
    from ferkit.plots import plot_confusion, plot_coverage, plot_reliability

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "summary.md").write_text(format_summary(result))
    title = f"{result['architecture']} on {result['split']}"
    plot_confusion(result["confusion_matrix"], result["labels"], out / "confusion.png", f"{title} (acc {result['accuracy']:.3f})")
    cal = result["calibration"]
    plot_reliability(cal["reliability"], out / "reliability.png",
                     f"{title}: ECE {cal['ece']:.3f}, T {result.get('temperature', 1.0):.2f}")
    plot_coverage({result["split_title"]: cal["coverage"]}, out / "coverage.png", f"{result['architecture']}: min confidence")
    if result["tta"]:
        t = result["tta"]
        tta_title = f"{title}, TTA {t['mode']} (acc {t['accuracy']:.3f})"
        plot_confusion(t["confusion_matrix"], t["labels"], out / "confusion_tta.png", tta_title)
    names = result["labels"]
    with open(out / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        modes = list(probs)
        w.writerow(["source", "true", "leaked"] + [c for m in modes for c in (f"pred_{m}", f"confidence_{m}")])
        preds = {m: (p.argmax(1), p.max(1)) for m, p in probs.items()}
        for i in range(len(part)):
            row = [part.sources[i], names[part.labels[i]], int(leaked[i])]
            for m in modes:
                row += [names[preds[m][0][i]], f"{preds[m][1][i]:.4f}"]
            w.writerow(row)
    log.info("wrote metrics.json, summary.md, predictions.csv, confusion, reliability and coverage plots to %s", out)


def _row(name: str, m: dict, extra: str = "") -> str:
    return f"| {name} | {m['accuracy']:.4f} | {m['top2']:.4f} | {m['macro_f1']:.4f} | {m['n']} | {extra} |"


def format_summary(result: dict) -> str:
    """A readable Markdown report of an :func:`evaluate` result."""
    r, tta, lf = result, result["tta"], result["leak_free"]
    lines = [
        f"# Evaluation of {r['architecture']} on {r['split_title']}",
        "",
        f"- model: `{r['model']}`",
        f"- data: `{r['data']}`, split **{r['split_title']}**, {r['n']} images",
        f"- this split is {r['split_role']}.",
    ]
    if any(r["unmapped"].values()):
        left = ", ".join(f"{k} ({v})" for k, v in r["unmapped"].items() if v)
        lines.append(f"- left out images of classes the model does not know: {left}")
    if r.get("never_predicted"):
        lines.append(f"- **warning**: {never_predicted_note(r['never_predicted'])}")
    absent = [n for n in r["labels"] if r["per_class"][n]["support"] == 0]
    if absent:
        lines.append(f"- model classes with no image in this split (left out of macro-F1): {', '.join(absent)}")
    lines += ["", "| figure | accuracy | top-2 | macro-F1 | n | note |", "|---|---:|---:|---:|---:|---|", _row("no TTA", r)]
    if tta:
        lines.append(_row(f"TTA {tta['mode']}", tta, "mean of softmax over views"))
    if lf:
        note = f"{lf['dropped']} images with an identical copy in Training left out"
        lines.append(_row("leak-free, no TTA", lf, note))
        if lf.get("tta"):
            lines.append(_row(f"leak-free, TTA {lf['tta']['mode']}", lf["tta"], note))
    cal = r.get("calibration")
    if cal:
        lines += ["", f"## Calibration (no TTA; temperature {r.get('temperature', 1.0):.3f})", "",
                  (f"{calibration_markdown(cal)}. Accuracy on the most confident half: "
                   f"{100 * cal['accuracy_most_confident_50']:.1f} %, quarter: {100 * cal['accuracy_most_confident_25']:.1f} %."),
                  "", "A face whose top probability is below P is answered 'uncertain' with --min-confidence P:", "",
                  coverage_markdown(cal["coverage"])]
    lines += ["", "## Per class (no TTA)", "", per_class_markdown(r), "",
              "## Confusion matrix (no TTA; rows: true class, columns: predicted)", "", confusion_markdown(r), ""]
    if tta:
        lines += [f"## Confusion matrix (TTA {tta['mode']})", "", confusion_markdown(tta), ""]
    if lf:
        lines += [("Leak-free: FER2013 holds byte-identical copies of some test images in Training "
                   f"(listed in `{lf['duplicates']}`); a model may have memorised them, so the leak-free "
                   "figure leaves them out."), ""]
    return "\n".join(lines)
