"""Chapter 7's sign flips under a sweep: gradient-change ICS and effective beta over learning rates, widths and seeds.

Chapter 7, section "Results at paper scale".  At book scale (784-100x4-10
ReLU) batch norm lowers Santurkar et al.'s gradient-change measure of
internal covariate shift (eq. ch7-ics) and the effective beta-smoothness
(eq. ch7-beta); at paper scale (784-256x6-10, longer training) both come out
higher with batch norm, and the deep linear networks turn the other way.
This experiment asks whether the sign follows the network size or the
learning rate: for each architecture in ``archs`` and each learning rate in
``lrs`` a network without and one with batch norm (same initial weights and
batches) are trained with plain SGD for ``steps`` steps; every
``probe_every`` steps, on the current mini-batch, it measures

* ``l2``, ``cos``: the median over layers 2..L of ``||G - G'||`` and
  ``cos(G, G')`` (:func:`bnlib.analysis.gradient_change`);
* ``beta``: the effective beta, max over ``step_sizes`` of
  ``||grad(theta - eta g) - g|| / ||eta g||``, and ``loss_range``
  (:func:`bnlib.analysis.landscape_probe`; ReLU networks only).

Deep linear networks (``linear_depths`` hidden layers of ``linear_width``,
learning rates ``linear_lrs``) get the gradient-change measure only.
Headline per architecture, learning rate and network: the medians over the
probes, the final training loss (mean of the last 10% of steps) and the test
accuracy; a run whose loss is not finite is left out (``diverged`` = 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "ics-lr-sweep"


@dataclass
class Config(ExperimentConfig):
    n_train: int | None = None
    n_test: int | None = None
    archs: tuple = (("narrow", (100,) * 4), ("wide", (256,) * 6))
    lrs: tuple = (0.025, 0.05, 0.1)
    linear_depths: tuple = (6, 12)
    linear_width: int = 100
    linear_lrs: tuple = (0.003, 0.01, 0.03)
    step_sizes: tuple = (0.025, 0.05, 0.1, 0.2, 0.4)
    batch_size: int = 64
    steps: int = 400
    probe_every: int = 100
    threads: int = 1

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 500, "archs": (("narrow", (32, 32)),), "lrs": (0.05,),
                  "linear_depths": (4,), "linear_width": 32, "linear_lrs": (0.01,), "steps": 60,
                  "probe_every": 20},
        "book": {"archs": (("narrow", (100,) * 4),), "linear_depths": (6,)},
        "paper": {},
    }


#: the figure's panels: (title, which networks, quantity, relative to the no-BN value?)
PANELS = (("ReLU: ‖G − G′‖ (relative)", "relu", "l2", True), ("ReLU: cos(G, G′)", "relu", "cos", False),
          ("ReLU: effective β (relative)", "relu", "beta", True),
          ("deep linear: ‖G − G′‖ (relative)", "linear", "l2", True))


def sweep_points(per_seed: list[dict]) -> dict:
    """Figure points from one or more seeds' headlines: ``{panel: {arch: [(lr, mean, low, high, resolved)]}}``.

    Each point is the difference BN minus no BN, paired by seed, with its 95%
    interval (none for one seed); a relative panel divides the mean difference and
    its interval by the mean no-BN value, so that a point is resolved exactly when
    the table's paired difference (:func:`bnlib.results.paired_difference`) is.
    """
    from bnlib.results import ci95

    first = per_seed[0]
    archs = [a for a in first if isinstance(first[a], dict)]
    points = {}
    for title, kind, q, relative in PANELS:
        panel = points.setdefault(title, {})
        for arch in archs:
            if arch.startswith("linear") != (kind == "linear"):
                continue
            rows = []
            for lr in first[arch]:
                d, ref = [], []
                for h in per_seed:
                    a, b = h[arch][lr]["bn"], h[arch][lr]["plain"]
                    if q in a and q in b:
                        d.append(a[q] - b[q])
                        ref.append(abs(b[q]))
                if not d:
                    continue
                m = float(np.mean(d))
                w = ci95(d) if len(d) > 1 else 0.0
                scale = float(np.mean(ref)) if relative else 1.0
                rows.append((float(lr), m / scale, (m - w) / scale, (m + w) / scale,
                             len(d) > 1 and abs(m) > w))
            panel[arch] = rows
    return points


class SweepResult(Result):
    def plot(self):
        from bnlib.plots.ch07 import sweep_figure

        return sweep_figure(sweep_points([self.headline]), title=(f"BN − no BN, medians over probes every "
                                                  f"{self.config.probe_every} of {self.config.steps:,} "
                                                  f"steps (seed {self.config.seed}, {self.headline['data']})"))


def _train(model, x, y, xt, yt, config: Config, lr: float, landscape: bool, progress: bool, desc: str) -> dict:
    import torch

    from bnlib import analysis
    from bnlib.training import batch_indices

    rng = np.random.default_rng([config.seed, 2])
    h = {"l2": [], "cos": [], "beta": [], "loss_range": [], "loss": []}
    for step, idx in enumerate(base.progress(batch_indices(len(y), config.batch_size, config.steps, rng),
                                             total=config.steps, desc=desc, enabled=progress)):
        idx = torch.as_tensor(idx, device=x.device)
        xb, yb = x[idx], y[idx]
        if step % config.probe_every == 0:
            g = analysis.gradient_change(model, xb, yb, lr)
            h["l2"].append(np.median(g["l2"][1:]))
            h["cos"].append(np.median(g["cos"][1:]))
            if landscape:
                p = analysis.landscape_probe(model, xb, yb, config.step_sizes)
                h["beta"].append(p["beta"].max())
                losses = np.concatenate([[p["loss0"]], p["loss"]])
                h["loss_range"].append(losses.max() - losses.min())
        grads, loss = analysis.gradients(model, xb, yb)
        if not np.isfinite(loss):
            return {"diverged": 1}
        analysis.sgd_step(model, grads, lr)
        h["loss"].append(loss)
    _, acc = analysis.evaluate(model, xt, yt)
    out = {k: round(float(np.median(v)), 5) for k, v in h.items() if k != "loss" and len(v)}
    if not all(np.isfinite(v) for v in out.values()):
        return {"diverged": 1}
    out["final_train_loss"] = round(float(np.mean(h["loss"][-max(1, config.steps // 10):])), 4)
    out["test_acc"] = round(acc, 4)
    out["diverged"] = 0
    return out


def run(config: Config, progress: bool = False) -> SweepResult:
    """Train no-BN / BN pairs for every architecture and learning rate; probe ICS and effective beta."""
    from bnlib import analysis

    if config.steps < 1 or config.probe_every < 1 or config.batch_size < 2:
        raise ValueError("steps and probe_every must be >= 1 and batch_size >= 2")
    ds, (x, y, xt, yt) = analysis.mnist_tensors(config)
    runs = [(arch, hidden, "relu", lr, True) for arch, hidden in config.archs for lr in config.lrs]
    runs += [(f"linear{d}", (config.linear_width,) * d, "linear", lr, False)
             for d in config.linear_depths for lr in config.linear_lrs]
    headline, timings = {}, {}
    with Timer() as t:
        for arch, hidden, act, lr, landscape in runs:
            cell = headline.setdefault(arch, {}).setdefault(f"{lr:g}", {})
            for norm in (None, "bn"):
                model = analysis.mlp([x.shape[1], *hidden, 10], act, norm, seed=config.seed,
                                     device=config.device)
                cell["bn" if norm else "plain"] = _train(model, x, y, xt, yt, config, lr, landscape,
                                                         progress, f"{arch} lr {lr:g} {norm or 'plain'}")
    timings["total_s"] = t.seconds
    headline["data"] = ds.source
    return SweepResult(NAME, config, {}, headline, timings)
