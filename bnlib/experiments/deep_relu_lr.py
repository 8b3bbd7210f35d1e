"""Learning rates for the 30-layer ReLU MLP: Xavier vs Kaiming trained with SGD learning rates 0.001 to 0.1.

Chapter 2, section "Thirty layers", the question "how robust is this?".  The
set-up is experiment ``deep-relu``'s (``depth`` hidden ReLU layers of
``width`` units, softmax and cross-entropy, SGD with momentum, the offline
MNIST digits), run once per learning rate in ``lrs`` with everything else
fixed: for each rate both initialisations start from the same seed and see the
same mini-batches, exactly as in ``deep-relu`` (the rate 0.002 of ``lrs``
repeats ``deep-relu``'s own run).

The summary gives, per initialiser and per rate (keys ``"0.001"`` ...):
``test_acc_per_epoch``, ``final_test_acc``, ``best_test_acc``,
``final_train_loss`` (the training-set loss after the last epoch; ``None`` when
it is not finite), ``diverged`` (1 when a training-set loss became non-finite
or above 100, else 0), ``stuck`` (1 when every epoch's training loss is within
0.01 of ln 10, the loss of a uniform guess, else 0), ``failed`` (1 when the
final test accuracy is below 15%, near the 10% of a constant guess: stuck,
diverged or collapsed, else 0) and ``largest_drop`` (the largest fall of the
test accuracy from one epoch to the next, 0 if it never falls: how erratic the
run is).

The experiment is NumPy only; ``device`` is accepted and ignored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bnlib.experiments import deep_relu
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "deep-relu-lr"

INITS = deep_relu.INITS
LABELS = deep_relu.LABELS


@dataclass
class Config(ExperimentConfig):
    lrs: tuple = (0.001, 0.002, 0.005, 0.01, 0.03, 0.1)
    depth: int = 30
    width: int = 100
    n_train: int | None = 4000
    n_test: int | None = 1000
    epochs: int = 10
    batch_size: int = 32
    momentum: float = 0.9
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "epochs": 2, "lrs": (0.002, 0.1)},
        "book": {"n_train": 4000, "n_test": 1000, "epochs": 10},
        "paper": {"n_train": None, "n_test": None, "epochs": 30, "width": 256},
    }


def lr_key(lr: float) -> str:
    """The summary key of a learning rate: ``0.002 -> "0.002"``."""
    return f"{lr:g}"


def _run_summary(h: dict) -> dict:
    acc = [float(a) for a in h["test_acc"]]
    loss = [float(v) for v in h["train_loss_epoch"]]
    diverged = any(not math.isfinite(v) or v > 100 for v in loss)
    drops = [a - b for a, b in zip(acc[:-1], acc[1:])]
    return {
        "test_acc_per_epoch": [round(a, 4) for a in acc],
        "final_test_acc": round(acc[-1], 4),
        "best_test_acc": round(max(acc), 4),
        "final_train_loss": round(loss[-1], 4) if math.isfinite(loss[-1]) else None,
        "diverged": int(diverged),
        "stuck": int(all(math.isfinite(v) and abs(v - math.log(10)) < 0.01 for v in loss)),
        "failed": int(acc[-1] < 0.15),
        "largest_drop": round(max([0.0] + drops), 4),
    }


class DeepReluLrResult(Result):
    """``histories[lr_key][init]``: the ``deep-relu`` histories of that run."""

    def plot(self):
        from bnlib import plots

        lrs = list(self.config.lrs)
        series = {LABELS[name]: (np.array(lrs), np.array(
            [self.headline[name][lr_key(lr)]["final_test_acc"] for lr in lrs]))
            for name in INITS}
        return plots.curves(series, xlabel="learning rate",
                            ylabel=f"test accuracy after {self.config.epochs} epochs",
                            title=f"{self.config.depth} ReLU layers of {self.config.width}, "
                                  f"SGD momentum {self.config.momentum:g}", logx=True)


def run(config: Config, progress: bool = False) -> DeepReluLrResult:
    """Run experiment ``deep-relu`` at every learning rate in ``config.lrs``."""
    if not config.lrs:
        raise ValueError("lrs must name at least one learning rate")
    histories, timings = {}, {}
    headline: dict = {name: {} for name in INITS}
    headline["lrs"] = [float(lr) for lr in config.lrs]
    for lr in config.lrs:
        sub = deep_relu.Config(scale=config.scale, seed=config.seed, device=config.device,
                               depth=config.depth, width=config.width, n_train=config.n_train,
                               n_test=config.n_test, epochs=config.epochs,
                               batch_size=config.batch_size, lr=float(lr),
                               momentum=config.momentum, threads=config.threads)
        with Timer() as t, np.errstate(all="ignore"):   # diverging runs overflow: that is the point
            res = deep_relu.run(sub, progress=progress)
        key = lr_key(lr)
        histories[key] = res.histories
        for name in INITS:
            headline[name][key] = _run_summary(res.histories[name])
        timings[f"lr_{key}_s"] = t.seconds
    return DeepReluLrResult(NAME, config, histories, headline, timings)
