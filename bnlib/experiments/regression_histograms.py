"""The input-normalisation post's net: 7 x 30 tanh/ReLU net on y = x^2 - 5 + noise; every layer's input histograms with and without BN.

Chapter 4, the section on the post's histograms (src2018normalization).  The problem is
:func:`bnlib.data.regression_1d`: 2,500 points x evenly spaced in [-7, 10],
y = x^2 - 5 + N(0, 8^2).  The network has 7 hidden layers of 30 units and one
linear output; every weight is drawn from N(0, 1) (``standard_normal``) and
every bias starts at 0.1, as in the source.  Training is full-batch gradient
descent with learning rate 0.001 for 250 steps on the source's cost

    C = 1/N sum_i (y_i - f(x_i))^2          (twice ``bnlib.scratch.mse_loss``)

The BN network, like the source's, normalises the input x too and puts
``BatchNorm`` between every hidden ``Linear`` and its activation.  Both
networks start from the same weights.  Every ``snapshot_every`` steps the
experiment records every hidden layer's pre-activation (the input of the
tanh or ReLU, after BN where there is one) for all 2,500 points, and from them

* tanh: the fraction of values where the unit is saturated in the book's sense
  (chapter 1, :data:`bnlib.diagnostics.SATURATION_SLOPE`): its slope
  1 - tanh(z)^2 is below 0.01, i.e. |tanh(z)| > 0.995 (|z| > 2.99);
* ReLU: the fraction of *dead* units, whose output is 0 for every point (no
  gradient reaches their weights), and the fraction of zero outputs, both
  counted over *finite* values only;
* divergence as divergence: the first step whose cost is not finite, the
  fraction of non-finite pre-activations per layer at the last snapshot, and
  the dead units at the last step whose forward pass was still finite
  (``last_finite_step``); after a divergence ``dead`` is ``None`` (the
  scratch ReLU passes a NaN on as 0, so later layers see zeros that say
  nothing about dead units).  A NaN is not a dead unit: ``NaN > 0`` is False, so
  a count of ``~(z > 0)`` would file every NaN as "dead".

Full batch: the batch statistics are those of the whole data set, so training
and eval mode agree; the experiment uses the training mode throughout.
NumPy only; ``device`` is ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.diagnostics import SATURATION_SLOPE
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "regression-histograms"

ACTIVATIONS = ("tanh", "relu")
KINDS = ("plain", "bn")
#: saturated: slope 1 - tanh(z)^2 below SATURATION_SLOPE (0.01), i.e. |tanh(z)| > sqrt(0.99) = 0.995
SATURATION = float(np.sqrt(1.0 - SATURATION_SLOPE))


@dataclass
class Config(ExperimentConfig):
    n: int = 2500
    layers: int = 7
    units: int = 30
    lr: float = 0.001
    steps: int = 250
    bias: float = 0.1
    snapshot_every: int = 50
    activations: tuple = ACTIVATIONS
    threads: int | None = 1        # BLAS threads (None: library default); 1 is fastest here

    SCALES = {
        "smoke": {"n": 500, "steps": 50, "snapshot_every": 25},
        "book": {},
        "paper": {},      # the source's set-up is small: book scale is paper scale
    }


def build_network(config: Config, activation: str, bn: bool):
    """The source's net: [BN(x)] -> 7 x (Linear(N(0,1), bias 0.1) -> [BN] -> act) -> Linear."""
    from bnlib.scratch import BatchNorm, Linear, Sequential, mlp

    net = mlp([1] + [config.units] * config.layers + [1], activation=activation,
              norm="bn" if bn else None, init="standard_normal",
              rng=np.random.default_rng([config.seed, 1]))
    for layer in net.layers:
        if isinstance(layer, Linear):
            layer.b[...] = config.bias
    return Sequential(BatchNorm(1), *net.layers) if bn else net


