"""The figures of chapter 4, training with batch norm (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from bnlib.plots.style import CYCLE, _figure_and_axes, color_for


def percentile_bands(steps: Sequence[float], pct: np.ndarray, *, labels: Sequence = (15, 50, 85),
                     color: str | None = None, ax=None, title: str = "",
                     xlabel: str = "training step", ylabel: str = "", legend: bool = True):
    """Percentiles of a quantity over training (Ioffe & Szegedy's Figure 1b,c).

    ``pct`` has one row per step and one column per percentile in ``labels``
    (lowest first); the outer two are joined by a shaded band, the middle one
    is drawn thicker.  Returns the figure.
    """
    fig, ax = _figure_and_axes(ax)
    pct = np.asarray(pct, dtype=float)
    color = color or CYCLE[0]
    ax.fill_between(steps, pct[:, 0], pct[:, -1], color=color, alpha=0.15, lw=0)
    middle = pct.shape[1] // 2
    for j, label in enumerate(labels):
        ax.plot(steps, pct[:, j], color=color, lw=2.0 if j == middle else 1.0,
                ls="-" if j == middle else "--", label=f"{label}th percentile")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if legend:
        ax.legend(fontsize=7)
    return fig


def grouped_bars(groups: Mapping[str, Mapping[str, Sequence[float]]], *, ylabel: str,
                 title: str = "", colors: Mapping[str, str] | None = None, ylim=None, ax=None):
    """Bars of the mean of repeated runs with one-std error bars and the runs as dots.

    ``groups[group][label]`` is a list of values (one per seed); bars of one
    group stand side by side, one colour per label.  Returns the figure.
    """
    fig, ax = _figure_and_axes(ax)
    colors = dict(colors or {})
    group_names = list(groups)
    labels = list(dict.fromkeys(label for g in groups.values() for label in g))
    width = 0.8 / max(1, len(labels))
    for k, label in enumerate(labels):
        for i, g in enumerate(group_names):
            values = np.asarray(groups[g].get(label, []), dtype=float)
            if values.size == 0:
                continue
            x = i + (k - (len(labels) - 1) / 2) * width
            c = colors.get(label) or CYCLE[k % len(CYCLE)]
            ax.bar(x, values.mean(), width * 0.9, yerr=values.std() if values.size > 1 else None,
                   color=c, alpha=0.6, capsize=3, label=label if i == 0 else None)
            ax.plot(np.full(values.size, x), values, "o", color=c, ms=3)
    ax.set_xticks(range(len(group_names)), group_names)
    ax.set(ylabel=ylabel, title=title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="x", visible=False)
    ax.legend()
    return fig


def depth_sweep_figure(depths: Sequence[int], steps: Mapping[str, Mapping[str, Sequence[float]]],
                       *, max_steps: int, target: float, title: str = ""):
    """Steps to reach ``target`` test accuracy against depth, one panel per activation.

    ``steps[activation][label]`` gives one value per depth (NaN: not reached
    within ``max_steps``; drawn as an open marker on the ``max_steps`` line).
    Labels ``"BN"``/``"plain"`` get the book's colours.  Returns the figure.
    """
    acts = list(steps)
    fig, axes = plt.subplots(1, len(acts), figsize=(4.2 * len(acts), 3.4), squeeze=False,
                             sharey=True)
    for ax, act in zip(axes[0], acts):
        for label, values in steps[act].items():
            v = np.asarray(values, dtype=float)
            c = color_for(label)
            ax.plot(depths, v, "o-", color=c, label=label)
            miss = ~np.isfinite(v)
            if miss.any():
                ax.plot(np.asarray(depths)[miss], np.full(miss.sum(), max_steps), "^",
                        mfc="none", color=c, ms=8,
                        label=f"{label}: not reached in {max_steps}")
        ax.axhline(max_steps, color="k", lw=0.6, ls=":", label=f"step budget ({max_steps})")
        ax.set(xlabel="hidden layers", title=f"{act}", xticks=list(depths))
    axes[0, 0].set_ylabel(f"steps to {target:.0%} test accuracy")
    # one key for all panels, under them, so that it covers no point
    handles = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles),
               fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
