"""Checks for the exercises of chapter 4 (training with batch normalisation).

Each ``check_*`` takes the student's function, runs it on fixed inputs,
prints one line of feedback (PASS, FAIL with the reason, or TODO while the
function still raises ``NotImplementedError``) and returns the ``Feedback``.

* :func:`check_identity_gamma_beta` - exercise 4.1: the gamma and beta with
  which batch norm gives back its input, eq. (ch4-undo)
* :func:`check_sgd_step`            - exercise 4.2: one SGD step of a
  ``bnlib.scratch`` network on softmax cross-entropy
* :func:`check_ghost_batchnorm`     - exercise 4.3: batch norm over ghost
  batches, eq. (ch4-ghost)
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np

from bnlib.exercises import check_rng
from bnlib.exercises import ExerciseError, Feedback, expect_shape, report, run_check


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(1e-12, np.abs(a) + np.abs(b))))


# --- exercise 4.1 --------------------------------------------------------------

def identity_gamma_beta_reference(x: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """gamma = sqrt(var + eps) and beta = mu (biased batch variance), eq. (ch4-undo)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(x.var(axis=0) + eps), x.mean(axis=0)


def check_identity_gamma_beta(identity_gamma_beta: Callable) -> Feedback:
    """Exercise 4.1: ``identity_gamma_beta(x, eps) -> (gamma, beta)`` with BN(x) = x."""
    from bnlib.scratch import batchnorm_forward

    def body() -> str:
        rng = check_rng(41)
        cases = [("a batch of 64 x 5", rng.normal(3.0, 2.0, size=(64, 5)) * np.arange(1, 6), 1e-5),
                 ("small spread (eps matters)", rng.normal(-1.0, 0.01, size=(32, 4)), 1e-3),
                 ("two examples", rng.normal(size=(2, 3)), 1e-5)]
        for label, x, eps in cases:
            got = identity_gamma_beta(x.copy(), eps)
            if got is None:
                raise ExerciseError("identity_gamma_beta returned None - return (gamma, beta)")
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise ExerciseError("identity_gamma_beta should return a pair (gamma, beta)")
            d = x.shape[1]
            gamma = expect_shape(f"gamma ({label})", got[0], (d,)).astype(np.float64)
            beta = expect_shape(f"beta ({label})", got[1], (d,)).astype(np.float64)
            exp_gamma, exp_beta = identity_gamma_beta_reference(x, eps)
            if _max_rel(beta, exp_beta) > 1e-9:
                hint = ""
                if np.allclose(beta, 0):
                    hint = " - beta must put the mean back"
                elif np.allclose(beta, exp_gamma):
                    hint = " - gamma and beta are swapped"
                raise ExerciseError(f"beta is wrong for {label}: max relative error "
                                    f"{_max_rel(beta, exp_beta):.2e}{hint}")
            if _max_rel(gamma, exp_gamma) > 1e-9:
                var = x.var(axis=0)
                hint = ""
                if _max_rel(gamma, np.sqrt(var)) < 1e-9:
                    hint = " - batch norm divides by sqrt(var + eps): include eps"
                elif _max_rel(gamma, var + eps) < 1e-9 or _max_rel(gamma, var) < 1e-9:
                    hint = " - that is the variance; gamma multiplies x_hat, so take the square root"
                elif _max_rel(gamma, np.sqrt(x.var(axis=0, ddof=1) + eps)) < 1e-9:
                    hint = (" - batch norm normalises with the biased variance (divide by m, "
                            "not m - 1)")
                raise ExerciseError(f"gamma is wrong for {label}: max relative error "
                                    f"{_max_rel(gamma, exp_gamma):.2e}{hint}")
            y, _ = batchnorm_forward(x, gamma, beta, eps)
            err = float(np.max(np.abs(y - x)) / np.max(np.abs(x)))
            if err > 1e-9:   # pragma: no cover - implied by the two checks above
                raise ExerciseError(f"BN(x) differs from x by {err:.2e} (relative) for {label}")
        return "with gamma = sqrt(var + eps) and beta = mu, batch norm returns its input"

    return report(run_check("exercise 4.1 identity_gamma_beta", body))


# --- exercise 4.2 --------------------------------------------------------------

def sgd_step_reference(model, x: np.ndarray, labels: np.ndarray, lr: float) -> float:
    """Forward, softmax cross-entropy, backward, ``p -= lr * g`` in place; the loss before the step."""
    from bnlib.scratch import softmax_cross_entropy

    loss, dlogits = softmax_cross_entropy(model.forward(x), labels)
    model.backward(dlogits)
    for p, g in zip(model.params(), model.grads()):
        p -= lr * g
    return loss