def _activation_inputs(net, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Forward pass recording the input of every activation layer; returns (inputs, output)."""
    inputs, z = [], x
    for layer in net.layers:
        if type(layer).__name__ in ("Tanh", "ReLU", "Sigmoid"):
            inputs.append(z)
        z = layer.forward(z)
    return inputs, z


def activation_output(pre: np.ndarray, activation: str) -> np.ndarray:
    """tanh(z) or ReLU(z); a NaN input stays NaN (``bnlib.scratch.ReLU`` would give 0)."""
    if activation == "tanh":
        return np.tanh(pre)
    return np.where(np.isnan(pre), np.nan, np.where(pre > 0, pre, 0.0))


def saturated_fraction(pre: np.ndarray) -> float:
    """Fraction of tanh units' values that are saturated: slope 1 - tanh(z)^2 < 0.01."""
    return float(np.mean(np.abs(np.tanh(pre)) > SATURATION))


def nonfinite_fraction(pre: np.ndarray) -> float:
    """Fraction of values that are NaN or infinite."""
    return float(np.mean(~np.isfinite(pre)))


def dead_fraction(pre: np.ndarray) -> float | None:
    """Fraction of ReLU units whose output is 0 for every example (rows: examples).

    Only units whose values are all finite are counted (a NaN is not a zero);
    ``None`` when no unit is finite.
    """
    finite = np.all(np.isfinite(pre), axis=0)
    if not finite.any():
        return None
    return float(np.mean(np.all(pre[:, finite] <= 0, axis=0)))


def zero_fraction(pre: np.ndarray) -> float | None:
    """Fraction of the finite ReLU inputs that are <= 0 (output 0); ``None`` if none is finite."""
    v = pre[np.isfinite(pre)]
    return float(np.mean(v <= 0)) if v.size else None


def _mean_or_none(values):
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 3) if vals else None


