"""The figures of chapter 7, why batch norm works (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from bnlib.plots.ch04 import percentile_bands
from bnlib.plots.style import COLORS, CYCLE


_CH7_COLORS = {"noisy": CYCLE[3], "l1": CYCLE[2], "l2": CYCLE[4], "linf": CYCLE[5],
               "linear_plain": "#ff9896", "linear_bn": "#aec7e8"}


def _ch7_color(key: str) -> str | None:
    return COLORS.get(key) or _CH7_COLORS.get(key)


def _window_mean(values: np.ndarray, window: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    window = max(1, min(window, len(values)))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def noisy_bn_figure(acc: Mapping[str, tuple], pct: Mapping[str, tuple], *,
                    labels: Mapping[str, str], percentiles: Sequence = (15, 50, 85), title: str = ""):
    """Chapter 7, Santurkar et al.'s Figure 2: accuracy and one unit's input distribution.

    ``acc[key] = (steps, test_acc)``; ``pct[key] = (steps, percentiles)`` with
    one row per probe.  Left: test accuracy of every network; then one panel
    per network (same y axis) with the percentile bands of the unit's input.
    """
    keys = list(acc)
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(3.3 * (1 + len(keys)), 3.4))
    for key in keys:
        axes[0].plot(*acc[key], color=_ch7_color(key), label=labels.get(key, key))
    axes[0].set(xlabel="training step", ylabel="test accuracy", title="(a) test accuracy")
    lo, hi = min(np.nanmin(p[1]) for p in pct.values()), max(np.nanmax(p[1]) for p in pct.values())
    pad = 0.05 * (hi - lo)
    for k, (ax, key) in enumerate(zip(axes[1:], keys)):
        steps, p = pct[key]
        percentile_bands(steps, p, labels=percentiles, color=_ch7_color(key), ax=ax,
                         title=f"({chr(ord('b') + k)}) {labels.get(key, key)}",
                         ylabel="input of the activation" if k == 0 else "", legend=k == 0)
        ax.set_ylim(lo - pad, hi + pad)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def ics_gradient_figure(histories: Mapping[str, Mapping[str, np.ndarray]], *,
                        labels: Mapping[str, str], title: str = ""):
    """Chapter 7, Santurkar et al.'s Figure 5: ``||G - G'||`` and ``cos(G, G')`` over training.

    ``histories[key]`` has ``probe_step`` and ``l2``/``cos`` arrays of shape
    (probes, layers); the median over layers 2..L is drawn (layer 1 has no
    earlier layer).  Deep linear networks (keys starting ``linear``) dashed.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, h in histories.items():
        style = "--" if key.startswith("linear") else "-"
        for ax, what in ((axes[0], "l2"), (axes[1], "cos")):
            ax.plot(h["probe_step"], np.median(h[what][:, 1:], axis=1), style,
                    color=_ch7_color(key), label=labels.get(key, key))
    axes[0].set(xlabel="training step", ylabel=r"$\|G - G'\|_2$ (median over layers)", yscale="log",
                title="(a) L2 change of the gradient")
    axes[1].set(xlabel="training step", ylabel=r"$\cos(G, G')$ (median over layers)",
                title="(b) cosine of the angle (1 = same direction)")
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def landscape_figure(histories: Mapping[str, Mapping[str, np.ndarray]], *,
                     labels: Mapping[str, str], title: str = ""):
    """Chapter 7, Santurkar et al.'s Figure 4: loss, gradient change and effective beta along the gradient.

    ``histories[key]`` has ``probe_step``, ``loss0`` (probes), and ``loss``,
    ``grad_change`` and ``beta`` (probes x step sizes).  (a) the band between
    the smallest and largest loss seen along the gradient; (b) the band of the
    gradient change over the step sizes; (c) the largest ratio ``beta``.
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, h in histories.items():
        c, lab = _ch7_color(key), labels.get(key, key)
        s = h["probe_step"]
        loss = np.concatenate([h["loss0"][:, None], h["loss"]], axis=1)
        axes[0].fill_between(s, loss.min(axis=1), loss.max(axis=1), color=c, alpha=0.35, lw=0, label=lab)
        axes[1].fill_between(s, h["grad_change"].min(axis=1), h["grad_change"].max(axis=1),
                             color=c, alpha=0.35, lw=0, label=lab)
        axes[2].plot(s, h["beta"].max(axis=1), color=c, label=lab)
    axes[0].set(xlabel="training step", ylabel="loss along the gradient", yscale="log",
                title="(a) loss landscape")
    axes[1].set(xlabel="training step", ylabel=r"$\|\nabla L(\theta - \eta g) - g\|$", yscale="log",
                title="(b) gradient predictiveness")
    axes[2].set(xlabel="training step", ylabel=r"max over $\eta$ of change / $\|\eta g\|$",
                title=r"(c) effective $\beta$-smoothness")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


_SCALE_COLORS = {"book": "#555555", "paper": CYCLE[3]}


def paired_differences_figure(panels: Mapping[str, Mapping[str, object]], *, ncols: int = 4,
                              title: str = ""):
    """Chapter 7: paired differences with their 95% intervals, one panel per quantity.

    ``panels[quantity][scale]`` is a :class:`bnlib.results.Difference` (or any
    object with ``mean``, ``low``, ``high``, ``n`` and ``resolved``); each panel
    draws one point with its interval per scale ("book", "paper") and a line at
    zero, so a difference whose interval crosses the line is not resolved.
    Resolved differences are filled markers, unresolved ones open.
    """
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), squeeze=False)
    for ax, (quantity, by_scale) in zip(axes.flat, panels.items()):
        labels = list(by_scale)
        for i, lab in enumerate(labels):
            d = by_scale[lab]
            lo, hi = d.low, d.high
            finite = np.isfinite(lo) and np.isfinite(hi)
            color = _SCALE_COLORS.get(lab, CYCLE[i % len(CYCLE)])
            ax.errorbar([d.mean], [i], xerr=[[d.mean - lo], [hi - d.mean]] if finite else None,
                        fmt="o", color=color, capsize=4, mfc=color if d.resolved else "white")
        ax.axvline(0.0, color="0.4", lw=0.8, ls="--")
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels([f"{lab} (n={by_scale[lab].n})" for lab in labels])
        ax.set_ylim(-0.7, len(labels) - 0.3)
        ax.set_title(quantity, fontsize=9)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def lp_norm_figure(acc: Mapping[str, tuple], loss: Mapping[str, np.ndarray], *,
                   labels: Mapping[str, str], window: int = 50, title: str = ""):
    """Chapter 7: training loss (window mean, log scale) and test accuracy per normalisation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in acc:
        c, lab = _ch7_color(key), labels.get(key, key)
        smooth = _window_mean(loss[key], window)
        ls = "--" if key == "l2" else "-"   # L2 lies on top of BN: dashed to show both
        axes[0].plot(np.arange(len(smooth)) + window, smooth, ls, color=c, label=lab)
        axes[1].plot(*acc[key], ls, color=c, label=lab, marker="o", ms=3)
    axes[0].set(xlabel="training step", ylabel=f"training loss ({window}-step mean)", yscale="log",
                title="(a) training loss")
    axes[1].set(xlabel="training step", ylabel="test accuracy (eval mode)", title="(b) test accuracy")
    axes[1].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def weight_norm_growth(steps: Sequence[int], norms: Mapping[str, np.ndarray], *,
                       labels: Mapping[str, str] | None = None, title: str = ""):
    """Chapter 7: norm of a BN layer's weight vectors over training and the effective learning rate.

    ``norms[key]`` has one row per step and one column per unit; left the mean
    norm, right ``lr / ||w||^2`` relative to its initial value (both log scale).
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for k, (key, n) in enumerate(norms.items()):
        n = np.asarray(n, dtype=float)
        c = _ch7_color(key) or CYCLE[k % len(CYCLE)]
        lab = (labels or {}).get(key, key)
        axes[0].plot(steps, n.mean(axis=1), color=c, label=lab)
        eff = (1.0 / n ** 2).mean(axis=1)
        axes[1].plot(steps, eff / eff[0], color=c, label=lab)
    axes[0].set(xlabel="training step", ylabel=r"mean $\|w_k\|$", yscale="log",
                title="(a) weight norm of the units before BN")
    axes[1].set(xlabel="training step", ylabel=r"$\eta / \|w_k\|^2$, relative to step 0", yscale="log",
                title="(b) effective learning rate")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
