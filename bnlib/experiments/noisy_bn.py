"""Santurkar et al. (2018), Figure 2: batch norm with injected non-stationary noise still trains fast.

Chapter 7, section "Noisy batch norm".  Four 784-100-100-100-10 sigmoid MLPs (Ioffe and Szegedy's
Figure-1 network of chapter 4) with the same initial
weights and the same mini-batches are trained with plain SGD on MNIST digits:

* ``plain``: no normalisation;
* ``bn``: batch norm (:class:`bnlib.torch.BatchNorm1d`) before every activation;
* ``noisy``: Santurkar et al.'s "noisy" batch norm (their Algorithm 1,
  :class:`bnlib.torch.variants.PerExampleNoisyBatchNorm1d`, eq. ch7-noisy):
  every batch-norm output of every example is rescaled and shifted by its own
  i.i.d. noise, whose mean and scale are redrawn per unit at every step
  (``n_mu``, ``n_sigma``, ``r_mu``, ``r_sigma``: their values);
* ``noisy_shared``: the simpler variant with one random scale and offset per
  unit and step, shared by the whole batch
  (:class:`bnlib.torch.variants.NoisyBatchNorm1d`, eq. ch7-noisy-shared;
  ``mean_range``, ``scale_low``, ``scale_high``).

Recorded every ``eval_every`` steps: test accuracy (evaluation mode) and the
15/50/85th percentiles, over ``n_probe`` test digits, of the input of the
activation of unit ``unit`` in hidden layer ``layer`` (training mode, the
running statistics and noise generators untouched); every step: the training
loss.  Headline: final/best test accuracy, the first step reaching
``target_acc`` and how much the unit's distribution moves between probes.

Santurkar et al. used VGG on CIFAR-10 (not available offline); here MLPs
on the offline digits of :func:`bnlib.data.mnist` (paper scale: five hidden
layers of 256 sigmoid units, 10,000 steps).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "noisy-bn"
KINDS = ("plain", "bn", "noisy", "noisy_shared")
LABELS = {"plain": "no BN", "bn": "BN", "noisy": "noisy BN", "noisy_shared": "noisy BN, shared"}
PERCENTILES = (15, 50, 85)


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None      # None: every training digit of bnlib.data.mnist
    n_test: int | None = None
    hidden: tuple = (100, 100, 100)
    activation: str = "sigmoid"
    lr: float = 0.1
    batch_size: int = 64
    steps: int = 3000
    eval_every: int = 100
    layer: int = -1                 # which hidden layer to follow (-1: the last)
    unit: int = 0
    n_probe: int = 500              # test digits in the distribution probe
    n_mu: float = 0.5               # per-example noise (Santurkar et al.'s Algorithm 1 and values)
    n_sigma: float = 1.25
    r_mu: float = 0.1
    r_sigma: float = 0.1
    mean_range: float = 1.0         # shared noise: offset ~ U(-mean_range, mean_range) per unit and step
    scale_low: float = 0.5          # shared noise: scale ~ U(scale_low, scale_high)
    scale_high: float = 2.0
    target_acc: float = 0.9
    threads: int = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "steps": 400, "eval_every": 50, "n_probe": 200,
                  "target_acc": 0.85},
        "book": {"steps": 2000, "eval_every": 100},
        "paper": {"hidden": (256, 256, 256, 256, 256), "steps": 10000, "eval_every": 250},
    }


def activation_inputs(model, x, layer: int = -1):
    """Inputs of the activation of hidden layer ``layer`` for ``x`` (training mode, state untouched)."""
    import torch
    from torch import nn

    from bnlib.analysis import _frozen_state

    acts = [k for k, m in enumerate(model) if isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Identity))]
    k = acts[layer]
    with _frozen_state(model), torch.no_grad():
        was = model.training
        model.train()
        z = model[:k](x)
        model.train(was)
    return z


class NoisyBnResult(Result):
    """``histories[kind]``: ``eval_step``, ``test_acc``, ``loss`` (per step), ``pct`` (probes x 3)."""

    def plot(self):
        from bnlib import plots

        h = self.histories
        return plots.noisy_bn_figure(
            {k: (h[k]["eval_step"], h[k]["test_acc"]) for k in KINDS},
            {k: (h[k]["eval_step"], h[k]["pct"]) for k in KINDS},
            labels=LABELS,
            percentiles=PERCENTILES,
            title=(f"784-{'-'.join(map(str, self.config.hidden))}-10 {self.config.activation}, "
                   f"SGD lr {self.config.lr:g}, batch {self.config.batch_size} "
                   f"({self.headline['data']}); unit {self.config.unit} of hidden layer "
                   f"{self.config.layer % len(self.config.hidden) + 1}"))


def _distribution_motion(pct: np.ndarray) -> dict:
    spread = pct[:, 2] - pct[:, 0]
    return {
        # mean |change| of the three percentiles between consecutive probes (units of the input)
        "shift": float(np.mean(np.abs(np.diff(pct, axis=0)))),
        # mean |change of log(15-85 spread)| between consecutive probes
        "spread_jump": float(np.mean(np.abs(np.diff(np.log(np.maximum(spread, 1e-12)))))),
        "final_spread": float(spread[-1]),
    }


def run(config: Config, progress: bool = False) -> NoisyBnResult:
    """Train the three networks on the same batches; record accuracy and one unit's percentiles."""
    from bnlib import analysis

    if config.steps < 1 or config.eval_every < 1 or config.batch_size < 2:
        raise ValueError("steps and eval_every must be >= 1 and batch_size >= 2")
    ds, (x, y, xt, yt) = analysis.mnist_tensors(config)
    probe = xt[: config.n_probe]
    sizes = [x.shape[1], *config.hidden, 10]
    noise = {"n_mu": config.n_mu, "n_sigma": config.n_sigma, "r_mu": config.r_mu,
             "r_sigma": config.r_sigma}
    shared = {"mean_range": config.mean_range, "scale_low": config.scale_low,
              "scale_high": config.scale_high}
    histories, headline, timings = {}, {}, {}
    for kind in KINDS:
        norm = None if kind == "plain" else kind
        model = analysis.mlp(sizes, config.activation, norm, seed=config.seed, device=config.device,
                             noise=noise, shared_noise=shared)
        model.train()
        h = {"eval_step": [], "test_acc": [], "loss": [], "pct": []}

        def probe_now(step):
            z = activation_inputs(model, probe, config.layer)[:, config.unit].cpu().numpy()
            h["eval_step"].append(step)
            h["pct"].append(np.percentile(z, PERCENTILES))
            h["test_acc"].append(analysis.evaluate(model, xt, yt)[1])

        with Timer() as t:
            probe_now(0)
            h["loss"] = analysis.sgd_train(model, x, y, config, on_eval=probe_now, desc=kind,
                                           progress=progress)
        histories[kind] = {k: np.asarray(v) for k, v in h.items()}
        headline[kind] = {
            **analysis.accuracy_headline(histories[kind]["eval_step"], histories[kind]["test_acc"],
                                         h["loss"], config.target_acc, config.eval_every),
            **{k: round(v, 4) for k, v in _distribution_motion(histories[kind]["pct"]).items()},
        }
        timings[f"{kind}_s"] = t.seconds
    headline["target_acc"] = config.target_acc
    headline["data"] = ds.source
    headline["n_train"] = ds.n_train
    return NoisyBnResult(NAME, config, histories, headline, timings)
