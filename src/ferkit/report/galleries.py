"""Galleries of a model's predictions on a dataset split: per class the most confident correct and
wrong predictions, and examples of the most confused class pairs.

``predict_split`` scores a split the way ``ferkit eval`` does (classes matched by
name, the one colour conversion, Preprocess's resize); ``write_galleries`` draws
PNG grids and lists every shown image in ``galleries.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ferkit.engine.preprocess import Preprocess

log = logging.getLogger(__name__)


@dataclass
class SplitPredictions:
    """A split's images (at the dataset's size, in the model's channels), true labels and predicted probabilities."""

    images: np.ndarray  # uint8 (N, H, W) or (N, H, W, 3)
    labels: np.ndarray  # int64 (N,), index into label_names
    probs: np.ndarray  # float (N, K)
    sources: np.ndarray  # (N,) str
    label_names: tuple[str, ...]
    split: str
    model: nn.Module
    pre: Preprocess
    total: int = 0  # images of the split before ``limit`` (0: not known, taken as all)
    seed: int = 0  # of the stratified sample, when there is one
    what: str = ""  # e.g. "test (FER2013 PrivateTest) images"

    @property
    def subset(self) -> str:
        """Which images these are, e.g. "600 of 3,589 test (FER2013 PrivateTest) images (stratified sample, seed 0)"."""
        n, what = len(self.labels), self.what or f"{self.split} images"
        total = max(self.total, n)
        if n < total:
            return f"{n:,} of {total:,} {what} (stratified sample, seed {self.seed})"
        return f"all {n:,} {what}"

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def confidence(self) -> np.ndarray:
        return self.probs.max(1)


def predict_split(model_spec: str | Path = "default", data: str | Path | None = None, split: str = "test",
                  limit: int = 0, seed: int = 0, device: str = "auto", batch_size: int = 256) -> SplitPredictions:
    """Load a model (checkpoint, run folder or ``"default"``) and predict every image of one split of ``data``
    (``"all"``: every image).

    ``data`` defaults to the dataset the model was trained on; ``limit`` > 0 keeps a seeded,
    class-stratified subset of that many images (quick looks at large splits).
    """
    from ferkit import labels as L
    from ferkit.data.dataset import canonical_split
    from ferkit.data.readers import load_dataset
    from ferkit.engine.checkpoint import build_from_checkpoint, load_checkpoint
    from ferkit.engine.evaluate import empty_split_message, split_images, trained_dataset
    from ferkit.engine.builders import stratified_subset
    from ferkit.engine.steps import images_to_tensor, predict_probs
    from ferkit.runtime import select_device
    from ferkit.imageio import to_model_channels

    split = canonical_split(split, allow_all=True)
    ckpt = load_checkpoint(model_spec)
    model, pre = build_from_checkpoint(ckpt)
    device = select_device(device)
    model = model.to(device).eval()
    if data is None:
        data = trained_dataset(ckpt.get("config") or {}, ckpt["path"])
    ds = load_dataset(data)
    part = ds.subset(split)
    if len(part) == 0:
        raise ValueError(empty_split_message(data, split, ds))
    if (L.mapping(part.label_names, pre.label_names) < 0).all():
        raise ValueError(f"{data}: its classes {list(part.label_names)} share no name with the model's {list(pre.label_names)}")
    part = part.remap(pre.label_names)
    total, what = len(part), split_images(part, split)
    part = stratified_subset(part, limit, seed)
    images = part.images
    if part.channels != pre.channels:
        images = np.stack([to_model_channels(im, pre.channels) for im in images])
    probs = predict_probs(model, images_to_tensor(pre.prepare_images(images)).to(device), pre, "none", batch_size)
    sp = SplitPredictions(images, part.labels, probs, part.sources, tuple(pre.label_names), split, model, pre,
                          total=total, seed=seed, what=what)
    log.info("predicted %s of %s with %s", sp.subset, data, ckpt["path"])
    return sp


