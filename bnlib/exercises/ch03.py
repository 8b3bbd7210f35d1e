"""Checks for the exercises of chapter 3 (deriving batch normalization).

Each ``check_*`` takes the student's function(s), runs them on inputs drawn
from ``check_rng``, compares the result with bnlib's reference implementation, prints one
line of feedback and returns the :class:`~bnlib.exercises.Feedback`: PASS,
FAIL with what is wrong (which output, its shape, how large the error is and,
for the usual mistakes, a hint), or TODO while the function still raises
``NotImplementedError``.

* :func:`check_batchnorm_forward`  - exercise 3.1: ``forward(x, gamma, beta, eps) -> (y, cache)``,
  equations ch3-mean .. ch3-affine
* :func:`check_batchnorm_backward` - exercise 3.2: ``backward(dy, cache) -> (dx, dgamma, dbeta)``
  consuming the cache of the student's own forward pass, equation ch3-dx
* :func:`check_gamma_beta_grads`   - exercise 3.3: ``gamma_beta_grads(dy, x_hat) -> (dgamma, dbeta)``
  for 2-D ``(N, D)`` and 4-D ``(N, C, H, W)`` input
* :func:`check_layernorm_backward` - exercise 3.4: ``layernorm_backward(dy, x, gamma, eps) ->
  (dx, dgamma, dbeta)`` for layer normalisation of ``(N, D)`` input

All inputs are 2-D with ``N != D`` (a reduction over the wrong axis then shows
up as a wrong shape) except where 4-D input is the point of the exercise.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from bnlib.exercises import check_rng
from bnlib.exercises import ExerciseError, Feedback, expect_close, report, run_check
from bnlib.scratch.functional import (batchnorm_backward, batchnorm_forward, layernorm_backward,
                                      layernorm_forward)

__all__ = ["check_batchnorm_forward", "check_batchnorm_backward", "check_gamma_beta_grads",
           "check_layernorm_backward"]

#: relative tolerance of every comparison: float64 round-off is ~1e-15, a real mistake >~1e-2
TOL = 1e-7


def _call(what: str, fn: Callable, *args):
    """Call a student's function; an exception other than NotImplementedError becomes feedback."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except ExerciseError:
        raise
    except Exception as err:  # the student's code crashed: say where, do not crash the notebook
        hint = ""
        if "broadcast" in str(err):
            hint = (" - check the axes of your sums and means: per-feature statistics of an "
                    "(N, D) batch have shape (D,)")
        raise ExerciseError(f"{what} raised {type(err).__name__}: {err}{hint}") from err


def _unpack(what: str, result, names: tuple[str, ...]) -> tuple:
    """Check that ``result`` is a tuple of ``len(names)`` values and return it."""
    n = len(names)
    wanted = "(" + ", ".join(names) + ")"
    if result is None:
        raise ExerciseError(f"{what} returned None - did you forget a return statement? "
                            f"It should return {wanted}")
    if not isinstance(result, (tuple, list)) or len(result) != n:
        got = (f"a {type(result).__name__} of length {len(result)}"
               if isinstance(result, (tuple, list)) else f"a {type(result).__name__}")
        raise ExerciseError(f"{what} should return the {n} values {wanted}; it returned {got}")
    return tuple(result)


def _close(a, b, tol: float = 1e-9) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not np.all(np.isfinite(a)):
        return False
    return bool(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)), initial=0.0) <= tol)


def _compare(what: str, got, expected, mistakes: dict[str, np.ndarray] | None = None,
             shape_hints: dict[tuple, str] | None = None) -> None:
    """``expect_close`` with a hint when ``got`` matches one of the typical ``mistakes``.

    ``mistakes`` maps a hint to the array that mistake produces; ``shape_hints``
    maps a wrong shape to a hint.
    """
    expected = np.asarray(expected)
    if got is not None:
        shape = np.shape(got)
        if shape != expected.shape:
            hint = (shape_hints or {}).get(shape, "")
            raise ExerciseError(f"{what} has shape {shape}, expected {expected.shape}"
                                + (f" - {hint}" if hint else ""))
    try:
        expect_close(what, got, expected, tol=TOL)
    except ExerciseError as err:
        message = str(err)
        if got is not None and np.all(np.isfinite(got)) and np.any(expected):
            size = np.linalg.norm(np.asarray(got, dtype=np.float64) - expected) / np.linalg.norm(expected)
            message += f"; the whole error is {size:.2g} times the size of the right answer"
        for hint, wrong in (mistakes or {}).items():
            if _close(got, wrong):
                raise ExerciseError(f"{message} - {hint}") from None
        raise ExerciseError(message) from None


