"""The figures the chapters draw, in one consistent style.

Every figure in the book comes from a function here or from an experiment
``Result.plot()`` built on these helpers.  ``use_book_style()`` is applied on
import so notebooks need no set-up.  Colours: ``COLORS["plain"]`` for networks
without normalisation, ``COLORS["bn"]`` for batch normalisation, and so on, so a
reader learns one colour code for the whole book.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import matplotlib

import matplotlib.pyplot as plt
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


def computational_graph_bn(show_derivatives: bool = True):
    """The computational graph of training-mode batch norm (chapter 3).

    Nodes are the intermediate values of ``bnlib.scratch.batchnorm_backward_staged``
    (``mu``, ``xc``, ``var``, ``std``, ``inv_std``, ``x_hat``, ``y``); arrows run
    in the forward direction.  With ``show_derivatives`` each arrow carries the
    local derivative the backward pass multiplies by when it walks that arrow
    from right to left.  The two values used twice (``x`` and ``xc``) are
    drawn in orange: their gradients are the sums over both outgoing arrows.
    Returns the figure.
    """
    from matplotlib.patches import FancyArrowPatch

    nodes = {  # name: (x, y, label)
        "x": (0.0, 0.0, r"$x$"),
        "mu": (1.7, 1.3, r"$\mu = \frac{1}{m}\sum_i x_i$"),
        "xc": (3.4, 0.0, r"$x_c = x - \mu$"),
        "var": (5.1, 1.3, r"$\sigma^2 = \frac{1}{m}\sum_i x_{c,i}^2$"),
        "std": (6.9, 1.3, r"$s = \sqrt{\sigma^2 + \epsilon}$"),
        "inv": (8.6, 1.3, r"$r = 1/s$"),
        "xhat": (8.6, 0.0, r"$\hat{x} = x_c\, r$"),
        "y": (10.6, 0.0, r"$y = \gamma \hat{x} + \beta$"),
        "gamma": (10.0, 1.3, r"$\gamma$"),
        "beta": (10.6, -1.2, r"$\beta$"),
    }
    edges = [  # (from, to, local derivative d to / d from, where its label sits)
        ("x", "mu", r"$\frac{1}{m}$", "left"),
        ("x", "xc", r"$1$", "above"),
        ("mu", "xc", r"$-1$", "right"),
        ("xc", "var", r"$\frac{2 x_c}{m}$", "left"),
        ("xc", "xhat", r"$r$", "above"),
        ("var", "std", r"$\frac{1}{2s}$", "above"),
        ("std", "inv", r"$-\frac{1}{s^2}$", "above"),
        ("inv", "xhat", r"$x_c$", "right"),
        ("xhat", "y", r"$\gamma$", "above"),
        ("gamma", "y", r"$\hat{x}$", "left"),
        ("beta", "y", r"$1$", "right"),
    ]
    fan_out = {"x", "xc"}
    fig, ax = plt.subplots(figsize=(10.0, 3.4))
    ax.set_xlim(-0.7, 11.6)
    ax.set_ylim(-1.5, 1.75)
    ax.axis("off")
    boxes = {}
    for name, (x, y, label) in nodes.items():
        param = name in ("gamma", "beta")
        face = "#fde0c5" if name in fan_out else "#e8f0fa" if not param else "#eeeeee"
        edge = "#ff7f0e" if name in fan_out else COLORS["bn"] if not param else "#7f7f7f"
        boxes[name] = ax.text(x, y, label, ha="center", va="center", fontsize=10, zorder=3,
                              bbox=dict(boxstyle="round,pad=0.35", fc=face, ec=edge, lw=1.2))
    for src, dst, deriv, where in edges:
        (x0, y0, _), (x1, y1, _) = nodes[src], nodes[dst]
        color = "#ff7f0e" if src in fan_out else "#444444"
        arrow = FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12,
                                color=color, lw=1.2, zorder=2, shrinkA=3, shrinkB=3,
                                patchA=boxes[src].get_bbox_patch(),
                                patchB=boxes[dst].get_bbox_patch())
        ax.add_patch(arrow)
        if show_derivatives:
            xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
            dx, dy, ha, va = {"above": (0.0, 0.1, "center", "bottom"),
                              "left": (-0.2, 0.0, "right", "center"),
                              "right": (0.15, 0.0, "left", "center")}[where]
            ax.text(xm + dx, ym + dy, deriv, ha=ha, va=va, fontsize=11, color="#d62728",
                    zorder=4)
    ax.set_title("Forward: follow the arrows.  Backward: walk them right to left, multiplying "
                 "by the red local derivatives;\norange values feed two nodes, so their "
                 "gradients add up.", fontsize=9.5)
    fig.tight_layout()
    return fig


# --- chapter 2: initialisation ------------------------------------------------


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
        top.set_yticks([])
        top.legend(loc="upper left", fontsize=8)
        bottom.hist(0.5 * (1.0 + np.tanh(0.5 * z)), bins=50, range=(0, 1), density=True,
                    color=color, alpha=0.6)
        bottom.set(xlabel=r"$\sigma(z)$")
        bottom.set_yticks([])
    axes[0, 0].set_ylabel("density of z")
    axes[1, 0].set_ylabel(r"density of $\sigma(z)$")
    fig.tight_layout()
    return fig


def init_comparison(per_epoch: Mapping[str, tuple], per_step: Mapping[str, tuple], *,
                    colors: Mapping[str, str] | None = None, title: str = ""):
    """Chapter 2: test accuracy per epoch (left) and every few SGD steps (right)."""
    colors = dict(colors or {})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, (x, y) in per_epoch.items():
        left.plot(x, y, "o-", ms=3, label=label, color=colors.get(label))
    left.set(xlabel="epoch (0 = after the first pass)", ylabel="test accuracy")
    for label, (x, y) in per_step.items():
        x, y = np.asarray(x), np.asarray(y)
        keep = x > 0                                # log axis: the point at step 0 is left out
        right.plot(x[keep], y[keep], label=label, color=colors.get(label))
    right.set(xlabel="SGD steps (log scale)", ylabel="test accuracy", xscale="log")
    left.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def layer_histograms(panels: Mapping[str, tuple[Sequence[np.ndarray], tuple[float, float]]], *,
                     bins: int = 60, title: str = ""):
    """Chapter 2: Glorot & Bengio style, one panel per setting, one line per layer.

    ``panels[label] = (values_per_layer, (lo, hi))``.  Each layer's values are
    drawn as a normalised histogram line, lighter for shallow layers and darker
    for deep ones; values outside (lo, hi) are left out of the picture.
    """
    labels = list(panels)
    fig, axes = plt.subplots(1, len(labels), figsize=(2.9 * len(labels), 2.9), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, label in zip(axes[0], labels):
        values, (lo, hi) = panels[label]
        n = len(values)
        for k, v in enumerate(values):
            counts, edges = np.histogram(np.asarray(v), bins=bins, range=(lo, hi))
            frac = counts / max(1, np.asarray(v).size)
            centers = 0.5 * (edges[1:] + edges[:-1])
            ax.plot(centers, frac, color=cmap(k / max(1, n - 1)), lw=1,
                    label=f"layer {k + 1}" if k in (0, n - 1) else None)
        ax.set(title=label, xlim=(lo, hi))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4, symmetric=lo < 0))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    axes[0, 0].set_ylabel("fraction of values")
    axes[0, -1].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --- chapter 4: training with batch normalisation ---------------------------------

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
        ax.axhline(max_steps, color="k", lw=0.5, ls=":")
        ax.set(xlabel="hidden layers", title=f"{act}", xticks=list(depths))
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel(f"steps to {target:.0%} test accuracy")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- chapter 1: why normalize -------------------------------------------------


def activation_slopes(z_sat: Mapping[str, float], *, slope: float = 0.01, z_max: float = 8.0):
    """Chapter 1: tanh and the sigmoid (left) and their derivatives (right).

    ``z_sat[name]`` is where the derivative of ``name`` falls below ``slope``;
    the saturated regions |z| > z_sat are shaded in the right panel, in the
    activation's colour.  Returns the figure.
    """
    z = np.linspace(-z_max, z_max, 801)
    funcs = {"tanh": (np.tanh(z), 1.0 - np.tanh(z) ** 2),
             "sigmoid": (0.5 * (1 + np.tanh(0.5 * z)),
                         0.25 * (1 - np.tanh(0.5 * z) ** 2))}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for k, name in enumerate(z_sat):
        g, dg = funcs[name]
        c = CYCLE[3 + k]
        left.plot(z, g, color=c, label=name)
        right.plot(z, dg, color=c, label=f"{name}'")
        zs = float(z_sat[name])
        for lo, hi in ((-z_max, -zs), (zs, z_max)):
            right.axvspan(lo, hi, color=c, alpha=0.08 + 0.05 * k, lw=0)
        right.axvline(zs, color=c, lw=0.8, ls=":")
        right.annotate(f"|z| > {zs:.2f}", (zs, 0.62 - 0.12 * k), xytext=(4, 0),
                       textcoords="offset points", color=c, fontsize=8)
    right.axhline(slope, color="k", lw=0.6, ls="--")
    right.annotate(f"slope {slope:g}", (-z_max, slope), xytext=(2, 3),
                   textcoords="offset points", fontsize=8)
    left.set(xlabel="z", ylabel="g(z)", title="activation")
    right.set(xlabel="z", ylabel="g'(z)", title="derivative (shaded: saturated)")
    left.legend(loc="upper left")
    right.legend(loc="upper left")
    fig.tight_layout()
    return fig


def feature_scale_bars(names: Sequence[str], values: Mapping[str, Sequence[float]], *,
                       ylabel: str, logy: bool = False, title: str = "", ax=None):
    """Chapter 1: one bar per feature and per label (``"raw"``/``"standardized"`` coloured)."""
    fig, ax = _figure_and_axes(ax)
    labels = list(values)
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(names))
    for k, label in enumerate(labels):
        ax.bar(x + (k - (len(labels) - 1) / 2) * width, np.asarray(values[label], dtype=float),
               width * 0.95, label=label, color=color_for(label) or CYCLE[k % len(CYCLE)])
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    ax.grid(axis="x", visible=False)
    if len(labels) > 1:
        ax.legend()
    return fig


def saturation_curves(scales: Sequence[float], frac: Mapping[str, Sequence[float]],
                      predicted: Mapping[str, Sequence[float]],
                      mean_slope: Mapping[str, Sequence[float]], *,
                      markers: Mapping[str, float] | None = None, slope: float = 0.01):
    """Chapter 1: saturated fraction (left) and mean slope (right) against the input scale.

    Sampled values are dots, the prediction erfc(z_sat / (c sqrt 2)) a line.
    ``markers[label] = c`` draws a vertical line at scale c (for example the
    std of a real layer's pre-activations, raw and standardised inputs).
    """
    scales = np.asarray(scales, dtype=float)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for k, name in enumerate(frac):
        c = CYCLE[3 + k]
        left.plot(scales, predicted[name], color=c, lw=1, label=f"{name}: erfc prediction")
        left.plot(scales, frac[name], "o", color=c, ms=3, label=f"{name}: sampled")
        right.plot(scales, mean_slope[name], "o-", color=c, ms=3, label=name)
    for label, c in dict(markers or {}).items():
        for ax in (left, right):
            ax.axvline(c, color=color_for(label) or "k", lw=1.2, ls="--")
        left.annotate(f"wine, {label}", (c, 0.5), xytext=(3, 0), textcoords="offset points",
                      rotation=90, va="center", fontsize=8, color=color_for(label) or "k")
    left.set(xscale="log", xlabel="input scale c = std of z",
             ylabel=f"fraction with g'(z) < {slope:g}", ylim=(-0.02, 1.02))
    right.set(xscale="log", yscale="log", xlabel="input scale c = std of z",
              ylabel="mean slope E[g'(z)]")
    left.legend(fontsize=7, loc="upper left")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gd_contours(problems: Mapping[str, tuple], curves: Mapping[str, Sequence[float]], *,
                tol: float | None = None, titles: Mapping[str, str] | None = None):
    """Chapter 1: gradient-descent paths on least-squares contours, and the loss curves.

    ``problems[label] = (X, y, path, w_star)`` for two-feature problems: one
    panel each with the contours of L(w) = ||Xw - y||^2 / (2N) (levels spaced
    geometrically above the minimum) and the path of the iterates.  The last
    panel plots each of ``curves[label]`` (relative excess loss per
    iteration) on log-log axes; labels containing ``"raw"`` or
    ``"standardized"`` get the book's colours, ``"wine"`` curves are dashed.
    """
    titles = dict(titles or {})
    labels = list(problems)
    fig, axes = plt.subplots(1, len(labels) + 1, figsize=(4.3 * (len(labels) + 1), 3.9))
    for ax, label in zip(axes, labels):
        X, y, path, w_star = problems[label]
        X, y, path, w_star = (np.asarray(a, dtype=float) for a in (X, y, path, w_star))
        H = X.T @ X / len(X)
        span = np.abs(np.concatenate([path, w_star[None]])).max(axis=0)
        lim = 1.15 * max(span.max(), 1e-12)
        g1, g2 = np.meshgrid(np.linspace(-lim, lim, 300), np.linspace(-lim, lim, 300))
        e1, e2 = g1 - w_star[0], g2 - w_star[1]
        excess = 0.5 * (H[0, 0] * e1 ** 2 + 2 * H[0, 1] * e1 * e2 + H[1, 1] * e2 ** 2)
        start = 0.5 * (path[0] - w_star) @ H @ (path[0] - w_star)
        levels = start * np.geomspace(1e-4, 4.0, 14)
        ax.contour(g1, g2, excess, levels=levels, colors="0.6", linewidths=0.6)
        c = color_for(label) or CYCLE[0]
        ax.plot(path[:, 0], path[:, 1], "-", color=c, lw=0.8)
        show = path if len(path) <= 60 else path[np.unique(np.geomspace(1, len(path), 60).astype(int) - 1)]
        ax.plot(show[:, 0], show[:, 1], "o", color=c, ms=2.5)
        ax.plot(*w_star, "k*", ms=9)
        ax.set(xlabel="$w_1$", ylabel="$w_2$", title=titles.get(label, label), aspect="equal",
               xlim=(-lim, lim), ylim=(-lim, lim))
        ax.annotate(f"{len(path) - 1} steps", (0.03, 0.04), xycoords="axes fraction", fontsize=8)
    ax = axes[-1]
    for label, rel in curves.items():
        rel = np.asarray(rel, dtype=float)
        k = np.arange(len(rel))
        kind = "raw" if "raw" in label else "standardized" if "standard" in label else label
        ax.plot(k[1:], np.maximum(rel[1:], 1e-300), color=color_for(kind),
                ls="--" if "wine" in label else "-", label=label)
    if tol is not None:
        ax.axhline(tol, color="k", lw=0.6, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="iteration",
           ylabel=r"$(L(w_k) - L^*) / (L(w_0) - L^*)$", ylim=(min(tol or 1e-8, 1e-8) / 10, 2))
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def iterations_vs_scale(scales: Sequence[float], iterations: Mapping[str, Sequence],
                        *, predicted: Sequence[float] | None = None, max_iter: int | None = None,
                        tol: float | None = None, ax=None):
    """Chapter 1: gradient-descent iterations to the tolerance against the raw feature scale."""
    fig, ax = _figure_and_axes(ax)
    scales = np.asarray(scales, dtype=float)
    for label, its in iterations.items():
        v = np.array([np.nan if i is None else i for i in its], dtype=float)
        ax.plot(scales, v, "o-", color=color_for(label), label=label)
    if predicted is not None:
        ax.plot(scales, np.asarray(predicted, dtype=float), "k:", lw=1,
                label="predicted from κ (raw)")
    if max_iter is not None:
        ax.axhline(max_iter, color="k", lw=0.5, ls="--")
    ax.set(xscale="log", yscale="log", xlabel="std of the raw second feature (first: 1)",
           ylabel="iterations to tolerance" + (f" {tol:g}" if tol else ""))
    ax.legend()
    return fig


def hidden_drift_figure(steps: Sequence[int], percentiles: np.ndarray, saturated: np.ndarray,
                        z_first: Sequence[np.ndarray], z_last: Sequence[np.ndarray], *,
                        z_sat: float, title: str = ""):
    """Chapter 1: how a tanh MLP's hidden pre-activations move during training.

    Left: histograms of the first and the last hidden layer's z at the first
    and the last snapshot, saturated region |z| > z_sat shaded.  Middle:
    15th/50th/85th percentiles of each layer's z against the step
    (``percentiles``: snapshots x layers x 3).  Right: fraction of saturated
    values per layer (``saturated``: snapshots x layers).
    """
    steps = np.asarray(steps)
    percentiles, saturated = np.asarray(percentiles), np.asarray(saturated)
    n_layers = saturated.shape[1]
    cmap = plt.get_cmap("viridis")
    shade = [cmap(k / max(1, n_layers - 1)) for k in range(n_layers)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    lim = max(6.0, float(np.percentile(np.abs(np.concatenate([np.ravel(z_last[-1]),
                                                               np.ravel(z_last[0])])), 99)))
    bins = np.linspace(-lim, lim, 61)
    for layer in sorted({0, n_layers - 1}):
        for z, ls, when in ((z_first, "--", f"step {steps[0]}"), (z_last, "-", f"step {steps[-1]}")):
            ax.hist(np.ravel(z[layer]), bins=bins, density=True, histtype="step", ls=ls,
                    color=shade[layer], lw=1.3, label=f"layer {layer + 1}, {when}")
    for lo, hi in ((-lim, -z_sat), (z_sat, lim)):
        ax.axvspan(lo, hi, color="0.5", alpha=0.15, lw=0)
    ax.set(xlabel="pre-activation z", ylabel="density", xlim=(-lim, lim),
           title="saturated region shaded")
    ax.legend(fontsize=7)
    ax = axes[1]
    for layer in range(n_layers):
        p = percentiles[:, layer, :]
        ax.fill_between(steps, p[:, 0], p[:, -1], color=shade[layer], alpha=0.15, lw=0)
        ax.plot(steps, p[:, 1], color=shade[layer], lw=1.5, label=f"layer {layer + 1}")
        ax.plot(steps, p[:, 0], color=shade[layer], lw=0.7, ls="--")
        ax.plot(steps, p[:, -1], color=shade[layer], lw=0.7, ls="--")
    ax.set(xlabel="gradient-descent step", ylabel="z: 15th, 50th, 85th percentile")
    ax.legend(fontsize=7)
    ax = axes[2]
    for layer in range(n_layers):
        ax.plot(steps, saturated[:, layer], "o-", ms=2.5, color=shade[layer],
                label=f"layer {layer + 1}")
    ax.set(xlabel="gradient-descent step", ylabel="fraction with tanh'(z) < 0.01")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- chapter 5

def ema_forgetting(momenta: Sequence[float], steps: int, *, labels: Mapping[float, str] | None = None,
                   fraction: float = 0.01):
    """How fast a moving average forgets its initial value, and how many batches it is worth.

    Left: the weight ``(1 - m) ** t`` the running estimate still gives its
    initial value after ``t`` steps, one line per PyTorch momentum ``m`` (log
    scale; the dotted line is ``fraction``).  Right: the effective number of
    averaged batches after ``t`` steps (``bnlib.scratch.running.ema_effective_batches``),
    next to ``t`` itself (what a plain average of all batches would give).
    Returns the figure.
    """
    from bnlib.scratch.running import ema_effective_batches, initial_weight

    t = np.unique(np.geomspace(1, steps, 200).astype(int))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for k, m in enumerate(momenta):
        label = (labels or {}).get(m, f"momentum {m:g}")
        c = CYCLE[k % len(CYCLE)]
        axes[0].plot(t, initial_weight(m, t), color=c, label=label)
        axes[1].plot(t, [ema_effective_batches(m, int(s)) for s in t], color=c, label=label)
    axes[0].axhline(fraction, color="k", lw=0.8, ls=":")
    axes[0].set(xscale="log", yscale="log", ylim=(1e-4, 1.5), xlabel="training steps t",
                ylabel="weight of the initial value", title="(a) forgetting the initial value")
    axes[1].plot(t, t, color="k", lw=0.8, ls="--", label="plain average of all t batches")
    axes[1].set(xscale="log", yscale="log", xlabel="training steps t",
                ylabel="effective number of batches", title="(b) batches the average is worth")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def eval_shift_figure(histories: Mapping[str, Mapping], *, net: str, labels: Mapping[str, str],
                      title: str = ""):
    """Eval blow-up under distribution shift: one row per shift (``scale``, ``noise``).

    Columns: test loss against the severity (log scale), test accuracy, and
    the root mean square of every BN layer's output at the largest severity
    (eval mode against training mode).  ``histories[net][kind]`` as recorded
    by the ``eval-shift`` experiment.  Returns the figure.
    """
    kinds = [k for k in ("scale", "noise") if k in histories[net]]
    styles = {"eval": ("#d62728", "o-"), "train_mode": ("#7f7f7f", "s--"),
              "adabn": (COLORS["bn"], "^-")}
    xlabels = {"scale": "pixels multiplied by s", "noise": "noise std s added to every pixel"}
    fig, axes = plt.subplots(len(kinds), 3, figsize=(12, 3.3 * len(kinds)), squeeze=False)
    for row, kind in zip(axes, kinds):
        h = histories[net][kind]
        s = np.asarray(h["severity"], dtype=float)
        x = np.arange(len(s))
        for method, (c, fmt) in styles.items():
            row[0].plot(x, h[f"{method}_loss"], fmt, color=c, label=labels[method])
            row[1].plot(x, h[f"{method}_acc"], fmt, color=c, label=labels[method])
        for ax in row[:2]:
            ax.set_xticks(x, [f"{v:g}" for v in s])
            ax.set_xlabel(xlabels.get(kind, kind))
        row[0].set(yscale="log", ylabel="test loss", title=f"{kind}: test loss")
        row[1].set(ylim=(0, 1), ylabel="test accuracy", title=f"{kind}: test accuracy")
        layers = np.arange(1, len(h["eval_rms"][-1]) + 1)
        row[2].bar(layers - 0.2, h["eval_rms"][-1], width=0.4, color="#d62728", label="eval mode")
        row[2].bar(layers + 0.2, h["train_mode_rms"][-1], width=0.4, color="#7f7f7f",
                   label="training mode")
        row[2].set(yscale="log", xticks=layers, xlabel="batch-norm layer",
                   ylabel="RMS of the BN output", title=f"{kind}, s = {s[-1]:g}: BN outputs")
        row[2].legend(fontsize=8)
    axes[0, 0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def precise_bn_figure(steps: Sequence[int], precise_acc: Sequence[float], ema_acc: np.ndarray,
                      ema_error: np.ndarray, momenta: Sequence[float], *, title: str = ""):
    """Test accuracy with moving-average statistics (one line per momentum) and with precise ones.

    Left: test accuracy against the training step (log scale), the precise
    statistics as a thick black dashed line.  Right: mean relative error of
    each moving-average variance against the precise variance.  Returns the figure.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for k, m in enumerate(momenta):
        c = CYCLE[k % len(CYCLE)]
        axes[0].plot(steps, ema_acc[k], "o-", color=c, ms=4, label=f"EMA, momentum {m:g}")
        axes[1].plot(steps, ema_error[k], "o-", color=c, ms=4, label=f"momentum {m:g}")
    axes[0].plot(steps, precise_acc, "k--", lw=2, label="precise statistics")
    axes[0].set(xscale="log", xlabel="training step", ylabel="test accuracy (eval mode)",
                title="(a) accuracy with each estimate")
    axes[1].set(xscale="log", yscale="log", xlabel="training step",
                ylabel="mean relative error",
                title="(b) error of the moving-average variance")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
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
        ax.axhline(0.0, color="k", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="training step")
    axes[0].set(ylabel="precise minus EMA accuracy (points)",
                title="(a) gain of precise statistics, 95% interval")
    axes[1].set(ylim=zoom, title=f"(b) the same from step {zoom_from} on")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


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


# --------------------------------------------------------------------------- chapter 7

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


def roofline_figure(peak_gflops: float, bandwidth_gbps: float,
                    points: Mapping[str, tuple[float, float]], *, title: str = "") -> plt.Figure:
    """The roofline model (chapter 8, eq. ch8-roofline): attainable GFLOP/s against FLOPs per byte.

    ``points`` maps a label to ``(intensity, gflops)`` measured for one
    operation; the roof is ``min(peak_gflops, intensity * bandwidth_gbps)``.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    lo = min(0.03, min(i for i, _ in points.values()) / 2)
    hi = max(300.0, max(i for i, _ in points.values()) * 2)
    intensity = np.logspace(np.log10(lo), np.log10(hi), 200)
    ax.loglog(intensity, np.minimum(peak_gflops, intensity * bandwidth_gbps), color="black", lw=1.5,
              label=f"roof: min({peak_gflops:.0f} GFLOP/s, intensity x {bandwidth_gbps:.0f} GB/s)")
    balance = peak_gflops / bandwidth_gbps
    ax.axvline(balance, color="grey", ls=":", lw=1)
    ax.text(balance * 1.1, peak_gflops / 30, f"machine balance\n{balance:.1f} FLOP/byte", fontsize=8)
    for k, (label, (i, g)) in enumerate(points.items()):
        ax.plot([i], [g], "o", ms=7, color=color_for(label) or CYCLE[k % len(CYCLE)], label=label)
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
    ax.set_ylabel("GFLOP/s")
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def traffic_time_figure(rows: Sequence[Mapping], *, title: str = "") -> plt.Figure:
    """Time of one forward + backward against the passes over memory, one marker per method and shape.

    ``rows`` are :func:`bnlib.kernels.bench.time_methods` rows (keys ``method``,
    ``shape``, ``passes``, ``ms``); times are scaled by the ``torch`` time of
    the same shape so that shapes of different sizes share one axis.
    """
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    markers = "osD^v"
    for k, shape in enumerate(shapes):
        same = [r for r in rows if r["shape"] == shape]
        ref = next(r for r in same if r["method"] == "torch")
        for r in same:
            ax.plot(r["passes"] / ref["passes"], r["ms"] / ref["ms"], markers[k % len(markers)], ms=8,
                    color=CYCLE[methods.index(r["method"]) % len(CYCLE)],
                    label=f"{r['method']} {shape}")
    top = max(r["passes"] for r in rows) / min(r["passes"] for r in rows) * 1.1
    ax.plot([0, top], [0, top], color="grey", ls="--", lw=1, label="time proportional to passes")
    ax.set_xlabel("passes over memory / passes of torch")
    ax.set_ylabel("time / time of torch")
    ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
