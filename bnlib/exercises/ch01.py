"""Checks for the exercises of chapter 1 (why normalize).

Each ``check_*`` takes the student's function, runs it on fixed inputs,
prints one line of feedback (PASS, FAIL with the reason, or TODO while the
function still raises ``NotImplementedError``) and returns the ``Feedback``.

* :func:`check_standardize`          - exercise 1.1: standardise with the training statistics
* :func:`check_saturated_fraction`   - exercise 1.2: the saturated fraction of N(0, c^2) inputs
* :func:`check_predicted_iterations` - exercise 1.3: gradient-descent steps from the condition number
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from bnlib.exercises import check_rng
from bnlib.exercises import ExerciseError, Feedback, expect_scalar, expect_shape, report, run_check


# --- exercise 1.1 --------------------------------------------------------------

def standardize_reference(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (ch1-standardize) with the training set's per-feature mean and (biased) std."""
    from bnlib.preprocessing import standardize

    out = standardize(x_train, x_test)
    return out.x_train, out.x_test


def check_standardize(standardize: Callable[[np.ndarray, np.ndarray], tuple]) -> Feedback:
    """Exercise 1.1: ``standardize(x_train, x_test) -> (x_train_hat, x_test_hat)``."""

    def body() -> str:
        rng = check_rng(11)
        scales = np.array([0.01, 1.0, 50.0, 3000.0])
        x_train = rng.normal(size=(40, 4)) * scales + np.array([5.0, -2.0, 100.0, 0.0])
        x_test = rng.normal(size=(15, 4)) * scales * 1.5 + np.array([5.5, -2.0, 90.0, 500.0])
        exp_train, exp_test = standardize_reference(x_train, x_test)
        got = standardize(x_train.copy(), x_test.copy())
        if got is None:
            raise ExerciseError("standardize returned None - did you forget a return statement?")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise ExerciseError("standardize should return a pair (x_train_hat, x_test_hat)")
        tr = expect_shape("x_train_hat", got[0], x_train.shape).astype(np.float64)
        te = expect_shape("x_test_hat", got[1], x_test.shape).astype(np.float64)
        for what, arr in (("x_train_hat", tr), ("x_test_hat", te)):
            if not np.all(np.isfinite(arr)):
                raise ExerciseError(f"{what} contains NaN or inf")
        mean, std = tr.mean(axis=0), tr.std(axis=0)
        if np.max(np.abs(mean)) > 1e-8:
            j = int(np.argmax(np.abs(mean)))
            raise ExerciseError(f"feature {j} of x_train_hat has mean {mean[j]:.3g}, not 0 - "
                                "subtract each feature's mean (axis=0)")
        if np.max(np.abs(std - 1)) > 1e-8:
            j = int(np.argmax(np.abs(std - 1)))
            hint = ""
            if np.allclose(tr, (x_train - x_train.mean(0)) / x_train.var(0)):
                hint = " - you divided by the variance; divide by its square root"
            elif np.allclose(tr, (x_train - x_train.mean(0)) / x_train.std(0, ddof=1)):
                hint = " - you used the N-1 (ddof=1) std; divide by the N one (ddof=0, np.std's default)"
            elif np.allclose(tr, (x_train - x_train.mean(0)) / x_train.std()):
                hint = " - you divided by one std of all the numbers; use one std per feature"
            raise ExerciseError(f"feature {j} of x_train_hat has std {std[j]:.4g}, not 1{hint}")
        if not np.allclose(tr, exp_train, atol=1e-9):
            raise ExerciseError("x_train_hat has mean 0 and std 1 per feature but is not "
                                "(x - mean) / std of x_train")
        if not np.allclose(te, exp_test, atol=1e-9):
            own = (x_test - x_test.mean(0)) / x_test.std(0)
            if np.allclose(te, own, atol=1e-9):
                raise ExerciseError("x_test_hat was standardised with its own mean and std; use "
                                    "the training set's, so that a test example is transformed "
                                    "the same way whatever else is in the test set")
            bessel = (x_test - x_train.mean(0)) / x_train.std(0, ddof=1)
            if np.allclose(te, bessel, atol=1e-9):
                raise ExerciseError("x_test_hat used the N-1 (ddof=1) std of x_train while "
                                    "x_train_hat used the N one; use the same std for both")
            err = float(np.max(np.abs(te - exp_test)))
            raise ExerciseError(f"x_test_hat is off by up to {err:.3g}: transform it with "
                                "x_train's mean and std")
        # a feature that never changes in the training set must not give NaN
        const = np.c_[x_train[:, :2], np.full(len(x_train), 7.0)]
        got = standardize(const.copy(), np.c_[x_test[:, :2], np.full(len(x_test), 8.0)])
        tr = expect_shape("x_train_hat (constant feature)", got[0], const.shape)
        if not np.all(np.isfinite(tr)) or not np.all(np.isfinite(np.asarray(got[1]))):
            raise ExerciseError("a feature that is constant in x_train gives NaN or inf; "
                                "leave it centred (divide by 1 where the std is 0)")
        if np.max(np.abs(np.asarray(tr)[:, 2])) > 1e-12:
            raise ExerciseError("a constant training feature should come out as 0")
        return ("per-feature mean 0 and std 1 on the training set, the test set transformed "
                "with the training statistics, constant features handled")

    return report(run_check("exercise 1.1 standardize", body, blocks=(
                                 "bnlib.preprocessing:standardize",
    )))


