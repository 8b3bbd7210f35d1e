"""The chapter 7 exercise checks accept right answers and explain wrong ones."""
import numpy as np

from bnlib.exercises import ch07
from bnlib.scratch.functional import batchnorm_backward, batchnorm_forward


def _todo(*args, **kwargs):
    raise NotImplementedError("your code here")


def test_bn_weight_grad(capsys):
    fb = ch07.check_bn_weight_grad(ch07.bn_weight_grad_reference)
    assert fb.passed, fb.message
    assert capsys.readouterr().out.startswith("[PASS] exercise 7.1")

    def without_bn_backward(W, x, dy):
        y, _ = batchnorm_forward(x @ W, np.ones(W.shape[1]), np.zeros(W.shape[1]))
        return y, x.T @ dy

    fb = ch07.check_bn_weight_grad(without_bn_backward)
    assert not fb.passed and "without batch norm" in fb.message and str(fb).startswith("[FAIL]")

    def transposed(W, x, dy):
        y, cache = batchnorm_forward(x @ W, np.ones(W.shape[1]), np.zeros(W.shape[1]))
        return y, (batchnorm_backward(dy, cache)[0].T @ x)

    fb = ch07.check_bn_weight_grad(transposed)
    assert not fb.passed and "shape" in fb.message
    assert not ch07.check_bn_weight_grad(lambda W, x, dy: None).passed
    assert str(ch07.check_bn_weight_grad(_todo)).startswith("[TODO]")


def test_ics_measure():
    assert ch07.check_ics_measure(ch07.ics_measure_reference).passed

    def squared(G, G2):
        return float(np.sum((G - G2) ** 2)), ch07.ics_measure_reference(G, G2)[1]

    fb = ch07.check_ics_measure(squared)
    assert not fb.passed and "squared norm" in fb.message

    def unnormalised(G, G2):
        return ch07.ics_measure_reference(G, G2)[0], float(np.sum(G * G2))

    fb = ch07.check_ics_measure(unnormalised)
    assert not fb.passed and "cosine" in fb.message
    fb = ch07.check_ics_measure(lambda G, G2: (np.array([1.0, 2.0]), 0.5))
    assert not fb.passed and "one number" in fb.message
    assert str(ch07.check_ics_measure(_todo)).startswith("[TODO]")


def test_l1_batchnorm():
    assert ch07.check_l1_batchnorm(ch07.l1_batchnorm_reference).passed

    def standard(x, gamma, beta, eps):
        return gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + beta

    fb = ch07.check_l1_batchnorm(standard)
    assert not fb.passed and "standard BN" in fb.message

    def uncentred(x, gamma, beta, eps):
        return gamma * (x - x.mean(0)) / (np.abs(x).mean(0) + eps) + beta

    fb = ch07.check_l1_batchnorm(uncentred)
    assert not fb.passed and "not mean|x|" in fb.message
    assert not ch07.check_l1_batchnorm(lambda x, g, b, e: x[:2]).passed
    assert str(ch07.check_l1_batchnorm(_todo)).startswith("[TODO]")


def test_top_eigenvalue(monkeypatch):
    def power(hvp, n):
        v = np.random.default_rng(3).standard_normal(n)
        v /= np.linalg.norm(v)
        lam = 0.0
        for _ in range(80):
            w = hvp(v)
            new, v = float(v @ w), w / np.linalg.norm(w)
            if abs(new - lam) < 1e-12 * abs(new):
                break
            lam = new
        return new

    assert ch07.check_top_eigenvalue(power).passed
    assert str(ch07.check_top_eigenvalue(_todo)).startswith("[TODO]")
    assert not ch07.check_top_eigenvalue(lambda hvp, n: 1.0).passed

    def rebuild(hvp, n):
        return float(np.linalg.eigvalsh(np.stack([hvp(e) for e in np.eye(n)])).max())

    fb = ch07.check_top_eigenvalue(rebuild)
    assert not fb.passed and "rebuild" in fb.message

    def three_steps(hvp, n):
        v = np.ones(n)
        for _ in range(3):
            w = hvp(v)
            v = w / np.linalg.norm(w)
        return float(v @ hvp(v))

    assert not ch07.check_top_eigenvalue(three_steps).passed
    fitted = {}

    def fitted_to_one_input(hvp, n):          # answers remembered from one run ...
        return fitted.setdefault(n, power(hvp, n))

    assert ch07.check_top_eigenvalue(fitted_to_one_input).passed
    monkeypatch.setenv("BNLIB_CHECK_SEED", "17")
    assert not ch07.check_top_eigenvalue(fitted_to_one_input).passed    # ... fail on fresh inputs
    assert ch07.check_top_eigenvalue(power).passed
