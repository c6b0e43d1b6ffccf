"""vs_peers' report: the summary rows (targets of issues 3 and 17) and the Markdown, from whatever sections a
run has finished (a run that fails at its last section still reports the others)."""

from __future__ import annotations

from ferkit.labels import FER2013

FER_NAME = "fer FER()"
DEFAULT_NAME = "ferkit Recognizer()"


def _ff(v: dict) -> str:
    """faces found/present (+extra)"""
    return f"{v['found']}/{v['present']}" + (f" (+{v['extra']})" if v["extra"] else "")


TARGETS = {"640x480, 1 face": 5.0, "1280x720, 1 face": 5.0, "1280x720, 6 faces (group photo)": 3.0,
           "1280x720, 5-7 faces (clip frames, 2x)": 3.0}  # frames/s ratio ferkit / fer (issue 17)


def summary(res: dict) -> list[dict]:
    """The summary rows of the sections ``res`` holds so far."""
    rows = []
    acc = res.get("accuracy")
    if acc:
        (fk_name, fer_name), models = acc["compared"].values(), acc["models"]
        a, b = models[fk_name], models[fer_name]
        rows += [{"measure": f"PrivateTest accuracy ({fk_name}; fer: {fer_name[4:]})", "unit": "acc", "ferkit": a["accuracy"],
                  "fer": b["accuracy"], "ratio": a["accuracy"] / b["accuracy"], "target": "ferkit > fer",
                  "met": a["accuracy"] > b["accuracy"]},
                 {"measure": "PrivateTest macro-F1", "unit": "f1", "ferkit": a["macro_f1"], "fer": b["macro_f1"],
                  "ratio": a["macro_f1"] / b["macro_f1"], "target": "(reported)", "met": a["macro_f1"] > b["macro_f1"]}]
    lat = res.get("latency")
    if lat:
        fk_name = res["latency_compared"]
        for kind, what, target in (("crop", "crop -> probs", "ratio <= 1"), ("model", "model only", "(reported)")):
            f, p = lat[fk_name][kind]["median_ms"], lat["fer (TFLite)"][kind]["median_ms"]
            rows.append({"measure": f"per-face latency, {what}, median ({fk_name})", "unit": "ms", "ferkit": f, "fer": p,
                         "ratio": f / p, "target": target, "met": f <= p})
    for row, r in (res.get("rows") or {}).items():
        fk, fe = r["ferkit"]["fps"], r["fer"]["fps"]
        want = TARGETS.get(row)
        rows.append({"measure": f"frames/s, {row}", "unit": "fps", "ferkit": fk, "fer": fe, "ratio": fk / fe,
                     "target": f"ratio >= {want:g}" if want else "(reported)", "met": want is None or fk / fe >= want})
        if row == "640x480, 1 face":
            rows.append({"measure": "frames/s, 640x480, 1 face, ferkit alone", "unit": "fps", "ferkit": fk, "fer": fe,
                         "ratio": None, "target": "ferkit >= 100", "met": fk >= 100})
    faces_rows = {**(res.get("rows") or {}), **({"the clip": res["video"]} if "video" in res else {})}
    for row, r in faces_rows.items():
        rows.append({"measure": f"faces found (of present), {row}", "unit": "faces",
                     "ferkit": f"{r['ferkit']['found']}/{r['ferkit']['present']}",
                     "fer": f"{r['fer']['found']}/{r['fer']['present']}", "ratio": None, "target": "ferkit >= fer",
                     "met": r["ferkit"]["found"] >= r["fer"]["found"]})
    if "video" in res:
        fk, fe = res["video"]["ferkit"]["fps"], res["video"]["fer"]["fps"]
        rows.append({"measure": "frames/s, the clip as a file (predict_stream vs fer's frames)", "unit": "fps",
                     "ferkit": fk, "fer": fe, "ratio": fk / fe, "target": "(reported)", "met": True})
    return rows


def markdown(res: dict) -> str:
    s = summary(res)
    fmt = {"acc": "{:.2%}", "f1": "{:.4f}", "ms": "{:.3f} ms", "fps": "{:.1f}", "x": "{:.2f}x", "faces": "{}"}
    sysinfo = res["system"]
    lines = [
        "# ferkit vs fer", "",
        f"{sysinfo['date']}, {sysinfo['cpu']} ({sysinfo['cpu_count']} cores), threads: {sysinfo['threads']}; "
        f"load average before/after {res['load_before']} / {res['load_after']}; "
        f"{res['n_crops']} PrivateTest crops{' (limited)' if res['args']['limit'] else ''}, "
        f"ferkit model `{res['args']['model']}`. Frames/s taken while other work runs are noisy; the rounds "
        "alternate ferkit and fer, so the ratios within this run hold better than the absolute figures.", "",
        "| measure | ferkit | fer | ratio ferkit / fer | target | met |",
        "|---|---:|---:|---:|---|:---:|",
    ]
    for row in s:
        f = fmt[row["unit"]]
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.3f}"
        lines.append(f"| {row['measure']} | {f.format(row['ferkit'])} | {f.format(row['fer'])} | {ratio} | "
                     f"{row['target']} | {'' if row['target'].startswith('(') else 'yes' if row['met'] else '**no**'} |")
    if res.get("failed"):
        lines += ["", f"**The run stopped at {res['failed']}**; the sections before it are complete."]
    if "rows" in res:
        lines += frames_section(res)
    if "levers" in res:
        lines += levers_section(res)
    if "accuracy" in res:
        lines += accuracy_section(res)
    if "latency" in res:
        lines += latency_section(res)
    lines += ["", "Details of the protocol: the docstring of benchmarks/vs_peers.py.", ""]
    return "\n".join(lines)