def _bn_case(seed: int, n: int = 12, d: int = 5, eps: float = 1e-5, scale: float = 1.0):
    """x with a different mean and spread per feature, non-trivial gamma and beta."""
    rng = check_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) * scale + rng.uniform(-4, 4, size=d)
    gamma = rng.uniform(0.5, 2.0, size=d) * rng.choice([-1.0, 1.0], size=d)
    beta = rng.normal(size=d)
    return x, gamma, beta, eps


# --- exercise 3.1: the forward pass -------------------------------------------------

def _forward_mistakes(x, gamma, beta, eps) -> dict[str, np.ndarray]:
    """The outputs of the usual wrong forward passes, keyed by the hint for each."""
    def affine(x_hat):
        return gamma * x_hat + beta

    mu, var = x.mean(axis=0), x.var(axis=0)
    mu1, var1 = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    return {
        "the statistics must be per feature, averaged over the examples (axis 0), "
        "not per example (axis 1)": affine((x - mu1) / np.sqrt(var1 + eps)),
        "use the biased variance (divide by m, ddof=0), as in equation ch3-var; "
        "x.var(axis=0, ddof=1) divides by m - 1": affine((x - mu) / np.sqrt(x.var(axis=0, ddof=1) + eps)),
        "eps belongs under the square root: (x - mu) / sqrt(var + eps)":
            affine((x - mu) / (np.sqrt(var) + eps)),
        "eps is missing: divide by sqrt(var + eps)": affine((x - mu) / np.sqrt(var)),
        "use the eps argument instead of a fixed 1e-5": affine((x - mu) / np.sqrt(var + 1e-5)),
        "divide by the standard deviation sqrt(var + eps), not by the variance":
            affine((x - mu) / (var + eps)),
        "gamma and beta are swapped: y = gamma * x_hat + beta":
            beta * (x - mu) / np.sqrt(var + eps) + gamma,
        "the scale and shift are missing: return y = gamma * x_hat + beta, not x_hat":
            (x - mu) / np.sqrt(var + eps),
    }


def check_batchnorm_forward(forward: Callable) -> Feedback:
    """Exercise 3.1: ``forward(x, gamma, beta, eps) -> (y, cache)`` for ``x`` of shape (N, D).

    ``cache`` may be anything the student's backward pass needs (exercise 3.2);
    only ``y`` is checked here, on three batches: an ordinary one, one whose
    small variance makes ``eps = 0.5`` matter, and a batch of two examples.
    """

    def body() -> str:
        cases = [("batch of 12", _bn_case(0)),
                 ("eps=0.5, small variance", _bn_case(1, n=7, d=3, eps=0.5, scale=0.3)),
                 ("batch of 2", _bn_case(2, n=2, d=4))]
        for label, (x, gamma, beta, eps) in cases:
            x_in = x.copy()
            result = _call(f"forward ({label})", forward, x_in, gamma.copy(), beta.copy(), eps)
            y = _unpack(f"forward ({label})", result, ("y", "cache"))[0]
            if not np.array_equal(x_in, x):
                raise ExerciseError(f"forward ({label}) changed its input x in place; "
                                    "compute new arrays instead (x - mu, not x -= mu)")
            expected, _ = batchnorm_forward(x, gamma, beta, eps)
            _compare(f"y ({label})", y, expected, _forward_mistakes(x, gamma, beta, eps),
                     {x.shape[::-1]: "y must have the shape of x, (N, D)"})
        return "y matches bnlib.scratch.batchnorm_forward on three batches (relative error < 1e-7)"

    return report(run_check("exercise 3.1 batchnorm forward", body, blocks=(
                                 "bnlib.scratch.functional:batchnorm_forward",
                                 "bnlib.scratch.blocked:batchnorm_forward_blocked",
    )))


