"""The model comparison table: size, cost, CPU speed (and accuracy of given checkpoints) of every zoo model.

For each model at its registered input size (grey for the 48x48 models, RGB for the
ImageNet backbones), 7 classes:

- ``params``; ``size_mb``: the fp32 state dict saved with ``torch.save`` to a temporary file;
- ``gflops``: forward cost of one image (2 x multiply-adds, see :func:`ferkit.models.summary.count_flops`);
- ``latency_b1_ms`` / ``latency_b64_ms``: median wall time of a forward pass (fp32, eval mode,
  ``torch.inference_mode``) after warm-up runs, at ``threads`` CPU threads;
- ``throughput``: images per second at the largest batch size;
- ``accuracy`` for checkpoints given as ``NAME=PATH`` (scored by :func:`ferkit.engine.evaluate.evaluate`).

Models are first built on the ``meta`` device (FLOPs cost nothing) and given memory
without initialisation for the size; only models whose latency is measured are built
with real weights. ``max_gflops`` skips the latency of costlier models (listed all the same).
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ferkit.engine.classify import ModelRef
from ferkit.engine.evaluate import evaluate
from ferkit.models.registry import list_models, model_info
from ferkit.models.summary import count_flops, count_params

log = logging.getLogger(__name__)


@dataclass
class BenchSettings:
    """How latency is measured. ``fast``: one warm-up run and at most two timed runs (tests, quick looks)."""

    threads: int = 0  # CPU threads (0: PyTorch's default)
    batch_sizes: tuple[int, ...] = (1, 64)
    warmup: int = 3
    repeats: int = 10  # timed runs at most ...
    budget_s: float = 10.0  # ... stopping early once this much time was spent timing (after >= 3 runs)
    max_gflops: float | None = None  # skip latency of models costlier than this per image
    channels_last: bool = False
    fast: bool = False

    def __post_init__(self) -> None:
        if self.fast:
            self.warmup, self.repeats, self.budget_s = min(self.warmup, 1), min(self.repeats, 2), min(self.budget_s, 1.0)
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError(f"repeats must be >= 1 and warmup >= 0 (got {self.repeats}, {self.warmup})")


def state_dict_bytes(model: nn.Module) -> int:
    """Size in bytes of ``model``'s fp32 state dict written by ``torch.save`` (to a temporary file)."""
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory(prefix="ferkit_bench_") as d:
        path = Path(d) / "state_dict.pt"
        torch.save(sd, path)
        return path.stat().st_size


@torch.inference_mode()
def median_latency(model: nn.Module, x: torch.Tensor, s: BenchSettings) -> tuple[float, int]:
    """Median seconds of ``model(x)`` over timed runs after warm-up; returns ``(median, runs)``."""
    for _ in range(s.warmup):
        model(x)
    times: list[float] = []
    min_runs = 1 if s.fast else 3
    while len(times) < s.repeats and (len(times) < min_runs or sum(times) < s.budget_s):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)


def _measure(model: nn.Module, size: int, chans: int, s: BenchSettings, row: dict) -> None:
    model = model.float().eval()
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    for b in s.batch_sizes:
        x = torch.randn(b, chans, size, size, generator=g)
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        med, runs = median_latency(model, x, s)
        row[f"latency_b{b}_ms"] = med * 1000.0
        row["timed_runs"] = runs
    big = max(s.batch_sizes)
    row["throughput"] = big / (row[f"latency_b{big}_ms"] / 1000.0)


def _row(label: str, arch: str, family: str, size: int, chans: int, build, s: BenchSettings) -> dict:
    """Measure one model; ``build()`` returns a fresh model (called under the meta device and for real)."""
    with torch.device("meta"):
        meta = build()
    row: dict = {"model": label, "architecture": arch, "family": family, "input": f"{size}x{size}x{chans}",
                 "params": count_params(meta), "gflops": count_flops(meta, size, chans) / 1e9}
    # Memory without initialisation: the file size does not depend on the values.
    row["size_mb"] = state_dict_bytes(meta.to_empty(device="cpu")) / 2**20
    del meta
    for b in s.batch_sizes:
        row[f"latency_b{b}_ms"] = None
    row["throughput"] = None
    if s.max_gflops is not None and row["gflops"] > s.max_gflops:
        row["note"] = f"latency not measured ({row['gflops']:.2f} GFLOPs > {s.max_gflops:g})"
        return row
    torch.manual_seed(0)
    model = build()  # real (random) weights: uninitialised memory could hold denormals that distort timings
    _measure(model, size, chans, s, row)
    return row


