"""The figures of chapter 5, evaluation mode (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from bnlib.plots.style import COLORS, CYCLE, plain_log_ticks


def ema_forgetting(momenta: Sequence[float], steps: int, *, labels: Mapping[float, str] | None = None,
                   fraction: float = 0.01):
    """How fast a moving average forgets its initial value, and how many batches it is worth.

    Left: the weight ``(1 - m) ** t`` the running estimate still gives its
    initial value after ``t`` steps, one line per PyTorch momentum ``m`` (log
    scale; the dotted line is ``fraction``).  Right: the effective number of
    averaged batches after ``t`` steps (``bnlib.scratch.running.ema_effective_batches``),
    next to ``t`` itself (what a plain average of all batches would give).
    One legend below both panels names the lines and the two reference lines.
    Returns the figure.
    """
    from bnlib.scratch.running import ema_effective_batches, initial_weight

    t = np.unique(np.geomspace(1, steps, 200).astype(int))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.1))
    for k, m in enumerate(momenta):
        label = (labels or {}).get(m, f"momentum {m:g}")
        c = CYCLE[k % len(CYCLE)]
        axes[0].plot(t, initial_weight(m, t), color=c, label=label)
        axes[1].plot(t, [ema_effective_batches(m, int(s)) for s in t], color=c, label=label)
    axes[0].axhline(fraction, color="k", lw=0.8, ls=":",
                    label=f"(a) {fraction:.0%} of the initial value")
    axes[0].set(xscale="log", yscale="log", ylim=(1e-4, 1.5), xlabel="training steps t",
                ylabel="weight of the initial value", title="(a) forgetting the initial value")
    axes[1].plot(t, t, color="k", lw=0.8, ls="--", label="(b) plain average of all t batches")
    axes[1].set(xscale="log", yscale="log", xlabel="training steps t",
                ylabel="effective number of batches", title="(b) batches the average is worth")
    # one legend for both panels, below them, so that it covers no curve
    handles, names = axes[0].get_legend_handles_labels()
    h1, n1 = axes[1].get_legend_handles_labels()
    handles.append(h1[-1])
    names.append(n1[-1])
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8.5,
               title="momentum $\\alpha$ (PyTorch convention) and reference lines",
               title_fontsize=8.5)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    return fig


def eval_shift_figure(histories: Mapping[str, Mapping], *, net: str, labels: Mapping[str, str],
                      title: str = ""):
    """Eval blow-up under distribution shift: one row per shift (``scale``, ``noise``).

    Columns: test loss against the severity (log scale), test accuracy, and
    the root mean square of every BN layer's output at the largest severity
    (eval mode against training mode, a dot plot on a log axis).  One legend
    below the panels.  ``histories[net][kind]`` as recorded
    by the ``eval-shift`` experiment.  Returns the figure.
    """
    kinds = [k for k in ("scale", "noise") if k in histories[net]]
    styles = {"eval": ("#d62728", "o-", {}),
              # hollow and larger, so that it shows where AdaBN's curve lies on top of it
              "train_mode": ("#7f7f7f", "s--", {"ms": 8, "mfc": "white", "mew": 1.3}),
              "adabn": (COLORS["bn"], "^-", {})}
    xlabels = {"scale": "pixels multiplied by s", "noise": "noise std s added to every pixel"}
    fig, axes = plt.subplots(len(kinds), 3, figsize=(12, 3.3 * len(kinds) + 0.6), squeeze=False)
    for row, kind in zip(axes, kinds):
        h = histories[net][kind]
        s = np.asarray(h["severity"], dtype=float)
        x = np.arange(len(s))
        for method, (c, fmt, kw) in styles.items():
            row[0].plot(x, h[f"{method}_loss"], fmt, color=c, label=labels[method], **kw)
            row[1].plot(x, h[f"{method}_acc"], fmt, color=c, label=labels[method], **kw)
        for ax in row[:2]:
            ax.set_xticks(x, [f"{v:g}" for v in s])
            ax.set_xlabel(xlabels.get(kind, kind))
        row[0].set(yscale="log", ylabel="test loss", title=f"{kind}: test loss")
        row[1].set(ylim=(0, 1), ylabel="test accuracy", title=f"{kind}: test accuracy")
        # a dot plot (not bars: a bar's length means nothing on a log axis), markers as in
        # the other panels: eval mode red circles, training mode grey squares
        layers = np.arange(1, len(h["eval_rms"][-1]) + 1)
        row[2].plot(layers, h["eval_rms"][-1], "o", color=styles["eval"][0], ms=7,
                    label="eval mode")
        row[2].plot(layers, h["train_mode_rms"][-1], "s", color=styles["train_mode"][0],
                    **styles["train_mode"][2], label="training mode")
        row[2].set(yscale="log", xticks=layers, xlim=(layers[0] - 0.5, layers[-1] + 0.5),
                   xlabel="batch-norm layer", ylabel="RMS of the BN output",
                   title=f"{kind}, s = {s[-1]:g}: BN outputs")
        lo = min(np.min(h["eval_rms"][-1]), np.min(h["train_mode_rms"][-1]))
        hi = max(np.max(h["eval_rms"][-1]), np.max(h["train_mode_rms"][-1]))
        row[2].set_ylim(lo / 2, hi * 2)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(handles), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    return fig


def precise_bn_figure(steps: Sequence[int], precise_acc: Sequence[float], ema_acc: np.ndarray,
                      ema_error: np.ndarray, momenta: Sequence[float], *, title: str = ""):
    """Test accuracy with moving-average statistics (one line per momentum) and with precise ones.

    Left: test accuracy against the training step (log scale), the precise
    statistics as a thick black dashed line.  Right: mean relative error of
    each moving-average variance against the precise variance.  Returns the figure.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 3.6))
    for k, m in enumerate(momenta):
        c = CYCLE[k % len(CYCLE)]
        axes[0].plot(steps, ema_acc[k], "o-", color=c, ms=4, label=f"EMA, momentum {m:g}")
        axes[1].plot(steps, ema_error[k], "o-", color=c, ms=4, label=f"momentum {m:g}")
    axes[0].plot(steps, precise_acc, "k--", lw=2, label="precise statistics (panel a)")
    axes[0].set(xscale="log", xlabel="training step", ylabel="test accuracy (eval mode)",
                title="(a) accuracy with each estimate")
    axes[1].set(xscale="log", yscale="log", xlabel="training step",
                ylabel="mean relative error",
                title="(b) error of the moving-average variance")
    plain_log_ticks(axes[1], fmt=lambda v: f"{100 * v:g}%")   # "5%", not "5 x 10^-2"
    # one legend for both panels, to their right, so that it covers no curve
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize=8.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    return fig


