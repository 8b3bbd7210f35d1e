"""Santurkar et al. (2018), Figure 4: batch norm makes the loss and its gradient change less along the gradient.

Chapter 7, section "A smoother landscape".  A network without and one with
batch norm (same initial weights and batches, plain SGD at the same
learning rate) are trained on MNIST digits.  Every ``probe_every`` steps, at
the current parameters ``theta`` and on the current mini-batch, we take the
gradient ``g`` and move to ``theta - eta g`` for each step size ``eta`` in
``step_sizes`` (:func:`bnlib.analysis.landscape_probe`), recording

* (a) the loss there (eq. ch7-loss-var): how much it varies over ``eta``;
* (b) ``||grad(theta - eta g) - g||``, Santurkar et al.'s "gradient
  predictiveness" (eq. ch7-grad-pred): small means the gradient at ``theta``
  still describes the landscape a step away;
* (c) the "effective beta-smoothness" ``max_eta ||grad(theta - eta g) - g|| /
  ||eta g||`` (eq. ch7-beta).

Headline per network (``early_*``: only the probes before step
``early_steps``, while both networks are still far from fitting the training
set; at paper scale they fit it exactly later on, and the medians over all
probes then mostly compare two flat, converged landscapes): medians over the probes of the loss range, of the
largest gradient change and of the effective beta (also per step size); the
share of probes where a step along the gradient raises the loss by more than
5%; the ratios plain / BN.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "landscape"
NETS = ("plain", "bn")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None
    n_test: int | None = None
    hidden: tuple = (100, 100, 100, 100)
    activation: str = "relu"
    lr: float = 0.05
    step_sizes: tuple = (0.025, 0.05, 0.1, 0.2, 0.4)
    batch_size: int = 64
    steps: int = 1500
    probe_every: int = 50
    early_steps: int = 1500         # the "early" headline numbers use the probes before this step
    threads: int = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "steps": 200, "probe_every": 20},
        "book": {"steps": 1500, "probe_every": 50},
        "paper": {"hidden": (256,) * 6, "steps": 10000, "probe_every": 200},
    }


class LandscapeResult(Result):
    """``histories[net]``: ``probe_step``; ``loss``, ``grad_change``, ``beta`` (probes x step sizes);
    ``loss0``, ``grad_norm`` per probe; ``train_loss`` per step."""

    def plot(self):
        from bnlib import plots

        return plots.landscape_figure(
            {n: self.histories[n] for n in NETS}, labels={"plain": "no BN", "bn": "BN"},
            title=(f"along the gradient, step sizes {min(self.config.step_sizes):g} to "
                   f"{max(self.config.step_sizes):g}; 784-{'-'.join(map(str, self.config.hidden))}-10 "
                   f"{self.config.activation}, SGD lr {self.config.lr:g} ({self.headline['data']})"))


def run(config: Config, progress: bool = False) -> LandscapeResult:
    """Train both networks; probe the landscape along the gradient every ``probe_every`` steps."""
    import torch

    from bnlib import analysis
    from bnlib.training import batch_indices

    if config.steps < 1 or config.probe_every < 1 or config.batch_size < 2:
        raise ValueError("steps and probe_every must be >= 1 and batch_size >= 2")
    if min(config.step_sizes) <= 0:
        raise ValueError(f"step_sizes must be positive; got {config.step_sizes}")
    ds, (x, y, xt, yt) = analysis.mnist_tensors(config)
    histories, headline, timings = {}, {}, {}
    for name in NETS:
        model = analysis.mlp([x.shape[1], *config.hidden, 10], config.activation,
                             None if name == "plain" else "bn", seed=config.seed, device=config.device)
        h = {"probe_step": [], "loss": [], "grad_change": [], "beta": [], "loss0": [],
             "grad_norm": [], "train_loss": []}
        rng = np.random.default_rng([config.seed, 2])
        with Timer() as t:
            batches = batch_indices(len(y), config.batch_size, config.steps, rng)
            for step, idx in enumerate(base.progress(batches, total=config.steps, desc=name,
                                                     enabled=progress)):
                idx = torch.as_tensor(idx, device=x.device)
                xb, yb = x[idx], y[idx]
                if step % config.probe_every == 0:
                    p = analysis.landscape_probe(model, xb, yb, config.step_sizes)
                    h["probe_step"].append(step)
                    for k in ("loss", "grad_change", "beta", "loss0", "grad_norm"):
                        h[k].append(p[k])
                grads, loss = analysis.gradients(model, xb, yb)
                analysis.sgd_step(model, grads, config.lr)
                h["train_loss"].append(loss)
        h = {k: np.asarray(v) for k, v in h.items()}
        histories[name] = h
        _, acc = analysis.evaluate(model, xt, yt)
        all_loss = np.concatenate([h["loss0"][:, None], h["loss"]], axis=1)
        loss_range = all_loss.max(axis=1) - all_loss.min(axis=1)
        early = h["probe_step"] < config.early_steps
        headline[name] = {
            "early_median_loss_range": round(float(np.median(loss_range[early])), 4),
            "early_median_max_grad_change": round(float(np.median(h["grad_change"][early].max(axis=1))), 4),
            "early_median_beta": round(float(np.median(h["beta"][early].max(axis=1))), 4),
            "median_loss_range": round(float(np.median(loss_range)), 4),
            "median_max_grad_change": round(float(np.median(h["grad_change"].max(axis=1))), 4),
            "median_beta": round(float(np.median(h["beta"].max(axis=1))), 4),
            "max_beta": round(float(h["beta"].max()), 4),
            "median_grad_norm": round(float(np.median(h["grad_norm"])), 4),
            # per step size: median over probes of ||grad change|| / ||eta g||
            "median_beta_per_step": [round(float(v), 3) for v in np.median(h["beta"], axis=0)],
            # share of probes where some step along -g raises the loss by more than 5%
            "frac_probes_loss_rises": round(float(np.mean(h["loss"].max(axis=1) > 1.05 * h["loss0"])), 4),
            "final_train_loss": round(float(np.mean(h["train_loss"][-max(1, config.steps // 10):])), 4),
            "test_acc": round(acc, 4),
        }
        timings[f"{name}_s"] = t.seconds
    headline["ratio_plain_to_bn"] = {
        k: round(headline["plain"][k] / max(headline["bn"][k], 1e-12), 2)
        for k in ("median_loss_range", "median_max_grad_change", "median_beta",
                  "early_median_loss_range", "early_median_max_grad_change", "early_median_beta")}
    headline["data"] = ds.source
    return LandscapeResult(NAME, config, histories, headline, timings)
