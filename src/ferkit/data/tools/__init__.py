"""Dataset tools: class-count tables, stratified split, balancing by augmented
oversampling, relabelling, and FER2013 CSV <-> image-folder conversion.

Each tool reads a dataset (a FER2013-format CSV or an image folder, exactly as
:func:`ferkit.data.readers.load_dataset` sees it, ``labels.csv`` included) and
writes a *new* dataset. Guarantees, for every tool:

- Output goes to a new folder. A non-empty output folder, or one equal to or
  inside the input, is refused with :class:`FileExistsError`. The tool writes
  into a hidden sibling folder and renames it at the end, so a failed run
  leaves nothing behind.
- The input is never modified.
- No file is lost to a name collision (FER2013's own ``train/`` has two names
  used in two classes each): a second file with a name already written in the
  same folder is kept as ``<stem>-1<ext>`` (``-2``, ...), and the report lists it.
  Files in = files out, except classes a user drops on purpose (``relabel --to``).
- Unreadable files are reported by path and skipped; they never stop the run.

Each tool returns a :class:`ToolReport` (counts per split and class, what was
renamed, skipped or dropped); the CLI prints it. Library code only logs.

One module per tool (:mod:`.stats`, :mod:`.split`, :mod:`.balance`, :mod:`.relabel`,
:mod:`.convert`); they share :mod:`.report`, reading the input (``_source``) and the
safe, no-overwrite writer that keeps the guarantees above (``_writer``).
"""

from __future__ import annotations

from ferkit.data.tools._source import KAGGLE_DIR, USAGE, Progress
from ferkit.data.tools.balance import balance_dataset
from ferkit.data.tools.convert import convert_dataset
from ferkit.data.tools.relabel import parse_mapping, relabel_dataset
from ferkit.data.tools.report import ToolReport, format_counts
from ferkit.data.tools.split import split_dataset
from ferkit.data.tools.stats import DatasetStats, dataset_stats

__all__ = [
    "KAGGLE_DIR", "USAGE", "DatasetStats", "Progress", "ToolReport", "balance_dataset", "convert_dataset",
    "dataset_stats", "format_counts", "parse_mapping", "relabel_dataset", "split_dataset",
]
