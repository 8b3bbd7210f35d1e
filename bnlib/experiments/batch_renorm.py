"""Batch renormalisation vs batch norm with small and non-i.i.d. batches (Ioffe 2017, on the digits).

Chapter 5, section 5.8.  The same ReLU MLP on MNIST digits (784 -> hidden ->
... -> 10, the normalisation between each linear layer and its ReLU) is
trained with batch norm (``bnlib.scratch.BatchNorm``) and with batch
renormalisation (``bnlib.scratch.renorm.BatchRenorm``) in three set-ups:

* ``control``: i.i.d. batches of ``batch_control`` digits (where the two should agree);
* ``small``: i.i.d. batches of ``batch_small`` digits (Ioffe's "small minibatches");
* ``noniid``: batches of ``batch_noniid`` digits drawn from only
  ``classes_per_batch`` classes each (equal numbers of each), a non-i.i.d.
  sampler like Ioffe's batches of 16 labels with 2 images each.

Every arm sees the same batches (same seed) and the same initial weights;
SGD with momentum, learning rate ``base_lr * batch / 16``.  Both layers'
moving averages use ``alpha`` (PyTorch's convention: the weight of the new
batch).  Batch renorm follows Ioffe's schedule scaled to the run: ``r_max = 1``,
``d_max = 0`` (batch norm) for the first 1/8 of the steps, then relaxed
linearly to ``r_max = 3`` at the last step and ``d_max = 5`` at 5/8 of the
steps (the paper: 5k, 40k and 25k steps).  Measured, in eval mode on the test
digits:

* ``test_acc`` for ``bn`` (moving averages), ``bn_precise`` (the same network
  with its statistics recomputed over ``precise_batches`` batches drawn like
  the training batches, weights fixed: precise BN, section 5.5) and ``renorm``;
* ``output_gap``: on ``precise_batches`` training batches at the end, the RMS
  difference between the training-mode and eval-mode logits, relative to the
  RMS of the eval-mode logits (0 means training computes what inference
  computes); for batch renorm also ``clipped_fraction``, the share of
  (batch, unit) pairs on those batches whose ``r`` or ``d`` is at its limit
  (where training and inference can differ);
* the test accuracy at ``n_checkpoints`` points during training (the figure).

NumPy (``bnlib.scratch``) only; ``device`` is accepted and ignored.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "batch-renorm"

ARMS = ("bn", "bn_precise", "renorm")
LABELS = {"bn": "batch norm (moving averages)", "bn_precise": "batch norm, precise statistics",
          "renorm": "batch renorm"}
SETTINGS = ("control", "small", "noniid")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = 4000
    n_test: int | None = 1000
    hidden: tuple = (100, 100)
    settings: tuple = SETTINGS
    batch_control: int = 32
    batch_small: int = 4
    batch_noniid: int = 16
    classes_per_batch: int = 2
    steps: int = 3000
    base_lr: float = 0.05            # at batch 16; scaled linearly with the batch size
    sgd_momentum: float = 0.9
    alpha: float = 0.01              # moving-average weight of the new batch, both layers
    r_max: float = 3.0
    d_max: float = 5.0
    precise_batches: int = 100
    n_checkpoints: int = 10
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "hidden": (32,), "settings": ("small", "noniid"),
                  "steps": 400, "precise_batches": 20, "n_checkpoints": 3},
        "book": {},
        "paper": {"hidden": (256, 256), "steps": 5000},
    }


def batch_size(config: Config, setting: str) -> int:
    return {"control": config.batch_control, "small": config.batch_small,
            "noniid": config.batch_noniid}[setting]


def build_network(config: Config, norm: str, n_in: int = 784):
    """``Linear -> BatchNorm or BatchRenorm -> ReLU`` per hidden layer, then ``Linear`` to 10."""
    from bnlib.scratch import BatchNorm, Linear, ReLU, Sequential
    from bnlib.scratch.renorm import BatchRenorm

    rng = np.random.default_rng([config.seed, 1])
    layers, n = [], n_in
    for h in config.hidden:
        layers.append(Linear(n, h, init="kaiming_normal", rng=rng))
        layers.append(BatchNorm(h, momentum=config.alpha) if norm == "bn" else
                      BatchRenorm(h, momentum=config.alpha))
        layers.append(ReLU())
        n = h
    layers.append(Linear(n, 10, init="kaiming_normal", rng=rng))
    return Sequential(*layers)


def sample_batches(labels: np.ndarray, setting: str, size: int, count: int, rng: np.random.Generator,
                   classes_per_batch: int = 2):
    """``count`` index arrays: i.i.d. batches, or (``noniid``) ``size / k`` digits of each of ``k`` classes."""
    if setting != "noniid":
        for _ in range(count):
            yield rng.choice(len(labels), size, replace=False)
        return
    k = classes_per_batch
    if size % k:
        raise ValueError(f"batch_noniid={size} must be a multiple of classes_per_batch={k}")
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(count):
        chosen = rng.choice(len(by_class), k, replace=False)
        yield np.concatenate([rng.choice(by_class[c], size // k, replace=False) for c in chosen])


def schedule(config: Config, step: int) -> tuple[float, float]:
    """Ioffe's r_max / d_max schedule (5k, 25k, 40k of 40k steps) scaled to ``config.steps``."""
    from bnlib.scratch.renorm import renorm_limits

    t = config.steps
    return renorm_limits(step, warmup=t // 8, r_full=t, d_full=5 * t // 8,
                         r_max=config.r_max, d_max=config.d_max)


