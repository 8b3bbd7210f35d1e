"""The learning-rate sweep behind chapter 4's Figure-1 set-up: 784-100-100-100-10 sigmoid, batch 60, SGD, plain and BN, rates 0.01-2 and two weight scales.

Chapter 4, section "Ioffe and Szegedy's Figure 1".  Ioffe and Szegedy state
the network, the batch of 60 and the "small random Gaussian" weights of their
MNIST experiment, but not the learning rate, nor whether the cross-entropy is
averaged or summed over the batch.  The book's set-up takes the Russian
post's rate 0.01 (threelevels2020ru) on the *summed* loss of 60 examples,
which for plain SGD is 0.6 on the mean.  This sweep trains both networks of
:mod:`bnlib.experiments.ioffe_mnist` (same weights, same batches) for
``steps`` steps at every rate of ``lrs`` on the *mean* loss (0.01 there is the
book's earlier set-up, 0.6 the current one) and records, as ``best_lr``, the
rate at which the **plain** network does best at the last step (the baseline's
own best rate; the chapter compares it with 0.6).  ``init_stds`` adds rows
with every weight drawn from N(0, s^2) (s = 0.01 is a common reading of
"small random Gaussian") at the rates in ``init_lrs``; ``None`` is
N(0, 1/n_in) (``lecun_normal``).

Summary, per seed: ``{init}/{lr}/{kind}/acc/{step}`` (test accuracy at every
evaluation), ``{init}/{lr}/{kind}/final`` and ``best_lr`` (the rate at which this
seed's plain network ends highest; chapter 4 takes the best rate of the mean over seeds).  ``init`` is ``"lecun"`` or ``"std=0.01"``.
NumPy only; ``device`` is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "ioffe-lr"

KINDS = ("bn", "plain")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None
    n_test: int | None = None
    lrs: tuple = (0.01, 0.03, 0.1, 0.3, 0.6, 1.0, 2.0)
    init_stds: tuple = (None, 0.01)     # None: lecun_normal; a number: N(0, s^2) everywhere
    init_lrs: tuple = (0.01, 0.6)       # the rates at which the other weight scales run
    steps: int = 3000
    eval_every: int = 500
    batch_size: int = 60
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 300, "lrs": (0.01, 0.6), "init_lrs": (0.6,),
                  "steps": 200, "eval_every": 100},
        "book": {"lrs": (0.01, 0.1, 0.6, 2.0), "init_lrs": (0.6,), "steps": 1000,
                 "eval_every": 250},
        "paper": {},
    }


def init_label(std) -> str:
    return "lecun" if std is None else f"std={std:g}"


def arms(config: Config) -> list[tuple]:
    """(init_std, lr) pairs in the order they run: the full rate grid with lecun_normal first."""
    out = []
    for std in config.init_stds:
        for lr in (config.lrs if std is None else config.init_lrs):
            out.append((std, lr))
    return out


class IoffeLrResult(Result):
    """``histories[init][lr][kind]``: ``eval_step`` and ``test_acc`` of each run."""

    def plot(self):
        import matplotlib.pyplot as plt

        from bnlib import plots

        c = self.config
        fig, ax = plt.subplots(figsize=(5.4, 3.4))
        h = self.headline["lecun"]
        for kind, label in (("plain", "plain"), ("bn", "BN")):
            ax.plot(c.lrs, [h[f"{lr:g}"][kind]["final"] for lr in c.lrs], "o-",
                    color=plots.color_for(kind), label=f"{label}, N(0, 1/n_in)")
        for std in c.init_stds:
            if std is None:
                continue
            e = self.headline[init_label(std)]
            for kind in KINDS:
                ax.plot(c.init_lrs, [e[f"{lr:g}"][kind]["final"] for lr in c.init_lrs], "s:",
                        mfc="none", color=plots.color_for(kind),
                        label=f"{'BN' if kind == 'bn' else 'plain'}, N(0, {std:g}²)")
        ax.axvline(self.headline["best_lr"], color="k", lw=0.6, ls="--",
                   label=f"chosen: best plain rate ({self.headline['best_lr']:g})")
        ax.set(xscale="log", ylim=(0, 1), xlabel="learning rate (SGD, mean loss over the batch)",
               ylabel=f"test accuracy after {c.steps:,} steps",
               title="784-100-100-100-10 sigmoid, batch 60")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        return fig


def run(config: Config, progress: bool = False) -> IoffeLrResult:
    """Train the plain and the BN network at every (weight scale, rate) arm."""
    from bnlib import data
    from bnlib.experiments import base, ioffe_mnist
    from bnlib.training import fit

    if not config.lrs or min(config.lrs) <= 0 or config.steps < 1 or config.eval_every < 1:
        raise ValueError("lrs must be positive and steps, eval_every >= 1")
    if None not in config.init_stds:
        raise ValueError("init_stds must contain None (lecun_normal), the arm the rule chooses on")
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    x, y, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    histories, headline, timings = {}, {}, {}
    with Timer() as t:
        for std, lr in base.progress(arms(config), desc=NAME, enabled=progress):
            net_config = ioffe_mnist.Config(seed=config.seed, init_std=std, lr=lr,
                                            batch_size=config.batch_size)
            entry = {}
            for kind, norm in (("bn", "bn"), ("plain", None)):
                net = ioffe_mnist.build_network(net_config, norm, x.shape[1])
                h = fit(net, x, y, steps=config.steps, batch_size=config.batch_size, lr=lr,
                        rng=np.random.default_rng([config.seed, 2]), x_eval=x_test,
                        y_eval=y_test, eval_every=config.eval_every, threads=config.threads)
                histories.setdefault(init_label(std), {}).setdefault(f"{lr:g}", {})[kind] = \
                    h.arrays()
                acc = [float("nan") if not np.isfinite(a) else round(float(a), 4)
                       for a in h.test_acc]
                entry[kind] = {"acc": {str(int(s)): a for s, a in zip(h.eval_step, acc)},
                               "final": acc[-1], "diverged": bool(h.diverged)}
            headline.setdefault(init_label(std), {})[f"{lr:g}"] = entry
    timings["sweep_s"] = t.seconds
    plain_final = {lr: headline["lecun"][f"{lr:g}"]["plain"]["final"] for lr in config.lrs}
    headline["best_lr"] = max(plain_final, key=lambda lr: np.nan_to_num(plain_final[lr], nan=-1))
    headline["eval_steps"] = [int(s) for s in histories["lecun"][f"{config.lrs[0]:g}"]["bn"]["eval_step"]]
    headline["data"] = ds.source
    headline["n_train"] = ds.n_train
    return IoffeLrResult(NAME, config, histories, headline, timings)
