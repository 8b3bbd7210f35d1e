"""The initialisation article (tf0to1ch15) / Nielsen: MNIST 784-30-10 sigmoid net, quadratic cost, SGD lr 3.0: N(0,1) vs N(0,1/n_in) weights.

Chapter 2, section "Training with the two initialisations".  The network is
784 -> 30 sigmoid -> 10 sigmoid, trained on the quadratic cost

    C = 1/(2m) sum_x ||y(x) - a(x)||^2          (mean over the mini-batch)

with plain SGD, learning rate 3.0 and mini-batches of 10: exactly the
convention of Nielsen's book and of the source's TensorFlow code, where the
learning rate multiplies the *mean* gradient over the mini-batch.  The two runs
differ only in the weights' initial distribution: ``standard_normal`` draws
N(0, 1), ``lecun_normal`` draws N(0, 1/n_in) (std 1/sqrt(n_in)); the biases
are N(0, 1) in both, as in the source.  Both runs see the same mini-batches in
the same order.

**What an epoch is.**  The source's epoch is not a pass over the data: its loop
draws ``mnist.train.next_batch(10)`` 5,000 times per "epoch", i.e. 50,000
examples out of TensorFlow's 55,000-image training split (``read_data_sets``
holds the first 5,000 of the 60,000 training images out for validation), and
tests on the 10,000 test images after each one.  ``steps_per_epoch`` says what
an epoch is here: ``None`` is one pass over the training digits (book scale:
4,000 digits, 400 steps), a number is that many SGD steps, the mini-batches
cycling through reshuffled passes as ``next_batch`` does (paper scale: 5,000,
the source's).  With ``tf_split`` and the full IDX data (``BNLIB_MNIST_DIR``,
``source == "idx-70000"``) the first ``tf_validation`` training images are held
out as ``read_data_sets`` does, so ``python -m bnlib run init-mnist --scale
paper`` then is the source's set-up exactly: 55,000 training and 10,000 test
images, 30 epochs of 5,000 steps of 10, lr 3.0, 784-30-10.  On the offline
4,000 digits the same command runs the source's number of SGD steps (150,000)
on 4,000 distinct digits (12.5 passes per epoch); see :func:`plan`.

The summary gives, per initialiser, ``test_acc_per_epoch`` (epoch 0 = after the
first epoch), ``test_acc_at_step`` (test accuracy after a fixed list of SGD
step counts, ``STEP_MARKS``, those within the run: the view at equal numbers of
SGD steps, whatever the data) and the hidden layer's spread and saturation
(sigma'(z) < 0.01, the book's definition) at initialisation and at the end
(chapter 2, section 2.6); ``catch_up`` gives the epoch and the SGD step at which
the N(0, 1) network first matches the accuracy the scaled one had after epoch 0
(the source: epoch 7 for 94% on the full MNIST), and ``catch_up_5000`` the step
at which it first matches the scaled network's accuracy after 5,000 steps (the
length of the source's epoch 0).

The experiment is NumPy only; ``device`` is accepted and ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "init-mnist"

INITS = ("standard_normal", "lecun_normal")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = 4000   # None: every training digit bnlib.data.mnist has
    n_test: int | None = 1000    # None: every test digit
    hidden: int = 30
    epochs: int = 10
    batch_size: int = 10
    lr: float = 3.0
    bias_std: float = 1.0
    eval_every: int = 50         # also record test accuracy every this many SGD steps
    steps_per_epoch: int | None = None   # None: one pass over the training digits
    tf_split: bool = False       # full IDX data: hold out the first tf_validation training images
    tf_validation: int = 5000    # (TensorFlow's read_data_sets default validation_size)
    threads: int | None = 1      # BLAS threads: one is fastest for these small matrices

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "epochs": 1, "eval_every": 25},
        "book": {"n_train": 4000, "n_test": 1000, "epochs": 30},
        # the source's loop: 30 epochs of 5,000 steps of 10 (150,000 SGD steps)
        "paper": {"n_train": None, "n_test": None, "epochs": 30, "eval_every": 500,
                  "steps_per_epoch": 5000, "tf_split": True},
    }


#: SGD step counts at which ``test_acc_at_step`` reports the test accuracy
STEP_MARKS = (400, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 150000)


def build_network(n_in: int, hidden: int, n_out: int, init: str, bias_std: float,
                  rng: np.random.Generator):
    """784-30-10 with a sigmoid after *both* layers (the source's network).

    Weights come from ``bnlib.scratch.init`` (named by ``init``); the biases are
    redrawn N(0, bias_std^2) in place, as in the source and in Nielsen's book.
    """
    from bnlib.scratch import Linear, Sequential, Sigmoid

    net = Sequential(Linear(n_in, hidden, init=init, rng=rng), Sigmoid(),
                     Linear(hidden, n_out, init=init, rng=rng), Sigmoid())
    for layer in net.layers:
        if isinstance(layer, Linear):
            layer.b[...] = bias_std * rng.standard_normal(layer.b.shape)
    return net


def quadratic_cost(a: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """C = 1/(2m) sum ||y - a||^2 and dC/da = (a - y)/m, via ``bnlib.scratch.losses.mse_loss``.

    ``mse_loss`` averages over the examples (axis 0) and sums over the outputs,
    with the factor 1/2: Nielsen's convention, so SGD's learning rate 3.0 means
    what it means in the source (lr times the mean gradient of the mini-batch).
    """
    from bnlib.scratch.losses import mse_loss

    return mse_loss(a, y)


def accuracy(net, x: np.ndarray, labels: np.ndarray) -> float:
    net.eval()
    pred = net.forward(x).argmax(axis=1)
    net.train()
    return float(np.mean(pred == labels))


def hidden_stats(net, x: np.ndarray, slope: float = 0.01) -> tuple[float, float]:
    """(std of the hidden pre-activations z, fraction of hidden units with sigma'(z) < slope)
    over the examples ``x``: how the distribution the initialisation chose moves in training."""
    z = net[0].forward(x)
    a = net[1].forward(z)
    return float(z.std()), float(np.mean(a * (1.0 - a) < slope))


class InitMnistResult(Result):
    """``histories[init]``: ``test_acc`` per epoch, ``train_cost`` per epoch,
    ``step`` and ``test_acc_by_step`` (every ``eval_every`` SGD steps),
    ``hidden_z_std`` and ``hidden_frac_saturated`` of the 30 hidden units on the
    test digits (at initialisation, then after every epoch)."""

    def plot(self):
        from bnlib import plots

        labels = {"standard_normal": r"$N(0, 1)$ weights",
                  "lecun_normal": r"$N(0, 1/n_{in})$ weights"}
        return plots.init_comparison(
            {labels[k]: (np.arange(len(h["test_acc"])), h["test_acc"])
             for k, h in self.histories.items()},
            {labels[k]: (h["step"], h["test_acc_by_step"]) for k, h in self.histories.items()},
            colors={labels["standard_normal"]: plots.COLORS["plain"],
                    labels["lecun_normal"]: plots.COLORS["bn"]},
            mark_step=5000 if self.headline["total_steps"] >= 5000 else None,
            mark_label="5,000 steps: the source's first epoch",
            title=f"784-{self.config.hidden}-10 sigmoid, quadratic cost, SGD lr {self.config.lr:g}"
                  f" ({self.headline['n_train']} training digits, {self.headline['steps_per_epoch']} steps per epoch)",
        )


def run(config: Config, progress: bool = False) -> InitMnistResult:
    """Train the source's network once per initialiser in INITS; test accuracy per epoch."""
    from bnlib.training import cpu_threads

    with cpu_threads(config.threads):
        return _run(config, progress)


def load_data(config: Config):
    """The digits of this run: ``(dataset, x_train, y_train, x_test, y_test)``, flattened.

    With ``tf_split`` and the full IDX set (60,000 training images) the first
    ``tf_validation`` training images are dropped, as TensorFlow's ``read_data_sets``
    holds them out for validation; the offline digits are used as they are.
    """
    from bnlib import data

    full = config.tf_split and config.n_train is None
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    x_train, y_train = ds.x_train.reshape(len(ds.x_train), -1), ds.y_train
    if full and ds.source.startswith("idx") and len(x_train) > config.tf_validation:
        x_train, y_train = x_train[config.tf_validation:], y_train[config.tf_validation:]
    x_test, y_test = ds.x_test.reshape(len(ds.x_test), -1), ds.y_test
    return ds, x_train, y_train, x_test, y_test


def plan(config: Config, n_train: int) -> dict:
    """The run's length: ``steps_per_epoch``, ``total_steps``, ``passes_per_epoch``
    (how many times an epoch goes through the ``n_train`` training digits)."""
    spe = int(config.steps_per_epoch) if config.steps_per_epoch else -(-n_train // config.batch_size)
    return {"steps_per_epoch": spe, "total_steps": spe * config.epochs,
            "passes_per_epoch": spe * config.batch_size / n_train}


def batch_stream(x, t, batch_size: int, rng):
    """Mini-batches forever: one reshuffled pass after another (TensorFlow's ``next_batch``
    for a batch size that divides the number of examples; otherwise a pass ends with a
    smaller batch, as ``bnlib.data.batches``)."""
    from bnlib import data

    while True:
        yield from data.batches(x, t, batch_size, rng)


def _run(config: Config, progress: bool) -> InitMnistResult:
    from bnlib import data
    from bnlib.scratch.optim import SGD

    if config.batch_size < 1 or config.epochs < 1 or config.eval_every < 1:
        raise ValueError("batch_size, epochs and eval_every must be positive")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        raise ValueError("steps_per_epoch must be positive (or None: one pass)")
    ds, x_train, y_train, x_test, y_test = load_data(config)
    t_train = data.one_hot(y_train, 10)
    length = plan(config, len(x_train))
    histories, headline, timings = {}, {}, {}
    for name in INITS:
        init_rng = np.random.default_rng([config.seed, 1])   # same seed for both inits:
        order_rng = np.random.default_rng([config.seed, 2])  # same mini-batches too
        net = build_network(x_train.shape[1], config.hidden, 10, name, config.bias_std, init_rng)
        opt = SGD(net.params(), lr=config.lr)
        acc0 = accuracy(net, x_test, y_test)
        hidden = [hidden_stats(net, x_test)]           # at init, then after every epoch
        test_acc, train_cost, steps, acc_by_step = [], [], [0], [acc0]
        step = 0
        with Timer() as t:
            stream = batch_stream(x_train, t_train, config.batch_size, order_rng)
            for _ in base.progress(range(config.epochs), desc=name, enabled=progress):
                costs = []
                for _, (xb, yb) in zip(range(length["steps_per_epoch"]), stream):
                    cost, da = quadratic_cost(net.forward(xb), yb)
                    net.backward(da)
                    opt.step(net.grads())
                    costs.append(cost)
                    step += 1
                    if step % config.eval_every == 0 or step in STEP_MARKS:
                        steps.append(step)
                        acc_by_step.append(accuracy(net, x_test, y_test))
                test_acc.append(accuracy(net, x_test, y_test))
                hidden.append(hidden_stats(net, x_test))
                train_cost.append(float(np.mean(costs)))
        histories[name] = {"test_acc": np.array(test_acc), "train_cost": np.array(train_cost),
                           "hidden_z_std": np.array([h[0] for h in hidden]),
                           "hidden_frac_saturated": np.array([h[1] for h in hidden]),
                           "step": np.array(steps), "test_acc_by_step": np.array(acc_by_step)}
        headline[name] = {
            "test_acc_per_epoch": [round(a, 4) for a in test_acc],
            "test_acc_at_init": round(acc0, 4),
            "final_test_acc": round(test_acc[-1], 4),
            "best_test_acc": round(max(test_acc), 4),
            "train_cost_per_epoch": [round(c, 5) for c in train_cost],
            "hidden_z_std_init": round(hidden[0][0], 4),
            "hidden_z_std_final": round(hidden[-1][0], 4),
            "hidden_frac_saturated_init": round(hidden[0][1], 4),
            "hidden_frac_saturated_final": round(hidden[-1][1], 4),
            "test_acc_at_step": {str(m): round(float(a), 4)
                                 for m in STEP_MARKS if m <= step
                                 for st_, a in zip(steps, acc_by_step) if st_ == m},
        }
        timings[f"{name}_s"] = t.seconds
    # the source's comparison: N(0, 1/n_in) has 94% after epoch 0, N(0, 1) gets there at
    # epoch 7.  Here: the epoch (and SGD step) at which N(0, 1) first matches the accuracy
    # N(0, 1/n_in) had after its first epoch; None if it never does.
    target = headline["lecun_normal"]["test_acc_per_epoch"][0]
    h = histories["standard_normal"]
    epochs = [e for e, a in enumerate(h["test_acc"]) if a >= target]
    step_hits = [int(st) for st, a in zip(h["step"], h["test_acc_by_step"]) if a >= target]
    headline["catch_up"] = {"target_acc": target,
                            "standard_normal_epoch": epochs[0] if epochs else None,
                            "standard_normal_step": step_hits[0] if step_hits else None}
    # the same at equal SGD steps: the scaled network's accuracy after 5,000 steps (the
    # source's epoch 0), and the first step at which N(0, 1) reaches it
    lec = histories["lecun_normal"]
    at_5000 = [a for st_, a in zip(lec["step"], lec["test_acc_by_step"]) if st_ == 5000]
    if at_5000:
        hits = [int(st) for st, a in zip(h["step"], h["test_acc_by_step"]) if a >= at_5000[0]]
        headline["catch_up_5000"] = {"target_acc": round(float(at_5000[0]), 4),
                                     "standard_normal_step": hits[0] if hits else None}
    headline["data"] = ds.source
    headline["n_train"] = int(len(x_train))
    headline["n_test"] = int(len(x_test))
    headline["steps_per_epoch"] = length["steps_per_epoch"]
    headline["total_steps"] = length["total_steps"]
    headline["passes_per_epoch"] = round(length["passes_per_epoch"], 4)
    return InitMnistResult(NAME, config, histories, headline, timings)
