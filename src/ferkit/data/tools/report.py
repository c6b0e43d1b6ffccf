"""What a dataset tool did: :class:`ToolReport`, and the plain-text class-count table the CLI prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def format_counts(counts: dict[str, dict[str, int]], classes: Sequence[str] | None = None) -> str:
    """A plain-text table of ``{split: {class: n}}``: one row per class, one column per split, totals."""
    cols = list(counts)
    if classes is None:
        classes = sorted({c for per in counts.values() for c in per})
    heads = [c or "(all)" for c in cols] + (["total"] if len(cols) != 1 else [])
    rows = []
    for name in classes:
        vals = [counts[s].get(name, 0) for s in cols]
        rows.append([name] + vals + ([sum(vals)] if len(cols) != 1 else []))
    tot = [sum(counts[s].values()) for s in cols]
    rows.append(["total"] + tot + ([sum(tot)] if len(cols) != 1 else []))
    w0 = max(len("class"), *(len(str(r[0])) for r in rows))
    widths = [max(len(h), *(len(str(r[i + 1])) for r in rows)) for i, h in enumerate(heads)]
    lines = ["class".ljust(w0) + "".join("  " + h.rjust(w) for h, w in zip(heads, widths))]
    for r in rows:
        lines.append(str(r[0]).ljust(w0) + "".join("  " + str(v).rjust(w) for v, w in zip(r[1:], widths)))
    return "\n".join(lines)


@dataclass
class ToolReport:
    """What a tool wrote.

    counts: ``{output split folder: {class: files written}}`` (``""`` for a layout without split
    folders; ``Training``/``PublicTest``/``PrivateTest`` for a CSV written by convert).
    files_in: readable input samples (files or CSV rows). files_out: files (or rows) written.
    renamed: ``(input, output)`` pairs kept under a new name after a name collision.
    dropped: ``{class: n}`` samples left out on purpose (``relabel`` to a smaller label set).
    augmented: ``{class: n}`` augmented copies added (``balance``).
    """

    tool: str
    out: Path
    counts: dict[str, dict[str, int]]
    files_in: int
    files_out: int
    skipped: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    augmented: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unit: str = "files"  # "rows" for a CSV

    def format(self, max_items: int = 10) -> str:
        """A human-readable summary: totals, the count table, collisions, skipped files, notes."""
        lines = [f"{self.tool}: wrote {self.files_out} {self.unit} to {self.out} (from {self.files_in} input samples)"]
        classes = sorted({c for per in self.counts.values() for c in per})
        lines.append(format_counts(self.counts, classes))
        if self.augmented:
            lines.append("augmented copies added: " + ", ".join(f"{c} {n}" for c, n in self.augmented.items()))
        if self.dropped:
            lines.append("left out on purpose: " + ", ".join(f"{c} {n}" for c, n in self.dropped.items()))
        if self.renamed:
            lines.append(f"{len(self.renamed)} name collision(s): kept under a new name")
            lines += [f"  {a} -> {b}" for a, b in self.renamed[:max_items]]
            if len(self.renamed) > max_items:
                lines.append(f"  ... and {len(self.renamed) - max_items} more")
        if self.skipped:
            lines.append(f"{len(self.skipped)} unreadable input(s) skipped:")
            lines += [f"  {s}" for s in self.skipped[:max_items]]
            if len(self.skipped) > max_items:
                lines.append(f"  ... and {len(self.skipped) - max_items} more")
        lines += self.notes
        return "\n".join(lines)
