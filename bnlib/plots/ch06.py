"""The figures of chapter 6, layer norm and friends (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from bnlib.plots.style import COLORS, finish, plain_log_ticks


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
    return finish(fig, title, legend_below=axes[1])   # one legend for all panels, below them


def _arm_color(label: str, k: int) -> str:
    from bnlib.plots.style import CYCLE

    low = label.lower()
    if low.startswith("bn-lstm, gamma 0.1"):
        return COLORS["bn"]
    if low.startswith("bn-lstm"):
        return "#ff7f0e"
    for key, name in (("plain", "lstm"), ("ln", "layer"), ("rms", "rms"), ("gn", "group")):
        if low.startswith(name):
            return COLORS[key]
    return CYCLE[k % len(CYCLE)]


def recurrent_bn_figure(loss: Mapping[str, tuple] | None, acc_by_length: Mapping[str, Mapping[str, float]],
                        lengths: Sequence[int], stat_gap: Mapping[str, np.ndarray] | None = None,
                        *, t_train: int = 28, bayes: Mapping[str, float] | None = None,
                        acc_ci: Mapping[str, Mapping[str, float]] | None = None,
                        gap_steps: Sequence[int] | None = None, title: str = ""):
    """Chapter 6: normalised LSTMs (experiment ``recurrent-bn``).

    (a) training loss per arm, ``loss[label] = (steps, values)``; (b) test
    accuracy against the test sequence length (``acc_by_length[label][str(T)]``),
    a dashed line at the longest training length; (c) if given, how far the
    batch-norm LSTM's running statistics at step ``t`` are from those of the
    last training step (``stat_gap[which]`` per step, ``which`` in x, h, c).
    """
    panels = ["loss"] * (loss is not None) + ["acc"] + ["gap"] * (stat_gap is not None)
    fig, axs = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    axes = dict(zip(panels, np.atleast_1d(axs)))
    letters = dict(zip(panels, "abc"))
    for k, label in enumerate(acc_by_length):
        color = _arm_color(label, k)
        if loss is not None:
            steps, values = loss[label]
            axes["loss"].plot(steps, values, color=color, label=label)
        acc = acc_by_length[label]
        yerr = None if acc_ci is None else [acc_ci[label][str(T)] or 0 for T in lengths]
        axes["acc"].errorbar(lengths, [acc[str(T)] for T in lengths], yerr=yerr, marker="o",
                             capsize=3, color=color, label=label)
    if loss is not None:
        axes["loss"].axhline(np.log(10), color="k", lw=0.8, ls=":")
        axes["loss"].set(xlabel="training step", ylabel="training loss (window mean)",
                         title="(a) training loss (dotted: chance)")
    axes = [axes.get("loss"), axes["acc"], axes.get("gap")]
    acc_title = f"({letters['acc']}) longer test sequences"
    gap_title = f"({letters.get('gap', 'c')}) BN-LSTM running statistics"
    if bayes is not None:
        axes[1].plot(lengths, [bayes[str(T)] for T in lengths], "k--", lw=1, label="ideal reader")
    axes[1].axvline(t_train, color="k", lw=0.8, ls=":")
    axes[1].text(t_train * 1.03, 0.05, "training\nlength", fontsize=8)
    axes[1].set_xscale("log", base=2)
    axes[1].set_xticks(list(lengths))
    axes[1].set_xticklabels([str(T) for T in lengths])
    axes[1].set(xlabel="test sequence length T", ylabel="test accuracy (eval mode)",
                ylim=(0, 1), title=acc_title)
    if stat_gap is not None:
        for which, name, color, marker in (("x", "BN of $W_x x_t$", "#7f7f7f", "s"),
                                           ("h", "BN of $W_h h_{t-1}$", "#17becf", "o"),
                                           ("c", "BN of $c_t$", "#8c564b", "^")):
            gap = np.asarray(stat_gap[which], dtype=float)
            steps = np.arange(1, len(gap) + 1) if gap_steps is None else np.asarray(gap_steps)
            keep = gap > 0                       # the last step is at distance 0 from itself
            axes[2].plot(steps[keep], gap[keep], marker=marker, color=color, label=name)
        axes[2].set(xlabel="time step t", ylabel=f"relative distance from step {t_train}'s statistics",
                    yscale="log", title=gap_title)
        plain_log_ticks(axes[2])
        axes[2].legend(fontsize=8)
    return finish(fig, title, legend_below=axes[1])   # one legend for all panels, below them


def gn_cnn_figure(batch_sizes: Sequence[int], error: Mapping[str, Sequence], labels: Mapping[str, str],
                  *, ci: Mapping[str, Sequence] | None = None, title: str = ""):
    """Chapter 6: test error against batch size (experiment ``gn-cnn``), with optional 95% bars.

    Left: every normalisation evaluated in evaluation mode.  Right: batch norm
    evaluated three ways (running averages, recomputed population statistics,
    batch statistics of test batches of the training size), on the same y axis.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), sharey=True)
    styles = {"none": ("plain", "-"), "bn": ("bn", "-"), "gn": ("gn", "-"), "ln": ("ln", "-"),
              "bn_recomputed": ("bn", "--"), "bn_batch_stats": ("bn", ":")}
    for ax, keys in ((axes[0], ("none", "bn", "gn", "ln")), (axes[1], ("bn", "bn_recomputed", "bn_batch_stats"))):
        for key in keys:
            if key not in error:
                continue
            color, ls = styles[key]
            y = 100 * np.asarray(error[key], dtype=float)
            yerr = None
            if ci is not None and key in ci:
                half = 100 * np.asarray([c or 0.0 for c in ci[key]], dtype=float)
                yerr = [np.minimum(half, 0.9 * y), half]          # a log axis: bars stop above 0
            ax.errorbar(batch_sizes, y, yerr=yerr, marker="o",
                        color=COLORS[color], ls=ls, capsize=3, label=labels.get(key, key))
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(batch_sizes))
        ax.set_xticklabels([str(b) for b in batch_sizes])
        ax.set(xlabel="batch size B", yscale="log")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2 if ax is axes[0] else 1)
        plain_log_ticks(ax)
    axes[0].set(ylabel="test error (%), log scale", title="(a) evaluation mode")
    axes[1].set(title="(b) batch norm, three ways to evaluate")
    return finish(fig, title)


