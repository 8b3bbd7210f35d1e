"""Batch norm in NumPy, fast: the compact formulas walked in cache-sized blocks (chapters 3 and 8).

:func:`batchnorm_forward_blocked` and :func:`batchnorm_backward_blocked`
compute exactly what :func:`bnlib.scratch.batchnorm_forward` and
:func:`bnlib.scratch.batchnorm_backward` compute, and take and return the same
``cache``; only the order of the loops differs.  The readable versions in
:mod:`bnlib.scratch.functional` are what chapter 3 derives; these are what
``python -m bnlib bench`` uses to show how close plain NumPy can get to
PyTorch's fused C++ kernel once memory traffic, not arithmetic, is the cost
(chapter 8).
"""
from __future__ import annotations

import numpy as np

from .functional import _check_bn_input, _check_dy, _check_finite_input

__all__ = ["batchnorm_forward_blocked", "batchnorm_backward_blocked", "BLOCK_BYTES"]

# Cache blocking.  NumPy runs one operation over the whole array before the
# next one starts, so every intermediate array (x - mu, its square, ...) would
# travel to main memory and back: batch norm is memory-bound (chapter 8).  The
# compact forward and backward passes therefore walk the batch in blocks of
# about BLOCK_BYTES and do all the element-wise work of one block while it
# sits in the CPU's L2 cache.  The maths is unchanged; only the order of the
# loops is.
BLOCK_BYTES = 1 << 18


