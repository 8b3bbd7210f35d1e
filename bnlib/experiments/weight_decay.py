"""Weight decay raises the effective learning rate of the scale-invariant weights before batch norm (van Laarhoven 2017; Zhang et al. 2019).

Chapter 7, section "Scale invariance and the effective learning rate".  A
weight vector ``w`` followed by batch norm does not change the loss when
rescaled, so L2 weight decay cannot regularise it; what it does is shrink
``||w||`` and so raise the effective learning rate ``eta / ||w||^2`` (eq.
ch7-eff-lr).  Two copies of a 784-100-100-10 ReLU network with batch norm
(same initial weights and batches) are trained with plain SGD (learning rate
``lr``), one with weight decay ``wd`` on its two hidden weight matrices (the
scale-invariant ones; no decay elsewhere) and one without.  Every
``record_every`` steps we record, over the first hidden layer's units ``j``,
the mean ``||w_j||``, the mean effective learning rate ``lr / ||w_j||^2`` and
the mean angle (radians) by which ``w_j`` turned in one step (averaged over
the steps since the last record).

With weight decay the norm settles where decay and the gradient's growth of
the norm (eq. ch7-norm-growth) balance: ``(1 - eta lambda)^2 ||w||^2 +
eta^2 ||g||^2 = ||w||^2``, so ``eta^2 ||g||^2 ~ 2 eta lambda ||w||^2`` and the
angle turned per step, ``eta ||g|| / ||w||``, tends to ``sqrt(2 eta lambda)``
whatever the data (``predicted_angle``).  Headline per arm (``wd``,
``no_wd``): final norm, final effective learning rate, mean angle per step
over the last ``tail`` share of the steps, test accuracy; the curves at the
record steps (``curve_*``); ``eff_lr_ratio`` = wd / no wd at the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "weight-decay"
ARMS = ("no_wd", "wd")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None
    n_test: int | None = None
    hidden: tuple = (100, 100)
    lr: float = 0.1
    wd: float = 5e-3
    batch_size: int = 64
    steps: int = 3000
    record_every: int = 150
    tail: float = 0.2
    threads: int = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 300, "hidden": (32, 32), "steps": 100, "record_every": 10},
        "book": {"steps": 1500, "record_every": 75},
        "paper": {},
    }


class WeightDecayResult(Result):
    def plot(self):
        from bnlib.plots.ch07 import weight_decay_figure

        h = self.histories
        return weight_decay_figure(
            h["no_wd"]["step"], {a: h[a]["norm"] for a in ARMS}, {a: h[a]["eff_lr"] for a in ARMS},
            {a: h[a]["angle"] for a in ARMS}, predicted_angle=self.headline["predicted_angle"],
            labels={"no_wd": "no weight decay", "wd": f"weight decay {self.config.wd:g}"},
            title=(f"784-{'-'.join(map(str, self.config.hidden))}-10 ReLU with BN, SGD lr {self.config.lr:g}: "
                   f"first hidden layer's {self.config.hidden[0]} weight vectors ({self.headline['data']})"))


def run(config: Config, progress: bool = False) -> WeightDecayResult:
    """Train with and without weight decay on the hidden weights; follow norms, effective lr and angles."""
    import torch

    from bnlib import analysis
    from bnlib.experiments import base
    from bnlib.training import batch_indices

    if config.steps < 1 or config.record_every < 1 or config.batch_size < 2 or config.wd < 0:
        raise ValueError("steps and record_every must be >= 1, batch_size >= 2 and wd >= 0")
    ds, (x, y, xt, yt) = analysis.mnist_tensors(config)
    histories, headline = {}, {}
    with Timer() as t:
        for arm in ARMS:
            wd = config.wd if arm == "wd" else 0.0
            model = analysis.mlp([x.shape[1], *config.hidden, 10], "relu", "bn", seed=config.seed,
                                 device=config.device)
            decayed = {id(lin.weight) for lin in analysis.weight_layers(model)[:-1]}
            w1 = analysis.weight_layers(model)[0].weight
            h = {"step": [], "norm": [], "eff_lr": [], "angle": []}
            angles = []

            def record(step):
                n = w1.detach().norm(dim=1)
                h["step"].append(step)
                h["norm"].append(float(n.mean()))
                h["eff_lr"].append(float((config.lr / n ** 2).mean()))
                h["angle"].append(float(np.mean(angles)) if angles else 0.0)
                angles.clear()

            record(0)
            batches = batch_indices(len(y), config.batch_size, config.steps,
                                    np.random.default_rng([config.seed, 2]))
            for step, idx in enumerate(base.progress(batches, total=config.steps, desc=arm,
                                                     enabled=progress), 1):
                idx = torch.as_tensor(idx, device=x.device)
                before = w1.detach().clone()
                grads, _ = analysis.gradients(model, x[idx], y[idx])
                with torch.no_grad():
                    for p, g in zip(model.parameters(), grads):
                        p.sub_(config.lr * (g + wd * p if id(p) in decayed else g))
                after = w1.detach()
                cos = (before * after).sum(1) / (before.norm(dim=1) * after.norm(dim=1))
                angles.append(float(torch.arccos(cos.clamp(-1.0, 1.0)).mean()))
                if step % config.record_every == 0:
                    record(step)
            h = {k: np.asarray(v) for k, v in h.items()}
            histories[arm] = h
            last = h["step"] >= (1 - config.tail) * config.steps
            headline[arm] = {
                "final_norm": round(float(h["norm"][-1]), 4),
                "final_eff_lr": round(float(h["eff_lr"][-1]), 5),
                "late_angle": round(float(np.mean(h["angle"][last & (h["step"] > 0)])), 5),
                "test_acc": round(analysis.evaluate(model, xt, yt)[1], 4),
                "curve_norm": [round(float(v), 4) for v in h["norm"]],
                "curve_eff_lr": [round(float(v), 5) for v in h["eff_lr"]],
            }
    headline["eff_lr_ratio"] = round(headline["wd"]["final_eff_lr"] / headline["no_wd"]["final_eff_lr"], 3)
    headline["angle_ratio"] = round(headline["wd"]["late_angle"] / headline["no_wd"]["late_angle"], 3)
    headline["predicted_angle"] = round(float(np.sqrt(2 * config.lr * config.wd)), 5)
    headline["record_steps"] = [int(s) for s in histories["wd"]["step"]]
    headline["data"] = ds.source
    return WeightDecayResult(NAME, config, histories, headline, {"total_s": t.seconds})
