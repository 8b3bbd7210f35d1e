"""cs231n's batch-norm-and-initialisation sweep: final accuracy over 20 weight scales 1e-4..1, plain vs BN.

Chapter 2, section "How sensitive is training to the initial scale?".  The
experiment of Stanford's cs231n assignment 2 (BatchNormalization notebook,
"Batch normalization and initialization"): an 8-layer fully connected network,
seven hidden layers of 50 ReLU units, every weight drawn from
N(0, weight_scale^2) with ``weight_scale`` log-spaced from 1e-4 to 1 (20
values, ``np.logspace(-4, 0, 20)``), biases zero, trained twice per scale,
without and with batch normalization (``affine -> BN -> ReLU``, gamma = 1,
beta = 0), Adam with learning rate 1e-3, mini-batches of 50, 10 epochs on 1,000
training images.  cs231n uses CIFAR-10 and plots the best validation
accuracy, the best training accuracy and the final training loss against
the scale.  Here the images are the offline MNIST digits (``bnlib.data.mnist``,
pixels standardised with one mean and one std), 1,000 for training and 1,000
for testing; both arms of one scale see the same weights' random numbers (scaled)
and the same mini-batches.

Summary (per arm ``plain`` and ``bn``): ``final_test_acc`` and
``best_test_acc`` (lists over ``scales``), ``final_train_loss``, ``best_acc``
(the best final accuracy over the scales), ``n_within`` (how many of the scales
end within ``tolerance`` of that best), ``decades_within`` (the same as a width
on the log10 scale: ``n_within`` times the grid step, 4/19 decade), and
``n_above`` / ``decades_above`` (scales whose final accuracy reaches
``threshold``).  ``width_bn_minus_plain`` is the difference of
``decades_within`` (BN minus plain): over seeds, its interval measures the claim
that BN makes training less sensitive to the initial scale.

The experiment is NumPy only; ``device`` is accepted and ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "init-scale"

ARMS = ("plain", "bn")


@dataclass
class Config(ExperimentConfig):
    n_scales: int = 20
    scale_min: float = 1e-4
    scale_max: float = 1.0
    hidden: int = 50
    depth: int = 7               # hidden layers (cs231n: [50] * 7, an 8-layer network)
    n_train: int | None = 1000
    n_test: int | None = 1000
    epochs: int = 10
    batch_size: int = 50
    lr: float = 1e-3             # Adam
    tolerance: float = 0.05      # "within 5 points of the best accuracy"
    threshold: float = 0.8       # "reaches 80% test accuracy"
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_scales": 4, "n_train": 300, "n_test": 300, "epochs": 2},
        "book": {},
        "paper": {},
    }


def scales(config: Config) -> np.ndarray:
    """The log-spaced weight scales (cs231n: ``np.logspace(-4, 0, num=20)``)."""
    return np.logspace(np.log10(config.scale_min), np.log10(config.scale_max), config.n_scales)


def normal_init(scale: float):
    """An initialiser for :func:`bnlib.scratch.mlp`: N(0, scale^2) whatever the fan-in."""
    def init(n_in: int, n_out: int, rng: np.random.Generator) -> np.ndarray:
        return scale * rng.standard_normal((n_in, n_out))
    init.__name__ = f"normal_{scale:.3g}"
    return init


def band_width(acc, tolerance: float) -> int:
    """How many entries of ``acc`` lie within ``tolerance`` of its maximum."""
    acc = np.asarray(acc, dtype=float)
    return int(np.sum(acc >= np.nanmax(acc) - tolerance))


class InitScaleResult(Result):
    """``histories[arm]``: ``final_test_acc``, ``best_test_acc``, ``final_train_loss``
    (arrays over ``histories["scales"]``)."""

    def plot(self):
        import matplotlib.pyplot as plt

        from bnlib.plots import COLORS
        from bnlib.plots.ch02 import init_scale_figure

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        s = self.histories["scales"]
        init_scale_figure(
            s, {arm: self.histories[arm]["final_test_acc"][None, :] for arm in ARMS},
            {arm: self.histories[arm]["final_train_loss"][None, :] for arm in ARMS},
            colors={"plain": COLORS["plain"], "bn": COLORS["bn"]},
            labels={"plain": "plain", "bn": "with BN"}, axes=axes,
            title=(f"init-scale, seed {self.config.seed}: {self.config.depth} x {self.config.hidden} ReLU, "
                   f"Adam lr {self.config.lr:g}, {self.config.epochs} epochs, "
                   f"{self.headline['n_train']} training digits"))
        return fig


def train_one(x_train, y_train, x_test, y_test, scale: float, bn: bool, config: Config,
              seed: int) -> dict:
    """Train one network of the sweep; return its final/best test accuracy and final loss."""
    from bnlib import data
    from bnlib.scratch import mlp
    from bnlib.scratch.losses import softmax_cross_entropy
    from bnlib.scratch.optim import Adam

    sizes = [x_train.shape[1]] + [config.hidden] * config.depth + [10]
    net = mlp(sizes, activation="relu", norm="bn" if bn else None, init=normal_init(scale),
              rng=np.random.default_rng([seed, 1]))
    opt = Adam(net.params(), lr=config.lr)
    order_rng = np.random.default_rng([seed, 2])
    accs, losses = [], []
    for _ in range(config.epochs):
        epoch_losses = []
        for xb, yb in data.batches(x_train, y_train, config.batch_size, order_rng):
            loss, dlogits = softmax_cross_entropy(net.forward(xb), yb)
            net.backward(dlogits)
            opt.step(net.grads())
            epoch_losses.append(loss)
        net.eval()
        logits = net.forward(x_test)
        net.train()
        accs.append(float(np.mean(np.argmax(logits, axis=1) == y_test)) if np.all(np.isfinite(logits))
                    else 0.1)
        losses.append(float(np.mean(epoch_losses)))
    return {"final_test_acc": accs[-1], "best_test_acc": max(accs), "final_train_loss": losses[-1]}


def run(config: Config, progress: bool = False) -> InitScaleResult:
    """Train plain and BN networks at every weight scale (one seed)."""
    from bnlib.training import cpu_threads

    with cpu_threads(config.threads):
        return _run(config, progress)


def _run(config: Config, progress: bool) -> InitScaleResult:
    from bnlib import data

    if config.n_scales < 2 or not 0 < config.scale_min < config.scale_max:
        raise ValueError("need n_scales >= 2 and 0 < scale_min < scale_max")
    if config.depth < 1 or config.hidden < 1 or config.epochs < 1 or config.batch_size < 1:
        raise ValueError("depth, hidden, epochs and batch_size must be positive")
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed, standardize=True)
    x_train, y_train = ds.x_train.reshape(len(ds.x_train), -1), ds.y_train
    x_test, y_test = ds.x_test.reshape(len(ds.x_test), -1), ds.y_test
    s = scales(config)
    step = float(np.log10(s[1] / s[0]))
    histories = {"scales": s}
    headline, timings = {"scales": [float(f"{v:.4g}") for v in s]}, {}
    for arm in ARMS:
        rows = []
        with Timer() as t:
            for scale in base.progress(s, desc=arm, enabled=progress):
                rows.append(train_one(x_train, y_train, x_test, y_test, float(scale), arm == "bn",
                                      config, config.seed))
        h = {k: np.array([r[k] for r in rows]) for k in rows[0]}
        histories[arm] = h
        n_within = band_width(h["final_test_acc"], config.tolerance)
        n_above = int(np.sum(h["final_test_acc"] >= config.threshold))
        headline[arm] = {
            "final_test_acc": [round(float(v), 4) for v in h["final_test_acc"]],
            "best_test_acc": [round(float(v), 4) for v in h["best_test_acc"]],
            "final_train_loss": [float(f"{v:.4g}") if np.isfinite(v) else float("nan")
                                 for v in h["final_train_loss"]],
            "best_acc": round(float(np.max(h["final_test_acc"])), 4),
            "best_scale": float(f"{s[int(np.argmax(h['final_test_acc']))]:.4g}"),
            "n_within": n_within,
            "decades_within": round(n_within * step, 4),
            "n_above": n_above,
            "decades_above": round(n_above * step, 4),
        }
        timings[f"{arm}_s"] = t.seconds
    headline["width_bn_minus_plain"] = round(headline["bn"]["decades_within"]
                                             - headline["plain"]["decades_within"], 4)
    headline["above_bn_minus_plain"] = round(headline["bn"]["decades_above"]
                                             - headline["plain"]["decades_above"], 4)
    headline["grid_step_decades"] = round(step, 6)
    headline["data"] = ds.source
    headline["n_train"] = int(len(x_train))
    headline["n_test"] = int(len(x_test))
    return InitScaleResult(NAME, config, histories, headline, timings)
