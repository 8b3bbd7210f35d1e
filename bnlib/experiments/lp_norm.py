"""Santurkar et al. (2018), section 3.3: normalising by the L1, L2 or L-infinity spread trains like batch norm.

Chapter 7, section "Other normalisations work too".  Five 784-100-100-100-10
sigmoid MLPs (same initial weights and batches, plain SGD at the same
learning rate) on MNIST digits: no normalisation, standard batch norm
(:class:`bnlib.torch.BatchNorm1d`), and :class:`bnlib.torch.variants.LpBatchNorm1d`
dividing the centred batch by its mean absolute deviation (``l1``), its root
mean square (``l2``, standard BN up to where eps goes) or its largest absolute
deviation (``linf``), eq. (ch7-lp).  None of the Lp variants makes the
layer's output have unit variance, so none "removes internal covariate
shift" in Ioffe and Szegedy's sense.  Recorded: test accuracy every
``eval_every`` steps and the training loss per step.  Paper scale: five hidden layers of 256 units,
10,000 steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "lp-norm"
NORMS = ("plain", "bn", "l1", "l2", "linf")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None
    n_test: int | None = None
    hidden: tuple = (100, 100, 100)
    activation: str = "sigmoid"
    lr: float = 0.1
    batch_size: int = 64
    steps: int = 1500
    eval_every: int = 100
    target_acc: float = 0.9
    threads: int = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "steps": 300, "eval_every": 50, "target_acc": 0.85},
        "book": {"steps": 1500, "eval_every": 100},
        "paper": {"hidden": (256, 256, 256, 256, 256), "steps": 10000, "eval_every": 500},
    }


class LpNormResult(Result):
    """``histories[norm]``: ``eval_step``, ``test_acc``, ``loss`` (per step)."""

    def plot(self):
        from bnlib import plots

        h = self.histories
        return plots.lp_norm_figure(
            {n: (h[n]["eval_step"], h[n]["test_acc"]) for n in NORMS},
            {n: h[n]["loss"] for n in NORMS},
            labels={"plain": "no normalisation", "bn": "BN", "l1": "L1 (mean |dev|)",
                    "l2": "L2 (RMS), dashed: lies on BN", "linf": "L-inf (max |dev|)"},
            title=(f"784-{'-'.join(map(str, self.config.hidden))}-10 {self.config.activation}, "
                   f"SGD lr {self.config.lr:g}, batch {self.config.batch_size} ({self.headline['data']})"))


def run(config: Config, progress: bool = False) -> LpNormResult:
    """Train one network per entry of NORMS on the same batches; record test accuracy."""
    from bnlib import analysis

    if config.steps < 1 or config.eval_every < 1 or config.batch_size < 2:
        raise ValueError("steps and eval_every must be >= 1 and batch_size >= 2")
    ds, (x, y, xt, yt) = analysis.mnist_tensors(config)
    histories, headline, timings = {}, {}, {}
    for name in NORMS:
        model = analysis.mlp([x.shape[1], *config.hidden, 10], config.activation,
                             None if name == "plain" else name, seed=config.seed, device=config.device)
        h = {"eval_step": [0], "test_acc": [analysis.evaluate(model, xt, yt)[1]]}

        def evaluate_now(step):
            h["eval_step"].append(step)
            h["test_acc"].append(analysis.evaluate(model, xt, yt)[1])

        with Timer() as t:
            h["loss"] = analysis.sgd_train(model, x, y, config, on_eval=evaluate_now, desc=name,
                                           progress=progress)
        histories[name] = h = {k: np.asarray(v) for k, v in h.items()}
        headline[name] = analysis.accuracy_headline(h["eval_step"], h["test_acc"], h["loss"],
                                                    config.target_acc, config.steps // 10)
        timings[f"{name}_s"] = t.seconds
    headline["target_acc"] = config.target_acc
    headline["data"] = ds.source
    return LpNormResult(NAME, config, histories, headline, timings)
