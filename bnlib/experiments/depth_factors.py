"""Rawles's depth sweep as his code ran it (He init, Adam lr 0.01, batch 550, BN on the logits), and which difference from the book's sweep makes plain ReLU nets slower with depth.

Chapter 4, section "Deeper networks".  The post (rawles2018zh) prints its
model function but not its constants; a public copy of its trainer
(``mnist_classifier/trainer/model.py`` and ``task.py``, repository
lonestar686/batch_normalization, Apache-2.0, "Copyright 2018 Google") sets
them: every hidden ``Dense`` layer He-normal (``kernel_initializer=he_init``),
the output layer Keras's default Glorot-uniform, Keras ``BatchNormalization
(momentum=0.90)`` (epsilon 1e-3 by default) before every ReLU *and on the
logits*, Adam with ``LEARNING_RATE = 0.01``, ``--batch_size`` 550 by default
(the submit command passes none; the post's text says 500), 1,000 steps,
MNIST from ``input_data.read_data_sets`` (pixels in [0, 1], 55,000 training
images).  The book's :mod:`bnlib.experiments.depth_sweep` instead uses
Glorot-uniform weights everywhere, Adam lr 0.001, batch 500 and no BN on the
logits.

Arms (all ReLU, widths the first ``d`` of 500-400-300-200-100-50-25 times
``width_scale``): ``source`` (everything as in the source's code), then the
source with one thing changed to the book's value: ``lr=0.001``,
``init=glorot``, ``batch=500``, ``no_bn_output``; and ``book`` (the book's
sweep).  For the plain nets ``no_bn_output`` is the same net as ``source`` and
is not run again.  Recorded per arm, kind and depth: the steps to ``target``
test accuracy (test accuracy in eval mode every ``eval_every`` steps, at most
``max_steps``; ``None``: never) and the best test accuracy.
NumPy only; ``device`` is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "depth-factors"

KINDS = ("plain", "bn")

#: the source's trainer, in depth_sweep.Config's terms
SOURCE = dict(init="kaiming_normal", lr=0.01, batch_size=550, bn_output=True, bn_eps=1e-3,
              bn_momentum=0.1)
#: the book's depth sweep (depth_sweep.Config's defaults)
BOOK = dict(init="xavier_uniform", lr=0.001, batch_size=500, bn_output=False, bn_eps=1e-5,
            bn_momentum=0.1)
#: one difference at a time, from the source towards the book
ARMS = {
    "source": {},
    "lr=0.001": {"lr": 0.001},
    "init=glorot": {"init": "xavier_uniform"},
    "batch=500": {"batch_size": 500},
    "no_bn_output": {"bn_output": False, "bn_eps": 1e-5},
    "book": BOOK,
}
#: arms that change nothing in a plain net
BN_ONLY = {"no_bn_output"}


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None
    n_test: int | None = None
    width_scale: float = 1.0
    depths: tuple = (1, 3, 5, 7)
    arms: tuple = tuple(ARMS)
    target: float = 0.90
    max_steps: int = 300
    eval_every: int = 5
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 1500, "n_test": 300, "width_scale": 0.25, "depths": (1, 3),
                  "arms": ("source", "lr=0.001"), "max_steps": 40, "eval_every": 10,
                  "target": 0.8},
        "book": {"width_scale": 0.5, "depths": (1, 4, 7), "max_steps": 200, "eval_every": 10},
        # the source's widths; three depths and four one-change arms fit the CPU budget
        "paper": {"depths": (1, 4, 7), "max_steps": 200,
                  "arms": ("source", "lr=0.001", "init=glorot", "no_bn_output", "book")},
    }


def sweep_config(config: Config, arm: str):
    """The :class:`depth_sweep.Config` of one arm (ReLU only, no timing)."""
    from bnlib.experiments import depth_sweep

    values = dict(SOURCE)
    values.update(ARMS[arm])
    return depth_sweep.Config(seed=config.seed, n_train=config.n_train, n_test=config.n_test,
                              width_scale=config.width_scale, depths=config.depths,
                              activations=("relu",), target=config.target,
                              max_steps=config.max_steps, eval_every=config.eval_every,
                              timing_steps=0, threads=config.threads, **values)


class DepthFactorsResult(Result):
    """``histories[arm][kind][depth]``: ``eval_step``, ``test_acc``, ``loss`` of each run."""

    def steps(self, arm: str, kind: str) -> np.ndarray:
        vals = self.headline[arm][kind]["steps_to_target"]
        return np.array([np.nan if v is None else v for v in vals], dtype=float)

    def plot(self):
        import matplotlib.pyplot as plt

        from bnlib import plots

        c = self.config
        fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.5), sharey=True)
        markers = dict(zip(ARMS, ("o-", "s--", "^--", "v:", "D:", "x-")))
        for ax, kind in zip(axes, KINDS):
            for arm in c.arms:
                if kind == "plain" and arm in BN_ONLY:
                    continue
                v = self.steps(arm, kind)
                ax.plot(c.depths, np.where(np.isfinite(v), v, c.max_steps), markers[arm],
                        label=arm, color="k" if arm == "source" else None)
            ax.axhline(c.max_steps, color="k", lw=0.6, ls=":", label=f"budget ({c.max_steps}: never)")
            ax.set(xlabel="hidden layers (ReLU)", xticks=list(c.depths),
                   title=f"{'plain' if kind == 'plain' else 'BN'}: steps to {c.target:.0%}")
        axes[0].set_ylabel(f"steps to {c.target:.0%} test accuracy")
        handles, labels = axes[1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
        fig.suptitle("Rawles's set-up (source) and one change at a time towards the book's sweep",
                     fontsize=10)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        return fig


def run(config: Config, progress: bool = False) -> DepthFactorsResult:
    """Train every (arm, kind, depth) net until it reaches the target."""
    from bnlib import data
    from bnlib.experiments import base, depth_sweep
    from bnlib.training import fit

    unknown = set(config.arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    x, y, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    jobs = [(arm, kind, d) for arm in config.arms for kind in KINDS for d in config.depths
            if not (kind == "plain" and arm in BN_ONLY)]
    histories, headline, timings, reached, best = {}, {}, {}, {}, {}
    with Timer() as t:
        for arm, kind, depth in base.progress(jobs, desc=NAME, enabled=progress):
            sc = sweep_config(config, arm)
            net = depth_sweep.build_network(sc, depth, "relu", kind == "bn", x.shape[1])
            h = fit(net, x, y, steps=config.max_steps, batch_size=sc.batch_size,
                    optimizer="adam", lr=sc.lr, rng=np.random.default_rng([config.seed, depth, 2]),
                    x_eval=x_test, y_eval=y_test, eval_every=config.eval_every,
                    stop_at_acc=config.target, threads=config.threads)
            histories.setdefault(arm, {}).setdefault(kind, {})[depth] = h.arrays()
            reached[arm, kind, depth] = h.reached_step
            best[arm, kind, depth] = round(float(np.nanmax(h.test_acc)), 4)
    timings["sweep_s"] = t.seconds
    for arm in config.arms:
        headline[arm] = {}
        for kind in KINDS:
            if kind == "plain" and arm in BN_ONLY:
                continue
            headline[arm][kind] = {
                "steps_to_target": [reached[arm, kind, d] for d in config.depths],
                "best_test_acc": [best[arm, kind, d] for d in config.depths]}
        sc = sweep_config(config, arm)
        headline[arm]["setup"] = {"init": sc.init, "lr": sc.lr, "batch_size": sc.batch_size,
                                  "bn_output": sc.bn_output, "bn_eps": sc.bn_eps}
    headline["depths"] = list(config.depths)
    headline["widths"] = sweep_config(config, "source").hidden(max(config.depths))
    headline["data"] = ds.source
    headline["n_train"] = ds.n_train
    return DepthFactorsResult(NAME, config, histories, headline, timings)
