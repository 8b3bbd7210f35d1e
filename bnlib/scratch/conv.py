"""Convolution and the conv-BN-ReLU block, forward and backward, in NumPy (chapter 3, section 3.10).

A 2-D convolution (cross-correlation, as in every deep-learning framework) of
``x`` of shape ``(N, C, H, W)`` with filters ``w`` of shape ``(F, C, kh, kw)``::

    out[n, f, i, j] = b[f] + sum_{c, p, q} w[f, c, p, q] * xpad[n, c, i*s + p, j*s + q]

with ``xpad`` the input padded by ``padding`` zeros on each side and stride ``s``.
Its gradients, for an upstream gradient ``dout`` of the shape of ``out``::

    db[f]          = sum_{n, i, j} dout[n, f, i, j]
    dw[f, c, p, q] = sum_{n, i, j} dout[n, f, i, j] * xpad[n, c, i*s + p, j*s + q]
    dxpad[n, c, i*s + p, j*s + q] += sum_f dout[n, f, i, j] * w[f, c, p, q]

(every input value receives the gradient of every output it contributed to;
the padding's gradient is then cut off).

The conv-BN-ReLU block of a convolutional network with batch normalization is

    z = conv(x, w)                 no bias: BN's beta does its job (section 3.3)
    y = BN2d(z; gamma, beta)       statistics per channel over N, H, W (section 3.7.4)
    a = max(y, 0)

and its backward pass chains the three backward passes.  BN2d is
:func:`bnlib.scratch.batchnorm_forward` on 4-D input: one mean, variance,
``gamma`` and ``beta`` per channel, ``m = N * H * W`` values per channel.

Only NumPy; float64 unless the input is float32.  The patches are a strided
view (``sliding_window_view``), not a copy, and contracted with ``einsum``.
"""
from __future__ import annotations

import numpy as np

from .functional import batchnorm_backward, batchnorm_forward

__all__ = ["conv2d_forward", "conv2d_backward", "conv_bn_relu_forward", "conv_bn_relu_backward",
           "conv_relu_forward", "conv_relu_backward"]


def _patches(xpad: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """View of shape (N, C, Ho, Wo, kh, kw): the input window under every output position."""
    win = np.lib.stride_tricks.sliding_window_view(xpad, (kh, kw), axis=(2, 3))
    return win[:, :, ::stride, ::stride]


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
                   stride: int = 1, padding: int = 0) -> tuple[np.ndarray, dict]:
    """2-D convolution of ``x`` (N, C, H, W) with ``w`` (F, C, kh, kw); optional bias ``b`` (F,).

    Returns ``out`` of shape (N, F, Ho, Wo), ``Ho = (H + 2 padding - kh) // stride + 1``,
    and a cache for :func:`conv2d_backward`.  Same numbers as
    ``torch.nn.functional.conv2d(x, w, b, stride, padding)``.
    """
    x, w = np.asarray(x), np.asarray(w)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, C, H, W); got shape {x.shape}")
    if w.ndim != 4 or w.shape[1] != x.shape[1]:
        raise ValueError(f"w must have shape (F, C={x.shape[1]}, kh, kw); got shape {w.shape}")
    if b is not None and np.shape(b) != (w.shape[0],):
        raise ValueError(f"b must have shape ({w.shape[0]},); got shape {np.shape(b)}")
    if stride < 1 or padding < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0; got {stride}, {padding}")
    kh, kw = w.shape[2:]
    if x.shape[2] + 2 * padding < kh or x.shape[3] + 2 * padding < kw:
        raise ValueError(f"the {kh}x{kw} filter is larger than the padded input {x.shape[2:]}")
    p = padding
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    out = np.einsum("nchwpq,fcpq->nfhw", _patches(xpad, kh, kw, stride), w, optimize=True)
    if b is not None:
        out = out + np.asarray(b).reshape(1, -1, 1, 1)
    cache = {"xpad": xpad, "w": w, "stride": stride, "padding": padding,
             "x_shape": x.shape, "has_bias": b is not None}
    return out, cache