def check_sgd_step(sgd_step: Callable) -> Feedback:
    """Exercise 4.2: ``sgd_step(model, x, labels, lr) -> loss`` trains a scratch net one step."""
    from bnlib.scratch import mlp

    def body() -> str:
        rng = check_rng(42)
        x = rng.normal(size=(24, 12))
        labels = rng.integers(0, 4, size=24)
        for norm in (None, "bn"):
            what = "the BN network" if norm else "the plain network"
            mine = mlp([12, 16, 16, 4], activation="relu", norm=norm, rng=7)
            ref = copy.deepcopy(mine)
            before = [p.copy() for p in mine.params()]
            ids = [id(p) for p in mine.params()]
            for step in range(3):
                batch = slice(8 * step, 8 * step + 8)
                loss = sgd_step(mine, x[batch], labels[batch], 0.5)
                ref_loss = sgd_step_reference(ref, x[batch], labels[batch], 0.5)
                if loss is None:
                    raise ExerciseError("sgd_step returned None - return the mini-batch loss")
                loss = float(np.asarray(loss))
                if [id(p) for p in mine.params()] != ids:
                    raise ExerciseError("the model's parameter arrays were replaced; update them "
                                        "in place (p -= lr * g) so optimisers keep working")
                if all(np.array_equal(p, b) for p, b in zip(mine.params(), before)):
                    raise ExerciseError(f"the parameters of {what} did not change - did you "
                                        "write p = p - lr * g (a new array) instead of p -= lr * g?")
                if abs(loss - ref_loss) > 1e-9 * max(1.0, abs(ref_loss)):
                    raise ExerciseError(f"step {step + 1} of {what}: loss {loss:.6g}, expected "
                                        f"{ref_loss:.6g} (the loss of the forward pass before "
                                        "the update)")
                errs = [_max_rel(p, q) for p, q in zip(mine.params(), ref.params())]
                worst = int(np.argmax(errs))
                if errs[worst] > 1e-9:
                    names = [f"{type(layer).__name__}[{i}]" for i, layer in enumerate(mine.layers)
                             for _ in layer.params()]
                    raise ExerciseError(f"after step {step + 1} of {what}, parameter {worst} "
                                        f"({names[worst]}) is off by {errs[worst]:.2e} (relative)")
            if norm == "bn":
                bn = mine.layers[1]
                if bn.num_batches_tracked != 3:
                    raise ExerciseError("the BN layers should see one training-mode forward pass "
                                        f"per step; num_batches_tracked is {bn.num_batches_tracked}")
        return "three SGD steps match the reference, with and without BN"

    return report(run_check("exercise 4.2 sgd_step", body))


# --- exercise 4.3 --------------------------------------------------------------

def ghost_batchnorm_reference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                              ghost_size: int, eps: float = 1e-5) -> np.ndarray:
    """Batch norm applied to each block of ``ghost_size`` consecutive rows on its own."""
    from bnlib.scratch import batchnorm_forward

    if len(x) % ghost_size:
        raise ValueError(f"the batch of {len(x)} is not a multiple of ghost_size={ghost_size}")
    return np.concatenate([batchnorm_forward(x[i:i + ghost_size], gamma, beta, eps)[0]
                           for i in range(0, len(x), ghost_size)])


def check_ghost_batchnorm(ghost_batchnorm: Callable) -> Feedback:
    """Exercise 4.3: ``ghost_batchnorm(x, gamma, beta, ghost_size, eps) -> y``."""
    from bnlib.scratch import batchnorm_forward

    def body() -> str:
        rng = check_rng(43)
        x = rng.normal(size=(24, 5)) * 3.0 + np.linspace(-2, 2, 24)[:, None]
        gamma, beta = rng.uniform(0.5, 2.0, 5), rng.normal(size=5)
        whole, _ = batchnorm_forward(x, gamma, beta)
        for g in (24, 8, 4, 2):
            y = expect_shape(f"ghost_batchnorm(x of shape {x.shape}, ghost_size={g})",
                             ghost_batchnorm(x.copy(), gamma, beta, g, 1e-5), x.shape)
            expected = ghost_batchnorm_reference(x, gamma, beta, g)
            err = _max_rel(y, expected)
            if err <= 1e-9:
                continue
            hint = ""
            if g < 24 and _max_rel(y, whole) < 1e-9:
                hint = " - that is ordinary BN over the whole batch; normalise each ghost batch"
            elif g < 24:
                k = 24 // g
                strided = np.empty_like(x)
                for j in range(k):        # ghost batches of every k-th row instead of blocks
                    strided[j::k] = batchnorm_forward(x[j::k], gamma, beta)[0]
                if _max_rel(y, strided) < 1e-9:
                    hint = f" - ghost batches are blocks of {g} consecutive rows, not every {k}-th row"
            if not hint:
                plain = ghost_batchnorm_reference(x, np.ones(5), np.zeros(5), g)
                if _max_rel(y, plain) < 1e-9:
                    hint = " - apply gamma and beta after normalising"
            raise ExerciseError(f"ghost_size={g}: max relative error {err:.2e}{hint}")
        try:
            ghost_batchnorm(x[:10], gamma, beta, 4, 1e-5)
        except ValueError:
            pass
        else:
            raise ExerciseError("a batch of 10 with ghost_size=4 should raise ValueError "
                                "(10 is not a multiple of 4), not return something")
        return "ghost batches of 24, 8, 4 and 2 match, and a bad ghost size raises ValueError"

    return report(run_check("exercise 4.3 ghost_batchnorm", body, blocks=(
                                 "bnlib.experiments.batch_noise:GhostBatchNorm.forward",
    )))
