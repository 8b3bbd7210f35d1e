"""The figures the chapters draw, in one consistent style (one module per chapter).

* :mod:`bnlib.plots.style`: the colours (``COLORS``, ``CYCLE``), ``use_book_style()`` (applied on
  import) and the shared helpers ``curves`` and ``histogram_grid``;
* :mod:`bnlib.plots.ch01` ... :mod:`bnlib.plots.ch08`: each chapter's figures, next to its name.

Every function is also available here, as ``bnlib.plots.NAME``, which is how the chapters
and the experiments' ``Result.plot()`` call them.
"""
from __future__ import annotations

from bnlib.plots.style import (
    COLORS,
    CYCLE,
    use_book_style,
    color_for,
    curves,
    histogram_grid,
)
from bnlib.plots.ch01 import (
    activation_slopes,
    feature_scale_bars,
    saturation_curves,
    gd_contours,
    iterations_vs_scale,
    hidden_drift_figure,
)
from bnlib.plots.ch02 import (
    fan_in_histograms,
    init_comparison,
    layer_std_curves,
    layer_histograms,
    deep_relu_curves,
)
from bnlib.plots.ch03 import (computational_graph_bn)
from bnlib.plots.ch04 import (percentile_bands, grouped_bars, depth_sweep_figure)
from bnlib.plots.ch05 import (ema_forgetting, eval_shift_figure, precise_bn_figure, precise_bn_gap_bands)
from bnlib.plots.ch06 import (norm_axes_cubes, batch_size_errors, rnn_training_curves)
from bnlib.plots.ch07 import (
    noisy_bn_figure,
    ics_gradient_figure,
    landscape_figure,
    paired_differences_figure,
    lp_norm_figure,
    weight_norm_growth,
)
from bnlib.plots.ch08 import (roofline_figure, traffic_time_figure)

__all__ = [
    "COLORS",
    "CYCLE",
    "use_book_style",
    "color_for",
    "curves",
    "histogram_grid",
    "activation_slopes",
    "feature_scale_bars",
    "saturation_curves",
    "gd_contours",
    "iterations_vs_scale",
    "hidden_drift_figure",
    "fan_in_histograms",
    "init_comparison",
    "layer_std_curves",
    "layer_histograms",
    "deep_relu_curves",
    "computational_graph_bn",
    "percentile_bands",
    "grouped_bars",
    "depth_sweep_figure",
    "ema_forgetting",
    "eval_shift_figure",
    "precise_bn_figure",
    "precise_bn_gap_bands",
    "norm_axes_cubes",
    "batch_size_errors",
    "rnn_training_curves",
    "noisy_bn_figure",
    "ics_gradient_figure",
    "landscape_figure",
    "paired_differences_figure",
    "lp_norm_figure",
    "weight_norm_growth",
    "roofline_figure",
    "traffic_time_figure",
]
