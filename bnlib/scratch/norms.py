"""Group, instance and RMS normalisation in NumPy, forward and backward (chapter 6).

Chapter 6 compares the normalisations that differ from batch norm only in
*which values share a mean and a variance*.  For an input of shape
``(N, C, H, W)`` (or ``(N, C)``, or ``(N, C, L)``):

* batch norm    - per channel, over ``N, H, W``        (:mod:`.functional`)
* layer norm    - per example, over ``C, H, W``        (:mod:`.functional`)
* group norm    - per example and group of ``C // G`` channels, over those
  channels and ``H, W`` (eq. ch6-gn)
* instance norm - per example and channel, over ``H, W`` (group norm with
  one channel per group, ``G = C``)
* RMS norm      - per example over ``C, H, W`` like layer norm, but divided by
  the root mean square without subtracting the mean (eq. ch6-rms)

Group norm *is* layer norm applied to each group: reshape ``x`` to
``(N * G, C // G * H * W)`` and every row is one group.  So
:func:`groupnorm_forward` and :func:`groupnorm_backward` reuse
:func:`~bnlib.scratch.functional.layernorm_forward` /
:func:`~bnlib.scratch.functional.layernorm_backward` for the normalisation
(with a unit scale) and apply the per-channel ``gamma``, ``beta`` themselves.

The layers :class:`GroupNorm`, :class:`InstanceNorm` and :class:`RMSNorm`
follow the interface of :mod:`.layers` (``forward``, ``backward``,
``params``, ``grads``, ``train``/``eval``; all behave the same in both modes).
"""
from __future__ import annotations

import numpy as np

from bnlib import _validate
from . import functional as F
from .layers import AffineNorm, Layer

__all__ = ["groupnorm_forward", "groupnorm_backward", "instancenorm_forward",
           "instancenorm_backward", "rmsnorm_forward", "rmsnorm_backward",
           "GroupNorm", "InstanceNorm", "RMSNorm"]


def _check_groups(x: np.ndarray, num_groups) -> int:
    if x.ndim < 2:
        raise ValueError(f"x must have shape (N, C, ...) with a channel axis; got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"x is empty (shape {x.shape}): nothing to normalise")
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) \
            or num_groups < 1:
        raise ValueError(f"num_groups must be a positive integer; got {num_groups!r}")
    C = x.shape[1]
    if C % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the number of channels "
                         f"C={C} (x.shape[1])")
    return int(num_groups)


def _channel_param(p, C: int, name: str, dtype) -> np.ndarray:
    p = F._as_float_array(p, name)
    if p.shape != (C,):
        raise ValueError(f"{name} must have shape ({C},), one value per channel; got {p.shape}")
    return p.astype(dtype, copy=False)


def groupnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, num_groups: int,
                      eps: float = 1e-5) -> tuple[np.ndarray, dict]:
    """Group normalisation (chapter 6, eq. ch6-gn), like ``torch.nn.functional.group_norm``.

    ``x`` has shape ``(N, C, *spatial)``; its ``C`` channels are cut into
    ``num_groups`` consecutive groups of ``C // num_groups`` channels, and
    each group of each example is normalised with its own mean and biased
    variance, taken over its channels and all spatial positions.  Then every
    channel gets its own scale and shift: ``y = gamma[c] * x_hat + beta[c]``.

    Returns ``y`` and a cache for :func:`groupnorm_backward`.
    """
    x = F._as_float_array(x, "x")
    G = _check_groups(x, num_groups)
    N, C = x.shape[:2]
    gamma = _channel_param(gamma, C, "gamma", x.dtype)
    beta = _channel_param(beta, C, "beta", x.dtype)
    rows = x.reshape(N * G, -1)                        # one row per (example, group)
    if rows.shape[1] == 1:
        raise ValueError(f"each group holds a single value (x.shape={x.shape}, "
                         f"num_groups={G}): its variance is 0 and it would be erased")
    ones, zeros = np.ones(rows.shape[1], x.dtype), np.zeros(rows.shape[1], x.dtype)
    x_hat, ln_cache = F.layernorm_forward(rows, ones, zeros, eps)     # normalise each row
    x_hat = x_hat.reshape(x.shape)
    shape = (1, C) + (1,) * (x.ndim - 2)
    y = gamma.reshape(shape) * x_hat + beta.reshape(shape)
    cache = {"ln": ln_cache, "x_hat": x_hat, "gamma": gamma, "num_groups": G,
             "mu": ln_cache["mu"].reshape(N, G), "var": ln_cache["var"].reshape(N, G)}
    return y, cache


