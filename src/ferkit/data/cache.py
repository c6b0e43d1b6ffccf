"""Decoded-dataset cache: decode once, reuse until the inputs change.

The key hashes the reader's name and options together with every input file's
path, size and modification time, so editing, adding or removing a file makes a
new entry. Entries are plain ``.npz`` files (no pickles), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ferkit import runtime
from ferkit.data.dataset import FerData

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def cache_dir() -> Path:
    """``$FERKIT_CACHE`` or ``~/.cache/ferkit``, sub-folder ``datasets``."""
    return runtime.cache_dir("datasets")


def fingerprint(files: Iterable[Path], options: dict) -> str:
    """A hash of the files' paths, sizes and mtimes plus the reader options."""
    h = hashlib.sha1()
    h.update(json.dumps({"v": FORMAT_VERSION, **options}, sort_keys=True, default=str).encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def save(data: FerData, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    arrays = dict(
        images=data.images,
        labels=data.labels,
        split=data.split,
        sources=data.sources,
        label_names=np.array(data.label_names, dtype=str),
        meta=np.array(json.dumps(data.meta, default=str)),
    )
    if data.soft is not None:
        arrays["soft"] = data.soft
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written entry


def load(path: Path) -> FerData:
    with np.load(path, allow_pickle=False) as z:
        return FerData(
            images=z["images"],
            labels=z["labels"],
            split=z["split"],
            label_names=tuple(z["label_names"].tolist()),
            sources=z["sources"],
            soft=z["soft"] if "soft" in z else None,
            meta=json.loads(str(z["meta"])),
        )


def cached(name: str, files: list[Path], options: dict, build: Callable[[], FerData], use_cache: bool = True) -> FerData:
    """Return the cached decode of ``files`` under ``options``, building it with ``build()`` on a miss."""
    if not use_cache:
        return build()
    key = fingerprint(files, {"reader": name, **options})
    path = cache_dir() / f"{name}-{key}.npz"
    if path.is_file():
        try:
            data = load(path)
            log.info("loaded %d decoded samples from cache %s", len(data), path)
            return data
        except Exception as exc:  # a damaged entry is rebuilt, never fatal
            log.warning("ignoring unreadable cache entry %s: %s", path, exc)
    data = build()
    try:
        save(data, path)
        log.info("cached %d decoded samples at %s", len(data), path)
    except OSError as exc:
        log.warning("could not write dataset cache %s: %s", path, exc)
    return data
