"""Batch-size dependence (the set-up of Wu & He 2018, Figure 1, on the digits): test error of BN, LN, GN, RMSNorm and no norm vs batch size.

Chapter 6, section 6.4.  The same MLP on MNIST digits (784 -> hidden ->
... -> 10, ReLU, the normalisation between each linear layer and its ReLU)
is trained with each normalisation in ``norms`` at every batch size in
``batch_sizes``:

* ``none``: no normalisation;
* ``bn``: ``torch.nn.BatchNorm1d`` (batch statistics in training, running
  statistics at test time);
* ``ln``: ``torch.nn.LayerNorm``;
* ``gn``: ``torch.nn.GroupNorm`` with ``groups`` groups of units;
* ``rms``: ``torch.nn.RMSNorm``.

Every run sees the same number of examples (``epochs`` passes over the
training digits), so a batch of 2 takes 64 times as many steps as a batch of
128.  The learning rate follows the linear scaling rule that Wu and He used,
``lr = base_lr * batch_size / 32``, with SGD and momentum 0.9.  The test error
is measured in eval mode after the last step.  Batch norm's statistics come
from the mini-batch, so at batch sizes of 2 or 4 they are very noisy, and
the running averages used at test time do not match what the network saw in
training; the per-example normalisations do not care about the batch size.

PyTorch on ``config.device`` (CPU by default), float32, ``threads`` CPU threads.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "batch-size"

#: the normalisations and how the chapter labels them
LABELS = {"none": "no normalisation", "bn": "batch norm", "ln": "layer norm",
          "gn": "group norm", "rms": "RMS norm"}


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = 4000
    n_test: int | None = 1000
    hidden: tuple = (128, 128)
    norms: tuple = ("none", "bn", "ln", "gn", "rms")
    batch_sizes: tuple = (2, 4, 8, 16, 32, 64, 128)
    epochs: int = 2
    base_lr: float = 0.05          # learning rate at batch size 32; scaled linearly
    momentum: float = 0.9
    groups: int = 8                # groups of units for group norm
    seeds: tuple = (0,)            # repeats; errors are averaged over them
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "hidden": (64,), "norms": ("bn", "ln", "gn"),
                  "batch_sizes": (2, 32), "epochs": 2},
        "book": {},
        "paper": {"hidden": (256, 256), "epochs": 5, "seeds": (0, 1)},
    }


def build_network(norm: str, n_in: int, hidden, groups: int = 8, seed: int = 0):
    """``Linear -> norm -> ReLU`` per hidden layer, then a ``Linear`` to 10 logits (PyTorch)."""
    import torch
    from torch import nn

    def make_norm(h: int):
        if norm == "none":
            return None
        if norm == "bn":
            return nn.BatchNorm1d(h)
        if norm == "ln":
            return nn.LayerNorm(h)
        if norm == "gn":
            return nn.GroupNorm(groups, h)
        if norm == "rms":
            return nn.RMSNorm(h, eps=1e-5)
        raise ValueError(f"norm must be one of {', '.join(LABELS)}; got {norm!r}")

    torch.manual_seed(seed)
    layers, n = [], n_in
    for h in hidden:
        layers.append(nn.Linear(n, h))
        block = make_norm(h)
        if block is not None:
            layers.append(block)
        layers.append(nn.ReLU())
        n = h
    layers.append(nn.Linear(n, 10))
    return nn.Sequential(*layers)


class BatchSizeResult(Result):
    """``histories``: ``batch_sizes``; ``error[norm]`` (seeds x batch sizes test error);
    ``train_loss[norm]`` (seeds x batch sizes: mean loss of the last epoch's steps)."""

    def plot(self):
        from bnlib import plots

        h = self.histories
        return plots.batch_size_errors(
            h["batch_sizes"], {n: h["error"][n].mean(axis=0) for n in self.config.norms},
            labels=LABELS,
            title=f"MLP {'-'.join(map(str, self.config.hidden))}, {self.headline['n_train']} "
                  f"digits, {self.config.epochs} epochs at every batch size")


def run(config: Config, progress: bool = False) -> BatchSizeResult:
    """Train one network per normalisation, batch size and seed; test error in eval mode."""
    import torch

    from bnlib import data
    from bnlib._device import resolve_device
    from bnlib.training import cpu_threads, fit

    for norm in config.norms:
        if norm not in LABELS:
            raise ValueError(f"norms must be among {', '.join(LABELS)}; got {norm!r}")
    if config.epochs < 1 or not config.seeds or min(config.batch_sizes) < 2:
        raise ValueError("epochs must be >= 1, seeds non-empty and every batch size >= 2")
    if any(h % config.groups for h in config.hidden):
        raise ValueError(f"groups={config.groups} must divide every hidden width {config.hidden}")
    device = resolve_device(config.device)
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    sizes = sorted(int(b) for b in config.batch_sizes)
    error = {n: np.zeros((len(config.seeds), len(sizes))) for n in config.norms}
    train_loss = {n: np.zeros((len(config.seeds), len(sizes))) for n in config.norms}
    seconds = {n: 0.0 for n in config.norms}
    bar = base.progress(total=len(config.norms) * len(sizes) * len(config.seeds),
                        desc="batch-size", enabled=progress)
    with Timer() as t, cpu_threads(config.threads):
        for i, seed in enumerate(config.seeds):
            for j, batch in enumerate(sizes):
                per_epoch = ds.n_train // batch
                for norm in config.norms:
                    model = build_network(norm, ds.n_features, config.hidden, config.groups,
                                          seed=1000 * config.seed + seed).to(
                        device=device, dtype=torch.float32)
                    hist = fit(model, ds.x_train, ds.y_train, steps=config.epochs * per_epoch,
                               batch_size=batch, lr=config.base_lr * batch / 32,
                               optimizer_kwargs={"momentum": config.momentum},
                               rng=np.random.default_rng([config.seed, seed, batch]),
                               x_eval=ds.x_test, y_eval=ds.y_test, eval_every=10**9)
                    acc = hist.final_test_acc
                    error[norm][i, j] = 1.0 - acc if np.isfinite(acc) else 1.0
                    train_loss[norm][i, j] = float(np.mean(hist.loss[-per_epoch:]))
                    seconds[norm] += hist.train_seconds
                    bar.update(1)
        bar.close()
    mean_err = {n: error[n].mean(axis=0) for n in config.norms}
    headline = {
        "batch_sizes": sizes,
        "test_error": {n: [round(float(e), 4) for e in mean_err[n]] for n in config.norms},
        "error_smallest_minus_best": {n: round(float(mean_err[n][0] - mean_err[n].min()), 4)
                                      for n in config.norms},
        "train_seconds": {n: round(s, 1) for n, s in seconds.items()},
        "data": ds.source,
        "n_train": ds.n_train,
        "n_test": ds.n_test,
    }
    histories = {"batch_sizes": np.asarray(sizes), "error": error, "train_loss": train_loss}
    return BatchSizeResult(NAME, config, histories, headline, {"run_s": t.seconds})
