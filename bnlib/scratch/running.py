"""Running (population) statistics of batch norm, in NumPy (chapter 5).

At test time a batch-norm layer cannot use the statistics of the batch it is
given (there may be one example), so it uses estimates of the statistics of
the whole training population.  This module holds what chapter 5 says about
those estimates:

* :func:`population_statistics`  Ioffe & Szegedy's Algorithm 2: the mean of the
  batch means and ``m / (m - 1)`` times the mean of the batch variances
  (eq. ``ch5-alg2``);
* :func:`ema_update`             one step of the exponential moving average with
  PyTorch's convention (eq. ``ch5-ema``);
* :func:`convert_momentum`       between the conventions of PyTorch
  (``momentum`` weighs the new batch, default 0.1), Keras/TensorFlow
  (``momentum`` weighs the old value, default 0.99) and a "decay" as in
  ``tf.train.ExponentialMovingAverage`` (the input-normalisation post, src2018normalization, uses 0.5), eq. ``ch5-conv``;
* :func:`convert_running_var`    the running variance too: PyTorch averages the
  unbiased batch variances, Keras the biased ones (a factor ``m / (m - 1)``);
  :func:`keras_moving_statistics` is Keras's update written out in NumPy;
* :func:`initial_weight`, :func:`steps_to_forget`, :func:`ema_effective_batches`,
  :func:`ema_mean_age`  how long the average remembers its starting value and
  how many batches it effectively averages (eqs. ``ch5-forget``, ``ch5-window``);
* :func:`recompute_bn_stats`     recompute the running statistics of every
  :class:`~bnlib.scratch.layers.BatchNorm` of a network over many batches with
  the weights fixed (AdaBN, precise BN);
* :func:`bn_layers_in_training_mode`  the batch-norm layers of a network that
  are in training mode (the forgotten ``eval()``).

NumPy only.  :mod:`bnlib.torch.deploy` has the PyTorch counterparts.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

__all__ = ["CONVENTIONS", "population_statistics", "ema_update", "convert_momentum", "convert_running_var",
           "keras_moving_statistics",
           "initial_weight", "steps_to_forget", "ema_effective_batches", "ema_mean_age",
           "recompute_bn_stats", "bn_layers_in_training_mode", "batchnorm_layers"]

#: how each convention writes the update of a running statistic r with a batch statistic s
CONVENTIONS = {
    "pytorch": "r <- (1 - momentum) * r + momentum * s   (momentum weighs the new batch; 0.1)",
    "keras": "r <- momentum * r + (1 - momentum) * s     (momentum weighs the old value; 0.99)",
    "decay": "r <- decay * r + (1 - decay) * s           (tf.train.ExponentialMovingAverage)",
}


def _check_momentum(momentum: float, name: str = "momentum") -> float:
    momentum = float(momentum)
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] (PyTorch's convention); got {momentum}")
    return momentum


def population_statistics(batches: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ioffe & Szegedy's Algorithm 2: ``E[x] = mean of mu_B``, ``Var[x] = m/(m-1) mean of sigma_B^2``.

    ``batches`` are arrays ``(m, D)`` or ``(m, C, H, W)``, all with the same
    number of values per feature/channel ``m`` (as in training, where every
    mini-batch has the same size).  ``sigma_B^2`` is the biased variance of a
    batch (the one BN normalises with); the factor ``m / (m - 1)`` makes the
    estimate of the population variance unbiased (eq. ``ch5-alg2``).
    """
    means, variances, sizes = [], [], set()
    for k, x in enumerate(batches):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim not in (2, 4):
            raise ValueError(f"batch {k} must be (m, D) or (m, C, H, W); got shape {x.shape}")
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        m = x.size // x.shape[1]
        if m < 2:
            raise ValueError(f"batch {k} has {m} value per feature; Algorithm 2 needs m >= 2")
        sizes.add(m)
        means.append(x.mean(axis=axes))
        variances.append(x.var(axis=axes))
    if not means:
        raise ValueError("batches is empty: no statistics to average")
    if len(sizes) != 1:
        raise ValueError(f"all batches must have the same size m; got sizes {sorted(sizes)}")
    m = sizes.pop()
    return np.mean(means, axis=0), m / (m - 1) * np.mean(variances, axis=0)


def ema_update(running: np.ndarray, batch_stat: np.ndarray, momentum: float) -> np.ndarray:
    """One step of eq. ``ch5-ema``: ``(1 - momentum) * running + momentum * batch_stat`` (PyTorch)."""
    momentum = _check_momentum(momentum)
    return (1.0 - momentum) * np.asarray(running, dtype=float) + momentum * np.asarray(batch_stat)