# --- exercise 1.2 --------------------------------------------------------------

def saturated_fraction_reference(scale: float, activation: str, slope: float) -> float:
    """P(g'(z) < slope) for z ~ N(0, scale^2): eq. (ch1-saturated-fraction)."""
    from bnlib.experiments.saturation import predicted_fraction

    return float(predicted_fraction(scale, activation, slope))


def check_saturated_fraction(saturated_fraction: Callable[[float, str, float], float]) -> Feedback:
    """Exercise 1.2: ``saturated_fraction(scale, activation, slope)`` for z ~ N(0, scale^2)."""

    def body() -> str:
        from bnlib.experiments.saturation import saturation_threshold

        cases = [(1.0, "tanh", 0.01), (3.0, "tanh", 0.01), (10.0, "sigmoid", 0.01),
                 (2.0, "sigmoid", 0.05), (0.5, "tanh", 0.2), (22.4, "sigmoid", 0.01),
                 (1.0, "sigmoid", 0.3), (4.0, "tanh", 1.5)]
        for scale, act, slope in cases:
            label = f"scale={scale:g}, {act}, slope={slope:g}"
            expected = saturated_fraction_reference(scale, act, slope)
            value = saturated_fraction(scale, act, slope)
            if saturation_threshold(act, slope) == 0 and value is not None and \
                    np.asarray(value).shape == () and not np.isfinite(np.asarray(value, dtype=float)):
                raise ExerciseError(f"case {label}: got {float(value)} - the slope of {act} is "
                                    f"never as large as {slope:g}, so every input is saturated "
                                    "(the answer is 1); handle that case before solving for z")
            got = expect_scalar(f"saturated_fraction({label})", value)
            if abs(got - expected) <= 1e-6:
                continue
            z = saturation_threshold(act, slope)
            hint = ""
            if z > 0 and abs(got - 0.5 * expected) < 1e-6:
                hint = " - that is one tail; |z| > z_sat has two"
            elif z > 0 and abs(got - math.erfc(z / (scale ** 2 * math.sqrt(2)))) < 1e-6:
                hint = " - you divided by the variance; z / (c sqrt 2) uses the std c"
            elif z > 0 and abs(got - (1 - expected)) < 1e-6:
                hint = " - that is the fraction that is NOT saturated"
            elif z == 0:
                hint = (f" - the slope of {act} is never as large as {slope:g}, so every "
                        "input is saturated")
            else:
                other = "sigmoid" if act == "tanh" else "tanh"
                zo = saturation_threshold(other, slope)
                if abs(got - math.erfc(zo / (scale * math.sqrt(2)))) < 1e-6:
                    hint = f" - that is the {other}'s threshold; {act} saturates at |z| > {z:.3f}"
            raise ExerciseError(f"case {label}: got {got:.6g}, expected {expected:.6g}{hint}")
        return ("tanh and sigmoid thresholds and both tails are right: at c = 3, "
                f"{saturated_fraction_reference(3.0, 'tanh', 0.01):.1%} of tanh units are saturated")

    return report(run_check("exercise 1.2 saturated_fraction", body, blocks=(
                                 "bnlib.experiments.saturation:predicted_fraction",
    )))


