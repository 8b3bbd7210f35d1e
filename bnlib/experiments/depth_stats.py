"""Glorot & Bengio 2010 style: per-layer activation and gradient statistics of a deep tanh/ReLU net at initialisation.

Chapter 2, section "Through many layers".  A batch of MNIST digits goes
forward through ``depth`` hidden layers of ``width`` units (tanh or ReLU, zero
biases) and a 10-way softmax output; the cross-entropy gradient goes back.  For
every hidden layer we record the pre-activations z, the activations a, the
back-propagated gradient dC/dz and the weight gradient dC/dW, under four weight
initialisations:

* ``standard_normal``  N(0, 1): the variance grows by ~n_in per layer;
* ``small_constant``   N(0, small_std^2) with small_std = 0.01: shrinks;
* ``xavier_normal``    N(0, 2/(n_in + n_out)): eq. (ch2-xavier), built for tanh;
* ``kaiming_normal``   N(0, 2/n_in): eq. (ch2-kaiming), built for ReLU.

Nothing is trained: this is the network's state on its first step.
The experiment is NumPy only; ``device`` is accepted and ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.diagnostics import SATURATION_SLOPE
from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "depth-stats"

INITS = ("standard_normal", "small_constant", "xavier_normal", "kaiming_normal")
ACTIVATIONS = ("tanh", "relu")
INIT_LABELS = {"standard_normal": "N(0, 1)", "small_constant": "N(0, 0.01²)",
               "xavier_normal": "Xavier", "kaiming_normal": "Kaiming"}
#: a tanh unit counts as saturated where |tanh(z)| > this: slope tanh'(z) below the book's
#: SATURATION_SLOPE (0.01, chapter 1), i.e. |tanh(z)| > sqrt(0.99) = 0.995
SATURATED = float(np.sqrt(1.0 - SATURATION_SLOPE))


@dataclass
class Config(ExperimentConfig):
    depth: int = 10              # hidden layers
    width: int = 256             # units per hidden layer
    n_examples: int = 1000       # digits in the batch
    small_std: float = 0.01      # std of the "small_constant" initialisation
    n_hist: int = 20_000         # values per layer kept for the histograms

    SCALES = {
        "smoke": {"depth": 10, "width": 128, "n_examples": 256, "n_hist": 2000},
        "book": {"depth": 10, "width": 256, "n_examples": 1000},
        # Glorot & Bengio's nets had 1,000 units per layer; we keep 10 layers
        "paper": {"depth": 10, "width": 1000, "n_examples": 2000, "n_hist": 50_000},
    }


def initializer(name: str, small_std: float = 0.01):
    """The weight initialiser ``name`` of INITS, from ``bnlib.scratch.init``."""
    from bnlib.scratch import init

    if name == "small_constant":
        return init.constant_normal(small_std)
    if name not in INITS:
        raise ValueError(f"init must be one of {INITS}; got {name!r}")
    return init.get(name)


def layer_statistics(net, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                     n_hist: int) -> dict[str, np.ndarray | list]:
    """One forward and backward pass through ``net`` (a ``bnlib.scratch.Sequential``
    of Linear/activation pairs ending in a Linear); per hidden layer statistics.

    Returns arrays of length ``depth`` (``z_std``, ``a_std``, ``a_rms``, ``dz_std``,
    ``dW_std``, ``frac_saturated``) and lists of sampled values for histograms
    (``z``, ``a``, ``dz``).
    """
    from bnlib.scratch import Linear
    from bnlib.scratch.losses import softmax_cross_entropy

    layers = net.layers
    linear_idx = [i for i, layer in enumerate(layers) if isinstance(layer, Linear)]
    hidden = linear_idx[:-1]                      # every Linear but the output layer
    outputs = []
    h = x
    for layer in layers:
        h = layer.forward(h)
        outputs.append(h)
    _, dh = softmax_cross_entropy(h, labels)
    grads = [None] * len(layers)                  # gradient w.r.t. each layer's output
    for i in reversed(range(len(layers))):
        grads[i] = dh
        dh = layers[i].backward(dh)

    def sample(values):
        flat = values.ravel()
        if flat.size <= n_hist:
            return flat.copy()
        return flat[rng.choice(flat.size, size=n_hist, replace=False)]

    stats = {k: [] for k in ("z_std", "a_std", "a_rms", "dz_std", "dW_std", "frac_saturated",
                             "z", "a", "dz")}
    for i in hidden:
        z, a, dz = outputs[i], outputs[i + 1], grads[i]
        stats["z_std"].append(z.std())
        stats["a_std"].append(a.std())
        stats["a_rms"].append(np.sqrt(np.mean(a ** 2)))   # E[a^2], eq. (ch2-forward-var)
        stats["dz_std"].append(dz.std())
        stats["dW_std"].append(layers[i].dW.std())
        stats["frac_saturated"].append(np.mean(np.abs(np.tanh(z)) > SATURATED))
        stats["z"].append(sample(z))
        stats["a"].append(sample(a))
        stats["dz"].append(sample(dz))
    for k in ("z_std", "a_std", "a_rms", "dz_std", "dW_std", "frac_saturated"):
        stats[k] = np.array(stats[k])
    return stats


class DepthStatsResult(Result):
    """``histories[activation][init]``: the output of :func:`layer_statistics`."""

    def plot(self):
        """Std of the activations and of the back-propagated gradients, layer by layer."""
        from bnlib import plots

        return plots.layer_std_curves(
            {act: {INIT_LABELS[i]: (self.histories[act][i]["a_std"],
                                    self.histories[act][i]["dz_std"]) for i in INITS}
             for act in ACTIVATIONS})

    def plot_histograms(self, activation: str = "tanh", quantity: str = "a"):
        """Glorot & Bengio's figure: one panel per initialisation, one line per layer.

        ``quantity`` is ``"a"`` (activations), ``"z"`` (pre-activations) or
        ``"dz"`` (back-propagated gradients).  Ranges: tanh activations on
        [-1, 1]; otherwise +-3 std of layer 1 (for a and z) or of the last
        hidden layer (for dz), so that growth and collapse with depth show.
        """
        from bnlib import plots

        if activation not in ACTIVATIONS or quantity not in ("a", "z", "dz"):
            raise ValueError("activation must be 'tanh' or 'relu', quantity 'a', 'z' or 'dz'")
        panels = {}
        for init in INITS:
            h = self.histories[activation][init]
            if activation == "tanh" and quantity == "a":
                range_ = (-1.0, 1.0)
            else:
                ref = h[f"{quantity}_std"][-1 if quantity == "dz" else 0]
                lo = 0.0 if (activation == "relu" and quantity == "a") else -3.0 * ref
                range_ = (lo, 3.0 * ref)
            panels[INIT_LABELS[init]] = (h[quantity], range_)
        names = {"a": "activations", "z": "pre-activations", "dz": "back-propagated gradients"}
        return plots.layer_histograms(
            panels, title=f"{activation}: {names[quantity]} per layer "
                          f"({self.config.depth} layers of {self.config.width})")


def run(config: Config, progress: bool = False) -> DepthStatsResult:
    """Statistics of every (activation, initialisation) pair at initialisation."""
    from bnlib import data
    from bnlib.scratch import mlp

    if config.depth < 2 or config.width < 1 or config.n_examples < 2:
        raise ValueError("depth must be >= 2, width >= 1 and n_examples >= 2")
    ds = data.mnist(n_train=config.n_examples, n_test=1, seed=config.seed)
    x = ds.x_train.reshape(len(ds.x_train), -1)
    x = (x - x.mean()) / x.std()                  # inputs with mean 0, variance 1
    labels = ds.y_train
    sizes = [x.shape[1]] + [config.width] * config.depth + [10]
    histories, headline, timings = {}, {}, {}
    pairs = [(a, i) for a in ACTIVATIONS for i in INITS]
    for act, init in base.progress(pairs, desc=NAME, enabled=progress):
        with Timer() as t:
            rng = np.random.default_rng([config.seed, INITS.index(init)])
            net = mlp(sizes, activation=act, init=initializer(init, config.small_std), rng=rng)
            stats = layer_statistics(net, x, labels, rng, config.n_hist)
        histories.setdefault(act, {})[init] = stats
        headline.setdefault(act, {})[init] = {
            "z_std": [float(f"{v:.4g}") for v in stats["z_std"]],
            "a_std": [float(f"{v:.4g}") for v in stats["a_std"]],
            "a_rms": [float(f"{v:.4g}") for v in stats["a_rms"]],
            "dz_std": [float(f"{v:.4g}") for v in stats["dz_std"]],
            "dW_std": [float(f"{v:.4g}") for v in stats["dW_std"]],
            "a_std_last_over_first": float(stats["a_std"][-1] / stats["a_std"][0]),
            "dz_std_first_over_last": float(stats["dz_std"][0] / stats["dz_std"][-1]),
        }
        if act == "tanh":   # slope below 0.01: only meaningful for a saturating unit
            headline[act][init]["frac_saturated"] = [round(float(v), 4)
                                                     for v in stats["frac_saturated"]]
        timings[f"{act}_{init}_s"] = t.seconds
    headline["data"] = ds.source
    return DepthStatsResult(NAME, config, histories, headline, timings)