def _accuracy(model, x, y) -> float:
    model.eval()
    with np.errstate(over="ignore", invalid="ignore"):
        logits = model.forward(x)
    ok = np.all(np.isfinite(logits), axis=1)
    return float(np.mean(ok & (np.nan_to_num(logits).argmax(axis=1) == y)))


def output_gap(model, x: np.ndarray, batches) -> float:
    """RMS of (training-mode minus eval-mode logits) over ``batches``, relative to the eval-mode RMS.

    Each batch goes through a fresh training-mode copy, so that every
    training-mode pass sees the same running statistics as eval mode (a pass
    in training mode moves them).
    """
    diff, ref = 0.0, 0.0
    for idx in batches:
        out_train = copy.deepcopy(model).train().forward(x[idx])
        out_eval = model.eval().forward(x[idx])
        diff += float(np.sum((out_train - out_eval) ** 2))
        ref += float(np.sum(out_eval ** 2))
    return float(np.sqrt(diff / ref))


def clipped_fraction(model, x: np.ndarray, batches) -> float:
    """Share of (batch, renorm unit) pairs whose ``r`` or ``d`` sits at its limit, over ``batches``."""
    from bnlib.scratch.renorm import BatchRenorm

    hits, total = 0, 0
    for idx in batches:
        trial = copy.deepcopy(model).train()
        trial.forward(x[idx])
        for layer in trial.layers:
            if isinstance(layer, BatchRenorm):
                at_r = np.isclose(np.abs(np.log(layer.last_r)), np.log(layer.r_max)) if layer.r_max > 1 else \
                    np.ones_like(layer.last_r, dtype=bool)
                at_d = np.isclose(np.abs(layer.last_d), layer.d_max)
                hits += int(np.sum(at_r | at_d))
                total += layer.last_r.size
    return hits / total


class BatchRenormResult(Result):
    """``histories``: ``checkpoints`` and ``acc[setting][arm]`` (eval-mode test accuracy at each)."""

    def plot(self):
        from bnlib.plots.ch05 import batch_renorm_curves

        c = self.config
        titles = {"control": f"i.i.d. batches of {c.batch_control}",
                  "small": f"i.i.d. batches of {c.batch_small}",
                  "noniid": f"batches of {c.batch_noniid}, {c.classes_per_batch} classes each"}
        return batch_renorm_curves(self.histories["checkpoints"], self.histories["acc"], titles=titles,
                                   labels=LABELS, warmup=c.steps // 8,
                                   title=f"MLP {'-'.join(map(str, (784, *c.hidden, 10)))}, "
                                         f"{self.headline['n_train']} digits, {c.steps} steps, seed {c.seed}")


