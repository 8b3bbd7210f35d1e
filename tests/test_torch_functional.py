"""bnlib.torch.functional: hand-written backward passes against gradcheck and PyTorch."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlib.torch import BatchNormFunction, batch_norm, batch_norm_train, layer_norm
import bnlib.torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    """Tiny tensors: OpenMP start-up costs more than it saves (and stalls on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
SHAPES = [(6, 3), (4, 3, 5), (3, 2, 4, 5)]  # 2-D, 3-D and 4-D input, C along axis 1


def _data(shape, dtype=torch.float64, device="cpu", seed=0, affine=True):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=dtype) * 2.0 + 0.5).to(device)
    C = shape[1]
    w = (torch.rand(C, generator=g, dtype=dtype) + 0.5).to(device) if affine else None
    b = torch.randn(C, generator=g, dtype=dtype).to(device) if affine else None
    return x, w, b


# ---------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", ["both", "weight_only", "none"])
def test_batchnorm_function_gradcheck(shape, affine):
    x, w, b = _data(shape)
    if affine == "weight_only":
        b = None
    if affine == "none":
        w = b = None
    inputs = [t.requires_grad_(True) if t is not None else None for t in (x, w, b)]
    assert torch.autograd.gradcheck(
        lambda x, w, b: BatchNormFunction.apply(x, w, b, 1e-5), inputs, eps=1e-6, atol=1e-6
    )


def test_batchnorm_function_gradient_matches_torch_autograd():
    """Same gradient as PyTorch's own BN kernel for a non-trivial loss (not just gradcheck)."""
    x, w, b = _data((5, 3, 4, 2))
    x, w, b = (t.requires_grad_(True) for t in (x, w, b))
    target = torch.randn(5, 3, 4, 2, dtype=torch.float64)
    ours = torch.autograd.grad(((BatchNormFunction.apply(x, w, b, 1e-5) - target) ** 3).sum(), (x, w, b))
    ref = torch.autograd.grad(((F.batch_norm(x, None, None, w, b, True) - target) ** 3).sum(), (x, w, b))
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def test_batchnorm_backward_is_the_hand_written_function():
    x, w, b = _data((6, 3))
    x.requires_grad_(True)
    y = BatchNormFunction.apply(x, w, b, 1e-5)
    assert type(y.grad_fn).__name__ == "BatchNormFunctionBackward"


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (4, 3, 2, 2)])
def test_batchnorm_double_backward_gradgradcheck(shape):
    x, w, b = _data(shape)
    for t in (x, w, b):
        t.requires_grad_(True)
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: BatchNormFunction.apply(x, w, b, 1e-5), (x, w, b))
    assert torch.autograd.gradgradcheck(
        lambda x: BatchNormFunction.apply(x, None, None, 1e-5), (x,))


def _gradient_penalty(module, x, c):
    """x.grad of ||d(sum c*y)/dx||^2: zero without the second-order term when y is linear in c."""
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad((module(x) * c).sum(), x, create_graph=True)
    assert g.requires_grad
    g.pow(2).sum().backward()
    return x.grad


@pytest.mark.parametrize("ours, ref, shape", [
    (lambda: bnlib.torch.BatchNorm1d(3), lambda: torch.nn.BatchNorm1d(3), (8, 3)),
    (lambda: bnlib.torch.BatchNorm2d(3), lambda: torch.nn.BatchNorm2d(3), (4, 3, 2, 3)),
    (lambda: bnlib.torch.LayerNorm(3), lambda: torch.nn.LayerNorm(3), (8, 3)),
])
def test_gradient_penalty_matches_torch_nn(ours, ref, shape):
    """The silent wrong answer of issue 13: with create_graph the second-order term was dropped."""
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    c = torch.randn(shape, dtype=torch.float64)
    a = _gradient_penalty(ours().double(), x, c)
    r = _gradient_penalty(ref().double(), x, c)
    assert r.abs().max() > 1e-2                       # the term is there to be dropped
    torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-12)


def test_layernorm_double_backward_gradgradcheck():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w, b: layer_norm(x, (2, 5), w, b), (x, w, b))


