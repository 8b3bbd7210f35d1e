"""He et al. 2015 on an MLP: a 30-layer ReLU net on MNIST digits trained from Xavier vs Kaiming initialisation.

Chapter 2, section "Thirty layers".  He et al. (2015, Figure 3) trained a
30-layer ReLU convolutional net on ImageNet: from Xavier's initialisation it
did not learn at all, from theirs it converged.  Here the same comparison runs
on a fully connected net: ``depth`` hidden ReLU layers of ``width`` units,
a softmax output, cross-entropy, SGD with momentum, on the offline MNIST digits.
Both runs share the mini-batch order and every hyper-parameter; only the
weights' initial variance differs (Xavier: 2/(n_in + n_out), which is 1/n for
square layers; Kaiming: 2/n_in).  Biases start at zero.

The experiment is NumPy only; ``device`` is accepted and ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "deep-relu"

INITS = ("xavier_normal", "kaiming_normal")
LABELS = {"xavier_normal": "Xavier", "kaiming_normal": "Kaiming"}


@dataclass
class Config(ExperimentConfig):
    depth: int = 30              # hidden layers
    width: int = 100             # units per hidden layer
    n_train: int | None = 4000
    n_test: int | None = 1000
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.002            # the best of 0.001-0.1 for Kaiming here; >= 0.005 is unstable
    momentum: float = 0.9
    log_every: int = 25          # record the mean training loss every this many steps
    threads: int | None = 1      # BLAS threads: one is fastest for these small matrices

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "epochs": 4},
        "book": {"n_train": 4000, "n_test": 1000, "epochs": 10},
        "paper": {"n_train": None, "n_test": None, "epochs": 30, "width": 256},
    }


def forward_scales(net, x: np.ndarray) -> np.ndarray:
    """Std of each hidden layer's ReLU output for input ``x`` (one forward pass)."""
    from bnlib.scratch import ReLU

    stds = []
    h = x
    for layer in net.layers:
        h = layer.forward(h)
        if isinstance(layer, ReLU):
            stds.append(h.std())
    return np.array(stds)


def evaluate(net, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``net`` on ``x``."""
    from bnlib.scratch.losses import softmax_cross_entropy

    net.eval()
    logits = net.forward(x)
    net.train()
    loss, _ = softmax_cross_entropy(logits, labels)
    return float(loss), float(np.mean(logits.argmax(axis=1) == labels))


class DeepReluResult(Result):
    """``histories[init]``: ``step`` and ``train_loss`` (mean over ``log_every``
    steps), per-epoch ``test_acc``, ``train_acc`` and ``train_loss_epoch``, and
    ``a_std_init`` (std of every hidden layer's output at initialisation, on 500
    fixed training digits) and ``a_std_per_epoch`` (the same after every epoch,
    shape (epochs, depth)): how far training moves the distributions."""

    def plot(self):
        from bnlib import plots

        colors = {"Xavier": plots.COLORS["plain"], "Kaiming": plots.COLORS["bn"]}
        title = (f"{self.config.depth} ReLU layers of {self.config.width}, "
                 f"SGD lr {self.config.lr:g} momentum {self.config.momentum:g}")
        return plots.deep_relu_curves(
            {LABELS[k]: (h["step"], h["train_loss"]) for k, h in self.histories.items()},
            {LABELS[k]: (np.arange(1, len(h["test_acc"]) + 1), h["test_acc"])
             for k, h in self.histories.items()},
            {LABELS[k]: h["a_std_init"] for k, h in self.histories.items()},
            colors=colors, title=title)


def run(config: Config, progress: bool = False) -> DeepReluResult:
    """Train the deep ReLU MLP once per initialiser in INITS."""
    from bnlib.training import cpu_threads

    with cpu_threads(config.threads):
        return _run(config, progress)


def _run(config: Config, progress: bool) -> DeepReluResult:
    from bnlib import data
    from bnlib.scratch import mlp
    from bnlib.scratch.losses import softmax_cross_entropy
    from bnlib.scratch.optim import SGD

    if config.depth < 1 or config.width < 1 or config.epochs < 1 or config.batch_size < 1:
        raise ValueError("depth, width, epochs and batch_size must be positive")
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    x_train, y_train = ds.x_train.reshape(len(ds.x_train), -1), ds.y_train
    x_test, y_test = ds.x_test.reshape(len(ds.x_test), -1), ds.y_test
    sizes = [x_train.shape[1]] + [config.width] * config.depth + [10]
    histories, headline, timings = {}, {}, {}
    for name in INITS:
        init_rng = np.random.default_rng([config.seed, 1])
        order_rng = np.random.default_rng([config.seed, 2])
        net = mlp(sizes, activation="relu", init=name, rng=init_rng)
        probe = x_train[:500]                          # fixed digits to measure the scales on
        a_std_init = forward_scales(net, probe)
        a_std_epochs = []
        opt = SGD(net.params(), lr=config.lr, momentum=config.momentum)
        steps, losses, window = [], [], []
        test_acc, train_acc, train_loss_epoch = [], [], []
        step = 0
        with Timer() as t:
            for _ in base.progress(range(config.epochs), desc=LABELS[name], enabled=progress):
                for xb, yb in data.batches(x_train, y_train, config.batch_size, order_rng):
                    loss, dlogits = softmax_cross_entropy(net.forward(xb), yb)
                    net.backward(dlogits)
                    opt.step(net.grads())
                    window.append(loss)
                    step += 1
                    if step % config.log_every == 0:
                        steps.append(step)
                        losses.append(float(np.mean(window)))
                        window = []
                tr_loss, tr_acc = evaluate(net, x_train, y_train)
                test_acc.append(evaluate(net, x_test, y_test)[1])
                train_acc.append(tr_acc)
                train_loss_epoch.append(tr_loss)
                a_std_epochs.append(forward_scales(net, probe))
        histories[name] = {"step": np.array(steps), "train_loss": np.array(losses),
                           "test_acc": np.array(test_acc), "train_acc": np.array(train_acc),
                           "train_loss_epoch": np.array(train_loss_epoch),
                           "a_std_init": a_std_init, "a_std_per_epoch": np.array(a_std_epochs)}
        headline[name] = {
            "test_acc_per_epoch": [round(a, 4) for a in test_acc],
            "train_loss_per_epoch": [round(v, 4) for v in train_loss_epoch],
            "final_test_acc": round(test_acc[-1], 4),
            "final_train_loss": round(train_loss_epoch[-1], 4),
            "last_layer_std_over_first_at_init": float(a_std_init[-1] / a_std_init[0]),
            "a_std_init": [float(f"{v:.4g}") for v in a_std_init],
            "a_std_final": [float(f"{v:.4g}") for v in a_std_epochs[-1]],
        }
        timings[f"{name}_s"] = t.seconds
    headline["data"] = ds.source
    headline["n_train"] = int(len(x_train))
    headline["n_test"] = int(len(x_test))
    return DeepReluResult(NAME, config, histories, headline, timings)