def bench_models(
    names: list[str] | None = None,
    checkpoints: dict[str, str] | None = None,
    settings: BenchSettings | None = None,
    data: str | None = None,
    split: str = "test",
    progress=None,
) -> list[dict]:
    """One row per zoo model (all registered ones unless ``names``) and per checkpoint ``{label: path}``.

    Checkpoint rows measure the checkpoint's own architecture, size and preprocessing and add
    its ``accuracy`` on ``split`` of ``data`` (default: the dataset it was trained on).
    ``progress(label)`` is called before each model (the CLI shows a bar).
    """
    s = settings or BenchSettings()
    old_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    rows = []
    try:
        for name in names if names is not None else list_models():
            info = model_info(name)
            if progress:
                progress(info.name)
            chans = 3 if info.family == "pretrained" else 1
            rows.append(_row(info.name, info.name, info.family, info.input_size, chans,
                             lambda info=info, chans=chans: info.fn(num_classes=7, in_chans=chans), s))
            log.info("benchmarked %s", info.name)
        for label, path in (checkpoints or {}).items():
            if progress:
                progress(label)
            rows.append(_checkpoint_row(label, path, s, data, split))
    finally:
        torch.set_num_threads(old_threads)
    return rows


def _checkpoint_row(label: str, path: str, s: BenchSettings, data: str | None, split: str) -> dict:
    ref = ModelRef.resolve(path)  # loaded once: the row's architecture and its accuracy
    ckpt = ref.checkpoint
    spec = ckpt["model"]
    pre = ckpt["preprocess"]
    kwargs = {k: v for k, v in dict(spec.get("kwargs", {})).items() if k != "weights"}
    info = model_info(spec["name"])

    def build():
        return info.fn(num_classes=spec["num_classes"], in_chans=spec["in_chans"], **kwargs)

    row = _row(label, spec["name"] + (f" {kwargs}" if kwargs else ""), info.family, int(pre["input_size"]),
               int(pre["channels"]), build, s)
    # Timings above used random weights of the checkpoint's shapes (values do not change fp32 speed);
    # the accuracy comes from the checkpoint itself.
    result = evaluate(ref, data=data, split=split, device="cpu")
    row["accuracy"] = result["accuracy"]
    row["accuracy_on"] = f"{result['split_title']} of {Path(result['data']).name} ({result['n']} images)"
    return row


COLUMNS = ["model", "architecture", "family", "input", "params", "size_mb", "gflops", "latency_b1_ms", "latency_b64_ms",
           "throughput", "accuracy", "accuracy_on", "note"]


def _cell(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def bench_markdown(rows: list[dict], settings: BenchSettings | None = None) -> str:
    """The table as Markdown, with a line saying how it was measured."""
    s = settings or BenchSettings()
    bs = list(s.batch_sizes)
    head = ["model", "family", "input", "params (M)", "size (MB)", "GFLOPs"] + [f"latency b{b} (ms)" for b in bs] + \
        [f"throughput (img/s, b{max(bs)})", "accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|" + "---:|" * (len(head) - 3)]
    for r in rows:
        name = r["model"] if r["model"] == r["architecture"] else f"{r['model']} ({r['architecture']})"
        acc = "–" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f}%"
        cells = [name, r["family"], r["input"], f"{r['params'] / 1e6:.2f}", f"{r['size_mb']:.1f}", f"{r['gflops']:.3f}"]
        cells += [_cell(r.get(f"latency_b{b}_ms"), ".1f") for b in bs] + [_cell(r.get("throughput"), ".0f"), acc]
        lines.append("| " + " | ".join(cells) + " |")
    threads = s.threads or torch.get_num_threads()
    how = (f"fp32, eval mode, {threads} CPU thread(s), torch {torch.__version__}; latency: median of up to "
           f"{s.repeats} timed forward passes after {s.warmup} warm-up (random input); size: fp32 state dict saved "
           "with torch.save; GFLOPs: 2 x multiply-adds per image; 7 classes unless a checkpoint says otherwise.")
    lines += ["", how]
    notes = [f"{r['model']}: {r['note']}" for r in rows if r.get("note")]
    accs = [f"{r['model']}: accuracy on {r['accuracy_on']}" for r in rows if r.get("accuracy_on")]
    lines += [f"- {n}" for n in notes + accs]
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict], path: str | Path, settings: BenchSettings | None = None) -> Path:
    """Write the table as Markdown (``.md``), CSV (``.csv``) or JSON (``.json``), chosen by the file suffix."""
    import csv
    import json

    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".md", ".csv", ".json"):
        raise ValueError(f"{path}: unknown table format {path.suffix!r}; use .md, .csv or .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    s = settings or BenchSettings()
    cols = COLUMNS[:7] + [f"latency_b{b}_ms" for b in s.batch_sizes] + COLUMNS[9:]
    if kind == ".md":
        path.write_text(bench_markdown(rows, s))
    elif kind == ".json":
        path.write_text(json.dumps(rows, indent=2))
    else:
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])) for k in cols})
    return path
