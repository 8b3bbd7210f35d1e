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
