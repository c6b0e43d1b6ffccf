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


# ------------------------------------------------------------------ calibration

ECE_BINS = 15
COVERAGE_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(10))  # P = 0.0, 0.1, ..., 0.9


def calibration_metrics(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> dict:
    """How far the top probability can be trusted: expected calibration error, Brier score, NLL.

    ``probs``: ``(N, K)`` probabilities. A row of zeros is an answer not given (a face the detector missed):
    confidence 0, wrong, in ECE, Brier and the reliability bins; it is left out of the NLL (``nll_n`` says how
    many rows it averages). ECE (Guo et al. 2017): the mean of |accuracy - confidence| over ``bins``
    equal-width confidence bins, weighted by their share of samples. Brier: the mean over samples of the
    squared distance between the probability vector and the one-hot truth (0 best, 2 worst).
    """
    y = np.asarray(y_true, np.int64)
    p = np.asarray(probs, np.float64)
    n = len(y)
    if n == 0:
        return {"ece": float("nan"), "brier": float("nan"), "nll": float("nan"), "nll_n": 0, "mean_confidence": float("nan"),
                "reliability": {"bins": bins, "count": [0] * bins, "confidence": [None] * bins, "accuracy": [None] * bins}}
    conf = p.max(1)
    correct = (p.argmax(1) == y) & (conf > 0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(np.float64), minlength=bins)
    filled = count > 0
    bin_conf = np.divide(conf_sum, count, out=np.zeros(bins), where=filled)
    bin_acc = np.divide(acc_sum, count, out=np.zeros(bins), where=filled)
    ece = float(np.sum(count * np.abs(bin_acc - bin_conf)) / n)
    onehot = np.zeros_like(p)
    onehot[np.arange(n), y] = 1.0
    brier = float(((p - onehot) ** 2).sum(1).mean())
    answered = p.sum(1) > 0
    nll = float(-np.log(np.clip(p[answered, y[answered]], 1e-12, 1.0)).mean()) if answered.any() else float("nan")
    return {
        "ece": ece,
        "brier": brier,
        "nll": nll,
        "nll_n": int(answered.sum()),
        "mean_confidence": float(conf.mean()),
        "reliability": {
            "bins": bins,
            "count": count.tolist(),
            "confidence": [float(c) if f else None for c, f in zip(bin_conf, filled)],
            "accuracy": [float(a) if f else None for a, f in zip(bin_acc, filled)],
        },
    }


def coverage_curve(y_true: np.ndarray, probs: np.ndarray, thresholds=COVERAGE_THRESHOLDS) -> list[dict]:
    """For each threshold P: the share of samples whose top probability is at least P (answered, the rest
    "uncertain") and the accuracy on those. A row of zeros (no answer) is never answered above P = 0."""
    y = np.asarray(y_true, np.int64)
    p = np.asarray(probs, np.float64)
    conf = p.max(1) if len(p) else np.zeros(0)
    correct = (p.argmax(1) == y) & (conf > 0) if len(p) else np.zeros(0, bool)
    rows = []
    for t in thresholds:
        keep = conf >= t if t > 0 else np.ones(len(y), bool)
        rows.append({"threshold": float(t), "coverage": float(keep.mean()) if len(y) else float("nan"),
                     "accuracy": float(correct[keep].mean()) if keep.any() else float("nan"), "n": int(keep.sum())})
    return rows


def accuracy_of_most_confident(y_true: np.ndarray, probs: np.ndarray, share: float) -> float:
    """Accuracy on the ``share`` (0-1] of samples with the highest top probability (ties broken by order)."""
    y = np.asarray(y_true, np.int64)
    p = np.asarray(probs, np.float64)
    k = max(1, int(round(share * len(y))))
    if len(y) == 0:
        return float("nan")
    conf = p.max(1)
    top = np.argsort(-conf, kind="stable")[:k]
    return float(((p[top].argmax(1) == y[top]) & (conf[top] > 0)).mean())


def rescale_probs(probs: np.ndarray, factor: float) -> np.ndarray:
    """Probabilities at ``factor`` x the temperature they were made with: ``softmax(log(p) / factor)``, exact for
    softmax outputs up to the 1e-12 floor. Rows of zeros (answers not given) stay zero; float32 out."""
    p = np.asarray(probs, np.float64)
    if factor == 1.0:
        return p.astype(np.float32)
    z = np.log(np.clip(p, 1e-12, 1.0)) / factor
    q = np.exp(z - z.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    return np.where(p.sum(1, keepdims=True) > 0, q, 0.0).astype(np.float32)


def fit_temperature(log_probs: np.ndarray, y_true: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The temperature T that minimises the NLL of ``softmax(log_probs / T)`` on labels ``y_true``.

    ``log_probs``: ``(N, K)`` logits, or log-probabilities of an already calibrated model (the result then
    multiplies its temperature). One scalar, so the argmax never changes (Guo et al. 2017). Golden-section
    search on log T (the NLL is unimodal in it), to a relative precision of 1e-4.
    """
    z = np.asarray(log_probs, np.float64)
    y = np.asarray(y_true, np.int64)
    if len(y) == 0:
        raise ValueError("fit_temperature: no samples")

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(1, keepdims=True)
        return float((np.log(np.exp(s).sum(1)) - s[np.arange(len(y)), y]).mean())

    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5.0) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(c), nll(d)
    while b - a > 1e-4:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(d)
    return float(np.exp((a + b) / 2))


def calibration_markdown(cal: dict) -> str:
    """One line of calibration figures for reports."""
    return (f"ECE ({cal['reliability']['bins']} bins) {cal['ece']:.3f}, Brier {cal['brier']:.3f}, "
            f"NLL {cal['nll']:.3f}, mean confidence {cal['mean_confidence']:.3f}")


def coverage_markdown(rows: list[dict]) -> str:
    """A Markdown table of :func:`coverage_curve` rows."""
    lines = ["| min confidence P | answered (coverage) | accuracy on answered | n answered |", "|---:|---:|---:|---:|"]
    for r in rows:
        acc = "—" if r["accuracy"] != r["accuracy"] else f"{100 * r['accuracy']:.1f} %"
        lines.append(f"| {r['threshold']:.1f} | {100 * r['coverage']:.1f} % | {acc} | {r['n']} |")
    return "\n".join(lines)
