"""Galleries of a model's predictions on a dataset split: per class the most confident correct and
wrong predictions, and examples of the most confused class pairs.

The predictions are :func:`ferkit.engine.evaluate.predict_split`'s, the path ``ferkit eval`` scores through
(classes matched by name, the labels training used: FER+ votes, ``join_csv``; checkpoints, ensembles and
``.onnx`` files; ``limit`` for a stratified sample); ``write_galleries`` draws PNG grids of the dataset's images
and lists every shown image in ``galleries.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from ferkit.engine.evaluate import SplitPredictions

log = logging.getLogger(__name__)


def _answers(sp: SplitPredictions) -> tuple[np.ndarray, np.ndarray]:
    """``(predicted class, its probability)`` per image, without test-time augmentation."""
    p = sp.probs["none"]  # (N, K) calibrated, over sp.pre.label_names
    return p.argmax(1), p.max(1)


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
    (pred, conf), y, names = _answers(sp), sp.part.labels, sp.pre.label_names
    out: dict[str, list] = {"correct": [], "wrong": [], "confused": []}
    for c, name in enumerate(names):
        out["correct"].append((name, _top(np.where((y == c) & (pred == c))[0], conf, n)))
        out["wrong"].append((name, _top(np.where((y == c) & (pred != c))[0], conf, n)))
    for t, p, count in confused_pairs(y, pred, len(names), pairs):
        idx = _top(np.where((y == t) & (pred == p))[0], conf, n)
        out["confused"].append((f"{names[t]} → {names[p]} ({count})", idx))
    return out


def _draw(sp: SplitPredictions, rows: list[tuple[str, np.ndarray]], n: int, path: Path, title: str, show_pred: bool) -> None:
    from ferkit.plots.figures import plot_image_grid

    pred, conf = _answers(sp)

    def cap(i: int) -> str:
        return f"{sp.pre.label_names[pred[i]]} {conf[i]:.2f}" if show_pred else f"{conf[i]:.2f}"

    # the dataset's own images (size, grey or colour), not the model's input
    cells = [(label, [(sp.part.images[int(i)], cap(int(i))) for i in idx[:n]]) for label, idx in rows]
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
    (pred, conf), y, names = _answers(sp), sp.part.labels, sp.pre.label_names
    acc = float((pred == y).mean())
    missing = never_predicted(classification_metrics(y, sp.probs["none"], names))
    if missing:
        log.warning("%s: %s", sp.subset, never_predicted_note(missing))
    what = f"gallery: {sp.subset}; accuracy on them {100 * acc:.2f} %" + (f"; labels: {sp.labels_from}" if sp.labels_from else "")
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
    paths["json"].write_text(json.dumps({"subset": sp.subset, "split": sp.split, "n": len(y), "total": max(sp.total, len(y)),
                                         "seed": sp.seed, "accuracy": acc, "never_predicted": missing,
                                         "labels_from": sp.labels_from}, indent=2))
    paths["csv"] = out / "galleries.csv"
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["gallery", "row", "rank", "source", "true", "predicted", "confidence"])
        for kind in ("correct", "wrong", "confused"):
            for label, idx in ex[kind]:
                for rank, i in enumerate(idx, 1):
                    w.writerow([kind, label, rank, sp.part.sources[i], names[y[i]], names[pred[i]], f"{conf[i]:.4f}"])
    log.info("wrote galleries of %s to %s", what, out)
    return paths