def frames_section(res: dict) -> list[str]:
    lines = ["", "## Frames/s by kind of frame: `Recognizer()` against `FER().detect_emotions`", "",
              "| frames | n | ferkit frames/s | fer frames/s | ratio | faces found/present ferkit | fer |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in res["rows"].items():
        fk, fe = r["ferkit"], r["fer"]
        lines.append(f"| {name} | {r['frames']} | {fk['fps']:.1f} | {fe['fps']:.1f} | {fk['fps'] / fe['fps']:.2f}x | "
                     f"{_ff(fk)} | {_ff(fe)} |")
    v = res.get("video")
    if v:
        lines.append(f"| the clip as a file: `predict_stream` against fer's `Video.analyze` | {v['ferkit']['frames']} | "
                     f"{v['ferkit']['fps']:.1f} | {v['fer']['fps']:.1f} | {v['ferkit']['fps'] / v['fer']['fps']:.2f}x | "
                     f"{_ff(v['ferkit'])} | {_ff(v['fer'])} |")
    lines += ["", "Faces present: the faces counted in the photos (tests/test_detectors.py `TRUE_FACES`); for clip frames, "
              "those YuNet finds at the clip's full resolution. (+N): boxes holding no present face. Frames/s: calls / total "
              "time of the timed calls; the clip: frames / wall time of whole passes, decoding included."]
    return lines


def levers_section(res: dict) -> list[str]:
    lines = ["", "## Levers: ferkit variants, each changing one default", "",
              "frames/s, faces found/present (+extra); every row of a column on the same frames, alternating with the "
              "others.", "",
              "| variant | " + " | ".join(list(res["levers"]["rows"]) + ["clip (first frames)"]) + " |",
              "|---" + "|---:" * (len(res["levers"]["rows"]) + 1) + "|"]
    names = list(next(iter(res["levers"]["rows"].values()), {}))
    for vname in dict.fromkeys(names + list(res["levers"].get("video", {}))):
        cells = []
        for col in res["levers"]["rows"].values():
            cells.append(f"{col[vname]['fps']:.1f}, {_ff(col[vname])}" if vname in col else "")
        vv = res["levers"].get("video", {}).get(vname)
        cells.append(f"{vv['fps']:.1f}, {_ff(vv)}" if vv else "")
        lines.append(f"| {vname} | " + " | ".join(cells) + " |")
    return lines


def accuracy_section(res: dict) -> list[str]:
    lines = ["", "## Accuracy on FER2013 PrivateTest", "",
              "| classifier | accuracy | macro-F1 |", "|---|---:|---:|"]
    for name, m in res["accuracy"]["models"].items():
        lines.append(f"| {name} | {m['accuracy']:.2%} | {m['macro_f1']:.4f} |")
    for name, err in res["accuracy"].get("fer_errors", {}).items():
        lines.append(f"| fer {name} | failed: {err} | |")
    lines += ["", "Per-class F1:", "", "| class | " + " | ".join(res["accuracy"]["models"]) + " |",
              "|---" + "|---:" * len(res["accuracy"]["models"]) + "|"]
    for c in FER2013:
        lines.append(f"| {c} | " + " | ".join(f"{m['per_class'][c]['f1']:.3f}" for m in res["accuracy"]["models"].values()) + " |")
    lines += ["", "Label mapping (fer -> FER2013, by name): "
              + ", ".join(f"{k} -> {v}" for k, v in res["accuracy"]["fer_label_mapping"].items())]
    return lines


def latency_section(res: dict) -> list[str]:
    lines = ["", "## Per-face classifier latency (batch 1)", "",
              "| classifier | crop -> probs, median | p90 | model only, median | p90 |", "|---|---:|---:|---:|---:|"]
    for name, v in res["latency"].items():
        lines.append(f"| {name} | {v['crop']['median_ms']:.3f} ms | {v['crop']['p90_ms']:.3f} ms | "
                     f"{v['model']['median_ms']:.3f} ms | {v['model']['p90_ms']:.3f} ms |")
    return lines
