"""The checks of chapter 3's exercises: they accept right answers and explain wrong ones."""
from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest

from bnlib.exercises import (BEGIN, END, STUB, make_student_notebooks, strip_solutions,
                             student_source)
from bnlib.exercises.ch03 import (check_batchnorm_backward, check_batchnorm_forward,
                                  check_gamma_beta_grads, check_layernorm_backward)
from bnlib.scratch.functional import (batchnorm_backward, batchnorm_forward, layernorm_backward,
                                      layernorm_forward)

NOTEBOOK = Path(__file__).resolve().parents[1] / "chapters" / "03_bn_derivation.ipynb"


# --- a student's own answers, written independently of bnlib (own cache layout) ------

def forward_ok(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mu) * inv_std
    return gamma * x_hat + beta, (x_hat, inv_std, gamma)


def backward_ok(dy, cache):
    x_hat, inv_std, gamma = cache
    m = dy.shape[0]
    dbeta = dy.sum(axis=0)
    dgamma = (dy * x_hat).sum(axis=0)
    dx = gamma * inv_std / m * (m * dy - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def grads_ok(dy, x_hat):
    axes = (0,) if dy.ndim == 2 else (0, 2, 3)
    return (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)


def layernorm_ok(dy, x, gamma, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    inv_std = 1.0 / np.sqrt(x.var(axis=1, keepdims=True) + eps)
    x_hat = (x - mu) * inv_std
    g = dy * gamma
    D = x.shape[1]
    dx = inv_std / D * (D * g - g.sum(axis=1, keepdims=True)
                        - x_hat * (g * x_hat).sum(axis=1, keepdims=True))
    return dx, (dy * x_hat).sum(axis=0), dy.sum(axis=0)


def todo(*args):
    raise NotImplementedError("your code here")


def _fails(feedback, *fragments):
    assert not feedback.passed, feedback
    assert str(feedback).startswith("[FAIL]"), feedback
    for fragment in fragments:
        assert fragment in feedback.message, (fragment, feedback.message)


# --- exercise 3.1 ----------------------------------------------------------------

def test_forward_accepts_bnlib_and_an_independent_answer(capsys):
    assert check_batchnorm_forward(batchnorm_forward).passed
    feedback = check_batchnorm_forward(forward_ok)
    assert feedback.passed and str(feedback).startswith("[PASS]")
    assert "[PASS] exercise 3.1" in capsys.readouterr().out  # the check prints its line


def test_forward_todo():
    feedback = check_batchnorm_forward(todo)
    assert not feedback.passed and str(feedback).startswith("[TODO]"), feedback


def _affine(fn):
    def forward(x, gamma, beta, eps=1e-5):
        return gamma * fn(x, eps) + beta, None
    return forward


@pytest.mark.parametrize("wrong, fragments", [
    (_affine(lambda x, eps: (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps)),
     ["y (batch of 12)", "axis 0"]),
    (_affine(lambda x, eps: (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + eps)),
     ["biased variance"]),
    (_affine(lambda x, eps: (x - x.mean(0)) / (x.std(0) + eps)), ["under the square root"]),
    (_affine(lambda x, eps: (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)), ["eps argument"]),
    (_affine(lambda x, eps: (x - x.mean(0)) / (x.var(0) + eps)), ["standard deviation"]),
    (lambda x, g, b, eps=1e-5: (b * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + g, None),
     ["swapped"]),
    (lambda x, g, b, eps=1e-5: ((x - x.mean(0)) / np.sqrt(x.var(0) + eps), None),
     ["scale and shift are missing"]),
])
def test_forward_explains_typical_mistakes(wrong, fragments):
    _fails(check_batchnorm_forward(wrong), "max relative error", *fragments)


def test_forward_shape_none_crash_and_in_place():
    _fails(check_batchnorm_forward(lambda x, g, b, eps=1e-5: (forward_ok(x, g, b, eps)[0].T, None)),
           "shape (5, 12), expected (12, 5)")
    _fails(check_batchnorm_forward(lambda x, g, b, eps=1e-5: None), "returned None")
    _fails(check_batchnorm_forward(lambda x, g, b, eps=1e-5: forward_ok(x, g, b, eps)[0]),
           "should return the 2 values (y, cache)")
    _fails(check_batchnorm_forward(lambda x, g, b, eps=1e-5: (x.mean(axis=1) + g, None)),
           "raised ValueError")

    def in_place(x, gamma, beta, eps=1e-5):
        x -= x.mean(axis=0)
        x /= np.sqrt(x.var(axis=0) + eps)
        return gamma * x + beta, None
    _fails(check_batchnorm_forward(in_place), "in place")


# --- exercise 3.2 ----------------------------------------------------------------

def test_backward_accepts_bnlib_and_an_independent_answer():
    assert check_batchnorm_backward(batchnorm_forward, batchnorm_backward).passed
    assert check_batchnorm_backward(forward_ok, backward_ok).passed
    # backward written from the chapter's staged graph is just as right
    from bnlib.scratch.functional import batchnorm_backward_staged
    assert check_batchnorm_backward(batchnorm_forward, batchnorm_backward_staged).passed


def test_backward_todo_for_backward_or_forward():
    assert str(check_batchnorm_backward(forward_ok, todo)).startswith("[TODO]")
    assert str(check_batchnorm_backward(todo, backward_ok)).startswith("[TODO]")


def test_backward_needs_a_right_forward_first():
    def bad_forward(x, gamma, beta, eps=1e-5):
        y, cache = forward_ok(x, gamma, beta, eps)
        return y + 1.0, cache
    _fails(check_batchnorm_backward(bad_forward, backward_ok), "forward pass", "check_batchnorm_forward")


def _backward_with(dx_fn=None, dgamma_fn=None, dbeta_fn=None):
    """backward_ok with one output replaced by a wrong formula."""
    def backward(dy, cache):
        x_hat, inv_std, gamma = cache
        dx, dgamma, dbeta = backward_ok(dy, cache)
        m = dy.shape[0]
        if dx_fn is not None:
            dx = dx_fn(dy, x_hat, inv_std, gamma, m)
        if dgamma_fn is not None:
            dgamma = dgamma_fn(dy, x_hat, m)
        if dbeta_fn is not None:
            dbeta = dbeta_fn(dy, x_hat, m)
        return dx, dgamma, dbeta
    return backward


@pytest.mark.parametrize("wrong, fragments", [
    (_backward_with(dx_fn=lambda dy, xh, s, g, m: g * s * (m * dy - dy.sum(0) - xh * (dy * xh).sum(0))),
     ["dx (batch of 12)", "m times too large"]),
    (_backward_with(dx_fn=lambda dy, xh, s, g, m: g * s * dy), ["mu and var as constants"]),
    (_backward_with(dx_fn=lambda dy, xh, s, g, m: g * s * (dy - dy.mean(0))), ["through the variance"]),
    (_backward_with(dx_fn=lambda dy, xh, s, g, m: g * s * (dy - xh * (dy * xh).mean(0))),
     ["through the mean"]),
    (_backward_with(dx_fn=lambda dy, xh, s, g, m: s * (dy - dy.mean(0) - xh * (dy * xh).mean(0))),
     ["gamma is missing"]),
    (_backward_with(dx_fn=lambda dy, xh, s, g, m: g * s * (dy - (dy.mean(0) + xh * (dy * xh).mean(0)) / m)),
     ["tutorial page's dZ"]),
    (_backward_with(dgamma_fn=lambda dy, xh, m: dy.sum(0), dbeta_fn=lambda dy, xh, m: (dy * xh).sum(0)),
     ["dbeta (batch of 12)", "dgamma (batch of 12)", "swap"]),
    (_backward_with(dgamma_fn=lambda dy, xh, m: (dy * xh).mean(0)), ["dgamma", "m times too small"]),
    (_backward_with(dbeta_fn=lambda dy, xh, m: dy.sum(0, keepdims=True)),
     ["dbeta (batch of 12) has shape (1, 5), expected (5,)", "keepdims"]),
    (_backward_with(dbeta_fn=lambda dy, xh, m: dy.sum(1)), ["shape (12,)", "axis 0"]),
])
def test_backward_explains_typical_mistakes(wrong, fragments):
    _fails(check_batchnorm_backward(forward_ok, wrong), *fragments)


def test_backward_names_only_the_wrong_gradient():
    feedback = check_batchnorm_backward(forward_ok, _backward_with(dgamma_fn=lambda dy, xh, m: 2 * (dy * xh).sum(0)))
    _fails(feedback, "dgamma (batch of 12) is off: max relative error 3.33e-01")
    assert "dx" not in feedback.message and "dbeta" not in feedback.message


def test_backward_returns_wrong_things():
    _fails(check_batchnorm_backward(forward_ok, lambda dy, cache: None), "returned None")
    _fails(check_batchnorm_backward(forward_ok, lambda dy, cache: backward_ok(dy, cache)[:2]),
           "(dx, dgamma, dbeta)", "length 2")
    _fails(check_batchnorm_backward(forward_ok, lambda dy, cache: (None,) + backward_ok(dy, cache)[1:]),
           "dx (batch of 12) is None")


# --- exercise 3.3 ----------------------------------------------------------------

def test_gamma_beta_grads():
    assert check_gamma_beta_grads(grads_ok).passed
    assert str(check_gamma_beta_grads(todo)).startswith("[TODO]")
    _fails(check_gamma_beta_grads(lambda dy, xh: grads_ok(dy, xh)[::-1]), "swap")
    _fails(check_gamma_beta_grads(lambda dy, xh: (dy * xh).sum(0)), "should return the 2 values")
    only_2d = lambda dy, xh: ((dy * xh).sum(axis=0), dy.sum(axis=0))  # noqa: E731
    _fails(check_gamma_beta_grads(only_2d), "4-D input (4, 3, 5, 6)", "has shape (3, 5, 6)", "axes 0, 2, 3")
    mean_not_sum = lambda dy, xh: tuple(g / (dy.size // dy.shape[1]) for g in grads_ok(dy, xh))  # noqa: E731
    _fails(check_gamma_beta_grads(mean_not_sum), "m times too small")
    keep = lambda dy, xh: tuple(g[None] for g in grads_ok(dy, xh))  # noqa: E731
    _fails(check_gamma_beta_grads(keep), "has shape (1, 3), expected (3,)")


# --- exercise 3.4 ----------------------------------------------------------------

def test_layernorm_backward_accepts_right_answers():
    assert check_layernorm_backward(layernorm_ok).passed

    # calling bnlib's own layernorm_backward is not an answer: the check makes it unavailable to
    # a student's code (compiled here as a notebook cell would be; the tests' own code may call it)
    import sys
    import types

    student = types.ModuleType("student_answer")   # a notebook's namespace is a module, __main__
    student.__dict__.update(np=np, layernorm_forward=layernorm_forward,
                            layernorm_backward=layernorm_backward)
    exec(compile("def via_bnlib(dy, x, gamma, eps=1e-5):\n"
                 "    _, cache = layernorm_forward(x, gamma, np.zeros_like(gamma), eps)\n"
                 "    return layernorm_backward(dy, cache)\n", "<student cell>", "exec"), vars(student))
    sys.modules["student_answer"] = student
    try:
        assert "unavailable" in check_layernorm_backward(student.via_bnlib).message
    finally:
        del sys.modules["student_answer"]
    assert str(check_layernorm_backward(todo)).startswith("[TODO]")


def _ln_with(dx_fn=None, dgamma_fn=None):
    def backward(dy, x, gamma, eps=1e-5):
        dx, dgamma, dbeta = layernorm_ok(dy, x, gamma, eps)
        mu = x.mean(axis=1, keepdims=True)
        inv = 1.0 / np.sqrt(x.var(axis=1, keepdims=True) + eps)
        if dx_fn is not None:
            dx = dx_fn(dy, (x - mu) * inv, inv, gamma)
        if dgamma_fn is not None:
            dgamma = dgamma_fn(dy, (x - mu) * inv)
        return dx, dgamma, dbeta
    return backward


@pytest.mark.parametrize("wrong, fragments", [
    (_ln_with(dx_fn=lambda dy, xh, s, g: g * s * (dy - dy.mean(1, keepdims=True)
                                                   - xh * (dy * xh).mean(1, keepdims=True))),
     ["dx (batch (6, 5))", "gamma cannot be taken out"]),
    (_ln_with(dx_fn=lambda dy, xh, s, g: g * s * dy), ["constants"]),
    (_ln_with(dgamma_fn=lambda dy, xh: (dy * xh).sum(1)), ["dgamma", "shape (6,)", "axis 0"]),
])
def test_layernorm_backward_explains_typical_mistakes(wrong, fragments):
    _fails(check_layernorm_backward(wrong), *fragments)


def test_layernorm_backward_recognises_batch_norm():
    def bn_instead(dy, x, gamma, eps=1e-5):
        _, cache = batchnorm_forward(x, gamma, np.zeros_like(gamma), eps)
        return batchnorm_backward(dy, cache)
    _fails(check_layernorm_backward(bn_instead), "batch norm's formula")


# --- the chapter's notebook and its student version --------------------------------

def _solution_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and BEGIN in c.source]


def test_notebook_solutions_are_tagged_and_stripped(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    solutions = _solution_cells(nb)
    assert len(solutions) == 6, "one solution cell per exercise"
    for cell in solutions:
        tags = cell.metadata.get("tags", [])
        assert "hide-input" in tags and "solution" in tags, tags
        stripped = strip_solutions(cell.source)
        assert BEGIN not in stripped and END not in stripped and STUB in stripped
        assert "return" not in stripped.split(STUB)[1], "no solution code may survive the stub"

    written = make_student_notebooks(NOTEBOOK.parent, tmp_path)
    student = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    assert tmp_path / NOTEBOOK.name in written
    code = "\n".join(c.source for c in student.cells if c.cell_type == "code")
    assert BEGIN not in code and code.count(STUB) == 7  # exercise 3.6 has two functions
    assert ".passed" not in code, "students' copies must run on past an unfinished exercise"
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")


def test_student_exercise_cells_report_todo(capsys):
    """Run the exercise section of the student copy (solutions stubbed): every check says TODO."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    start = next(i for i, s in enumerate(cells) if "from bnlib.exercises.ch03 import" in s)
    namespace: dict = {}
    for source in cells[start:]:
        exec(compile(student_source(source), "<student cell>", "exec"), namespace)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 6, lines
    assert all(line.startswith("[TODO]") for line in lines), lines


# --- exercise 3.5: the student's own gradient checker ------------------------------

from bnlib.exercises.ch03 import check_batchnorm2d, check_grad_check  # noqa: E402


def grad_check_ok(f, x, h=1e-5):
    grad = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        old = x[k]
        x[k] = old + h
        f_plus = f(x)
        x[k] = old - h
        f_minus = f(x)
        x[k] = old
        grad[k] = (f_plus - f_minus) / (2 * h)
    return grad


def grad_check_one_sided(f, x, h=1e-5):
    grad = np.zeros_like(x)
    f0 = f(x)
    for k in np.ndindex(x.shape):
        xp = x.copy()
        xp[k] += h
        grad[k] = (f(xp) - f0) / h
    return grad


def grad_check_fixed_h(f, x, h=1e-5):
    return grad_check_ok(f, x, 1e-5)


def grad_check_no_restore(f, x, h=1e-5):
    grad = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        old = x[k]
        x[k] = old + h
        f_plus = f(x)
        x[k] = old - h
        grad[k] = (f_plus - f(x)) / (2 * h)
    return grad


def grad_check_over_h(f, x, h=1e-5):
    return 2 * grad_check_ok(f, x, h)


@pytest.mark.parametrize("seed", ["0", "1", "12345"])
def test_grad_check_accepts_right_answers(seed, monkeypatch):
    from bnlib.scratch import numerical_gradient

    monkeypatch.setenv("BNLIB_CHECK_SEED", seed)
    assert check_grad_check(grad_check_ok).passed
    assert check_grad_check(lambda f, x, h=1e-5: numerical_gradient(f, x, h)).passed


def test_grad_check_todo():
    feedback = check_grad_check(todo)
    assert not feedback.passed and str(feedback).startswith("[TODO]"), feedback


@pytest.mark.parametrize("wrong, fragments", [
    (grad_check_one_sided, ["one-sided"]),
    (grad_check_fixed_h, ["h = 0.1"]),
    (grad_check_no_restore, ["left x changed"]),
    (grad_check_over_h, ["divide by 2h"]),
    (lambda f, x, h=1e-5: None, ["returned None"]),
    (lambda f, x, h=1e-5: np.zeros(3), ["shape"]),
])
def test_grad_check_explains_mistakes(wrong, fragments):
    _fails(check_grad_check(wrong), *fragments)


def test_grad_check_cannot_be_fitted_to_one_run(monkeypatch):
    # answers recorded under one check seed fail under another
    recorded = []
    monkeypatch.setenv("BNLIB_CHECK_SEED", "0")
    check_grad_check(lambda f, x, h=1e-5: recorded.append(grad_check_ok(f, x, h)) or recorded[-1])
    replay = iter(recorded)
    monkeypatch.setenv("BNLIB_CHECK_SEED", "7")
    assert not check_grad_check(lambda f, x, h=1e-5: next(replay)).passed


# --- exercise 3.6: batch norm for (N, C, H, W) --------------------------------------

def bn2d_forward_ok(x, gamma, beta, eps=1e-5):
    axes = (0, 2, 3)
    mu = x.mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
    x_hat = (x - mu) * inv_std
    g = gamma.reshape(1, -1, 1, 1)
    return g * x_hat + beta.reshape(1, -1, 1, 1), (x_hat, inv_std, g)


def bn2d_backward_ok(dy, cache):
    x_hat, inv_std, g = cache
    axes = (0, 2, 3)
    m = dy.size // dy.shape[1]
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    dx = g * inv_std / m * (m * dy - dbeta.reshape(1, -1, 1, 1)
                            - x_hat * dgamma.reshape(1, -1, 1, 1))
    return dx, dgamma, dbeta


def _bn2d_forward_axes(axes):
    def forward(x, gamma, beta, eps=1e-5):
        mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
        x_hat = (x - mu) / np.sqrt(var + eps)
        return gamma.reshape(1, -1, 1, 1) * x_hat + beta.reshape(1, -1, 1, 1), None
    return forward


def bn2d_backward_m_is_n(dy, cache):
    x_hat, inv_std, g = cache
    axes = (0, 2, 3)
    m = dy.shape[0]
    dbeta, dgamma = dy.sum(axis=axes), (dy * x_hat).sum(axis=axes)
    dx = g * inv_std / m * (m * dy - dbeta.reshape(1, -1, 1, 1) - x_hat * dgamma.reshape(1, -1, 1, 1))
    return dx, dgamma, dbeta


@pytest.mark.parametrize("seed", ["0", "3"])
def test_bn2d_accepts_right_answers(seed, monkeypatch):
    monkeypatch.setenv("BNLIB_CHECK_SEED", seed)
    assert check_batchnorm2d(batchnorm_forward, batchnorm_backward).passed
    assert check_batchnorm2d(bn2d_forward_ok, bn2d_backward_ok).passed


def test_bn2d_todo():
    assert str(check_batchnorm2d(todo, todo)).startswith("[TODO]")


@pytest.mark.parametrize("forward, backward, fragments", [
    (_bn2d_forward_axes(0), bn2d_backward_ok, ["per channel and position"]),
    (_bn2d_forward_axes((2, 3)), bn2d_backward_ok, ["instance norm"]),
    (bn2d_forward_ok, bn2d_backward_m_is_n, ["N * H * W"]),
    (bn2d_forward_ok, lambda dy, c: (dy * 0, np.zeros(dy.shape[1]), dy.sum(axis=(0, 2, 3))),
     ["dx", "dgamma"]),
])
def test_bn2d_explains_mistakes(forward, backward, fragments):
    _fails(check_batchnorm2d(forward, backward), *fragments)


def test_new_checks_reject_calls_to_the_references():
    # a student's cell (not this test file) that calls bnlib's own implementations
    namespace = {"__name__": "student"}
    exec(compile("import bnlib.scratch as S\n"
                 "grad = lambda f, x, h=1e-5: S.numerical_gradient(f, x, h)\n"
                 "fwd = lambda *a: S.batchnorm_forward(*a)\n"
                 "bwd = lambda *a: S.batchnorm_backward(*a)\n", "<student cell>", "exec"), namespace)
    assert "unavailable" in check_grad_check(namespace["grad"]).message
    assert "unavailable" in check_batchnorm2d(namespace["fwd"], namespace["bwd"]).message
