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
