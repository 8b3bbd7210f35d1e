"""bnlib.scratch layers, initialisers, losses and optimisers against PyTorch; an MLP
trained end to end on scikit-learn's digits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from sklearn.datasets import load_digits

from bnlib.scratch import (SGD, Adam, BatchNorm, Identity, LayerNorm, Linear, ReLU, Sequential,
                           Sigmoid, Tanh, init, mlp, mse_loss, numerical_gradient, rel_error,
                           softmax_cross_entropy)


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- BatchNorm

@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 5, 6)])
def test_batchnorm_layer_running_stats_match_torch(shape, momentum):
    rng = np.random.default_rng(0)
    C = shape[1]
    ours = BatchNorm(C, eps=1e-3, momentum=momentum)
    Module = torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d
    ref = Module(C, eps=1e-3, momentum=momentum).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(ours.gamma + 0.5))
        ref.bias.copy_(torch.tensor(ours.beta - 0.2))
    ours.gamma += 0.5
    ours.beta -= 0.2
    for step in range(5):
        x = 3.0 + (1 + step) * rng.standard_normal(shape)
        dy = rng.standard_normal(shape)
        y = ours.forward(x)
        dx = ours.backward(dy)
        xt = torch.tensor(x, requires_grad=True)
        ref.weight.grad = ref.bias.grad = None
        yt = ref(xt)
        yt.backward(torch.tensor(dy))
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ours.dgamma, ref.weight.grad.numpy(), rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(ours.dbeta, ref.bias.grad.numpy(), rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(ours.running_mean, ref.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(ours.running_var, ref.running_var.numpy(), rtol=1e-12)
        assert ours.num_batches_tracked == int(ref.num_batches_tracked) == step + 1
    # eval mode: running statistics, one example at a time is fine, gradients too
    assert ours.eval() is ours and not ours.training
    ref.eval()
    x = rng.standard_normal((1,) + shape[1:])
    dy = rng.standard_normal(x.shape)
    xt = torch.tensor(x, requires_grad=True)
    ref.weight.grad = ref.bias.grad = None
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(ours.forward(x), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.backward(dy), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.dgamma, ref.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.dbeta, ref.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
    before = ours.running_mean.copy()
    ours.forward(rng.standard_normal((4,) + shape[1:]))
    np.testing.assert_array_equal(ours.running_mean, before)    # eval does not update


def test_momentum_none_is_the_plain_average():
    rng = np.random.default_rng(1)
    bn = BatchNorm(3, momentum=None)
    batches = [rng.normal(k, 1 + k, (10, 3)) for k in range(4)]
    for xb in batches:
        bn.forward(xb)
    np.testing.assert_allclose(bn.running_mean, np.mean([b.mean(0) for b in batches], axis=0))
    np.testing.assert_allclose(bn.running_var, np.mean([b.var(0, ddof=1) for b in batches], axis=0))


def test_batchnorm_layer_errors_and_repr():
    bn = BatchNorm(4)
    assert repr(bn) == "BatchNorm(4, eps=1e-05, momentum=0.1)"
    assert bn.params()[0] is bn.gamma and bn.grads()[1] is bn.dbeta
    with pytest.raises(ValueError, match=r"BatchNorm\(4\) expects x of shape \(N, 4\)"):
        bn.forward(np.ones((5, 3)))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        bn.forward(np.ones((1, 4)))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        BatchNorm(2).backward(np.ones((3, 2)))
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(4, momentum=1.5)
    with pytest.raises(ValueError, match="num_features"):
        BatchNorm(0)


# ---------------------------------------------------------------- other layers

def test_layernorm_layer_matches_torch():
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((6, 7)), rng.standard_normal((6, 7))
    ours = LayerNorm(7)
    ours.gamma[:] = rng.uniform(0.5, 2, 7)
    ref = torch.nn.LayerNorm(7).double()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(ours.gamma))
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(ours.forward(x), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.backward(dy), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.dgamma, ref.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.dbeta, ref.bias.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.eval().forward(x[:1]), yt.detach().numpy()[:1], rtol=1e-10)
    assert repr(ours) == "LayerNorm(7, eps=1e-05)"
    with pytest.raises(ValueError, match=r"LayerNorm expects x of shape \(N, 7\)"):
        ours.forward(np.ones((2, 6)))


@pytest.mark.parametrize("layer,fn", [(ReLU(), torch.relu), (Tanh(), torch.tanh),
                                      (Sigmoid(), torch.sigmoid), (Identity(), lambda t: t)])
def test_activations_match_torch(layer, fn):
    x = np.array([[-800.0, -3.0, -0.5, 0.0], [0.3, 2.0, 40.0, 800.0]])
    dy = np.arange(8.0).reshape(2, 4) - 3
    xt = torch.tensor(x, requires_grad=True)
    yt = fn(xt)
    yt.backward(torch.tensor(dy))
    with np.errstate(over="raise", invalid="raise"):   # sigmoid must not overflow
        y = layer.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(layer.backward(dy), xt.grad.numpy(), rtol=1e-12, atol=1e-300)
    assert layer.params() == [] and repr(layer) == f"{type(layer).__name__}()"


def test_linear_matches_torch_and_numerical_gradient():
    rng = np.random.default_rng(3)
    lin = Linear(5, 4, rng=0)
    lin.b[:] = rng.standard_normal(4)
    x, dy = rng.standard_normal((6, 5)), rng.standard_normal((6, 4))
    y = lin.forward(x)
    dx = lin.backward(dy)
    xt, Wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, lin.W, lin.b))
    yt = xt @ Wt + bt
    yt.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12)
    for ours, theirs in ((dx, xt), (lin.dW, Wt), (lin.db, bt)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-12, atol=1e-12)

    def f():
        return float(np.sum(lin.forward(x) * dy))

    for name, arr, grad in (("dx", x, dx), ("dW", lin.W, lin.dW), ("db", lin.b, lin.db)):
        grad = grad.copy()
        err = rel_error(grad, numerical_gradient(f, arr))
        assert err < 1e-7, f"Linear {name}: rel error {err:.2e}"
    assert lin.params() == [lin.W, lin.b] and lin.grads() == [lin.dW, lin.db]
    assert repr(lin) == "Linear(5, 4, init='lecun_normal')"
    nobias = Linear(5, 4, bias=False, init="xavier_uniform", rng=1)
    assert nobias.b is None and len(nobias.params()) == 1 and "bias=False" in repr(nobias)
    with pytest.raises(ValueError, match=r"expects x of shape \(N, 5\)"):
        lin.forward(np.ones((2, 4)))


def test_sequential_numerical_gradient_with_bn_and_ln():
    rng = np.random.default_rng(4)
    net = Sequential(Linear(4, 5, rng=1), BatchNorm(5), Tanh(), Linear(5, 5, rng=2),
                     LayerNorm(5), Sigmoid(), Linear(5, 3, rng=3))
    for layer in net:
        for p in layer.params():
            p += 0.1 * rng.standard_normal(p.shape)
    x, labels = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    loss, dlogits = softmax_cross_entropy(net.forward(x), labels)
    net.backward(dlogits)
    grads = [g.copy() for g in net.grads()]

    def f():
        return softmax_cross_entropy(net.forward(x), labels)[0]

    for i, (p, g) in enumerate(zip(net.params(), grads)):
        num = numerical_gradient(f, p)
        if i == 1:   # the bias of the Linear before BN: BN removes it, its gradient is 0
            assert np.abs(g).max() < 1e-14 and np.abs(num).max() < 1e-9
            continue
        err = rel_error(g, num)
        assert err < 1e-7, f"parameter {i} of {net}: rel error {err:.2e}"


def test_mlp_structure():
    net = mlp([4, 8, 6, 3], activation="tanh", norm="bn", rng=0)
    kinds = [type(layer).__name__ for layer in net]
    assert kinds == ["Linear", "BatchNorm", "Tanh", "Linear", "BatchNorm", "Tanh", "Linear"]
    after = mlp([4, 8, 3], norm="ln", norm_position="after")
    assert [type(layer).__name__ for layer in after] == ["Linear", "ReLU", "LayerNorm", "Linear"]
    plain = mlp([4, 8, 3], activation="identity", init="kaiming_normal", bias=False)
    assert [type(layer).__name__ for layer in plain] == ["Linear", "Identity", "Linear"]
    assert len(plain.params()) == 2 and len(net.params()) == 10
    assert isinstance(net[1:3], Sequential) and len(net) == 7
    assert net.eval() is net and not net[1].training
    net.train()
    assert net[1].training
    assert "(1): BatchNorm(8" in repr(net)
    same = mlp([4, 8, 6, 3], activation="tanh", norm="bn", rng=0)
    assert all(np.array_equal(a, b) for a, b in zip(net.params(), same.params()))
    custom = mlp([3, 2], init=init.constant_normal(0.01), rng=np.random.default_rng(0))
    assert custom[0].W.std() < 0.05
    for kwargs, msg in (({"activation": "elu"}, "activation"), ({"norm": "gn"}, "norm"),
                        ({"norm_position": "middle"}, "norm_position"),
                        ({"init": "he"}, "unknown initialiser")):
        with pytest.raises(ValueError, match=msg):
            mlp([4, 8, 3], **kwargs)
    with pytest.raises(ValueError, match="sizes"):
        mlp([4])


# ---------------------------------------------------------------- init

@pytest.mark.parametrize("name,var", [
    ("standard_normal", lambda i, o: 1.0), ("lecun_normal", lambda i, o: 1 / i),
    ("xavier_normal", lambda i, o: 2 / (i + o)), ("xavier_uniform", lambda i, o: 2 / (i + o)),
    ("kaiming_normal", lambda i, o: 2 / i)])
def test_initializer_variances(name, var):
    n_in, n_out = 400, 300
    W = init.get(name)(n_in, n_out, np.random.default_rng(0))
    assert W.shape == (n_in, n_out)
    assert W.var() == pytest.approx(var(n_in, n_out), rel=0.02)
    assert abs(W.mean()) < 0.01 * np.sqrt(var(n_in, n_out)) * 5
    assert np.array_equal(init.get(name)(3, 2, 7), init.get(name)(3, 2, 7))   # int seed


def test_init_helpers():
    assert init.get(init.lecun_normal) is init.lecun_normal
    W = init.constant_normal(0.01)(200, 200, 0)
    assert W.std() == pytest.approx(0.01, rel=0.02)
    assert abs(init.xavier_uniform(50, 50, 0)).max() <= np.sqrt(6 / 100)
    with pytest.raises(ValueError, match="unknown initialiser 'glorot'"):
        init.get("glorot")
    with pytest.raises(ValueError, match="n_in must be a positive integer"):
        init.lecun_normal(0, 3)
    with pytest.raises(ValueError, match="std must be positive"):
        init.constant_normal(0)


# ---------------------------------------------------------------- losses

def test_softmax_cross_entropy_matches_torch():
    rng = np.random.default_rng(5)
    logits = 5 * rng.standard_normal((7, 4))
    logits[0] = [1000.0, -1000.0, 0.0, 3.0]                      # no overflow
    labels = rng.integers(0, 4, 7)
    loss, grad = softmax_cross_entropy(logits, labels)
    lt = torch.tensor(logits, requires_grad=True)
    ref = TF.cross_entropy(lt, torch.tensor(labels))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, lt.grad.numpy(), rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match=r"labels must lie in 0..3"):
        softmax_cross_entropy(logits, np.full(7, 4))
    with pytest.raises(ValueError, match=r"labels must have shape \(7,\)"):
        softmax_cross_entropy(logits, np.zeros(6, dtype=int))
    with pytest.raises(ValueError, match="integer class indices"):
        softmax_cross_entropy(logits, np.full(7, 0.5))


def test_mse_loss_matches_torch_convention():
    rng = np.random.default_rng(6)
    pred, target = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    loss, grad = mse_loss(pred, target)
    pt = torch.tensor(pred, requires_grad=True)
    ref = 0.5 * TF.mse_loss(pt, torch.tensor(target), reduction="sum") / 5
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-12)
    assert loss == pytest.approx(TF.mse_loss(pt, torch.tensor(target)).item() * 3 / 2)
    with pytest.raises(ValueError, match="same shape"):
        mse_loss(pred, target[:4])


# ---------------------------------------------------------------- optimisers

@pytest.mark.parametrize("make", [
    (lambda p: SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda p: SGD(p, lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    (lambda p: Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    (lambda p: Adam(p, lr=0.1, betas=(0.8, 0.99), eps=1e-6),
     lambda p: torch.optim.Adam(p, lr=0.1, betas=(0.8, 0.99), eps=1e-6)),
])
def test_optimizers_match_torch(make):
    ours_make, torch_make = make
    rng = np.random.default_rng(7)
    params = [rng.standard_normal((3, 2)), rng.standard_normal(2)]
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    ours, theirs = ours_make(params), torch_make(tparams)
    for _ in range(6):
        grads = [rng.standard_normal(p.shape) for p in params]
        ours.step(grads)
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g)
        theirs.step()
        for p, tp in zip(params, tparams):
            np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_optimizer_errors():
    p = [np.zeros(3)]
    with pytest.raises(ValueError, match="lr must be positive"):
        SGD(p, lr=0)
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(2,\), params\[0\] \(3,\)"):
        SGD(p, lr=0.1).step([np.zeros(2)])
    with pytest.raises(ValueError, match="got 2 gradients for 1 parameters"):
        Adam(p).step([np.zeros(3), np.zeros(3)])
    with pytest.raises(ValueError, match="float numpy array"):
        SGD([np.zeros(3, dtype=int)], lr=0.1)


# ---------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = d.data / 16.0
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], d.target[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.mark.parametrize("norm,opt", [(None, "sgd"), ("bn", "sgd"), ("ln", "sgd"), ("bn", "adam")])
def test_mlp_learns_digits(digits, norm, opt):
    x_train, y_train, x_test, y_test = digits
    net = mlp([64, 64, 32, 10], activation="relu", norm=norm, rng=0)
    optimizer = SGD(net.params(), lr=0.1, momentum=0.9) if opt == "sgd" else Adam(net.params(), lr=3e-3)
    rng = np.random.default_rng(1)
    first, _ = softmax_cross_entropy(net.forward(x_train), y_train)
    for epoch in range(6):
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), 50):
            idx = order[i:i + 50]
            loss, dlogits = softmax_cross_entropy(net.forward(x_train[idx]), y_train[idx])
            net.backward(dlogits)
            optimizer.step(net.grads())
    net.eval()
    last, _ = softmax_cross_entropy(net.forward(x_train), y_train)
    acc = np.mean(net.forward(x_test).argmax(1) == y_test)
    assert last < 0.2 * first, f"norm={norm}: loss {first:.3f} -> {last:.3f}"
    assert acc > 0.9, f"norm={norm}: test accuracy {acc:.3f}"


def test_eval_backward_keeps_float32():
    """Issue 13: eval-mode backward of the scratch BatchNorm returned float64 for float32 input."""
    from bnlib.scratch import BatchNorm

    bn = BatchNorm(3)
    bn.forward(np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32))
    bn.eval()
    x = np.ones((2, 3), dtype=np.float32)
    y = bn.forward(x)
    dx = bn.backward(np.ones_like(y))
    assert y.dtype == np.float32 and dx.dtype == np.float32


def test_batchnorm_eval_rejects_eps_that_divides_by_zero():
    from bnlib.scratch import batchnorm_eval

    x, ones, zeros = np.ones((2, 3)), np.ones(3), np.zeros(3)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        batchnorm_eval(x, ones, zeros, zeros, ones, eps=-1e-5)
    with pytest.raises(ValueError, match="running_var \\+ eps must be > 0"):
        batchnorm_eval(x, ones, zeros, zeros, zeros, eps=0.0)
    assert np.isfinite(batchnorm_eval(x, ones, zeros, zeros, ones, eps=0.0)).all()


@pytest.mark.parametrize("build, error", [
    ("LayerNorm(4.7)", TypeError), ("LayerNorm('45')", TypeError),
    ("LayerNorm(3, eps=-1)", ValueError), ("BatchNorm(True)", TypeError),
    ("BatchNorm(0)", ValueError), ("BatchNorm(3, momentum=1.5)", ValueError),
])
def test_scratch_constructor_arguments_are_validated(build, error):
    from bnlib.scratch import BatchNorm, LayerNorm  # noqa: F401 - used by eval

    with pytest.raises(error):
        eval(build)
