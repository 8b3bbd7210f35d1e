"""Probes of *why* batch norm works (chapter 7).

* :func:`bn_linear_weight_grad` and :func:`scale_invariance_report` (NumPy):
  the gradient of a loss through ``BN(x W)`` with respect to ``W`` is
  orthogonal to every column of ``W`` and scales as ``1/c`` when ``W`` is
  multiplied by ``c > 0`` (eqs. ch7-scale-inv to ch7-grad-scale).
* :func:`mlp` (PyTorch): the multilayer perceptrons of the chapter's
  experiments, with no normalisation, batch norm or one of the variants of
  :mod:`bnlib.torch.variants` before each activation.
* :func:`sgd_train` and :func:`accuracy_headline`: the training loop and the
  headline numbers the chapter's experiments share.
* :func:`sgd_step`, :func:`gradients`, :func:`gradient_change` (Santurkar et
  al.'s optimisation view of internal covariate shift, eq. ch7-ics) and
  :func:`landscape_probe` (loss and gradient along the gradient direction, eqs.
  ch7-loss-var to ch7-beta).

The NumPy functions need only NumPy; the others import PyTorch when called, so
``import bnlib.analysis`` stays free of it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from bnlib.scratch.functional import batchnorm_backward, batchnorm_forward

NORMS = (None, "bn", "noisy", "noisy_shared", "l1", "l2", "linf")


# --------------------------------------------------------------------------- scale invariance (NumPy)

def bn_linear_weight_grad(W: np.ndarray, x: np.ndarray, dy: np.ndarray, gamma=None, beta=None,
                          eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Output ``y = BN(x @ W)`` and ``dL/dW`` for the upstream gradient ``dy = dL/dy``.

    ``W`` has the ``bnlib.scratch.Linear`` layout ``(n_in, n_out)``, ``x`` is
    ``(N, n_in)``; training-mode batch norm (chapter 3) with ``gamma`` ones and
    ``beta`` zeros by default.  Eq. (ch7-grad-orth): ``W[:, k] . dW[:, k] = 0``
    for every unit ``k`` (up to ``eps``).
    """
    n_out = W.shape[1]
    gamma = np.ones(n_out) if gamma is None else gamma
    beta = np.zeros(n_out) if beta is None else beta
    z = x @ W
    y, cache = batchnorm_forward(z, gamma, beta, eps)
    dz, _, _ = batchnorm_backward(dy, cache)
    return y, x.T @ dz


def scale_invariance_report(W: np.ndarray, x: np.ndarray, dy: np.ndarray,
                            scales: Sequence[float] = (0.1, 1.0, 10.0), eps: float = 0.0) -> dict:
    """Check BN(c x W) = BN(x W), W . dW = 0 and dW(cW) = dW(W) / c for each ``c`` in ``scales``.

    With ``eps=0`` the identities are exact up to rounding.  Returns the
    largest output difference, the largest ``|cos(W[:, k], dW[:, k])|`` and
    the largest relative deviation of ``c * dW(cW)`` from ``dW(W)``.
    """
    y1, g1 = bn_linear_weight_grad(W, x, dy, eps=eps)
    out = {"max_output_diff": 0.0, "max_abs_cos": 0.0, "max_grad_scaling_error": 0.0}
    for c in scales:
        yc, gc = bn_linear_weight_grad(c * W, x, dy, eps=eps)
        out["max_output_diff"] = max(out["max_output_diff"], float(np.abs(yc - y1).max()))
        cos = np.sum(c * W * gc, axis=0) / (np.linalg.norm(c * W, axis=0) * np.linalg.norm(gc, axis=0))
        out["max_abs_cos"] = max(out["max_abs_cos"], float(np.abs(cos).max()))
        err = np.abs(c * gc - g1).max() / np.abs(g1).max()
        out["max_grad_scaling_error"] = max(out["max_grad_scaling_error"], float(err))
    return out


# --------------------------------------------------------------------------- PyTorch networks

