"""``ferkit data relabel``: a copy of a dataset with new class labels (a labels CSV, a class mapping, a label set)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from ferkit import labels as L
from ferkit.data.readers import read_label_csv
from ferkit.data.tools._source import Progress, label_keys, read_input, track
from ferkit.data.tools._writer import DatasetWriter, log_report
from ferkit.data.tools.report import ToolReport

log = logging.getLogger(__name__)


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """``["anger=angry", "disgust=angry"]`` -> ``{"angry": "angry", "disgust": "angry"}`` (canonical names)."""
    out = {}
    for p in pairs:
        old, sep, new = p.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ValueError(f"bad class mapping {p!r}; expected OLD=NEW, e.g. anger=angry")
        out[L.canonical(old)] = L.canonical(new)
    return out


def relabel_dataset(
    data: str | Path,
    out: str | Path,
    labels_csv: str | Path | None = None,
    mapping: dict[str, str] | Sequence[str] | None = None,
    to: tuple[str, ...] | str | None = None,
    progress: Progress | None = None,
) -> ToolReport:
    """Copy ``data`` with new class labels; the split layout is kept.

    Applied in order: ``labels_csv`` (``file,label`` rows; file is the path relative to the
    dataset root, the path below its split folder, or a bare name when unique; for a CSV input the
    name ``Training_<row>.png`` that convert gives it), then ``mapping`` (``{old: new}`` or
    ``["old=new", ...]``, merging or renaming classes), then ``to`` (a label set such as ``"fer5"``:
    classes outside it are dropped and counted in the report).
    """
    data = Path(data)
    inputs = [data] + ([Path(labels_csv)] if labels_csv else [])
    writer = DatasetWriter(out, inputs)
    if mapping is not None and not isinstance(mapping, dict):
        mapping = parse_mapping(mapping)
    mapping = {L.canonical(k): L.canonical(v) for k, v in (mapping or {}).items()}
    target = L.resolve_labels(to) if to is not None else None
    if labels_csv is None and not mapping and target is None:
        raise ValueError("relabel: nothing to do; give a labels CSV, a class mapping (old=new) or a target label set")
    src = read_input(data, progress)
    found = sorted({it.label for it in src.items})
    notes = []

    new_label = [it.label for it in src.items]
    if labels_csv is not None:
        table = read_label_csv(Path(labels_csv))
        by_name = Counter(it.name for it in src.items)
        used = set()
        for i, it in enumerate(src.items):
            keys = label_keys(it.origin, it.split_dir != "") if src.kind == "folder" else []
            keys += [it.name] if by_name[it.name] == 1 else []
            hit = next((k for k in keys if k in table), None)
            if hit is not None:
                new_label[i] = L.canonical(table[hit])
                used.add(hit)
        unused = [k for k in table if k not in used]
        if unused:
            # a typo or a file missing from the dataset must not pass silently
            log.warning("%s: %d row(s) name no file of %s, e.g. %s", labels_csv, len(unused), data, unused[:3])
            notes.append(f"{len(unused)} row(s) of {labels_csv} matched no file, e.g. {unused[:3]}")
        notes.append(f"{len(used)} file(s) labelled from {labels_csv}")
    if mapping:
        present = set(found) | set(new_label)
        unknown = sorted(set(mapping) - present)
        if unknown:
            raise ValueError(f"class mapping names unknown class(es) {unknown}; the dataset's classes are {sorted(present)}")
        new_label = [mapping.get(v, v) for v in new_label]
    dropped: Counter = Counter()
    with writer:
        for it, lab in track(progress, list(zip(src.items, new_label)), len(src.items), "copying"):
            if target is not None:
                idx = L.mapping([lab], target)[0]
                if idx < 0:
                    dropped[lab] += 1
                    continue
                lab = target[idx]
            writer.add(it, it.split_dir, lab)
    if dropped:
        notes.append(f"(classes not in {list(target)})")
    return log_report(writer.report("relabel", src, dropped=dict(sorted(dropped.items())), notes=notes))
