"""The saturation argument of the input-normalisation post: fraction of tanh/sigmoid units with slope < 0.01 against the input scale.

Chapter 1, equations (ch1-tanh-slope) to (ch1-saturated-fraction).  A layer of
``n_units`` units with LeCun weights N(0, 1/n_in) receives inputs
x ~ N(0, c^2 I) for a range of input scales c, so each pre-activation
z = x . w is close to N(0, c^2).  A unit is *saturated* on an example when the
derivative of its activation is below ``slope`` (0.01): for tanh that is
|z| > artanh(sqrt(1 - slope)) = 2.99, for the sigmoid |z| > 4.59.  For
z ~ N(0, c^2) the saturated fraction is erfc(z_sat / (c sqrt 2)); the
experiment measures it and compares.

It then does the same for the first layer of a network fed the 13 features
of scikit-learn's wine data, raw and standardised (eq. ch1-standardize).

NumPy only; ``device`` is accepted and ignored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "saturation"

ACTIVATIONS = ("tanh", "sigmoid")


@dataclass
class Config(ExperimentConfig):
    scale_min: float = 0.1       # smallest input scale c
    scale_max: float = 1000.0    # largest input scale c
    n_scales: int = 41           # log-spaced scales between the two
    n_in: int = 256              # inputs of each unit
    n_units: int = 256           # units of the layer
    n_examples: int = 1000       # input vectors per scale
    slope: float = 0.01          # "saturated": g'(z) below this
    wine_units: int = 100        # units of the first layer fed the wine features

    SCALES = {
        "smoke": {"n_scales": 7, "n_in": 128, "n_units": 64, "n_examples": 200},
        "book": {},
        "paper": {"n_scales": 81, "n_in": 1000, "n_units": 1000, "n_examples": 4000,
                  "wine_units": 1000},
    }


def activation(z: np.ndarray, name: str) -> np.ndarray:
    """tanh(z) or the logistic sigmoid 1/(1 + e^-z) (computed without overflow)."""
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    raise ValueError(f"activation must be 'tanh' or 'sigmoid'; got {name!r}")


def derivative(z: np.ndarray, name: str) -> np.ndarray:
    """Eq. (ch1-tanh-slope) and (ch1-sigmoid-slope): 1 - tanh(z)^2 and s(z)(1 - s(z))."""
    a = activation(z, name)
    return 1.0 - a * a if name == "tanh" else a * (1.0 - a)


def saturation_threshold(name: str, slope: float = 0.01) -> float:
    """The |z| beyond which the derivative of ``name`` is below ``slope`` (eq. ch1-z-sat).

    tanh: 1 - tanh^2 z = slope  <=>  |z| = artanh(sqrt(1 - slope));
    sigmoid: s (1 - s) = slope  <=>  s = (1 + sqrt(1 - 4 slope)) / 2, |z| = log(s / (1 - s)).
    0 when ``slope`` is at least the largest derivative (1 for tanh, 1/4 for the sigmoid).
    """
    if not slope > 0:
        raise ValueError(f"slope must be positive; got {slope}")
    if name == "tanh":
        return 0.0 if slope >= 1.0 else float(np.arctanh(np.sqrt(1.0 - slope)))
    if name == "sigmoid":
        if slope >= 0.25:
            return 0.0
        s = 0.5 * (1.0 + np.sqrt(1.0 - 4.0 * slope))
        return float(np.log(s / (1.0 - s)))
    raise ValueError(f"activation must be 'tanh' or 'sigmoid'; got {name!r}")


def predicted_fraction(scale, name: str, slope: float = 0.01):
    """Eq. (ch1-saturated-fraction): P(|z| > z_sat) = erfc(z_sat / (c sqrt 2)) for z ~ N(0, c^2)."""
    z_sat = saturation_threshold(name, slope)
    scale = np.asarray(scale, dtype=np.float64)
    return np.vectorize(lambda c: math.erfc(z_sat / (c * math.sqrt(2.0))))(scale)


def saturated_fraction(z: np.ndarray, name: str, slope: float = 0.01) -> float:
    """Fraction of the entries of ``z`` where the derivative of ``name`` is below ``slope``."""
    return float(np.mean(derivative(np.asarray(z, dtype=np.float64), name) < slope))


class SaturationResult(Result):
    """``histories``: ``scales``, ``z_std`` and per activation ``frac``,
    ``predicted`` and ``mean_slope`` (one value per scale); ``wine`` holds the
    first layer's pre-activations for the raw and the standardised features."""

    def plot(self):
        from bnlib import plots

        h = self.histories
        return plots.saturation_curves(
            h["scales"], {a: h[a]["frac"] for a in ACTIVATIONS},
            {a: h[a]["predicted"] for a in ACTIVATIONS},
            {a: h[a]["mean_slope"] for a in ACTIVATIONS},
            markers={kind: self.headline["wine"][kind]["z_std"] for kind in ("raw", "standardized")},
            slope=self.config.slope)