def convert_momentum(value: float, source: str = "keras", target: str = "pytorch") -> float:
    """Convert a moving-average coefficient between conventions (eq. ``ch5-conv``).

    ``source`` and ``target`` are ``"pytorch"`` (the weight of the new batch:
    ``torch.nn.BatchNorm*d(momentum=0.1)``), ``"keras"`` (the weight of the old
    value: ``keras.layers.BatchNormalization(momentum=0.99)``) or ``"decay"``
    (``tf.train.ExponentialMovingAverage(decay=0.5)`` of the input-normalisation
    post, the same
    convention as Keras).  The two families are ``1 - x`` of each other::

        convert_momentum(0.99, "keras", "pytorch")  # 0.01, not 0.99!
    """
    for name, conv in (("source", source), ("target", target)):
        if conv not in CONVENTIONS:
            raise ValueError(f"{name} must be one of {sorted(CONVENTIONS)}; got {conv!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"value must be in [0, 1]; got {value}")
    new_weight = value if source == "pytorch" else 1.0 - value
    return new_weight if target == "pytorch" else 1.0 - new_weight


def convert_running_var(running_var, batch_size: int, source: str = "keras",
                        target: str = "pytorch") -> np.ndarray:
    """Convert a running variance between PyTorch's and Keras/TensorFlow's estimates (chapter 5).

    The conventions differ in the variance too, not only in the momentum
    (:func:`convert_momentum`): PyTorch's ``running_var`` averages the
    *unbiased* batch variances, ``m / (m - 1)`` times the biased ones,
    Keras's ``moving_variance`` the *biased* ones (Keras 3 takes them from
    ``ops.moments``; tf.keras 2 removes the Bessel correction that
    TensorFlow's fused kernel applies, to match its non-fused path).  For
    batches of ``m = batch_size`` values per channel::

        running_var_pytorch = m / (m - 1) * moving_variance_keras

    exact once the average has forgotten its initial value of 1 (after
    :func:`steps_to_forget` updates; before that the initial value's share,
    ``(1 - momentum) ** t``, is not rescaled).  ``"decay"`` is Keras's
    convention.  The running *mean* needs no conversion.
    """
    for name, conv in (("source", source), ("target", target)):
        if conv not in CONVENTIONS:
            raise ValueError(f"{name} must be one of {sorted(CONVENTIONS)}; got {conv!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 2:
        raise ValueError(f"batch_size must be an integer >= 2 (values per channel); got {batch_size!r}")
    var = np.asarray(running_var, dtype=float)
    if (var < 0).any():
        raise ValueError("running_var must be >= 0")
    bessel = batch_size / (batch_size - 1)
    unbiased = {"pytorch": True, "keras": False, "decay": False}
    if unbiased[source] == unbiased[target]:
        return var.copy()
    return var * bessel if unbiased[target] else var / bessel


def keras_moving_statistics(batches: Iterable[np.ndarray], momentum: float = 0.99
                            ) -> tuple[np.ndarray, np.ndarray]:
    """``(moving_mean, moving_variance)`` of a Keras ``BatchNormalization(momentum=...)`` after ``batches``.

    Keras's update, written out in NumPy: start from 0 and 1, then for each
    batch ``moving = momentum * moving + (1 - momentum) * batch_statistic``,
    with the *biased* batch variance (``ops.moments``).  Compare with a
    PyTorch layer through :func:`convert_momentum` and :func:`convert_running_var`.
    """
    momentum = float(momentum)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1) (Keras's convention); got {momentum}")
    mean = var = None
    for k, x in enumerate(batches):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"batch {k} must be (m, D); got shape {x.shape}")
        if mean is None:
            mean, var = np.zeros(x.shape[1]), np.ones(x.shape[1])
        mean = momentum * mean + (1.0 - momentum) * x.mean(axis=0)
        var = momentum * var + (1.0 - momentum) * x.var(axis=0)
    if mean is None:
        raise ValueError("batches is empty")
    return mean, var


def initial_weight(momentum: float, steps: int | np.ndarray) -> float | np.ndarray:
    """Weight ``(1 - momentum) ** steps`` the running estimate still gives its initial value."""
    momentum = _check_momentum(momentum)
    return (1.0 - momentum) ** np.asarray(steps, dtype=float)


def steps_to_forget(momentum: float, fraction: float = 0.01) -> int:
    """Fewest steps after which the initial value weighs less than ``fraction`` (eq. ``ch5-forget``).

    ``ceil(log(fraction) / log(1 - momentum))``: 44 steps for PyTorch's 0.1 and
    1 %, 459 for Keras's 0.99 (PyTorch 0.01).
    """
    momentum = _check_momentum(momentum)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1); got {fraction}")
    if momentum == 1.0:
        return 1
    return int(math.ceil(math.log(fraction) / math.log(1.0 - momentum) - 1e-12))


