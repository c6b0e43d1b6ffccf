"""Writing a tool's output safely: only into a new folder outside the input, no file lost to a name
collision, everything written to a hidden sibling folder that is renamed into place at the end."""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ferkit.data.dataset import SPLIT_ALIASES, SPLITS
from ferkit.data.tools._source import Item, Source
from ferkit.data.tools.report import ToolReport
from ferkit.imageio import write_image

log = logging.getLogger(__name__)


def check_output(out: Path, inputs: Sequence[Path]) -> Path:
    """Refuse an output that is not new: non-empty, equal to an input, or inside an input folder."""
    res = out.resolve()
    for src in inputs:
        s = Path(src).resolve()
        if res == s or (s.is_dir() and s in res.parents):
            raise FileExistsError(f"{out}: the output is {'the input' if res == s else 'inside the input'} {src}; "
                                  "the tools never write into their input, give a new folder outside it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: output {'folder is not empty' if out.is_dir() else 'exists'}; give a new folder")
    return out


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process; or not a pid at all
        return pid > 0
    return True


def _remove_dead_partials(out: Path) -> None:
    """Remove the hidden ``.OUT.partial-PID`` folders beside ``out`` that runs killed before their end (kill -9, a
    power cut) left, each with a log line; one of a process still running is left to it, and named."""
    prefix = f".{out.name}.partial-"  # a prefix, not a glob pattern: names may hold [ ] * ?
    for tmp in sorted(p for p in out.parent.iterdir() if p.name.startswith(prefix)):
        pid = tmp.name[len(prefix):]
        if not pid.isdigit() or int(pid) == os.getpid() or not tmp.is_dir() or tmp.is_symlink():
            continue  # not ours; this process's own is replaced by __enter__
        if _pid_alive(int(pid)):
            log.warning("%s: left alone, the unfinished output of process %s, which still runs (another run writing "
                        "%s?)", tmp, pid, out)
            continue
        log.info("%s: removed, the unfinished output of an earlier run (process %s, no longer running)", tmp, pid)
        shutil.rmtree(tmp, ignore_errors=True)


class DatasetWriter:
    """Writes a new dataset folder: unique names, per split/class counts, atomic rename at the end."""

    def __init__(self, out: str | Path, inputs: Sequence[Path]):
        self.out = check_output(Path(out), inputs)
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        self.taken: set[str] = set()
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.renamed: list[tuple[str, str]] = []
        self.written = 0

    def __enter__(self) -> DatasetWriter:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_partials(self.out)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)  # left by a killed earlier run of this same process id
        self.tmp.mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        # every write went to a distinct name, so the folder must hold exactly that many files
        on_disk = sum(1 for p in self.tmp.rglob("*") if p.is_file())
        if on_disk != self.written:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise RuntimeError(f"{self.out}: wrote {self.written} files but {on_disk} are on disk; nothing was kept")
        if self.out.exists():
            self.out.rmdir()  # checked empty before
        self.tmp.rename(self.out)

    def _target(self, split_dir: str, label: str, name: str, origin: str) -> Path:
        folder = f"{split_dir}/{label}" if split_dir else label
        rel = f"{folder}/{name}"
        # lower-case keys: two names differing only in case would collide on macOS/Windows
        if rel.lower() in self.taken:
            stem, ext = os.path.splitext(name)
            k = 1
            while f"{folder}/{stem}-{k}{ext}".lower() in self.taken:
                k += 1
            rel = f"{folder}/{stem}-{k}{ext}"
            self.renamed.append((origin, rel))
            log.info("name collision: %s written as %s", origin, rel)
        self.taken.add(rel.lower())
        self.counts[split_dir][label] += 1
        self.written += 1
        dest = self.tmp / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest

    def add(self, item: Item, split_dir: str, label: str, name: str | None = None) -> None:
        """Copy the item's file unchanged, or write its pixels as PNG (CSV input)."""
        if item.path is not None and item.image is None:
            shutil.copyfile(item.path, self._target(split_dir, label, name or item.name, item.origin))
        else:
            name = os.path.splitext(name or item.name)[0] + ".png"
            write_image(self._target(split_dir, label, name, item.origin), item.image)

    def add_image(self, img: np.ndarray, split_dir: str, label: str, name: str, origin: str) -> None:
        """Write new pixels (an augmented copy) as ``name``."""
        write_image(self._target(split_dir, label, name, origin), img)

    def report(self, tool: str, src: Source, **kw) -> ToolReport:
        """The :class:`ToolReport` of what was written from ``src``, splits in train/val/test order."""
        order = {s: i for i, s in enumerate(SPLITS)}

        def key(s: str) -> tuple:
            return (order.get(SPLIT_ALIASES.get(s.lower(), ""), 9), s)

        counts = {s: dict(sorted(self.counts[s].items())) for s in sorted(self.counts, key=key)}
        return ToolReport(tool, self.out, counts, len(src.items), self.written, list(src.skipped), list(self.renamed), **kw)


def log_report(rep: ToolReport) -> ToolReport:
    """Log ``rep`` in one line and hand it back (a tool's last step)."""
    log.debug("%s: wrote %d %s to %s", rep.tool, rep.files_out, rep.unit, rep.out)
    return rep
