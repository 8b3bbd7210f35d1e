"""Normalisation-free training: SkipInit (De & Smith 2020) and scaled weight standardisation with AGC (Brock et al. 2021) against batch norm.

Chapter 7, section "Later explanations".  If much of batch norm's benefit in
residual networks is that it down-weights the residual branches at
initialisation (De and Smith) and keeps the signal's scale under control,
then a residual network without any normalisation should train as well once
that is done by hand.  A residual MLP on MNIST digits, ``784 -> width``
then ``depth`` blocks ``x <- x + branch(x)`` with ``branch(x) = W relu(.)``
and a linear read-out, is trained with SGD (momentum ``momentum``) in five
versions, all from the same draw of the weights and on the same batches:

* ``plain``: no normalisation (Kaiming init: the signal's variance doubles
  at every block);
* ``bn``: pre-activation batch norm in every branch, ``W relu(BN(x))``;
* ``skipinit``: no normalisation, the branch multiplied by a learnable
  scalar ``alpha`` that starts at 0 (SkipInit);
* ``nf``: Brock et al.'s normaliser-free recipe for MLPs: ``x <- x + alpha
  * W_hat relu(x / beta_l)`` with ``alpha = nf_alpha``, ``beta_l`` the
  expected standard deviation of ``x`` at block ``l`` (``sqrt(1 + l
  alpha^2)``), ``W_hat`` a *scaled weight standardisation* of ``W``
  (zero mean and ``gain / sqrt(fan_in)`` std per output unit, ``gain =
  sqrt(2 / (1 - 1/pi))`` for ReLU, learnable gain per unit);
* ``nf_agc``: ``nf`` plus *adaptive gradient clipping*: every unit's
  gradient is scaled down to at most ``clip`` times the norm of its weights
  (the read-out layer is not clipped).

Headline per version: the final training loss (mean of the last 10% of
steps, ``None`` where the loss became non-finite), the best and final test
accuracy and ``diverged`` (1 if the loss became non-finite).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "nf-training"
KINDS = ("plain", "bn", "skipinit", "nf", "nf_agc")
LABELS = {"plain": "no normalisation", "bn": "batch norm", "skipinit": "SkipInit",
          "nf": "scaled WS (NF)", "nf_agc": "scaled WS + AGC"}


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None
    n_test: int | None = None
    width: int = 128
    depth: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 64
    steps: int = 1000
    eval_every: int = 100
    nf_alpha: float = 0.2
    clip: float = 0.1
    threads: int = 1

    SCALES = {
        "smoke": {"n_train": 500, "n_test": 200, "width": 32, "depth": 3, "steps": 40, "eval_every": 20},
        "book": {"depth": 8, "steps": 600},
        "paper": {},
    }


def _modules():
    import torch
    from torch import nn

    from bnlib.torch.modules import BatchNorm1d

    class WSLinear(nn.Linear):
        """Scaled weight standardisation: ``W_hat = g * (W - mean) / (std * sqrt(fan_in)) * gain``."""

        GAIN = math.sqrt(2.0 / (1.0 - 1.0 / math.pi))     # ReLU: E[relu(z)^2] - E[relu(z)]^2 for z ~ N(0,1)

        def __init__(self, n_in, n_out):
            super().__init__(n_in, n_out)
            self.g = nn.Parameter(torch.ones(n_out, 1))

        def forward(self, x):
            w = self.weight
            mu = w.mean(dim=1, keepdim=True)
            var = w.var(dim=1, unbiased=False, keepdim=True)
            w_hat = self.g * self.GAIN * (w - mu) / torch.sqrt(var * w.shape[1] + 1e-4)
            return nn.functional.linear(x, w_hat, self.bias)

    class Block(nn.Module):
        def __init__(self, width, kind, index, alpha):
            super().__init__()
            self.kind = kind
            self.lin = WSLinear(width, width) if kind.startswith("nf") else nn.Linear(width, width)
            self.bn = BatchNorm1d(width) if kind == "bn" else None
            if kind == "skipinit":
                self.alpha = nn.Parameter(torch.zeros(()))
            self.nf_alpha = alpha
            self.beta = math.sqrt(1.0 + index * alpha ** 2)

        def forward(self, x):
            if self.kind == "bn":
                return x + self.lin(torch.relu(self.bn(x)))
            if self.kind == "skipinit":
                return x + self.alpha * self.lin(torch.relu(x))
            if self.kind.startswith("nf"):
                return x + self.nf_alpha * self.lin(torch.relu(x / self.beta))
            return x + self.lin(torch.relu(x))

    return Block


def resnet_mlp(kind: str, n_in: int, width: int, depth: int, seed: int, alpha: float = 0.2):
    """The residual MLP of this experiment; the same ``seed`` gives the same ``Linear`` weights for every ``kind``."""
    import torch
    from torch import nn

    Block = _modules()
    gen = torch.Generator().manual_seed(int(seed))
    stem, head = nn.Linear(n_in, width), nn.Linear(width, 10)
    blocks = [Block(width, kind, i, alpha) for i in range(depth)]
    with torch.no_grad():
        for lin, fan in [(stem, n_in)] + [(b.lin, width) for b in blocks] + [(head, width)]:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * math.sqrt(2.0 / fan))
            lin.bias.zero_()
        head.weight.mul_(math.sqrt(0.5))       # the read-out is linear: LeCun scale
    return nn.Sequential(stem, *blocks, head)


def adaptive_clip_(model, clip: float) -> None:
    """Brock et al.'s AGC, unit-wise: scale each row of each gradient to at most ``clip * max(||w_row||, 1e-3)``."""
    import torch
    from torch import nn

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin in linears[:-1]:                         # not the read-out layer
            for p in (lin.weight, lin.bias):
                if p.grad is None:
                    continue
                w = p.detach().reshape(p.shape[0], -1)
                g = p.grad.reshape(p.shape[0], -1)
                w_norm = w.norm(dim=1, keepdim=True).clamp_min(1e-3)
                g_norm = g.norm(dim=1, keepdim=True).clamp_min(1e-6)
                g.mul_(torch.clamp(clip * w_norm / g_norm, max=1.0))


