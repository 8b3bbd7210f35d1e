"""The chapter 5 exercise checks accept right answers and explain wrong ones."""
import numpy as np

from bnlib.exercises import ch05


def _todo(*args, **kwargs):
    raise NotImplementedError("your code here")


# --- 5.1 ------------------------------------------------------------------------

def test_population_statistics_accepts_the_reference(capsys):
    fb = ch05.check_population_statistics(ch05.population_statistics_reference)
    assert fb.passed, fb.message
    assert capsys.readouterr().out.startswith("[PASS] exercise 5.1")


def test_population_statistics_explains_mistakes():
    def biased(batches):
        return (np.mean([b.mean(0) for b in batches], 0), np.mean([b.var(0) for b in batches], 0))

    fb = ch05.check_population_statistics(biased)
    assert not fb.passed and "m / (m - 1)" in fb.message and str(fb).startswith("[FAIL]")

    def pooled(batches):
        x = np.concatenate(batches)
        return x.mean(0), x.var(0, ddof=1)

    fb = ch05.check_population_statistics(pooled)
    assert not fb.passed and "pooled" in fb.message and "relative error" in fb.message
    fb = ch05.check_population_statistics(lambda batches: np.zeros(3))
    assert not fb.passed and "pair" in fb.message
    assert str(ch05.check_population_statistics(_todo)).startswith("[TODO]")


# --- 5.2 ------------------------------------------------------------------------

def test_running_statistics_accepts_the_reference():
    assert ch05.check_running_statistics(ch05.running_statistics_reference).passed


def test_running_statistics_explains_mistakes():
    def keras(batches, momentum):
        return ch05.running_statistics_reference(batches, None if momentum is None else 1 - momentum)

    fb = ch05.check_running_statistics(keras)
    assert not fb.passed and "Keras convention" in fb.message

    def biased(batches, momentum):
        mean, var = np.zeros(4), np.ones(4)
        for t, x in enumerate(batches, 1):
            f = 1 / t if momentum is None else momentum
            mean, var = (1 - f) * mean + f * x.mean(0), (1 - f) * var + f * x.var(0)
        return mean, var

    fb = ch05.check_running_statistics(biased)
    assert not fb.passed and "unbiased" in fb.message

    def zero_start(batches, momentum):
        mean, var = np.zeros(4), np.zeros(4)
        for t, x in enumerate(batches, 1):
            f = 1 / t if momentum is None else momentum
            mean, var = (1 - f) * mean + f * x.mean(0), (1 - f) * var + f * x.var(0, ddof=1)
        return mean, var

    fb = ch05.check_running_statistics(zero_start)
    assert not fb.passed and "starts the running variance at 1" in fb.message

    def no_cumulative(batches, momentum):
        return ch05.running_statistics_reference(batches, 0.1 if momentum is None else momentum)

    fb = ch05.check_running_statistics(no_cumulative)
    assert not fb.passed and "momentum=None" in fb.message


# --- 5.3 ------------------------------------------------------------------------

def test_fold_accepts_the_reference():
    assert ch05.check_fold_linear_bn(ch05.fold_linear_bn_reference).passed


def test_fold_explains_mistakes():
    def no_eps(W, b, gamma, beta, mean, var, eps):
        s = gamma / np.sqrt(var)
        return W * s, (b - mean) * s + beta

    fb = ch05.check_fold_linear_bn(no_eps)
    assert not fb.passed and "eps" in fb.message and "differs" in fb.message

    def no_mean(W, b, gamma, beta, mean, var, eps):
        s = gamma / np.sqrt(var + eps)
        return W * s, b * s + beta

    fb = ch05.check_fold_linear_bn(no_mean)
    assert not fb.passed and "running mean" in fb.message

    def rows(W, b, gamma, beta, mean, var, eps):
        s = gamma / np.sqrt(var + eps)
        return (W.T * s[:, None]), (b - mean) * s + beta

    fb = ch05.check_fold_linear_bn(rows)
    assert not fb.passed and "shape (4, 7), expected (7, 4)" in fb.message

    def bias_none_crash(W, b, gamma, beta, mean, var, eps):
        s = gamma / np.sqrt(var + eps)
        return W * s, (np.zeros_like(beta) if b is None else b - mean) * s + beta

    fb = ch05.check_fold_linear_bn(bias_none_crash)
    assert not fb.passed and "b=None" in fb.message