class RegressionHistogramsResult(Result):
    """``histories[activation][kind]``: ``loss`` (per step), ``snapshot_step`` and
    ``pre`` (snapshots x layers x points x units, float32), ``x`` (the inputs)."""

    def layer_values(self, activation: str, kind: str, snapshot: int, what: str = "post"):
        """The values of each hidden layer at a snapshot: pre-activations or outputs."""
        pre = self.histories[activation][kind]["pre"][snapshot]
        if what == "pre":
            return list(pre)
        if what == "post":
            return [activation_output(p, activation) for p in pre]
        raise ValueError(f"what must be 'pre' or 'post'; got {what!r}")

    def plot(self, activation: str = "tanh", what: str = "post", steps=None):
        """Grid of histograms: rows (plain, BN) x snapshot steps, columns the 7 hidden layers.

        ``what="post"``: each layer's output, i.e. the input of the next layer
        (what the source draws); ``"pre"``: the input of each activation (after
        BN), clipped to [-8, 8] so values far out pile up at the edges.
        """
        from bnlib import plots

        h = self.histories[activation]
        snaps = list(h["plain"]["snapshot_step"])
        steps = [snaps[0], snaps[-1]] if steps is None else list(steps)
        rows, labels, notes = [], [], []
        for step in steps:
            i = snaps.index(step)
            for kind in KINDS:
                values = self.layer_values(activation, kind, i, what)
                entry = self.headline[activation][kind]
                bad = entry["first_nonfinite_step"]
                if entry["diverged"] and step >= bad:
                    # after the divergence nothing is drawn: NaN is no value, and the zeros
                    # that the scratch ReLU makes of NaN are no activations either
                    notes.append([f"diverged at\nstep {bad}:\n"
                                  f"{np.mean(~np.isfinite(v)):.0%} NaN/inf" for v in values])
                    values = [np.array([]) for _ in values]
                else:
                    notes.append([None] * len(values))
                    values = [np.asarray(v)[np.isfinite(v)] for v in values]
                if what == "pre":
                    values = [np.clip(v, -8, 8) for v in values]
                rows.append(values)
                labels.append(f"{'BN' if kind == 'bn' else 'plain'}, step {step}")
        if what == "post":
            range_ = (-1, 1) if activation == "tanh" else None
        else:
            range_ = (-8, 8)
        what_text = "output" if what == "post" else "input (pre-activation)"
        fig = plots.histogram_grid(
            rows, row_labels=labels,
            col_labels=[f"layer {j + 1}" for j in range(self.config.layers)], bins=25,
            range_=range_,
            title=f"{activation}: every hidden layer's {what_text}, without and with BN")
        from matplotlib.ticker import MaxNLocator, PercentFormatter

        n_cols = self.config.layers
        for r, label in enumerate(labels):
            color = plots.COLORS["bn"] if label.startswith("BN") else plots.COLORS["plain"]
            row_axes = fig.axes[r * n_cols:(r + 1) * n_cols]
            top = 0.0
            for ax, values in zip(row_axes, rows[r]):
                n = max(1, np.size(values))
                note = notes[r][row_axes.index(ax)]
                if note:                       # diverged: say so instead of drawing zeros
                    ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=7,
                            transform=ax.transAxes, color=plots.COLORS["plain"])
                    ax.set_xticks([])
                for patch in ax.patches:      # counts -> share of the layer's values, in %
                    patch.set_facecolor(color)
                    patch.set_height(100.0 * patch.get_height() / n)
                top = max([top] + [patch.get_height() for patch in ax.patches])
            for j, ax in enumerate(row_axes):  # one y scale per row, so layers compare
                ax.set_ylim(0, 1.05 * top if top > 0 else 1)
                ax.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=False))
                ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
                ax.tick_params(axis="y", labelsize=7, labelleft=j == 0)
            if all(notes[r]):                  # nothing drawn in this row: no y scale
                for ax in row_axes:
                    ax.set_yticks([])
            row_axes[0].set_ylabel(f"{label}\n% of values", fontsize=9)
        fig.suptitle(f"{activation}: every hidden layer's {what_text}, without and with BN "
                     f"(y: share of the layer's finite values in each bin)")
        fig.tight_layout()
        return fig

    def plot_loss(self):
        """Training cost against step, for both activations, with and without BN (log scale)."""
        import matplotlib.pyplot as plt

        from bnlib import plots

        acts = list(self.histories)
        fig, axes = plt.subplots(1, len(acts), figsize=(4.6 * len(acts), 3.2), squeeze=False)
        for ax, act in zip(axes[0], acts):
            series = {}
            for kind in KINDS:
                loss = self.histories[act][kind]["loss"]
                series["BN" if kind == "bn" else "plain"] = (np.arange(len(loss)), loss)
            plots.curves(series, xlabel="gradient descent step", ylabel="cost (mean squared error)",
                         title=act, logy=True, ax=ax)
            entry = self.headline[act]["plain"]
            if entry["diverged"]:       # keep the axis readable; say where the cost went
                bn_loss = self.histories[act]["bn"]["loss"]
                ax.set_ylim(0.5 * np.nanmin(bn_loss), 100 * np.nanmax(bn_loss))
                ax.text(0.35, 0.8, f"plain: cost overflows,\nNaN from step "
                        f"{entry['first_nonfinite_step']}", transform=ax.transAxes,
                        color=plots.COLORS["plain"], fontsize=9)
        fig.tight_layout()
        return fig

    def save(self, out_dir):
        """NAME.json and NAME.png (tanh histograms), plus ReLU histograms and loss curves."""
        import matplotlib.pyplot as plt

        paths = super().save(out_dir)
        from pathlib import Path

        for suffix, fig in (("relu", self.plot("relu") if "relu" in self.histories else None),
                            ("loss", self.plot_loss())):
            if fig is not None:
                fig.savefig(Path(out_dir) / f"{self.name}-{suffix}.png", dpi=120,
                            bbox_inches="tight")
                plt.close(fig)
        return paths


