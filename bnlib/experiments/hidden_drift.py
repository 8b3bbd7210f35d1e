"""Hidden layers drift: a tanh MLP on the input-normalisation post's regression, inputs standardised, watched while it trains.

Chapter 1, section "Hidden layers have the same problem".  The data are seed
000's 2,500 points y = x^2 - 5 + N(0, 8^2), x in [-7, 10]
(:func:`bnlib.data.regression_1d`).  A tanh network with ``hidden`` layers
(three of 30 units at book scale), LeCun weights N(0, 1/n_in) and zero biases
is trained by full-batch gradient descent on the quadratic cost
``bnlib.scratch.mse_loss``, once with the input x standardised and once raw.
Every ``snapshot_every`` steps the experiment records, for every hidden
layer, the distribution of its pre-activations z over the 2,500 points: the
15th/50th/85th percentiles, the standard deviation and the fraction of
*saturated* values, where tanh'(z) < ``slope`` (|z| > 2.99 for 0.01).

Standardising the input keeps the *first* layer in tanh's useful range; the
later layers' inputs are made by the network itself, and training moves them.

NumPy only; ``device`` is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "hidden-drift"

INPUTS = ("standardized", "raw")
PERCENTILES = (15, 50, 85)


@dataclass
class Config(ExperimentConfig):
    n: int = 2500
    hidden: tuple = (30, 30, 30)
    lr: float = 0.003
    steps: int = 1000
    snapshot_every: int = 50
    slope: float = 0.01
    inputs: tuple = INPUTS
    threads: int | None = 1          # BLAS threads; one is fastest for these small matrices

    SCALES = {
        "smoke": {"n": 500, "steps": 200, "snapshot_every": 50},
        "book": {},
        # the source's depth: seven hidden layers of 30 units, its learning rate, longer
        "paper": {"hidden": (30,) * 7, "lr": 0.001, "steps": 5000, "snapshot_every": 100},
    }


def build_network(config: Config):
    """1 -> hidden tanh layers -> 1, LeCun-normal weights, zero biases (seeded by config.seed)."""
    from bnlib.scratch import mlp

    return mlp([1, *config.hidden, 1], activation="tanh", init="lecun_normal",
               rng=np.random.default_rng([config.seed, 3]))


def hidden_pre_activations(net, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Forward pass returning the input z of every Tanh layer, and the network's output."""
    pres, z = [], x
    for layer in net.layers:
        if type(layer).__name__ == "Tanh":
            pres.append(z)
        z = layer.forward(z)
    return pres, z


class HiddenDriftResult(Result):
    """``histories[inputs]``: ``step`` (snapshots), ``loss`` (every step), and per snapshot and
    layer ``std``, ``saturated``, ``percentiles`` (snapshots x layers x 3); ``z_first`` and
    ``z_last`` hold every layer's pre-activations at the first and the last snapshot."""

    def plot(self, inputs: str = "standardized"):
        from bnlib import plots

        h = self.histories[inputs]
        return plots.hidden_drift_figure(
            h["step"], h["percentiles"], h["saturated"], h["z_first"], h["z_last"],
            z_sat=float(np.arctanh(np.sqrt(1.0 - self.config.slope))),
            title=f"tanh MLP {'-'.join(map(str, (1, *self.config.hidden, 1)))}, {inputs} input x")


def run(config: Config, progress: bool = False) -> HiddenDriftResult:
    """Train the tanh MLP on standardised and on raw x and record every hidden layer's z."""
    from bnlib import data
    from bnlib.scratch import SGD
    from bnlib.scratch.losses import mse_loss
    from bnlib.training import cpu_threads

    if config.steps < 1 or config.snapshot_every < 1 or not config.hidden:
        raise ValueError("need steps >= 1, snapshot_every >= 1 and at least one hidden layer")
    unknown = set(config.inputs) - set(INPUTS)
    if unknown:
        raise ValueError(f"inputs must be among {INPUTS}; got {sorted(unknown)}")
    x_raw, y = data.regression_1d(n=config.n, seed=config.seed)
    z_sat = float(np.arctanh(np.sqrt(1.0 - config.slope)))
    histories, headline, timings = {}, {}, {}
    for inputs in config.inputs:
        x = (x_raw - x_raw.mean()) / x_raw.std() if inputs == "standardized" else x_raw
        net = build_network(config)                  # the same weights for both inputs
        opt = SGD(net.params(), lr=config.lr)
        steps, losses, stds, sats, pcts, firsts, lasts = [], [], [], [], [], None, None
        with Timer() as t, cpu_threads(config.threads):
            for step in base.progress(range(config.steps + 1), desc=inputs, enabled=progress):
                pres, out = hidden_pre_activations(net, x)
                loss, dout = mse_loss(out, y)
                if step % config.snapshot_every == 0 or step == config.steps:
                    steps.append(step)
                    stds.append([p.std() for p in pres])
                    sats.append([np.mean(np.abs(p) > z_sat) for p in pres])
                    pcts.append([np.percentile(p, PERCENTILES) for p in pres])
                    if firsts is None:
                        firsts = [p.astype(np.float32) for p in pres]
                    lasts = [p.astype(np.float32) for p in pres]
                losses.append(loss)
                if step == config.steps:
                    break
                net.backward(dout)
                opt.step(net.grads())
        stds, sats = np.asarray(stds), np.asarray(sats)
        histories[inputs] = {"step": np.asarray(steps), "loss": np.asarray(losses),
                             "std": stds, "saturated": sats, "percentiles": np.asarray(pcts),
                             "z_first": firsts, "z_last": lasts}
        headline[inputs] = {
            "loss_init": float(losses[0]), "loss_final": float(losses[-1]),
            "std_init": stds[0].tolist(), "std_final": stds[-1].tolist(),
            "saturated_init": sats[0].tolist(), "saturated_final": sats[-1].tolist(),
            "last_layer_std_growth": float(stds[-1, -1] / stds[0, -1]),
        }
        timings[f"{inputs}_s"] = t.seconds
    return HiddenDriftResult(NAME, config, histories, headline, timings)
