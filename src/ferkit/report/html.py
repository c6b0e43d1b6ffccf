"""Self-contained HTML reports of a run folder or a sweep folder.

One file, no network: every image is a base64 ``data:`` URI and the CSS is inline,
so the report opens offline, in a mail attachment, or archived beside the run.

- A **run** report: headline figures, learning curves, confusion matrix and
  per-class table on the test split (from an existing ``eval*/metrics.json`` of that
  split, else evaluated now into ``RUN/eval_<split>/``), a saliency / Grad-CAM grid,
  the resolved config and the environment.
- A **sweep** report: the summary table, the comparison plots, every run's status,
  the sweep definition and the environment.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import platform
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from ferkit.engine.classify import ModelRef

log = logging.getLogger(__name__)

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.sub{color:#666;margin-top:0}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}.figs{display:flex;flex-wrap:wrap;gap:1em}
.kpi{display:inline-block;margin:.3em 1.2em .3em 0}.kpi b{display:block;font-size:1.4em}.note{color:#666;font-size:.9em}
code{background:#f4f4f4;padding:0 .2em}table.kv td{text-align:left}
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:.4em .8em}
"""


def kind_of(folder: str | Path) -> str:
    """``"run"`` (config.yaml with metrics.csv or a checkpoint), ``"sweep"`` (sweep.yaml); else a clear error."""
    p = Path(folder)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such folder")
    if not p.is_dir():
        raise ValueError(f"{p}: not a folder; give a run folder (from ferkit train) or a sweep folder (from ferkit sweep)")
    if (p / "sweep.yaml").is_file():
        return "sweep"
    if (p / "config.yaml").is_file() and any((p / n).is_file() for n in ("metrics.csv", "best.pt", "last.pt")):
        return "run"
    raise ValueError(f"{p}: neither a run folder (config.yaml with metrics.csv / best.pt, from ferkit train) "
                     "nor a sweep folder (sweep.yaml, from ferkit sweep)")


# ------------------------------------------------------------------ pieces


def data_uri(png: bytes | str | Path) -> str:
    """A PNG file or its bytes as a ``data:image/png;base64,...`` URI."""
    raw = png if isinstance(png, bytes) else Path(png).read_bytes()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def _img(png: bytes | str | Path, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{html.escape(alt)}">'


def _fig_bytes(draw) -> bytes:
    """PNG bytes of a plot function that writes to a path-like (matplotlib accepts a buffer)."""
    buf = io.BytesIO()
    draw(buf)
    return buf.getvalue()


def _table(header: list[str], rows: list[list], raw: bool = False, cls: str = "") -> str:
    esc = (lambda v: str(v)) if raw else (lambda v: html.escape(str(v)))
    attr = f' class="{cls}"' if cls else ""
    out = [f"<table{attr}><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>" for r in rows]
    return "\n".join(out) + "</tbody></table>"


def environment() -> dict[str, str]:
    """Python, torch, torchvision, numpy, OS, CPU and ferkit versions, and the time now."""
    import numpy
    import torch

    from ferkit.runtime import cpu_name

    try:
        from importlib.metadata import version

        ferkit_version = version("ferkit")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source checkout)
        ferkit_version = "unknown (not installed)"
    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:
        tv = "not installed"
    return {
        "ferkit": ferkit_version,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": tv,
        "numpy": numpy.__version__,
        "os": platform.platform(),
        "cpu": cpu_name(),
        "torch threads": str(torch.get_num_threads()),
        "generated": _dt.datetime.now().isoformat(timespec="seconds"),
    }


def _env_section() -> str:
    return "<h2>Environment</h2>" + _table(["", "value"], [[k, v] for k, v in environment().items()], cls="kv")


def _page(title: str, subtitle: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"sub\">{html.escape(subtitle)}</p>\n" + "\n".join(body) + "\n</body></html>\n")


def _pct(x) -> str:
    return "–" if x is None else f"{100 * float(x):.2f}%"


# ------------------------------------------------------------------ run report