class _Blocks:
    """Layout helper: ``x`` as (N, C) or (N, C, H*W), split into cache-sized blocks.

    ``blocks`` lists ``(rows, chans)`` index pairs covering the array;
    ``vec(v, chans)`` shapes a per-channel vector to broadcast against a block;
    ``sum(t)`` sums a block per channel (over examples and positions).
    """

    def __init__(self, shape: tuple[int, ...], itemsize: int):
        self.shape = shape
        n, c = shape[0], shape[1]
        self.spatial = len(shape) == 4
        s = shape[2] * shape[3] if self.spatial else 1
        self.view_shape = (n, c, s) if self.spatial else (n, c)
        budget = max(1, BLOCK_BYTES // itemsize)           # elements per block
        if c * s <= budget:                                # whole examples per block
            rows = budget // (c * s)
            self.blocks = [(slice(i, i + rows), slice(None)) for i in range(0, n, rows)]
        else:                                              # one example, part of its channels
            chans = max(1, budget // s)
            self.blocks = [(slice(i, i + 1), slice(j, j + chans))
                           for i in range(n) for j in range(0, c, chans)]
        r, ch = self.blocks[0]
        self.block_shape = (len(range(n)[r]), len(range(c)[ch])) + ((s,) if self.spatial else ())

    def view(self, a: np.ndarray) -> np.ndarray:
        return a.reshape(self.view_shape)

    def vec(self, v: np.ndarray, chans: slice) -> np.ndarray:
        return v[chans, None] if self.spatial else v[chans]

    def sum(self, t: np.ndarray) -> np.ndarray:
        return t.sum(axis=2).sum(axis=0) if self.spatial else t.sum(axis=0)

    def scratch(self, dtype) -> np.ndarray:
        return np.empty(self.block_shape, dtype=dtype)


def _fit(buf: np.ndarray, block: np.ndarray) -> np.ndarray:
    """The part of the scratch buffer with the shape of ``block`` (the last block may be smaller)."""
    return buf[tuple(slice(0, k) for k in block.shape)]


def batchnorm_forward_blocked(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                              eps: float = 1e-5) -> tuple[np.ndarray, dict]:
    """Cache-blocked :func:`~bnlib.scratch.functional.batchnorm_forward`: same results, fewer trips to memory.

    Parameters
    ----------
    x : (N, D) or (N, C, H, W) array; statistics per feature / channel
    gamma, beta : (D,) or (C,) arrays, the learned scale and shift
    eps : added to the variance before the square root

    Returns
    -------
    y : array of the same shape as ``x``
    cache : dict with what the backward passes need: ``x_hat``, ``inv_std``
        (``1/sqrt(var + eps)``), ``gamma``, ``mu``, ``var`` (biased), ``eps``,
        ``m`` (values per channel), ``axes`` (the reduction axes) and ``x``
        (a reference to the input, not a copy).

    The variance is computed in two passes over ``x``: ``mu0 = mean(x)``, then
    ``d = x - mu0`` and ``var = mean(d**2) - mean(d)**2``, where ``mean(d)``
    is the rounding error of the first mean (zero in exact arithmetic) and
    also corrects ``mu``.  No cancellation happens, whatever the mean.
    """
    x, axes, m, gamma, beta = _check_bn_input(x, gamma, beta, eps)
    C = x.shape[1]
    B = _Blocks(x.shape, x.itemsize)
    xv = B.view(x)
    buf = B.scratch(x.dtype)

    with np.errstate(invalid="ignore", over="ignore"):   # NaN/inf input: ValueError below
        # ch3-mean, first pass
        mu0 = (xv.sum(axis=(0, 2)) if B.spatial else xv.sum(axis=0)) / m
        # ch3-var, second pass: sums of d = x - mu0 and of d**2, block by block
        sum_d = np.zeros(C)
        sum_d2 = np.zeros(C)
        for rows, ch in B.blocks:
            d = np.subtract(xv[rows, ch], B.vec(mu0, ch), out=_fit(buf, xv[rows, ch]))
            sum_d[ch] += B.sum(d)
            np.multiply(d, d, out=d)
            sum_d2[ch] += B.sum(d)
        correction = sum_d / m                   # mean(x - mu0): rounding error of mu0
        mu = (mu0 + correction).astype(x.dtype)
        var = np.maximum(sum_d2 / m - correction**2, 0.0).astype(x.dtype)
    if not (np.isfinite(mu).all() and np.isfinite(var).all()):
        _check_finite_input(x)
    if eps == 0 and (var == 0).any():
        raise ValueError("a channel of x has zero variance and eps=0: x_hat would divide by "
                         "zero; use eps > 0")
    inv_std = 1.0 / np.sqrt(var + x.dtype.type(eps))

    # ch3-xhat and ch3-affine, third pass.  x - mu is taken as (x - mu0) - correction:
    # x - mu0 is exact when the spread is small next to the mean, and the
    # correction is small, so x_hat keeps full precision even for mean 1e6, std 1e-3
    x_hat = np.empty(B.view_shape, dtype=x.dtype)
    y = np.empty(B.view_shape, dtype=x.dtype)
    mu0, correction = mu0.astype(x.dtype), correction.astype(x.dtype)
    for rows, ch in B.blocks:
        xh = np.subtract(xv[rows, ch], B.vec(mu0, ch), out=x_hat[rows, ch])  # x - mu0
        xh -= B.vec(correction, ch)                                           # ... = x - mu
        xh *= B.vec(inv_std, ch)                                              # / sqrt(var + eps)
        yb = np.multiply(xh, B.vec(gamma, ch), out=y[rows, ch])               # gamma * x_hat
        yb += B.vec(beta, ch)                                                 # + beta

    cache = {"x": x, "x_hat": x_hat.reshape(x.shape), "mu": mu, "var": var,
             "inv_std": inv_std, "gamma": gamma, "eps": eps, "m": m, "axes": axes}
    return y.reshape(x.shape), cache


def batchnorm_backward_blocked(dy: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cache-blocked :func:`~bnlib.scratch.functional.batchnorm_backward` (compact form, eq. ch3-dx).

    With every sum per channel (over the reduction axes)::

        dbeta  = sum(dy)
        dgamma = sum(dy * x_hat)
        dx     = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)

    Two passes over the arrays: one for the two sums, one for ``dx``, which
    is computed as ``a * dy - (k1 + k2 * x_hat)`` with the per-channel
    constants ``a = gamma * inv_std``, ``k1 = a * dbeta / m`` and
    ``k2 = a * dgamma / m``.
    """
    dy = _check_dy(dy, cache)
    x_hat, inv_std, gamma, m = cache["x_hat"], cache["inv_std"], cache["gamma"], cache["m"]
    C = gamma.shape[0]
    B = _Blocks(x_hat.shape, x_hat.itemsize)
    dyv, xhv = B.view(dy), B.view(x_hat)
    buf = B.scratch(x_hat.dtype)

    # first pass: dbeta = sum(dy), dgamma = sum(dy * x_hat)
    dbeta = np.zeros(C, dtype=x_hat.dtype)
    dgamma = np.zeros(C, dtype=x_hat.dtype)
    for rows, ch in B.blocks:
        g = dyv[rows, ch]
        dbeta[ch] += B.sum(g)
        dgamma[ch] += B.sum(np.multiply(g, xhv[rows, ch], out=_fit(buf, g)))

    # second pass: dx = a * dy - (k1 + k2 * x_hat)     (ch3-dx)
    a = gamma * inv_std
    k1 = a * dbeta / m
    k2 = a * dgamma / m
    dx = np.empty(B.view_shape, dtype=x_hat.dtype)
    for rows, ch in B.blocks:
        out = np.multiply(xhv[rows, ch], B.vec(k2, ch), out=dx[rows, ch])   # k2 * x_hat
        out += B.vec(k1, ch)                                                  # + k1
        t = np.multiply(dyv[rows, ch], B.vec(a, ch), out=_fit(buf, out))     # a * dy
        np.subtract(t, out, out=out)                                          # a*dy - (...)
    return dx.reshape(x_hat.shape), dgamma, dbeta


