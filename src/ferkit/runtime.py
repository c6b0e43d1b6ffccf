"""Runtime helpers every layer may use: device choice, mixed precision, cache folders, file hashes, CPU name.

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