# --- exercise 3.2: the backward pass ------------------------------------------------

def _backward_mistakes(dy, x_hat, gamma, inv_std) -> dict[str, np.ndarray]:
    """dx of the usual wrong backward passes, keyed by the hint for each."""
    m = dy.shape[0]
    mean_dy = dy.mean(axis=0)
    mean_dy_xhat = (dy * x_hat).mean(axis=0)
    k = gamma * inv_std
    return {
        "it is m times too large: the 1/m of the mean and the variance is missing "
        "(equation ch3-dx has gamma * inv_std / m in front)":
            k * (m * dy - m * mean_dy - x_hat * m * mean_dy_xhat),
        "this treats mu and var as constants: x also reaches y through mu and var, "
        "add those two paths": k * dy,
        "the path through the variance is missing (the term with x_hat * sum(dy * x_hat))":
            k * (dy - mean_dy),
        "the path through the mean is missing (the term with sum(dy))":
            k * (dy - x_hat * mean_dy_xhat),
        "the mean and variance terms are m times too small - this is the BN tutorial page's dZ, "
        "whose dmu and dvar carry an extra 1/m": k * (dy - (mean_dy + x_hat * mean_dy_xhat) / m),
        "gamma is missing: dL/dx_hat = gamma * dy": inv_std * (dy - mean_dy - x_hat * mean_dy_xhat),
        "the sums must run over the examples (axis 0), per feature":
            k * (dy - dy.mean(axis=1, keepdims=True)
                 - x_hat * (dy * x_hat).mean(axis=1, keepdims=True)),
    }


def _param_grad_mistakes(name: str, other: np.ndarray, m: int, expected: np.ndarray
                         ) -> dict[str, np.ndarray]:
    partner = "dbeta" if name == "dgamma" else "dgamma"
    return {
        f"this is {partner}: did you swap dgamma and dbeta?": other,
        f"it is m times too small: {name} is a sum over the batch, not a mean "
        "(the tutorial page's 1/m belongs to its mean-loss convention, see the text)": expected / m,
    }


def check_batchnorm_backward(forward: Callable, backward: Callable) -> Feedback:
    """Exercise 3.2: ``backward(dy, cache) -> (dx, dgamma, dbeta)``.

    ``forward`` is the student's exercise 3.1 function; ``backward`` consumes
    the ``cache`` it returns, so the two may share any cache layout.  The
    forward pass is checked first (a wrong forward pass makes every gradient
    wrong), then all three gradients on two batches; the message names every
    gradient that is wrong.
    """

    def body() -> str:
        cases = [("batch of 12", _bn_case(3)), ("batch of 4", _bn_case(4, n=4, d=6, eps=1e-3))]
        for label, (x, gamma, beta, eps) in cases:
            result = _call(f"forward ({label})", forward, x.copy(), gamma.copy(), beta.copy(), eps)
            y, cache = _unpack(f"forward ({label})", result, ("y", "cache"))
            expected_y, ref_cache = batchnorm_forward(x, gamma, beta, eps)
            if not _close(y, expected_y, TOL):
                raise ExerciseError(f"the forward pass ({label}) is wrong, so the gradients cannot "
                                    "be right: make check_batchnorm_forward pass first")
            dy = check_rng(10 + len(label)).normal(size=x.shape)
            grads = _call(f"backward ({label})", backward, dy.copy(), cache)
            dx, dgamma, dbeta = _unpack(f"backward ({label})", grads, ("dx", "dgamma", "dbeta"))
            exp_dx, exp_dgamma, exp_dbeta = batchnorm_backward(dy, ref_cache)
            x_hat, inv_std, m = ref_cache["x_hat"], ref_cache["inv_std"], x.shape[0]
            d = x.shape[1]
            shape_hints = {(1, d): "return shape (D,), not (1, D): sum with keepdims=False "
                                   "or reshape(-1)",
                           (m,): "sum over the examples (axis 0), not over the features"}
            problems = []
            checks = [
                ("dbeta", dbeta, exp_dbeta, _param_grad_mistakes("dbeta", exp_dgamma, m, exp_dbeta)),
                ("dgamma", dgamma, exp_dgamma,
                 _param_grad_mistakes("dgamma", exp_dbeta, m, exp_dgamma)),
                ("dx", dx, exp_dx, _backward_mistakes(dy, x_hat, gamma, inv_std)),
            ]
            for name, got, expected, mistakes in checks:
                try:
                    _compare(f"{name} ({label})", got, expected, mistakes,
                             shape_hints if name != "dx" else {x.shape[::-1]: "dx has the shape of x"})
                except ExerciseError as err:
                    problems.append(str(err))
            if problems:
                raise ExerciseError("; ".join(problems))
        return ("dx, dgamma and dbeta match bnlib.scratch.batchnorm_backward on two batches "
                "(relative error < 1e-7)")

    return report(run_check("exercise 3.2 batchnorm backward", body, blocks=(
                                 "bnlib.scratch.functional:batchnorm_forward",
                                 "bnlib.scratch.functional:batchnorm_backward",
                                 "bnlib.scratch.functional:batchnorm_backward_staged",
                                 "bnlib.scratch.blocked:batchnorm_forward_blocked",
                                 "bnlib.scratch.blocked:batchnorm_backward_blocked",
    )))


