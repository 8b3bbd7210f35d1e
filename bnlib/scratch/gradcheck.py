"""Numerical gradient checking (chapter 3): central differences and relative error."""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["numerical_gradient", "rel_error"]


def numerical_gradient(f: Callable[[], float] | Callable[[np.ndarray], float],
                       x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Central-difference gradient of the scalar ``f`` with respect to the array ``x``.

    ``x`` is perturbed IN PLACE, one element at a time, ``df/dx_i ~
    (f(x + h e_i) - f(x - h e_i)) / (2h)`` (error O(h^2)), and restored after
    each element, so ``f`` may read ``x`` from a closure (``f()``) or take it as
    its argument (``f(x)``).  ``x`` must be a float64 array for h = 1e-5 to give
    ~1e-10 accuracy.
    """
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise ValueError("x must be a float numpy array (it is perturbed in place)")
    try:
        n_args = f.__code__.co_argcount - (1 if hasattr(f, "__self__") else 0)
    except AttributeError:
        n_args = 1
    call = (lambda: f(x)) if n_args >= 1 else f
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        f_plus = float(call())
        x[i] = old - h
        f_minus = float(call())
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2.0 * h)
        it.iternext()
    return grad


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """Relative error ``||a - b|| / (||a|| + ||b||)`` (Euclidean norms; 0 = identical).

    A norm over the whole array, not element by element: an element that
    happens to be close to zero in both arrays would otherwise dominate the
    result with a meaningless ratio of two rounding errors.  Float64 analytic
    gradients checked against ``numerical_gradient`` typically give 1e-10 or
    less; above 1e-6 something is wrong.  Both zero gives 0.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape; got {a.shape} and {b.shape}")
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    if denom == 0.0:
        return 0.0
    return float(np.linalg.norm(a - b) / denom)