def run(config: Config, progress: bool = False) -> RegressionHistogramsResult:
    """Train the plain and the BN network for each activation; snapshot every layer."""
    from bnlib import data
    from bnlib.experiments import base
    from bnlib.scratch import SGD, mse_loss
    from bnlib.training import cpu_threads

    for act in config.activations:
        if act not in ACTIVATIONS:
            raise ValueError(f"activations must be among {ACTIVATIONS}; got {act!r}")
    if config.steps < 1 or config.snapshot_every < 1:
        raise ValueError("steps and snapshot_every must be >= 1")
    x, y = data.regression_1d(n=config.n, seed=config.seed)
    histories, headline, timings = {}, {}, {}
    jobs = [(act, kind) for act in config.activations for kind in KINDS]
    for act, kind in base.progress(jobs, desc=NAME, enabled=progress):
        net = build_network(config, act, kind == "bn")
        opt = SGD(net.params(), lr=config.lr)
        loss_hist, snaps, pres = [], [], []
        last_finite = None                                 # (step, pre-activations)
        with Timer() as t, np.errstate(all="ignore"), cpu_threads(config.threads):
            for step in range(config.steps + 1):
                pre, pred = _activation_inputs(net, x)
                if all(np.all(np.isfinite(p)) for p in pre) and np.all(np.isfinite(pred)):
                    last_finite = (step, np.array(pre))
                if step % config.snapshot_every == 0 or step == config.steps:
                    snaps.append(step)
                    pres.append(np.array(pre, dtype=np.float32))
                if step == config.steps:
                    break
                loss, dpred = mse_loss(pred, y)
                loss_hist.append(2.0 * loss)               # the source's cost: no 1/2
                if not np.isfinite(loss):                  # diverged: nothing left to train
                    dpred = np.zeros_like(dpred)
                net.backward(2.0 * dpred)
                opt.step(net.grads())
        pres = np.stack(pres)                              # snapshots x layers x n x units
        histories.setdefault(act, {})[kind] = {
            "loss": np.array(loss_hist), "snapshot_step": np.array(snaps), "pre": pres}
        timings[f"{act}_{kind}_s"] = t.seconds
        final = pres[-1].astype(np.float64)
        entry = {
            "final_loss": float(loss_hist[-1]) if np.isfinite(loss_hist[-1]) else "nan",
            "diverged": bool(not np.all(np.isfinite(loss_hist))),
            "first_nonfinite_step": next((i for i, v in enumerate(loss_hist)
                                          if not np.isfinite(v)), None),
        }
        if act == "tanh":
            per_layer = [saturated_fraction(p) for p in final]
            entry["saturated_per_layer"] = [round(v, 3) for v in per_layer]
            entry["saturated"] = round(float(np.mean(per_layer)), 3)
            entry["saturated_at_init"] = round(float(np.mean(
                [saturated_fraction(p) for p in pres[0].astype(np.float64)])), 3)
        else:
            # after a divergence no count of dead units means anything: bnlib.scratch.ReLU
            # turns a NaN into 0, so layers behind a NaN layer see zeros, not dead units
            per_layer = [None if entry["diverged"] else dead_fraction(p) for p in final]
            entry["dead_per_layer"] = [None if v is None else round(v, 3) for v in per_layer]
            entry["dead"] = _mean_or_none(per_layer)
            entry["zero_outputs"] = None if entry["diverged"] else \
                _mean_or_none([zero_fraction(p) for p in final])
            entry["dead_at_init"] = _mean_or_none([dead_fraction(p) for p in pres[0].astype(np.float64)])
            if last_finite is not None:
                entry["last_finite_step"] = int(last_finite[0])
                entry["dead_at_last_finite"] = _mean_or_none([dead_fraction(p) for p in last_finite[1]])
        entry["nonfinite_per_layer"] = [round(nonfinite_fraction(p), 3) for p in final]
        entry["nonfinite"] = round(float(np.mean(entry["nonfinite_per_layer"])), 3)
        headline.setdefault(act, {})[kind] = entry
    headline["n"] = config.n
    headline["steps"] = config.steps
    return RegressionHistogramsResult(NAME, config, histories, headline, timings)