# --- exercise 3.3: dgamma and dbeta for 2-D and 4-D input ----------------------------

def check_gamma_beta_grads(gamma_beta_grads: Callable) -> Feedback:
    """Exercise 3.3: ``gamma_beta_grads(dy, x_hat) -> (dgamma, dbeta)``.

    Checked on (N, D) input and on (N, C, H, W) input, where gamma and beta
    have one value per channel and the sums run over N, H and W.
    """

    def body() -> str:
        rng = check_rng(5)
        cases = [("2-D input (8, 3)", (8, 3)), ("4-D input (4, 3, 5, 6)", (4, 3, 5, 6))]
        for label, shape in cases:
            x = rng.normal(size=shape) * 2.0 + 1.0
            C = shape[1]
            _, cache = batchnorm_forward(x, np.ones(C), np.zeros(C))
            x_hat = cache["x_hat"]
            dy = rng.normal(size=shape)
            result = _call(f"gamma_beta_grads ({label})", gamma_beta_grads, dy.copy(), x_hat.copy())
            dgamma, dbeta = _unpack(f"gamma_beta_grads ({label})", result, ("dgamma", "dbeta"))
            _, exp_dgamma, exp_dbeta = batchnorm_backward(dy, cache)
            m = x.size // C
            shape_hints = {(1, C): "return shape (C,): sum with keepdims=False",
                           (1, C, 1, 1): "return shape (C,): sum with keepdims=False",
                           (C, shape[-2], shape[-1]) if len(shape) == 4 else (-1,):
                               "for 4-D input sum over N, H and W (axes 0, 2, 3), not only axis 0",
                           (shape[0],): "sum over the examples (axis 0), not over the features"}
            problems = []
            for name, got, expected, other in (("dgamma", dgamma, exp_dgamma, exp_dbeta),
                                               ("dbeta", dbeta, exp_dbeta, exp_dgamma)):
                try:
                    _compare(f"{name} ({label})", got, expected,
                             _param_grad_mistakes(name, other, m, expected), shape_hints)
                except ExerciseError as err:
                    problems.append(str(err))
            if problems:
                raise ExerciseError("; ".join(problems))
        return "dgamma and dbeta are right for (N, D) and (N, C, H, W) input"

    return report(run_check("exercise 3.3 dgamma and dbeta", body, blocks=(
                                 "bnlib.scratch.functional:batchnorm_backward",
                                 "bnlib.scratch.functional:batchnorm_backward_staged",
                                 "bnlib.scratch.blocked:batchnorm_backward_blocked",
    )))


# --- exercise 3.4: layer normalisation's backward pass --------------------------------

