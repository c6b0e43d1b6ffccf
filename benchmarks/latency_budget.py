"""How big a ferkit model can be and still classify a face as fast as the `fer` package, on this CPU.

    python benchmarks/latency_budget.py --fer-python FER_VENV/bin/python --out /tmp/latency_budget.json
    python benchmarks/latency_budget.py --calls 100 --rounds 1          # ferkit only, a quick look

Issue 3 asks for a per-face classifier latency no worse than fer's. The trained model ships, but
whether a *candidate* architecture could meet the target is a question of its cost alone: latency
does not depend on the weights' values. So each candidate (``NAME:key=value,...``, e.g.
``resnet18:width=32,stem_stride=2``) is built with seeded random weights, exported exactly as a
trained model would be (``export_onnx`` and ``export_onnx_int8``, the latter calibrated on 256
real FER2013 Training crops), and timed the way ``vs_peers.py`` times the shipped model: batch 1,
a 48x48 crop to probabilities through ``Recognizer.classify_crops`` (ferkit's resize and
normalisation included), the median over calls cycling through 64 real PrivateTest crops. The
shipped model (``default``: ``default_int8.onnx`` and its float export) is timed alongside, and
fer's TFLite classifier (``--fer-python``, see benchmarks/README.md) in alternating rounds in the
same run, with the same thread count and the same timing function. Use it to choose what student
to train before spending the training time: a candidate only helps if its int8 ratio to fer is
<= 1 on the CPUs that matter (int8 speed varies most between CPUs: AVX2 only, AVX-512, VNNI).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from _fer_worker import time_calls  # the one timing protocol, shared with the fer side
from common import DATA, loadavg, ms_stats, parse_run_args, system_info, write_report
from peers_fer import FerWorker, load_crops

from ferkit.engine.checkpoint import load_checkpoint, save_checkpoint
from ferkit.engine.export import export_onnx, export_onnx_int8
from ferkit.infer.recognizer import DEFAULT_INT8, Recognizer
from ferkit.models.registry import create_model
from ferkit.models.summary import count_flops, count_params

DEFAULT_CANDIDATES = ("resnet18:width=32,stem_stride=2", "resnet18:width=24,stem_stride=2",
                      "resnet18:width=16,stem_stride=2", "resnet11:width=16,stem_stride=2")


def parse_candidate(text: str) -> tuple[str, dict]:
    """``"resnet18:width=32,stem_stride=2"`` -> ``("resnet18", {"width": 32, "stem_stride": 2})``."""
    name, _, rest = text.partition(":")
    kwargs = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"candidate {text!r}: expected NAME:key=value,... (e.g. resnet18:width=32,stem_stride=2)")
        kwargs[key.strip()] = json.loads(value)
    return name.strip(), kwargs


def cost(spec: dict, input_size: int) -> dict:
    """Parameters and GFLOPs per face of the model ``spec`` (a checkpoint's ``model`` entry), built on the meta device."""
    with torch.device("meta"):
        m = create_model(spec["name"], num_classes=spec["num_classes"], in_chans=spec["in_chans"], **spec["kwargs"])
    return {"params": count_params(m), "gflops": count_flops(m, input_size, spec["in_chans"]) / 1e9}


def candidate_checkpoint(name: str, kwargs: dict, template: dict, path: Path) -> dict:
    """Write a checkpoint of ``name(**kwargs)`` with seeded random weights and the shipped model's preprocessing
    to ``path``; returns its :func:`cost`."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=template["model"]["num_classes"], in_chans=template["model"]["in_chans"], **kwargs)
    # Random BatchNorm statistics and scales: a freshly built ResNet zeroes the last BN of each block,
    # which would hand the quantizer all-zero weights, unlike any trained model.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.running_mean = 0.1 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)
    ckpt = {k: template[k] for k in ("format", "version", "preprocess")}
    ckpt["model"] = {"name": name, "num_classes": template["model"]["num_classes"],
                     "in_chans": template["model"]["in_chans"], "kwargs": kwargs}
    ckpt["state_dict"] = model.state_dict()
    save_checkpoint(ckpt, path)
    return cost(ckpt["model"], ckpt["preprocess"]["input_size"])


def training_crops(fer_root: Path, n: int, seed: int = 0) -> np.ndarray:
    """A seeded random ``n`` FER2013 Training crops ``(n, 48, 48)`` uint8 grey: calibration images for int8."""
    paths = sorted((fer_root / "train").glob("*/*.jpg"))
    if not paths:
        raise FileNotFoundError(f"{fer_root / 'train'}: no training images (expected train/<class>/*.jpg)")
    pick = np.random.default_rng(seed).permutation(len(paths))[:n]
    crops = [cv2.imread(str(paths[i]), cv2.IMREAD_GRAYSCALE) for i in sorted(pick)]
    return np.stack([c for c in crops if c is not None])


def markdown(res: dict) -> str:
    fer = res.get("fer_ms")
    lines = ["# Latency budget: ferkit candidates against fer", "",
             (f"{res['date']}, {res['system']['cpu']}, {res['threads']} threads; load average before/after "
              f"{res['load_before']} / {res['load_after']}; {res['calls']} batch-1 calls per classifier over "
              f"{res['rounds']} rounds. Crop -> probabilities, median ms (p90 in brackets). Candidates have random "
              "weights: their accuracy is not measured here."), "",
             "| model | params | GFLOPs | float ONNX | int8 ONNX | int8 / fer |", "|---|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        ratio = f"{r['int8']['median_ms'] / fer['median_ms']:.2f}" if fer else "-"
        lines.append(f"| {r['label']} | {r['params'] / 1e6:.2f} M | {r['gflops']:.3f} | {r['float']['median_ms']:.3f} "
                     f"({r['float']['p90_ms']:.3f}) | {r['int8']['median_ms']:.3f} ({r['int8']['p90_ms']:.3f}) | {ratio} |")
    if fer:
        lines += ["", (f"fer {res['fer_version']} (TFLite, quantized mini-Xception): {fer['median_ms']:.3f} ms "
                       f"(p90 {fer['p90_ms']:.3f}).")]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="*", default=list(DEFAULT_CANDIDATES),
                    help="architectures as NAME:key=value,... (default: %(default)s)")
    ap.add_argument("--fer-python", help="python of the fer virtual environment (benchmarks/README.md); "
                    "without it only ferkit is timed")
    ap.add_argument("--data", default=str(DATA / "fer2013"), help="FER2013 Kaggle-layout folder")
    ap.add_argument("--calls", type=int, default=600, help="timed batch-1 calls per classifier, over all rounds")
    args = parse_run_args(ap, rounds=3)
    candidates = [parse_candidate(c) for c in args.candidates]
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="ferkit-latency-budget-"))

    data = Path(args.data)
    test, _, _ = load_crops(data, None)
    lat_crops = test[:64]
    lat_bgr = [cv2.cvtColor(c, cv2.COLOR_GRAY2BGR) for c in lat_crops]
    calib = training_crops(data, 256)

    template = load_checkpoint("default")
    files = {"default (shipped)": (export_onnx("default", work / "default.onnx"), DEFAULT_INT8,
                                   cost(template["model"], template["preprocess"]["input_size"]))}
    for i, (name, kwargs) in enumerate(candidates):
        label = name + (" " + ", ".join(f"{k}={v}" for k, v in kwargs.items()) if kwargs else "")
        print(f"exporting {label} ...", flush=True)
        ckpt_path = work / f"candidate{i}.pt"
        meta = candidate_checkpoint(name, kwargs, template, ckpt_path)
        files[label] = (export_onnx(ckpt_path, work / f"candidate{i}.onnx"),
                        export_onnx_int8(ckpt_path, work / f"candidate{i}_int8.onnx", calib), meta)
    recs = {(label, kind): Recognizer(path, detector="haar", device="cpu", backend="onnx", threads=args.threads)
            for label, (fp, q, _) in files.items() for kind, path in (("float", fp), ("int8", q))}

    load_before = loadavg()
    fer = None
    samples: dict = {key: [] for key in recs} | {"fer": []}
    try:
        if args.fer_python:
            fer = FerWorker(args.fer_python, work / "fer_worker.log")
            fer_info = fer.ask("init", threads=args.threads)
            np.savez(work / "lat_crops.npz", crops=lat_crops)
        per_round = max(1, args.calls // args.rounds)
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds} ...", flush=True)
            for key, rec in recs.items():
                samples[key] += time_calls(lambda c, rec=rec: rec.classify_crops([c]), lat_bgr, args.warmup, per_round)
            if fer:
                samples["fer"] += fer.ask("latency", crops=str(work / "lat_crops.npz"), warmup=args.warmup,
                                          runs=per_round)["crop_ms"]
    finally:
        if fer:
            fer.close()

    rows = [{"label": label, **meta, "float": ms_stats(samples[(label, "float")]), "int8": ms_stats(samples[(label, "int8")])}
            for label, (_, _, meta) in files.items()]
    res = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "system": system_info(args.threads),
           "threads": args.threads, "calls": per_round * args.rounds, "rounds": args.rounds,
           "load_before": load_before, "load_after": loadavg(), "rows": rows,
           "fer_ms": ms_stats(samples["fer"]) if samples["fer"] else None,
           "fer_version": fer_info.get("fer") if fer else None}
    report = markdown(res)
    print(report)
    if args.out:
        write_report(args.out, res, report)
    shutil.rmtree(work, ignore_errors=True)  # kept after a failure: it holds the fer worker's log
    return 0


if __name__ == "__main__":
    sys.exit(main())