def _find_eval(run: Path, split: str) -> dict | None:
    for m in sorted(run.glob("eval*/metrics.json")):
        try:
            d = json.loads(m.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if d.get("split") == split and "confusion_matrix" in d:
            d["_dir"] = str(m.parent)
            return d
    return None


def _saliency_png(ref: ModelRef, data: str | None, split: str, n: int, seed: int = 0) -> tuple[bytes, str]:
    """A saliency grid of ``n`` images of the split, one per class in turn, labelled as :func:`evaluate` labels them
    (the model's own dataset with the labels it was trained with, e.g. FER+ votes)."""
    import numpy as np

    from ferkit.engine.evaluate import load_eval_data, model_part, split_images
    from ferkit.report.saliency import explain_images, save_explanation_grid

    model, pre = ref.build("cpu")
    ds, data_path, _ = load_eval_data(data, ref.config, ref)
    part = model_part(ds, split, pre, data_path)[0]
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.where(part.labels == c)[0]) for c in range(len(pre.label_names))]
    pick = [int(ix[r]) for r in range(max(map(len, per_class), default=0)) for ix in per_class if r < len(ix)][:n]
    if not pick:
        raise ValueError(f"{data}: no {split} images of the model's classes to explain")
    ex = explain_images(model, pre, part.images[pick], labels=part.labels[pick], names=list(part.sources[pick]))
    what = f"saliency: {len(pick)} of the {len(part):,} {split_images(part, split)} (one per class in turn, seed {seed})"
    buf = io.BytesIO()
    save_explanation_grid(ex, buf, title=what)
    return buf.getvalue(), f"{what}, of {data_path}"


def _gallery_captions(run: Path, ev: dict) -> list[str]:
    """The explain galleries of a run folder, each captioned with the images it was drawn from (galleries.json):
    ``ferkit explain --limit`` scores a sample, whose accuracy differs from the evaluation's."""
    out = []
    for folder in sorted({g.parent for g in run.glob("explain*/gallery_*.png")}):
        meta = {}
        if (folder / "galleries.json").is_file():
            try:
                meta = json.loads((folder / "galleries.json").read_text())
            except (OSError, json.JSONDecodeError):
                meta = {}
        if meta:
            note = (f"galleries from {folder.name}/: {meta['subset']}; accuracy on them {_pct(meta['accuracy'])} "
                    f"(the evaluation above: {ev['n']:,} images, {_pct(ev['accuracy'])})")
        else:
            note = f"galleries from {folder.name}/: which images they were drawn from is not recorded (an older ferkit explain)"
        out.append(f'<p class="note">{html.escape(note)}</p>')
        out += [_img(g, g.stem) for g in sorted(folder.glob("gallery_*.png"))]
    return out


