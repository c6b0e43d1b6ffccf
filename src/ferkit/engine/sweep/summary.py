"""Comparing a sweep's runs: ``runs.csv``, ``summary.csv``, ``summary.md`` and the two plots.

Everything here reads the sweep folder only, so a summary can be rewritten at any time
(while runs go on, or after some failed) by :func:`summarize_sweep`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import yaml

from ferkit.engine.sweep.spec import Sweep, failed_marker, read_sweep, run_status
from ferkit.plots import plot_sweep_bars
from ferkit.plots import plot_sweep_curves as _plot_curves

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["config", "n_seeds", "val_acc_mean", "val_acc_std", "test_acc_mean", "test_acc_std",
                   "test_macro_f1_mean", "epochs_mean", "best_epoch_mean", "train_s_mean", "overrides"]
RUN_COLUMNS = ["config", "seed", "status", "best_val_acc", "best_epoch", "test_acc", "test_macro_f1", "epochs_run",
               "train_s", "train_images", "run_dir"]


def _read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def _mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    return float(np.mean(xs)), float(np.std(xs, ddof=1)) if len(xs) > 1 else float("nan")


def collect_runs(out_dir: str | Path, sweep: Sweep | None = None) -> list[dict]:
    """One dict per planned run of a sweep folder: status, best val / test accuracy, epochs, train time, curve."""
    out = Path(out_dir)
    sweep = sweep or read_sweep(out)
    rows = []
    for name, _ in sweep.configs:
        for seed in sweep.seeds:
            run_dir = out / name / f"seed{seed}"
            hist = _read_metrics(run_dir)
            status = run_status(run_dir)
            if status != "done" and failed_marker(run_dir).is_file():
                status = "failed: " + failed_marker(run_dir).read_text().strip()[:200]
            row: dict = {"config": name, "seed": seed, "status": status, "run_dir": str(run_dir),
                         "val_curve": [h.get("val_acc", float("nan")) for h in hist],
                         "train_s": float(sum(h.get("epoch_s", 0.0) for h in hist)) if hist else float("nan"),
                         "epochs_run": len(hist), "best_val_acc": float("nan"), "best_epoch": float("nan"),
                         "test_acc": float("nan"), "test_macro_f1": float("nan"), "train_images": float("nan")}
            if row["status"] == "done":
                s = json.loads((run_dir / "summary.json").read_text())
                test = s.get("test") or {}
                row.update(best_val_acc=float(s["best_val_acc"]), best_epoch=int(s["best_epoch"]),
                           epochs_run=int(s["epochs_run"]), test_acc=float(test.get("accuracy", float("nan"))),
                           test_macro_f1=float(test.get("macro_f1", float("nan"))), train_images=int(s.get("train_images", 0)))
            rows.append(row)
    return rows


def _overrides_text(over: dict) -> str:
    def flat(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            text = v if isinstance(v, str) and v and not re.search(r"[\s,:{}\[\]]", v) else json.dumps(v)
            out += flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [f"{prefix}{k}={text}"]
        return out

    return " ".join(flat(over))


def summarize_runs(sweep: Sweep, runs: list[dict]) -> list[dict]:
    """Per-configuration rows (:data:`SUMMARY_COLUMNS`) from :func:`collect_runs` output; only finished runs count."""
    out = []
    for name, over in sweep.configs:
        done = [r for r in runs if r["config"] == name and r["status"] == "done"]
        v, vs = _mean_std([r["best_val_acc"] for r in done])
        t, ts = _mean_std([r["test_acc"] for r in done])
        out.append({
            "config": name, "n_seeds": len(done), "val_acc_mean": v, "val_acc_std": vs, "test_acc_mean": t, "test_acc_std": ts,
            "test_macro_f1_mean": _mean_std([r["test_macro_f1"] for r in done])[0],
            "epochs_mean": _mean_std([r["epochs_run"] for r in done])[0],
            "best_epoch_mean": _mean_std([r["best_epoch"] for r in done])[0],
            "train_s_mean": _mean_std([r["train_s"] for r in done])[0],
            "overrides": _overrides_text(over),
        })
    return out


def _pct(m: float, s: float) -> str:
    if math.isnan(m):
        return "–"
    return f"{100 * m:.2f} ± {100 * s:.2f}" if not math.isnan(s) else f"{100 * m:.2f}"


def summary_markdown(sweep: Sweep, rows: list[dict], runs: list[dict]) -> str:
    """The sweep's summary table as Markdown, with what each column means."""
    first_done = next((r for r in runs if r["status"] == "done"), None)
    cfg0 = None
    if first_done is not None:
        saved = Path(first_done["run_dir"]) / "config.yaml"
        cfg0 = yaml.safe_load(saved.read_text()) if saved.is_file() else None
    lines = ["# Sweep summary", ""]
    if sweep.notes:
        lines += [sweep.notes.strip(), ""]
    lines += [f"- base recipe: `{sweep.recipe or '(defaults)'}`; fixed overrides: `{_overrides_text(sweep.fixed) or 'none'}`",
              f"- seeds: {', '.join(map(str, sweep.seeds))}; {len(sweep.configs)} configurations"]
    if cfg0:
        n_train = first_done["train_images"]
        kw = f" {cfg0['model_kwargs']}" if cfg0.get("model_kwargs") else ""
        lines.append(f"- scale: model `{cfg0['model']}`{kw}, {n_train} training images "
                     f"(train_limit={cfg0.get('train_limit')}), up to {cfg0.get('epochs')} epochs, data `{cfg0.get('data')}`")
    best = max((r for r in rows if not math.isnan(r["val_acc_mean"])), key=lambda r: r["val_acc_mean"], default=None)
    lines += [
        ("- **best val acc**: the best validation-split accuracy over the epochs (for FER2013: PublicTest), which selects "
         "the epoch; **test acc**: test-split accuracy (for FER2013: PrivateTest) of that epoch's weights, no TTA. "
         "Mean ± sample standard deviation over the finished seeds, in %."),
        "- **train time**: wall time of the training epochs of one run (mean over seeds), seconds.",
        "",
        "| configuration | seeds | best val acc (%) | test acc (%) | test macro-F1 | epochs | best epoch | train time (s) | overrides |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        name = f"**{r['config']}**" if best is not None and r is best else r["config"]
        f1 = "–" if math.isnan(r["test_macro_f1_mean"]) else f"{r['test_macro_f1_mean']:.3f}"
        num = (lambda x, d=1: "–" if math.isnan(x) else f"{x:.{d}f}")
        lines.append(f"| {name} | {r['n_seeds']} | {_pct(r['val_acc_mean'], r['val_acc_std'])} | "
                     f"{_pct(r['test_acc_mean'], r['test_acc_std'])} | {f1} | {num(r['epochs_mean'])} | "
                     f"{num(r['best_epoch_mean'])} | {num(r['train_s_mean'], 0)} | `{r['overrides'] or '-'}` |")
    missing = [f"{r['config']}/seed{r['seed']} ({r['status']})" for r in runs if r["status"] != "done"]
    if missing:
        lines += ["", f"Not finished (left out of the table): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in columns})


def plot_sweep_curves(sweep: Sweep, runs: list[dict], path: str | Path) -> None:
    """Validation accuracy per epoch of every configuration of ``sweep`` (see :func:`ferkit.plots.plot_sweep_curves`)."""
    # ferkit.plots sits below the engine and knows no Sweep: it takes the configuration names, in order
    _plot_curves([name for name, _ in sweep.configs], runs, path)


def summarize_sweep(out_dir: str | Path) -> list[dict]:
    """(Re)write runs.csv, summary.csv, summary.md, curves.png and bars.png of a sweep folder; returns the summary rows."""
    out = Path(out_dir)
    sweep = read_sweep(out)
    runs = collect_runs(out, sweep)
    rows = summarize_runs(sweep, runs)
    _write_csv(out / "runs.csv", runs, RUN_COLUMNS)
    _write_csv(out / "summary.csv", rows, SUMMARY_COLUMNS)
    (out / "summary.md").write_text(summary_markdown(sweep, rows, runs))
    plot_sweep_curves(sweep, runs, out / "curves.png")
    plot_sweep_bars(rows, out / "bars.png")
    log.info("wrote summary.csv, summary.md, runs.csv, curves.png and bars.png to %s", out)
    return rows
