"""Classification metrics from labels and probabilities (numpy only, hand-checkable)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of samples of true class i predicted as j."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, label_names: list[str] | tuple[str, ...]) -> dict:
    """Accuracy, top-2, per-class precision/recall/F1/support, macro-F1 and the confusion matrix.

    ``probs``: ``(N, K)`` scores (probabilities or logits; only their order matters).
    A class with no predictions has precision 0; with no samples, recall 0 (support shows why).
    """
    y_true = np.asarray(y_true, np.int64)
    probs = np.asarray(probs)
    k = len(label_names)
    pred = probs.argmax(1)
    cm = confusion_matrix(y_true, pred, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    n = len(y_true)
    top2 = float(np.mean((np.argsort(-probs, 1)[:, :2] == y_true[:, None]).any(1))) if n and k >= 2 else float("nan")
    present = support > 0
    return {
        "n": int(n),
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "top2": top2,
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "labels": list(label_names),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": cm.tolist(),
    }


def per_class_markdown(m: dict) -> str:
    """A Markdown table of per-class precision, recall, F1 and support from :func:`classification_metrics` output."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name in m["labels"]:
        c = m["per_class"][name]
        lines.append(f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |")
    return "\n".join(lines)


def confusion_markdown(m: dict) -> str:
    """The confusion matrix as a Markdown table of counts (rows: true class, columns: predicted class)."""
    names = m["labels"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " | total |", "|---" + "|---:" * (len(names) + 1) + "|"]
    for name, row in zip(names, m["confusion_matrix"]):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + f" | {sum(row)} |")
    return "\n".join(lines)


def never_predicted(m: dict) -> list[str]:
    """Classes with images in the split that the model never predicts (their F1 is 0 by construction).

    A collapsed class is easy to miss behind a fair accuracy, so reports and logs call it out.
    """
    cm = np.asarray(m["confusion_matrix"])
    return [name for i, name in enumerate(m["labels"]) if cm[i].sum() > 0 and cm[:, i].sum() == 0]


def never_predicted_note(names: list[str]) -> str:
    """The warning sentence for :func:`never_predicted` classes ("" when there are none)."""
    if not names:
        return ""
    return (f"the model never predicts {', '.join(names)} on these images (F1 = 0): "
            f"{'that class is' if len(names) == 1 else 'those classes are'} missed entirely, whatever the accuracy")