def groupnorm_backward(dy: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient of :func:`groupnorm_forward`: ``(dx, dgamma, dbeta)``.

    ``dgamma`` and ``dbeta`` sum over the examples and positions of each
    channel (as for batch norm); the gradient with respect to ``x_hat``,
    ``gamma[c] * dy``, goes through layer norm's backward row by row.
    """
    x_hat, gamma = cache["x_hat"], cache["gamma"]
    dy = np.asarray(dy)
    if dy.shape != x_hat.shape:
        raise ValueError(f"dy must have the shape of the forward input {x_hat.shape}; got {dy.shape}")
    dy = dy.astype(x_hat.dtype, copy=False)
    axes = (0,) + tuple(range(2, dy.ndim))
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    shape = (1, -1) + (1,) * (dy.ndim - 2)
    dx_hat = (dy * gamma.reshape(shape)).reshape(cache["ln"]["x_hat"].shape)
    dx, _, _ = F.layernorm_backward(dx_hat, cache["ln"])
    return dx.reshape(dy.shape), dgamma, dbeta


def instancenorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                         eps: float = 1e-5) -> tuple[np.ndarray, dict]:
    """Instance normalisation: group norm with one channel per group (``G = C``).

    ``x`` must have spatial axes, ``(N, C, H, W)`` or ``(N, C, L)``: each
    channel of each example is normalised over its positions only, like
    ``torch.nn.functional.instance_norm`` (with ``use_input_stats=True``).
    """
    x = F._as_float_array(x, "x")
    if x.ndim < 3:
        raise ValueError(f"instance norm needs spatial axes, x of shape (N, C, H, W) or "
                         f"(N, C, L); got shape {x.shape}")
    return groupnorm_forward(x, gamma, beta, num_groups=x.shape[1], eps=eps)


def instancenorm_backward(dy: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient of :func:`instancenorm_forward` (that of group norm with ``G = C``)."""
    return groupnorm_backward(dy, cache)


def rmsnorm_forward(x: np.ndarray, gamma: np.ndarray, eps: float = 1e-5
                    ) -> tuple[np.ndarray, dict]:
    """RMS normalisation (Zhang & Sennrich 2019; chapter 6, eq. ch6-rms).

    Per example, over all axes but 0 (like layer norm), but without the mean::

        rms   = sqrt(mean(x**2) + eps)
        x_hat = x / rms
        y     = gamma * x_hat

    ``gamma`` has shape ``x.shape[1:]`` (``torch.nn.RMSNorm(x.shape[1:])``,
    which has no bias).  Returns ``y`` and a cache for :func:`rmsnorm_backward`.
    """
    x = F._as_float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and at least one feature axis; "
                         f"got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"x is empty (shape {x.shape}): nothing to normalise")
    gamma = F._as_float_array(gamma, "gamma")
    if gamma.shape != x.shape[1:]:
        raise ValueError(f"gamma must have shape {x.shape[1:]} (x.shape[1:]); got {gamma.shape}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    gamma = gamma.astype(x.dtype, copy=False)
    n = x.shape[0]
    x2 = x.reshape(n, -1)
    m = x2.shape[1]
    with np.errstate(invalid="ignore", over="ignore"):
        ms = np.einsum("ni,ni->n", x2, x2)[:, None] / m          # mean square per example
    if not np.isfinite(ms).all():
        F._check_finite_input(x)
    if eps == 0 and (ms == 0).any():
        raise ValueError("an example of x is all zeros and eps=0: x_hat would divide by zero; "
                         "use eps > 0")
    inv_rms = 1.0 / np.sqrt(ms + eps)
    x_hat = x2 * inv_rms
    y = x_hat * gamma.reshape(1, m)
    cache = {"x_hat": x_hat.reshape(x.shape), "inv_rms": inv_rms[:, 0], "gamma": gamma, "m": m}
    return y.reshape(x.shape), cache


def rmsnorm_backward(dy: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of :func:`rmsnorm_forward`: ``(dx, dgamma)`` (chapter 6, eq. ch6-rms-dx).

    With ``g = gamma * dy`` (the gradient w.r.t. ``x_hat``), per example::

        dx = inv_rms * (g - x_hat * mean(g * x_hat))

    layer norm's formula without the ``- mean(g)`` term, because no mean was
    subtracted in the forward pass.
    """
    x_hat, inv_rms, gamma, m = cache["x_hat"], cache["inv_rms"], cache["gamma"], cache["m"]
    dy = np.asarray(dy)
    if dy.shape != x_hat.shape:
        raise ValueError(f"dy must have the shape of the forward input {x_hat.shape}; got {dy.shape}")
    dy = dy.astype(x_hat.dtype, copy=False)
    n = x_hat.shape[0]
    dy2, xh2 = dy.reshape(n, m), x_hat.reshape(n, m)
    dgamma = (dy2 * xh2).sum(axis=0).reshape(gamma.shape)
    g = dy2 * gamma.reshape(1, m)
    mean_gx = np.einsum("ni,ni->n", g, xh2)[:, None] / m
    dx = inv_rms[:, None] * (g - xh2 * mean_gx)
    return dx.reshape(dy.shape), dgamma


# ------------------------------------------------------------------------ layers

class GroupNorm(AffineNorm):
    """Group normalisation layer, like ``torch.nn.GroupNorm(num_groups, num_channels)``.

    Input ``(N, C, *spatial)`` with ``C = num_channels``; ``gamma`` (ones) and
    ``beta`` (zeros) have one value per channel.  Same in training and eval mode.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        if not isinstance(num_channels, (int, np.integer)) or num_channels < 1:
            raise ValueError(f"num_channels must be a positive integer; got {num_channels!r}")
        if not isinstance(num_groups, (int, np.integer)) or num_groups < 1 \
                or num_channels % num_groups:
            raise ValueError(f"num_groups must be a positive integer dividing "
                             f"num_channels={num_channels}; got {num_groups!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0; got {eps}")
        self.num_groups, self.num_channels, self.eps = int(num_groups), int(num_channels), float(eps)
        self.gamma, self.beta = np.ones(num_channels), np.zeros(num_channels)
        self.dgamma, self.dbeta = np.zeros(num_channels), np.zeros(num_channels)
        self.training = True
        self._cache = None

    def _check(self, x: np.ndarray) -> None:
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"{type(self).__name__} expects x of shape (N, {self.num_channels}, "
                             f"...); got {x.shape}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        self._check(x)
        y, self._cache = groupnorm_forward(x, self.gamma, self.beta, self.num_groups, self.eps)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        cache = self._need_forward("_cache")
        dx, self.dgamma[...], self.dbeta[...] = groupnorm_backward(dy, cache)
        return dx

    def __repr__(self) -> str:
        return f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps:g})"


class InstanceNorm(GroupNorm):
    """Instance normalisation: :class:`GroupNorm` with one channel per group.

    Like ``torch.nn.InstanceNorm2d(num_features, affine=True)`` in training
    mode (no running statistics): input ``(N, C, H, W)`` or ``(N, C, L)``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__(num_features, num_features, eps)

    def _check(self, x: np.ndarray) -> None:
        super()._check(x)
        if x.ndim < 3:
            raise ValueError(f"InstanceNorm needs spatial axes, x of shape (N, C, H, W) or "
                             f"(N, C, L); got {x.shape}")

    def __repr__(self) -> str:
        return f"InstanceNorm({self.num_channels}, eps={self.eps:g})"


class RMSNorm(Layer):
    """RMS normalisation layer, like ``torch.nn.RMSNorm(normalized_shape, eps)``.

    ``normalized_shape`` is ``x.shape[1:]`` (an int for 2-D input); ``gamma``
    (ones) has that shape; there is no ``beta``.  Same in training and eval.
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5):
        shape = _validate.shape(normalized_shape, "normalized_shape")
        self.normalized_shape, self.eps = shape, _validate.eps(eps)
        self.gamma, self.dgamma = np.ones(shape), np.zeros(shape)
        self.training = True
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[1:] != self.normalized_shape:
            raise ValueError(f"RMSNorm expects x of shape (N, "
                             f"{', '.join(map(str, self.normalized_shape))}); got {x.shape}")
        y, self._cache = rmsnorm_forward(x, self.gamma, self.eps)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        cache = self._need_forward("_cache")
        dx, self.dgamma[...] = rmsnorm_backward(dy, cache)
        return dx

    def params(self) -> list[np.ndarray]:
        return [self.gamma]

    def grads(self) -> list[np.ndarray]:
        return [self.dgamma]

    def __repr__(self) -> str:
        n = self.normalized_shape[0] if len(self.normalized_shape) == 1 else self.normalized_shape
        return f"RMSNorm({n}, eps={self.eps:g})"
