"""Every figure ferkit draws, written as PNG files: the only package that imports matplotlib.

Library code anywhere may import from here (it sits in the lowest layer); matplotlib itself is
loaded on the first plot, with the non-interactive Agg backend, so ``import ferkit`` stays cheap
and no display is needed.
"""

from __future__ import annotations

from ferkit.plots._mpl import pyplot
from ferkit.plots.calibration import plot_coverage, plot_reliability
from ferkit.plots.sweep import plot_sweep_bars, plot_sweep_curves
from ferkit.plots.training import plot_class_counts, plot_confusion, plot_curves

__all__ = ["plot_class_counts", "plot_confusion", "plot_coverage", "plot_curves", "plot_reliability", "plot_sweep_bars", "plot_sweep_curves", "pyplot"]
