"""Layers with hand-written backward passes (chapters 2-7).

Every layer has the same small interface:

* ``forward(x)``  computes the output and caches what ``backward`` needs;
* ``backward(dy)`` takes the gradient of the loss w.r.t. the output, stores
  the parameter gradients (``grads()``) and returns the gradient w.r.t. ``x``;
* ``params()`` / ``grads()`` list the parameter arrays and their gradients in
  the same order; optimisers (:mod:`bnlib.scratch.optim`) update the params
  IN PLACE, so the lists stay valid for the life of the layer;
* ``train()`` / ``eval()`` switch the mode (only batch norm behaves
  differently) and return the layer, like PyTorch.

Examples run along axis 0; ``Linear`` takes ``(N, n_in)``; ``BatchNorm``
takes ``(N, D)`` or ``(N, C, H, W)``.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from bnlib import _validate
from . import functional as F
from . import init as initializers

__all__ = ["Layer", "AffineNorm", "Linear", "BatchNorm", "LayerNorm", "ReLU", "Tanh", "Sigmoid",
           "Identity", "Sequential", "mlp"]


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng must be None, an int seed or a numpy Generator; got {type(rng).__name__}")


class Layer:
    """Base class: no parameters, mode flag ``training``."""

    training: bool = True

    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def params(self) -> list[np.ndarray]:
        return []

    def grads(self) -> list[np.ndarray]:
        return []

    def train(self, mode: bool = True) -> "Layer":
        self.training = bool(mode)
        return self

    def eval(self) -> "Layer":
        return self.train(False)

    def _need_forward(self, name: str):
        value = getattr(self, name, None)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return value

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AffineNorm(Layer):
    """Base of the normalisation layers with a scale ``gamma`` and a shift ``beta``
    (and their gradients ``dgamma``, ``dbeta`` set by ``backward``)."""

    def params(self) -> list[np.ndarray]:
        return [self.gamma, self.beta]

    def grads(self) -> list[np.ndarray]:
        return [self.dgamma, self.dbeta]


class Linear(Layer):
    """Affine layer ``z = x @ W + b`` with ``W`` of shape ``(n_in, n_out)`` (chapter 2).

    ``init`` names an initialiser of :mod:`bnlib.scratch.init` (or is a
    callable ``f(n_in, n_out, rng)``); the bias starts at zero.  Backward::

        dW = x.T @ dz,   db = sum(dz, axis=0),   dx = dz @ W.T
    """

    def __init__(self, n_in: int, n_out: int, init: str | Callable = "lecun_normal",
                 bias: bool = True, rng=None):
        make = initializers.get(init)
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.init_name = getattr(make, "__name__", str(init))
        self.W = np.ascontiguousarray(make(n_in, n_out, _generator(rng)), dtype=np.float64)
        if self.W.shape != (n_in, n_out):
            raise ValueError(f"init returned shape {self.W.shape}; expected ({n_in}, {n_out})")
        self.b = np.zeros(n_out) if bias else None
        self.dW = np.zeros_like(self.W)
        self.db = np.zeros(n_out) if bias else None
        self._x = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"Linear({self.n_in}, {self.n_out}) expects x of shape "
                             f"(N, {self.n_in}); got {x.shape}")
        self._x = x
        z = x @ self.W
        if self.b is not None:
            z += self.b
        return z

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x = self._need_forward("_x")
        dy = np.asarray(dy)
        if dy.shape != (x.shape[0], self.n_out):
            raise ValueError(f"dy must have shape {(x.shape[0], self.n_out)}; got {dy.shape}")
        np.matmul(x.T, dy, out=self.dW)
        if self.b is not None:
            np.sum(dy, axis=0, out=self.db)
        return dy @ self.W.T

    def params(self) -> list[np.ndarray]:
        return [self.W] if self.b is None else [self.W, self.b]

    def grads(self) -> list[np.ndarray]:
        return [self.dW] if self.b is None else [self.dW, self.db]

    def __repr__(self) -> str:
        extra = "" if self.b is not None else ", bias=False"
        return f"Linear({self.n_in}, {self.n_out}, init={self.init_name!r}{extra})"


class BatchNorm(AffineNorm):
    """Batch normalisation (chapters 3-5) for ``(N, D)`` or ``(N, C, H, W)`` input.

    Training mode normalises with the statistics of the batch
    (:func:`~bnlib.scratch.functional.batchnorm_forward`) and updates the
    running statistics with PyTorch's conventions::

        running_mean = (1 - momentum) * running_mean + momentum * mu
        running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)

    (the *unbiased* batch variance for the running estimate, the biased one to
    normalise).  ``momentum=None`` means a cumulative average: the factor is
    ``1 / num_batches_tracked``.  Eval mode normalises with the running
    statistics (:func:`~bnlib.scratch.functional.batchnorm_eval`), so each
    example is treated on its own.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        self.num_features = _validate.positive_int(num_features, "num_features")
        self.eps = _validate.eps(eps)
        self.momentum = _validate.momentum(momentum)
        self.gamma = np.ones(num_features)
        self.beta = np.zeros(num_features)
        self.dgamma = np.zeros(num_features)
        self.dbeta = np.zeros(num_features)
        self.running_mean = np.zeros(num_features)
        self.running_var = np.ones(num_features)
        self.num_batches_tracked = 0
        self.training = True
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm({self.num_features}) expects x of shape "
                             f"(N, {self.num_features}) or (N, {self.num_features}, H, W); "
                             f"got {x.shape}")
        if not self.training:
            self._cache = ("eval", x)
            return F.batchnorm_eval(x, self.gamma, self.beta, self.running_mean,
                                    self.running_var, self.eps)
        y, cache = F.batchnorm_forward(x, self.gamma, self.beta, self.eps)
        self._cache = ("train", cache)
        self._update_running(cache["mu"], cache["var"], cache["m"])
        return y

    def _update_running(self, mu: np.ndarray, var: np.ndarray, m: int) -> None:
        self.num_batches_tracked += 1
        if self.momentum is None:
            factor = 1.0 / self.num_batches_tracked      # cumulative moving average
        else:
            factor = self.momentum
        unbiased_var = var * (m / (m - 1))
        self.running_mean *= 1.0 - factor
        self.running_mean += factor * mu
        self.running_var *= 1.0 - factor
        self.running_var += factor * unbiased_var

    def backward(self, dy: np.ndarray) -> np.ndarray:
        mode, saved = self._need_forward("_cache")
        if mode == "train":
            dx, self.dgamma[...], self.dbeta[...] = F.batchnorm_backward(dy, saved)
            return dx
        # eval mode: y is an affine function of x with fixed statistics
        x = saved
        dy = np.asarray(dy, dtype=float)
        if dy.shape != x.shape:
            raise ValueError(f"dy must have shape {x.shape}; got {dy.shape}")
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        inv_std = 1.0 / np.sqrt(self.running_var + self.eps)
        x_hat = (x - self.running_mean.reshape(shape)) * inv_std.reshape(shape)
        self.dbeta[...] = dy.sum(axis=axes)
        self.dgamma[...] = (dy * x_hat).sum(axis=axes)
        dx = dy * (self.gamma * inv_std).reshape(shape)
        return dx.astype(x.dtype, copy=False) if np.issubdtype(x.dtype, np.floating) else dx

    def __repr__(self) -> str:
        return f"BatchNorm({self.num_features}, eps={self.eps:g}, momentum={self.momentum})"


