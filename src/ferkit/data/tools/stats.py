"""``ferkit data stats``: class counts per split, as a table, a CSV file and a bar chart."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.data.readers import load_dataset
from ferkit.data.tools._writer import check_output
from ferkit.data.tools.report import format_counts

log = logging.getLogger(__name__)


@dataclass
class DatasetStats:
    """Class counts of a dataset: ``counts`` is ``{split: {class: n}}`` with every class listed."""

    path: Path
    label_names: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    image_size: tuple[int, int]
    channels: int
    skipped: list[str] = field(default_factory=list)

    def table(self) -> str:
        return format_counts(self.counts, self.label_names)

    def format(self) -> str:
        n = sum(sum(c.values()) for c in self.counts.values())
        h, w = self.image_size
        lines = [f"{self.path}: {n} images, {h}x{w}, {'grey' if self.channels == 1 else 'RGB'}, {len(self.label_names)} classes",
                 self.table()]
        if self.skipped:
            lines.append(f"{len(self.skipped)} unreadable input(s) skipped, e.g. {self.skipped[0]}")
        return "\n".join(lines)


def dataset_stats(
    data: str | Path,
    labels: tuple[str, ...] | str | None = None,
    csv_path: str | Path | None = None,
    plot_path: str | Path | None = None,
) -> DatasetStats:
    """Class counts per split of ``data`` (optionally mapped onto ``labels`` by name, e.g. ``"fer5"``).

    ``csv_path`` writes the table as CSV (``class,<splits>,total``); ``plot_path`` a bar chart PNG.
    Neither may exist already or lie inside the input.
    """
    data = Path(data)
    for p in (csv_path, plot_path):
        if p is not None:
            check_output(Path(p), [data])
            Path(p).parent.mkdir(parents=True, exist_ok=True)
    fd = load_dataset(data, labels=labels)
    st = DatasetStats(data, fd.label_names, fd.class_counts(), fd.image_size, fd.channels, list(fd.meta.get("skipped", [])))
    if csv_path is not None:
        cols = list(st.counts)
        with open(csv_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["class", *cols, "total"])
            for name in st.label_names:
                vals = [st.counts[s][name] for s in cols]
                w.writerow([name, *vals, sum(vals)])
            tot = [sum(st.counts[s].values()) for s in cols]
            w.writerow(["total", *tot, sum(tot)])
        log.info("wrote class counts to %s", csv_path)
    if plot_path is not None:
        from ferkit.plots import plot_class_counts  # matplotlib only when a plot is asked for

        plot_class_counts(st.counts, st.label_names, plot_path, title=data.name)
        log.info("wrote class-count chart to %s", plot_path)
    return st
