"""Sweeps: a grid of config overrides x seeds, each run a normal run folder, then one comparison.

A sweep file (YAML)::

    recipe: default_fer2013          # base recipe (name, path, or a file beside the sweep file); optional
    fixed: {train_limit: 4000}       # overrides of every run
    grid:                            # key -> values: the cartesian product (dotted keys set inside dicts)
      optimizer: [sgd, adam]
      scheduler: [none, plateau]
    configs:                         # and/or named configurations, each a dict of overrides
      - {name: sgd_fast, optimizer: sgd, lr: 0.05}
    seeds: [0, 1]
    notes: free text copied into summary.md

``configs`` and ``grid`` multiply (every named configuration with every grid
point); ``grid`` may also be given as a list, meaning ``configs``. The sweep
folder holds::

    DIR/sweep.yaml                 the resolved sweep: itself a sweep file (re-run with --grid DIR/sweep.yaml)
    DIR/<config>/seed<k>/          a normal run folder (config.yaml, metrics.csv, best.pt, last.pt, summary.json)
    DIR/<config>/seed<k>.yaml      the run's resolved config (the recipe its process trains)
    DIR/<config>/seed<k>.log       the run's log
    DIR/runs.csv                   one row per run
    DIR/summary.csv, summary.md    one row per configuration: mean and std over seeds
    DIR/curves.png, bars.png       validation curves of all configurations; bar chart with error bars

Every configuration is resolved and checked before anything runs. A run whose
``summary.json`` exists is skipped; one with ``last.pt`` and no summary resumes.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ferkit.engine.config import RUNTIME_KEYS, TrainConfig, load_config, parse_value
from ferkit.errors import UsageError

log = logging.getLogger(__name__)

SWEEP_KEYS = ("recipe", "fixed", "grid", "configs", "seeds", "notes")
SPEC_NAME = "sweep.yaml"
# What a run folder may hold before its first epoch finished: safe to clear and start again.
_FRESH_ONLY = {"config.yaml", "tb", "metrics.csv", "curves.png", ".metrics.csv.tmp", "teacher_probs.pt"}


@dataclass
class Sweep:
    """A resolved sweep: base recipe, overrides of every run, named configurations (in order) and seeds."""

    recipe: str | None = None
    fixed: dict = field(default_factory=dict)
    configs: list[tuple[str, dict]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    notes: str = ""
    source: str = "sweep"  # where it came from, for error messages

    def to_dict(self) -> dict:
        """The sweep as a sweep file (named configurations, no grid)."""
        return {"recipe": self.recipe, "fixed": self.fixed,
                "configs": [{"name": n, **o} for n, o in self.configs], "seeds": list(self.seeds), "notes": self.notes}


@dataclass
class SweepRun:
    """One planned run: configuration name, seed, resolved config and run folder."""

    config: str
    seed: int
    cfg: TrainConfig
    out: Path
    status: str = "new"  # new | resume | done

    @property
    def label(self) -> str:
        return f"{self.config}/seed{self.seed}"


# ------------------------------------------------------------------ parsing


def split_values(text: str) -> list[str]:
    """Split ``"sgd,adam"`` at top-level commas; commas inside ``[...]`` / ``{...}`` stay (``"[5,8],[3,6]"``)."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def _nest(key: str, value: Any) -> dict:
    """``"augment.erase", 0.5`` -> ``{"augment": {"erase": 0.5}}``."""
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _merge(base: dict, upd: dict) -> dict:
    out = dict(base)
    for k, v in upd.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _nested(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        out = _merge(out, _nest(str(k), v))
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, dict):
        return "-".join(f"{k}{_fmt_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "-".join(_fmt_value(x) for x in v)
    return str(v)


def _safe_name(text: str) -> str:
    """A folder-safe configuration name (letters, digits, ``. _ + - =``)."""
    return re.sub(r"[^A-Za-z0-9._+=-]", "", text.replace("/", "-").replace(" ", "")) or "config"


def _check_name(name: str, where: str) -> str:
    if not isinstance(name, str) or not name or name.startswith(".") or name != _safe_name(name):
        raise ValueError(f"{where}: configuration name {name!r} must be a plain folder name "
                         "(letters, digits, . _ + - =; not starting with a dot)")
    return name


def _grid_points(grid: dict) -> list[tuple[str, dict]]:
    """The cartesian product of ``grid`` as ``(name, overrides)``; names list only the keys that vary."""
    keys = list(grid)
    values = [v if isinstance(v, list) else [v] for v in grid.values()]
    varying = [k for k, v in zip(keys, values) if len(v) > 1]
    points = []
    for combo in itertools.product(*values):
        flat = dict(zip(keys, combo))
        name = "_".join(f"{k.rsplit('.', 1)[-1]}-{_fmt_value(flat[k])}" for k in varying)  # augment.erase -> erase-0.5
        points.append((_safe_name(name) if name else "", _nested(flat)))
    return points


def _parse_seeds(seeds: Any, where: str) -> list[int]:
    if isinstance(seeds, str):
        seeds = [s for s in split_values(seeds)]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        raise ValueError(f"{where}: seeds must be a list such as [0, 1], got {seeds!r}")
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: seeds must be a list of integers such as [0, 1], got {seeds!r}") from None
    if not out or len(set(out)) != len(out):
        raise ValueError(f"{where}: seeds must be a non-empty list of distinct integers, got {seeds!r}")
    return out


def _read_sweep_file(path: Path) -> dict:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a sweep file must be a YAML mapping with keys {', '.join(SWEEP_KEYS)}")
    bad = sorted(set(doc) - set(SWEEP_KEYS))
    if bad:
        hint = " (is it a training recipe? pass it with --recipe)" if set(bad) & set(TrainConfig().to_dict()) else ""
        raise ValueError(f"{path}: unknown sweep key(s) {bad}{hint}; a sweep file has {', '.join(SWEEP_KEYS)}")
    recipe = doc.get("recipe")
    if recipe and (path.parent / str(recipe)).is_file():
        doc["recipe"] = str(path.parent / str(recipe))  # a base recipe beside the sweep file
    return doc


def load_sweep(
    grid: list[str] | None = None,
    recipe: str | None = None,
    seeds: str | list[int] | None = None,
    overrides: list[str] | dict | None = None,
) -> Sweep:
    """Build a :class:`Sweep` from sweep files and ``key=v1,v2`` items.

    ``grid``: sweep YAML paths and/or ``key=v1,v2`` axes (values parsed as YAML; commas
    inside brackets kept). ``recipe`` and ``seeds`` replace a sweep file's; ``overrides``
    (``key=value`` list or dict) are added to its fixed overrides.
    """
    docs, axes, sources = [], {}, []
    for item in grid or []:
        p = Path(item)
        if "=" in item and not p.is_file():
            key, vals = item.split("=", 1)
            if not key.strip():
                raise ValueError(f"grid item {item!r}: expected key=v1,v2")
            axes[key.strip()] = [parse_value(v) for v in split_values(vals)] or [parse_value(vals)]
            sources.append(item)
        elif p.suffix in (".yaml", ".yml") or p.exists():
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such sweep file")
            docs.append(_read_sweep_file(p))
            sources.append(str(p))
        else:
            raise ValueError(f"grid item {item!r}: expected a sweep YAML file or key=v1,v2")
    if len(docs) > 1:
        raise ValueError(f"give one sweep file, not {len(docs)} ({', '.join(s for s in sources if '=' not in s)})")
    doc = docs[0] if docs else {}
    where = " ".join(s if "=" not in s else f"--grid {s}" for s in sources) or "sweep"

    fixed = doc.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise ValueError(f"{where}: 'fixed' must be a mapping of config keys to values")
    if isinstance(overrides, list):
        from ferkit.engine.config import parse_overrides

        overrides = parse_overrides(overrides)
    fixed = _merge(_nested(fixed), overrides or {})

    named = doc.get("configs") or []
    doc_grid = doc.get("grid") or {}
    if isinstance(doc_grid, list):  # a list of named configurations
        named, doc_grid = list(named) + doc_grid, {}
    if not isinstance(doc_grid, dict):
        raise ValueError(f"{where}: 'grid' must map config keys to lists of values (or be a list of named configurations)")
    if not isinstance(named, list):
        raise ValueError(f"{where}: 'configs' must be a list of mappings, each {{name: ..., key: value, ...}}")
    configs: list[tuple[str, dict]] = []
    for i, c in enumerate(named):
        if not isinstance(c, dict):
            raise ValueError(f"{where}: configuration {i + 1} must be a mapping of overrides, got {c!r}")
        c = dict(c)
        name = c.pop("name", None)
        over = _nested(c)
        configs.append((_check_name(str(name), where) if name is not None else "", over))
    points = _grid_points({**doc_grid, **axes}) if (doc_grid or axes) else [("", {})]
    base = configs or [("", {})]
    runs: list[tuple[str, dict]] = []
    for (cname, cover), (gname, gover) in itertools.product(base, points):
        over = _merge(cover, gover)
        name = "_".join(n for n in (cname, gname) if n)
        if not name:
            name = _safe_name("_".join(f"{k}-{_fmt_value(v)}" for k, v in over.items())) if over else "base"
        runs.append((name, over))
    names = [n for n, _ in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: configuration name(s) {dup} occur twice; give each configuration its own name")
    for name, over in [("fixed", fixed)] + runs:
        if "seed" in over:
            raise ValueError(f"{where}: {name} sets 'seed'; list seeds under 'seeds:' (or --seeds 0,1) instead")
    seed_list = _parse_seeds(seeds if seeds is not None else doc.get("seeds", [0]), where)
    return Sweep(recipe=recipe or doc.get("recipe"), fixed=fixed, configs=runs, seeds=seed_list,
                 notes=str(doc.get("notes") or ""), source=where)


def select_configs(sweep: Sweep, patterns: list[str]) -> Sweep:
    """The sweep restricted to configurations whose name matches one of ``patterns`` (shell-style, e.g. ``adam*``)."""
    import fnmatch

    keep = [(n, o) for n, o in sweep.configs if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not keep:
        raise ValueError(f"{sweep.source}: no configuration matches {', '.join(patterns)}; "
                         f"configurations: {', '.join(n for n, _ in sweep.configs)}")
    return dataclasses.replace(sweep, configs=keep)


# ------------------------------------------------------------------ validation and planning


def validate_config(cfg: TrainConfig) -> None:
    """Everything :meth:`TrainConfig.validate` checks, and that the dataset exists (a sweep checks every run first)."""
    cfg.validate(check_data=True)


def _comparable(d: dict) -> dict:
    d = {k: v for k, v in d.items() if k not in RUNTIME_KEYS}
    return yaml.safe_load(yaml.safe_dump(d))  # tuples -> lists, as a saved config.yaml holds them


def _failed_marker(run_dir: Path) -> Path:
    return run_dir.parent / f"{run_dir.name}.failed"


def run_status(run_dir: Path) -> str:
    """``done`` (summary.json), ``resume`` (last.pt, no summary) or ``new``."""
    if (run_dir / "summary.json").is_file():
        return "done"
    if (run_dir / "last.pt").is_file():
        return "resume"
    return "new"


def plan_runs(sweep: Sweep, out_dir: str | Path) -> list[SweepRun]:
    """Resolve and check every configuration; return the runs with their status. Nothing runs here.

    Raises ValueError listing every invalid configuration (unknown keys, bad values),
    or when a finished or started run folder holds a different config than planned.
    """
    out = Path(out_dir)
    errors: dict[str, list[str]] = {}
    resolved: list[tuple[str, TrainConfig]] = []
    for name, over in sweep.configs:
        try:
            cfg = load_config(sweep.recipe, _merge(sweep.fixed, over))
            validate_config(cfg)
        except (ValueError, FileNotFoundError, TypeError) as exc:
            errors.setdefault(str(exc), []).append(name)
            continue
        resolved.append((name, cfg))
    if errors:
        parts = [f"{', '.join(names)}: {msg}" for msg, names in errors.items()]
        raise ValueError(f"{sweep.source}: invalid configuration(s), nothing was run: " + " | ".join(parts))
    runs = []
    for name, cfg in resolved:
        for seed in sweep.seeds:
            rcfg = dataclasses.replace(cfg, seed=seed)
            run_dir = out / name / f"seed{seed}"
            runs.append(SweepRun(name, seed, rcfg, run_dir, run_status(run_dir)))
    stale = []
    for r in runs:
        saved = r.out / "config.yaml"
        if saved.is_file():
            old, new = _comparable(yaml.safe_load(saved.read_text()) or {}), _comparable(r.cfg.to_dict())
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                stale.append(f"{r.out} ({', '.join(f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in diff[:4])})")
    if stale:
        more = f" and {len(stale) - 3} more" if len(stale) > 3 else ""
        raise ValueError(f"run folder(s) made with a different config than this sweep plans: {'; '.join(stale[:3])}{more}. "
                         "Use a new --out folder, or delete those runs to redo them")
    return runs


def _clear_unstarted(run_dir: Path) -> None:
    """Empty a run folder killed before its first checkpoint, so the run starts again."""
    if not run_dir.exists():
        return
    entries = {p.name for p in run_dir.iterdir()}
    if not entries:
        return
    if not entries <= _FRESH_ONLY:
        raise FileExistsError(f"{run_dir}: holds {sorted(entries - _FRESH_ONLY)} but no last.pt or summary.json; "
                              "not a run this sweep can resume: move it away")
    log.info("%s: killed before its first epoch finished; starting it again", run_dir)
    for p in run_dir.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()


# ------------------------------------------------------------------ running


def _write_spec(sweep: Sweep, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = "# The resolved sweep, written by ferkit sweep; re-run with: ferkit sweep --grid THIS_FILE --out FOLDER\n"
    (out / SPEC_NAME).write_text(text + yaml.safe_dump(sweep.to_dict(), sort_keys=False))


class _BelowLevel(logging.Filter):
    """Drops ferkit records below ``level`` (what a console showed before a run's log file asked for more)."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or not record.name.startswith("ferkit")


def _run_in_process(run: SweepRun, progress: bool) -> None:
    import torch

    from ferkit.engine.trainer import train

    pkg = logging.getLogger("ferkit")
    handler = logging.FileHandler(run.out.parent / f"seed{run.seed}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    old_level, threads = pkg.level, torch.get_num_threads()
    quiet = pkg.getEffectiveLevel()
    # The run's log file gets the per-epoch lines whatever the console shows: lower the package's level
    # and keep the console's handlers at the level they had.
    console = [h for h in logging.getLogger().handlers]
    keep_quiet = _BelowLevel(quiet)
    if quiet > logging.INFO:
        pkg.setLevel(logging.INFO)
        for h in console:
            h.addFilter(keep_quiet)
    pkg.addHandler(handler)
    try:
        if run.status == "resume":
            train(None, run.out, resume=True, progress=progress)
        else:
            train(run.cfg, run.out, progress=progress)
    finally:
        pkg.removeHandler(handler)
        handler.close()
        pkg.setLevel(old_level)
        for h in console:
            h.removeFilter(keep_quiet)
        torch.set_num_threads(threads)  # the trainer sets the process-wide thread count


def _command(run: SweepRun, threads: int, device: str | None) -> list[str]:
    runtime = [f"threads={threads}"] + ([f"device={device}"] if device else [])
    base = [sys.executable, "-m", "ferkit.app.cli", "train", "--out", str(run.out), "--no-progress"]
    if run.status == "resume":
        return base + ["--resume"] + runtime
    return base + ["--recipe", str(run.out.parent / f"seed{run.seed}.yaml")] + runtime


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _stop_on_sigterm():
    """While running child processes, turn SIGTERM into an exception so they are stopped too (main thread only)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def _run_parallel(todo: list[SweepRun], parallel: int, devices: list[str] | None, failed: list[str]) -> None:
    import signal

    old_handler = _stop_on_sigterm()
    try:
        _run_slots(todo, parallel, devices, failed)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)


def _run_slots(todo: list[SweepRun], parallel: int, devices: list[str] | None, failed: list[str]) -> None:
    pending = deque(todo)
    running: dict[int, tuple[subprocess.Popen, SweepRun, Any, float]] = {}
    total = len(todo)
    started = 0
    try:
        while pending or running:
            for slot in range(parallel):
                if slot in running or not pending:
                    continue
                run = pending.popleft()
                started += 1
                threads = run.cfg.threads or max(1, (os.cpu_count() or 1) // parallel)
                device = devices[slot % len(devices)] if devices else None
                env_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
                if run.status == "new":
                    _clear_unstarted(run.out)
                _failed_marker(run.out).unlink(missing_ok=True)
                logf = open(run.out.parent / f"seed{run.seed}.log", "a")
                cmd = _command(run, threads, device)
                log.info("[%d/%d] %s %s (%d threads%s)", started, total, "resuming" if run.status == "resume" else "starting",
                         run.label, threads, f", {device}" if device else "")
                proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env={**os.environ, **env_threads})
                running[slot] = (proc, run, logf, time.perf_counter())
            for slot, (proc, run, logf, t0) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                logf.close()
                del running[slot]
                if rc == 0:
                    log.info("finished %s in %.0f s", run.label, time.perf_counter() - t0)
                else:
                    logp = run.out.parent / f"seed{run.seed}.log"
                    failed.append(f"{run.label} (exit {rc}: {_last_line(logp)}; log {logp})")
                    _failed_marker(run.out).write_text(f"exit {rc}: {_last_line(logp)}\n")
                    log.warning("run %s failed with exit code %d; see %s", run.label, rc, logp)
            time.sleep(0.2)
    finally:
        if running:
            log.warning("stopping %d running run(s); the same command resumes them", len(running))
        for proc, run, logf, _ in running.values():  # interrupted: stop the children; their last.pt lets them resume
            proc.terminate()
        for proc, run, logf, _ in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            logf.close()


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: run labels by outcome, and the per-configuration summary rows."""

    out: Path
    ran: list[str]
    resumed: list[str]
    skipped: list[str]
    failed: list[str]
    summary: list[dict]


def run_sweep(
    sweep: Sweep,
    out_dir: str | Path,
    parallel: int = 1,
    devices: list[str] | None = None,
    progress: bool = False,
) -> SweepResult:
    """Run every configuration x seed of ``sweep`` into ``out_dir`` and write the comparison.

    ``parallel`` > 1 runs that many ``ferkit train`` processes at once (CPU threads split
    between them unless the config sets ``threads``); ``devices`` (e.g. ``["cuda:0", "cuda:1"]``)
    gives each process slot its own device (and ``parallel`` defaults to their number).
    Finished runs are skipped and interrupted ones resumed. Failed runs do not stop the
    others; they are listed in a :class:`~ferkit.errors.UsageError` (a RuntimeError) at the end, after the summary is written.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if devices and parallel <= 1:
        parallel = len(devices)
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    runs = plan_runs(sweep, out)
    _write_spec(sweep, out)
    skipped = [r.label for r in runs if r.status == "done"]
    todo = [r for r in runs if r.status != "done"]
    for r in todo:  # the resolved config a run's process trains (finished runs keep theirs untouched)
        r.out.parent.mkdir(parents=True, exist_ok=True)
        (r.out.parent / f"seed{r.seed}.yaml").write_text(yaml.safe_dump(r.cfg.to_dict(), sort_keys=False))
    log.info("sweep %s: %d configuration(s) x %d seed(s) = %d runs; %d finished already, %d to resume, %d to start",
             out, len(sweep.configs), len(sweep.seeds), len(runs), len(skipped),
             sum(r.status == "resume" for r in todo), sum(r.status == "new" for r in todo))
    failed: list[str] = []
    if parallel > 1 and todo:
        _run_parallel(todo, parallel, devices, failed)
    else:
        for i, run in enumerate(todo, 1):
            log.info("[%d/%d] %s %s", i, len(todo), "resuming" if run.status == "resume" else "starting", run.label)
            if run.status == "new":
                _clear_unstarted(run.out)
            _failed_marker(run.out).unlink(missing_ok=True)
            try:
                _run_in_process(run, progress)
            except (RuntimeError, ValueError, FileNotFoundError) as exc:  # e.g. a diverging optimizer: go on with the rest
                failed.append(f"{run.label} ({exc})")
                _failed_marker(run.out).write_text(f"{exc}\n")
                log.warning("run %s failed: %s", run.label, exc)
    summary = summarize_sweep(out)
    done_labels = {f"{r.config}/seed{r.seed}" for r in runs if run_status(r.out) == "done"}
    result = SweepResult(out, [r.label for r in todo if r.status == "new" and r.label in done_labels],
                         [r.label for r in todo if r.status == "resume" and r.label in done_labels], skipped, failed, summary)
    if failed:
        raise UsageError(f"{len(failed)} of {len(runs)} runs failed (summary written for the rest; re-run the "
                           f"same command to retry them): {'; '.join(failed)}")
    return result


# ------------------------------------------------------------------ summary


def read_sweep(out_dir: str | Path) -> Sweep:
    """The :class:`Sweep` recorded in a sweep folder's ``sweep.yaml``."""
    path = Path(out_dir) / SPEC_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir}: not a sweep folder (no {SPEC_NAME}); run 'ferkit sweep ... --out {out_dir}'")
    doc = _read_sweep_file(path)
    configs = []
    for c in doc.get("configs") or []:
        c = dict(c)
        configs.append((str(c.pop("name")), c))
    return Sweep(recipe=doc.get("recipe"), fixed=doc.get("fixed") or {}, configs=configs,
                 seeds=[int(s) for s in doc.get("seeds") or [0]], notes=str(doc.get("notes") or ""), source=str(path))


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
            if status != "done" and _failed_marker(run_dir).is_file():
                status = "failed: " + _failed_marker(run_dir).read_text().strip()[:200]
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


SUMMARY_COLUMNS = ["config", "n_seeds", "val_acc_mean", "val_acc_std", "test_acc_mean", "test_acc_std",
                   "test_macro_f1_mean", "epochs_mean", "best_epoch_mean", "train_s_mean", "overrides"]
RUN_COLUMNS = ["config", "seed", "status", "best_val_acc", "best_epoch", "test_acc", "test_macro_f1", "epochs_run",
               "train_s", "train_images", "run_dir"]


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
    """Validation accuracy per epoch of every configuration: mean over seeds, band from min to max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    n = len(sweep.configs)
    fig, ax = plt.subplots(figsize=(9 if n > 8 else 7.5, 4.5))
    cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
    for i, (name, _) in enumerate(sweep.configs):
        curves = [r["val_curve"] for r in runs if r["config"] == name and r["val_curve"]]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        arr = np.full((len(curves), length), np.nan)
        for j, c in enumerate(curves):
            arr[j, : len(c)] = c
        ep = np.arange(1, length + 1)
        color = cmap(i % cmap.N)
        ax.plot(ep, np.nanmean(arr, 0), color=color, label=f"{name} (n={len(curves)})", lw=1.6, marker="o" if length <= 15 else None, ms=3)
        if len(curves) > 1:
            ax.fill_between(ep, np.nanmin(arr, 0), np.nanmax(arr, 0), color=color, alpha=0.18, lw=0)
    ax.set_xlabel("epoch"), ax.set_ylabel("validation accuracy"), ax.grid(alpha=0.3)
    ax.set_title("validation accuracy: mean over seeds, band = min to max", fontsize=9)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweep_bars(rows: list[dict], path: str | Path) -> None:
    """Best val and test accuracy per configuration: bars at the mean, error bars one standard deviation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * n + 2.5), 4.5))
    x = np.arange(n)
    w = 0.38
    for off, key, label, color in ((-w / 2, "val", "best val (selection)", "C0"), (w / 2, "test", "test at selected epoch", "C1")):
        means = np.array([r[f"{key}_acc_mean"] for r in rows], float)
        stds = np.nan_to_num(np.array([r[f"{key}_acc_std"] for r in rows], float))
        ax.bar(x + off, np.nan_to_num(means), w, yerr=stds, capsize=3, label=label, color=color, alpha=0.85)
    finite = [v for r in rows for v in (r["val_acc_mean"], r["test_acc_mean"]) if not math.isnan(v)]
    if finite:  # zoom on the range that differs; bars start below the lowest mean
        lo = max(0.0, min(finite) - 0.08)
        ax.set_ylim(lo, min(1.0, max(finite) + 0.06))
    ax.set_xticks(x, [f"{r['config']}\n(n={r['n_seeds']})" for r in rows], rotation=35 if n > 4 else 0,
                  ha="right" if n > 4 else "center", fontsize=8)
    ax.set_ylabel("accuracy"), ax.grid(axis="y", alpha=0.3), ax.legend(fontsize=8)
    ax.set_title("mean over seeds; error bars: one standard deviation", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
