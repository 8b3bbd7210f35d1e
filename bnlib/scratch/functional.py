"""Batch and layer normalisation, forward and backward, in NumPy (chapter 3).

Every function here works on a *batch* of examples along axis 0.  Input ``x``
is either

* 2-D ``(N, D)``: a batch of feature vectors; statistics per feature over the
  ``m = N`` examples, or
* 4-D ``(N, C, H, W)``: a batch of feature maps; statistics per channel over
  the ``m = N * H * W`` values of that channel (examples and positions).

Training-mode batch normalisation (chapter 3, equations ch3-mean, ch3-var,
ch3-xhat, ch3-affine)::

    mu      = mean(x)                    (ch3-mean)
    var     = mean((x - mu)**2)          (ch3-var, biased: divides by m)
    x_hat   = (x - mu) / sqrt(var + eps) (ch3-xhat)
    y       = gamma * x_hat + beta       (ch3-affine)

and its gradient in the compact closed form (ch3-dx)::

    dbeta  = sum(dy)
    dgamma = sum(dy * x_hat)
    dx     = gamma * inv_std / m * (m * dy - sum(dy) - x_hat * sum(dy * x_hat))

``batchnorm_backward_staged`` reaches the same numbers by walking the
computational graph node by node, the way an autograd engine would.

Numerics: the variance is computed in two passes (subtract the mean first,
then average the squares), with a correction for the rounding error of the
first mean, so that an input with a large mean and a small spread (say
mean 1e6, std 1e-2) is normalised to full precision.  The naive one-pass
``mean(x**2) - mean(x)**2`` would lose every digit there.

Dtypes: float32 input is computed in float32, float64 in float64, anything
else (integers, bools) is converted to float64 first.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_staged",
    "batchnorm_eval",
    "layernorm_forward",
    "layernorm_backward",
]


# ---------------------------------------------------------------- input checks

def _as_float_array(x, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be a real numeric array; got dtype {x.dtype}")
        x = x.astype(np.float64)
    return x


def _bn_axes(x: np.ndarray) -> tuple[int, ...]:
    """Reduction axes of batch norm: (0,) for (N, D), (0, 2, 3) for (N, C, H, W)."""
    if x.ndim == 2:
        return (0,)
    if x.ndim == 4:
        return (0, 2, 3)
    raise ValueError(
        f"x must be 2-D (N, D) or 4-D (N, C, H, W); got {x.ndim}-D input of shape {x.shape}")


def _param(p, n: int, name: str, what: str, dtype) -> np.ndarray:
    p = _as_float_array(p, name)
    if p.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one value per {what}; "
                         f"got shape {p.shape}")
    return p.astype(dtype, copy=False)


def _check_finite_input(x: np.ndarray, name: str = "x") -> None:
    """Full scan for NaN/inf; only called when the statistics came out non-finite."""
    bad = ~np.isfinite(x)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} contains non-finite values (NaN or inf), "
                         f"{int(bad.sum())} of them, the first at index {idx}")
    raise ValueError(f"{name} is finite but so large that its variance overflows "
                     f"(max |{name}| = {float(np.abs(x).max()):.3g}); rescale it")


def _channel_shape(ndim: int) -> tuple[int, ...]:
    return (1, -1) if ndim == 2 else (1, -1, 1, 1)


def _check_dy(dy, cache: dict) -> np.ndarray:
    x_hat = cache["x_hat"]
    dy = np.asarray(dy)
    if dy.shape != x_hat.shape:
        raise ValueError(f"dy must have the shape of the forward input {x_hat.shape}; "
                         f"got {dy.shape}")
    if dy.dtype != x_hat.dtype:
        dy = dy.astype(x_hat.dtype)
    return dy


# ------------------------------------------------------- batch normalisation

def _check_bn_input(x, gamma, beta, eps):
    """Validate the arguments of training-mode batch norm; return ``x, axes, m, gamma, beta``."""
    x = _as_float_array(x, "x")
    axes = _bn_axes(x)
    if x.size == 0:
        raise ValueError(f"x is empty (shape {x.shape}): nothing to normalise")
    C = x.shape[1]
    m = x.size // C
    if m == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size "
            f"{tuple(x.shape)}: the batch variance of a single value is 0")
    what = "channel" if x.ndim == 4 else "feature"
    gamma = _param(gamma, C, "gamma", what, x.dtype)
    beta = _param(beta, C, "beta", what, x.dtype)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    return x, axes, m, gamma, beta


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                      eps: float = 1e-5) -> tuple[np.ndarray, dict]:
    """Training-mode batch normalisation (chapter 3, eqs. ch3-mean, ch3-var, ch3-xhat, ch3-affine).

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

    The variance is computed in two passes: first the mean, then the average
    of the squared deviations from it.  ``correction``, the mean of ``x - mu``,
    is zero in exact arithmetic; in floating point it is the rounding error of
    ``mu``, and subtracting it keeps full precision even for an input with a
    large mean and a small spread (chapter 3, section 3.2).
    """
    x, axes, m, gamma, beta = _check_bn_input(x, gamma, beta, eps)
    shape = _channel_shape(x.ndim)                     # (1, C) or (1, C, 1, 1)
    with np.errstate(invalid="ignore", over="ignore"):   # NaN/inf input: ValueError below
        mu = x.mean(axis=axes, keepdims=True)                        # ch3-mean
        xc = x - mu                                                  # centred input
        correction = xc.mean(axis=axes, keepdims=True)               # rounding error of mu
        var = np.maximum((xc * xc).mean(axis=axes, keepdims=True) - correction**2, 0)  # ch3-var
    if not (np.isfinite(mu).all() and np.isfinite(var).all()):
        _check_finite_input(x)
    if eps == 0 and (var == 0).any():
        raise ValueError("a channel of x has zero variance and eps=0: x_hat would divide by "
                         "zero; use eps > 0")
    xc -= correction
    mu += correction
    inv_std = 1.0 / np.sqrt(var + x.dtype.type(eps))
    x_hat = xc * inv_std                                             # ch3-xhat
    y = gamma.reshape(shape) * x_hat + beta.reshape(shape)           # ch3-affine
    cache = {"x": x, "x_hat": x_hat, "mu": mu.reshape(-1), "var": var.reshape(-1),
             "inv_std": inv_std.reshape(-1), "gamma": gamma, "eps": eps, "m": m, "axes": axes}
    return y, cache


def batchnorm_backward(dy: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient of training-mode batch norm, compact closed form (chapter 3, eq. ch3-dx).

    With every sum per channel (over the reduction axes)::

        dbeta  = sum(dy)
        dgamma = sum(dy * x_hat)
        dx     = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)
    """
    dy = _check_dy(dy, cache)
    x_hat, inv_std, gamma, m, axes = (cache[k] for k in ("x_hat", "inv_std", "gamma", "m", "axes"))
    shape = _channel_shape(dy.ndim)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    scale = (gamma * inv_std / m).reshape(shape)
    dx = scale * (m * dy - dbeta.reshape(shape) - x_hat * dgamma.reshape(shape))
    return dx, dgamma, dbeta