def _layernorm_mistakes(dy, x_hat, gamma, inv_std, bn_dx) -> dict[str, np.ndarray]:
    """dx of the usual wrong layer-norm backward passes; ``bn_dx`` is batch norm's dx."""
    D = dy.shape[1]
    inv = inv_std[:, None]
    g = dy * gamma
    mean_g = g.mean(axis=1, keepdims=True)
    mean_gx = (g * x_hat).mean(axis=1, keepdims=True)
    return {
        "gamma cannot be taken out of the sums here: it changes along the features, the axis "
        "layer norm averages over - multiply dy by gamma first, then take the sums":
            gamma * inv * (dy - dy.mean(axis=1, keepdims=True)
                           - x_hat * (dy * x_hat).mean(axis=1, keepdims=True)),
        "this is batch norm's formula: layer norm's sums run over the features of each "
        "example (axis 1)": bn_dx,
        "it is D times too large: the 1/D of the per-example mean and variance is missing":
            inv * (D * g - D * mean_g - x_hat * D * mean_gx),
        "this treats the per-example mean and variance as constants": inv * g,
        "the path through the variance is missing": inv * (g - mean_g),
        "the path through the mean is missing": inv * (g - x_hat * mean_gx),
    }


def check_layernorm_backward(layernorm_backward_fn: Callable) -> Feedback:
    """Exercise 3.4: ``layernorm_backward(dy, x, gamma, eps) -> (dx, dgamma, dbeta)``.

    Layer normalisation of ``x`` of shape (N, D): mean and variance per example
    over its D features, ``y = gamma * x_hat + beta`` with ``gamma``, ``beta``
    of shape (D,) (chapter 6).  The function recomputes what it needs from ``x``.
    """

    def body() -> str:
        cases = [("batch (6, 5)", 6, 5, 1e-5, 6), ("batch (3, 8), eps=0.1", 3, 8, 0.1, 7)]
        for label, n, d, eps, seed in cases:
            rng = check_rng(seed)
            x = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=(n, 1)) + rng.normal(size=(n, 1))
            gamma = rng.uniform(0.5, 2.0, size=d) * rng.choice([-1.0, 1.0], size=d)
            beta = rng.normal(size=d)
            dy = rng.normal(size=(n, d))
            _, cache = layernorm_forward(x, gamma, beta, eps)
            exp_dx, exp_dgamma, exp_dbeta = layernorm_backward(dy, cache)
            result = _call(f"layernorm_backward ({label})", layernorm_backward_fn,
                           dy.copy(), x.copy(), gamma.copy(), eps)
            dx, dgamma, dbeta = _unpack(f"layernorm_backward ({label})", result,
                                        ("dx", "dgamma", "dbeta"))
            _, bn_cache = batchnorm_forward(x, gamma, beta, eps)
            mistakes = _layernorm_mistakes(dy, cache["x_hat"], gamma, cache["inv_std"],
                                           batchnorm_backward(dy, bn_cache)[0])
            shape_hints = {(1, d): "return shape (D,): sum with keepdims=False",
                           (n,): "dgamma and dbeta sum over the examples (axis 0): "
                                 "gamma and beta are shared by every example",
                           (n, 1): "dgamma and dbeta sum over the examples (axis 0)"}
            problems = []
            for name, got, expected, mist in (
                    ("dx", dx, exp_dx, mistakes),
                    ("dgamma", dgamma, exp_dgamma,
                     _param_grad_mistakes("dgamma", exp_dbeta, n, exp_dgamma)),
                    ("dbeta", dbeta, exp_dbeta,
                     _param_grad_mistakes("dbeta", exp_dgamma, n, exp_dbeta))):
                try:
                    _compare(f"{name} ({label})", got, expected, mist,
                             shape_hints if name != "dx" else {})
                except ExerciseError as err:
                    problems.append(str(err))
            if problems:
                raise ExerciseError("; ".join(problems))
        return ("dx, dgamma and dbeta match bnlib.scratch.layernorm_backward on two batches "
                "(relative error < 1e-7)")

    return report(run_check("exercise 3.4 layernorm backward", body, blocks=(
                                 "bnlib.scratch.functional:layernorm_backward",
    )))


# --- exercise 3.5: your own gradient checker (appended; issue 12) ---------------------