def conv2d_backward(dout: np.ndarray, cache: dict
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients ``(dx, dw, db)`` of :func:`conv2d_forward` (``db`` is None without a bias)."""
    xpad, w, s, p = cache["xpad"], cache["w"], cache["stride"], cache["padding"]
    kh, kw = w.shape[2:]
    Ho, Wo = dout.shape[2:]
    dw = np.einsum("nfhw,nchwpq->fcpq", dout, _patches(xpad, kh, kw, s), optimize=True)
    db = dout.sum(axis=(0, 2, 3)) if cache["has_bias"] else None
    dxpad = np.zeros_like(xpad, dtype=np.result_type(dout, w))
    for i in range(kh):              # filter offset (i, j) sends dout back to the inputs it read
        for j in range(kw):
            dxpad[:, :, i:i + s * (Ho - 1) + 1:s, j:j + s * (Wo - 1) + 1:s] += np.einsum(
                "nfhw,fc->nchw", dout, w[:, :, i, j], optimize=True)
    H, W = cache["x_shape"][2:]
    dx = dxpad[:, :, p:p + H, p:p + W]
    return dx, dw, db


def conv_bn_relu_forward(x: np.ndarray, w: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                         stride: int = 1, padding: int = 0, eps: float = 1e-5
                         ) -> tuple[np.ndarray, dict]:
    """The block ``relu(BN2d(conv(x, w)))``, training mode; returns ``(a, cache)``.

    The convolution has no bias: BN subtracts each channel's mean, so a bias
    would change nothing (chapter 3, section 3.3).
    """
    z, conv_cache = conv2d_forward(x, w, None, stride, padding)
    y, bn_cache = batchnorm_forward(z, gamma, beta, eps)
    a = np.maximum(y, 0.0)
    return a, {"conv": conv_cache, "bn": bn_cache, "y": y}


def conv_bn_relu_backward(da: np.ndarray, cache: dict
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dw, dgamma, dbeta)`` of :func:`conv_bn_relu_forward`."""
    dy = da * (cache["y"] > 0)                                   # ReLU
    dz, dgamma, dbeta = batchnorm_backward(dy, cache["bn"])      # BN2d, eq. ch3-dx per channel
    dx, dw, _ = conv2d_backward(dz, cache["conv"])
    return dx, dw, dgamma, dbeta


def conv_relu_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1,
                      padding: int = 0) -> tuple[np.ndarray, dict]:
    """The block without batch norm, ``relu(conv(x, w) + b)``; returns ``(a, cache)``."""
    z, conv_cache = conv2d_forward(x, w, b, stride, padding)
    return np.maximum(z, 0.0), {"conv": conv_cache, "z": z}


def conv_relu_backward(da: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients ``(dx, dw, db)`` of :func:`conv_relu_forward`."""
    return conv2d_backward(da * (cache["z"] > 0), cache["conv"])


# ---------------------------------------------------------------- layers

from .layers import Layer  # noqa: E402


class Conv2d(Layer):
    """Convolutional layer on ``(N, C, H, W)`` input (chapter 3, section 3.10), like ``torch.nn.Conv2d``.

    ``w`` has shape ``(out_channels, in_channels, k, k)``, drawn from N(0, 2 / fan_in) (He) unless
    given; ``bias=False`` is what a layer followed by batch norm wants (section 3.3).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True, rng=None, w: np.ndarray | None = None):
        k = int(kernel_size)
        shape = (int(out_channels), int(in_channels), k, k)
        if w is None:
            rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
            w = rng.normal(size=shape) * np.sqrt(2.0 / (in_channels * k * k))
        self.w = np.array(w, dtype=np.float64)
        if self.w.shape != shape:
            raise ValueError(f"w must have shape {shape}; got {self.w.shape}")
        self.b = np.zeros(out_channels) if bias else None
        self.dw = np.zeros_like(self.w)
        self.db = np.zeros(out_channels) if bias else None
        self.stride, self.padding = int(stride), int(padding)
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, self._cache = conv2d_forward(x, self.w, self.b, self.stride, self.padding)
        return out

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx, dw, db = conv2d_backward(dy, self._need_forward("_cache"))
        self.dw[...] = dw
        if self.b is not None:
            self.db[...] = db
        return dx

    def params(self) -> list[np.ndarray]:
        return [self.w] if self.b is None else [self.w, self.b]

    def grads(self) -> list[np.ndarray]:
        return [self.dw] if self.b is None else [self.dw, self.db]

    def __repr__(self) -> str:
        f, c, k, _ = self.w.shape
        return (f"Conv2d({c}, {f}, kernel_size={k}, stride={self.stride}, padding={self.padding}"
                + (", bias=False)" if self.b is None else ")"))


class GlobalAvgPool(Layer):
    """``(N, C, H, W) -> (N, C)``: the mean of every feature map (``x.mean(axis=(2, 3))``)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"GlobalAvgPool expects (N, C, H, W) input; got shape {x.shape}")
        self._shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        N, C, H, W = self._need_forward("_shape")
        return np.broadcast_to(np.asarray(dy)[:, :, None, None] / (H * W), (N, C, H, W)).copy()


__all__ += ["Conv2d", "GlobalAvgPool"]
