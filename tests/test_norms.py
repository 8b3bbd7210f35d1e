"""Group, instance, layer and RMS normalisation (chapter 6) against PyTorch and numerical gradients."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlib import scratch
from bnlib.scratch import (GroupNorm, InstanceNorm, LayerNorm, RMSNorm, groupnorm_backward,
                           groupnorm_forward, instancenorm_backward, instancenorm_forward,
                           layernorm_backward, layernorm_forward, numerical_gradient, rel_error,
                           rmsnorm_backward, rmsnorm_forward)

TF = torch.nn.functional


def _torch_grads(fn, x, *params, dy):
    xt = torch.tensor(x, requires_grad=True)
    pts = [torch.tensor(p, requires_grad=True) for p in params]
    y = fn(xt, *pts)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), xt.grad.numpy(), [p.grad.numpy() for p in pts]


@pytest.mark.parametrize("shape,groups", [((4, 6, 3, 5), 3), ((3, 8), 2), ((2, 6, 7), 6),
                                          ((5, 4, 2, 2), 1), ((2, 4, 3, 3), 4)])
def test_groupnorm_matches_torch(shape, groups):
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=shape)
    C = shape[1]
    gamma, beta, dy = rng.normal(size=C), rng.normal(size=C), rng.normal(size=shape)
    y, cache = groupnorm_forward(x, gamma, beta, groups)
    dx, dgamma, dbeta = groupnorm_backward(dy, cache)
    y_t, dx_t, (dg_t, db_t) = _torch_grads(
        lambda a, g, b: TF.group_norm(a, groups, g, b, 1e-5), x, gamma, beta, dy=dy)
    assert np.abs(y - y_t).max() < 1e-12
    assert rel_error(dx, dx_t) < 1e-12
    assert rel_error(dgamma, dg_t) < 1e-12 and rel_error(dbeta, db_t) < 1e-12
    assert cache["mu"].shape == (shape[0], groups)


def test_instancenorm_matches_torch():
    rng = np.random.default_rng(2)
    x = rng.normal(-1.0, 2.0, size=(3, 5, 4, 4))
    gamma, beta, dy = rng.normal(size=5), rng.normal(size=5), rng.normal(size=x.shape)
    y, cache = instancenorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = instancenorm_backward(dy, cache)
    y_t, dx_t, (dg_t, db_t) = _torch_grads(
        lambda a, g, b: TF.instance_norm(a, weight=g, bias=b, eps=1e-5), x, gamma, beta, dy=dy)
    assert np.abs(y - y_t).max() < 1e-12
    assert rel_error(dx, dx_t) < 1e-12 and rel_error(dgamma, dg_t) < 1e-12
    assert rel_error(dbeta, db_t) < 1e-12
    # instance norm = group norm with one channel per group; layer norm = one group
    y_gn, _ = groupnorm_forward(x, gamma, beta, 5)
    assert np.array_equal(y, y_gn)


def test_groupnorm_with_one_group_is_layernorm_with_per_channel_affine():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 6, 3, 3))
    y_gn, _ = groupnorm_forward(x, np.ones(6), np.zeros(6), 1)
    y_ln, _ = layernorm_forward(x, np.ones((6, 3, 3)), np.zeros((6, 3, 3)))
    assert np.abs(y_gn - y_ln).max() < 1e-12


def test_layernorm_matches_torch_4d():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 4, 2, 5))
    gamma, beta, dy = rng.normal(size=x.shape[1:]), rng.normal(size=x.shape[1:]), rng.normal(size=x.shape)
    y, cache = layernorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = layernorm_backward(dy, cache)
    y_t, dx_t, (dg_t, db_t) = _torch_grads(
        lambda a, g, b: TF.layer_norm(a, x.shape[1:], g, b, 1e-5), x, gamma, beta, dy=dy)
    assert np.abs(y - y_t).max() < 1e-12
    assert rel_error(dx, dx_t) < 1e-12 and rel_error(dgamma, dg_t) < 1e-12
    assert rel_error(dbeta, db_t) < 1e-12


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 2, 2)])
def test_rmsnorm_matches_torch_module(shape):
    assert hasattr(torch.nn, "RMSNorm")
    rng = np.random.default_rng(5)
    x = rng.normal(0.5, 2.0, size=shape)
    gamma, dy = rng.normal(size=shape[1:]), rng.normal(size=shape)
    y, cache = rmsnorm_forward(x, gamma, eps=1e-5)
    dx, dgamma = rmsnorm_backward(dy, cache)
    module = torch.nn.RMSNorm(shape[1:], eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(gamma))
    xt = torch.tensor(x, requires_grad=True)
    yt = module(xt)
    yt.backward(torch.tensor(dy))
    assert np.abs(y - yt.detach().numpy()).max() < 1e-12
    assert rel_error(dx, xt.grad.numpy()) < 1e-12
    assert rel_error(dgamma, module.weight.grad.numpy()) < 1e-12


def _check_numerical(forward, backward, x, params, rng):
    dy = rng.normal(size=x.shape)

    def loss():
        return float(np.sum(forward(x, *params)[0] * dy))

    grads = backward(dy, forward(x, *params)[1])
    assert rel_error(grads[0], numerical_gradient(loss, x)) < 1e-8
    for p, g in zip(params, grads[1:]):
        assert rel_error(g, numerical_gradient(loss, p)) < 1e-8


def test_numerical_gradients():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 4, 2, 3))
    _check_numerical(lambda a, g, b: groupnorm_forward(a, g, b, 2), groupnorm_backward,
                     x, [rng.normal(size=4), rng.normal(size=4)], rng)
    _check_numerical(instancenorm_forward, instancenorm_backward,
                     x, [rng.normal(size=4), rng.normal(size=4)], rng)
    _check_numerical(rmsnorm_forward, rmsnorm_backward, rng.normal(size=(4, 6)),
                     [rng.normal(size=6)], rng)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), groups=st.integers(1, 3), per=st.integers(1, 3),
       hw=st.integers(1, 3), scale=st.floats(1e-2, 1e3), seed=st.integers(0, 10**6))
def test_groupnorm_property_matches_torch(n, groups, per, hw, scale, seed):
    C = groups * per
    if per * hw * hw == 1:
        return                                  # one value per group: refused (tested below)
    rng = np.random.default_rng(seed)
    x = scale * rng.normal(size=(n, C, hw, hw))
    gamma, beta = rng.normal(size=C), rng.normal(size=C)
    y, _ = groupnorm_forward(x, gamma, beta, groups)
    y_t = TF.group_norm(torch.tensor(x), groups, torch.tensor(gamma), torch.tensor(beta), 1e-5)
    assert np.abs(y - y_t.numpy()).max() < 1e-9


def test_bad_input_is_refused():
    x = np.zeros((2, 6, 3, 3))
    with pytest.raises(ValueError, match="num_groups=4 must divide"):
        groupnorm_forward(x, np.ones(6), np.zeros(6), 4)
    with pytest.raises(ValueError, match="num_groups must be a positive integer"):
        groupnorm_forward(x, np.ones(6), np.zeros(6), 0)
    with pytest.raises(ValueError, match="gamma must have shape"):
        groupnorm_forward(x, np.ones(5), np.zeros(6), 3)
    with pytest.raises(ValueError, match="channel axis"):
        groupnorm_forward(np.zeros(6), np.ones(6), np.zeros(6), 3)
    with pytest.raises(ValueError, match="single value"):
        groupnorm_forward(np.zeros((2, 6)), np.ones(6), np.zeros(6), 6)
    with pytest.raises(ValueError, match="spatial axes"):
        instancenorm_forward(np.zeros((2, 6)), np.ones(6), np.zeros(6))
    with pytest.raises(ValueError, match="gamma must have shape"):
        rmsnorm_forward(np.zeros((2, 6)), np.ones(5))
    with pytest.raises(ValueError, match="batch axis"):
        rmsnorm_forward(np.zeros(6), np.ones(6))
    with pytest.raises(ValueError, match="non-finite"):
        rmsnorm_forward(np.array([[1.0, np.nan]]), np.ones(2))
    with pytest.raises(ValueError, match="dy must have"):
        _, cache = rmsnorm_forward(np.ones((2, 3)), np.ones(3))
        rmsnorm_backward(np.ones((3, 3)), cache)
    with pytest.raises(ValueError, match="dividing"):
        GroupNorm(4, 6)
    with pytest.raises(ValueError, match="expects x of shape"):
        GroupNorm(2, 6).forward(np.zeros((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="spatial axes"):
        InstanceNorm(6).forward(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="RMSNorm expects"):
        RMSNorm(5).forward(np.zeros((2, 6)))
    with pytest.raises(RuntimeError, match="before forward"):
        RMSNorm(5).backward(np.zeros((2, 5)))


def test_layers_match_torch_modules_and_train():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 6, 3, 3))
    dy = rng.normal(size=x.shape)
    cases = [(GroupNorm(3, 6), torch.nn.GroupNorm(3, 6)),
             (InstanceNorm(6), torch.nn.InstanceNorm2d(6, affine=True)),
             (RMSNorm((6, 3, 3)), torch.nn.RMSNorm((6, 3, 3), eps=1e-5)),
             (LayerNorm((6, 3, 3)), torch.nn.LayerNorm((6, 3, 3)))]
    for ours, ref in cases:
        ref = ref.double()
        with torch.no_grad():
            for p_ours, p_ref in zip(ours.params(), ref.parameters()):
                p_ours[...] = rng.normal(size=p_ours.shape)
                p_ref.copy_(torch.tensor(p_ours))
        for mode in ("train", "eval"):          # no running statistics: the same in both modes
            getattr(ours, mode)()
            getattr(ref, mode)()
            xt = torch.tensor(x, requires_grad=True)
            y_ref = ref(xt)
            y_ref.backward(torch.tensor(dy))
            y = ours.forward(x)
            dx = ours.backward(dy)
            assert np.abs(y - y_ref.detach().numpy()).max() < 1e-12, ours
            assert rel_error(dx, xt.grad.numpy()) < 1e-12, ours
            for g, p_ref in zip(ours.grads(), ref.parameters()):
                assert rel_error(g, p_ref.grad.numpy()) < 1e-12, ours
                p_ref.grad = None
        assert len(ours.params()) == len(ours.grads())
        assert repr(ours)


def test_layers_in_sequential_train_a_step():
    rng = np.random.default_rng(8)
    net = scratch.Sequential(scratch.Linear(5, 8, rng=1), GroupNorm(2, 8), scratch.ReLU(),
                             scratch.Linear(8, 6, rng=2), RMSNorm(6), scratch.Linear(6, 3, rng=3))
    x, y = rng.normal(size=(16, 5)), rng.integers(0, 3, size=16)
    opt = scratch.SGD(net.params(), lr=0.1)
    losses = []
    for _ in range(30):
        loss, dlogits = scratch.softmax_cross_entropy(net.forward(x), y)
        net.backward(dlogits)
        opt.step(net.grads())
        losses.append(loss)
    assert losses[-1] < 0.7 * losses[0]


def test_float32_stays_float32():
    x = np.random.default_rng(9).normal(size=(2, 4, 3)).astype(np.float32)
    y, cache = groupnorm_forward(x, np.ones(4), np.zeros(4), 2)
    assert y.dtype == np.float32
    dx, dg, db = groupnorm_backward(np.ones_like(x), cache)
    assert dx.dtype == np.float32
    y, cache = rmsnorm_forward(x, np.ones((4, 3)))
    assert y.dtype == np.float32 and rmsnorm_backward(np.ones_like(x), cache)[0].dtype == np.float32


def test_weightnorm_gradients_match_numerical_and_paper_properties():
    from bnlib.scratch.weightnorm import WeightNormLinear, weightnorm_backward, weightnorm_forward

    rng = np.random.default_rng(5)
    v, g, dw = rng.normal(size=(6, 4)), rng.normal(size=4), rng.normal(size=(6, 4))
    w, cache = weightnorm_forward(v, g)
    assert np.allclose(np.linalg.norm(w, axis=0), np.abs(g))            # ||w|| = |g|
    assert np.allclose(weightnorm_forward(3.0 * v, g)[0], w)           # v's scale does not matter
    dv, dg = weightnorm_backward(dw, cache)
    f = lambda: float((weightnorm_forward(v, g)[0] * dw).sum())        # noqa: E731
    assert scratch.rel_error(dv, scratch.numerical_gradient(f, v)) < 1e-8
    assert scratch.rel_error(dg, scratch.numerical_gradient(f, g)) < 1e-8
    assert np.allclose((dv * v).sum(axis=0), 0, atol=1e-12)            # dL/dv is orthogonal to v
    # against torch's weight_norm parametrisation (dim=1: one norm per column of our (n_in, n_out))
    vt, gt = torch.tensor(v, requires_grad=True), torch.tensor(g, requires_grad=True)
    wt = torch._weight_norm(vt, gt.reshape(1, -1), 1)
    (wt * torch.tensor(dw)).sum().backward()
    assert np.allclose(wt.detach().numpy(), w) and np.allclose(vt.grad.numpy(), dv)
    assert np.allclose(gt.grad.numpy(), dg)
    # the layer: backward through x, v, g and b, and the data-dependent initialisation
    layer = WeightNormLinear(6, 4, rng=1)
    x, dy = rng.normal(size=(20, 6)), rng.normal(size=(20, 4))
    z = layer.data_dependent_init(x)
    assert np.allclose(z.mean(axis=0), 0, atol=1e-12) and np.allclose(z.std(axis=0), 1)
    layer.forward(x)
    dx = layer.backward(dy)
    for p, grad in zip(layer.params(), layer.grads()):
        num = scratch.numerical_gradient(lambda: float((layer.forward(x) * dy).sum()), p)
        assert scratch.rel_error(grad, num) < 1e-8
    num_x = scratch.numerical_gradient(lambda: float((layer.forward(x) * dy).sum()), x)
    assert scratch.rel_error(dx, num_x) < 1e-8
    with pytest.raises(ValueError, match="zero"):
        weightnorm_forward(np.zeros((3, 2)), np.ones(2))
    with pytest.raises(ValueError, match="expects x"):
        layer.forward(np.ones((2, 5)))
