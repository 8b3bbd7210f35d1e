"""The figures of chapter 7, why batch norm works (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bnlib.plots.ch04 import percentile_bands
from bnlib.plots.style import COLORS, CYCLE, finish, plain_log_ticks


# the deep linear networks share the colour of their ReLU counterparts (no BN red, BN blue) and are drawn
# dashed in their own panels; the pale shades they had before were hard to read on white
_CH7_COLORS = {"noisy": CYCLE[3], "noisy_shared": "#8c564b", "l1": CYCLE[2], "l2": CYCLE[4], "linf": CYCLE[5],
               "linear_plain": COLORS["plain"], "linear_bn": COLORS["bn"]}

#: lines that are not one of the book's kinds (learning rates, say): no red or blue, which mean
#: "no normalisation" and "batch norm" everywhere else in the book
_OTHER = ["#9467bd", "#ff7f0e", "#2ca02c", "#8c564b", "#17becf", "#e377c2"]


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
    one row per probe.  Left: test accuracy of every network (BN as a wide
    pale line, noisy BN dashed with markers on top of it, so that both show
    where they coincide); then one panel per network (same y axis) with the
    percentile bands of the unit's input.
    """
    keys = list(acc)
    fig, axes = plt.subplots(1, 1 + len(keys), figsize=(3.3 * (1 + len(keys)), 3.4))
    for key in keys:
        c, lab = _ch7_color(key), labels.get(key, key)
        if key == "bn":
            axes[0].plot(*acc[key], color=c, lw=4, alpha=0.45, label=lab, zorder=2)
        elif key == "noisy":
            axes[0].plot(*acc[key], "--", color=c, lw=1.4, marker="x", ms=4, label=lab, zorder=3)
        else:
            axes[0].plot(*acc[key], color=c, label=lab, zorder=2)
    axes[0].set(xlabel="training step", ylabel="test accuracy", title="(a) test accuracy")
    lo, hi = min(np.nanmin(p[1]) for p in pct.values()), max(np.nanmax(p[1]) for p in pct.values())
    pad = 0.05 * (hi - lo)
    for k, (ax, key) in enumerate(zip(axes[1:], keys)):
        steps, p = pct[key]
        percentile_bands(steps, p, labels=percentiles, color=_ch7_color(key), ax=ax,
                         title=f"({chr(ord('b') + k)}) {labels.get(key, key)}",
                         ylabel="input of the activation" if k == 0 else "", legend=k == 0)
        ax.set_ylim(lo - pad, hi + pad)
    axes[0].legend(fontsize=8, loc="lower right")
    return finish(fig, title)