from bnlib.exercises import check_rng as _check_rng  # noqa: E402
from bnlib.scratch.gradcheck import numerical_gradient as _numerical_gradient  # noqa: E402
from bnlib.scratch.gradcheck import rel_error as _rel_error  # noqa: E402


def _random_function(rng: np.random.Generator, kind: str, shape: tuple):
    """A fresh scalar function of an array of ``shape`` and its exact gradient: ``(f, grad)``."""
    n = int(np.prod(shape))
    if kind == "tanh":
        w, a, c = rng.normal(size=shape), rng.uniform(0.5, 2.0, size=shape), rng.normal(size=shape)
        return (lambda x: float(np.sum(w * np.tanh(a * x + c))),
                lambda x: w * a * (1.0 - np.tanh(a * x + c) ** 2))
    if kind == "quadratic":
        A, b = rng.normal(size=(n, n)), rng.normal(size=n)
        return (lambda x: float(0.5 * x.ravel() @ A @ x.ravel() + b @ x.ravel()),
                lambda x: (0.5 * (A + A.T) @ x.ravel() + b).reshape(shape))
    if kind == "logsumexp":
        W = rng.normal(size=(4, n))

        def f(x):
            z = W @ x.ravel()
            return float(z.max() + np.log(np.exp(z - z.max()).sum()))

        def grad(x):
            z = W @ x.ravel()
            p = np.exp(z - z.max())
            return (W.T @ (p / p.sum())).reshape(shape)

        return f, grad
    if kind == "batchnorm":                  # L = sum(w * BN(x)), x of shape (N, D) or (N, C, H, W)
        C = shape[1]
        gamma, beta, w = rng.normal(size=C), rng.normal(size=C), rng.normal(size=shape)
        return (lambda x: float(np.sum(w * batchnorm_forward(x, gamma, beta)[0])),
                lambda x: batchnorm_backward(w, batchnorm_forward(x, gamma, beta)[1])[0])
    raise ValueError(kind)


