"""Eval blow-up under distribution shift: running statistics meet inputs unlike the training data (the three-levels article, C.2.4).

Chapter 5, section 5.4.  Two batch-norm MLPs (784 -> hidden -> ... -> 10,
ReLU, BN before every ReLU) are trained on clean MNIST digits; the second
also batch-normalises its *input* pixels, as the input-normalisation post does.  They are then
evaluated on shifted test digits:

* ``scale``: pixels multiplied by ``s`` (``s = 255``: the classic deployment bug
  of forgetting to divide raw 8-bit pixels by 255);
* ``noise``: independent Gaussian noise of standard deviation ``s`` added to
  every pixel, including the border pixels that are blank in every training
  digit.

For each shift and severity ``s`` the test loss and accuracy are measured

* in eval mode, with the running statistics of the training data (what a
  deployed model does),
* in training mode, every test batch of ``batch_size`` normalised with its own
  statistics (the running statistics are not touched),
* after AdaBN (Li et al. 2016): running statistics recomputed on ``n_adapt``
  unlabelled *shifted training* digits (all of them by default) with :func:`bnlib.scratch.recompute_bn_stats`,
  weights unchanged, then eval mode,

together with the root mean square of every batch-norm layer's output (eval
mode and training mode) and, for the input BN, the number of pixels whose
training variance is almost zero (the ones noise blows up by
``gamma / sqrt(var + eps)``).  NumPy (``bnlib.scratch``) only; ``device`` is
accepted and ignored.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "eval-shift"

#: the networks compared: BN on hidden layers only, and BN on the input too
NETS = ("hidden_bn", "input_bn")
LABELS = {"hidden_bn": "BN on hidden layers", "input_bn": "BN on input and hidden layers"}
METHODS = ("eval", "train_mode", "adabn")
METHOD_LABELS = {"eval": "eval mode (running statistics)",
                 "train_mode": "training mode (statistics of the test batch)",
                 "adabn": "AdaBN (statistics of shifted data)"}


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = 4000
    n_test: int | None = 1000
    hidden: tuple = (100, 100, 100, 100)
    lr: float = 0.05
    sgd_momentum: float = 0.9
    batch_size: int = 64
    steps: int = 1500
    n_adapt: int | None = None             # unlabelled shifted training digits for AdaBN (None: all)
    scales: tuple = (1.0, 2.0, 5.0, 20.0, 255.0)
    noise_stds: tuple = (0.0, 0.03, 0.1, 0.3, 1.0)
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "hidden": (64, 64, 64), "steps": 300,
                  "scales": (1.0, 255.0), "noise_stds": (0.0, 0.3)},
        "book": {},
        "paper": {"n_train": None, "n_test": None, "hidden": (256, 256, 256, 256, 256, 256),
                  "steps": 10000, "n_adapt": 8192},
    }


def build_network(config: Config, input_bn: bool, n_in: int = 784):
    """The ReLU MLP with BN before every ReLU, and with ``input_bn`` a BN of the raw pixels first."""
    from bnlib.scratch import BatchNorm, Sequential, mlp

    net = mlp([n_in, *config.hidden, 10], activation="relu", norm="bn", init="kaiming_normal",
              rng=np.random.default_rng([config.seed, 1]))
    return Sequential(BatchNorm(n_in), *net.layers) if input_bn else net


def shift(x: np.ndarray, kind: str, severity: float, rng: np.random.Generator) -> np.ndarray:
    """The shifted inputs: ``x * severity`` (``scale``) or ``x + N(0, severity^2)`` (``noise``)."""
    if kind == "scale":
        return x * severity
    if kind == "noise":
        return x + severity * rng.standard_normal(x.shape)
    raise ValueError(f"kind must be 'scale' or 'noise'; got {kind!r}")


def bn_outputs(model, x: np.ndarray, training: bool, batch_size: int | None = None):
    """Logits and the RMS of every BN layer's output for ``x``, running statistics untouched.

    ``training=False``: eval mode.  ``training=True``: every block of
    ``batch_size`` examples normalised with its own statistics.
    """
    from bnlib.scratch import BatchNorm

    model = copy.deepcopy(model).train(training)      # a copy: running statistics stay as they are
    n = len(x)
    size = batch_size if training and batch_size else n
    if size > n:
        raise ValueError(f"batch_size={size} is larger than the {n} examples")
    n_bn = sum(isinstance(layer, BatchNorm) for layer in model.layers)
    logits, squares, count = [], None, 0
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, n - size + 1, size):
            z = x[start:start + size]
            sq = []
            try:
                for layer in model.layers:
                    z = layer.forward(z)
                    if isinstance(layer, BatchNorm):
                        sq.append(float(np.mean(z.astype(float) ** 2)))
            except ValueError:            # BN refuses non-finite input: the activations overflowed
                z = np.full((len(z), model.layers[-1].n_out), np.nan)
                sq = sq + [float("inf")] * (n_bn - len(sq))
            logits.append(z)
            squares = np.array(sq) if squares is None else squares + np.array(sq)
            count += 1
    return np.concatenate(logits), np.sqrt(squares / count), count * size


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and accuracy; loss NaN if a logit is not finite (such rows count as wrong)."""
    from bnlib.scratch import softmax_cross_entropy

    labels = labels[: len(logits)]
    finite = np.all(np.isfinite(logits), axis=1)
    acc = float(np.mean(finite & (np.nan_to_num(logits).argmax(axis=1) == labels)))
    if not np.all(np.isfinite(logits)):
        return float("nan"), acc
    return float(softmax_cross_entropy(logits, labels)[0]), acc