def batchnorm_backward_staged(dy: np.ndarray, cache: dict
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient of training-mode batch norm, node by node (chapter 3, the computational graph).

    The forward pass is the chain of nodes::

        mu = mean(x);  xc = x - mu;  var = mean(xc**2);  std = sqrt(var + eps)
        inv_std = 1 / std;  x_hat = xc * inv_std;  y = gamma * x_hat + beta

    and this function walks it backwards, multiplying each node's upstream
    gradient by its local derivative.  A node used twice (``xc`` feeds
    ``var`` and ``x_hat``; ``x`` feeds ``mu`` and ``xc``) adds up the
    gradients from both uses.  It is slower than ``batchnorm_backward`` and
    exists to be read next to the graph; both give the same result.
    """
    dy = _check_dy(dy, cache)
    axes, m, gamma, eps = cache["axes"], cache["m"], cache["gamma"], cache["eps"]
    shape = _channel_shape(dy.ndim)
    g = gamma.reshape(shape)

    # recompute the forward nodes from x and the statistics
    x, mu, var = cache["x"], cache["mu"].reshape(shape), cache["var"].reshape(shape)
    xc = x - mu                                    # node: centred input
    std = np.sqrt(var + eps)                       # node: standard deviation
    inv_std = 1.0 / std                            # node: its reciprocal
    x_hat = xc * inv_std                           # node: normalised input

    # node y = gamma * x_hat + beta
    dbeta = dy.sum(axis=axes)                      # dy/dbeta = 1, summed over the batch
    dgamma = (dy * x_hat).sum(axis=axes)           # dy/dgamma = x_hat
    dx_hat = dy * g                                # dy/dx_hat = gamma

    # node x_hat = xc * inv_std  (xc is used here and in var: first branch)
    dxc = dx_hat * inv_std                         # d x_hat / d xc = inv_std
    dinv_std = (dx_hat * xc).sum(axis=axes, keepdims=True)   # d x_hat / d inv_std = xc

    # node inv_std = 1 / std
    dstd = dinv_std * (-1.0 / std**2)              # d(1/s)/ds = -1/s^2

    # node std = sqrt(var + eps)
    dvar = dstd * (0.5 / std)                      # d sqrt(v + eps)/dv = 1 / (2 sqrt(v + eps))

    # node var = mean(xc**2)  (second branch into xc: add it)
    dxc = dxc + dvar * (2.0 * xc / m)              # d var / d xc = 2 xc / m

    # node xc = x - mu  (x is used here and in mu: first branch)
    dx = dxc.copy()                                # d xc / d x = 1
    dmu = -dxc.sum(axis=axes, keepdims=True)       # d xc / d mu = -1, summed over the batch

    # node mu = mean(x)  (second branch into x: add it)
    dx += dmu / m                                  # d mu / d x = 1/m for every element
    return dx, dgamma, dbeta


def batchnorm_eval(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                   running_mean: np.ndarray, running_var: np.ndarray,
                   eps: float = 1e-5) -> np.ndarray:
    """Inference-mode batch norm (chapter 5): normalise with the running statistics.

    ``y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``; every
    example is treated independently, so a batch of one is fine.
    """
    x = _as_float_array(x, "x")
    _bn_axes(x)
    if x.size == 0:
        raise ValueError(f"x is empty (shape {x.shape}): nothing to normalise")
    C = x.shape[1]
    what = "channel" if x.ndim == 4 else "feature"
    gamma = _param(gamma, C, "gamma", what, x.dtype)
    beta = _param(beta, C, "beta", what, x.dtype)
    running_mean = _param(running_mean, C, "running_mean", what, x.dtype)
    running_var = _param(running_var, C, "running_var", what, x.dtype)
    if (running_var < 0).any():
        raise ValueError("running_var must be >= 0")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    if (running_var + eps <= 0).any():
        raise ValueError("running_var + eps must be > 0 for every "
                         f"{what} (a zero running variance needs eps > 0); got eps={eps}")
    if not np.isfinite(x).all():
        _check_finite_input(x)
    shape = _channel_shape(x.ndim)
    scale = gamma / np.sqrt(running_var + x.dtype.type(eps))     # gamma / sqrt(var + eps)
    y = x - running_mean.reshape(shape)      # subtract first: no cancellation for a large mean
    y *= scale.reshape(shape)
    y += beta.reshape(shape)
    return y


# ------------------------------------------------------- layer normalisation

def layernorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                      eps: float = 1e-5) -> tuple[np.ndarray, dict]:
    """Layer normalisation (chapter 6): statistics per example, over all axes but 0.

    ``x`` has shape ``(N, ...)``; ``gamma`` and ``beta`` have shape ``x.shape[1:]``
    (one scale and shift per feature, like ``torch.nn.LayerNorm(x.shape[1:])``).
    Same equations as batch norm (ch3-mean .. ch3-affine) with the roles of
    the axes swapped; it behaves the same in training and inference.
    """
    x = _as_float_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and at least one feature axis; "
                         f"got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"x is empty (shape {x.shape}): nothing to normalise")
    fshape = x.shape[1:]
    gamma, beta = _as_float_array(gamma, "gamma"), _as_float_array(beta, "beta")
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p.shape != fshape:
            raise ValueError(f"{name} must have shape {fshape} (x.shape[1:]); got {p.shape}")
    gamma, beta = gamma.astype(x.dtype, copy=False), beta.astype(x.dtype, copy=False)
    n = x.shape[0]
    m = x.size // max(n, 1)
    x2 = x.reshape(n, m)
    with np.errstate(invalid="ignore", over="ignore"):   # NaN/inf input: ValueError below
        mu = x2.mean(axis=1, keepdims=True)                  # per-example mean
        xc = x2 - mu
        correction = xc.mean(axis=1, keepdims=True)          # two-pass correction
        var = np.maximum(np.einsum("ni,ni->n", xc, xc)[:, None] / m - correction**2, 0.0)
    if not (np.isfinite(mu).all() and np.isfinite(var).all()):
        _check_finite_input(x)
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0; got {eps}")
    if eps == 0 and (var == 0).any():
        raise ValueError("an example of x has zero variance and eps=0: x_hat would divide by "
                         "zero; use eps > 0")
    xc -= correction
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = xc * inv_std
    y = x_hat * gamma.reshape(1, m) + beta.reshape(1, m)
    cache = {"x_hat": x_hat.reshape(x.shape), "inv_std": inv_std[:, 0], "gamma": gamma,
             "mu": (mu + correction)[:, 0], "var": var[:, 0], "eps": eps, "m": m}
    return y.reshape(x.shape), cache


def layernorm_backward(dy: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient of layer normalisation: the compact formula ch3-dx with the axes swapped.

    ``dgamma`` and ``dbeta`` sum over the batch (axis 0); the ``m`` in the
    formula for ``dx`` is the number of features of one example, and its
    sums run over the features.
    """
    dy = _check_dy(dy, cache)
    x_hat, inv_std, gamma, m = cache["x_hat"], cache["inv_std"], cache["gamma"], cache["m"]
    n = x_hat.shape[0]
    dy2, xh2 = dy.reshape(n, m), x_hat.reshape(n, m)
    dbeta = dy2.sum(axis=0).reshape(gamma.shape)
    dgamma = (dy2 * xh2).sum(axis=0).reshape(gamma.shape)
    g_dy = dy2 * gamma.reshape(1, m)                          # gradient w.r.t. x_hat
    sum_g = g_dy.sum(axis=1, keepdims=True)
    sum_gx = np.einsum("ni,ni->n", g_dy, xh2)[:, None]
    dx = (inv_std[:, None] / m) * (m * g_dy - sum_g - xh2 * sum_gx)
    return dx.reshape(x_hat.shape), dgamma, dbeta