def confused_pairs(labels: np.ndarray, pred: np.ndarray, num_classes: int, k: int = 4) -> list[tuple[int, int, int]]:
    """The ``k`` most frequent (true, predicted, count) mistakes, most frequent first."""
    cm = np.bincount(labels * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    np.fill_diagonal(cm, 0)
    order = np.argsort(-cm, axis=None, kind="stable")
    out = []
    for flat in order[:k]:
        t, p = divmod(int(flat), num_classes)
        if cm[t, p] > 0:
            out.append((t, p, int(cm[t, p])))
    return out


def _top(index: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    return index[np.argsort(-score[index], kind="stable")[:n]]


def select_examples(sp: SplitPredictions, n: int = 8, pairs: int = 4) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Indices to show: ``{"correct": [(class, idx)], "wrong": [(class, idx)], "confused": [("a -> b (count)", idx)]}``.

    Correct: the class's most confident right predictions. Wrong: images of the class
    predicted as another class, most confident first. Confused: for each of the most
    frequent (true, predicted) mistakes, its most confident examples.
    """
    pred, conf, y = sp.pred, sp.confidence, sp.labels
    out: dict[str, list] = {"correct": [], "wrong": [], "confused": []}
    for c, name in enumerate(sp.label_names):
        out["correct"].append((name, _top(np.where((y == c) & (pred == c))[0], conf, n)))
        out["wrong"].append((name, _top(np.where((y == c) & (pred != c))[0], conf, n)))
    for t, p, count in confused_pairs(y, pred, len(sp.label_names), pairs):
        idx = _top(np.where((y == t) & (pred == p))[0], conf, n)
        out["confused"].append((f"{sp.label_names[t]} → {sp.label_names[p]} ({count})", idx))
    return out


def _draw(sp: SplitPredictions, rows: list[tuple[str, np.ndarray]], n: int, path: Path, title: str, show_pred: bool) -> None:
    from ferkit.plots.figures import plot_image_grid

    def cap(i: int) -> str:
        return f"{sp.label_names[sp.pred[i]]} {sp.confidence[i]:.2f}" if show_pred else f"{sp.confidence[i]:.2f}"

    cells = [(label, [(sp.images[int(i)], cap(int(i))) for i in idx[:n]]) for label, idx in rows]
    plot_image_grid(cells, n, path, title)


def write_galleries(sp: SplitPredictions, out_dir: str | Path, n: int = 8, pairs: int = 4) -> dict[str, Path]:
    """Write ``gallery_correct.png``, ``gallery_wrong.png``, ``gallery_confused.png``, ``galleries.csv`` and
    ``galleries.json`` (which images the galleries were drawn from, and the accuracy on them) into ``out_dir``.

    Returns ``{kind: path}``. Captions give the predicted class (wrong / confused) and its probability; each
    title names the images scored, which may be a sample of the split (``limit``), not the whole of it.
    """
    from ferkit.metrics import classification_metrics, never_predicted, never_predicted_note

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ex = select_examples(sp, n, pairs)
    acc = float((sp.pred == sp.labels).mean())
    missing = never_predicted(classification_metrics(sp.labels, sp.probs, sp.label_names))
    if missing:
        log.warning("%s: %s", sp.subset, never_predicted_note(missing))
    what = f"gallery: {sp.subset}; accuracy on them {100 * acc:.2f} %"
    paths = {}
    titles = {
        "correct": (f"most confident correct predictions per class\n{what}\ncaption: probability", False),
        "wrong": (f"most confident wrong predictions per true class\n{what}\ncaption: predicted class, probability", True),
        "confused": (f"most confused class pairs: true → predicted (count)\n{what}\ncaption: predicted class, probability",
                     True),
    }
    for kind, (title, show_pred) in titles.items():
        paths[kind] = out / f"gallery_{kind}.png"
        _draw(sp, ex[kind], n, paths[kind], title, show_pred)
    paths["json"] = out / "galleries.json"
    paths["json"].write_text(json.dumps({"subset": sp.subset, "split": sp.split, "n": len(sp.labels),
                                         "total": max(sp.total, len(sp.labels)), "seed": sp.seed, "accuracy": acc,
                                         "never_predicted": missing}, indent=2))
    paths["csv"] = out / "galleries.csv"
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["gallery", "row", "rank", "source", "true", "predicted", "confidence"])
        for kind in ("correct", "wrong", "confused"):
            for label, idx in ex[kind]:
                for rank, i in enumerate(idx, 1):
                    w.writerow([kind, label, rank, sp.sources[i], sp.label_names[sp.labels[i]],
                                sp.label_names[sp.pred[i]], f"{sp.confidence[i]:.4f}"])
    log.info("wrote galleries of %s to %s", what, out)
    return paths
