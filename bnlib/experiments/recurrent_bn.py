"""Recurrent batch norm as Cooijmans et al. (2017) did it: an LSTM accumulates noisy evidence, tested on sequences longer than any it trained on.

Chapter 6, section 6.5.  The task is stationary in time, so that a sequence
can be made as long as we like: ten classes with fixed means ``m_k`` in
``R^dim`` (drawn once, ``task_seed``), and a sequence of class ``y`` is
``x_t = m_y + noise * e_t`` for ``t = 1 .. T`` with independent standard
normal ``e_t``.  One step says little (``noise`` is large); averaging the
steps helps, so the longer the sequence the higher the accuracy an ideal
reader reaches (``bayes_acc``: the nearest class mean to the sequence's
average, computed with the true means).  An LSTM with ``hidden`` units
(:class:`bnlib.torch.recurrent.NormLSTM`) reads one step at a time and a linear
layer classifies its last state.  It trains on sequences of ``t_train`` steps
and is tested on ``test_lengths``, up to four times longer.

The arms (``arms``, each ``norm`` or ``norm:gamma_init``):

* ``none``: the plain LSTM;
* ``ln``: layer norm at the same three places (Ba et al. 2016);
* ``bn``: Cooijmans et al.'s batch-normalised LSTM: ``W_x x_t`` and
  ``W_h h_{t-1}`` normalised separately, the cell state normalised before the
  output gate, statistics per time step up to ``t_max = t_train``, those of
  step ``t_max`` reused beyond it, gains initialised to 0.1;
* ``bn:1``: the same with the gains initialised to 1.

Every arm starts from the same weights and sees the same batches (Adam).
Test accuracy in evaluation mode (running statistics for batch norm).  The
summary also holds, for the ``bn`` arm, how far the running statistics of
step ``t`` are from those of step ``t_max`` (``stat_gap``), the premise of
reusing them beyond ``t_max`` (Cooijmans et al.'s Figure 5: after a
transient the statistics settle).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "recurrent-bn"

LABELS = {"none": "LSTM", "ln": "layer-norm LSTM", "bn": "BN-LSTM, gamma 0.1 (Cooijmans)",
          "bn:1": "BN-LSTM, gamma 1"}


@dataclass
class Config(ExperimentConfig):
    n_train: int = 4000
    n_test: int = 1000
    dim: int = 8
    noise: float = 5.0
    task_seed: int = 12345
    t_train: int = 20
    test_lengths: tuple = (20, 40, 80)
    hidden: int = 32
    arms: tuple = ("none", "ln", "bn", "bn:1")
    lr: float = 2e-3
    batch_size: int = 32
    steps: int = 400
    eval_every: int = 100
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 500, "n_test": 200, "hidden": 16, "steps": 30, "eval_every": 30,
                  "arms": ("none", "bn"), "t_train": 10, "test_lengths": (10, 20)},
        "book": {},
        "paper": {},                 # the CPU budget of the chapter: book scale, several seeds
    }


def _parse(arm: str) -> tuple[str, float]:
    norm, _, gamma = arm.partition(":")
    if norm not in ("none", "ln", "bn"):
        raise ValueError(f"arm must be none, ln, bn or bn:GAMMA; got {arm!r}")
    return norm, float(gamma) if gamma else 0.1


def make_task(n: int, length: int, *, dim: int = 8, noise: float = 5.0, task_seed: int = 12345,
              rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` sequences ``x_t = m_y + noise * e_t`` of ``length`` steps: ``(x (n, length, dim), y, means)``."""
    means = np.random.default_rng(task_seed).normal(size=(10, dim))
    rng = rng if rng is not None else np.random.default_rng(0)
    y = rng.integers(0, 10, size=n)
    x = means[y][:, None, :] + noise * rng.normal(size=(n, length, dim))
    return x.astype(np.float32), y.astype(np.int64), means


