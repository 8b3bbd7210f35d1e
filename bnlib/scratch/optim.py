"""Optimisers that update parameter arrays in place (chapters 2, 4).

Use::

    opt = SGD(model.params(), lr=0.1, momentum=0.9)
    loss, dy = loss_fn(model.forward(x), y)
    model.backward(dy)
    opt.step(model.grads())          # grads in the same order as params

The conventions are PyTorch's (``torch.optim.SGD`` and ``torch.optim.Adam``
without weight decay), so the same hyper-parameters mean the same thing.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["SGD", "Adam"]


class _Optimizer:
    def __init__(self, params: Sequence[np.ndarray], lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty: nothing to optimise")
        for i, p in enumerate(self.params):
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise ValueError(f"params[{i}] must be a float numpy array (updated in place)")
        if not lr > 0:
            raise ValueError(f"lr must be positive; got {lr}")
        self.lr = float(lr)
        self.steps = 0

    def _check(self, grads: Sequence[np.ndarray]) -> list[np.ndarray]:
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
        for i, (p, g) in enumerate(zip(self.params, grads)):
            if np.shape(g) != p.shape:
                raise ValueError(f"grads[{i}] has shape {np.shape(g)}, params[{i}] {p.shape}")
        return grads


class SGD(_Optimizer):
    """Stochastic gradient descent, with optional (heavy-ball) momentum.

    ``v = momentum * v + g`` (``v = g`` on the first step) and ``p -= lr * v``,
    as ``torch.optim.SGD`` (dampening 0, no Nesterov).
    """

    def __init__(self, params: Sequence[np.ndarray], lr: float, momentum: float = 0.0):
        super().__init__(params, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1); got {momentum}")
        self.momentum = float(momentum)
        self.velocity: list[np.ndarray] | None = None

    def step(self, grads: Sequence[np.ndarray]) -> None:
        grads = self._check(grads)
        if self.momentum == 0.0:
            for p, g in zip(self.params, grads):
                p -= self.lr * g
        else:
            if self.velocity is None:
                self.velocity = [np.array(g, dtype=p.dtype) for p, g in zip(self.params, grads)]
            else:
                for v, g in zip(self.velocity, grads):
                    v *= self.momentum
                    v += g
            for p, v in zip(self.params, self.velocity):
                p -= self.lr * v
        self.steps += 1

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr:g}, momentum={self.momentum:g})"


class Adam(_Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, as ``torch.optim.Adam``.

    ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g^2``,
    ``p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``.
    """

    def __init__(self, params: Sequence[np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1); got {betas}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0; got {eps}")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]

    def step(self, grads: Sequence[np.ndarray]) -> None:
        grads = self._check(grads)
        b1, b2 = self.betas
        self.steps += 1
        t = self.steps
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            p -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)

    def __repr__(self) -> str:
        return f"Adam(lr={self.lr:g}, betas={self.betas}, eps={self.eps:g})"