def precise_bn_gap_bands(steps: Sequence[int], gaps: Mapping[str, tuple], *, zoom: tuple = (-3.0, 6.0),
                         zoom_from: int = 100, title: str = ""):
    """Precise minus moving-average test accuracy over seeds, one band per momentum (chapter 5).

    ``gaps`` maps a label to ``(mean, low, high)`` arrays over ``steps``: the
    mean and 95% interval of the paired difference, in accuracy points.  Left:
    every checkpoint; right: the same from step ``zoom_from`` on, with the
    y-axis limited to ``zoom``.  A dotted line marks zero (no difference).
    Returns the figure.
    """
    steps = np.asarray(steps)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    late = steps >= zoom_from
    for k, (label, (mean, low, high)) in enumerate(gaps.items()):
        c = CYCLE[k % len(CYCLE)]
        mean, low, high = map(np.asarray, (mean, low, high))
        for ax, sel in ((axes[0], slice(None)), (axes[1], late)):
            ax.plot(steps[sel], mean[sel], "o-", color=c, ms=4, label=label)
            ax.fill_between(steps[sel], low[sel], high[sel], color=c, alpha=0.15, lw=0)
    for ax in axes:
        ax.axhline(0.0, color="k", lw=0.8, ls=":", label="0: no difference")
        ax.set(xscale="log", xlabel="training step")
    axes[0].set(ylabel="precise minus EMA accuracy (points)",
                title="(a) gain of precise statistics, 95% interval")
    axes[1].set(ylim=zoom, ylabel="precise minus EMA accuracy (points)",
                title=f"(b) the same from step {zoom_from} on, y-axis zoomed")
    # one legend for both panels, to their right, so that it covers no band
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    return fig


def batch_renorm_curves(steps: Sequence[int], curves: Mapping[str, Mapping[str, Sequence[float]]], *,
                        titles: Mapping[str, str], labels: Mapping[str, str], title: str = "",
                        warmup: int | None = None):
    """Eval-mode test accuracy during training, batch norm vs batch renorm, one panel per set-up.

    ``curves[setting][arm]`` is the accuracy at each of ``steps``; all panels
    share one y-axis.  ``warmup``: a dotted line where batch renorm's limits
    start to open (before it, batch renorm is batch norm).  Returns the figure.
    """
    settings = list(curves)
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings) + 1.8, 3.5),
                             sharey=True, squeeze=False)
    axes = axes[0]
    styles = {"bn": dict(color=COLORS.get("bn", CYCLE[0]), ls="-"),
              "renorm": dict(color=CYCLE[1], ls="--")}
    for ax, setting in zip(axes, settings):
        for k, (arm, acc) in enumerate(curves[setting].items()):
            style = styles.get(arm, dict(color=CYCLE[(k + 2) % len(CYCLE)], ls="-"))
            ax.plot(steps, acc, marker="o", ms=3.5, lw=1.6, label=labels.get(arm, arm), **style)
        if warmup:
            ax.axvline(warmup, color="0.4", ls=":", lw=1.2,
                       label=f"step {warmup}: renorm limits\nstart to open (before: BN)")
        ax.set(xlabel="training step", title=titles.get(setting, setting))
        ax.grid(alpha=0.3)
    axes[0].set(ylabel="test accuracy (eval mode)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize=8.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    return fig