def check_grad_check(grad_check: Callable) -> Feedback:
    """Exercise 3.5: ``grad_check(f, x, h=1e-5) -> numerical gradient`` of scalar ``f(x)``.

    The student's central-difference gradient is compared with the exact
    gradient of fresh random functions (``tanh`` sums, quadratic forms,
    log-sum-exp, batch norm) on random 1-D, 2-D and 4-D inputs drawn from
    ``check_rng``; with a large step ``h = 0.1`` it must equal the central
    difference ``(f(x + h e_k) - f(x - h e_k)) / 2h`` itself (which a one-sided
    difference or an ignored ``h`` does not); ``x`` must come back unchanged;
    and the checker must do its job: with it, the right batch-norm gradient
    passes (< 1e-7) and a planted wrong one (mean and variance treated as
    constants) fails (> 1e-3).
    """

    def body() -> str:
        rng = _check_rng(35)
        shapes = [(int(rng.integers(3, 7)),),
                  (int(rng.integers(4, 7)), int(rng.integers(2, 4))),
                  (2, int(rng.integers(2, 4)), 2, 3)]
        kinds = ["tanh", "quadratic", "logsumexp", "batchnorm"]
        worst = 0.0
        for shape in shapes:
            for kind in kinds:
                if kind == "batchnorm" and len(shape) == 1:
                    continue
                f, grad = _random_function(rng, kind, shape)
                x = rng.normal(size=shape) * rng.uniform(0.5, 2.0) + rng.normal()
                x_before = x.copy()
                label = f"{kind} function, x of shape {shape}"
                got = _call(f"grad_check ({label})", grad_check, f, x, 1e-5)
                if got is None:
                    raise ExerciseError(f"grad_check ({label}) returned None - return the array "
                                        "of numerical derivatives")
                if not np.array_equal(x, x_before):
                    raise ExerciseError(f"grad_check ({label}) left x changed: restore each "
                                        "element after perturbing it (x[k] = old)")
                got = np.asarray(got, dtype=np.float64)
                if got.shape != shape:
                    raise ExerciseError(f"the gradient ({label}) has shape {got.shape}, expected "
                                        f"{shape}, the shape of x")
                exact = grad(x_before.copy())
                err = _rel_error(got, exact)
                if not np.isfinite(err) or err > TOL:
                    one_sided = np.zeros_like(x_before)
                    for k in np.ndindex(shape):
                        xp = x_before.copy()
                        xp[k] += 1e-5
                        one_sided[k] = (f(xp) - f(x_before)) / 1e-5
                    hint = ""
                    if _rel_error(got, one_sided) < 1e-9:
                        hint = (" - this is the one-sided difference (f(x + h) - f(x)) / h, whose "
                                "error is of order h; use the central difference "
                                "(f(x + h) - f(x - h)) / (2h), error of order h^2")
                    elif _rel_error(got, 2 * exact) < 1e-6:
                        hint = " - it is twice the gradient: divide by 2h, not h"
                    elif _rel_error(got, 0.5 * exact) < 1e-6:
                        hint = " - it is half the gradient: divide by 2h, not 4h"
                    raise ExerciseError(f"the gradient ({label}) differs from the exact one: "
                                        f"relative error {err:.1e} (tolerance {TOL:.0e}){hint}")
                worst = max(worst, err)
        # a large step: the result must be the central difference itself, with this h
        f, _ = _random_function(rng, "tanh", (5,))
        x = rng.normal(size=5)
        got = _call("grad_check (h = 0.1)", grad_check, f, x.copy(), 0.1)
        expected = _numerical_gradient(f, x.copy(), h=0.1)
        if got is None or np.shape(got) != (5,) or _rel_error(got, expected) > 1e-9:
            raise ExerciseError("with h = 0.1 the result is not the central difference "
                                "(f(x + h e_k) - f(x - h e_k)) / (2h): use the h argument, "
                                "not a fixed step")
        # the checker at work: a right and a planted wrong batch-norm gradient
        shape = (int(rng.integers(5, 9)), 3)
        C = shape[1]
        xb, gamma, beta, w = (rng.normal(size=shape) * 2 + 1, rng.normal(size=C),
                              rng.normal(size=C), rng.normal(size=shape))
        f = lambda x: float(np.sum(w * batchnorm_forward(x, gamma, beta)[0]))
        _, cache = batchnorm_forward(xb, gamma, beta)
        right = batchnorm_backward(w, cache)[0]
        wrong = gamma * cache["inv_std"] * w          # mu and var treated as constants
        numeric = np.asarray(_call("grad_check (batch norm)", grad_check, f, xb.copy(), 1e-5),
                             dtype=np.float64)
        if numeric.shape != shape or _rel_error(right, numeric) > TOL:
            raise ExerciseError("your checker rejects the right batch-norm gradient")
        if _rel_error(wrong, numeric) < 1e-3:
            raise ExerciseError("your checker accepts the wrong batch-norm gradient")
        return (f"central differences match the exact gradients of {len(kinds)} kinds of random "
                f"function (worst relative error {worst:.0e}), use h, leave x unchanged, and "
                "catch the planted wrong gradient")

    return report(run_check("exercise 3.5 your own gradient checker", body, blocks=(
                                 "bnlib.scratch.gradcheck:numerical_gradient",
    )))


# --- exercise 3.6: batch norm for (N, C, H, W) input, forward and backward -----------

