"""The figures of chapter 3, deriving batch norm (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations


import matplotlib.pyplot as plt

from bnlib.plots.style import COLORS


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
