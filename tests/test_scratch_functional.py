"""bnlib.scratch.functional: batch/layer norm forward and backward against PyTorch,
numerical gradients, a long-double reference and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlib.scratch import blocked
from bnlib.scratch.functional import (batchnorm_backward, batchnorm_backward_staged,
                                      batchnorm_eval, batchnorm_forward, layernorm_backward,
                                      layernorm_forward)
from bnlib.scratch.gradcheck import numerical_gradient, rel_error

SHAPES = [(8, 5), (300, 200), (4, 3, 5, 6), (2, 130, 16, 17)]  # 2 shapes span several blocks


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(shape, dtype=np.float64, seed=0, loc=0.5, scale=2.0):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (loc + scale * rng.standard_normal(shape)).astype(dtype)
    gamma = (1.0 + 0.5 * rng.standard_normal(C)).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dy


def _torch_bn(x, gamma, beta, dy, eps=1e-5):
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    y = TF.batch_norm(xt, None, None, gt, bt, training=True, eps=eps)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


TOL = {np.float64: dict(rtol=1e-10, atol=1e-10), np.float32: dict(rtol=1e-4, atol=2e-4)}


# ------------------------------------------------------------ against PyTorch

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_matches_torch(shape, dtype):
    x, gamma, beta, dy = _data(shape, dtype)
    y, cache = batchnorm_forward(x, gamma, beta)
    y_t, dx_t, dg_t, db_t = _torch_bn(x, gamma, beta, dy)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, y_t, **TOL[dtype])
    for backward in (batchnorm_backward, batchnorm_backward_staged):
        dx, dgamma, dbeta = backward(dy, cache)
        assert dx.dtype == dtype and dx.shape == x.shape, backward.__name__
        np.testing.assert_allclose(dx, dx_t, **TOL[dtype], err_msg=backward.__name__)
        np.testing.assert_allclose(dgamma, dg_t, rtol=TOL[dtype]["rtol"],
                                   atol=100 * TOL[dtype]["atol"], err_msg=backward.__name__)
        np.testing.assert_allclose(dbeta, db_t, rtol=TOL[dtype]["rtol"],
                                   atol=100 * TOL[dtype]["atol"], err_msg=backward.__name__)


@pytest.mark.parametrize("shape", SHAPES)
def test_cache_statistics(shape):
    x, gamma, beta, _ = _data(shape)
    _, cache = batchnorm_forward(x, gamma, beta, eps=1e-3)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    np.testing.assert_allclose(cache["mu"], x.mean(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(cache["var"], x.var(axis=axes), rtol=1e-12)
    np.testing.assert_allclose(cache["inv_std"], 1 / np.sqrt(x.var(axis=axes) + 1e-3), rtol=1e-12)
    assert cache["m"] == x.size // x.shape[1] and cache["axes"] == axes
    assert cache["x_hat"].shape == x.shape


def test_staged_equals_compact():
    for shape in SHAPES:
        x, gamma, beta, dy = _data(shape, seed=3)
        _, cache = batchnorm_forward(x, gamma, beta)
        for a, b in zip(batchnorm_backward(dy, cache), batchnorm_backward_staged(dy, cache)):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("block_bytes", [64, 2048, 40_000])
@pytest.mark.parametrize("shape", [(37, 11), (5, 7, 3, 9)])
def test_blocked_equals_readable_for_any_block_size(monkeypatch, shape, block_bytes):
    """The blocked version equals the readable one; tiny blocks force every code path:
    split rows, split channels, ragged last block."""
    x, gamma, beta, dy = _data(shape, seed=4)
    y_ref, cache = batchnorm_forward(x, gamma, beta)
    ref = batchnorm_backward(dy, cache)
    monkeypatch.setattr(blocked, "BLOCK_BYTES", block_bytes)
    y, cache = blocked.batchnorm_forward_blocked(x, gamma, beta)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(blocked.batchnorm_backward_blocked(dy, cache), ref):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 4, 5)])
def test_batchnorm_eval_matches_torch(shape, dtype):
    x, gamma, beta, _ = _data(shape, dtype)
    rng = np.random.default_rng(1)
    rm = rng.standard_normal(shape[1]).astype(dtype)
    rv = rng.uniform(0.5, 2.0, shape[1]).astype(dtype)
    y = batchnorm_eval(x, gamma, beta, rm, rv, eps=1e-3)
    y_t = TF.batch_norm(*(torch.tensor(a) for a in (x, rm, rv, gamma, beta)),
                        training=False, eps=1e-3).numpy()
    np.testing.assert_allclose(y, y_t, **TOL[dtype])
    one = batchnorm_eval(x[:1], gamma, beta, rm, rv, eps=1e-3)       # batch of one is fine
    np.testing.assert_allclose(one, y[:1], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(7, 10), (3, 2, 4, 5)])
def test_layernorm_matches_torch(shape, dtype):
    rng = np.random.default_rng(2)
    x = (1.0 + 3.0 * rng.standard_normal(shape)).astype(dtype)
    gamma = (1.0 + 0.3 * rng.standard_normal(shape[1:])).astype(dtype)
    beta = rng.standard_normal(shape[1:]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, cache = layernorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = layernorm_backward(dy, cache)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    yt = TF.layer_norm(xt, shape[1:], gt, bt, eps=1e-5)
    yt.backward(torch.tensor(dy))
    tol = TOL[dtype]
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)
    np.testing.assert_allclose(dgamma, gt.grad.numpy(), rtol=tol["rtol"], atol=10 * tol["atol"])
    np.testing.assert_allclose(dbeta, bt.grad.numpy(), rtol=tol["rtol"], atol=10 * tol["atol"])
    assert y.dtype == dx.dtype == dtype


# ------------------------------------------------------- numerical gradients

def _check_gradients(forward, backward, x, gamma, beta, dy):
    """f = sum(y * dy) has gradient (dx, dgamma, dbeta) = backward(dy)."""
    _, cache = forward(x, gamma, beta)
    analytic = backward(dy, cache)

    def f():
        return float(np.sum(forward(x, gamma, beta)[0] * dy))

    for name, arr, grad in zip(("dx", "dgamma", "dbeta"), (x, gamma, beta), analytic):
        err = rel_error(grad, numerical_gradient(f, arr))
        assert err < 1e-7, f"{forward.__name__}: {name} rel error {err:.2e}"


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 2)])
def test_batchnorm_numerical_gradient(shape):
    x, gamma, beta, dy = _data(shape, seed=5)
    _check_gradients(batchnorm_forward, batchnorm_backward, x, gamma, beta, dy)
    _check_gradients(batchnorm_forward, batchnorm_backward_staged, x, gamma, beta, dy)


@pytest.mark.parametrize("shape", [(4, 6), (2, 2, 3, 2)])
def test_layernorm_numerical_gradient(shape):
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape)
    gamma = 1 + 0.3 * rng.standard_normal(shape[1:])
    beta = rng.standard_normal(shape[1:])
    dy = rng.standard_normal(shape)
    _check_gradients(layernorm_forward, layernorm_backward, x, gamma, beta, dy)


def test_gradcheck_helpers():
    x = np.array([1.0, -2.0, 3.0])
    g = numerical_gradient(lambda: float(np.sum(x ** 3)), x)
    np.testing.assert_allclose(g, 3 * x ** 2, rtol=1e-8)
    np.testing.assert_array_equal(x, [1.0, -2.0, 3.0])             # restored
    g2 = numerical_gradient(lambda v: float(v @ v), x)              # f(x) form
    np.testing.assert_allclose(g2, 2 * x, rtol=1e-9)
    assert rel_error(x, x) == 0.0 and rel_error(np.zeros(2), np.zeros(2)) == 0.0
    assert rel_error(np.array([1.0]), np.array([1.1])) == pytest.approx(0.1 / 2.1)
    with pytest.raises(ValueError, match="shape"):
        rel_error(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="float"):
        numerical_gradient(lambda: 0.0, np.arange(3))


# ------------------------------------------------------------- numerics

def _reference_bn(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """x_hat computed in long double by the textbook two-pass formula."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    xl = x.astype(np.longdouble)
    mu = xl.mean(axis=axes, keepdims=True)
    var = ((xl - mu) ** 2).mean(axis=axes, keepdims=True)
    return (xl - mu) / np.sqrt(var + np.longdouble(eps))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), c=st.integers(1, 6), four_d=st.booleans(),
       log_scale=st.floats(-2, 3), mean=st.sampled_from([0.0, 1.0, -50.0, 1e4, 1e6]),
       seed=st.integers(0, 2**16))
