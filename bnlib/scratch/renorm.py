"""Batch renormalisation (Ioffe 2017), forward and backward in NumPy (chapter 5, section 5.8).

Batch norm normalises with the statistics of the mini-batch in training and
with population estimates at test time, so the two modes compute different
functions, and the more so the smaller or the less i.i.d. the batches.  Batch
renormalisation (Ioffe 2017, "Batch Renormalization: Towards Reducing Minibatch
Dependence in Batch-Normalized Models", Algorithm 1) keeps moving averages
``mu`` and ``sigma`` of the batch mean and standard deviation *during* training
and corrects each batch's normalisation towards them::

    mu_B    = mean(x)                      sigma_B = sqrt(mean((x - mu_B)**2) + eps)
    r       = stop_gradient(clip(sigma_B / sigma, 1 / r_max, r_max))
    d       = stop_gradient(clip((mu_B - mu) / sigma, -d_max, d_max))
    x_hat   = (x - mu_B) / sigma_B * r + d                               (ch5-renorm)
    y       = gamma * x_hat + beta
    mu     <- mu + alpha * (mu_B - mu),    sigma <- sigma + alpha * (sigma_B - sigma)

When neither clip is active, ``x_hat = (x - mu) / sigma``: the training output
of an example is what inference computes, ``y = gamma * (x - mu) / sigma +
beta``, and no longer depends on the rest of the batch.  ``r`` and ``d`` are
constants for backpropagation, so the gradient is batch norm's with ``gamma``
replaced by ``gamma * r``::

    dbeta  = sum(dy)
    dgamma = sum(dy * x_hat)                      (the renormalised x_hat)
    dx     = gamma * r / sigma_B / m * (m * dy - sum(dy) - z * sum(dy * z)),
             z = (x - mu_B) / sigma_B

With ``r_max = 1`` and ``d_max = 0`` (``r = 1``, ``d = 0``) this is batch norm
exactly; the paper starts that way and relaxes the limits gradually
(:func:`renorm_limits`).  Following Algorithm 1, the layer keeps a moving
*standard deviation* ``sigma`` (which includes ``eps``), not a variance, and
updates it with the biased batch statistic; ``alpha`` is the weight of the
new batch (PyTorch's momentum convention).

NumPy only.  :mod:`bnlib.torch.renorm` is the PyTorch module.
"""
from __future__ import annotations

import numpy as np

from bnlib import _validate
from .functional import _channel_shape, _check_bn_input, _check_dy
from .layers import AffineNorm

__all__ = ["renorm_correction", "batchrenorm_forward", "batchrenorm_backward", "batchrenorm_eval",
           "renorm_limits", "BatchRenorm"]