def mlp(sizes: Sequence[int], activation: str = "relu", norm: str | None = None, seed: int = 0,
        device: str = "cpu", dtype=None, noise: dict | None = None, shared_noise: dict | None = None):
    """A ``torch.nn.Sequential`` MLP: ``Linear -> [norm] -> activation`` per hidden layer, then ``Linear``.

    ``norm``: ``None``, ``"bn"`` (:class:`bnlib.torch.BatchNorm1d`),
    ``"noisy"`` (Santurkar et al.'s per-example noise,
    :class:`~bnlib.torch.variants.PerExampleNoisyBatchNorm1d`, keyword
    arguments from ``noise``), ``"noisy_shared"`` (one scale and offset per
    unit, :class:`~bnlib.torch.variants.NoisyBatchNorm1d`, keyword arguments
    from ``shared_noise``), or ``"l1"``, ``"l2"``, ``"linf"``
    (:class:`~bnlib.torch.variants.LpBatchNorm1d`).  ``activation``:
    ``"relu"``, ``"sigmoid"``, ``"tanh"`` or ``"linear"`` (a deep linear
    network).  Weights are Kaiming-normal for ReLU and LeCun-normal otherwise,
    biases zero; the same ``seed`` gives the same ``Linear`` weights whatever
    ``norm`` is, so networks that differ only in normalisation start alike.
    """
    import torch
    from torch import nn

    from bnlib.torch.modules import BatchNorm1d
    from bnlib.torch.variants import LpBatchNorm1d, NoisyBatchNorm1d, PerExampleNoisyBatchNorm1d

    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
    acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "linear": nn.Identity}
    if activation not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}; got {activation!r}")
    gen = torch.Generator().manual_seed(int(seed))
    layers = []
    gain = 2.0 if activation == "relu" else 1.0
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(n_in, n_out)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(n_out, n_in, generator=gen) * np.sqrt(gain / n_in))
            lin.bias.zero_()
        layers.append(lin)
        if k == len(sizes) - 2:
            break
        if norm == "bn":
            layers.append(BatchNorm1d(n_out))
        elif norm == "noisy":
            layers.append(PerExampleNoisyBatchNorm1d(n_out, seed=int(seed) * 1000 + k, **(noise or {})))
        elif norm == "noisy_shared":
            layers.append(NoisyBatchNorm1d(n_out, seed=int(seed) * 1000 + k, **(shared_noise or {})))
        elif norm in ("l1", "l2", "linf"):
            layers.append(LpBatchNorm1d(n_out, p={"l1": 1, "l2": 2, "linf": "inf"}[norm]))
        layers.append(acts[activation]())
    model = nn.Sequential(*layers)
    return model.to(device=device, dtype=dtype or torch.float32)


def weight_layers(model) -> list:
    """The ``nn.Linear`` layers of ``model``, in order."""
    from torch import nn

    return [m for m in model if isinstance(m, nn.Linear)]


def _layer_groups(model) -> list[list]:
    """Parameters of ``model`` grouped by layer: each ``Linear`` with the norm layer after it."""
    from torch import nn

    groups = []
    for m in model:
        ps = list(m.parameters())
        if not ps:
            continue
        if isinstance(m, nn.Linear) or not groups:
            groups.append(ps)
        else:
            groups[-1].extend(ps)
    return groups


def loss_fn(model, x, y):
    import torch.nn.functional as F

    return F.cross_entropy(model(x), y)


def gradients(model, x, y) -> list:
    """Gradients of the mini-batch loss w.r.t. every parameter (detached copies), and the loss."""
    import torch

    params = list(model.parameters())
    loss = loss_fn(model, x, y)
    grads = torch.autograd.grad(loss, params)
    return [g.detach().clone() for g in grads], float(loss.detach())


def sgd_step(model, grads, lr: float) -> None:
    import torch

    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p.sub_(lr * g)


def sgd_train(model, x, y, config, *, on_eval=None, desc: str = "", progress: bool = False) -> list[float]:
    """Plain SGD, the training loop of the chapter 7 experiments; returns the loss of every step.

    ``config`` supplies ``steps``, ``batch_size``, ``lr``, ``eval_every`` and
    ``seed`` (the batches are drawn with ``np.random.default_rng([seed, 2])``,
    so every network of an experiment sees the same ones).  ``on_eval(step)``
    is called after every ``eval_every``-th step.
    """
    import torch

    from bnlib.progress import progress as progress_bar
    from bnlib.training import batch_indices

    rng = np.random.default_rng([config.seed, 2])
    batches = batch_indices(len(y), config.batch_size, config.steps, rng)
    losses = []
    for step, idx in enumerate(progress_bar(batches, total=config.steps, desc=desc,
                                            enabled=progress), 1):
        idx = torch.as_tensor(idx, device=x.device)
        grads, loss = gradients(model, x[idx], y[idx])
        sgd_step(model, grads, config.lr)
        losses.append(loss)
        if on_eval is not None and step % config.eval_every == 0:
            on_eval(step)
    return losses


def accuracy_headline(eval_steps, test_acc, losses, target_acc: float, tail: int) -> dict:
    """Final and best test accuracy, the first evaluated step at ``target_acc`` (None if never)
    and the mean training loss of the last ``tail`` steps."""
    test_acc = np.asarray(test_acc)
    reached = [int(s) for s, a in zip(eval_steps, test_acc) if a >= target_acc]
    return {"final_test_acc": round(float(test_acc[-1]), 4),
            "best_test_acc": round(float(test_acc.max()), 4),
            "first_step_at_target": reached[0] if reached else None,
            "final_train_loss": round(float(np.mean(losses[-max(1, tail):])), 4)}