def ema_effective_batches(momentum: float, steps: int | None = None) -> float:
    """How many batches the moving average is worth, ``1 / sum(w_k^2)`` (eq. ``ch5-window``).

    If every batch statistic has the same variance and they are independent,
    the moving average has the variance of a plain average of this many
    batches.  With ``steps=None`` (a long run) it is ``(2 - momentum) /
    momentum``: 19 batches for momentum 0.1, 199 for 0.01.  After ``steps``
    updates the weights are ``momentum * (1 - momentum) ** j`` for
    ``j = 0 .. steps - 1`` (the initial value, a constant, is not counted).
    """
    momentum = _check_momentum(momentum)
    if steps is None:
        return (2.0 - momentum) / momentum
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    w = momentum * (1.0 - momentum) ** np.arange(steps)
    return float(w.sum() ** 2 / np.sum(w ** 2)) if momentum < 1 else 1.0


def ema_mean_age(momentum: float) -> float:
    """Average age in steps of what the moving average holds: ``(1 - momentum) / momentum``.

    The lag of the estimate behind weights that keep changing: 9 steps for 0.1.
    """
    momentum = _check_momentum(momentum)
    return (1.0 - momentum) / momentum


# --------------------------------------------------------------------------- networks

def batchnorm_layers(model) -> list[tuple[str, object]]:
    """``(name, layer)`` for every :class:`BatchNorm` of a scratch network, names like PyTorch's."""
    from .layers import BatchNorm, Sequential

    found = []

    def walk(layer, prefix):
        if isinstance(layer, BatchNorm):
            found.append((prefix or "", layer))
        elif isinstance(layer, Sequential):
            for i, child in enumerate(layer.layers):
                walk(child, f"{prefix}.{i}" if prefix else str(i))

    walk(model, "")
    return found


def bn_layers_in_training_mode(model) -> list[str]:
    """Names of the batch-norm layers of a scratch network that are in training mode.

    The names are the layer indices in the ``Sequential`` (nested ones joined by
    dots), the same as in the PyTorch copy made by :func:`bnlib.training.to_torch`.
    An empty list means the network is ready for inference.
    """
    return [name for name, layer in batchnorm_layers(model) if layer.training]


def recompute_bn_stats(model, batches: Iterable[np.ndarray]):
    """Recompute every BN layer's running statistics over ``batches``, weights fixed.

    Each batch-norm layer's running mean and variance are reset and replaced
    by the plain (cumulative) average over the batches of its batch means and
    unbiased batch variances, as with ``momentum=None``: for the first layer,
    exactly Algorithm 2 (:func:`population_statistics`).  Every layer sees
    its input as in training (earlier layers normalise with the statistics of
    the batch).  Parameters do not change; the model's modes (training or
    eval, per layer) and the layers' momenta are restored.  Used for precise
    BN (Wu & Johnson 2021) and for AdaBN (target-domain statistics).
    Returns the model.
    """
    bns = [layer for _, layer in batchnorm_layers(model)]
    if not bns:
        raise ValueError("the model has no BatchNorm layer: nothing to recompute")
    modes = _modes(model)
    saved = [(b.momentum, b.running_mean.copy(), b.running_var.copy(), b.num_batches_tracked)
             for b in bns]
    count = 0
    try:
        for b in bns:
            b.momentum = None
            b.running_mean[...] = 0.0
            b.running_var[...] = 1.0
            b.num_batches_tracked = 0
        model.train(True)
        for x in batches:
            if isinstance(x, (tuple, list)):
                x = x[0]
            model.forward(np.asarray(x))
            count += 1
        if count == 0:
            raise ValueError("batches is empty: no statistics to average")
    except BaseException:
        for b, (_, mean, var, n) in zip(bns, saved):
            b.running_mean[...], b.running_var[...], b.num_batches_tracked = mean, var, n
        raise
    finally:
        for b, (momentum, *_rest) in zip(bns, saved):
            b.momentum = momentum
        _restore_modes(model, modes)
    return model


def _modes(model) -> list[tuple[object, bool]]:
    from .layers import Sequential

    out = [(model, bool(getattr(model, "training", True)))]
    if isinstance(model, Sequential):
        for child in model.layers:
            out += _modes(child)
    return out


def _restore_modes(model, modes) -> None:
    for layer, mode in modes:
        layer.training = mode
