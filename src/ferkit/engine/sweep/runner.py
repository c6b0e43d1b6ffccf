"""Running a sweep: every planned run in this process or as ``ferkit train`` subprocesses in parallel slots.

A run whose ``summary.json`` exists is skipped; one with ``last.pt`` and no summary resumes;
one killed before its first checkpoint starts again. A failed run does not stop the others.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ferkit.engine.sweep.spec import Sweep, SweepRun, failed_marker, plan_runs, run_status, write_spec
from ferkit.engine.sweep.summary import summarize_sweep
from ferkit.errors import UsageError

log = logging.getLogger(__name__)

# What a run folder may hold before its first epoch finished: safe to clear and start again.
_FRESH_ONLY = {"config.yaml", "tb", "metrics.csv", "curves.png", ".metrics.csv.tmp", "teacher_probs.pt"}


@dataclass
class SweepResult:
    """What :func:`run_sweep` did: run labels by outcome, and the per-configuration summary rows."""

    out: Path
    ran: list[str]
    resumed: list[str]
    skipped: list[str]
    failed: list[str]
    summary: list[dict]


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


# ------------------------------------------------------------------ one run in this process


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


# ------------------------------------------------------------------ parallel runs as subprocesses


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
                failed_marker(run.out).unlink(missing_ok=True)
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
                    failed_marker(run.out).write_text(f"exit {rc}: {_last_line(logp)}\n")
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


# ------------------------------------------------------------------ the sweep


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
    write_spec(sweep, out)
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
            failed_marker(run.out).unlink(missing_ok=True)
            try:
                _run_in_process(run, progress)
            except (RuntimeError, ValueError, FileNotFoundError) as exc:  # e.g. a diverging optimizer: go on with the rest
                failed.append(f"{run.label} ({exc})")
                failed_marker(run.out).write_text(f"{exc}\n")
                log.warning("run %s failed: %s", run.label, exc)
    summary = summarize_sweep(out)
    done_labels = {f"{r.config}/seed{r.seed}" for r in runs if run_status(r.out) == "done"}
    result = SweepResult(out, [r.label for r in todo if r.status == "new" and r.label in done_labels],
                         [r.label for r in todo if r.status == "resume" and r.label in done_labels], skipped, failed, summary)
    if failed:
        raise UsageError(f"{len(failed)} of {len(runs)} runs failed (summary written for the rest; re-run the "
                         f"same command to retry them): {'; '.join(failed)}")
    return result