def run(config: Config, progress: bool = False) -> BatchRenormResult:
    """Train BN and batch-renorm networks in every set-up; eval-mode test accuracy and output gap."""
    from bnlib import data
    from bnlib.scratch import SGD, softmax_cross_entropy
    from bnlib.scratch.renorm import BatchRenorm
    from bnlib.scratch.running import recompute_bn_stats
    from bnlib.training import cpu_threads

    for s in config.settings:
        if s not in SETTINGS:
            raise ValueError(f"settings must be among {', '.join(SETTINGS)}; got {s!r}")
    if config.steps < 8 or config.n_checkpoints < 1:
        raise ValueError("steps must be >= 8 and n_checkpoints >= 1")
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    x, y, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    checkpoints = sorted({int(round(v)) for v in
                          np.linspace(config.steps / config.n_checkpoints, config.steps, config.n_checkpoints)})
    acc = {s: {a: [] for a in ("bn", "renorm")} for s in config.settings}
    headline: dict = {s: {} for s in config.settings}
    bar = base.progress(total=2 * len(config.settings) * config.steps, desc=NAME, enabled=progress)
    with Timer() as timer, cpu_threads(config.threads):
        for setting in config.settings:
            si = SETTINGS.index(setting)          # seeds by set-up name: a subset gives the same runs
            size = batch_size(config, setting)
            lr = config.base_lr * size / 16
            for norm in ("bn", "renorm"):
                model = build_network(config, norm, ds.n_features)
                renorms = [layer for layer in model.layers if isinstance(layer, BatchRenorm)]
                opt, grads = SGD(model.params(), lr=lr, momentum=config.sgd_momentum), model.grads()
                rng = np.random.default_rng([config.seed, 2, si])      # same batches for both arms
                batches = sample_batches(y, setting, size, config.steps, rng, config.classes_per_batch)
                for step, idx in enumerate(batches):
                    for layer in renorms:
                        layer.r_max, layer.d_max = schedule(config, step)
                    model.train()
                    _, dlogits = softmax_cross_entropy(model.forward(x[idx]), y[idx])
                    model.backward(dlogits)
                    opt.step(grads)
                    bar.update(1)
                    if step + 1 in checkpoints:
                        acc[setting][norm].append(_accuracy(model, x_test, y_test))
                eval_rng = np.random.default_rng([config.seed, 5, si])
                held = list(sample_batches(y, setting, size, config.precise_batches, eval_rng,
                                           config.classes_per_batch))
                out = headline[setting]
                out[f"{norm}/test_acc"] = round(acc[setting][norm][-1], 4)
                out[f"{norm}/output_gap"] = round(output_gap(model, x, held), 4)
                if norm == "bn":
                    precise = copy.deepcopy(model)
                    recompute_bn_stats(precise, (x[idx] for idx in held))
                    out["bn_precise/test_acc"] = round(_accuracy(precise, x_test, y_test), 4)
                    out["bn_precise/output_gap"] = round(output_gap(precise, x, held), 4)
                else:
                    out["renorm/final_r_max"], out["renorm/final_d_max"] = renorms[0].r_max, renorms[0].d_max
                    out["renorm/clipped_fraction"] = round(clipped_fraction(model, x, held), 4)
            out["batch_size"], out["lr"] = size, lr
        bar.close()
    headline.update({"checkpoints": checkpoints, "data": ds.source, "n_train": ds.n_train, "n_test": ds.n_test})
    histories = {"checkpoints": np.asarray(checkpoints),
                 "acc": {s: {a: np.asarray(v) for a, v in arms.items()} for s, arms in acc.items()}}
    return BatchRenormResult(NAME, config, histories, headline, {"run_s": timer.seconds})
