"""Input standardisation (chapter 1) and the small tabular data set it is shown on.

* :func:`standardize` - subtract each feature's training mean and divide by its
  training standard deviation, eq. (ch1-standardize);
* :func:`wine` - scikit-learn's wine recipes (178 wines, 13 chemical
  measurements whose scales differ by a factor of more than 2,000), shipped
  with scikit-learn, so nothing is downloaded.

NumPy only (scikit-learn is imported inside :func:`wine`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Standardized", "standardize", "wine"]


@dataclass
class Standardized:
    """What :func:`standardize` returns: the arrays and the statistics used."""

    x_train: np.ndarray
    x_test: np.ndarray | None
    mean: np.ndarray     # (D,) per-feature mean of the training set
    std: np.ndarray      # (D,) per-feature (biased) standard deviation of the training set


def standardize(x_train: np.ndarray, x_test: np.ndarray | None = None) -> Standardized:
    """Chapter 1, eq. (ch1-standardize): x_hat_j = (x_j - mu_j) / sigma_j, feature by feature.

    ``mu_j`` and ``sigma_j`` are the mean and the standard deviation of column
    ``j`` of ``x_train`` (examples along axis 0); ``x_test`` is transformed with
    the *same* numbers, never its own.  A feature that is constant in the
    training set (``sigma_j = 0``) is only centred, so it comes out as 0
    instead of NaN.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    if x_train.ndim != 2 or x_train.shape[0] < 2:
        raise ValueError(f"x_train must be 2-D (examples, features) with at least 2 examples; "
                         f"got shape {x_train.shape}")
    if not np.all(np.isfinite(x_train)):
        raise ValueError("x_train contains NaN or inf")
    mu = x_train.mean(axis=0)
    sigma = x_train.std(axis=0)
    scale = np.where(sigma > 0, sigma, 1.0)
    out_test = None
    if x_test is not None:
        x_test = np.asarray(x_test, dtype=np.float64)
        if x_test.ndim != 2 or x_test.shape[1] != x_train.shape[1]:
            raise ValueError(f"x_test must have shape (M, {x_train.shape[1]}); got {x_test.shape}")
        out_test = (x_test - mu) / scale
    return Standardized((x_train - mu) / scale, out_test, mu, sigma)


def wine() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's wine data: ``(x, labels, feature_names)``, x of shape (178, 13).

    Chemical analyses of 178 Italian wines from three cultivars.  The features
    are raw measurements in their own units: proline is in the hundreds, hue
    and the non-flavanoid phenols are below 1, so the columns' standard
    deviations range from 0.12 to 315.
    """
    from sklearn.datasets import load_wine

    d = load_wine()
    return np.asarray(d.data, dtype=np.float64), np.asarray(d.target), list(d.feature_names)
