"""Checks for the exercises of chapter 5 (evaluation mode).

Each ``check_*`` takes the student's function, runs it on fixed inputs,
prints one line of feedback (PASS, FAIL with the reason and by how much, or
TODO while the function still raises ``NotImplementedError``) and returns
the ``Feedback``.

* :func:`check_population_statistics` - exercise 5.1: Ioffe & Szegedy's
  Algorithm 2, eq. (ch5-alg2)
* :func:`check_running_statistics`    - exercise 5.2: the running mean and
  variance of ``torch.nn.BatchNorm1d`` after a sequence of batches, eq.
  (ch5-ema), including ``momentum=None``
* :func:`check_fold_linear_bn`        - exercise 5.3: fold an eval-mode batch
  norm into the ``Linear`` layer before it, eq. (ch5-fold)
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from bnlib.exercises import check_rng
from bnlib.exercises import ExerciseError, Feedback, expect_shape, report, run_check
from bnlib.scratch.deploy import fold_linear_bn as fold_linear_bn_reference
from bnlib.scratch.running import population_statistics as population_statistics_reference

__all__ = ["check_population_statistics", "check_running_statistics", "check_fold_linear_bn",
           "population_statistics_reference", "running_statistics_reference",
           "fold_linear_bn_reference"]


def _max_rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(1e-12, np.abs(a) + np.abs(b))))


def _pair(name: str, got, shapes: tuple) -> tuple[np.ndarray, np.ndarray]:
    if got is None:
        raise ExerciseError(f"{name} returned None - return a pair")
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ExerciseError(f"{name} should return a pair; got {type(got).__name__}")
    return tuple(expect_shape(f"{name}'s {w}", g, s).astype(np.float64)
                 for w, g, s in zip(("first result", "second result"), got, shapes))


# --- exercise 5.1 --------------------------------------------------------------

def check_population_statistics(population_statistics: Callable) -> Feedback:
    """Exercise 5.1: ``population_statistics(batches) -> (mean, var)``, eq. (ch5-alg2)."""

    def body() -> str:
        rng = check_rng(51)
        cases = [("8 batches of 10 x 3", [rng.normal(2.0, 3.0, size=(10, 3)) for _ in range(8)]),
                 ("20 batches of 4 x 5", [rng.normal(-1.0, 0.5, size=(4, 5)) + rng.normal(size=5)
                                          for _ in range(20)])]
        for label, batches in cases:
            d = batches[0].shape[1]
            got = population_statistics([b.copy() for b in batches])
            mean, var = _pair("population_statistics", got, ((d,), (d,)))
            exp_mean, exp_var = population_statistics_reference(batches)
            if _max_rel(mean, exp_mean) > 1e-9:
                raise ExerciseError(f"the mean is wrong for {label}: max relative error "
                                    f"{_max_rel(mean, exp_mean):.2e}")
            if _max_rel(var, exp_var) > 1e-9:
                m = batches[0].shape[0]
                hint = ""
                biased = np.mean([b.var(axis=0) for b in batches], axis=0)
                if _max_rel(var, biased) < 1e-9:
                    hint = (f" - that is the mean of the biased batch variances; Algorithm 2 "
                            f"multiplies it by m / (m - 1) = {m}/{m - 1}")
                elif _max_rel(var, np.concatenate(batches).var(axis=0)) < 1e-9 or \
                        _max_rel(var, np.concatenate(batches).var(axis=0, ddof=1)) < 1e-9:
                    hint = (" - that is the variance of all examples pooled; Algorithm 2 averages "
                            "the variances of the batches (what the layer saw in training)")
                elif _max_rel(var, np.sqrt(exp_var)) < 1e-9:
                    hint = " - that is a standard deviation; return the variance"
                raise ExerciseError(f"the variance is wrong for {label}: max relative error "
                                    f"{_max_rel(var, exp_var):.2e}{hint}")
        return "E[x] is the mean of the batch means, Var[x] = m/(m-1) times the mean batch variance"

    return report(run_check("exercise 5.1 population_statistics", body, blocks=(
                                 "bnlib.scratch.running:population_statistics",
    )))


# --- exercise 5.2 --------------------------------------------------------------

def running_statistics_reference(batches, momentum: float | None = 0.1
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """The running mean and variance of ``torch.nn.BatchNorm1d(momentum=...)`` after ``batches``."""
    d = np.asarray(batches[0]).shape[1]
    mean, var = np.zeros(d), np.ones(d)
    for t, x in enumerate(batches, 1):
        x = np.asarray(x, dtype=np.float64)
        factor = 1.0 / t if momentum is None else momentum
        mean = (1 - factor) * mean + factor * x.mean(axis=0)
        var = (1 - factor) * var + factor * x.var(axis=0, ddof=1)
    return mean, var


def check_running_statistics(running_statistics: Callable) -> Feedback:
    """Exercise 5.2: ``running_statistics(batches, momentum) -> (running_mean, running_var)``.

    Compared with ``torch.nn.BatchNorm1d`` itself, for momentum 0.1, 0.5 and None.
    """
    import torch

    def body() -> str:
        rng = check_rng(52)
        batches = [rng.normal(3.0, 2.0, size=(6, 4)) for _ in range(5)]
        for momentum in (0.1, 0.5, None):
            bn = torch.nn.BatchNorm1d(4, momentum=momentum).double()
            with torch.no_grad():
                for x in batches:
                    bn(torch.from_numpy(x))
            exp_mean, exp_var = bn.running_mean.numpy(), bn.running_var.numpy()
            got = running_statistics([b.copy() for b in batches], momentum)
            mean, var = _pair("running_statistics", got, ((4,), (4,)))
            what = f"momentum={momentum}"
            for name, g, e in (("running_mean", mean, exp_mean), ("running_var", var, exp_var)):
                err = _max_rel(g, e)
                if err <= 1e-9:
                    continue
                hint = ""
                if momentum is not None:
                    swapped = running_statistics_reference(batches, 1 - momentum)
                    if _max_rel(g, swapped[0 if name == "running_mean" else 1]) < 1e-9:
                        hint = (f" - you used the Keras convention; in PyTorch momentum={momentum} "
                                f"is the weight of the NEW batch")
                if not hint and name == "running_var":
                    biased_var = np.ones(4)
                    for t, x in enumerate(batches, 1):
                        f = 1.0 / t if momentum is None else momentum
                        biased_var = (1 - f) * biased_var + f * x.var(axis=0)
                    if _max_rel(g, biased_var) < 1e-9:
                        hint = " - the running variance uses the unbiased batch variance (ddof=1)"
                if not hint and momentum is not None and name == "running_var":
                    v = np.zeros(4)                         # started from 0 instead of 1?
                    for x in batches:
                        v = (1 - momentum) * v + momentum * x.var(axis=0, ddof=1)
                    if _max_rel(g, v) < 1e-9:
                        hint = " - PyTorch starts the running variance at 1, not 0"
                if not hint and momentum is None:
                    hint = (" - momentum=None means the plain average of all batches so far "
                            "(factor 1/t at step t)")
                raise ExerciseError(f"{name} is wrong for {what}: max relative error "
                                    f"{err:.2e} against torch.nn.BatchNorm1d{hint}")
        return "matches torch.nn.BatchNorm1d for momentum 0.1, 0.5 and None"

    return report(run_check("exercise 5.2 running_statistics", body))


# --- exercise 5.3 --------------------------------------------------------------

def check_fold_linear_bn(fold_linear_bn: Callable) -> Feedback:
    """Exercise 5.3: ``fold_linear_bn(W, b, gamma, beta, mean, var, eps) -> (W2, b2)``, eq. (ch5-fold).

    ``W`` is ``(n_in, n_out)`` (the ``bnlib.scratch.Linear`` layout).  The
    folded layer must give what ``Linear`` followed by eval-mode BN gives.
    """
    from bnlib.scratch import BatchNorm, Linear

    def body() -> str:
        rng = check_rng(53)
        n_in, n_out = 7, 4
        lin = Linear(n_in, n_out, rng=1)
        lin.b[...] = rng.normal(size=n_out)
        bn = BatchNorm(n_out, eps=1e-2).eval()
        bn.gamma[...] = rng.uniform(0.5, 2.0, n_out)
        bn.beta[...] = rng.normal(size=n_out)
        bn.running_mean[...] = rng.normal(size=n_out)
        bn.running_var[...] = rng.uniform(0.05, 3.0, n_out)
        x = rng.normal(size=(9, n_in))
        expected = bn.forward(lin.forward(x))
        args = (lin.W.copy(), lin.b.copy(), bn.gamma.copy(), bn.beta.copy(),
                bn.running_mean.copy(), bn.running_var.copy(), bn.eps)
        got = fold_linear_bn(*args)
        W2, b2 = _pair("fold_linear_bn", got, ((n_in, n_out), (n_out,)))
        y = x @ W2 + b2
        err = float(np.max(np.abs(y - expected)))
        if err > 1e-9:
            ref_W, ref_b = fold_linear_bn_reference(*args)
            hint = ""
            if _max_rel(W2, ref_W) > 1e-9:
                s_no_eps = bn.gamma / np.sqrt(bn.running_var)
                if _max_rel(W2, lin.W * s_no_eps) < 1e-9:
                    hint = " - W2 ignores eps: the scale is gamma / sqrt(running_var + eps)"
                elif _max_rel(W2, lin.W * bn.gamma / (bn.running_var + bn.eps)) < 1e-9:
                    hint = " - divide by the square root of running_var + eps"
                else:
                    hint = " - W2 is wrong: scale each output column k of W by s_k"
            else:
                s = bn.gamma / np.sqrt(bn.running_var + bn.eps)
                if _max_rel(b2, lin.b * s + bn.beta) < 1e-9:
                    hint = " - b2 forgets to subtract the running mean"
                elif _max_rel(b2, (lin.b - bn.running_mean) * s) < 1e-9:
                    hint = " - b2 forgets beta"
                else:
                    hint = " - b2 is wrong: b2 = s * (b - running_mean) + beta"
            raise ExerciseError(f"the folded layer differs from Linear + BN by up to {err:.3g} "
                                f"on a test batch{hint}")
        got = fold_linear_bn(args[0], None, *args[2:])
        W3, b3 = _pair("fold_linear_bn with b=None", got, ((n_in, n_out), (n_out,)))
        err = float(np.max(np.abs(x @ W3 + b3 - (expected - lin.b * bn.gamma /
                                                    np.sqrt(bn.running_var + bn.eps)))))
        if err > 1e-9:
            raise ExerciseError(f"with b=None (a Linear without bias) the folded layer is off by "
                                f"{err:.3g}: treat a missing bias as zeros")
        return "the folded Linear computes Linear + eval-mode BN exactly"

    return report(run_check("exercise 5.3 fold_linear_bn", body, blocks=(
                                 "bnlib.scratch.deploy:fold_linear_bn",
                                 "bnlib.torch.deploy:fold_into",
    )))


# --- exercise 5.4: diagnose a planted train/eval bug ------------------------------

#: the bugs the check plants, as ``diagnose`` must name them
TRAIN_EVAL_BUGS = {
    "train_mode": "one batch norm left in training mode (the forgotten eval(), for one layer)",
    "never_updated": "running statistics still at their initial 0 and 1 (the update never ran)",
    "overwritten": "running statistics overwritten by a training-mode pass on other data "
                   "(a 'frozen' layer updated during fine-tuning)",
}


def plant_train_eval_bug(rng: np.random.Generator, kind: str | None = None, layer: int | None = None):
    """A healthy scratch network and its data, then one planted bug: ``(model, x, name, kind)``.

    The network is an MLP with three batch norms and weights drawn from
    ``rng``; its running statistics are precise (recomputed over ``x``, chapter
    5.5) and it is in eval mode.  Then ``kind`` (drawn when None, one of
    :data:`TRAIN_EVAL_BUGS`) is planted in batch norm number ``layer`` (drawn
    when None); ``name`` is that layer's name as
    :func:`bnlib.scratch.running.batchnorm_layers` gives it.
    """
    from bnlib.scratch import mlp
    from bnlib.scratch.running import batchnorm_layers, recompute_bn_stats

    n_in = int(rng.integers(6, 13))
    widths = [n_in] + [int(w) for w in rng.integers(12, 25, size=3)] + [int(rng.integers(3, 6))]
    model = mlp(widths, activation="relu", norm="bn", rng=int(rng.integers(2**31)))
    x = rng.normal(size=(512, n_in)) * rng.uniform(0.5, 3.0, size=n_in) + rng.normal(size=n_in)
    recompute_bn_stats(model, (x[i:i + 32] for i in range(0, len(x), 32)))
    model.eval()
    bns = batchnorm_layers(model)
    kind = kind or str(rng.choice(sorted(TRAIN_EVAL_BUGS)))
    layer = int(rng.integers(len(bns))) if layer is None else layer
    name, bn = bns[layer]
    if kind == "train_mode":
        bn.train()
    elif kind == "never_updated":
        bn.running_mean[...], bn.running_var[...] = 0.0, 1.0
    elif kind == "overwritten":
        # a few training-mode passes of this one layer on fine-tuning data from elsewhere
        x_ft = x[rng.permutation(len(x))[:64]] * rng.uniform(2.0, 4.0) + rng.uniform(1.0, 3.0)
        bn.train()
        for i in range(0, 64, 8):
            model.forward(x_ft[i:i + 8])
        bn.eval()
    else:
        raise ValueError(f"kind must be one of {sorted(TRAIN_EVAL_BUGS)}; got {kind!r}")
    return model, x, name, kind


def diagnose_reference(model, x) -> tuple[str, str]:
    """Find the planted bug: ``(layer name, kind)`` with the chapter's tools."""
    import copy

    from bnlib.scratch.running import batchnorm_layers, bn_layers_in_training_mode, recompute_bn_stats

    in_training = bn_layers_in_training_mode(model)
    if in_training:
        return in_training[0], "train_mode"
    bns = batchnorm_layers(model)
    for name, bn in bns:
        if np.all(bn.running_mean == 0.0) and np.all(bn.running_var == 1.0):
            return name, "never_updated"
    precise = copy.deepcopy(model)
    recompute_bn_stats(precise, (x[i:i + 64] for i in range(0, len(x) - 63, 64)))
    score = {}
    for (name, bn), (_, ref) in zip(bns, batchnorm_layers(precise)):
        shift = np.abs(bn.running_mean - ref.running_mean) / np.sqrt(ref.running_var + bn.eps)
        ratio = np.abs(np.log((bn.running_var + bn.eps) / (ref.running_var + bn.eps)))
        score[name] = float(np.max(shift + ratio))
    return max(score, key=score.get), "overwritten"