def ics_gradient_figure(histories: Mapping[str, Mapping[str, np.ndarray]], *,
                        labels: Mapping[str, str], title: str = ""):
    """Chapter 7, Santurkar et al.'s Figure 3: ``||G - G'||`` and ``cos(G, G')`` over training.

    ``histories[key]`` has ``probe_step`` and ``l2``/``cos`` arrays of shape
    (probes, layers); the median over layers 2..L is drawn (layer 1 has no
    earlier layer).  The ReLU networks are the top row, (a) and (b); the deep
    linear networks (keys starting ``linear``, dashed) the bottom row, (c) and
    (d), each with its own y scale, so that no curve hides another.
    """
    groups = [(name, [k for k in histories if k.startswith("linear") == linear])
              for name, linear in (("ReLU", False), ("deep linear", True))]
    groups = [(name, keys) for name, keys in groups if keys]
    fig, axes = plt.subplots(len(groups), 2, figsize=(10.5, 3.3 * len(groups)), squeeze=False)
    letters = iter("abcdefgh")
    for row, (name, keys) in zip(axes, groups):
        for key in keys:
            h = histories[key]
            style = "--" if key.startswith("linear") else "-"
            for ax, what in ((row[0], "l2"), (row[1], "cos")):
                ax.plot(h["probe_step"], np.median(h[what][:, 1:], axis=1), style, marker=".", ms=4,
                        color=_ch7_color(key), label=labels.get(key, key))
        row[0].set(xlabel="training step", ylabel=r"$\|G - G'\|_2$ (median over layers)", yscale="log",
                   title=f"({next(letters)}) {name}: L2 change of the gradient")
        row[1].set(xlabel="training step", ylabel=r"$\cos(G, G')$ (median over layers)",
                   title=f"({next(letters)}) {name}: cosine (1 = same direction)")
        plain_log_ticks(row[0])
        row[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return finish(fig, title)


def landscape_figure(histories: Mapping[str, Mapping[str, np.ndarray]], *,
                     labels: Mapping[str, str], title: str = ""):
    """Chapter 7, Santurkar et al.'s Figure 4: loss, gradient change and effective beta along the gradient.

    ``histories[key]`` has ``probe_step``, ``loss0`` (probes), and ``loss``,
    ``grad_change`` and ``beta`` (probes x step sizes).  (a) the band between
    the smallest and largest loss seen along the gradient; (b) the band of the
    gradient change over the step sizes; (c) the largest ratio ``beta``.
    The bands are outlined in their colour, so that both show where they
    overlap; one legend below the panels covers no data.
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    handles = []
    for key, h in histories.items():
        c, lab = _ch7_color(key), labels.get(key, key)
        s = h["probe_step"]
        loss = np.concatenate([h["loss0"][:, None], h["loss"]], axis=1)
        for ax, lo, hi in ((axes[0], loss.min(axis=1), loss.max(axis=1)),
                           (axes[1], h["grad_change"].min(axis=1), h["grad_change"].max(axis=1))):
            ax.fill_between(s, lo, hi, color=c, alpha=0.3, lw=0)
            ax.plot(s, lo, color=c, lw=0.8)
            ax.plot(s, hi, color=c, lw=0.8)
        axes[2].plot(s, h["beta"].max(axis=1), color=c, marker=".", ms=4)
        handles.append(Patch(facecolor=c, edgecolor=c, alpha=0.5,
                             label=f"{lab} (band: smallest to largest over the step sizes; line in (c))"))
    axes[0].set(xlabel="training step", ylabel="loss along the gradient", yscale="log",
                title="(a) loss landscape")
    axes[1].set(xlabel="training step", ylabel=r"$\|\nabla L(\theta - \eta g) - g\|$", yscale="log",
                title="(b) gradient predictiveness")
    axes[2].set(xlabel="training step", ylabel=r"max over $\eta$ of change / $\|\eta g\|$",
                title=r"(c) effective $\beta$-smoothness")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    return fig


_SCALE_COLORS = {"book": "#555555", "paper": CYCLE[3]}


def paired_differences_figure(panels: Mapping[str, Mapping[str, object]], *, ncols: int = 4,
                              title: str = ""):
    """Chapter 7: paired differences with their 95% intervals, one panel per quantity.

    ``panels[quantity][scale]`` is a :class:`bnlib.results.Difference` (or any
    object with ``mean``, ``low``, ``high``, ``n`` and ``resolved``); each panel
    draws one point with its interval per scale ("book", "paper") and a line at
    zero, so a difference whose interval crosses the line is not resolved.
    Resolved differences are filled markers, unresolved ones open; a legend
    below the panels explains the markers and the line at zero.
    """
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.8 * nrows + 0.5), squeeze=False)
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
        ax.set_xlabel("relative difference" if "relative" in quantity else "difference", fontsize=8)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.5 / (2.8 * nrows + 0.5), 1, 1))
    fig.legend(handles=[
        Line2D([], [], color="0.3", marker="o", ls="none", label="interval excludes 0 (resolved)"),
        Line2D([], [], color="0.3", marker="o", mfc="white", ls="none",
               label="interval contains 0 (not resolved)"),
        Line2D([], [], color="0.4", lw=0.8, ls="--", label="0: no difference"),
        Line2D([], [], color="0.3", marker="|", ms=10, ls="-", label="95% interval over seeds")],
        loc="lower center", ncol=4, fontsize=8)
    return fig


def lp_norm_figure(acc: Mapping[str, tuple], loss: Mapping[str, np.ndarray], *,
                   labels: Mapping[str, str], window: int = 50, title: str = ""):
    """Chapter 7: training loss (window mean, log scale) and test accuracy per normalisation.

    L2 normalisation is batch norm up to where eps enters, so their curves coincide: BN is drawn
    as a wide pale line and L2 dashed with crosses on top of it, and (c) shows every training loss
    divided by BN's, where L2 is the dashed line on BN's line at 1.
    """
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))

    def style(key):
        if key == "bn":
            return dict(ls="-", lw=4.5, alpha=0.45, zorder=2, marker="o", ms=7)
        if key == "l2":
            return dict(ls="--", lw=1.4, zorder=4, marker="x", ms=5)
        return dict(ls="-", lw=1.5, zorder=3, marker="o", ms=3)

    smooth = {key: _window_mean(loss[key], window) for key in acc}
    for key in acc:
        c, lab = _ch7_color(key), labels.get(key, key)
        st = style(key)
        steps = np.arange(len(smooth[key])) + window
        line_st = {k: v for k, v in st.items() if k not in ("marker", "ms")}
        axes[0].plot(steps, smooth[key], color=c, label=lab, **line_st)
        axes[1].plot(*acc[key], color=c, label=lab, **st)
        if "bn" in smooth:
            axes[2].plot(steps, smooth[key] / smooth["bn"], color=c, label=lab, **line_st)
    axes[0].set(xlabel="training step", ylabel=f"training loss ({window}-step mean)", yscale="log",
                title="(a) training loss")
    axes[1].set(xlabel="training step", ylabel="test accuracy (eval mode)", title="(b) test accuracy")
    axes[2].set(xlabel="training step", ylabel="training loss / BN's training loss", yscale="log",
                title="(c) training loss relative to BN")
    plain_log_ticks(axes[2])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.legend(*axes[1].get_legend_handles_labels(), loc="lower center", ncol=len(acc), fontsize=8)
    return fig


def weight_norm_growth(steps: Sequence[int], norms: Mapping[str, np.ndarray], *,
                       labels: Mapping[str, str] | None = None, title: str = ""):
    """Chapter 7: norm of a BN layer's weight vectors over training and the effective learning rate.

    ``norms[key]`` has one row per step and one column per unit; left the mean
    norm, right ``lr / ||w||^2`` relative to its initial value (both log scale,
    labelled with plain numbers).
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for k, (key, n) in enumerate(norms.items()):
        n = np.asarray(n, dtype=float)
        c = _ch7_color(key) or _OTHER[k % len(_OTHER)]
        lab = (labels or {}).get(key, key)
        axes[0].plot(steps, n.mean(axis=1), color=c, label=lab)
        eff = (1.0 / n ** 2).mean(axis=1)
        axes[1].plot(steps, eff / eff[0], color=c, label=lab)
    axes[0].set(xlabel="training step", ylabel=r"mean $\|w_k\|$", yscale="log",
                title="(a) weight norm of the units before BN")
    axes[1].set(xlabel="training step", ylabel=r"$\eta / \|w_k\|^2$, relative to step 0", yscale="log",
                title="(b) effective learning rate")
    for ax in axes:
        plain_log_ticks(ax)
    axes[0].legend(fontsize=8, loc="center right")
    return finish(fig, title)


def sweep_figure(points: Mapping[str, Mapping[str, Sequence]], *, title: str = ""):
    """Chapter 7's sign-flip sweep: BN minus no BN against the learning rate, one panel per quantity.

    ``points[quantity][arch]`` is a list of ``(lr, mean, low, high, resolved)``
    (``low``/``high`` may equal ``mean`` for a single seed).  A filled marker is a
    difference whose interval excludes zero, an open one an unresolved one; the
    zero line is drawn and labelled.
    """
    qs = list(points)
    fig, axes = plt.subplots(1, len(qs), figsize=(3.6 * len(qs), 3.3), squeeze=False)
    for ax, q in zip(axes[0], qs):
        swept = set()
        for k, (arch, rows) in enumerate(points[q].items()):
            if not rows:
                continue
            c = _OTHER[k % len(_OTHER)]
            lr, mean, low, high, res = (np.array(v, dtype=float) for v in zip(*rows))
            swept.update(lr.tolist())
            ax.plot(lr, mean, color=c, lw=1, label=arch)
            ax.errorbar(lr, mean, yerr=[mean - low, high - mean], fmt="none", ecolor=c, capsize=3)
            for xi, yi, r in zip(lr, mean, res):
                ax.plot(xi, yi, "o", color=c, mfc=c if r else "white", ms=6)
        ax.axhline(0, color="0.4", lw=0.8, ls=":")
        ax.annotate("no difference", xy=(0.02, 0.0), xycoords=("axes fraction", "data"), fontsize=7,
                    color="0.4", va="bottom")
        ax.set_xscale("log")
        ax.set_xticks(sorted(swept), [f"{v:g}" for v in sorted(swept)])   # the swept rates only
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="learning rate", title=q)
        ax.legend(fontsize=7, loc="best")
    axes[0][0].set_ylabel("BN − no BN")
    return finish(fig, title)