class LayerNorm(AffineNorm):
    """Layer normalisation (chapter 6): statistics per example over its features.

    ``num_features`` is the feature shape ``x.shape[1:]`` (an int for 2-D
    input); ``gamma``/``beta`` have that shape.  Same in training and eval.
    """

    def __init__(self, num_features: int | tuple[int, ...], eps: float = 1e-5):
        shape = _validate.shape(num_features, "num_features")
        self.normalized_shape = shape
        self.num_features = shape[0] if len(shape) == 1 else shape
        self.eps = _validate.eps(eps)
        self.gamma = np.ones(shape)
        self.beta = np.zeros(shape)
        self.dgamma = np.zeros(shape)
        self.dbeta = np.zeros(shape)
        self.training = True
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[1:] != self.normalized_shape:
            raise ValueError(f"LayerNorm expects x of shape (N, {', '.join(map(str, self.normalized_shape))}); "
                             f"got {x.shape}")
        y, self._cache = F.layernorm_forward(x, self.gamma, self.beta, self.eps)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        cache = self._need_forward("_cache")
        dx, self.dgamma[...], self.dbeta[...] = F.layernorm_backward(dy, cache)
        return dx

    def __repr__(self) -> str:
        n = self.normalized_shape[0] if len(self.normalized_shape) == 1 else self.normalized_shape
        return f"LayerNorm({n}, eps={self.eps:g})"


