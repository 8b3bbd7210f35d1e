"""The 1,000-input neuron of the initialisation article: z has std sqrt(501) under N(0,1) weights, sqrt(3/2) under N(0,1/n_in).

Chapter 2, equations (ch2-var-sum) to (ch2-z-lecun).  One input vector x with
``n_in`` entries, the first ``n_active`` equal to 1 and the rest 0, feeds many
independently initialised neurons (the columns of one layer's weight matrix).
For each initialiser we sample the pre-activation z = x . w + b of every neuron
and compare its spread with the variance-of-sums prediction

    Var z = n_active * Var w + Var b,

then look at sigmoid(z): under N(0, 1) weights most neurons start saturated.

The experiment is NumPy only; ``device`` is accepted and ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "fan-in"

#: weight initialisers compared; the bias is N(0, 1) for both (as in the source)
INITS = ("standard_normal", "lecun_normal")


@dataclass
class Config(ExperimentConfig):
    n_in: int = 1000            # inputs of the neuron
    n_active: int = 500         # how many of them equal 1 (the others are 0)
    bias_std: float = 1.0       # the bias is N(0, bias_std^2) under both inits
    n_neurons: int = 100_000    # independently initialised neurons sampled
    chunk: int = 5_000          # neurons per weight matrix drawn at once
    saturation_slope: float = 0.01  # a sigmoid unit is "saturated" where sigma'(z) < this

    SCALES = {
        "smoke": {"n_neurons": 20_000},
        "book": {"n_neurons": 100_000},
        "paper": {"n_neurons": 1_000_000},
    }


def theory_std(w_var: float, n_active: int, bias_var: float) -> float:
    """Std of z = sum_j w_j x_j + b with n_active inputs equal to 1: eq. (ch2-var-z)."""
    return float(np.sqrt(n_active * w_var + bias_var))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # same as 1/(1+e^-z), without overflow


class FanInResult(Result):
    """``histories[init]`` holds the sampled ``z`` of every neuron."""

    def plot(self):
        from bnlib import plots

        return plots.fan_in_histograms(
            {name: self.histories[name]["z"] for name in INITS},
            theory={name: self.headline[name]["theory_std"] for name in INITS},
            labels={"standard_normal": r"$w \sim N(0, 1)$",
                    "lecun_normal": r"$w \sim N(0, 1/n_{in})$"},
            colors={"standard_normal": plots.COLORS["plain"], "lecun_normal": plots.COLORS["bn"]},
        )


def run(config: Config, progress: bool = False) -> FanInResult:
    """Sample z for every initialiser in INITS and compare its std with eq. (ch2-var-z)."""
    from bnlib.scratch import init as initializers

    if not 0 < config.n_active <= config.n_in:
        raise ValueError(f"n_active must be in 1..n_in={config.n_in}; got {config.n_active}")
    if config.n_neurons < 2 or config.chunk < 1:
        raise ValueError("n_neurons must be >= 2 and chunk >= 1")
    rng = np.random.default_rng(config.seed)
    x = np.zeros(config.n_in)
    x[: config.n_active] = 1.0

    histories, headline, timings = {}, {}, {}
    for name in INITS:
        make_w = initializers.get(name)
        zs = []
        with Timer() as t:
            n_chunks = -(-config.n_neurons // config.chunk)
            for k in base.progress(range(n_chunks), desc=name, enabled=progress):
                n_out = min(config.chunk, config.n_neurons - k * config.chunk)
                W = make_w(config.n_in, n_out, rng)               # (n_in, n_out)
                b = config.bias_std * rng.standard_normal(n_out)  # bias N(0, 1)
                zs.append(x @ W + b)
        z = np.concatenate(zs)
        # the variance each weight was drawn with, by definition of the initialiser
        w_var = 1.0 if name == "standard_normal" else 1.0 / config.n_in
        a = sigmoid(z)
        slope = a * (1.0 - a)
        histories[name] = {"z": z}
        headline[name] = {
            "std": float(z.std()),
            "mean": float(z.mean()),
            "theory_std": theory_std(w_var, config.n_active, config.bias_std ** 2),
            "frac_saturated": float(np.mean(slope < config.saturation_slope)),
            "frac_abs_z_above_1": float(np.mean(np.abs(z) > 1.0)),
            "mean_sigmoid_slope": float(slope.mean()),
        }
        timings[f"{name}_s"] = t.seconds
    return FanInResult(NAME, config, histories, headline, timings)

