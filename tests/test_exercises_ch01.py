"""The chapter 1 exercise checks accept right answers and explain wrong ones."""
import math

import numpy as np
import pytest

from bnlib.exercises import ch01
from bnlib.experiments.saturation import saturation_threshold


def _todo(*args):
    raise NotImplementedError("your code here")


# --- 1.1 standardize -------------------------------------------------------------

def standardize_right(x_train, x_test):
    mu, sd = x_train.mean(axis=0), x_train.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (x_train - mu) / sd, (x_test - mu) / sd


def test_standardize_accepts_right_answer(capsys):
    fb = ch01.check_standardize(standardize_right)
    assert fb.passed, fb.message
    assert "[PASS]" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, b: ((a - a.mean(0)) / a.std(0), (b - b.mean(0)) / b.std(0)), "its own mean"),
    (lambda a, b: ((a - a.mean(0)) / a.var(0), (b - a.mean(0)) / a.var(0)), "variance"),
    (lambda a, b: ((a - a.mean(0)) / a.std(0, ddof=1), (b - a.mean(0)) / a.std(0, ddof=1)),
     "ddof=1"),
    (lambda a, b: ((a - a.mean(0)) / a.std(), (b - a.mean(0)) / a.std()), "one std per feature"),
    (lambda a, b: (a / a.std(0), b / a.std(0)), "subtract each feature's mean"),
    (lambda a, b: ((a - a.mean(0)) / a.std(0), (b - a.mean(0)) / a.std(0)), "constant"),
    (lambda a, b: ((a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True), b), "mean"),
    (lambda a, b: standardize_right(a, b)[0], "pair"),
    (lambda a, b: (standardize_right(a, b)[0].T, standardize_right(a, b)[1]), "shape"),
    (lambda a, b: None, "return statement"),
])
def test_standardize_rejects_wrong_answers(wrong, hint):
    with np.errstate(all="ignore"):
        fb = ch01.check_standardize(wrong)
    assert not fb.passed
    assert hint in fb.message, fb.message
    assert str(fb).startswith("[FAIL]")


def test_standardize_not_implemented_is_todo():
    assert str(ch01.check_standardize(_todo)).startswith("[TODO]")


def test_reference_standardize_uses_training_statistics():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3, 5, (50, 2)), rng.normal(0, 1, (10, 2))
    ta, tb = ch01.standardize_reference(a, b)
    assert np.allclose(ta.mean(0), 0) and np.allclose(ta.std(0), 1)
    assert np.allclose(tb, (b - a.mean(0)) / a.std(0))


# --- 1.2 saturated_fraction --------------------------------------------------------

def fraction_right(c, act, slope):
    z = saturation_threshold(act, slope)
    return math.erfc(z / (c * math.sqrt(2)))


def test_saturated_fraction_accepts_right_answer():
    fb = ch01.check_saturated_fraction(fraction_right)
    assert fb.passed, fb.message


def _no_edge_case(c, act, slope):
    if act == "tanh":
        z = np.arctanh(np.sqrt(1 - slope))
    else:
        s = 0.5 * (1 + np.sqrt(1 - 4 * slope))
        z = np.log(s / (1 - s))
    return math.erfc(z / (c * math.sqrt(2)))


@pytest.mark.parametrize("wrong, hint", [
    (lambda c, a, s: 0.5 * fraction_right(c, a, s), "one tail"),
    (lambda c, a, s: 1 - fraction_right(c, a, s), "NOT saturated"),
    (lambda c, a, s: math.erfc(saturation_threshold(a, s) / (c ** 2 * math.sqrt(2))), "variance"),
    (lambda c, a, s: fraction_right(c, "tanh", s), "threshold"),
    (_no_edge_case, "every input is saturated"),
    (lambda c, a, s: np.array([fraction_right(c, a, s)]), "one number"),
])
def test_saturated_fraction_rejects_wrong_answers(wrong, hint):
    with np.errstate(all="ignore"):
        fb = ch01.check_saturated_fraction(wrong)
    assert not fb.passed
    assert hint in fb.message, fb.message