def test_needs_input_grad_computes_only_what_is_asked():
    x, w, b = _data((6, 3))
    w.requires_grad_(True)
    y = BatchNormFunction.apply(x, w, b, 1e-5)
    (dw,) = torch.autograd.grad(y.sum() + (y**2).sum(), w)
    x2, w2 = x.clone(), w.detach().clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(
        (lambda y: y.sum() + (y**2).sum())(F.batch_norm(x2, None, None, w2, b, True)), w2
    )
    torch.testing.assert_close(dw, ref)
    assert x.grad is None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_train_matches_torch(shape, dtype, tol, device):
    x, w, b = _data(shape, dtype, device)
    y, mu, var = batch_norm_train(x, w, b, 1e-5)
    ref_var, ref_mu = torch.var_mean(x, dim=[0] + list(range(2, x.dim())), correction=0)
    torch.testing.assert_close(y, F.batch_norm(x, None, None, w, b, True), rtol=tol, atol=tol)
    torch.testing.assert_close(mu, ref_mu, rtol=tol, atol=tol)
    torch.testing.assert_close(var, ref_var, rtol=tol, atol=tol)
    assert y.device.type == device and y.dtype == dtype
    assert not mu.requires_grad and not var.requires_grad


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 6),
    c=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 3), max_size=2),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    shift=st.sampled_from([0.0, 5.0, -1e3]),
    seed=st.integers(0, 2**16),
)
def test_property_forward_and_backward_match_torch(n, c, spatial, scale, shift, seed):
    shape = (n, c, *spatial)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift
    w = torch.randn(c, generator=g, dtype=torch.float64)
    b = torch.randn(c, generator=g, dtype=torch.float64)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    results = []
    for fn in (
        lambda x, w, b: BatchNormFunction.apply(x, w, b, 1e-5),
        lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5),
    ):
        leaves = [t.clone().requires_grad_(True) for t in (x, w, b)]
        y = fn(*leaves)
        results.append((y, *torch.autograd.grad(y, leaves, dy)))
    for name, a, r in zip(("y", "dx", "dweight", "dbias"), *results):
        torch.testing.assert_close(a, r, rtol=1e-7, atol=1e-7 * max(1.0, r.abs().max().item()), msg=name)


# ---------------------------------------------------------------- batch_norm (F.batch_norm semantics)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, 0.0])
def test_batch_norm_updates_running_stats_like_torch(momentum, device):
    x, w, b = _data((8, 3, 5), torch.float64, device)
    rm, rv = torch.randn(3, dtype=torch.float64, device=device), torch.rand(3, dtype=torch.float64, device=device) + 1
    rm_ref, rv_ref = rm.clone(), rv.clone()
    y = batch_norm(x, rm, rv, w, b, True, momentum, 1e-5)
    ref = F.batch_norm(x, rm_ref, rv_ref, w, b, True, momentum, 1e-5)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(rm, rm_ref)
    torch.testing.assert_close(rv, rv_ref)  # the unbiased variance goes into running_var
    if momentum == 0.0:
        assert torch.equal(rm, rm_ref) and torch.equal(rv, rv_ref)
    # eval mode uses the running statistics, and gradients flow through it
    xg = x.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    y_eval = batch_norm(xg, rm, rv, w, b, False, momentum, 1e-5)
    y_ref = F.batch_norm(xr, rm_ref, rv_ref, w, b, False, momentum, 1e-5)
    torch.testing.assert_close(y_eval, y_ref)
    y_eval.sum().backward()
    y_ref.sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)


def test_batch_norm_wants_both_running_buffers_or_neither():
    x, w, b = _data((8, 3))
    rv = torch.ones(3, dtype=torch.float64)
    for fn in (batch_norm, F.batch_norm):  # same rule and message as torch 2.13
        with pytest.raises(ValueError, match="must either both be None or neither be None"):
            fn(x, None, rv, w, b, True, 0.3)
    assert torch.equal(rv, torch.ones(3, dtype=torch.float64))


def test_batch_norm_errors():
    x, w, b = _data((8, 3))
    with pytest.raises(ValueError, match="running_mean and running_var must be given"):
        batch_norm(x, None, None, w, b, training=False)
    with pytest.raises(TypeError, match="batch_norm_train"):
        batch_norm(x, w, b, 1e-5)  # the (x, weight, bias, eps) call of the scratch API
    with pytest.raises(ValueError, match="eps must be positive"):
        batch_norm(x, None, None, w, b, True, 0.1, 0.0)
    with pytest.raises(ValueError, match=r"weight has shape \(2,\) but x of size \(8, 3\) has 3 channels"):
        batch_norm(x, None, None, w[:2], b, True)
    with pytest.raises(ValueError, match=r"running_mean has shape \(4,\) but .* must have shape \(3,\)"):
        batch_norm(x, torch.zeros(4, dtype=x.dtype), torch.ones(3, dtype=x.dtype), w, b, False)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        batch_norm(x[:1], None, None, w, b, True)
    with pytest.raises(ValueError, match="x must have shape"):
        BatchNormFunction.apply(x[0], None, None, 1e-5)