# --- exercise 1.3 --------------------------------------------------------------

def predicted_iterations_reference(X: np.ndarray, tol: float) -> int:
    """Steps of gradient descent with step 2/(l_min + l_max) on ||Xw - y||^2/(2N): eq. (ch1-iterations)."""
    from bnlib.experiments.conditioning import condition_number, predicted_iterations

    return predicted_iterations(condition_number(np.asarray(X, dtype=np.float64)), tol)


def check_predicted_iterations(predicted_iterations: Callable[[np.ndarray, float], int]) -> Feedback:
    """Exercise 1.3: ``predicted_iterations(X, tol)`` from the condition number of X^T X / N."""

    def body() -> str:
        from bnlib.experiments.conditioning import condition_number

        rng = check_rng(5)
        base_ = rng.standard_normal((300, 3))
        cases = [
            ("scales 1, 10, 0.5", base_ * np.array([1.0, 10.0, 0.5]), 1e-6),
            ("scales 1, 30, 1", base_ * np.array([1.0, 30.0, 1.0]), 1e-4),
            ("a feature with mean 5", np.c_[np.ones(300), base_[:, :1] + 5.0], 1e-6),
            ("tall, standardised", (base_ - base_.mean(0)) / base_.std(0), 1e-8),
        ]
        for label, X, tol in cases:
            expected = predicted_iterations_reference(X, tol)
            got = predicted_iterations(X.copy(), tol)
            got = expect_scalar(f"predicted_iterations ({label})", got)
            if got == expected:
                continue
            kappa = condition_number(X)
            rho = (kappa - 1) / (kappa + 1)
            hint = ""
            sq = math.sqrt(kappa)
            if sq > 1 and abs(got - math.ceil(math.log(tol) / (2 * math.log((sq - 1) / (sq + 1))))) <= 1:
                hint = (" - that uses the condition number of X (singular values), which is the "
                        "square root of the Hessian's; use the eigenvalues of X^T X / N")
            elif abs(got - math.ceil(math.log(tol) / math.log(rho))) <= 1:
                hint = " - the excess loss shrinks by rho^2 per step, not rho: mind the factor 2"
            elif got != int(got):
                hint = " - return a whole number of steps (round up)"
            raise ExerciseError(f"case '{label}' (kappa = {kappa:.4g}, tol = {tol:g}): got "
                                f"{got:g} steps, expected {expected}{hint}")
        # and the prediction is what gradient descent does on two features
        from bnlib.experiments.conditioning import best_step, gradient_descent

        X = base_[:, :2] * np.array([1.0, 7.0])
        y = X @ np.array([1.0, -1.0]) + rng.standard_normal(300)
        gd = gradient_descent(X, y, best_step(X), tol=1e-6, max_iter=10_000)
        got = int(expect_scalar("predicted_iterations (two features)", predicted_iterations(X, 1e-6)))
        if gd["iterations"] is None or gd["iterations"] > got:
            raise ExerciseError(f"gradient descent needed {gd['iterations']} steps on two "
                                f"features, more than your {got}")
        return (f"right for all cases; on two features with scales 1 and 7 it predicts "
                f"{got} steps and gradient descent takes {gd['iterations']}")

    return report(run_check("exercise 1.3 predicted_iterations", body, blocks=(
                                 "bnlib.experiments.conditioning:predicted_iterations",
    )))


# --- exercise 1.4 --------------------------------------------------------------

def diagnose_reference(z: np.ndarray, activation: str) -> tuple[float, float, float]:
    """(saturated, dead, nonfinite) of a tanh or sigmoid layer's pre-activations ``z``
    (examples x units), with the book's definition: slope g'(z) < 0.01, over finite values."""
    z = np.asarray(z, dtype=float)
    finite = np.isfinite(z)
    a = np.tanh(np.where(finite, z, 0.0)) if activation == "tanh" else \
        1.0 / (1.0 + np.exp(-np.clip(np.where(finite, z, 0.0), -500, 500)))
    slope = 1.0 - a * a if activation == "tanh" else a * (1.0 - a)
    low = (slope < 0.01) & finite
    saturated = float(low.sum() / finite.sum()) if finite.any() else float("nan")
    whole = finite.all(axis=0)
    dead = float((low.all(axis=0) & whole).sum() / whole.sum()) if whole.any() else float("nan")
    return saturated, dead, float(1.0 - finite.mean())