def bayes_accuracy(x: np.ndarray, y: np.ndarray, means: np.ndarray) -> float:
    """Accuracy of the ideal reader: the class mean nearest to the sequence's time average."""
    avg = x.mean(axis=1)
    pred = ((avg[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    return float((pred == y).mean())


def _accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 250) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            pred = model(torch.as_tensor(x[i:i + batch], dtype=torch.float32)).argmax(1).numpy()
            correct += int((pred == y[i:i + batch]).sum())
    return correct / len(x)


def _stat_gap(model) -> dict[str, np.ndarray]:
    """Relative distance of each step's running mean and variance of ``W_h h`` from step t_max's."""
    out = {}
    for which in ("x", "h", "c"):
        layers = getattr(model.lstm, f"bn_{which}").steps
        last = layers[-1]
        gaps = []
        for layer in layers:
            num = (np.linalg.norm((layer.running_mean - last.running_mean).numpy())
                   + np.linalg.norm((layer.running_var - last.running_var).numpy()))
            den = np.linalg.norm(last.running_mean.numpy()) + np.linalg.norm(last.running_var.numpy())
            gaps.append(num / den)
        out[which] = np.asarray(gaps)
    return out


class RecurrentBNResult(Result):
    """``histories[arm]``: ``loss_steps``, ``loss`` (smoothed), ``acc_by_length``;
    ``histories["stat_gap"]``: per-step distances of the ``bn`` arm's statistics."""

    def plot(self):
        from bnlib.plots.ch06 import recurrent_bn_figure

        arms = [a for a in self.config.arms if a in self.histories]
        return recurrent_bn_figure(
            {LABELS.get(a, a): (self.histories[a]["loss_steps"], self.histories[a]["loss"])
             for a in arms},
            {LABELS.get(a, a): self.histories[a]["acc_by_length"] for a in arms},
            list(self.config.test_lengths), self.histories.get("stat_gap"),
            t_train=self.config.t_train, bayes=self.headline.get("bayes_acc"),
            title=f"LSTM, {self.config.hidden} units, noisy evidence, trained on "
                  f"{self.config.t_train} steps, Adam lr "
                  f"{self.config.lr:g}, {self.config.steps} steps")


def run(config: Config, progress: bool = False) -> RecurrentBNResult:
    """Train every arm on the same batches from the same weights; test on longer sequences."""
    import torch

    from bnlib.torch.recurrent import SequenceClassifier
    from bnlib.training import cpu_threads, fit

    for arm in config.arms:
        _parse(arm)
    if config.steps < 1 or config.t_train < 1 or min(config.test_lengths) < 1:
        raise ValueError("steps, t_train and every test length must be positive")
    task = {"dim": config.dim, "noise": config.noise, "task_seed": config.task_seed}
    rng = np.random.default_rng([config.seed, 99])
    x_train, y_train, means = make_task(config.n_train, config.t_train, rng=rng, **task)
    tests = {T: make_task(config.n_test, T, rng=rng, **task)[:2] for T in config.test_lengths}
    histories = {}
    headline = {"test_acc": {}, "final_train_loss": {},
                "bayes_acc": {str(T): round(bayes_accuracy(x, y, means), 4) for T, (x, y) in tests.items()}}
    bar = base.progress(total=len(config.arms), desc=NAME, enabled=progress)
    window = max(1, config.eval_every // 4)
    with Timer() as t, cpu_threads(config.threads):
        for arm in config.arms:
            norm, gamma = _parse(arm)
            torch.manual_seed(1000 + config.seed)          # same initial weights in every arm
            model = SequenceClassifier(config.dim, config.hidden, 10, norm=norm, t_max=config.t_train,
                                       gamma_init=gamma)
            hist = fit(model, x_train, y_train, steps=config.steps, batch_size=config.batch_size,
                       optimizer="adam", lr=config.lr, rng=np.random.default_rng([config.seed, 7]),
                       eval_every=config.eval_every)
            loss = np.asarray(hist.loss, dtype=float)
            k = len(loss) // window
            smooth = loss[:k * window].reshape(k, window).mean(axis=1)
            accs = {}
            for T, (xt, yt) in tests.items():
                accs[str(T)] = round(_accuracy(model, xt, yt), 4)
            histories[arm] = {"loss_steps": window * np.arange(1, k + 1), "loss": smooth,
                              "acc_by_length": accs}
            headline["test_acc"][arm] = accs
            headline["final_train_loss"][arm] = round(float(smooth[-1]), 4)
            if arm == "bn":
                gaps = _stat_gap(model)
                histories["stat_gap"] = gaps
                headline["stat_gap"] = {w: {str(s): round(float(g[s - 1]), 4)
                                            for s in sorted({1, 2, 5, len(g) // 2, len(g)})}
                                        for w, g in gaps.items()}
            bar.update(1)
        bar.close()
    headline.update({"n_train": config.n_train, "n_test": config.n_test})
    return RecurrentBNResult(NAME, config, histories, headline, {"run_s": t.seconds})