def test_empty_batch_like_torch():
    x = torch.randn(0, 3)
    rm, rv = torch.zeros(3), torch.ones(3)
    y = batch_norm(x, rm, rv, None, None, True)
    assert y.shape == (0, 3)
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))


# ---------------------------------------------------------------- non-finite input


def test_nan_or_inf_input_raises():
    x, w, b = _data((8, 3), torch.float32)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        batch_norm_train(x, w, b)
    x[2, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        batch_norm(x, None, None, w, b, True)
    with pytest.raises(ValueError, match="NaN or infinite"):
        layer_norm(x, 3)
    # unchecked, as torch: NaN propagates instead of an error
    y, _, _ = batch_norm_train(x, w, b, check_finite=False)
    assert torch.isnan(y[:, 1]).all()


def test_finite_input_whose_variance_overflows_raises_instead_of_returning_zeros():
    x = torch.tensor([[1e20], [-1e20], [3e19], [0.0]], dtype=torch.float32)
    assert (F.batch_norm(x, None, None, training=True) == 0).all()  # torch: silently all zeros
    with pytest.raises(ValueError, match="overflows torch.float32"):
        batch_norm_train(x)
    y, _, _ = batch_norm_train(x.double())  # float64 has the range: the right answer
    assert y.abs().max() > 1.0


def test_float32_large_mean_keeps_precision():
    """Welford statistics: a mean of 1e4 does not swamp a unit variance in float32."""
    g = torch.Generator().manual_seed(1)
    x64 = torch.randn(512, 4, generator=g, dtype=torch.float64) + 1e4
    y32, _, var32 = batch_norm_train(x64.float())
    y64, _, var64 = batch_norm_train(x64)
    torch.testing.assert_close(var32.double(), var64, rtol=1e-4, atol=0)
    torch.testing.assert_close(y32.double(), y64, rtol=0, atol=2e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    x, w, b = _data((16, 3, 4), torch.float32)
    xh = x.to(dtype).requires_grad_(True)
    y = BatchNormFunction.apply(xh, w, b, 1e-5)
    assert y.dtype == dtype
    ref = F.batch_norm(xh.detach().float(), None, None, w, b, True)
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)
    y.float().pow(2).sum().backward()
    assert xh.grad.dtype == dtype and torch.isfinite(xh.grad.float()).all()


# ---------------------------------------------------------------- layer norm


@pytest.mark.parametrize(
    "shape,normalized_shape",
    [((4, 5), 5), ((3, 4, 5), (5,)), ((2, 3, 4), (3, 4)), ((6,), 6)],
)
@pytest.mark.parametrize("affine", ["both", "weight_only", "none"])
def test_layernorm_function_gradcheck_and_matches_torch(shape, normalized_shape, affine):
    ns = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1
    w = torch.rand(ns, generator=g, dtype=torch.float64) + 0.5 if affine != "none" else None
    b = torch.randn(ns, generator=g, dtype=torch.float64) if affine == "both" else None
    leaves = [t.requires_grad_(True) for t in (x, w, b) if t is not None]

    def f(x, *p):
        wb = list(p) + [None] * (2 - len(p))
        return layer_norm(x, normalized_shape, wb[0], wb[1], 1e-5)

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6)
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad(f(*leaves), leaves, dy)
    ref_out = F.layer_norm(leaves[0], ns, w, b, 1e-5)
    ref = torch.autograd.grad(ref_out, leaves, dy)
    torch.testing.assert_close(f(*leaves), ref_out)
    for a, r in zip(ours, ref):
        torch.testing.assert_close(a, r)


def test_layer_norm_errors():
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"expected input with shape \[\*, 4\], but got input of size \[4, 5\]"):
        layer_norm(x, 4)
    with pytest.raises(ValueError, match="weight must have shape"):
        layer_norm(x, 5, torch.ones(4))
    with pytest.raises(ValueError, match="zero variance"):
        layer_norm(torch.ones(2, 5), 5, eps=0.0)