def check_diagnose_train_eval_bug(diagnose: Callable, rounds: int = 6) -> Feedback:
    """Exercise 5.4: ``diagnose(model, x) -> (layer_name, kind)`` finds a planted train/eval bug.

    Each round plants a fresh bug (drawn from ``check_rng``) in a fresh network:
    every kind of :data:`TRAIN_EVAL_BUGS` at least once, in random layers.
    ``model`` is a ``bnlib.scratch`` network meant to be in eval mode; ``x``
    the training inputs.  ``layer_name`` is the name that
    ``bnlib.scratch.running.batchnorm_layers`` gives the layer (its index in
    the ``Sequential``, as a string).
    """
    import copy

    from bnlib.exercises import check_rng

    def body() -> str:
        rng = check_rng(54)
        kinds = sorted(TRAIN_EVAL_BUGS)
        plan = list(rng.permutation(kinds)) + list(rng.choice(kinds, size=max(0, rounds - len(kinds))))
        for k, kind in enumerate(plan, 1):
            model, x, name, kind = plant_train_eval_bug(rng, kind=str(kind))
            got = diagnose(copy.deepcopy(model), x.copy())
            if got is None:
                raise ExerciseError("diagnose returned None - return (layer_name, kind)")
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise ExerciseError(f"diagnose should return a pair (layer_name, kind); got {got!r}")
            got_name, got_kind = str(got[0]), str(got[1])
            if got_kind not in TRAIN_EVAL_BUGS:
                raise ExerciseError(f"round {k}: kind {got_kind!r} is not one of {kinds}")
            if got_kind != kind:
                hints = {"train_mode": "look at each batch norm's training flag "
                                       "(bn_layers_in_training_mode)",
                         "never_updated": "a layer whose update never ran still holds exactly "
                                          "mean 0 and variance 1",
                         "overwritten": "compare each layer's running statistics with statistics "
                                        "recomputed on x (recompute_bn_stats on a copy)"}
                raise ExerciseError(f"round {k}: you diagnosed {got_kind!r} in layer {got_name!r}, "
                                    f"but that is not the bug planted in this network - "
                                    f"hint for {kind!r}: {hints[kind]}")
            if got_name != name:
                raise ExerciseError(f"round {k}: right kind of bug ({kind!r}), wrong layer "
                                    f"({got_name!r}); layer names are the indices in the "
                                    f"Sequential, as batchnorm_layers(model) gives them")
        return (f"found the planted bug in {len(plan)} fresh networks "
                f"({', '.join(sorted(set(map(str, plan))))})")

    return report(run_check("exercise 5.4 diagnose a train/eval bug", body))


__all__ += ["check_diagnose_train_eval_bug", "diagnose_reference", "plant_train_eval_bug",
            "TRAIN_EVAL_BUGS"]