def prenorm_figure(grad_norm: Mapping[str, Sequence[float]], loss: Mapping[str, Sequence[float]],
                   labels: Mapping[str, str], *, grad_ci: Mapping[str, Sequence[float]] | None = None,
                   title: str = ""):
    """Chapter 6: Pre-LN vs Post-LN (experiment ``prenorm``).

    (a) gradient norm of each block's second feed-forward matrix at
    initialisation, by block (``grad_norm[arch]``, optional 95% bars);
    (b) training loss without warm-up and (c) with warm-up
    (``loss["arch/no_warmup"]``, ``loss["arch/warmup"]``), on one shared y axis.
    """
    colors = {"post-ln": COLORS["plain"], "pre-ln": COLORS["ln"], "pre-rms": COLORS["rms"]}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    for arch, g in grad_norm.items():
        g = np.asarray(g, dtype=float)
        yerr = None if grad_ci is None else np.asarray(grad_ci[arch], dtype=float)
        axes[0].errorbar(np.arange(1, len(g) + 1), g, yerr=yerr, marker="o", capsize=3,
                         color=colors.get(arch), label=labels.get(arch, arch))
    axes[0].set_xticks(range(1, 1 + max(len(g) for g in grad_norm.values())))
    axes[0].set(xlabel="block (1 = next to the input)", ylabel="||dL/dW|| of the FFN's 2nd matrix",
                title="(a) gradient norm at initialisation")
    axes[0].set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    for ax, warm, name in ((axes[1], "no_warmup", "(b) no warm-up"), (axes[2], "warmup", "(c) with warm-up")):
        for arch in grad_norm:
            entry = loss[f"{arch}/{warm}"]
            if isinstance(entry, tuple):                   # (steps, values of shape (seeds, steps))
                steps, trace = np.asarray(entry[0]), np.atleast_2d(np.asarray(entry[1], dtype=float))
            else:
                trace = np.atleast_2d(np.asarray(entry, dtype=float))
                steps = np.arange(1, trace.shape[1] + 1)
            ax.plot(steps, np.nanmean(trace, axis=0), color=colors.get(arch), label=labels.get(arch, arch))
            if trace.shape[0] > 1:
                ax.fill_between(steps, np.nanmin(trace, axis=0), np.nanmax(trace, axis=0),
                                color=colors.get(arch), alpha=0.2)
        ax.set(xlabel="training step", ylabel="training loss", title=name, yscale="log")
    lo = min(ax.get_ylim()[0] for ax in axes[1:])
    hi = max(ax.get_ylim()[1] for ax in axes[1:])
    for ax in axes[1:]:
        ax.set_ylim(lo, hi)
        plain_log_ticks(ax)
    axes[2].legend(fontsize=8)
    return finish(fig, title)
