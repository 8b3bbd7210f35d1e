"""The figures of chapter 1, why normalise (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from bnlib.plots.style import CYCLE, _figure_and_axes, color_for, finish


def activation_slopes(z_sat: Mapping[str, float], *, slope: float = 0.01, z_max: float = 8.0):
    """Chapter 1: tanh and the sigmoid (left) and their derivatives (right).

    ``z_sat[name]`` is where the derivative of ``name`` falls below ``slope``;
    the saturated regions |z| > z_sat are shaded in the right panel, in the
    activation's colour.  Returns the figure.
    """
    z = np.linspace(-z_max, z_max, 801)
    hatches = ["//", "\\\\", "||"]
    funcs = {"tanh": (np.tanh(z), 1.0 - np.tanh(z) ** 2),
             "sigmoid": (0.5 * (1 + np.tanh(0.5 * z)),
                         0.25 * (1 - np.tanh(0.5 * z) ** 2))}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.4),
                                      gridspec_kw={"width_ratios": (1, 1.05)})
    for k, name in enumerate(z_sat):
        g, dg = funcs[name]
        c = CYCLE[3 + k]
        left.plot(z, g, color=c, label=name)
        right.plot(z, dg, color=c, label=f"{name}'")
        zs = float(z_sat[name])
        for side, (lo, hi) in enumerate(((-z_max, -zs), (zs, z_max))):
            # a hatch in the line's own (saturated) colour with a solid edge: a pale
            # fill alone (orange at low alpha) is unreadable on a white page
            right.axvspan(lo, hi, facecolor=matplotlib.colors.to_rgba(c, 0.06),
                          edgecolor=matplotlib.colors.to_rgba(c, 0.55),
                          hatch=hatches[k % len(hatches)], lw=0,
                          label=f"{name} saturated: |z| > {zs:.2f}" if side == 0 else None)
            right.axvline(-zs if side == 0 else zs, color=c, lw=1.0, ls=":")
    right.axhline(slope, color="k", lw=0.8, ls="--", label=f"slope {slope:g}")
    left.set(xlabel="z", ylabel="g(z)", title="activation")
    right.set(xlabel="z", ylabel="g'(z)", title="derivative (shaded: saturated)")
    left.legend(loc="upper left")
    right.set(xlim=(-z_max, z_max))
    # outside the panel: inside, it would cover the peak of a derivative or the bands
    right.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
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
        left.axvline(c, color=color_for(label) or "k", lw=1.2, ls="--")
        right.axvline(c, color=color_for(label) or "k", lw=1.2, ls="--", label=f"wine, {label}")
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
        ax.axhline(tol, color="k", lw=0.8, ls=":", label=f"tolerance {tol:g}")
    ax.set(xscale="log", yscale="log", xlabel="iteration",
           ylabel=r"$(L(w_k) - L^*) / (L(w_0) - L^*)$", ylim=(min(tol or 1e-8, 1e-8) / 10, 2))
    ax.legend(fontsize=7, loc="center right")
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
        ax.axhline(max_iter, color="k", lw=0.8, ls="--")
        ax.annotate(f"iteration cap (max_iter = {max_iter:,}): runs stop here", (0.02, max_iter),
                    xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points",
                    va="bottom", fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel="std of the raw second feature (first: 1)",
           ylabel="iterations to tolerance" + (f" {tol:g}" if tol else ""))
    if max_iter is not None:
        ax.set_ylim(top=max_iter * 4)
    ax.legend(loc="center left")
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
    # viridis up to 0.75 only: its yellow end is unreadable on white
    shade = [cmap(0.75 * k / max(1, n_layers - 1)) for k in range(n_layers)]
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
        ax.fill_between(steps, p[:, 0], p[:, -1], color=shade[layer], alpha=0.12, lw=0)
        ax.plot(steps, p[:, 1], color=shade[layer], lw=1.5, label=f"layer {layer + 1}")
        ax.plot(steps, p[:, 0], color=shade[layer], lw=0.7, ls="--")
        ax.plot(steps, p[:, -1], color=shade[layer], lw=0.7, ls="--")
    ax.set(xlabel="gradient-descent step", ylabel="z: 15th, 50th, 85th percentile",
           title="median (solid), 15th-85th (band)")
    ax = axes[2]
    for layer in range(n_layers):
        ax.plot(steps, saturated[:, layer], "o-", ms=2.5, color=shade[layer],
                label=f"layer {layer + 1}")
    ax.set(xlabel="gradient-descent step", ylabel="fraction with tanh'(z) < 0.01",
           title="saturated fraction")
    ax.legend(fontsize=7, loc="upper left", title="colours, all panels", title_fontsize=7)
    return finish(fig, title)
