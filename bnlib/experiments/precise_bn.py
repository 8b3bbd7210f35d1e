"""Precise BN (Wu & Johnson 2021): population statistics recomputed with the final weights vs the moving average.

Chapter 5, section 5.5.  One batch-norm MLP (784 -> hidden -> 10, ReLU, BN
before every ReLU) is trained on MNIST digits with SGD.  The running
statistics never influence training (training mode normalises with batch
statistics), so one run can feed several moving averages at once: after
every step, the batch mean and unbiased batch variance of every BN layer
update one exponential moving average per ``momenta`` value (PyTorch's
convention, eq. ``ch5-ema``, all starting from mean 0 and variance 1 as
``torch.nn.BatchNorm*d`` does).  At every checkpoint the test accuracy is
measured in eval mode with

* each moving average as the running statistics, and
* *precise* statistics: the weights frozen, every BN's statistics recomputed
  as the plain average over ``precise_batches`` training batches
  (:func:`bnlib.scratch.recompute_bn_stats`, Ioffe & Szegedy's Algorithm 2).

The gap shows when the moving average is off: a large momentum averages only
a few noisy batches (eq. ``ch5-window``), a small one has not forgotten its
initial value after a short training (eq. ``ch5-forget``), and either lags
weights that keep changing.  The layers' own running statistics (momentum
0.1) are checked against the tracked average of the same momentum.  NumPy
(``bnlib.scratch``) only; ``device`` is accepted and ignored.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "precise-bn"


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = 4000
    n_test: int | None = 1000
    hidden: tuple = (100, 100, 100)
    lr: float = 0.1
    sgd_momentum: float = 0.9
    batch_size: int = 32
    steps: int = 2000
    checkpoints: tuple = (10, 30, 100, 300, 1000, 2000)
    momenta: tuple = (0.001, 0.01, 0.1, 0.5, 0.9)
    precise_batches: int = 100          # training batches averaged for the precise statistics
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "hidden": (64, 64), "steps": 300,
                  "checkpoints": (30, 300), "momenta": (0.01, 0.1, 0.9),
                  "precise_batches": 30},
        "book": {},
        "paper": {"n_train": None, "n_test": None, "hidden": (256, 256, 256), "steps": 20000,
                  "checkpoints": (10, 30, 100, 300, 1000, 3000, 10000, 20000),
                  "precise_batches": 200},
    }


def build_network(config: Config, n_in: int = 784):
    from bnlib.scratch import mlp

    return mlp([n_in, *config.hidden, 10], activation="relu", norm="bn", init="kaiming_normal",
               rng=np.random.default_rng([config.seed, 1]))


def _set_stats(bns, stats) -> None:
    for bn, (mean, var) in zip(bns, stats):
        bn.running_mean[...] = mean
        bn.running_var[...] = var


class PreciseBNResult(Result):
    """``histories``: ``step`` (checkpoints), ``precise_acc``, ``ema_acc`` (momenta x
    checkpoints), ``ema_error`` (momenta x checkpoints: mean relative error of the
    moving-average variance against the precise one, over all BN units), ``momenta``."""

    def plot(self):
        from bnlib import plots

        h = self.histories
        return plots.precise_bn_figure(h["step"], h["precise_acc"], h["ema_acc"], h["ema_error"],
                                       h["momenta"],
                                       title=f"{self.headline['data']}, {self.headline['n_train']} "
                                             f"training digits, batch {self.config.batch_size}")


def run(config: Config, progress: bool = False) -> PreciseBNResult:
    """Train once, track one moving average per momentum, compare with precise statistics."""
    from bnlib import data
    from bnlib.scratch import SGD, BatchNorm, softmax_cross_entropy
    from bnlib.scratch.running import recompute_bn_stats
    from bnlib.training import accuracy, batch_indices, cpu_threads

    checkpoints = sorted(int(c) for c in config.checkpoints)
    if not checkpoints or checkpoints[0] < 1 or checkpoints[-1] > config.steps:
        raise ValueError(f"checkpoints must lie in 1..steps={config.steps}; got {config.checkpoints}")
    if any(not 0 < m <= 1 for m in config.momenta):
        raise ValueError(f"momenta must lie in (0, 1]; got {config.momenta}")
    if config.precise_batches < 1 or config.batch_size < 2:
        raise ValueError("precise_batches must be >= 1 and batch_size >= 2")
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    x, y, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test

    model = build_network(config, x.shape[1])
    bns = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    ema = {m: [(np.zeros(b.num_features), np.ones(b.num_features)) for b in bns]
           for m in config.momenta}
    opt = SGD(model.params(), lr=config.lr, momentum=config.sgd_momentum)
    grads = model.grads()
    rng = np.random.default_rng([config.seed, 2])
    precise_rng_seed = [config.seed, 3]

    steps, precise_acc, ema_acc, ema_error, own_diff = [], [], [], [], 0.0
    bar = base.progress(total=config.steps, desc="precise-bn", enabled=progress)
    with Timer() as t, cpu_threads(config.threads), np.errstate(over="ignore", invalid="ignore"):
        for step, idx in enumerate(batch_indices(len(x), config.batch_size, config.steps, rng), 1):
            model.train()
            loss, dlogits = softmax_cross_entropy(model.forward(x[idx]), y[idx])
            model.backward(dlogits)
            opt.step(grads)
            for k, bn in enumerate(bns):
                cache = bn._cache[1]
                mu, var_unbiased = cache["mu"], cache["var"] * cache["m"] / (cache["m"] - 1)
                for m in config.momenta:
                    mean, var = ema[m][k]
                    ema[m][k] = ((1 - m) * mean + m * mu, (1 - m) * var + m * var_unbiased)
            bar.update(1)
            if step not in checkpoints:
                continue
            if 0.1 in ema:                         # the layers' own running statistics
                own_diff = max(own_diff, max(float(np.max(np.abs(b.running_var - v)))
                                             for b, (_, v) in zip(bns, ema[0.1])))
            own = [(b.running_mean.copy(), b.running_var.copy()) for b in bns]
            precise = copy.deepcopy(model)
            prng = np.random.default_rng(precise_rng_seed)
            recompute_bn_stats(precise, (x[i] for i in batch_indices(
                len(x), config.batch_size, config.precise_batches, prng)))
            precise_stats = [(b.running_mean.copy(), b.running_var.copy())
                             for b in precise.layers if isinstance(b, BatchNorm)]
            steps.append(step)
            precise_acc.append(accuracy(precise, x_test, y_test))
            accs, errs = [], []
            for m in config.momenta:
                _set_stats(bns, ema[m])
                accs.append(accuracy(model, x_test, y_test))
                rel = [np.abs(v - pv) / pv for (_, v), (_, pv) in zip(ema[m], precise_stats)]
                errs.append(float(np.mean(np.concatenate(rel))))
            _set_stats(bns, own)
            ema_acc.append(accs)
            ema_error.append(errs)
        bar.close()

    precise_acc = np.asarray(precise_acc)
    ema_acc = np.asarray(ema_acc).T            # momenta x checkpoints
    ema_error = np.asarray(ema_error).T
    histories = {"step": np.asarray(steps), "precise_acc": precise_acc, "ema_acc": ema_acc,
                 "ema_error": ema_error, "momenta": np.asarray(config.momenta, dtype=float)}
    gain = precise_acc[None, :] - ema_acc
    headline = {
        "checkpoints": steps,
        "precise_acc": [round(float(a), 4) for a in precise_acc],
        "ema_acc": {f"{m:g}": [round(float(a), 4) for a in row]
                    for m, row in zip(config.momenta, ema_acc)},
        "ema_var_rel_error": {f"{m:g}": [round(float(e), 4) for e in row]
                              for m, row in zip(config.momenta, ema_error)},
        "final_gain": {f"{m:g}": round(float(g), 4) for m, g in zip(config.momenta, gain[:, -1])},
        "max_gain": {f"{m:g}": round(float(g), 4) for m, g in zip(config.momenta, gain.max(axis=1))},
        "own_running_var_vs_tracked_0.1": own_diff,
        "data": ds.source,
        "n_train": ds.n_train,
        "n_test": ds.n_test,
    }
    return PreciseBNResult(NAME, config, histories, headline, {"run_s": t.seconds})