def test_property_matches_long_double(n, c, four_d, log_scale, mean, seed):
    """Any shape, any spread, a mean up to 1e6 (also 1e8 times the spread): full precision."""
    rng = np.random.default_rng(seed)
    shape = (n, c, 2, 3) if four_d else (n, c)
    x = mean + 10.0 ** log_scale * rng.standard_normal(shape)
    gamma, beta = np.ones(c), np.zeros(c)
    eps = 1e-12                                      # small eps: the variance matters
    y, cache = batchnorm_forward(x, gamma, beta, eps=eps)
    ref = _reference_bn(x, eps)
    err = float(np.max(np.abs(y - ref)))
    assert err < 1e-9, f"max error {err:.2e} for mean {mean}, scale 1e{log_scale:.1f}"
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    assert np.allclose(y.mean(axis=axes), 0, atol=1e-9)
    assert np.allclose(y.std(axis=axes), 1, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 30), c=st.integers(1, 5), seed=st.integers(0, 2**16),
       shift=st.sampled_from([1e3, 1e6, -1e6]), spread=st.sampled_from([1e-2, 1.0, 100.0]))
def test_property_shift_invariance(n, c, seed, shift, spread):
    """BN(x + shift) == BN(x): the mean is removed exactly, whatever its size."""
    rng = np.random.default_rng(seed)
    x = spread * rng.standard_normal((n, c))
    x_shifted = x + shift
    gamma = rng.uniform(0.5, 2, c)
    beta = rng.standard_normal(c)
    y1, _ = batchnorm_forward(x, gamma, beta)
    y2, _ = batchnorm_forward(x_shifted, gamma, beta)
    # x + shift is rounded to the spacing of `shift`: the only error allowed is that one
    representable = np.spacing(abs(shift)) / spread
    np.testing.assert_allclose(y2, y1, atol=gamma.max() * 20 * max(representable, 1e-14))


