"""Loss functions, each returning ``(loss, gradient w.r.t. the prediction)``.

Both average over the examples (axis 0), so the gradient of the mean loss
carries a factor ``1/N`` and a learning rate means the same for any batch size.
"""
from __future__ import annotations

import numpy as np

__all__ = ["mse_loss", "softmax_cross_entropy", "softmax"]


def mse_loss(pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Quadratic cost ``C = 1/(2N) * sum ||pred - target||^2`` and ``dC/dpred = (pred - target)/N``.

    Mean over the N examples of half the squared error summed over the outputs
    (the convention of Nielsen's book, used in chapter 2).  Note that
    ``torch.nn.MSELoss`` instead averages over *every element* and has no 1/2:
    for ``pred`` of shape ``(N, K)`` it equals ``2 * C / K``.
    """
    pred = np.asarray(pred, dtype=float)
    target = np.asarray(target, dtype=float)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape; got {pred.shape} "
                         f"and {target.shape}")
    if pred.ndim == 0 or pred.shape[0] == 0:
        raise ValueError(f"pred must have a non-empty batch axis 0; got shape {pred.shape}")
    n = pred.shape[0]
    diff = pred - target
    loss = 0.5 * float(np.sum(diff * diff)) / n
    return loss, diff / n


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so exp never overflows."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer class labels.

    ``loss = -1/N sum_i log softmax(logits_i)[labels_i]`` and
    ``dloss/dlogits = (softmax(logits) - onehot(labels)) / N``; the same value as
    ``torch.nn.functional.cross_entropy(logits, labels)``.
    """
    logits = np.asarray(logits, dtype=float)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (N, classes); got shape {logits.shape}")
    n, k = logits.shape
    if n == 0:
        raise ValueError("logits must contain at least one example")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), one class index per example; "
                         f"got {labels.shape}")
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise ValueError(f"labels must be integer class indices; got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}; got values from {labels.min()} "
                         f"to {labels.max()}")
    z = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(z).sum(axis=1, keepdims=True))
    log_p = z - log_z                                      # log softmax
    rows = np.arange(n)
    loss = -float(log_p[rows, labels].mean())
    grad = np.exp(log_p)
    grad[rows, labels] -= 1.0
    grad /= n
    return loss, grad