def grad_explosion_figure(depths: Sequence[int], first: Mapping[str, np.ndarray],
                          profile: Mapping[str, np.ndarray], *, labels: Mapping[str, str], title: str = ""):
    """Chapter 7, Yang et al.: (a) the first layer's gradient norm against depth at initialisation;
    (b) every layer's gradient norm in the deepest network (log y axes, one per panel)."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.5))
    for key in first:
        axes[0].plot(depths, first[key], "o-", color=_ch7_color(key), label=labels.get(key, key))
        axes[1].plot(np.arange(1, len(profile[key]) + 1), profile[key], ".-", color=_ch7_color(key),
                     label=labels.get(key, key))
    axes[0].set(xlabel="hidden layers (depth)", ylabel="‖∂L/∂W₁‖ at initialisation", yscale="log",
                title="(a) first layer's gradient vs depth")
    axes[1].set(xlabel="weight layer (1 = input side)", ylabel="‖∂L/∂W_l‖", yscale="log",
                title=f"(b) every layer, depth {max(depths)}")
    for ax in axes:
        plain_log_ticks(ax, "y")
        ax.legend(fontsize=8, loc="best")
    return finish(fig, title)


def hessian_spectrum_figure(spectra: Mapping[str, Mapping[str, np.ndarray]], *, labels: Mapping[str, str],
                            title: str = ""):
    """Chapter 7, Ghorbani et al.: the top Hessian eigenvalues by rank, divided by the k-th
    (scale-free), at initialisation and after training; one shared log y axis."""
    stages = [s for s in ("init", "trained") if any(s in v for v in spectra.values())]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.6 * len(stages), 3.5), sharey=True, squeeze=False)
    styles = {"plain": "o-", "bn": "s-", "bn_eval": "^--"}
    colors = {"plain": COLORS["plain"], "bn": COLORS["bn"], "bn_eval": _OTHER[0]}
    for ax, stage in zip(axes[0], stages):
        for key, v in spectra.items():
            if stage not in v:
                continue
            ev = np.asarray(v[stage], dtype=float)
            ax.plot(np.arange(1, len(ev) + 1), ev / ev[-1], styles.get(key, "o-"), color=colors.get(key),
                    label=labels.get(key, key), ms=4)
        ax.set(xlabel="rank i", title=f"({'ab'[stages.index(stage)]}) {'at step 0' if stage == 'init' else 'after training'}",
               yscale="log")
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc="upper right")
    # the panels share y: label it once every panel is drawn (plain_log_ticks fixes the limits
    # it reads, so calling it after the first panel would clip the second)
    plain_log_ticks(axes[0][0], "y")
    axes[0][0].set_ylabel("λᵢ / λ_k")
    return finish(fig, title)


def nf_training_figure(acc: Mapping[str, tuple], loss: Mapping[str, np.ndarray], *,
                       labels: Mapping[str, str], title: str = ""):
    """Chapter 7, normalisation-free training: (a) test accuracy, (b) training loss (100-step means, log y)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = {"plain": COLORS["plain"], "bn": COLORS["bn"], "skipinit": _OTHER[1], "nf": _OTHER[2],
              "nf_agc": _OTHER[0]}
    for key in acc:
        c = colors.get(key)
        axes[0].plot(*acc[key], "o-", color=c, ms=3, label=labels.get(key, key))
        values = np.asarray(loss[key], dtype=float)
        if len(values):
            w = max(1, min(100, len(values) // 5))
            axes[1].plot(np.arange(w, len(values) + 1), _window_mean(values, w), color=c, label=labels.get(key, key))
    axes[0].axhline(0.1, color="0.5", lw=0.8, ls=":")
    axes[0].annotate("chance", xy=(0.02, 0.1), xycoords=("axes fraction", "data"), fontsize=7, color="0.4",
                     va="bottom")
    axes[0].set(xlabel="training step", ylabel="test accuracy", title="(a) test accuracy", ylim=(0, 1))
    axes[1].set(xlabel="training step", ylabel="training loss (moving mean)", yscale="log",
                title="(b) training loss")
    plain_log_ticks(axes[1], "y")
    axes[0].legend(fontsize=7, loc="lower right")
    return finish(fig, title)


def weight_decay_figure(steps: Sequence[int], norm: Mapping[str, np.ndarray], eff_lr: Mapping[str, np.ndarray],
                        angle: Mapping[str, np.ndarray] | None = None, *, predicted_angle: float | None = None,
                        labels: Mapping[str, str], bands: Mapping[str, tuple] | None = None, title: str = ""):
    """Chapter 7, weight decay and the effective learning rate: (a) mean ||w_j||, (b) mean lr/||w_j||^2,
    (c) mean angle turned per step with the equilibrium prediction sqrt(2 lr wd) labelled.
    ``bands[key] = (low, high)`` arrays for (b) draw a 95% band (multi-seed)."""
    n = 3 if angle is not None else 2
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4))
    colors = {"no_wd": COLORS["plain"], "wd": COLORS["bn"]}
    for key in norm:
        c, lab = colors.get(key), labels.get(key, key)
        axes[0].plot(steps, norm[key], color=c, label=lab)
        axes[1].plot(steps, eff_lr[key], color=c, label=lab)
        if bands and key in bands:
            axes[1].fill_between(steps, *bands[key], color=c, alpha=0.2, lw=0)
        if angle is not None:
            axes[2].plot(steps[1:], np.asarray(angle[key])[1:], color=c, label=lab)
    axes[0].set(xlabel="training step", ylabel="mean ‖w_j‖", title="(a) weight norm")
    axes[1].set(xlabel="training step", ylabel="mean lr / ‖w_j‖²", yscale="log", title="(b) effective learning rate")
    plain_log_ticks(axes[1], "y")
    if angle is not None:
        if predicted_angle:
            axes[2].axhline(predicted_angle, color="0.3", ls="--", lw=1)
            axes[2].annotate("√(2·lr·wd)", xy=(0.98, predicted_angle), xycoords=("axes fraction", "data"),
                             ha="right", va="bottom", fontsize=8, color="0.3")
        axes[2].set(xlabel="training step", ylabel="angle per step (rad)", yscale="log",
                    title="(c) how far w_j turns per step")
        plain_log_ticks(axes[2], "y")
    for ax in axes:
        ax.legend(fontsize=7, loc="best")
    return finish(fig, title)
