"""bnlib.scratch.conv: NumPy convolution and the conv-BN-ReLU block against PyTorch autograd."""
from __future__ import annotations

import numpy as np
import pytest

from bnlib.scratch import rel_error
from bnlib.scratch.conv import (conv2d_backward, conv2d_forward, conv_bn_relu_backward,
                                conv_bn_relu_forward, conv_relu_backward, conv_relu_forward)
from bnlib.scratch.gradcheck import numerical_gradient

torch = pytest.importorskip("torch")
F = torch.nn.functional

CASES = [  # N, C, H, W, filters, kernel, stride, padding
    (4, 3, 7, 6, 5, 3, 1, 1),
    (2, 2, 9, 9, 4, 3, 2, 0),
    (3, 1, 8, 8, 2, 5, 1, 2),
    (2, 2, 6, 7, 3, 2, 2, 1),
]


def _t(a):
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("case", CASES)
def test_conv2d_matches_torch(case):
    N, C, H, W, Fn, k, s, p = case
    r = np.random.default_rng(sum(case))
    x, w, b = r.normal(size=(N, C, H, W)), r.normal(size=(Fn, C, k, k)), r.normal(size=Fn)
    out, cache = conv2d_forward(x, w, b, s, p)
    xt, wt, bt = _t(x), _t(w), _t(b)
    ot = F.conv2d(xt, wt, bt, s, p)
    dout = r.normal(size=out.shape)
    ot.backward(torch.tensor(dout))
    dx, dw, db = conv2d_backward(dout, cache)
    assert out.shape == tuple(ot.shape)
    for ours, theirs in [(out, ot), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)]:
        assert rel_error(ours, theirs.detach().numpy()) < 1e-12


@pytest.mark.parametrize("case", CASES[:3])
def test_conv_bn_relu_block_matches_torch(case):
    N, C, H, W, Fn, k, s, p = case
    r = np.random.default_rng(10 + sum(case))
    x, w = r.normal(size=(N, C, H, W)) * 2 + 1, r.normal(size=(Fn, C, k, k))
    g, be = r.normal(size=Fn), r.normal(size=Fn)
    a, cache = conv_bn_relu_forward(x, w, g, be, s, p)
    xt, wt, gt, bt = _t(x), _t(w), _t(g), _t(be)
    at = F.relu(F.batch_norm(F.conv2d(xt, wt, None, s, p), None, None, gt, bt, training=True,
                             eps=1e-5))
    da = r.normal(size=a.shape)
    at.backward(torch.tensor(da))
    grads = conv_bn_relu_backward(da, cache)
    assert rel_error(a, at.detach().numpy()) < 1e-12
    for ours, theirs in zip(grads, (xt, wt, gt, bt)):
        assert rel_error(ours, theirs.grad.numpy()) < 1e-10
    # BN2d statistics run over N, H, W: every channel of y has mean beta
    assert np.allclose(cache["y"].mean(axis=(0, 2, 3)), be, atol=1e-12)


def test_conv_relu_block_matches_torch():
    r = np.random.default_rng(3)
    x, w, b = r.normal(size=(2, 3, 5, 5)), r.normal(size=(4, 3, 3, 3)), r.normal(size=4)
    a, cache = conv_relu_forward(x, w, b, 1, 1)
    xt, wt, bt = _t(x), _t(w), _t(b)
    at = F.relu(F.conv2d(xt, wt, bt, 1, 1))
    da = r.normal(size=a.shape)
    at.backward(torch.tensor(da))
    for ours, theirs in zip(conv_relu_backward(da, cache), (xt, wt, bt)):
        assert rel_error(ours, theirs.grad.numpy()) < 1e-12


def test_conv_bn_relu_numerical_gradient():
    r = np.random.default_rng(4)
    x, w = r.normal(size=(2, 2, 4, 4)), r.normal(size=(3, 2, 3, 3))
    g, be = r.normal(size=3), r.normal(size=3) + 0.5
    a, cache = conv_bn_relu_forward(x, w, g, be, 1, 1)
    da = r.normal(size=a.shape)
    dx, dw, dg, db = conv_bn_relu_backward(da, cache)
    loss = lambda: np.sum(da * conv_bn_relu_forward(x, w, g, be, 1, 1)[0])
    for ours, arr in [(dx, x), (dw, w), (dg, g), (db, be)]:
        assert rel_error(ours, numerical_gradient(loss, arr)) < 1e-6


