"""Ghorbani et al. (2019): without batch norm the loss Hessian grows large outlier eigenvalues; with it they are almost absent.

Chapter 7, section "Later explanations".  Ghorbani, Krishnan and Xiao
estimated the whole Hessian spectrum of image-classification networks during
training and found, in networks without batch norm, a few large isolated
eigenvalues that appear early, with the gradient concentrated in their
eigenspace; in batch-normalised networks both effects are almost absent, and
they come back when batch norm uses population statistics instead of the
mini-batch's.  Here a ReLU MLP without and one with batch norm (same initial
weights and batches) are trained with plain SGD on MNIST digits; at step 0
and after ``steps`` steps we compute, on a fixed probe batch of ``n_probe``
training digits, the ``k`` largest eigenvalues of the Hessian of the loss
with respect to all parameters by Lanczos iteration
(:func:`top_eigenvalues`: ``scipy.sparse.linalg.eigsh`` on Hessian-vector
products from ``torch.autograd``, float64), and the share of the squared
gradient norm that lies in the span of their eigenvectors.  The batch-norm
network is probed in training mode (statistics of the probe batch) and, as
``bn_eval``, in evaluation mode (running statistics, Ghorbani et al.'s
"population statistics").

Headline per network and checkpoint: the top eigenvalue ``lambda_1``, the
``k``-th ``lambda_k``, the outlier ratio ``lambda_1 / lambda_k`` (scale-free:
batch norm's scale invariance makes the absolute eigenvalues depend on the
weight norms), the gradient share in the top-``k`` eigenspace, and the test
accuracy after training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "hessian-spectrum"
NETS = ("plain", "bn", "bn_eval")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = 4000
    n_test: int | None = 1000
    hidden: tuple = (64, 64)
    lr: float = 0.05
    batch_size: int = 64
    steps: int = 600
    n_probe: int = 512
    k: int = 12
    tol: float = 1e-4
    threads: int = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 300, "hidden": (16, 16), "steps": 40, "n_probe": 128, "k": 4},
        "book": {},
        "paper": {"hidden": (64, 64, 64), "steps": 1500, "n_probe": 1024},
    }


class HessianResult(Result):
    """``histories[net][checkpoint]``: the ``k`` top eigenvalues (descending)."""

    def plot(self):
        from bnlib.plots.ch07 import hessian_spectrum_figure

        return hessian_spectrum_figure(
            self.histories, labels={"plain": "no BN", "bn": "BN (batch statistics)",
                                    "bn_eval": "BN (running statistics)"},
            title=(f"top {self.config.k} Hessian eigenvalues, 784-{'-'.join(map(str, self.config.hidden))}-10 "
                   f"ReLU, {self.config.n_probe} probe digits ({self.headline['data']})"))


def _flat(tensors):
    import torch

    return torch.cat([t.reshape(-1) for t in tensors])


def top_eigenvalues(loss_of_params, params, k: int, tol: float = 1e-4, seed: int = 0):
    """The ``k`` largest eigenvalues (descending) and eigenvectors of the Hessian of ``loss_of_params()``.

    Lanczos iteration (``scipy.sparse.linalg.eigsh``, ``which="LA"``) on the
    Hessian-vector product ``v -> d/dtheta <grad L, v>`` from
    ``torch.autograd`` (double backward); ``params`` are float64 tensors.
    Returns ``(eigenvalues, eigenvectors as columns, n_products)``.
    """
    import torch
    from scipy.sparse.linalg import LinearOperator, eigsh

    loss = loss_of_params()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    g = _flat(grads)
    n = g.numel()
    count = [0]

    def hvp(v):
        count[0] += 1
        v = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1), dtype=g.dtype)
        hv = torch.autograd.grad(g, params, grad_outputs=v, retain_graph=True)
        return _flat(hv).detach().numpy()

    v0 = np.random.default_rng(seed).standard_normal(n)
    vals, vecs = eigsh(LinearOperator((n, n), matvec=hvp, dtype=np.float64), k=k, which="LA", tol=tol, v0=v0)
    order = np.argsort(vals)[::-1]
    return vals[order], vecs[:, order], count[0]


def spectrum(model, x, y, k: int, tol: float, train_mode: bool, seed: int = 0) -> dict:
    """Top-``k`` Hessian eigenvalues of the loss on ``(x, y)`` and the gradient's share in their span."""
    import copy

    import torch

    from bnlib import analysis

    m = copy.deepcopy(model).double()
    m.train(train_mode)
    params = list(m.parameters())
    xd = x.double()
    vals, vecs, n_hvp = top_eigenvalues(lambda: analysis.loss_fn(m, xd, y), params, k, tol, seed)
    g = _flat(torch.autograd.grad(analysis.loss_fn(m, xd, y), params)).detach().numpy()
    share = float(np.sum((vecs.T @ g) ** 2) / np.sum(g ** 2))
    return {"eigenvalues": vals, "grad_share": share, "n_hvp": n_hvp}


def run(config: Config, progress: bool = False) -> HessianResult:
    """Train both networks; Hessian spectra at step 0 and at the end."""
    import torch

    from bnlib import analysis

    if config.steps < 0 or config.k < 1 or config.batch_size < 2:
        raise ValueError("steps must be >= 0, k >= 1 and batch_size >= 2")
    ds, (x, y, xt, yt) = analysis.mnist_tensors(config)
    probe = torch.as_tensor(np.random.default_rng([config.seed, 5]).choice(len(y), config.n_probe,
                                                                           replace=False))
    xp, yp = x[probe], y[probe]
    histories, headline = {}, {}
    with Timer() as t:
        for norm in (None, "bn"):
            model = analysis.mlp([x.shape[1], *config.hidden, 10], "relu", norm, seed=config.seed,
                                 device=config.device)
            probes = {}
            for stage in ("init", "trained"):
                if stage == "trained":
                    analysis.sgd_train(model, x, y, _Loop(config), desc=norm or "plain", progress=progress)
                modes = [("bn", True), ("bn_eval", False)] if norm else [("plain", True)]
                for net, train_mode in modes:
                    if net == "bn_eval" and stage == "init":
                        continue        # running statistics are still (0, 1) at step 0
                    probes[(net, stage)] = spectrum(model, xp, yp, config.k, config.tol, train_mode, config.seed)
            acc = analysis.evaluate(model, xt, yt)[1]
            for (net, stage), p in probes.items():
                histories.setdefault(net, {})[stage] = p["eigenvalues"]
                ev = p["eigenvalues"]
                headline.setdefault(net, {})[stage] = {
                    "lambda_1": round(float(ev[0]), 6), "lambda_k": round(float(ev[-1]), 6),
                    "outlier_ratio": round(float(ev[0] / ev[-1]), 4) if ev[-1] > 0 else None,
                    "grad_share_top_k": round(p["grad_share"], 4),
                    "eigenvalues": [round(float(v), 6) for v in ev]}
            headline["bn" if norm else "plain"]["test_acc"] = round(acc, 4)
    headline["k"] = config.k
    headline["data"] = ds.source
    return HessianResult(NAME, config, histories, headline, {"total_s": t.seconds})


class _Loop:
    """The few fields :func:`bnlib.analysis.sgd_train` reads, from a hessian-spectrum config."""

    def __init__(self, config: Config):
        self.steps, self.batch_size, self.lr, self.seed = config.steps, config.batch_size, config.lr, config.seed
        self.eval_every = max(1, config.steps)