def test_saturated_fraction_reference_matches_sampling():
    z = np.random.default_rng(0).normal(0.0, 3.0, 400_000)
    sampled = np.mean(1 - np.tanh(z) ** 2 < 0.01)
    assert abs(sampled - ch01.saturated_fraction_reference(3.0, "tanh", 0.01)) < 0.005


# --- 1.3 predicted_iterations ------------------------------------------------------

def iterations_right(X, tol):
    lam = np.linalg.eigvalsh(X.T @ X / len(X))
    kappa = lam[-1] / lam[0]
    return math.ceil(math.log(tol) / (2 * math.log((kappa - 1) / (kappa + 1))))


def test_predicted_iterations_accepts_right_answer():
    fb = ch01.check_predicted_iterations(iterations_right)
    assert fb.passed, fb.message


def _from_kappa(kappa_of, factor=2):
    def f(X, tol):
        k = kappa_of(X)
        return math.ceil(math.log(tol) / (factor * math.log((k - 1) / (k + 1))))
    return f


@pytest.mark.parametrize("wrong, hint", [
    (_from_kappa(np.linalg.cond), "square root"),
    (_from_kappa(lambda X: np.linalg.cond(X.T @ X), factor=1), "factor 2"),
    (lambda X, tol: iterations_right(X, tol) - 0.5, "whole number"),
    (lambda X, tol: 10, "expected"),
    (lambda X, tol: None, "return statement"),
])
def test_predicted_iterations_rejects_wrong_answers(wrong, hint):
    fb = ch01.check_predicted_iterations(wrong)
    assert not fb.passed
    assert hint in fb.message, fb.message


# --- 1.4 diagnose (new) ----------------------------------------------------------

def _diagnose_right(z, activation):
    z = np.asarray(z, dtype=float)
    finite = np.isfinite(z)
    zf = np.where(finite, z, 0.0)
    a = np.tanh(zf) if activation == "tanh" else 1 / (1 + np.exp(-zf))
    slope = 1 - a * a if activation == "tanh" else a * (1 - a)
    low = (slope < 0.01) & finite
    whole = finite.all(axis=0)
    return low.sum() / finite.sum(), (low.all(axis=0) & whole).sum() / whole.sum(), 1 - finite.mean()


def test_diagnose_accepts_right_answer():
    from bnlib.exercises import ch01 as c1
    fb = c1.check_diagnose(_diagnose_right)
    assert fb.passed, fb.message


def test_diagnose_rejects_wrong_answers():
    from bnlib.exercises import ch01 as c1

    def nan_is_dead(z, act):                     # treats a NaN unit as dead
        s, d, n = _diagnose_right(z, act)
        z = np.asarray(z)
        a = np.tanh(z) if act == "tanh" else 1 / (1 + np.exp(-z))
        with np.errstate(invalid="ignore"):
            slope = 1 - a * a if act == "tanh" else a * (1 - a)
        return s, np.mean((~(slope >= 0.01)).all(axis=0)), n

    def abs_099(z, act):                         # |a| > 0.99 instead of slope < 0.01
        s, d, n = _diagnose_right(z, act)
        z = np.asarray(z)
        f = np.isfinite(z)
        a = np.tanh(z[f]) if act == "tanh" else 1 / (1 + np.exp(-z[f]))
        off = np.abs(a) > 0.99 if act == "tanh" else (a < 0.01) | (a > 0.99)
        return off.mean(), d, n

    fitted = _diagnose_right(np.zeros((3, 3)), "tanh")
    for wrong, hint in ((lambda z, a: None, "return statement"), (nan_is_dead, "diverged"),
                        (abs_099, "slope"), (lambda z, a: fitted, "expected"), (_todo_any, None)):
        fb = c1.check_diagnose(wrong)
        assert not fb.passed
        if hint:
            assert hint in fb.message, fb.message


def _todo_any(*args):
    raise NotImplementedError