class ReLU(Layer):
    """``max(0, z)``; gradient 1 where z > 0, else 0."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._mask = np.asarray(x) > 0
        return np.where(self._mask, x, 0.0)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return np.where(self._need_forward("_mask"), dy, 0.0)


class Tanh(Layer):
    """``tanh(z)``; gradient ``1 - tanh(z)^2``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = np.tanh(x)
        return self._y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._need_forward("_y")
        return dy * (1.0 - y * y)


class Sigmoid(Layer):
    """``1 / (1 + exp(-z))``; gradient ``s (1 - s)``.  Computed without overflow."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        e = np.exp(-np.abs(x))                       # never overflows
        self._y = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return self._y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._need_forward("_y")
        return dy * y * (1.0 - y)


class Identity(Layer):
    """Passes its input through (the "identity" activation of :func:`mlp`)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy


class Sequential(Layer):
    """A chain of layers: forward left to right, backward right to left."""

    def __init__(self, *layers: Layer):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not hasattr(layer, "forward") or not hasattr(layer, "backward"):
                raise ValueError(f"layer {i} ({layer!r}) has no forward/backward")
        self.layers = list(layers)
        self.training = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def params(self) -> list[np.ndarray]:
        return [p for layer in self.layers for p in layer.params()]

    def grads(self) -> list[np.ndarray]:
        return [g for layer in self.layers for g in layer.grads()]

    def train(self, mode: bool = True) -> "Sequential":
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.layers[i])
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __repr__(self) -> str:
        lines = [f"  ({i}): {layer!r}".replace("\n", "\n  ") for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)" if lines else "Sequential()"


_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid, "identity": Identity}


def mlp(sizes, activation: str = "relu", norm: str | None = None,
        init: str | Callable = "lecun_normal", bias: bool = True, rng=None,
        norm_position: str = "before") -> Sequential:
    """A multi-layer perceptron ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Every hidden layer is ``Linear -> [norm] -> activation`` (``norm_position=
    "before"``, as Ioffe & Szegedy) or ``Linear -> activation -> [norm]``
    (``"after"``); the output layer is a plain ``Linear`` (logits).  ``norm``
    is None, ``"bn"`` (:class:`BatchNorm`) or ``"ln"`` (:class:`LayerNorm`).
    ``rng`` (None, seed or Generator) draws every weight matrix in turn.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list at least an input and an output size, all positive; "
                         f"got {sizes}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}; got {activation!r}")
    norms = {None: None, "bn": BatchNorm, "ln": LayerNorm}
    if norm not in norms:
        raise ValueError(f"norm must be None, 'bn' or 'ln'; got {norm!r}")
    if norm_position not in ("before", "after"):
        raise ValueError(f"norm_position must be 'before' or 'after'; got {norm_position!r}")
    initializers.get(init)                         # fail early on a bad name
    gen = _generator(rng)
    layers: list[Layer] = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(Linear(n_in, n_out, init=init, bias=bias, rng=gen))
        act = _ACTIVATIONS[activation]()
        if norm is None:
            layers.append(act)
        elif norm_position == "before":
            layers += [norms[norm](n_out), act]
        else:
            layers += [act, norms[norm](n_out)]
    layers.append(Linear(sizes[-2], sizes[-1], init=init, bias=bias, rng=gen))
    return Sequential(*layers)