def test_conv_bias_before_bn_gets_no_gradient():
    # section 3.3 for convolutions: sum over N, H, W of dz is zero per channel
    r = np.random.default_rng(5)
    x, w = r.normal(size=(3, 2, 5, 5)), r.normal(size=(4, 2, 3, 3))
    a, cache = conv_bn_relu_forward(x, w, np.ones(4), np.full(4, 0.3), 1, 1)
    from bnlib.scratch import batchnorm_backward
    dz, _, _ = batchnorm_backward(r.normal(size=a.shape) * (cache["y"] > 0), cache["bn"])
    assert np.allclose(dz.sum(axis=(0, 2, 3)), 0.0, atol=1e-12)


def test_conv_float32_stays_float32():
    x, w = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32)
    out, cache = conv2d_forward(x, w)
    assert out.dtype == np.float32 and out.shape == (1, 1, 2, 2) and np.all(out == 9)
    dx, dw, db = conv2d_backward(np.ones_like(out), cache)
    assert dx.dtype == np.float32 and db is None


@pytest.mark.parametrize("args, match", [
    ((np.ones((2, 3, 4)), np.ones((1, 3, 3, 3))), "x must have shape"),
    ((np.ones((1, 3, 4, 4)), np.ones((1, 2, 3, 3))), "w must have shape"),
    ((np.ones((1, 1, 4, 4)), np.ones((2, 1, 3, 3)), np.ones(3)), "b must have shape"),
    ((np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3))), "larger than"),
])
def test_conv_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        conv2d_forward(*args)


def _torch_copy(net):
    """A float64 PyTorch network with the parameters of a bnlib.scratch CNN."""
    from torch import nn

    from bnlib.scratch import BatchNorm, Linear, ReLU
    from bnlib.scratch.conv import Conv2d, GlobalAvgPool

    layers = []
    for layer in net:
        if isinstance(layer, Conv2d):
            f, c, k, _ = layer.w.shape
            conv = nn.Conv2d(c, f, k, layer.stride, layer.padding, bias=layer.b is not None)
            conv.weight.data = torch.tensor(layer.w)
            layers.append(conv)
        elif isinstance(layer, BatchNorm):
            bn = nn.BatchNorm2d(layer.num_features)
            bn.weight.data, bn.bias.data = torch.tensor(layer.gamma), torch.tensor(layer.beta)
            layers.append(bn)
        elif isinstance(layer, ReLU):
            layers.append(nn.ReLU())
        elif isinstance(layer, GlobalAvgPool):
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif isinstance(layer, Linear):
            lin = nn.Linear(layer.n_in, layer.n_out)
            lin.weight.data, lin.bias.data = torch.tensor(layer.W.T.copy()), torch.tensor(layer.b)
            layers.append(lin)
    return nn.Sequential(*layers).double()


def test_scratch_cnn_trains_like_pytorch():
    from bnlib.scratch import BatchNorm, Linear, ReLU, Sequential
    from bnlib.scratch.conv import Conv2d, GlobalAvgPool
    from bnlib.training import fit

    r = np.random.default_rng(0)
    x = r.normal(size=(64, 1, 6, 6))
    y = r.integers(0, 3, size=64)
    net = Sequential(Conv2d(1, 4, 3, padding=1, bias=False, rng=r), BatchNorm(4), ReLU(),
                     GlobalAvgPool(), Linear(4, 3, rng=r))
    copy = _torch_copy(net)
    kw = dict(steps=8, batch_size=16, lr=0.1, optimizer_kwargs={"momentum": 0.9}, threads=1)
    h_np, h_t = fit(net, x, y, rng=1, **kw), fit(copy, x, y, rng=1, **kw)
    assert np.allclose(h_np.loss, h_t.loss, rtol=1e-12, atol=1e-12)
    assert rel_error(net[0].w, copy[0].weight.detach().numpy()) < 1e-12
    assert rel_error(net[1].running_var, copy[1].running_var.numpy()) < 1e-12
    net.eval(), copy.eval()
    assert rel_error(net.forward(x), copy(torch.tensor(x)).detach().numpy()) < 1e-12


def test_layers_reject_bad_shapes():
    from bnlib.scratch.conv import Conv2d, GlobalAvgPool

    with pytest.raises(ValueError, match="w must have shape"):
        Conv2d(1, 2, 3, w=np.ones((2, 1, 2, 2)))
    with pytest.raises(ValueError, match="GlobalAvgPool"):
        GlobalAvgPool().forward(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="before forward"):
        Conv2d(1, 2, 3).backward(np.ones((1, 2, 1, 1)))
