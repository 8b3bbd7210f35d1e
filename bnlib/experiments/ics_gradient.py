"""Santurkar et al. (2018), Figure 3: internal covariate shift measured as gradient change, with and without BN.

Chapter 7, section "Internal covariate shift as gradient change".  The
optimisation view of internal covariate shift (eq. ch7-ics): for weight layer
``i`` take its gradient ``G`` on a mini-batch, then update every *earlier*
layer by its SGD step and recompute the gradient ``G'`` of layer ``i`` on the
same batch.  If the earlier layers' updates changed what layer ``i`` should
do, ``G'`` differs from ``G``: ``||G - G'||`` is large and ``cos(G, G')`` is
below 1.  :func:`bnlib.analysis.gradient_change` computes both for every
layer.

Two pairs of networks, each pair with the same initial weights and batches,
trained with plain SGD on MNIST digits, are probed every ``probe_every`` steps:

* ``plain`` / ``bn``: 784-100-100-100-100-10 ReLU MLPs without and with
  batch norm before each ReLU (SGD learning rate ``lr``);
* ``linear_plain`` / ``linear_bn``: deep linear networks (no activation) of
  ``linear_depth`` hidden layers, Santurkar et al.'s "DLN".

Headline per network: the median over probes and layers of ``||G - G'||``,
of ``||G - G'|| / ||G||`` and of ``cos(G, G')``, per layer too, and the
final training loss and test accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "ics-gradient"
NETS = ("plain", "bn", "linear_plain", "linear_bn")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None
    n_test: int | None = None
    hidden: tuple = (100, 100, 100, 100)
    activation: str = "relu"
    lr: float = 0.05
    linear_depth: int = 6           # hidden layers of the deep linear network (0: skip it)
    linear_width: int = 100
    linear_lr: float = 0.01
    batch_size: int = 64
    steps: int = 1500
    probe_every: int = 50
    threads: int = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "steps": 200, "probe_every": 20,
                  "linear_depth": 4},
        "book": {"steps": 1500, "probe_every": 50},
        "paper": {"hidden": (256,) * 6, "steps": 6000, "probe_every": 200, "linear_depth": 12},
    }


class IcsGradientResult(Result):
    """``histories[net]``: ``probe_step``, ``l2``, ``rel``, ``cos`` (probes x layers), ``loss`` per step."""

    def plot(self):
        from bnlib import plots

        nets = [n for n in NETS if n in self.histories]
        return plots.ics_gradient_figure(
            {n: self.histories[n] for n in nets},
            labels={"plain": "no BN", "bn": "BN", "linear_plain": "deep linear, no BN",
                    "linear_bn": "deep linear, BN"},
            title=(f"gradient change of each layer after the earlier layers' SGD step "
                   f"({self.headline['data']})"))


def _train_and_probe(model, x, y, config: Config, lr: float, rng, desc: str, progress: bool) -> dict:
    import torch

    from bnlib import analysis
    from bnlib.training import batch_indices

    h = {"probe_step": [], "l2": [], "rel": [], "cos": [], "grad_norm": [], "loss": []}
    batches = batch_indices(len(y), config.batch_size, config.steps, rng)
    for step, idx in enumerate(base.progress(batches, total=config.steps, desc=desc,
                                             enabled=progress)):
        idx = torch.as_tensor(idx, device=x.device)
        xb, yb = x[idx], y[idx]
        if step % config.probe_every == 0:
            g = analysis.gradient_change(model, xb, yb, lr)
            h["probe_step"].append(step)
            for k in ("l2", "rel", "cos", "grad_norm"):
                h[k].append(g[k])
        grads, loss = analysis.gradients(model, xb, yb)
        analysis.sgd_step(model, grads, lr)
        h["loss"].append(loss)
    return {k: np.asarray(v) for k, v in h.items()}


def run(config: Config, progress: bool = False) -> IcsGradientResult:
    """Train each network of NETS, measuring eq. (ch7-ics) at every layer every ``probe_every`` steps."""
    from bnlib import analysis

    if config.steps < 1 or config.probe_every < 1 or config.batch_size < 2:
        raise ValueError("steps and probe_every must be >= 1 and batch_size >= 2")
    ds, (x, y, xt, yt) = analysis.mnist_tensors(config)
    nets = {"plain": (config.hidden, config.activation, None, config.lr),
            "bn": (config.hidden, config.activation, "bn", config.lr)}
    if config.linear_depth > 0:
        deep = (config.linear_width,) * config.linear_depth
        nets["linear_plain"] = (deep, "linear", None, config.linear_lr)
        nets["linear_bn"] = (deep, "linear", "bn", config.linear_lr)
    histories, headline, timings = {}, {}, {}
    for name, (hidden, act, norm, lr) in nets.items():
        model = analysis.mlp([x.shape[1], *hidden, 10], act, norm, seed=config.seed,
                             device=config.device)
        with Timer() as t:
            h = _train_and_probe(model, x, y, config, lr, np.random.default_rng([config.seed, 2]),
                                 name, progress)
        histories[name] = h
        _, acc = analysis.evaluate(model, xt, yt)
        n_avg = max(1, min(100, config.steps // 5))
        headline[name] = {
            "lr": lr,
            "median_l2": round(float(np.median(h["l2"][:, 1:])), 5),
            "median_rel": round(float(np.median(h["rel"][:, 1:])), 4),
            "median_cos": round(float(np.median(h["cos"][:, 1:])), 4),
            "median_grad_norm": round(float(np.median(h["grad_norm"][:, 1:])), 5),
            "per_layer_l2": [round(float(v), 5) for v in np.median(h["l2"], axis=0)],
            "per_layer_cos": [round(float(v), 4) for v in np.median(h["cos"], axis=0)],
            "final_train_loss": round(float(np.mean(h["loss"][-n_avg:])), 4),
            "test_acc": round(acc, 4),
        }
        timings[f"{name}_s"] = t.seconds
    headline["data"] = ds.source
    headline["note"] = "layer 1 has no earlier layer: its G' = G; medians are over layers 2..L"
    return IcsGradientResult(NAME, config, histories, headline, timings)
