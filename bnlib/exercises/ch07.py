"""Checks for the exercises of chapter 7 (why batch norm works).

Each ``check_*`` takes the student's function, runs it on fixed inputs,
prints one line of feedback (PASS, FAIL with the reason, or TODO while the
function still raises ``NotImplementedError``) and returns the ``Feedback``.

* :func:`check_bn_weight_grad`   - exercise 7.1: the gradient of a loss
  through ``BN(x W)`` with respect to ``W``; it is orthogonal to each column
  of ``W`` (eq. ch7-grad-orth)
* :func:`check_ics_measure`      - exercise 7.2: Santurkar et al.'s gradient
  change ``||G - G'||`` and ``cos(G, G')`` (eq. ch7-ics)
* :func:`check_l1_batchnorm`     - exercise 7.3: batch norm dividing by the
  mean absolute deviation instead of the standard deviation (eq. ch7-lp)
* :func:`check_top_eigenvalue`   - exercise 7.4: the largest eigenvalue of a
  Hessian known only through Hessian-vector products, by power iteration
  (Ghorbani et al.'s outliers, section 7.9)
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from bnlib.analysis import bn_linear_weight_grad as bn_weight_grad_reference
from bnlib.exercises import check_rng
from bnlib.exercises import (ExerciseError, Feedback, expect_close, expect_scalar, expect_shape,
                             report, run_check)

__all__ = ["check_bn_weight_grad", "check_ics_measure", "check_l1_batchnorm", "check_top_eigenvalue",
           "bn_weight_grad_reference", "ics_measure_reference", "l1_batchnorm_reference",
           "top_eigenvalue_reference"]


def _pair(name: str, got) -> tuple:
    if got is None:
        raise ExerciseError(f"{name} returned None - return a pair")
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise ExerciseError(f"{name} should return a pair; got {type(got).__name__}")
    return tuple(got)


# --- exercise 7.1 --------------------------------------------------------------

def check_bn_weight_grad(bn_weight_grad: Callable) -> Feedback:
    """Exercise 7.1: ``bn_weight_grad(W, x, dy) -> (y, dW)`` for ``y = BN(x @ W)`` (gamma 1, beta 0)."""

    def body() -> str:
        rng = check_rng(71)
        worst_cos = 0.0
        for n, n_in, n_out in ((16, 5, 3), (40, 8, 6)):
            W = rng.normal(size=(n_in, n_out)) * rng.uniform(0.1, 10, size=n_out)
            x, dy = rng.normal(size=(n, n_in)) + 2.0, rng.normal(size=(n, n_out))
            y, dW = _pair("bn_weight_grad", bn_weight_grad(W.copy(), x.copy(), dy.copy()))
            exp_y, exp_dW = bn_weight_grad_reference(W, x, dy)
            expect_close("y", y, exp_y, tol=1e-6)
            dW = expect_shape("dW", dW, W.shape).astype(np.float64)
            if not np.allclose(dW, exp_dW, rtol=1e-6, atol=1e-9):
                hint = ""
                if np.allclose(dW, x.T @ dy, rtol=1e-6):
                    hint = (" - that is x.T @ dy, the gradient without batch norm; first take dy "
                            "back through BN to dz (chapter 3), then dW = x.T @ dz")
                elif np.allclose(dW, (x.T @ dy).T.reshape(dW.shape), rtol=1e-6) or \
                        np.allclose(dW.T.reshape(exp_dW.shape), exp_dW, rtol=1e-6):
                    hint = " - check the layout: W and dW are (n_in, n_out)"
                raise ExerciseError(f"dW is off: max abs error {np.abs(dW - exp_dW).max():.2e}{hint}")
            cos = np.sum(W * dW, axis=0) / (np.linalg.norm(W, axis=0) * np.linalg.norm(dW, axis=0))
            worst_cos = max(worst_cos, float(np.abs(cos).max()))
        return (f"dW matches, and every column of dW is orthogonal to its column of W "
                f"(largest |cos| {worst_cos:.0e})")

    return report(run_check("exercise 7.1 bn_weight_grad", body, blocks=(
                                 "bnlib.analysis:bn_linear_weight_grad",
    )))


# --- exercise 7.2 --------------------------------------------------------------

def ics_measure_reference(G, G_prime) -> tuple[float, float]:
    """``(||G - G'||_2, cos(G, G'))`` over all entries: eq. (ch7-ics)."""
    G, G_prime = np.asarray(G, float).ravel(), np.asarray(G_prime, float).ravel()
    return (float(np.linalg.norm(G - G_prime)),
            float(G @ G_prime / (np.linalg.norm(G) * np.linalg.norm(G_prime))))


def check_ics_measure(ics_measure: Callable) -> Feedback:
    """Exercise 7.2: ``ics_measure(G, G_prime) -> (l2, cos)`` for two gradient arrays."""

    def body() -> str:
        rng = check_rng(72)
        G = rng.normal(size=(7, 4))
        cases = [("a nearby gradient", G + 0.1 * rng.normal(size=G.shape)),
                 ("the same gradient", G.copy()),
                 ("a reversed, rescaled gradient", -3.0 * G),
                 ("an unrelated gradient", rng.normal(size=G.shape))]
        for label, G2 in cases:
            l2, cos = _pair("ics_measure", ics_measure(G.copy(), G2.copy()))
            l2, cos = expect_scalar("the L2 difference", l2), expect_scalar("the cosine", cos)
            e_l2, e_cos = ics_measure_reference(G, G2)
            if abs(l2 - e_l2) > 1e-9 * max(1.0, e_l2):
                hint = ""
                if abs(l2 - e_l2 ** 2) < 1e-9 * max(1.0, e_l2 ** 2):
                    hint = " - that is the squared norm; take the square root"
                elif abs(l2 - abs(np.linalg.norm(G) - np.linalg.norm(G2))) < 1e-9:
                    hint = " - that is the difference of the norms; take the norm of the difference"
                raise ExerciseError(f"L2 difference for {label}: got {l2:.6g}, expected {e_l2:.6g}{hint}")
            if abs(cos - e_cos) > 1e-9:
                hint = " - cos must lie in [-1, 1]: divide by both norms" if abs(cos) > 1 + 1e-9 else ""
                raise ExerciseError(f"cosine for {label}: got {cos:.6g}, expected {e_cos:.6g}{hint}")
        return "||G - G'|| and cos(G, G') as in Santurkar et al.'s Definition"

    return report(run_check("exercise 7.2 ics_measure", body))


# --- exercise 7.3 --------------------------------------------------------------

def l1_batchnorm_reference(x, gamma, beta, eps: float = 1e-5) -> np.ndarray:
    """``gamma * (x - mu) / (mean |x - mu| + eps) + beta`` over axis 0: eq. (ch7-lp) with p = 1."""
    x = np.asarray(x, float)
    x_c = x - x.mean(axis=0)
    return gamma * x_c / (np.abs(x_c).mean(axis=0) + eps) + beta


def check_l1_batchnorm(l1_batchnorm: Callable) -> Feedback:
    """Exercise 7.3: ``l1_batchnorm(x, gamma, beta, eps) -> y`` (training mode, statistics over axis 0)."""

    def body() -> str:
        rng = check_rng(73)
        for n, d in ((32, 4), (5, 7)):
            x = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, size=d) + rng.normal(size=d) * 3
            gamma, beta = rng.uniform(0.5, 2, size=d), rng.normal(size=d)
            y = l1_batchnorm(x.copy(), gamma.copy(), beta.copy(), 1e-5)
            exp = l1_batchnorm_reference(x, gamma, beta, 1e-5)
            y = expect_shape("y", y, exp.shape).astype(np.float64)
            if not np.allclose(y, exp, rtol=1e-6, atol=1e-8):
                x_c = x - x.mean(0)
                hint = ""
                std_version = gamma * x_c / np.sqrt(x_c.var(0) + 1e-5) + beta
                no_center = gamma * x_c / (np.abs(x).mean(0) + 1e-5) + beta
                if np.allclose(y, std_version, rtol=1e-6):
                    hint = " - that is standard BN; divide by the mean absolute deviation mean|x - mu|"
                elif np.allclose(y, no_center, rtol=1e-6):
                    hint = " - take the absolute deviation from the batch mean, mean|x - mu|, not mean|x|"
                raise ExerciseError(f"y is off for a batch of {n} x {d}: max abs error "
                                    f"{np.abs(y - exp).max():.2e}{hint}")
            if not np.allclose(np.abs(y - beta).mean(0) / gamma, 1.0, atol=1e-4):
                raise ExerciseError("mean |y - beta| / gamma should be 1 for every feature")
        return "each feature is centred and has mean absolute deviation gamma"

    return report(run_check("exercise 7.3 l1_batchnorm", body, blocks=(
                                 "bnlib.torch.variants:LpBatchNorm1d.forward",
    )))


# --- exercise 7.4 --------------------------------------------------------------

def top_eigenvalue_reference(hvp: Callable, n: int, max_iters: int = 50, rtol: float = 1e-10,
                             seed: int = 0) -> float:
    """The largest eigenvalue of a symmetric PSD matrix known only through ``hvp(v) = H v``.

    Power iteration from a random unit vector: ``v <- H v / ||H v||``, the
    estimate is the Rayleigh quotient ``v . H v``; stop when it changes by less
    than ``rtol`` (relative) or after ``max_iters`` products.
    """
    v = np.random.default_rng(seed).standard_normal(n)
    v /= np.linalg.norm(v)
    lam = None
    for _ in range(max_iters):
        w = np.asarray(hvp(v), dtype=float)
        new = float(v @ w)
        norm = np.linalg.norm(w)
        if norm == 0:
            return 0.0
        v = w / norm
        if lam is not None and abs(new - lam) <= rtol * abs(new):
            return new
        lam = new
    return lam


#: Hessian-vector products a solution of exercise 7.4 may use per matrix
BUDGET = 100


def check_top_eigenvalue(top_eigenvalue: Callable) -> Feedback:
    """Exercise 7.4: ``top_eigenvalue(hvp, n) -> lambda_1`` from Hessian-vector products only.

    Fresh random symmetric positive semi-definite matrices (a few outliers above a
    bulk, as in Ghorbani et al.'s Hessians) are handed over only as ``hvp``; the
    answer must match the largest eigenvalue to 1e-3 relative, within at most
    ``BUDGET`` products per matrix (far fewer than ``n``, so the matrix cannot be
    rebuilt column by column).
    """

    def body() -> str:
        rng = check_rng(74)
        used = []
        for n, n_out in ((150, 3), (200, 9), (300, 1)):
            Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
            bulk = rng.uniform(0.0, 1.0, size=n - n_out)
            outliers = rng.uniform(5.0, 40.0, size=n_out)
            outliers[0] = 1.5 * outliers.max()      # a clear gap: lambda_2 <= lambda_1 / 1.5
            lam = rng.permutation(np.concatenate([outliers, bulk]))
            H = (Q * lam) @ Q.T
            calls = [0]
            budget = BUDGET

            def hvp(v, H=H, calls=calls, budget=budget):
                calls[0] += 1
                if calls[0] > budget:
                    raise ExerciseError(f"more than {budget} Hessian-vector products for n = {n}: "
                                        "power iteration converges in far fewer here; do not rebuild H")
                v = np.asarray(v, dtype=float)
                if v.shape != (H.shape[0],):
                    raise ExerciseError(f"hvp takes a vector of shape ({H.shape[0]},); got {v.shape}")
                return H @ v

            got = expect_scalar("the top eigenvalue", top_eigenvalue(hvp, n))
            exp = float(lam.max())
            if abs(got - exp) > 1e-3 * exp:
                hint = ""
                if abs(got - np.sqrt(exp)) < 1e-3 * exp or abs(got - exp ** 2) < 1e-3 * exp ** 2:
                    hint = " - use the Rayleigh quotient v.H v with ||v|| = 1, not a norm of a norm"
                elif got < exp:
                    hint = " - not converged yet? iterate until the estimate stops changing"
                raise ExerciseError(f"n = {n}: got {got:.6g}, expected {exp:.6g}{hint}")
            used.append(calls[0])
        return f"lambda_1 to 1e-3 on three fresh matrices, with {', '.join(map(str, used))} products"

    return report(run_check("exercise 7.4 top_eigenvalue", body, blocks=(
        "bnlib.experiments.hessian_spectrum:top_eigenvalues",
    )))