class _frozen_state:
    """Context: save every parameter and buffer (and the noise generators) and restore them on exit."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        from bnlib.torch.variants import NoisyBatchNorm1d, PerExampleNoisyBatchNorm1d

        self.state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.gens = [(m, m.generator.get_state()) for m in self.model.modules()
                     if isinstance(m, (NoisyBatchNorm1d, PerExampleNoisyBatchNorm1d))]
        return self.model

    def __exit__(self, *exc):
        self.model.load_state_dict(self.state)
        for m, s in self.gens:
            m.generator.set_state(s)
        return False


def gradient_change(model, x, y, lr: float) -> dict:
    """Santurkar et al.'s internal covariate shift of every weight layer, eq. (ch7-ics).

    For layer ``i``: ``G`` is the gradient of the loss on ``(x, y)`` w.r.t. its
    weight matrix; ``G'`` the same gradient, same batch, after the layers
    ``1..i-1`` (weights, biases and their norm layer's gamma and beta) took the
    SGD step ``-lr * grad`` while layers ``i..L`` stay as they are.  Returns
    lists over the weight layers: ``l2`` = ``||G - G'||``, ``rel`` =
    ``||G - G'|| / ||G||``, ``cos`` = ``cos(G, G')``, and ``grad_norm`` =
    ``||G||``.  The model is left unchanged (a training-mode forward pass
    updates running statistics and noise draws: both are restored).
    """
    import torch

    groups = _layer_groups(model)
    lins = weight_layers(model)
    out = {"l2": [], "rel": [], "cos": [], "grad_norm": []}
    with _frozen_state(model):
        grads, _ = gradients(model, x, y)
        gmap = {id(p): g for p, g in zip(model.parameters(), grads)}
    for i, lin in enumerate(lins):
        G = gmap[id(lin.weight)]
        with _frozen_state(model):
            with torch.no_grad():
                for group in groups[:i]:
                    for p in group:
                        p.sub_(lr * gmap[id(p)])
            loss = loss_fn(model, x, y)
            G2 = torch.autograd.grad(loss, [lin.weight])[0].detach()
        diff = float(torch.linalg.norm(G - G2))
        norm = float(torch.linalg.norm(G))
        cos = float(torch.sum(G * G2) / (norm * torch.linalg.norm(G2) + 1e-30))
        out["l2"].append(diff)
        out["rel"].append(diff / (norm + 1e-30))
        out["cos"].append(cos)
        out["grad_norm"].append(norm)
    return out


def landscape_probe(model, x, y, step_sizes: Sequence[float]) -> dict:
    """Loss and gradient along the gradient direction at the current point, eqs. (ch7-loss-var)-(ch7-beta).

    With ``g`` the gradient of the loss on ``(x, y)`` w.r.t. all parameters,
    for each ``eta`` in ``step_sizes`` evaluate the loss and gradient at
    ``theta - eta * g`` (same batch).  Returns arrays over ``eta``: ``loss``,
    ``grad_change`` = ``||grad(theta - eta g) - g||`` and ``beta`` =
    ``grad_change / (eta ||g||)``; and ``loss0`` and ``grad_norm`` at theta.
    The model is left unchanged.
    """
    import torch

    params = list(model.parameters())
    with _frozen_state(model):
        g, loss0 = gradients(model, x, y)
    g_norm = float(torch.sqrt(sum(torch.sum(t * t) for t in g)))
    losses, changes = [], []
    for eta in step_sizes:
        with _frozen_state(model):
            with torch.no_grad():
                for p, t in zip(params, g):
                    p.sub_(eta * t)
            g2, loss = gradients(model, x, y)
        losses.append(loss)
        changes.append(float(torch.sqrt(sum(torch.sum((a - b) ** 2) for a, b in zip(g2, g)))))
    etas = np.asarray(step_sizes, dtype=float)
    changes = np.asarray(changes)
    return {"loss": np.asarray(losses), "grad_change": changes,
            "beta": changes / (etas * g_norm + 1e-30), "loss0": loss0, "grad_norm": g_norm}


def evaluate(model, x, y, batch_size: int = 1000) -> tuple[float, float]:
    """Loss and accuracy of ``model`` on ``(x, y)`` in evaluation mode (mode restored)."""
    import torch
    import torch.nn.functional as F

    was = model.training
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for k in range(0, len(y), batch_size):
            out = model(x[k:k + batch_size])
            loss += float(F.cross_entropy(out, y[k:k + batch_size], reduction="sum"))
            correct += int((out.argmax(1) == y[k:k + batch_size]).sum())
    model.train(was)
    return loss / len(y), correct / len(y)


def mnist_tensors(config) -> tuple:
    """The offline digits of an experiment ``config`` as tensors, with PyTorch on ``config.threads`` threads.

    Reads ``n_train``, ``n_test``, ``seed``, ``device`` and ``threads`` from the
    config; returns the :class:`bnlib.data.Dataset` (for its ``source`` and sizes)
    and ``(x_train, y_train, x_test, y_test)`` as :func:`as_tensors` makes them.
    """
    import torch

    from bnlib import data

    torch.set_num_threads(config.threads)
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    return ds, as_tensors(ds, config.device)


def as_tensors(ds, device: str = "cpu"):
    """``(x_train, y_train, x_test, y_test)`` of a :class:`bnlib.data.Dataset` as float32/long tensors."""
    import torch

    f = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)  # noqa: E731
    i = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64), device=device)   # noqa: E731
    return f(ds.x_train), i(ds.y_train), f(ds.x_test), i(ds.y_test)
