"""The book's figure style: one colour per kind of network, Matplotlib defaults, and the
small helpers every chapter's figures share (curves, histogram grids).

``use_book_style()`` runs when :mod:`bnlib.plots` is imported, so notebooks need no set-up.
Colours: ``COLORS["plain"]`` for networks without normalisation, ``COLORS["bn"]``
for batch normalisation, and so on, so a reader learns one colour code for the book.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter
import numpy as np


COLORS = {
    "plain": "#d62728",   # red: no normalisation
    "bn": "#1f77b4",      # blue: batch normalisation
    "ln": "#2ca02c",      # green: layer normalisation
    "gn": "#9467bd",      # purple: group normalisation
    "in": "#8c564b",      # brown: instance normalisation
    "rms": "#e377c2",     # pink: RMS normalisation
    "torch": "#7f7f7f",   # grey: PyTorch reference
    "raw": "#d62728",
    "standardized": "#1f77b4",
}


#: a cycle for lines that are not one of the named kinds above
CYCLE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def use_book_style() -> None:
    """Set the Matplotlib defaults used by every figure of the book."""
    plt.rcParams.update({
        "figure.figsize": (6.4, 3.6),
        "figure.dpi": 100,
        "savefig.dpi": 120,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "legend.frameon": False,
        "axes.prop_cycle": matplotlib.cycler(color=CYCLE),
    })


use_book_style()


def color_for(label: str) -> str | None:
    """The book's colour for a label such as ``"bn"`` or ``"plain"`` (None if unnamed)."""
    return COLORS.get(label.lower())


def curves(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *,
           xlabel: str, ylabel: str, title: str = "", logx: bool = False,
           logy: bool = False, ax=None):
    """Line plot of named ``(x, y)`` series, coloured by the book's colour code.

    Returns the figure.  Used for loss curves, accuracy curves and sweeps.
    """
    fig, ax = _figure_and_axes(ax)
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, color=color_for(label))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend()
    return fig


def histogram_grid(samples: Sequence[Sequence[np.ndarray]], *, row_labels: Iterable[str],
                   col_labels: Iterable[str], bins: int = 30, range_=None,
                   color: str | None = None, title: str = "", sharex: bool = False):
    """A grid of small histograms: ``samples[i][j]`` is drawn in row i, column j.

    The layout of the book's per-layer figures (rows: training stages or
    settings, columns: layers).  Returns the figure.
    """
    rows, cols = len(samples), len(samples[0])
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 0.6, 1.25 * rows + 0.6),
                             squeeze=False, sharex=sharex)
    for i, row in enumerate(samples):
        for j, values in enumerate(row):
            ax = axes[i, j]
            ax.hist(np.ravel(values), bins=bins, range=range_, color=color or CYCLE[0])
            ax.set_yticks([])
            ax.tick_params(labelsize=7)
            ax.grid(False)
    for j, label in enumerate(col_labels):
        axes[0, j].set_title(label, fontsize=9)
    for i, label in enumerate(row_labels):
        axes[i, 0].set_ylabel(label, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _figure_and_axes(ax):
    if ax is None:
        fig, ax = plt.subplots()
        return fig, ax
    return ax.figure, ax


def finish(fig, title: str = "", fontsize: float | None = 10, legend_below=None):
    """The last steps of a figure: its title (if any), a tight layout; returns ``fig``.

    ``legend_below``: an axes whose legend entries become one legend for the whole
    figure, in a row below the panels, so that it covers no curve.
    """
    if legend_below is not None:
        handles, names = legend_below.get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=len(handles), fontsize=9)
    if title:
        fig.suptitle(title, **({} if fontsize is None else {"fontsize": fontsize}))
    fig.tight_layout(rect=(0, 0.1, 1, 1) if legend_below is not None else None)
    return fig


def plain_log_ticks(ax, axis: str = "y", fmt="{:g}") -> None:
    """Label a log axis with plain numbers (0.3, 2, 10, ...) instead of Matplotlib's
    ``3 x 10^-1`` labels: powers of ten over a wide range, 1-2-5 or finer steps over a
    short one, so that the scale can be read.

    Call it after the data are drawn (it reads the axis limits); ``fmt`` formats a
    tick value: a format string, or a function of the value
    (``lambda v: f"{100 * v:g}%"`` for percentages)."""
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    lo, hi = min(lo, hi), max(lo, hi)
    if not (lo > 0 and np.isfinite(hi)):
        return
    ticks = []
    for mantissas in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8)):
        ticks = [m * 10.0 ** e for e in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
                 for m in mantissas if lo <= m * 10.0 ** e <= hi]
        if len(ticks) >= 4:       # the coarsest set that still gives four labels
            break
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(FixedLocator(ticks))
    label = fmt if callable(fmt) else fmt.format
    target.set_major_formatter(FuncFormatter(lambda v, _: label(v)))
    target.set_minor_formatter(NullFormatter())
    (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)
