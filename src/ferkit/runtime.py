"""Runtime helpers every layer may use: device choice, mixed precision, ONNX Runtime sessions, cache folders,
file hashes, CPU name.

This module sits at the bottom of ferkit's layers (see docs/ARCHITECTURE.md): it imports nothing
from ferkit, so the data, engine, inference and app layers can all share it without importing
each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
from pathlib import Path

import torch
import torch.distributed as dist

CACHE_ENV = "FERKIT_CACHE"


def select_device(name: str = "auto") -> torch.device:
    """``"auto"``: this process's GPU under torchrun, else cuda if available, else cpu; any other name as given."""
    if name == "auto":
        if dist.is_available() and dist.is_initialized() and torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for ``amp`` on ``device`` (None: full float32)."""
    if amp == "none":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if torch.cpu._is_avx512_bf16_supported() else None
    table = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in table:
        raise ValueError(f"unknown amp setting {amp!r}; valid: auto, bf16, fp16, none")
    return table[amp]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context for full precision."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime (and onnx, to edit graphs) can be imported: the int8 classifier and YuNet use it."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_threads() -> int:
    """The cores this process may run on (its CPU affinity), the default thread count of ONNX Runtime sessions."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def ort_session_options(threads: int | None = None, spinning: bool = False):
    """ONNX Runtime session options for ferkit's CPU inference: ``threads`` intra-op threads (None:
    :func:`cpu_threads`), idle threads sleeping unless ``spinning``.

    The thread count is always set, because ONNX Runtime's own default pins one worker to each core: with
    another process busy on one of two cores, YuNet + the int8 classifier then ran 640x480 frames at 75.9
    against 81.9 frames/s with two unpinned threads, 1280x720 frames at 27.1 against 32.0."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads) if threads else cpu_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


def cache_dir(sub: str = "") -> Path:
    """``$FERKIT_CACHE`` or ``~/.cache/ferkit``, optionally a sub-folder (``datasets``, ``models``)."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "ferkit")
    return Path(base) / sub if sub else Path(base)


def models_dir() -> Path:
    """``$FERKIT_CACHE/models`` or ``~/.cache/ferkit/models``: downloaded detector weights, exported models."""
    return cache_dir("models")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo on Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)"