def renorm_correction(mu_b, sigma_b, running_mean, running_std, r_max: float, d_max: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``(r, d)`` of Algorithm 1: ``clip(sigma_B / sigma, 1/r_max, r_max)``, ``clip((mu_B - mu) / sigma, -d_max, d_max)``."""
    if not r_max >= 1.0:
        raise ValueError(f"r_max must be >= 1 (r is clipped to [1/r_max, r_max]); got {r_max}")
    if not d_max >= 0.0:
        raise ValueError(f"d_max must be >= 0 (d is clipped to [-d_max, d_max]); got {d_max}")
    running_std = np.asarray(running_std, dtype=float)
    if (running_std <= 0).any():
        raise ValueError("running_std must be > 0")
    r = np.clip(np.asarray(sigma_b) / running_std, 1.0 / r_max, r_max)
    d = np.clip((np.asarray(mu_b) - np.asarray(running_mean)) / running_std, -d_max, d_max)
    return r, d


def batchrenorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                        running_mean: np.ndarray, running_std: np.ndarray,
                        r_max: float = 1.0, d_max: float = 0.0, eps: float = 1e-5,
                        r: np.ndarray | None = None, d: np.ndarray | None = None
                        ) -> tuple[np.ndarray, dict]:
    """Training-mode batch renormalisation, eq. ``ch5-renorm`` (Ioffe 2017, Algorithm 1).

    ``x`` is ``(N, D)`` or ``(N, C, H, W)``.  ``r`` and ``d`` are computed from
    the batch and the running statistics (:func:`renorm_correction`) unless
    given: passing them fixes the constants, which is how a numerical gradient
    checks the stop-gradient backward.  The running statistics are not changed
    here (the layer :class:`BatchRenorm` updates them).  The cache holds what
    :func:`batchrenorm_backward` needs, and ``mu``, ``sigma`` (the batch's
    ``sigma_B``, with ``eps``), ``r`` and ``d``.
    """
    x, axes, m, gamma, beta = _check_bn_input(x, gamma, beta, eps)
    shape = _channel_shape(x.ndim)
    mu = x.mean(axis=axes)
    xc = x - mu.reshape(shape)
    sigma = np.sqrt((xc * xc).mean(axis=axes) + eps)
    if r is None or d is None:
        r0, d0 = renorm_correction(mu, sigma, running_mean, running_std, r_max, d_max)
        r = r0 if r is None else r
        d = d0 if d is None else d
    r = np.broadcast_to(np.asarray(r, dtype=x.dtype), mu.shape).copy()
    d = np.broadcast_to(np.asarray(d, dtype=x.dtype), mu.shape).copy()
    z = xc / sigma.reshape(shape)                                   # batch norm's x_hat
    x_hat = z * r.reshape(shape) + d.reshape(shape)                 # renormalised
    y = gamma.reshape(shape) * x_hat + beta.reshape(shape)
    cache = {"z": z, "x_hat": x_hat, "mu": mu, "sigma": sigma, "r": r, "d": d,
             "gamma": gamma, "m": m, "axes": axes}
    return y, cache


def batchrenorm_backward(dy: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient of :func:`batchrenorm_forward` with ``r`` and ``d`` held constant (stop-gradient).

    Batch norm's compact backward (chapter 3, eq. ``ch3-dx``) with ``gamma * r``
    in place of ``gamma``; ``dgamma`` uses the renormalised ``x_hat``.
    """
    dy = _check_dy(dy, cache)
    z, x_hat, sigma, r, gamma, m, axes = (cache[k] for k in ("z", "x_hat", "sigma", "r", "gamma",
                                                              "m", "axes"))
    shape = _channel_shape(dy.ndim)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    dz_sum = dy.sum(axis=axes)
    dz_dot = (dy * z).sum(axis=axes)
    scale = (gamma * r / sigma / m).reshape(shape)
    dx = scale * (m * dy - dz_sum.reshape(shape) - z * dz_dot.reshape(shape))
    return dx, dgamma, dbeta


def batchrenorm_eval(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                     running_mean: np.ndarray, running_std: np.ndarray) -> np.ndarray:
    """Inference (Algorithm 1, bottom): ``y = gamma * (x - mu) / sigma + beta``, one example at a time."""
    x = np.asarray(x, dtype=float)
    shape = _channel_shape(x.ndim)
    return (gamma / running_std).reshape(shape) * (x - running_mean.reshape(shape)) + beta.reshape(shape)


def renorm_limits(step: int, warmup: int, r_full: int, d_full: int,
                  r_max: float = 3.0, d_max: float = 5.0) -> tuple[float, float]:
    """``(r_max, d_max)`` at ``step``: 1 and 0 (batch norm) for ``warmup`` steps, then relaxed.

    Ioffe (2017) trains with ``r_max = 1``, ``d_max = 0`` for the first 5,000
    steps and relaxes them "gradually" to ``r_max = 3`` at 40k steps and
    ``d_max = 5`` at 25k steps; the paper does not say along which curve, so
    here the limits grow linearly from ``warmup`` to ``r_full`` and ``d_full``.
    """
    if not 0 <= warmup < min(r_full, d_full):
        raise ValueError(f"need 0 <= warmup < r_full, d_full; got {warmup}, {r_full}, {d_full}")

    def ramp(full: int) -> float:
        return float(np.clip((step - warmup) / (full - warmup), 0.0, 1.0))

    return 1.0 + (r_max - 1.0) * ramp(r_full), d_max * ramp(d_full)


class BatchRenorm(AffineNorm):
    """Batch renormalisation layer (Ioffe 2017) for ``(N, D)`` or ``(N, C, H, W)`` input.

    ``momentum`` is ``alpha`` of Algorithm 1, the weight of the new batch in
    the moving mean ``running_mean`` and moving standard deviation
    ``running_std`` (start 0 and 1).  ``r_max`` and ``d_max`` can be changed
    between steps (:func:`renorm_limits`); the defaults 1 and 0 make training
    mode batch norm.  Eval mode computes ``gamma * (x - mu) / sigma + beta``.
    The last step's ``r`` and ``d`` are kept in ``last_r`` and ``last_d``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.01,
                 r_max: float = 1.0, d_max: float = 0.0):
        self.num_features = _validate.positive_int(num_features, "num_features")
        self.eps = _validate.eps(eps)
        momentum = float(momentum)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1]; got {momentum}")
        self.momentum = momentum
        self.r_max, self.d_max = float(r_max), float(d_max)
        renorm_correction(0.0, 1.0, 0.0, 1.0, self.r_max, self.d_max)      # validates the limits
        self.gamma, self.beta = np.ones(num_features), np.zeros(num_features)
        self.dgamma, self.dbeta = np.zeros(num_features), np.zeros(num_features)
        self.running_mean = np.zeros(num_features)
        self.running_std = np.ones(num_features)
        self.last_r, self.last_d = np.ones(num_features), np.zeros(num_features)
        self.training = True
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchRenorm({self.num_features}) expects x of shape "
                             f"(N, {self.num_features}) or (N, {self.num_features}, H, W); got {x.shape}")
        if not self.training:
            self._cache = ("eval", x)
            return batchrenorm_eval(x, self.gamma, self.beta, self.running_mean, self.running_std)
        y, cache = batchrenorm_forward(x, self.gamma, self.beta, self.running_mean, self.running_std,
                                       self.r_max, self.d_max, self.eps)
        self._cache = ("train", cache)
        self.last_r, self.last_d = cache["r"], cache["d"]
        a = self.momentum
        self.running_mean += a * (cache["mu"] - self.running_mean)
        self.running_std += a * (cache["sigma"] - self.running_std)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        mode, saved = self._need_forward("_cache")
        if mode == "train":
            dx, self.dgamma[...], self.dbeta[...] = batchrenorm_backward(dy, saved)
            return dx
        x = saved
        dy = np.asarray(dy, dtype=float)
        shape = _channel_shape(x.ndim)
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        x_hat = (x - self.running_mean.reshape(shape)) / self.running_std.reshape(shape)
        self.dbeta[...] = dy.sum(axis=axes)
        self.dgamma[...] = (dy * x_hat).sum(axis=axes)
        return dy * (self.gamma / self.running_std).reshape(shape)

    def __repr__(self) -> str:
        return (f"BatchRenorm({self.num_features}, eps={self.eps:g}, momentum={self.momentum:g}, "
                f"r_max={self.r_max:g}, d_max={self.d_max:g})")