class EvalShiftResult(Result):
    """``histories[net][kind]``: ``severity``, ``loss``/``acc`` per method (arrays over
    severities), ``rms`` per method (severities x BN layers).  ``models[net]`` is the
    trained network (eval mode), for chapter 5's float16 deployment check."""

    models: dict | None = None

    def plot(self, net: str = "input_bn"):
        from bnlib import plots

        return plots.eval_shift_figure(self.histories, net=net, labels=METHOD_LABELS,
                                       title=f"{LABELS[net]}: {self.headline['data']}, "
                                             f"{self.headline['n_train']} training digits")


def run(config: Config, progress: bool = False) -> EvalShiftResult:
    """Train both networks, then measure every shift x severity x method."""
    from bnlib import data
    from bnlib.scratch.running import recompute_bn_stats
    from bnlib.training import cpu_threads, fit

    if config.steps < 1 or config.batch_size < 2:
        raise ValueError("steps must be >= 1 and batch_size >= 2")
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    x, y, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    n_test = len(x_test) - len(x_test) % config.batch_size   # whole batches in training mode
    x_test, y_test = x_test[:n_test], y_test[:n_test]
    n_adapt = len(x) if config.n_adapt is None else min(config.n_adapt, len(x))
    if n_adapt < config.batch_size:
        raise ValueError(f"n_adapt must be >= batch_size={config.batch_size}; got {n_adapt}")
    adapt_idx = np.random.default_rng([config.seed, 3]).permutation(len(x))[:n_adapt]

    histories, headline, timings, models = {}, {}, {}, {}
    shifts = {"scale": config.scales, "noise": config.noise_stds}
    for net_name in NETS:
        model = build_network(config, input_bn=net_name == "input_bn", n_in=x.shape[1])
        with Timer() as t:
            h = fit(model, x, y, steps=config.steps, batch_size=config.batch_size,
                    lr=config.lr, optimizer_kwargs={"momentum": config.sgd_momentum},
                    rng=np.random.default_rng([config.seed, 2]), x_eval=x_test, y_eval=y_test,
                    eval_every=config.steps, threads=config.threads, progress=progress,
                    desc=net_name)
        timings[f"{net_name}_train_s"] = t.seconds
        model.eval()
        net_hist, net_head = {}, {"clean_test_acc": round(h.final_test_acc, 4)}
        if net_name == "input_bn":
            bn0 = model.layers[0]
            net_head["blank_pixels"] = int(np.sum(bn0.running_var < 1e-4))
            gain = bn0.gamma / np.sqrt(bn0.running_var + bn0.eps)
            net_head["max_input_gain"] = round(float(gain.max()), 1)
        with Timer() as t, cpu_threads(config.threads):
            for kind, severities in shifts.items():
                rows = {f"{m}_{q}": [] for m in METHODS for q in ("loss", "acc", "rms")}
                bar = base.progress(severities, desc=f"{net_name} {kind}", enabled=progress)
                for k, s in enumerate(bar):
                    rng = np.random.default_rng([config.seed, 4, k])
                    xs = shift(x_test, kind, s, rng)
                    adapted = copy.deepcopy(model)
                    x_adapt = shift(x[adapt_idx], kind, s, rng)
                    recompute_bn_stats(adapted, (x_adapt[i:i + config.batch_size] for i in
                                                 range(0, len(x_adapt) - config.batch_size + 1,
                                                       config.batch_size)))
                    for method, net, training in (("eval", model, False),
                                                  ("train_mode", model, True),
                                                  ("adabn", adapted, False)):
                        logits, rms, _ = bn_outputs(net, xs, training, config.batch_size)
                        loss, acc = loss_and_accuracy(logits, y_test)
                        rows[f"{method}_loss"].append(loss)
                        rows[f"{method}_acc"].append(acc)
                        rows[f"{method}_rms"].append(rms)
                net_hist[kind] = {"severity": np.asarray(severities, dtype=float),
                                  **{k: np.asarray(v, dtype=float) for k, v in rows.items()}}
                net_head[kind] = {
                    "severity": [float(s) for s in severities],
                    **{f"{m}_loss": [round(v, 4) for v in rows[f"{m}_loss"]] for m in METHODS},
                    **{f"{m}_acc": [round(v, 4) for v in rows[f"{m}_acc"]] for m in METHODS},
                    "eval_rms_worst": [round(float(v), 2) for v in rows["eval_rms"][-1]],
                    "train_mode_rms_worst": [round(float(v), 3) for v in rows["train_mode_rms"][-1]],
                }
        timings[f"{net_name}_eval_s"] = t.seconds
        histories[net_name] = net_hist
        headline[net_name] = net_head
        models[net_name] = model
    headline["data"] = ds.source
    headline["n_train"] = ds.n_train
    headline["n_test"] = int(n_test)
    result = EvalShiftResult(NAME, config, histories, headline, timings)
    result.models = models
    return result
