"""Yang et al. (2019): batch norm makes gradients explode with depth at initialisation (no skip connections).

Chapter 7, section "Later explanations".  Yang, Pennington, Rao, Sohl-Dickstein
and Schoenholz's mean-field theory of batch norm predicts that in a deep
fully connected network *without* skip connections, batch norm makes the
gradient grow exponentially from the output back to the input at
initialisation, whatever the activation or the initial weight variance.  We
build ReLU MLPs of ``depths`` hidden layers of ``width`` units (Kaiming-normal
weights, the same draw with and without batch norm before each ReLU), take
``n_batches`` mini-batches of ``batch_size`` MNIST digits, and record, before
any training step,

* ``first_layer``: the norm of the gradient of the cross-entropy loss with
  respect to the first weight matrix, per depth (mean over the batches);
* ``profile``: for the deepest network, the gradient norm of every weight
  layer, first to last.

Headline per network (``plain``, ``bn``): the first layer's gradient norm at
each depth, the per-layer growth factor ``exp(slope)`` of a straight-line fit
of ``log ||grad W_1||`` against depth, and the ratio of the first to the last
hidden layer's gradient norm in the deepest network; ``bn_over_plain`` at the
largest depth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "grad-explosion"
NETS = ("plain", "bn")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = 2000
    n_test: int | None = 100
    depths: tuple = (2, 4, 8, 16, 32)
    width: int = 128
    batch_size: int = 64
    n_batches: int = 4
    threads: int = 1

    SCALES = {
        "smoke": {"depths": (2, 4, 8), "width": 32, "n_batches": 2},
        "book": {"depths": (2, 4, 8, 16, 32)},
        "paper": {"depths": (2, 4, 8, 16, 32, 50), "width": 256, "n_batches": 8},
    }


class GradExplosionResult(Result):
    """``histories[net]``: ``first_layer`` (per depth), ``profile`` (per layer of the deepest network)."""

    def plot(self):
        from bnlib.plots.ch07 import grad_explosion_figure

        return grad_explosion_figure(
            self.config.depths, {n: self.histories[n]["first_layer"] for n in NETS},
            {n: self.histories[n]["profile"] for n in NETS}, labels={"plain": "no BN", "bn": "BN"},
            title=(f"ReLU MLPs of width {self.config.width} at initialisation, batches of "
                   f"{self.config.batch_size} ({self.headline['data']})"))


def layer_grad_norms(model, x, y) -> np.ndarray:
    """Norm of the loss gradient w.r.t. every weight matrix of ``model`` (first to last)."""
    import torch

    from bnlib import analysis

    lins = analysis.weight_layers(model)
    loss = analysis.loss_fn(model, x, y)
    grads = torch.autograd.grad(loss, [lin.weight for lin in lins])
    return np.array([float(torch.linalg.norm(g)) for g in grads])


def run(config: Config, progress: bool = False) -> GradExplosionResult:
    """Gradient norms at initialisation for every depth, with and without batch norm."""
    import torch

    from bnlib import analysis

    if min(config.depths) < 1 or config.batch_size < 2 or config.n_batches < 1:
        raise ValueError("depths must be >= 1, batch_size >= 2 and n_batches >= 1")
    ds, (x, y, _, _) = analysis.mnist_tensors(config)
    rng = np.random.default_rng([config.seed, 3])
    batches = [torch.as_tensor(rng.choice(len(y), config.batch_size, replace=False))
               for _ in range(config.n_batches)]
    histories, headline = {}, {}
    depths = np.asarray(config.depths, dtype=float)
    with Timer() as t:
        for net in NETS:
            first, profile = [], None
            for depth in config.depths:
                model = analysis.mlp([x.shape[1], *([config.width] * depth), 10], "relu",
                                     "bn" if net == "bn" else None, seed=config.seed, device=config.device)
                model.train()
                norms = np.mean([layer_grad_norms(model, x[i], y[i]) for i in batches], axis=0)
                first.append(norms[0])
                if depth == max(config.depths):
                    profile = norms
            first = np.asarray(first)
            slope = np.polyfit(depths, np.log(first), 1)[0]
            histories[net] = {"first_layer": first, "profile": profile}
            headline[net] = {
                "first_layer_grad": {str(d): round(float(v), 6) for d, v in zip(config.depths, first)},
                "growth_per_layer": round(float(np.exp(slope)), 4),
                "first_over_last_hidden": round(float(profile[0] / profile[-2]), 4),
                "profile_deepest": [round(float(v), 6) for v in profile],
            }
    headline["bn_over_plain_deepest"] = round(float(histories["bn"]["first_layer"][-1]
                                                    / histories["plain"]["first_layer"][-1]), 4)
    headline["data"] = ds.source
    return GradExplosionResult(NAME, config, histories, headline, {"total_s": t.seconds})
