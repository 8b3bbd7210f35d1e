"""Weight normalisation (Salimans & Kingma 2016) from scratch: ``w = g v / ||v||`` (chapter 6).

Each unit's weight vector ``w`` (a column of the ``(n_in, n_out)`` matrix, the
convention of :class:`bnlib.scratch.Linear`) is written as a direction ``v``
and a length ``g``:

    w = g * v / ||v||.

Nothing depends on the batch: the normalisation acts on the weights, so the
layer computes the same function in training and at test time, for any batch
size including 1.  The gradients (Salimans & Kingma, eq. 3), per unit, from
``dw = dL/dw``:

    dL/dg = dw . v / ||v||,
    dL/dv = (g / ||v||) dw - (g dL/dg / ||v||^2) v,

and the second is ``g / ||v||`` times ``dw`` with its component along ``w``
projected out, so ``dL/dv`` is orthogonal to ``v`` (eq. 4).

* :func:`weightnorm_forward`, :func:`weightnorm_backward`: the
  reparameterisation and its gradients;
* :class:`WeightNormLinear`: a layer ``z = x @ w + b`` with ``w = g v / ||v||``,
  with Salimans & Kingma's data-dependent initialisation
  (:meth:`WeightNormLinear.data_dependent_init`: ``g`` and ``b`` chosen so that
  every unit's pre-activation has mean 0 and variance 1 on a batch).
"""
from __future__ import annotations

import numpy as np

from .layers import Layer, _generator

__all__ = ["weightnorm_forward", "weightnorm_backward", "WeightNormLinear"]


def weightnorm_forward(v: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, dict]:
    """``w = g * v / ||v||`` column by column; returns ``(w, cache)``.

    ``v`` of shape ``(n_in, n_out)`` (one column per unit), ``g`` of shape ``(n_out,)``.
    """
    v, g = np.asarray(v, dtype=float), np.asarray(g, dtype=float)
    if v.ndim != 2 or g.shape != (v.shape[1],):
        raise ValueError(f"v must be (n_in, n_out) and g (n_out,); got {v.shape} and {g.shape}")
    norm = np.sqrt((v * v).sum(axis=0))
    if np.any(norm == 0):
        raise ValueError("a column of v is zero: its direction is undefined")
    w = v * (g / norm)
    return w, {"v": v, "g": g, "norm": norm}


def weightnorm_backward(dw: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(dv, dg)`` from ``dw = dL/dw`` (Salimans & Kingma's eq. 3)."""
    v, g, norm = cache["v"], cache["g"], cache["norm"]
    dg = (dw * v).sum(axis=0) / norm
    dv = (g / norm) * dw - (g * dg / norm**2) * v
    return dv, dg


class WeightNormLinear(Layer):
    """Affine layer ``z = x @ (g v / ||v||) + b``; parameters ``v, g, b`` (module docstring).

    ``v`` starts as ``init_std`` times standard normal draws (the scale does not
    matter: the output depends on ``v`` only through its direction), ``g`` at
    ``||v||`` column by column (so that ``w = v`` at the start), ``b`` at zero.
    """

    def __init__(self, n_in: int, n_out: int, init_std: float = 0.05, rng=None):
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.v = _generator(rng).normal(0.0, init_std, size=(self.n_in, self.n_out))
        self.g = np.sqrt((self.v ** 2).sum(axis=0))
        self.b = np.zeros(self.n_out)
        self.dv, self.dg, self.db = np.zeros_like(self.v), np.zeros_like(self.g), np.zeros_like(self.b)
        self._x = self._cache = None

    @property
    def W(self) -> np.ndarray:
        """The effective weight matrix ``g v / ||v||``."""
        return weightnorm_forward(self.v, self.g)[0]

    def data_dependent_init(self, x: np.ndarray) -> np.ndarray:
        """Salimans & Kingma's initialisation on the batch ``x``; returns the new output.

        With ``t = x @ (v / ||v||)``, set ``g = 1 / sigma[t]`` and
        ``b = -mu[t] / sigma[t]`` per unit, so that the output has mean 0 and
        standard deviation 1 over the batch.
        """
        x = np.asarray(x, dtype=float)
        t = x @ (self.v / np.sqrt((self.v ** 2).sum(axis=0)))
        mu, sigma = t.mean(axis=0), t.std(axis=0)
        sigma = np.where(sigma > 0, sigma, 1.0)
        self.g = 1.0 / sigma
        self.b = -mu / sigma
        return self.forward(x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"WeightNormLinear({self.n_in}, {self.n_out}) expects x of shape "
                             f"(N, {self.n_in}); got {x.shape}")
        w, self._cache = weightnorm_forward(self.v, self.g)
        self._x, self._w = x, w
        return x @ w + self.b

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x = self._need_forward("_x")
        dw = x.T @ dy
        self.dv[...], self.dg[...] = weightnorm_backward(dw, self._cache)
        self.db[...] = dy.sum(axis=0)
        return dy @ self._w.T

    def params(self) -> list[np.ndarray]:
        return [self.v, self.g, self.b]

    def grads(self) -> list[np.ndarray]:
        return [self.dv, self.dg, self.db]

    def __repr__(self) -> str:
        return f"WeightNormLinear({self.n_in}, {self.n_out})"