def check_batchnorm2d(forward: Callable, backward: Callable) -> Feedback:
    """Exercise 3.6: ``forward(x, gamma, beta, eps) -> (y, cache)`` and
    ``backward(dy, cache) -> (dx, dgamma, dbeta)`` for ``x`` of shape (N, C, H, W).

    One mean, variance, gamma and beta per channel, over the ``N * H * W``
    values of that channel (section 3.7.4).  Checked against
    ``bnlib.scratch.batchnorm_forward/backward`` on two random batches from
    ``check_rng`` (N, C, H, W all different), with hints for statistics over the
    wrong axes.
    """

    def body() -> str:
        rng = _check_rng(36)
        for case in range(2):
            N, C, H, W = (int(v) for v in rng.permutation([2, 3, 4, 5]) + np.array([0, 0, 1, 2]))
            eps = [1e-5, 0.05][case]
            x = (rng.normal(size=(N, C, H, W)) * rng.uniform(0.5, 3.0, size=(1, C, 1, 1))
                 + rng.uniform(-3, 3, size=(1, C, 1, 1)))
            gamma = rng.uniform(0.5, 2.0, size=C) * rng.choice([-1.0, 1.0], size=C)
            beta = rng.normal(size=C)
            dy = rng.normal(size=x.shape)
            label = f"x of shape {(N, C, H, W)}, eps={eps:g}"
            x_in = x.copy()
            y, cache = _unpack(f"forward ({label})",
                               _call(f"forward ({label})", forward, x_in, gamma.copy(),
                                     beta.copy(), eps), ("y", "cache"))
            if not np.array_equal(x_in, x):
                raise ExerciseError(f"forward ({label}) changed its input x in place")
            expected_y, ref = batchnorm_forward(x, gamma, beta, eps)
            g4, b4 = gamma.reshape(1, C, 1, 1), beta.reshape(1, C, 1, 1)

            def normed(axes):
                mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
                return g4 * (x - mu) / np.sqrt(var + eps) + b4

            _compare(f"y ({label})", y, expected_y, {
                "the statistics must run over N, H and W (axes 0, 2, 3): one mean and variance "
                "per channel, not per channel and position": normed(0),
                "this normalises each example's channel over H, W only (instance norm); "
                "batch norm averages over the examples too: axes (0, 2, 3)": normed((2, 3)),
                "use the biased variance (ddof=0)": g4 * (x - x.mean(axis=(0, 2, 3), keepdims=True))
                / np.sqrt(x.var(axis=(0, 2, 3), ddof=1, keepdims=True) + eps) + b4,
            })
            grads = _call(f"backward ({label})", backward, dy.copy(), cache)
            dx, dgamma, dbeta = _unpack(f"backward ({label})", grads, ("dx", "dgamma", "dbeta"))
            exp_dx, exp_dgamma, exp_dbeta = batchnorm_backward(dy, ref)
            m = N * H * W
            x_hat, k = ref["x_hat"], (gamma * ref["inv_std"]).reshape(1, C, 1, 1)
            sums = dict(axis=(0, 2, 3), keepdims=True)
            problems = []
            for name, got, expected, mistakes in (
                    ("dbeta", dbeta, exp_dbeta, _param_grad_mistakes("dbeta", exp_dgamma, m, exp_dbeta)),
                    ("dgamma", dgamma, exp_dgamma,
                     _param_grad_mistakes("dgamma", exp_dbeta, m, exp_dgamma)),
                    ("dx", dx, exp_dx, {
                        "m is the number of values per channel, N * H * W, not N":
                            k / N * (N * dy - dy.sum(**sums) - x_hat * (dy * x_hat).sum(**sums)),
                        "the sums must run over N, H and W (axes 0, 2, 3)":
                            k / N * (N * dy - dy.sum(axis=0, keepdims=True)
                                     - x_hat * (dy * x_hat).sum(axis=0, keepdims=True)),
                        "this treats mu and var as constants": k * dy})):
                try:
                    _compare(f"{name} ({label})", got, expected, mistakes,
                             {(1, C, 1, 1): "return shape (C,)", (C, H, W): "sum over N, H and W"})
                except ExerciseError as err:
                    problems.append(str(err))
            if problems:
                raise ExerciseError("; ".join(problems))
        return ("y, dx, dgamma and dbeta match bnlib.scratch.batchnorm_forward/backward on two "
                "(N, C, H, W) batches (relative error < 1e-7)")

    return report(run_check("exercise 3.6 batch norm for (N, C, H, W)", body, blocks=(
                                 "bnlib.scratch.functional:batchnorm_forward",
                                 "bnlib.scratch.functional:batchnorm_backward",
                                 "bnlib.scratch.functional:batchnorm_backward_staged",
                                 "bnlib.scratch.blocked:batchnorm_forward_blocked",
                                 "bnlib.scratch.blocked:batchnorm_backward_blocked",
    )))


__all__ += ["check_grad_check", "check_batchnorm2d"]
