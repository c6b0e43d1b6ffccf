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

The jobs live in three modules: :mod:`~ferkit.engine.sweep.spec` (the sweep file,
its expansion into runs, the folder layout), :mod:`~ferkit.engine.sweep.runner`
(running them, in this process or as parallel ``ferkit train`` processes) and
:mod:`~ferkit.engine.sweep.summary` (tables and plots); the figures themselves
are drawn by :mod:`ferkit.plots.sweep`.
"""

from __future__ import annotations

from ferkit.engine.sweep.runner import SweepResult, run_sweep
from ferkit.engine.sweep.spec import (
    SPEC_NAME,
    SWEEP_KEYS,
    Sweep,
    SweepRun,
    load_sweep,
    plan_runs,
    read_sweep,
    run_status,
    select_configs,
    split_values,
    validate_config,
)
from ferkit.engine.sweep.summary import (
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    collect_runs,
    plot_sweep_curves,
    summarize_runs,
    summarize_sweep,
    summary_markdown,
)
from ferkit.plots.sweep import plot_sweep_bars

__all__ = [
    "RUN_COLUMNS", "SPEC_NAME", "SUMMARY_COLUMNS", "SWEEP_KEYS", "Sweep", "SweepResult", "SweepRun",
    "collect_runs", "load_sweep", "plan_runs", "plot_sweep_bars", "plot_sweep_curves", "read_sweep", "run_status",
    "run_sweep", "select_configs", "split_values", "summarize_runs", "summarize_sweep", "summary_markdown",
    "validate_config",
]
