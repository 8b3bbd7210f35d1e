"""Layer norm in a recurrent net (Ba et al. 2016): a tanh RNN reads MNIST digits row by row, with and without normalisation.

Chapter 6, section 6.5 (the three-levels article, threelevels2020ru, C.2.5).  Each digit is a sequence of
``T = 28`` rows of 28 pixels.  A vanilla recurrent net with ``hidden`` tanh
units reads one row per time step,

    a_t = W_x x_t + W_h h_{t-1} + b,     h_t = tanh(norm(a_t)),

and a linear layer classifies the last state ``h_T``.  ``norm`` is

* ``none``: the identity (a plain tanh RNN);
* ``ln``: one ``torch.nn.LayerNorm`` shared by all time steps: each example's
  summed inputs are normalised over the hidden units at every step, with the
  same gain and bias at every step (Ba et al.'s recurrent layer norm);
* ``bn``: batch norm of the summed input ``a_t`` with separate statistics and
  running averages for every time step (one ``torch.nn.BatchNorm1d`` per
  step); a step beyond the last one trained on uses the statistics of that
  last step, Cooijmans et al.'s (2017) rule.  This is *not* their recurrent
  batch norm, which normalises ``W_x x_t`` and ``W_h h_{t-1}`` separately, in
  an LSTM, with a small initial gain: that one is
  :mod:`bnlib.experiments.recurrent_bn`.

All networks start from the same weights (the recurrent matrix scaled to
spectral radius ``recurrent_gain``) and see the same batches; SGD with
momentum.  ``lrs`` lists the learning rates tried (every norm at every one).
PyTorch on ``config.device``, float32, ``threads`` CPU threads.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "rnn-norm"

LABELS = {"none": "tanh RNN", "ln": "with layer norm", "bn": "with batch norm per time step"}


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = 4000
    n_test: int | None = 1000
    hidden: int = 64
    norms: tuple = ("none", "ln", "bn")
    lrs: tuple = (0.01, 0.03)
    momentum: float = 0.9
    recurrent_gain: float = 1.0     # spectral radius of W_h at initialisation
    batch_size: int = 32
    steps: int = 600
    eval_every: int = 100
    seeds: tuple = (0,)
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 300, "hidden": 32, "lrs": (0.01,), "steps": 300,
                  "eval_every": 100},
        "book": {},
        "paper": {"n_train": None, "n_test": None, "hidden": 128, "steps": 3000,
                  "eval_every": 250, "seeds": (0, 1)},
    }


class _Lazy:
    """Build the ``torch.nn.Module`` subclass on first use (``import bnlib`` stays torch-free)."""

    cls = None


def RecurrentClassifier(n_in: int, hidden: int, norm: str = "none", steps: int = 28,
                        n_classes: int = 10, recurrent_gain: float = 1.0, seed: int = 0):
    """A tanh RNN ``h_t = tanh(norm(W_x x_t + W_h h_{t-1} + b))`` with a linear read-out of ``h_T``.

    ``norm`` is ``"none"``, ``"ln"`` (one LayerNorm shared by all steps) or
    ``"bn"`` (one BatchNorm1d per time step, ``steps`` of them; later steps
    reuse the last one's).  Input
    ``(N, T, n_in)``; returns ``(N, n_classes)`` logits.
    """
    import torch
    from torch import nn

    if norm not in LABELS:
        raise ValueError(f"norm must be one of {', '.join(LABELS)}; got {norm!r}")

    if _Lazy.cls is None:
        class _RNN(nn.Module):
            def __init__(self, n_in, hidden, norm, steps, n_classes, gain):
                super().__init__()
                self.norm_kind, self.steps = norm, steps
                self.wx = nn.Linear(n_in, hidden)
                self.wh = nn.Linear(hidden, hidden, bias=False)
                with torch.no_grad():             # scale W_h to the requested spectral radius
                    radius = torch.linalg.eigvals(self.wh.weight).abs().max()
                    self.wh.weight.mul_(gain / radius)
                if norm == "ln":
                    self.norm = nn.LayerNorm(hidden)
                elif norm == "bn":
                    self.norm = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(steps))
                else:
                    self.norm = None
                self.out = nn.Linear(hidden, n_classes)

            def forward(self, x):
                if x.ndim != 3:
                    raise ValueError(f"x must have shape (N, T, n_in); got {tuple(x.shape)}")
                T = x.shape[1]
                inputs = self.wx(x)                       # W_x x_t + b for every t at once
                h = x.new_zeros(x.shape[0], self.wh.weight.shape[0])
                for t in range(T):
                    a = inputs[:, t] + self.wh(h)
                    if self.norm_kind == "ln":
                        a = self.norm(a)
                    elif self.norm_kind == "bn":            # beyond the last step: its statistics
                        a = self.norm[min(t, self.steps - 1)](a)
                    h = torch.tanh(a)
                return self.out(h)

        _Lazy.cls = _RNN
    torch.manual_seed(seed)
    return _Lazy.cls(n_in, hidden, norm, steps, n_classes, recurrent_gain)


def _smooth(loss: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of consecutive windows of ``width`` steps; returns (window ends, means)."""
    k = len(loss) // width
    means = np.asarray(loss[:k * width], dtype=float).reshape(k, width).mean(axis=1)
    return width * np.arange(1, k + 1), means


def _accuracy_with_batch_statistics(model, x, y, batch_size: int) -> float:
    """Test accuracy of a batch-norm RNN normalised with each test batch's own statistics.

    Training-mode forward passes on a copy (the running statistics stay
    untouched), in consecutive test batches of ``batch_size``.
    """
    import copy

    import torch

    twin = copy.deepcopy(model).train()
    param = next(twin.parameters())
    correct = n = 0
    with torch.no_grad():
        for i in range(0, len(x) - batch_size + 1, batch_size):
            xb = torch.as_tensor(x[i:i + batch_size], dtype=param.dtype, device=param.device)
            pred = twin(xb).argmax(dim=1).cpu().numpy()
            correct += int((pred == y[i:i + batch_size]).sum())
            n += batch_size
    return correct / n


class RNNResult(Result):
    """``histories[f"{norm}@{lr:g}"]``: ``loss_steps``, ``loss`` (seeds x windows, smoothed),
    ``eval_step``, ``test_acc`` (seeds x evaluations)."""

    def plot(self, lr: float | None = None):
        from bnlib import plots

        lr = max(self.config.lrs) if lr is None else lr
        h = {n: self.histories[f"{n}@{lr:g}"] for n in self.config.norms}
        return plots.rnn_training_curves(
            {n: (v["loss_steps"], v["loss"]) for n, v in h.items()},
            {n: (v["eval_step"], v["test_acc"]) for n, v in h.items()},
            labels=LABELS,
            title=f"tanh RNN, {self.config.hidden} units, MNIST rows (28 steps of 28 pixels), "
                  f"SGD lr {lr:g}")


def run(config: Config, progress: bool = False) -> RNNResult:
    """Train every (norm, learning rate, seed) network on the same batches; record curves."""
    import torch

    from bnlib import data
    from bnlib._device import resolve_device
    from bnlib.training import cpu_threads, fit

    if any(n not in LABELS for n in config.norms):
        raise ValueError(f"norms must be among {', '.join(LABELS)}; got {config.norms}")
    if config.steps < config.eval_every or not config.seeds or not config.lrs:
        raise ValueError("steps must be >= eval_every, and seeds and lrs non-empty")
    device = resolve_device(config.device)
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed, flatten=False)
    x_train = ds.x_train.reshape(ds.n_train, 28, 28)   # (N, T = 28 rows, 28 pixels per row)
    x_test = ds.x_test.reshape(ds.n_test, 28, 28)
    window = max(1, config.eval_every // 4)
    histories, seconds = {}, {}
    bar = base.progress(total=len(config.norms) * len(config.lrs) * len(config.seeds),
                        desc="rnn-norm", enabled=progress)
    with Timer() as t, cpu_threads(config.threads):
        for lr in config.lrs:
            for norm in config.norms:
                losses, accs, diverged, batch_stat_accs = [], [], [], []
                secs = 0.0
                for seed in config.seeds:
                    model = RecurrentClassifier(28, config.hidden, norm, steps=28,
                                                recurrent_gain=config.recurrent_gain,
                                                seed=1000 * config.seed + seed).to(
                        device=device, dtype=torch.float32)
                    hist = fit(model, x_train, ds.y_train, steps=config.steps,
                               batch_size=config.batch_size, lr=lr,
                               optimizer_kwargs={"momentum": config.momentum},
                               rng=np.random.default_rng([config.seed, seed]),
                               x_eval=x_test, y_eval=ds.y_test, eval_every=config.eval_every)
                    loss = np.asarray(hist.loss, dtype=float)
                    loss = np.concatenate([loss, np.full(config.steps - len(loss), np.nan)])
                    loss_steps, smooth = _smooth(loss, window)
                    acc = np.asarray(hist.test_acc, dtype=float)
                    n_eval = config.steps // config.eval_every + 1 + (config.steps % config.eval_every > 0)
                    acc = np.concatenate([acc, np.full(n_eval - len(acc), np.nan)])
                    if norm == "bn":
                        batch_stat_accs.append(_accuracy_with_batch_statistics(
                            model, x_test, ds.y_test, config.batch_size))
                    losses.append(smooth)
                    accs.append(acc)
                    diverged.append(hist.diverged)
                    secs += hist.train_seconds
                    bar.update(1)
                eval_step = np.unique(np.r_[np.arange(0, config.steps + 1, config.eval_every),
                                            config.steps])
                histories[f"{norm}@{lr:g}"] = {"loss_steps": loss_steps, "loss": np.asarray(losses),
                                               "eval_step": eval_step, "test_acc": np.asarray(accs),
                                               "diverged": np.asarray(diverged)}
                if batch_stat_accs:
                    histories[f"{norm}@{lr:g}"]["test_acc_batch_stats"] = np.asarray(batch_stat_accs)
                seconds[f"{norm}@{lr:g}"] = secs
        bar.close()

    def final(key, what):
        values = histories[key][what]
        return round(float(np.nanmean(values[:, -1])), 4)

    headline = {
        "final_test_acc": {k: final(k, "test_acc") for k in histories},
        "final_train_loss": {k: final(k, "loss") for k in histories},
        "first_loss_window": {k: round(float(np.nanmean(v["loss"][:, 0])), 4)
                              for k, v in histories.items()},
        "diverged": {k: int(v["diverged"].sum()) for k, v in histories.items()},
        "bn_test_acc_with_batch_statistics": {
            k: round(float(v["test_acc_batch_stats"].mean()), 4)
            for k, v in histories.items() if "test_acc_batch_stats" in v},
        "train_seconds": {k: round(s, 1) for k, s in seconds.items()},
        "data": ds.source,
        "n_train": ds.n_train,
        "n_test": ds.n_test,
    }
    return RNNResult(NAME, config, histories, headline, {"run_s": t.seconds})
