"""The figures of chapter 6, layer norm and friends (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from bnlib.plots.style import COLORS, plain_log_ticks


def norm_axes_cubes(n: int = 6, c: int = 6, hw: int = 4, groups: int = 2):
    """Chapter 6: which values share one mean and variance, for input ``(N, C, H, W)``.

    The classic cube picture (Wu & He 2018, Figure 2): one box per
    normalisation, examples ``N`` along one edge, channels ``C`` along the
    second and the flattened positions ``H, W`` up the third.  The coloured
    cells are normalised together (those of the first example / channel /
    group); every other set of the same shape gets its own statistics.  RMS
    norm uses the set of layer norm, without subtracting the mean.
    """
    panels = [("bn", "Batch norm", lambda i, j: j == 0),
              ("ln", "Layer norm", lambda i, j: i == 0),
              ("in", "Instance norm", lambda i, j: i == 0 and j == 0),
              ("gn", f"Group norm ({groups} groups)", lambda i, j: i == 0 and j < c // groups),
              ("rms", "RMS norm (no mean)", lambda i, j: i == 0)]
    fig = plt.figure(figsize=(12.5, 2.7))
    for k, (key, title, chosen) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1, projection="3d")
        filled = np.ones((n, c, hw), dtype=bool)
        colors = np.empty(filled.shape, dtype=object)
        for i in range(n):
            for j in range(c):
                colors[i, j, :] = COLORS[key] if chosen(i, j) else "#f2f2f2"
        ax.voxels(filled, facecolors=colors, edgecolors="#555555", linewidth=0.3)
        # the edge names are written next to the cube's own edges (not as axis labels at the
        # edges of the panel, where they ran into the neighbouring cube)
        ax.set_axis_off()
        ax.set_box_aspect((n, c, hw), zoom=0.9)
        ax.view_init(elev=20, azim=-135)
        kw = dict(fontsize=10, ha="center", va="center")
        ax.text(n / 2, -1.3, -0.6, "N", **kw)
        ax.text(-1.3, c / 2, -0.6, "C", **kw)
        ax.text(-0.4, c + 0.4, hw / 2, "H, W ", **dict(kw, ha="right"))
        ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0.03, right=0.99, bottom=-0.12, top=1.0, wspace=0.12)
    # ``bbox_inches="tight"`` (used by Jupyter's inline figures) does not count the extent of
    # 3D text, and would crop the first "H, W": an invisible frame keeps the whole canvas
    fig.patches.append(Rectangle((0, 0), 1, 1, transform=fig.transFigure, fill=False,
                                 edgecolor="none", linewidth=0))
    return fig


def batch_size_errors(batch_sizes: Sequence[int], errors: Mapping[str, Sequence[float]], *,
                      labels: Mapping[str, str] | None = None, title: str = "",
                      ci: Mapping[str, Sequence[float]] | None = None):
    """Chapter 6: test error against batch size, one line per normalisation (Wu & He's Figure 1).

    ``errors[key]`` are error rates (fractions), one per batch size; with
    ``ci[key]`` (half-widths of 95% intervals over seeds, same units) each
    point gets an error bar, and the lines are nudged sideways so that the
    bars do not hide one another.
    """
    fig, ax = plt.subplots(figsize=(7.8, 3.8))
    markers = {"none": "x", "bn": "o", "ln": "s", "gn": "^", "rms": "D", "in": "v"}
    x = np.asarray(batch_sizes, dtype=float)
    for i, (key, err) in enumerate(errors.items()):
        color = COLORS.get("plain" if key == "none" else key)
        label = (labels or {}).get(key, key)
        if ci is not None and key in ci:
            nudge = 2.0 ** (0.06 * (i - (len(errors) - 1) / 2))
            ax.errorbar(x * nudge, 100 * np.asarray(err), yerr=100 * np.asarray(ci[key], dtype=float),
                        marker=markers.get(key, "o"), ms=5, capsize=2, color=color, label=label)
        else:
            ax.plot(x, 100 * np.asarray(err), marker=markers.get(key, "o"), ms=5,
                    color=color, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(batch_sizes))
    ax.set_xticklabels([str(b) for b in batch_sizes])
    ax.set(xlabel="batch size (examples per step)", ylabel="test error (%)", title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))   # beside the axes: covers no point
    fig.tight_layout()
    return fig


def rnn_training_curves(loss: Mapping[str, tuple], acc: Mapping[str, tuple], *,
                        labels: Mapping[str, str] | None = None, title: str = ""):
    """Chapter 6: training loss (left) and test accuracy (right) of recurrent nets.

    ``loss[key]`` and ``acc[key]`` are pairs ``(steps, values)`` with ``values``
    of shape ``(seeds, len(steps))``; the mean over seeds is drawn as a line
    and, with several seeds, their range as a band.  Dotted lines mark chance
    (loss ln 10, accuracy 0.1); one legend below both panels.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0))
    for key in loss:
        color = COLORS.get("plain" if key == "none" else key)
        for ax, (x, values) in ((axes[0], loss[key]), (axes[1], acc[key])):
            values = np.atleast_2d(np.asarray(values, dtype=float))
            ax.plot(x, np.nanmean(values, axis=0), color=color, label=(labels or {}).get(key, key))
            if values.shape[0] > 1:
                ax.fill_between(x, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                                color=color, alpha=0.2)
    axes[0].axhline(np.log(10), color="k", lw=0.8, ls=":", label="chance: loss ln 10, accuracy 0.1")
    axes[1].axhline(0.1, color="k", lw=0.8, ls=":", label="chance: loss ln 10, accuracy 0.1")
    axes[0].set(xlabel="training step", ylabel="training loss (window mean)", yscale="log",
                title="(a) training loss")
    plain_log_ticks(axes[0])          # readable numbers on the log axis (1, 1.5, 2, ...)
    axes[1].set(xlabel="training step", ylabel="test accuracy (eval mode)", ylim=(0, 1),
                title="(b) test accuracy")
    # one legend for both panels, below them, so that it covers no curve
    handles, names = axes[1].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(handles), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig
