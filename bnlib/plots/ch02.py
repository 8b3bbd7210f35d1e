"""The figures of chapter 2, initialisation (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from bnlib.plots.style import CYCLE, finish


def fan_in_histograms(z_by_init: Mapping[str, np.ndarray], *, theory: Mapping[str, float],
                      labels: Mapping[str, str] | None = None, z_range: float | None = None,
                      bins: int = 240, colors: Mapping[str, str] | None = None):
    """Chapter 2: histograms of a neuron's pre-activation z (top) and of sigmoid(z) (bottom).

    One column per initialisation; the top panels share the z axis (so a narrow
    distribution looks narrow) and overlay the normal density N(0, theory^2).
    Returns the figure.
    """
    labels, colors = dict(labels or {}), dict(colors or {})
    names = list(z_by_init)
    if z_range is None:
        z_range = 3.0 * max(theory.values())
    fig, axes = plt.subplots(2, len(names), figsize=(3.4 * len(names), 5.0), squeeze=False)
    grid = np.linspace(-z_range, z_range, 800)
    for j, name in enumerate(names):
        z, s = np.asarray(z_by_init[name]), float(theory[name])
        top, bottom = axes[0, j], axes[1, j]
        color = colors.get(name, CYCLE[j])
        top.hist(z, bins=bins, range=(-z_range, z_range), density=True, color=color,
                 alpha=0.6, label=f"sampled, std {z.std():.3g}")
        top.plot(grid, np.exp(-0.5 * (grid / s) ** 2) / (s * np.sqrt(2 * np.pi)), color="k",
                 lw=1, label=f"N(0, {s:.3g}²)")
        top.set(xlabel="z", title=labels.get(name, name))
        top.tick_params(axis="y", labelsize=8)
        top.legend(loc="upper left", fontsize=8)
        bottom.hist(0.5 * (1.0 + np.tanh(0.5 * z)), bins=50, range=(0, 1), density=True,
                    color=color, alpha=0.6)
        bottom.set(xlabel=r"$\sigma(z)$")
        bottom.tick_params(axis="y", labelsize=8)
    axes[0, 0].set_ylabel("density of z")
    axes[1, 0].set_ylabel(r"density of $\sigma(z)$")
    fig.tight_layout()
    return fig


def init_comparison(per_epoch: Mapping[str, tuple], per_step: Mapping[str, tuple], *,
                    colors: Mapping[str, str] | None = None, title: str = "",
                    mark_step: int | None = None, mark_label: str = ""):
    """Chapter 2: test accuracy against SGD steps (left, the primary view: equal numbers of
    updates whatever the size of the data set) and per epoch (right); one shared y-axis.
    ``mark_step`` draws a dotted vertical line (e.g. 5,000 steps, the source's first epoch)."""
    colors = dict(colors or {})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for label, (x, y) in per_step.items():
        left.plot(np.asarray(x), np.asarray(y), label=label, color=colors.get(label), lw=1.2)
    if mark_step is not None:
        left.axvline(mark_step, color="0.4", ls=":", lw=1, label=mark_label or f"step {mark_step:,}")
    left.set(xlabel="SGD steps", ylabel="test accuracy")
    for label, (x, y) in per_epoch.items():
        right.plot(x, y, "o-", ms=3, label=label, color=colors.get(label))
    right.set(xlabel="epoch (0 = after the first epoch)")
    left.legend(loc="lower right", fontsize=8)
    return finish(fig, title, fontsize=None)


def layer_std_curves(stats: Mapping[str, Mapping[str, tuple]], *, title: str = ""):
    """Chapter 2: std of activations and of back-propagated gradients per layer (log scale).

    ``stats[activation][init] = (a_std, dz_std)``, arrays over the hidden layers.
    One row per activation function, columns: activations, gradients.
    """
    rows = list(stats)
    fig, axes = plt.subplots(len(rows), 2, figsize=(10, 3.1 * len(rows)), squeeze=False)
    for i, act in enumerate(rows):
        for label, (a_std, dz_std) in stats[act].items():
            layers = np.arange(1, len(a_std) + 1)
            axes[i, 0].plot(layers, a_std, "o-", ms=3, label=label)
            axes[i, 1].plot(layers, dz_std, "o-", ms=3, label=label)
        axes[i, 0].set(yscale="log", ylabel=f"{act}: std of activations")
        axes[i, 1].set(yscale="log", ylabel=f"{act}: std of dC/dz")
        axes[i, 0].legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("hidden layer")
    return finish(fig, title, fontsize=None)


def layer_histograms(panels: Mapping[str, tuple[Sequence[np.ndarray], tuple[float, float]]], *,
                     bins: int = 60, title: str = ""):
    """Chapter 2: Glorot & Bengio style, one panel per setting, one line per layer.

    ``panels[label] = (values_per_layer, (lo, hi))``.  Each layer's values are
    drawn as a normalised histogram line, dark purple for shallow layers to green
    for deep ones (viridis, without its yellow end); values outside (lo, hi) are
    left out of the picture.
    """
    labels = list(panels)
    fig, axes = plt.subplots(1, len(labels), figsize=(2.9 * len(labels), 2.9), squeeze=False)
    cmap = plt.get_cmap("viridis")      # used up to 0.8 only: its yellow end is unreadable on white
    for ax, label in zip(axes[0], labels):
        values, (lo, hi) = panels[label]
        n = len(values)
        for k, v in enumerate(values):
            counts, edges = np.histogram(np.asarray(v), bins=bins, range=(lo, hi))
            frac = counts / max(1, np.asarray(v).size)
            centers = 0.5 * (edges[1:] + edges[:-1])
            ax.plot(centers, frac, color=cmap(0.8 * k / max(1, n - 1)), lw=1,
                    label=f"layer {k + 1}" if k in (0, n - 1) else None)
        ax.set(title=label, xlim=(lo, hi))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4, symmetric=lo < 0))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("fraction of values")
    # outside the last panel: inside, it covers the curves that pile up at the edges
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                       title="colour: depth", title_fontsize=7)
    return finish(fig, title, fontsize=None)


def deep_relu_curves(train_loss: Mapping[str, tuple], test_acc: Mapping[str, tuple],
                     a_std_init: Mapping[str, np.ndarray], *,
                     colors: Mapping[str, str] | None = None, title: str = ""):
    """Chapter 2: training loss, test accuracy and per-layer scale at initialisation."""
    colors = dict(colors or {})
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for label, (x, y) in train_loss.items():
        axes[0].plot(x, y, label=label, color=colors.get(label))
    axes[0].set(xlabel="SGD steps", ylabel="training loss (cross-entropy)")
    for label, (x, y) in test_acc.items():
        axes[1].plot(x, y, "o-", ms=3, label=label, color=colors.get(label))
    axes[1].set(xlabel="epoch", ylabel="test accuracy", ylim=(0, 1))
    for label, s in a_std_init.items():
        axes[2].plot(np.arange(1, len(s) + 1), s, label=label, color=colors.get(label))
    axes[2].set(xlabel="hidden layer", ylabel="std of ReLU output at init", yscale="log")
    axes[0].legend()
    return finish(fig, title, fontsize=None)


def diagnostics_panels(recorder, *, step: int | None = None, title: str = "", axes=None):
    """Chapter 2 (and 4): the makemore-style training diagnostics of a
    :class:`bnlib.diagnostics.Recorder`.

    Four panels: (a) the distribution of each activation layer's output at ``step`` (default:
    the last snapshot), legend with its std and saturated (or, for ReLU, dead) share;
    (b) the distribution of the gradient with respect to those outputs; (c) the
    distribution of each weight matrix's gradient, legend with std(dW)/std(W); (d) the
    update:data ratio log10(std(lr dW)/std(W)) of every weight matrix over the recorded
    steps, with the guide line at -3 (1e-3).  Histograms are drawn as lines (share of
    values per bin), one colour per layer from input (dark) to output (light).
    ``axes``: four Matplotlib axes to draw into (default: a new 1 x 4 figure).
    """
    snap = recorder.snapshot(step)
    if axes is None:
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    else:
        fig = axes[0].figure
    a_act, a_grad, a_wgrad, a_upd = axes
    cmap = matplotlib.colormaps["viridis"]

    def colour(i, n):
        return cmap(0.85 * i / max(n - 1, 1))

    def line(ax, hist, **kw):
        counts, edges = hist
        total = max(int(np.sum(counts)), 1)
        centres = 0.5 * (edges[:-1] + edges[1:])
        ax.plot(centres, np.asarray(counts) / total, **kw)

    names = list(snap.layers)
    for i, name in enumerate(names):
        st = snap.layers[name]
        if st["kind"] == "relu":
            extra = f"dead {st['dead']:.0%}"
        else:
            extra = f"sat. {st['saturated']:.1%}"
        if st["nonfinite"] > 0:
            extra += f", non-finite {st['nonfinite']:.0%}"
        line(a_act, st["act_hist"], color=colour(i, len(names)),
             label=f"{name}: std {st['std']:.2f}, {extra}")
        if "grad_hist" in st:
            line(a_grad, st["grad_hist"], color=colour(i, len(names)),
                 label=f"{name}: std {st['grad_std']:.1e}")
    a_act.set(xlabel="activation a", ylabel="share of values per bin",
              title=f"(a) activations, step {snap.step}")
    a_grad.set(xlabel="dL/da", ylabel="share of values per bin", title="(b) gradients of the activations")
    wnames = list(snap.weights)
    for i, name in enumerate(wnames):
        st = snap.weights[name]
        line(a_wgrad, st["grad_hist"], color=colour(i, len(wnames)),
             label=f"{name}: std(dW)/std(W) {st['grad_data_ratio']:.1e}")
    a_wgrad.set(xlabel="dL/dW", ylabel="share of values per bin", title="(c) weight gradients")
    hist = recorder.as_arrays()
    for i, name in enumerate(wnames):
        a_upd.plot(hist["step"], hist["update_ratio"][name], color=colour(i, len(wnames)), label=name)
    a_upd.axhline(-3.0, color="k", ls="--", lw=1, label="guide: 1e-3")
    a_upd.set(xlabel="step", ylabel="log10(std(lr dW) / std(W))", title="(d) update : data ratio")
    for ax in axes:
        ax.legend(fontsize=7, loc="best")
    return finish(fig, title, fontsize=None)


def init_scale_figure(scales, acc: Mapping[str, np.ndarray], loss: Mapping[str, np.ndarray] | None = None, *,
                      colors: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
                      tolerance: float | None = None, axes=None, title: str = ""):
    """Chapter 2: the init-scale sweep.  ``acc[arm]`` and ``loss[arm]`` are (seeds, scales)
    arrays; each arm is drawn as its mean over seeds (line with dots) and, with several
    seeds, every seed as a thin line.  Left: final test accuracy against the weight scale
    (log axis; with ``tolerance``, a dotted line ``tolerance`` below each arm's best mean);
    right (if ``loss``): the final training loss (log axis)."""
    colors, labels = dict(colors or {}), dict(labels or {})
    if axes is None:
        fig, axes = plt.subplots(1, 2 if loss is not None else 1, figsize=(10 if loss is not None else 5.5, 3.6))
        axes = np.atleast_1d(axes)
    fig = axes[0].figure
    scales = np.asarray(scales)
    for arm, a in acc.items():
        a = np.atleast_2d(a)
        c, lab = colors.get(arm), labels.get(arm, arm)
        for row in a if len(a) > 1 else []:
            axes[0].plot(scales, row, color=c, lw=0.5, alpha=0.4)
        axes[0].plot(scales, a.mean(axis=0), "o-", ms=3, color=c,
                     label=lab + (f" (mean of {len(a)} seeds)" if len(a) > 1 else ""))
        if tolerance is not None:
            best = a.mean(axis=0).max()
            axes[0].axhline(best - tolerance, color=c, ls=":", lw=1,
                            label=f"{lab}: {tolerance * 100:.0f} points below its best")
    axes[0].axhline(0.1, color="0.5", ls="--", lw=0.8, label="chance (10 classes)")
    axes[0].set(xscale="log", xlabel="weight scale (std of the initial weights)", ylabel="final test accuracy",
                ylim=(0, 1))
    axes[0].legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 0.12))
    if loss is not None and len(axes) > 1:
        for arm, v in loss.items():
            v = np.atleast_2d(v)
            axes[1].plot(scales, np.nanmean(v, axis=0), "o-", ms=3, color=colors.get(arm),
                         label=labels.get(arm, arm))
        axes[1].set(xscale="log", yscale="log", xlabel="weight scale", ylabel="final training loss")
        axes[1].legend(fontsize=7)
    return finish(fig, title, fontsize=None)
