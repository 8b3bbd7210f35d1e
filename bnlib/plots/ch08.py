"""The figures of chapter 8, batch norm on the GPU (built on :mod:`bnlib.plots.style`)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from bnlib.plots.style import CYCLE, color_for


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


def split_reduction_figure(N: int = 6, L: int = 10, block_n: int = 4, block_l: int = 4,
                           *, title: str = "") -> plt.Figure:
    """The split reduction of section 8.4 for one channel, with two kernels and with atomics.

    Left: the channel's ``N x L`` values (examples down, positions across, each
    row one contiguous run in memory) cut into ``block_n x block_l`` tiles, one
    program each, the masked lanes of the ragged last tiles hatched; every
    program writes one partial sum, and a second, small kernel adds the ``G``
    partial sums in a fixed order.  Right: the same programs adding into one
    slot with atomics, in whatever order they finish.
    """
    from matplotlib.patches import FancyArrowPatch, Rectangle

    gn, gl = -(-N // block_n), -(-L // block_l)
    G = gn * gl
    colors = [CYCLE[k % len(CYCLE)] for k in range(G)]
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6), gridspec_kw={"width_ratios": [1.25, 1]})
    for panel, ax in enumerate(axes):
        for i in range(gn * block_n):
            for j in range(gl * block_l):
                tile = (i // block_n) * gl + j // block_l
                inside = i < N and j < L
                ax.add_patch(Rectangle((j, -i - 1), 1, 1, facecolor=colors[tile] if inside else "white",
                                       alpha=0.55 if inside else 1.0, edgecolor="white" if inside else colors[tile],
                                       hatch=None if inside else "///", lw=0.8))
        for a in range(gn + 1):
            ax.plot([0, gl * block_l], [-a * block_n, -a * block_n], color="black", lw=1.2)
        for b in range(gl + 1):
            ax.plot([b * block_l, b * block_l], [0, -gn * block_n], color="black", lw=1.2)
        ax.plot([0, L, L, 0, 0], [0, 0, -N, -N, 0], color="black", lw=2.2)
        ax.text(L / 2, 0.6, f"one channel: {N} examples x {L} positions", ha="center", fontsize=8)
        ax.text(-0.4, -N / 2, "examples n", rotation=90, ha="right", va="center", fontsize=8)
        x0 = gl * block_l + 2.5
        if panel == 0:
            for t in range(G):
                y = -1.0 - t * (gn * block_n - 1.0) / max(G - 1, 1)
                ax.add_patch(Rectangle((x0, y - 0.4), 1.6, 0.8, facecolor=colors[t], alpha=0.7))
                ax.text(x0 + 0.8, y, f"$p_{t}$", ha="center", va="center", fontsize=8)
                ti, tj = divmod(t, gl)
                ax.add_patch(FancyArrowPatch(((tj + 0.5) * block_l, -(ti + 0.5) * block_n), (x0, y),
                                             arrowstyle="->", mutation_scale=8, color=colors[t], lw=0.9))
            xc, yc = x0 + 4.2, -gn * block_n / 2
            ax.add_patch(Rectangle((xc, yc - 0.9), 3.2, 1.8, facecolor="#dddddd", edgecolor="black"))
            ax.text(xc + 1.6, yc, "combine\n" + r"$\mu,\ \sigma^2$", ha="center", va="center", fontsize=8)
            for t in range(G):
                y = -1.0 - t * (gn * block_n - 1.0) / max(G - 1, 1)
                ax.add_patch(FancyArrowPatch((x0 + 1.6, y), (xc, yc), arrowstyle="->", mutation_scale=8,
                                             color="black", lw=0.7))
            ax.text(x0 + 0.8, 0.6, "partial sums\n(G x C buffer)", ha="center", fontsize=8)
            ax.set_title(f"(a) two kernels: {G} programs write partial sums, a second kernel adds them",
                         fontsize=9)
            ax.set_xlim(-1.5, xc + 3.6)
        else:
            xc, yc = x0 + 1.0, -gn * block_n / 2
            ax.add_patch(Rectangle((xc, yc - 1.1), 5.0, 2.2, facecolor="#dddddd", edgecolor="black"))
            ax.text(xc + 2.5, yc, "one slot\nper channel", ha="center", va="center", fontsize=7)
            for t in range(G):
                ti, tj = divmod(t, gl)
                ax.add_patch(FancyArrowPatch(((tj + 0.5) * block_l, -(ti + 0.5) * block_n), (xc, yc),
                                             arrowstyle="->", mutation_scale=8, color=colors[t], lw=0.9,
                                             linestyle="--"))
            ax.text(xc + 2.5, yc - 1.6, "atomic adds,\nin the order the\nprograms finish", ha="center",
                    va="top", fontsize=8)
            ax.set_title("(b) atomics: one kernel, order of the additions not fixed", fontsize=9)
            ax.set_xlim(-1.5, xc + 5.4)
        ax.set_ylim(-gn * block_n - 1.0, 1.6)
        ax.set_aspect("equal")
        ax.axis("off")
    axes[0].text(gl * block_l / 2, -gn * block_n - 0.8,
                 "hatched: masked lanes of the ragged last tiles;\neach row is contiguous in memory",
                 ha="center", va="top", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def cpu_gap_figure(rows: Sequence[Mapping], pairs: Sequence[tuple[str, str, str]], *,
                   title: str = "") -> plt.Figure:
    """Paired probes of :func:`bnlib.torch.cpu_gap.measure_gap`: median time with its 10-90% spread.

    ``pairs`` are ``(label, name_a, name_b)``: for each, two horizontal bars
    (``name_a`` light, ``name_b`` dark) on one shared time axis.
    """
    by = {(r["name"], r["threads"]): r for r in rows}
    right = max(r["high_ms"] for r in rows)
    fig, ax = plt.subplots(figsize=(7.2, 0.75 + 0.62 * len(pairs)))
    labels, y = [], 0.0
    for label, a, b in pairs:
        for k, (name, color) in enumerate(((a, "#9ecae1"), (b, "#08519c"))):
            r = by[(name, 1)] if (name, 1) in by else next(v for (n, _), v in by.items() if n == name)
            pos = -(y + 0.38 * k)
            ax.barh(pos, r["ms"], height=0.34, color=color)
            ax.plot([r["low_ms"], r["high_ms"]], [pos, pos], color="black", lw=1.2)
            ax.text(r["high_ms"] + 0.015 * right, pos, name, va="center", fontsize=7.5)
        labels.append((-(y + 0.19), label))
        y += 1.0
    ax.set_yticks([p for p, _ in labels], [lab for _, lab in labels], fontsize=8)
    ax.set_xlabel("ms per call (median; line: 10-90% of the calls)")
    right = max(r["high_ms"] for r in rows)
    ax.set_xlim(0, right * 1.45)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
