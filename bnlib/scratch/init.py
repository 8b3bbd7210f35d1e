"""Weight initialisers (chapter 2): each returns an ``(n_in, n_out)`` weight matrix.

A layer computes ``z = x @ W + b``; with independent inputs of unit variance,
``Var(z_j) = n_in * Var(w)`` (chapter 2, the variance of a sum).  The
initialisers differ only in the variance they give the weights:

==================  ===================================  ===========================
name                weight distribution                  keeps ... at unit scale
==================  ===================================  ===========================
standard_normal     N(0, 1)                              nothing: Var(z) = n_in
lecun_normal        N(0, 1/n_in)                         forward signal (LeCun 1998)
xavier_normal       N(0, 2/(n_in + n_out))               forward and backward (Glorot)
xavier_uniform      U(-a, a), a = sqrt(6/(n_in + n_out))  same variance as xavier_normal
kaiming_normal      N(0, 2/n_in)                         forward signal through ReLU (He)
==================  ===================================  ===========================

Every initialiser has the signature ``f(n_in, n_out, rng=None)``; ``rng`` is a
``numpy.random.Generator``, an integer seed or None (a fresh generator).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["standard_normal", "lecun_normal", "xavier_normal", "xavier_uniform",
           "kaiming_normal", "constant_normal", "get", "NAMES"]

Initializer = Callable[..., np.ndarray]


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise ValueError(f"rng must be None, an int seed or a numpy Generator; got {type(rng).__name__}")


def _check(n_in: int, n_out: int) -> None:
    for name, n in (("n_in", n_in), ("n_out", n_out)):
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{name} must be a positive integer; got {n!r}")


def _normal(n_in: int, n_out: int, std: float, rng) -> np.ndarray:
    _check(n_in, n_out)
    return std * _rng(rng).standard_normal((n_in, n_out))


def standard_normal(n_in: int, n_out: int, rng=None) -> np.ndarray:
    """w ~ N(0, 1): the naive choice, Var(z) grows like n_in (chapter 2)."""
    return _normal(n_in, n_out, 1.0, rng)


def lecun_normal(n_in: int, n_out: int, rng=None) -> np.ndarray:
    """w ~ N(0, 1/n_in): std 1/sqrt(n_in), so Var(z) = Var(x) (chapter 2)."""
    _check(n_in, n_out)
    return _normal(n_in, n_out, 1.0 / np.sqrt(n_in), rng)


def xavier_normal(n_in: int, n_out: int, rng=None) -> np.ndarray:
    """w ~ N(0, 2/(n_in + n_out)) (Glorot & Bengio 2010, chapter 2)."""
    _check(n_in, n_out)
    return _normal(n_in, n_out, np.sqrt(2.0 / (n_in + n_out)), rng)


def xavier_uniform(n_in: int, n_out: int, rng=None) -> np.ndarray:
    """w ~ U(-a, a) with a = sqrt(6/(n_in + n_out)): variance 2/(n_in + n_out)."""
    _check(n_in, n_out)
    a = np.sqrt(6.0 / (n_in + n_out))
    return _rng(rng).uniform(-a, a, size=(n_in, n_out))


def kaiming_normal(n_in: int, n_out: int, rng=None) -> np.ndarray:
    """w ~ N(0, 2/n_in) (He et al. 2015): ReLU halves the variance, this doubles it back."""
    _check(n_in, n_out)
    return _normal(n_in, n_out, np.sqrt(2.0 / n_in), rng)


def constant_normal(std: float) -> Initializer:
    """An initialiser drawing w ~ N(0, std^2) whatever the layer size (e.g. 0.01)."""
    if not std > 0:
        raise ValueError(f"std must be positive; got {std}")

    def init(n_in: int, n_out: int, rng=None) -> np.ndarray:
        return _normal(n_in, n_out, std, rng)

    init.__name__ = init.__qualname__ = f"constant_normal({std:g})"
    return init


_REGISTRY: dict[str, Initializer] = {
    "standard_normal": standard_normal,
    "lecun_normal": lecun_normal,
    "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform,
    "kaiming_normal": kaiming_normal,
}
NAMES = tuple(_REGISTRY)

#: the initialiser chapter 2 derives for each activation: Kaiming for ReLU, 1/sqrt(n_in) otherwise
FOR_ACTIVATION = {"relu": "kaiming_normal", "sigmoid": "lecun_normal", "tanh": "lecun_normal"}


def get(name: str | Initializer) -> Initializer:
    """The initialiser called ``name`` (one of NAMES); a callable is returned unchanged."""
    if callable(name):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown initialiser {name!r}; choose one of {', '.join(NAMES)} "
                         "or pass a callable f(n_in, n_out, rng)") from None