class NfResult(Result):
    def plot(self):
        from bnlib.plots.ch07 import nf_training_figure

        return nf_training_figure(
            {k: (self.histories[k]["eval_step"], self.histories[k]["test_acc"]) for k in KINDS},
            {k: self.histories[k]["loss"] for k in KINDS}, labels=LABELS,
            title=(f"residual MLP, {self.config.depth} blocks of {self.config.width}, SGD lr {self.config.lr:g} "
                   f"momentum {self.config.momentum:g}, batch {self.config.batch_size} ({self.headline['data']})"))


def run(config: Config, progress: bool = False) -> NfResult:
    """Train the five versions on the same batches; test accuracy every ``eval_every`` steps."""
    import torch

    from bnlib import analysis
    from bnlib.experiments import base
    from bnlib.training import batch_indices

    if config.steps < 1 or config.eval_every < 1 or config.batch_size < 2:
        raise ValueError("steps and eval_every must be >= 1 and batch_size >= 2")
    ds, (x, y, xt, yt) = analysis.mnist_tensors(config)
    histories, headline, timings = {}, {}, {}
    for kind in KINDS:
        model = resnet_mlp(kind, x.shape[1], config.width, config.depth, config.seed, config.nf_alpha)
        model.to(config.device).train()
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
        h = {"eval_step": [], "test_acc": [], "loss": []}
        diverged = False
        batches = batch_indices(len(y), config.batch_size, config.steps, np.random.default_rng([config.seed, 2]))
        with Timer() as t:
            for step, idx in enumerate(base.progress(batches, total=config.steps, desc=kind,
                                                     enabled=progress), 1):
                idx = torch.as_tensor(idx, device=x.device)
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                if not torch.isfinite(loss):
                    diverged = True
                    break
                loss.backward()
                if kind == "nf_agc":
                    adaptive_clip_(model, config.clip)
                opt.step()
                h["loss"].append(float(loss.detach()))
                if step % config.eval_every == 0:
                    h["eval_step"].append(step)
                    h["test_acc"].append(analysis.evaluate(model, xt, yt)[1])
        if diverged:
            h["eval_step"].append(step)
            h["test_acc"].append(0.1)
        histories[kind] = {k: np.asarray(v, dtype=float) for k, v in h.items()}
        acc = histories[kind]["test_acc"]
        tail = h["loss"][-max(1, config.steps // 10):]
        headline[kind] = {
            "final_train_loss": None if diverged else round(float(np.mean(tail)), 4),
            "best_test_acc": round(float(acc.max()), 4) if len(acc) else None,
            "final_test_acc": None if diverged else round(float(acc[-1]), 4),
            "diverged": int(diverged),
            # test accuracy at every evaluation (chance, 0.1, after a divergence), for the stored figure
            "curve_test_acc": [round(float(a), 4) for a in acc] + [0.1] * (config.steps // config.eval_every - len(acc))}
        timings[f"{kind}_s"] = t.seconds
    headline["data"] = ds.source
    return NfResult(NAME, config, histories, headline, timings)
