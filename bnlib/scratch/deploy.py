"""Folding batch norm into the layer before it, in NumPy (chapter 5, section 5.6).

In eval mode batch norm is a fixed affine map per feature,
``y = s * (z - running_mean) + beta`` with ``s = gamma / sqrt(running_var + eps)``.
When ``z = x @ W + b`` comes from a ``Linear`` layer, the two maps compose
into one ``Linear`` (eq. ``ch5-fold``)::

    W' = W * s          (each output column scaled)
    b' = (b - running_mean) * s + beta

:func:`fold_linear_bn` is the formula, :func:`fold_batchnorm` applies it to a
whole :class:`~bnlib.scratch.layers.Sequential`.  NumPy only;
:func:`bnlib.torch.fold_batchnorm` does the same for PyTorch models
(``Linear`` and ``Conv2d``).
"""
from __future__ import annotations

import copy

import numpy as np

__all__ = ["fold_linear_bn", "fold_batchnorm"]


def fold_linear_bn(W: np.ndarray, b: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray,
                   running_mean: np.ndarray, running_var: np.ndarray,
                   eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """``(W', b')`` of the ``Linear`` layer equal to ``Linear(W, b)`` then eval-mode BN (eq. ``ch5-fold``).

    ``W`` has the scratch layout ``(n_in, n_out)``; ``b`` is ``(n_out,)`` or
    None (no bias); the BN arrays are ``(n_out,)``.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"W must be (n_in, n_out); got shape {W.shape}")
    n_out = W.shape[1]
    arrays = {"gamma": gamma, "beta": beta, "running_mean": running_mean,
              "running_var": running_var}
    if b is not None:
        arrays["b"] = b
    for name, a in arrays.items():
        if np.shape(a) != (n_out,):
            raise ValueError(f"{name} must have shape ({n_out},) to match W's {n_out} outputs; "
                             f"got {np.shape(a)}")
    s = np.asarray(gamma, dtype=np.float64) / np.sqrt(np.asarray(running_var, dtype=np.float64)
                                                      + eps)
    b = np.zeros(n_out) if b is None else np.asarray(b, dtype=np.float64)
    return W * s, (b - running_mean) * s + beta


def fold_batchnorm(model):
    """A copy of a scratch network with every ``BatchNorm`` that follows a ``Linear`` folded into it.

    The copy computes what the original computes in eval mode (the running
    statistics are baked into the weights) and is returned in eval mode; the
    original is untouched.  A batch norm that does not directly follow a
    ``Linear`` (for instance after the non-linearity) stays, in eval mode.
    Nested ``Sequential`` layers are folded too.
    """
    from .layers import BatchNorm, Linear, Sequential

    if not isinstance(model, Sequential):
        raise ValueError(f"fold_batchnorm expects a scratch Sequential; got {type(model).__name__}")

    def fold(seq: Sequential) -> Sequential:
        out = []
        for layer in seq.layers:
            if isinstance(layer, Sequential):
                out.append(fold(layer))
            elif (isinstance(layer, BatchNorm) and out and isinstance(out[-1], Linear)
                  and out[-1].n_out == layer.num_features):
                lin = out[-1]
                W, b = fold_linear_bn(lin.W, lin.b, layer.gamma, layer.beta,
                                      layer.running_mean, layer.running_var, layer.eps)
                lin.W[...] = W
                if lin.b is None:
                    lin.b, lin.db = np.zeros(lin.n_out), np.zeros(lin.n_out)
                lin.b[...] = b
            else:
                out.append(copy.deepcopy(layer))
        return Sequential(*out)

    return fold(model).eval()
