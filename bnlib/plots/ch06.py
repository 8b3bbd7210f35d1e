"""The figures of chapter 6, layer norm and friends (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from bnlib.plots.style import COLORS


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
    fig = plt.figure(figsize=(12.5, 3.2))
    for k, (key, title, chosen) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1, projection="3d")
        filled = np.ones((n, c, hw), dtype=bool)
        colors = np.empty(filled.shape, dtype=object)
        for i in range(n):
            for j in range(c):
                colors[i, j, :] = COLORS[key] if chosen(i, j) else "#f2f2f2"
        ax.voxels(filled, facecolors=colors, edgecolors="#555555", linewidth=0.3)
        ax.set_xlabel("N", labelpad=-12)
        ax.set_ylabel("C", labelpad=-12)
        ax.set_zlabel("H, W", labelpad=-12)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        ax.set_box_aspect((n, c, hw))
        ax.view_init(elev=20, azim=-135)
        ax.set_title(title, fontsize=10)
        ax.grid(False)
    fig.subplots_adjust(left=0.0, right=1.0, wspace=0.0)
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
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
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
    ax.legend()
    fig.tight_layout()
    return fig


def rnn_training_curves(loss: Mapping[str, tuple], acc: Mapping[str, tuple], *,
                        labels: Mapping[str, str] | None = None, title: str = ""):
    """Chapter 6: training loss (left) and test accuracy (right) of recurrent nets.

    ``loss[key]`` and ``acc[key]`` are pairs ``(steps, values)`` with ``values``
    of shape ``(seeds, len(steps))``; the mean over seeds is drawn as a line
    and, with several seeds, their range as a band.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in loss:
        color = COLORS.get("plain" if key == "none" else key)
        for ax, (x, values) in ((axes[0], loss[key]), (axes[1], acc[key])):
            values = np.atleast_2d(np.asarray(values, dtype=float))
            ax.plot(x, np.nanmean(values, axis=0), color=color, label=(labels or {}).get(key, key))
            if values.shape[0] > 1:
                ax.fill_between(x, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                                color=color, alpha=0.2)
    axes[0].set(xlabel="training step", ylabel="training loss (window mean)", yscale="log",
                title="(a) training loss")
    axes[1].set(xlabel="training step", ylabel="test accuracy (eval mode)", ylim=(0, 1),
                title="(b) test accuracy")
    axes[1].legend()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