def test_large_mean_small_spread_is_exact_where_naive_fails():
    """The one-pass formula mean(x^2) - mean(x)^2 loses everything at mean 1e6, std 1e-2."""
    rng = np.random.default_rng(0)
    x = 1e6 + 1e-2 * rng.standard_normal((1000, 4))
    y, cache = batchnorm_forward(x, np.ones(4), np.zeros(4), eps=0.0 + 1e-12)
    ref = _reference_bn(x, 1e-12)
    assert np.max(np.abs(y - ref)) < 1e-9
    np.testing.assert_allclose(cache["var"], x.var(axis=0), rtol=1e-9)
    naive_var = (x ** 2).mean(axis=0) - x.mean(axis=0) ** 2
    assert np.max(np.abs(naive_var / x.var(axis=0) - 1)) > 1e-3   # the trap is real


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), c=st.integers(1, 4), four_d=st.booleans(), seed=st.integers(0, 999))
def test_property_backward_invariants(n, c, four_d, seed):
    """dx sums to zero and (eps -> 0) is orthogonal to x_hat per channel; staged == compact."""
    shape = (n, c, 2, 2) if four_d else (n, c)
    x, gamma, beta, dy = _data(shape, seed=seed)
    _, cache = batchnorm_forward(x, gamma, beta, eps=1e-14)
    dx, dgamma, dbeta = batchnorm_backward(dy, cache)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    scale = np.abs(dy).sum() + 1
    assert np.allclose(dx.sum(axis=axes), 0, atol=1e-10 * scale)
    assert np.allclose((dx * cache["x_hat"]).sum(axis=axes), 0, atol=1e-9 * scale)
    for a, b in zip((dx, dgamma, dbeta), batchnorm_backward_staged(dy, cache)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------- bad input

def _bn(x, c=None):
    c = x.shape[1] if c is None else c
    return batchnorm_forward(x, np.ones(c), np.zeros(c))


@pytest.mark.parametrize("shape", [(1, 4), (1, 3, 1, 1)])
def test_one_value_per_channel(shape):
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        _bn(np.ones(shape))


def test_one_example_is_fine_with_several_positions():
    y, _ = _bn(np.arange(6.0).reshape(1, 1, 2, 3))
    np.testing.assert_allclose(y.mean(), 0, atol=1e-12)


@pytest.mark.parametrize("shape", [(4,), (4, 3, 2), (2, 3, 2, 2, 2)])
def test_wrong_ndim(shape):
    with pytest.raises(ValueError, match=r"2-D \(N, D\) or 4-D \(N, C, H, W\)"):
        _bn(np.ones(shape), c=3)


def test_parameter_shapes():
    x = np.random.default_rng(0).standard_normal((4, 3))
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\).*got shape \(4,\)"):
        batchnorm_forward(x, np.ones(4), np.zeros(3))
    with pytest.raises(ValueError, match=r"beta must have shape \(3,\)"):
        batchnorm_forward(x, np.ones(3), np.zeros((1, 3)))
    x4 = np.ones((2, 3, 2, 2))
    with pytest.raises(ValueError, match=r"one value per channel"):
        batchnorm_forward(x4, np.ones(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"running_var must have shape \(3,\)"):
        batchnorm_eval(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(2))
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\) \(x.shape\[1:\]\)"):
        layernorm_forward(x, np.ones(4), np.zeros(3))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(bad):
    x = np.random.default_rng(0).standard_normal((5, 3))
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"x contains non-finite values \(NaN or inf\).*\(2, 1\)"):
        _bn(x)
    with pytest.raises(ValueError, match="non-finite"):
        batchnorm_eval(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        layernorm_forward(x, np.ones(3), np.zeros(3))
    x4 = np.ones((2, 3, 2, 2))
    x4[1, 2, 0, 1] = bad
    with pytest.raises(ValueError, match=r"non-finite.*\(1, 2, 0, 1\)"):
        _bn(x4)


def test_overflowing_variance_and_other_errors():
    x = np.array([[1e200], [-1e200]])
    with pytest.raises(ValueError, match="variance overflows"):
        _bn(x)
    with pytest.raises(ValueError, match="zero variance and eps=0"):
        batchnorm_forward(np.ones((3, 2)), np.ones(2), np.zeros(2), eps=0.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        batchnorm_forward(np.eye(3), np.ones(3), np.zeros(3), eps=-1.0)
    with pytest.raises(ValueError, match="empty"):
        _bn(np.ones((0, 3)))
    with pytest.raises(ValueError, match="real numeric"):
        _bn(np.array([["a", "b"], ["c", "d"]]))
    _, cache = _bn(np.eye(3))
    with pytest.raises(ValueError, match=r"dy must have the shape of the forward input \(3, 3\)"):
        batchnorm_backward(np.ones((3, 2)), cache)
    with pytest.raises(ValueError, match="dy must have the shape"):
        batchnorm_backward_staged(np.ones((2, 3)), cache)


def test_integer_input_is_float64():
    y, cache = _bn(np.arange(12).reshape(4, 3))
    assert y.dtype == np.float64
    dx, _, _ = batchnorm_backward(np.ones((4, 3), dtype=np.float32), cache)
    assert dx.dtype == np.float64