def run_report(run_dir: str | Path, data: str | None = None, split: str = "test", n: int = 8) -> str:
    """The HTML text of a run folder's report (evaluates the split first when no evaluation of it exists)."""
    from ferkit.data.dataset import canonical_split
    from ferkit.engine.classify import ModelRef
    from ferkit.metrics import never_predicted, never_predicted_note
    from ferkit.plots import plot_confusion, plot_curves, plot_reliability

    run = Path(run_dir)
    split = canonical_split(split, allow_all=True)
    cfg = yaml.safe_load((run / "config.yaml").read_text()) or {}
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else None
    body = []

    # headline
    kpis = []
    if summary:
        test = summary.get("test") or {}
        kpis += [("best val accuracy", _pct(summary.get("best_val_acc"))),
                 ("best epoch", f"{summary.get('best_epoch')} of {summary.get('epochs_run')}"),
                 ("test accuracy (selected epoch)", _pct(test.get("accuracy"))),
                 ("test macro-F1", f"{test.get('macro_f1', float('nan')):.3f}"),
                 ("training images", str(summary.get("train_images")))]
    else:
        kpis.append(("status", "unfinished: no summary.json yet"))
    body.append("<div>" + "".join(f'<span class="kpi">{html.escape(k)}<b>{html.escape(v)}</b></span>' for k, v in kpis) + "</div>")
    body.append('<p class="note">The validation split (for FER2013: PublicTest) selects the epoch; the test split (for '
                "FER2013: PrivateTest) is reported, without test-time augmentation unless stated.</p>")

    # curves
    import csv

    hist = []
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv", newline="") as fh:
            hist = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    body.append("<h2>Learning curves</h2>")
    if hist:
        body.append(_img(_fig_bytes(lambda b: plot_curves(hist, b, title=f"{cfg.get('model')}")), "learning curves"))
        body.append(_table(["epoch", "lr", "train loss", "train acc", "val loss", "val acc", "val macro-F1", "epoch s"],
                           [[int(h["epoch"]), f"{h['lr']:.3g}", f"{h['train_loss']:.3f}", f"{h['train_acc']:.4f}",
                             f"{h['val_loss']:.3f}", f"{h['val_acc']:.4f}", f"{h['val_macro_f1']:.3f}", f"{h['epoch_s']:.1f}"]
                            for h in hist]))
    else:
        body.append('<p class="note">no epoch finished yet (no metrics.csv)</p>')

    # evaluation
    ev = None if data else _find_eval(run, split)
    if ev is not None:  # from an earlier evaluation (evaluate() logs the warning when it runs now)
        ev.setdefault("never_predicted", never_predicted(ev))
        if ev["never_predicted"]:
            log.warning("%s: %s", ev["model"], never_predicted_note(ev["never_predicted"]))
    ref = None  # the run's model, resolved once for the evaluation and the saliency grid
    if ev is None and any((run / n_).is_file() for n_ in ("best.pt", "last.pt")):
        from ferkit.engine.evaluate import evaluate

        out = run / f"eval_{split}" if not data else None
        log.info("no evaluation of the %s split in %s: evaluating now", split, run)
        ref = ModelRef.resolve(run)
        ev = evaluate(ref, data=data, split=split, out_dir=out, device="cpu")
        ev["_dir"] = str(out) if out else ""
    body.append(f"<h2>Evaluation: {html.escape(ev['split_title'] if ev else split)}</h2>")
    if ev:
        body.append(f"<p>{html.escape(ev['model'])} on <code>{html.escape(ev['data'])}</code>, {ev['n']} images: "
                    f"accuracy <b>{_pct(ev['accuracy'])}</b>, top-2 {_pct(ev['top2'])}, macro-F1 {ev['macro_f1']:.3f}. "
                    f"This split is {html.escape(ev['split_role'])}.</p>")
        if ev.get("never_predicted"):
            body.append(f'<p class="warn"><b>Warning:</b> {html.escape(never_predicted_note(ev["never_predicted"]))}.</p>')
        if ev.get("leak_free"):
            lf = ev["leak_free"]
            body.append(f"<p>Leak-free (without the {lf['dropped']} images that have an identical copy in Training): "
                        f"accuracy {_pct(lf['accuracy'])}, macro-F1 {lf['macro_f1']:.3f}.</p>")
        cm_png = _fig_bytes(lambda b: plot_confusion(ev["confusion_matrix"], ev["labels"], b,
                                                     f"{ev['architecture']} on {ev['split']} (acc {ev['accuracy']:.3f})"))
        rows = [[name, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", c["support"]]
                for name, c in ev["per_class"].items()]
        body.append('<div class="figs"><div>' + _img(cm_png, "confusion matrix") + "</div><div><h3>Per class</h3>"
                    + _table(["class", "precision", "recall", "F1", "support"], rows) + "</div></div>")
        cal = ev.get("calibration")  # absent in evaluations written before calibration was measured
        if cal:
            rel_png = _fig_bytes(lambda b: plot_reliability(cal["reliability"], b, f"ECE {cal['ece']:.3f}"))
            cov = [[f"{r['threshold']:.1f}", _pct(r["coverage"]), "—" if r["accuracy"] != r["accuracy"] else _pct(r["accuracy"])]
                   for r in cal["coverage"]]
            body.append("<h3>Calibration</h3>"
                        f"<p>Temperature {ev.get('temperature', 1.0):.3f}. ECE (15 bins) <b>{cal['ece']:.3f}</b>, Brier "
                        f"{cal['brier']:.3f}, NLL {cal['nll']:.3f}, mean confidence {_pct(cal['mean_confidence'])}; accuracy on "
                        f"the most confident half {_pct(cal['accuracy_most_confident_50'])}.</p>"
                        '<div class="figs"><div>' + _img(rel_png, "reliability diagram") + "</div><div>"
                        "<h3>With --min-confidence P</h3>"
                        + _table(["P", "answered", "accuracy on answered"], cov) + "</div></div>")
        if ev.get("_dir"):
            body.append(f'<p class="note">evaluation files: {html.escape(ev["_dir"])}</p>')
    else:
        body.append('<p class="note">no checkpoint yet: nothing to evaluate</p>')

    # saliency
    if ev:
        png, what = _saliency_png(ref or ModelRef.resolve(run), data, split, n)
        body.append("<h2>What the model looks at</h2>")
        body.append(f'<p class="note">{html.escape(what)}: original | vanilla-gradient saliency | Grad-CAM over the image, '
                    "for the predicted class; red titles are mistakes.</p>" + _img(png, "saliency grid"))
        body += _gallery_captions(run, ev)

    body.append("<h2>Resolved config</h2><pre>" + html.escape(yaml.safe_dump(cfg, sort_keys=False)) + "</pre>")
    body.append(_env_section())
    title = f"ferkit run: {run.resolve().name}"
    return _page(title, f"{cfg.get('model')} on {cfg.get('data')} — {run.resolve()}", body)


# ------------------------------------------------------------------ sweep report


def sweep_report(sweep_dir: str | Path) -> str:
    """The HTML text of a sweep folder's report (its summary is rewritten from the run folders first)."""
    import math

    from ferkit.engine.sweep import collect_runs, read_sweep, summarize_sweep, summary_markdown

    out = Path(sweep_dir)
    sweep = read_sweep(out)
    rows = summarize_sweep(out)
    runs = collect_runs(out, sweep)

    def pm(m, s):
        if math.isnan(m):
            return "–"
        return f"{100 * m:.2f} ± {100 * s:.2f}" if not math.isnan(s) else f"{100 * m:.2f}"

    def num(x, d=1):
        return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"

    md = summary_markdown(sweep, rows, runs)
    notes = [ln[2:] for ln in md.splitlines() if ln.startswith("- ")]
    def inline(md_text: str) -> str:  # the Markdown of summary.md's notes: **bold** and `code`
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(md_text))
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    body = ["<ul>" + "".join(f"<li>{inline(n)}</li>" for n in notes) + "</ul>"]
    if sweep.notes:
        body.insert(0, f"<p>{html.escape(sweep.notes)}</p>")
    body.append("<h2>Summary (mean ± std over seeds, %)</h2>")
    body.append(_table(["configuration", "seeds", "best val acc", "test acc", "test macro-F1", "epochs", "best epoch",
                        "train time (s)", "overrides"],
                       [[r["config"], r["n_seeds"], pm(r["val_acc_mean"], r["val_acc_std"]),
                         pm(r["test_acc_mean"], r["test_acc_std"]), num(r["test_macro_f1_mean"], 3), num(r["epochs_mean"]),
                         num(r["best_epoch_mean"]), num(r["train_s_mean"], 0), r["overrides"]] for r in rows]))
    body.append("<h2>Comparison plots</h2><div class=\"figs\">" + _img(out / "curves.png", "validation curves") +
                _img(out / "bars.png", "accuracy bars") + "</div>")
    body.append("<h2>Runs</h2>" + _table(
        ["run", "status", "best val acc", "best epoch", "test acc", "epochs", "train time (s)"],
        [[f"{r['config']}/seed{r['seed']}", r["status"], num(100 * r["best_val_acc"], 2), num(r["best_epoch"], 0),
          num(100 * r["test_acc"], 2), r["epochs_run"], num(r["train_s"], 0)] for r in runs]))
    body.append("<h2>Sweep definition</h2><pre>" + html.escape((out / "sweep.yaml").read_text()) + "</pre>")
    body.append(_env_section())
    return _page(f"ferkit sweep: {out.resolve().name}", f"{len(sweep.configs)} configurations x {len(sweep.seeds)} seeds — "
                 f"{out.resolve()}", body)


def write_report(folder: str | Path, out: str | Path | None = None, data: str | None = None, split: str = "test",
                 n: int = 8) -> Path:
    """Write the report of a run or sweep folder to ``out`` (default ``FOLDER/report.html``); returns its path."""
    kind = kind_of(folder)
    text = run_report(folder, data=data, split=split, n=n) if kind == "run" else sweep_report(folder)
    path = Path(out) if out else Path(folder) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    log.info("wrote the %s report %s (%.0f kB)", kind, path, path.stat().st_size / 1024)
    return path