def run(config: Config, progress: bool = False) -> SaturationResult:
    """Measure the saturated fraction against the input scale and for the wine data's first layer."""
    from bnlib.preprocessing import standardize, wine
    from bnlib.scratch import init

    if not 0 < config.scale_min < config.scale_max or config.n_scales < 2:
        raise ValueError("need 0 < scale_min < scale_max and n_scales >= 2")
    if not 0 < config.slope:
        raise ValueError(f"slope must be positive; got {config.slope}")
    rng = np.random.default_rng(config.seed)
    scales = np.geomspace(config.scale_min, config.scale_max, config.n_scales)
    W = init.lecun_normal(config.n_in, config.n_units, rng)
    frac = {a: np.zeros(len(scales)) for a in ACTIVATIONS}
    mean_slope = {a: np.zeros(len(scales)) for a in ACTIVATIONS}
    z_std = np.zeros(len(scales))
    with Timer() as t:
        u = rng.standard_normal((config.n_examples, config.n_in)) @ W   # the layer at c = 1
        for k in base.progress(range(len(scales)), desc="scales", enabled=progress):
            z = scales[k] * u                                          # inputs c * x
            z_std[k] = z.std()
            for a in ACTIVATIONS:
                d = derivative(z, a)
                frac[a][k] = np.mean(d < config.slope)
                mean_slope[a][k] = d.mean()
    timings = {"scales_s": t.seconds}

    histories = {"scales": scales, "z_std": z_std}
    headline: dict = {}
    for a in ACTIVATIONS:
        pred = predicted_fraction(scales, a, config.slope)
        histories[a] = {"frac": frac[a], "predicted": pred, "mean_slope": mean_slope[a]}
        headline[a] = {
            "z_sat": saturation_threshold(a, config.slope),
            "max_abs_error_vs_prediction": float(np.max(np.abs(frac[a] - pred))),
        }
        for c in (1.0, 3.0, 10.0):                  # the same layer at three round scales
            d = derivative(c * u, a)
            headline[a][f"frac_at_scale_{c:g}"] = float(np.mean(d < config.slope))
            headline[a][f"predicted_at_scale_{c:g}"] = float(predicted_fraction(c, a, config.slope))
            headline[a][f"mean_slope_at_scale_{c:g}"] = float(d.mean())

    with Timer() as t:
        x, _, names = wine()
        xs = standardize(x).x_train
        Ww = init.lecun_normal(x.shape[1], config.wine_units, rng)
        wine_z = {"raw": x @ Ww, "standardized": xs @ Ww}
        headline["wine"] = {
            kind: {"z_std": float(z.std()),
                   **{f"{a}_saturated": saturated_fraction(z, a, config.slope)
                      for a in ACTIVATIONS}}
            for kind, z in wine_z.items()}
        headline["wine"]["feature_std_min"] = float(x.std(axis=0).min())
        headline["wine"]["feature_std_max"] = float(x.std(axis=0).max())
    timings["wine_s"] = t.seconds
    histories["wine"] = wine_z
    return SaturationResult(NAME, config, histories, headline, timings)
