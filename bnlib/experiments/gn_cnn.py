"""Group norm where Wu & He tested it: a small CNN on 8x8 digits at batch sizes 2 to 32, with batch, group, layer or no normalisation.

Chapter 6, section 6.4.  Wu & He (2018) compare batch and group norm in
convolutional networks (ResNet-50 on ImageNet) as the number of images per
GPU falls from 32 to 2.  This is that set-up in miniature: a three-layer CNN on
scikit-learn's 8x8 handwritten digits,

    conv3x3(1 -> c1) - norm - ReLU - conv3x3(c1 -> c2) - norm - ReLU - maxpool 2
    - conv3x3(c2 -> c2) - norm - ReLU - global average pool - linear(10),

with ``norm`` one of ``none``, ``bn`` (``BatchNorm2d``), ``gn``
(``GroupNorm(groups, C)``) and ``ln`` (``GroupNorm(1, C)``: layer norm over
channels and positions).  Every run makes ``epochs`` passes over the 1,437
training digits with SGD (momentum 0.9) at the learning rate
``base_lr * B / 32`` (Wu & He's linear scaling rule), from the same initial
weights for all batch sizes of a normalisation.  Test error in evaluation mode
on the 360 test digits.

For batch norm at every batch size the test error is also measured two other
ways, to separate what the small batch did to *training* from what it does at
*test time*:

* ``bn_recomputed``: with population statistics recomputed over the training
  set after training (``bnlib.torch.recompute_bn_stats``, Algorithm 2 of
  Ioffe & Szegedy), instead of the running averages;
* ``bn_batch_stats``: in training mode on consecutive test batches of the
  training batch size B, i.e. normalised as during training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "gn-cnn"

LABELS = {"none": "no normalisation", "bn": "batch norm", "gn": "group norm", "ln": "layer norm",
          "bn_recomputed": "batch norm, recomputed population statistics",
          "bn_batch_stats": "batch norm, test batches of B (batch statistics)"}


@dataclass
class Config(ExperimentConfig):
    batch_sizes: tuple = (2, 4, 8, 16, 32)
    norms: tuple = ("none", "bn", "gn", "ln")
    channels: tuple = (16, 32)
    groups: int = 8
    epochs: int = 3
    n_train: int | None = None      # the first n_train of the training digits (smoke)
    base_lr: float = 0.1
    momentum: float = 0.9
    threads: int | None = 1

    SCALES = {
        "smoke": {"batch_sizes": (2, 32), "norms": ("bn", "gn"), "channels": (8, 8), "groups": 4,
                  "epochs": 1, "n_train": 300},
        "book": {},
        "paper": {},                 # the CPU budget of the chapter: book scale, several seeds
    }


def build_cnn(norm: str, channels: tuple = (16, 32), groups: int = 8, seed: int = 0):
    """The CNN of the module docstring with ``norm`` after every convolution (input (N, 1, 8, 8))."""
    import torch
    from torch import nn

    c1, c2 = channels

    def norm_layer(c):
        if norm == "bn":
            return nn.BatchNorm2d(c)
        if norm == "gn":
            if c % groups:
                raise ValueError(f"groups={groups} must divide every channel count {channels}")
            return nn.GroupNorm(groups, c)
        if norm == "ln":
            return nn.GroupNorm(1, c)
        if norm == "none":
            return nn.Identity()
        raise ValueError(f"norm must be one of none, bn, gn, ln; got {norm!r}")

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), norm_layer(c1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1), norm_layer(c2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c2, c2, 3, padding=1), norm_layer(c2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, 10))


def _error(model, x, y, batch: int | None = None, train_mode: bool = False) -> float:
    """Test error; ``train_mode``: a copy in training mode on consecutive batches of ``batch``."""
    import copy

    import torch

    net = copy.deepcopy(model).train() if train_mode else model.eval()
    batch = batch or len(x)
    wrong = n = 0
    with torch.no_grad():
        for i in range(0, len(x) - batch + 1, batch):
            pred = net(torch.as_tensor(x[i:i + batch])).argmax(1).numpy()
            wrong += int((pred != y[i:i + batch]).sum())
            n += len(pred)
    return wrong / n


class GNResult(Result):
    """``histories["error"][key]``: test error per batch size, key in ``norms`` and the two
    batch-norm re-evaluations; ``histories["loss"][key]``: final training loss per batch size."""

    def plot(self):
        from bnlib.plots.ch06 import gn_cnn_figure

        return gn_cnn_figure(self.config.batch_sizes, self.histories["error"], LABELS,
                             title=f"CNN on 8x8 digits, {self.config.epochs} epochs, "
                                   f"lr {self.config.base_lr:g} x B/32")


def run(config: Config, progress: bool = False) -> GNResult:
    """Train every (norm, batch size) network; test error, and batch norm evaluated three ways."""
    import torch

    from bnlib import data
    from bnlib.torch import recompute_bn_stats
    from bnlib.training import cpu_threads, fit

    if min(config.batch_sizes) < 2:
        raise ValueError("every batch size must be at least 2 (batch norm needs two examples)")
    ds = data.digits8x8(seed=0, flatten=False)
    x_tr, x_te = ds.x_train.astype(np.float32), ds.x_test.astype(np.float32)
    y_tr = ds.y_train
    if config.n_train is not None:
        x_tr, y_tr = x_tr[:config.n_train], y_tr[:config.n_train]
    error = {n: [] for n in config.norms}
    loss = {n: [] for n in config.norms}
    if "bn" in config.norms:
        error.update({"bn_recomputed": [], "bn_batch_stats": []})
    bar = base.progress(total=len(config.norms) * len(config.batch_sizes), desc=NAME, enabled=progress)
    with Timer() as t, cpu_threads(config.threads):
        for norm in config.norms:
            for B in config.batch_sizes:
                model = build_cnn(norm, config.channels, config.groups, seed=1000 + config.seed)
                steps = config.epochs * (len(x_tr) // B)
                hist = fit(model, x_tr, y_tr, steps=steps, batch_size=B, lr=config.base_lr * B / 32,
                           optimizer_kwargs={"momentum": config.momentum},
                           rng=np.random.default_rng([config.seed, B]), eval_every=steps + 1)
                tail = np.asarray(hist.loss[-max(1, len(x_tr) // B):], dtype=float)
                loss[norm].append(round(float(np.mean(tail)), 4))       # mean over the last epoch
                error[norm].append(round(_error(model, x_te, ds.y_test), 4))
                if norm == "bn":
                    error["bn_batch_stats"].append(round(_error(model, x_te, ds.y_test, B, True), 4))
                    batches = [x_tr[i:i + 100] for i in range(0, len(x_tr), 100)]
                    recompute_bn_stats(model, batches)
                    error["bn_recomputed"].append(round(_error(model, x_te, ds.y_test), 4))
                bar.update(1)
        bar.close()
    headline = {"batch_sizes": list(config.batch_sizes), "test_error": error, "final_train_loss": loss,
                "data": ds.source, "n_train": len(x_tr), "n_test": ds.n_test}
    return GNResult(NAME, config, {"error": error, "loss": loss}, headline, {"run_s": t.seconds})