def check_diagnose(diagnose: Callable[[np.ndarray, str], tuple]) -> Feedback:
    """Exercise 1.4: ``diagnose(z, activation) -> (saturated, dead, nonfinite)``."""

    def body() -> str:
        from bnlib.exercises import check_rng

        rng = check_rng(104)
        for case in range(4):
            act = ("tanh", "sigmoid")[case % 2]
            n, units = int(rng.integers(40, 120)), int(rng.integers(8, 20))
            z = rng.normal(0.0, rng.uniform(1.0, 6.0), size=(n, units))
            n_dead = int(rng.integers(1, 4))
            cols = rng.choice(units, size=n_dead + 2, replace=False)
            z[:, cols[:n_dead]] = rng.choice([-1.0, 1.0], size=(n, n_dead)) * rng.uniform(8, 30, (n, n_dead))
            if case >= 1:              # a diverged unit: NaN and inf, to be counted apart
                z[rng.choice(n, size=3, replace=False), cols[n_dead]] = np.nan
                z[rng.integers(n), cols[n_dead + 1]] = np.inf
            expected = reference = diagnose_reference(z, act)
            got = diagnose(z.copy(), act)
            if got is None:
                raise ExerciseError("diagnose returned None - did you forget a return statement?")
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                raise ExerciseError("diagnose should return a triple (saturated, dead, nonfinite)")
            labels = ("saturated", "dead", "nonfinite")
            values = [expect_scalar(f"{labels[i]} (case {case + 1}, {act})", got[i]) for i in range(3)]
            for i, (g, e) in enumerate(zip(values, expected)):
                if abs(g - e) <= 1e-9:
                    continue
                hint = ""
                finite = np.isfinite(z)
                if i == 0:
                    a = np.tanh(z) if act == "tanh" else 1 / (1 + np.exp(-z))
                    off = np.abs(a) > 0.99 if act == "tanh" else (a < 0.01) | (a > 0.99)
                    if abs(g - off[finite].mean()) < 1e-9:
                        hint = " - that counts |a| near its limits; the book's definition is slope g'(z) < 0.01"
                    elif abs(g - ((1 - a * a if act == "tanh" else a * (1 - a)) < 0.01).mean()) < 1e-9 or \
                            abs(g - (e * finite.sum() / finite.size)) < 1e-9:
                        hint = " - divide by the number of finite values, not by all values"
                    elif act == "sigmoid" and abs(g - reference_tanh_share(z)) < 1e-9:
                        hint = " - that is tanh's slope; the sigmoid's is a (1 - a)"
                elif i == 1:
                    with np.errstate(invalid="ignore"):
                        a = np.tanh(z) if act == "tanh" else 1 / (1 + np.exp(-z))
                        slope = 1 - a * a if act == "tanh" else a * (1 - a)
                    if abs(g - np.mean(~(slope >= 0.01)).round(12)) < 1e-9 or \
                            abs(g - np.mean((~(slope >= 0.01)).all(axis=0))) < 1e-9:
                        hint = " - a unit with NaN or inf values is diverged, not dead: leave it out"
                    elif abs(g - e * finite.all(axis=0).sum() / units) < 1e-9:
                        hint = " - divide by the number of units whose values are all finite"
                raise ExerciseError(f"case {case + 1} ({act}): {labels[i]} is {g:.6g}, expected {e:.6g}{hint}")
        return ("saturated (slope < 0.01, finite values), dead units and the non-finite share are right "
                f"(last case: {values[0]:.1%} saturated, {values[1]:.0%} of units dead)")

    return report(run_check("exercise 1.4 diagnose", body))


def reference_tanh_share(z: np.ndarray) -> float:
    """Share of finite z with tanh'(z) < 0.01 (used to name a wrong-slope mistake)."""
    finite = np.isfinite(z)
    t = np.tanh(z[finite])
    return float(np.mean(1 - t * t < 0.01))
