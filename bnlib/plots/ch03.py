"""The figures of chapter 3, deriving batch norm (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations

import numpy as np
import matplotlib.pyplot as plt

from bnlib.plots.style import COLORS, finish, plain_log_ticks


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
    fan_color = "#c55a11"   # a dark orange: readable on white, unlike matplotlib's light one
    fig, ax = plt.subplots(figsize=(10.0, 3.4))
    ax.set_xlim(-0.7, 11.6)
    ax.set_ylim(-1.5, 1.75)
    ax.axis("off")
    boxes = {}
    for name, (x, y, label) in nodes.items():
        param = name in ("gamma", "beta")
        face = "#fde0c5" if name in fan_out else "#e8f0fa" if not param else "#eeeeee"
        edge = fan_color if name in fan_out else COLORS["bn"] if not param else "#7f7f7f"
        boxes[name] = ax.text(x, y, label, ha="center", va="center", fontsize=10, zorder=3,
                              bbox=dict(boxstyle="round,pad=0.35", fc=face, ec=edge, lw=1.2))
    for src, dst, deriv, where in edges:
        (x0, y0, _), (x1, y1, _) = nodes[src], nodes[dst]
        color = fan_color if src in fan_out else "#444444"
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


def gradcheck_error_vs_h(h, errors: dict, best: tuple | None = None, unit_roundoff: float | None = None):
    """Relative error of central differences against the analytic gradient, over the step ``h``.

    ``errors`` maps a label to the errors at the steps ``h`` (log-log axes);
    ``best`` = ``(h, error)`` marks the minimum.  Guide lines show the two regimes:
    truncation error, proportional to ``h**2``, on the right, and round-off,
    proportional to ``unit_roundoff / h``, on the left (chapter 3, section 3.6).
    """
    h = np.asarray(h, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for (label, err), color in zip(errors.items(), (COLORS["bn"], COLORS["plain"], "#2ca02c")):
        ax.loglog(h, np.asarray(err, dtype=float), "o-", ms=3.5, color=color, label=label)
    if best is not None:
        ax.loglog([best[0]], [best[1]], "k*", ms=11, label=f"smallest error, h = {best[0]:.0e}")
    if best is not None:
        # guide lines through the minimum: slope 2 (truncation) and slope -1 (round-off)
        right, left = h >= best[0], h <= best[0]
        ax.loglog(h[right], best[1] * (h[right] / best[0]) ** 2, "--", color="#7f7f7f", lw=1,
                  label=r"$\propto h^2$ (truncation)")
        ax.loglog(h[left], best[1] * (best[0] / h[left]), ":", color="#7f7f7f", lw=1.2,
                  label=r"$\propto 1/h$ (round-off)")
    every = np.concatenate([np.asarray(e, dtype=float) for e in errors.values()])
    ax.set_ylim(max(np.nanmin(every) / 10, 1e-17), min(np.nanmax(every) * 10, 10.0))
    ax.set(xlabel="step h of the central difference", ylabel="relative error vs analytic gradient")
    ax.legend(fontsize=8.5)
    return finish(fig, "Central differences: truncation error on the right, round-off on the left")


def conv_bn_curves(histories: dict, title: str = "", smooth: int = 25):
    """Test accuracy (top) and training loss (bottom) of the CNN with and without BatchNorm2d.

    ``histories[arm][lr_key]`` holds ``eval_step``, ``test_acc`` and ``loss`` (one value per
    step, drawn as a moving average over ``smooth`` steps); one column per learning rate,
    one shared y-axis per row (chapter 3, section 3.10).
    """
    arms = list(histories)
    lrs = list(histories[arms[0]])
    fig, axes = plt.subplots(2, len(lrs), figsize=(4.2 * len(lrs) + 1.2, 5.6), squeeze=False,
                             sharey="row", sharex="col")
    labels = {"bn": "with BatchNorm2d", "plain": "without BN"}
    for j, key in enumerate(lrs):
        for arm in arms:
            h = histories[arm][key]
            color = COLORS.get(arm)
            axes[0, j].plot(h["eval_step"], h["test_acc"], color=color, label=labels.get(arm, arm))
            loss = np.asarray(h["loss"], dtype=float)
            k = max(1, min(smooth, len(loss)))
            avg = np.convolve(loss, np.ones(k) / k, mode="valid")
            axes[1, j].plot(np.arange(k, len(loss) + 1), avg, color=color, label=labels.get(arm, arm))
        axes[0, j].set_title(key.replace("lr_", "learning rate "), fontsize=10)
        axes[1, j].set_xlabel("SGD step")
        axes[1, j].set_yscale("log")
    axes[0, 0].set_ylabel("test accuracy (eval mode)")
    axes[1, 0].set_ylabel(f"training loss\n(mean of {smooth} steps)")
    axes[0, 0].legend(loc="lower right")
    plain_log_ticks(axes[1, 0], "y")
    return finish(fig, title)
