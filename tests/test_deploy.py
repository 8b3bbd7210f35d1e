"""Chapter 5's inference tools against PyTorch: folding, recomputed statistics, mode checks, freezing."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import bnlib.torch as bt
from bnlib import scratch
from bnlib.scratch import running
from bnlib.training import to_torch

torch.set_num_threads(1)


def _trained_stats(model, shape, steps=5, seed=0, dtype=torch.float64):
    """Give every BN non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if bt.deploy.is_batchnorm(m) and m.weight is not None:
                m.weight.copy_(1 + 0.5 * torch.rand(m.weight.shape, generator=g, dtype=dtype))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=dtype))
        model.train()
        for _ in range(steps):
            model(3 + 2 * torch.randn(shape, generator=g, dtype=dtype))
    return model.eval()


def _mlp(bn_cls, dtype, bias=True, affine=True):
    return nn.Sequential(
        nn.Linear(6, 8, bias=bias), bn_cls(8, affine=affine), nn.ReLU(),
        nn.Sequential(nn.Linear(8, 5), bn_cls(5)), nn.Tanh(),
        nn.Linear(5, 3)).to(dtype)


def _cnn(bn_cls, dtype, bias=True, affine=True):
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=bias), bn_cls(4, affine=affine), nn.ReLU(),
        nn.Conv2d(4, 6, 3, groups=2), bn_cls(6), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 5 * 5, 7), nn.BatchNorm1d(7)).to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("bn_kind", ["torch", "bnlib"])
@pytest.mark.parametrize("bias,affine", [(True, True), (False, True), (True, False)])
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_fold_batchnorm_equals_eval_mode(dtype, tol, bn_kind, bias, affine, net):
    torch.manual_seed(0)
    if net == "mlp":
        bn_cls = nn.BatchNorm1d if bn_kind == "torch" else bt.BatchNorm1d
        model, shape = _mlp(bn_cls, dtype, bias, affine), (16, 6)
    else:
        bn_cls = nn.BatchNorm2d if bn_kind == "torch" else bt.BatchNorm2d
        model, shape = _cnn(bn_cls, dtype, bias, affine), (8, 3, 7, 7)
    _trained_stats(model, shape, dtype=dtype)
    before = copy.deepcopy(model.state_dict())
    model.train()                                     # folding must not care about the mode
    folded = bt.fold_batchnorm(model)
    assert model.training                             # the original is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not folded.training
    assert bt.deploy._batchnorms(folded) == []        # every BN is gone
    assert len(list(folded.modules())) < len(list(model.modules()))
    x = torch.randn((5,) + shape[1:], dtype=dtype) * 2 + 1
    model.eval()
    with torch.no_grad():
        ref, got = model(x), folded(x)
    assert got.dtype == dtype
    scale = ref.abs().max().item()
    assert (got - ref).abs().max().item() <= tol * max(1.0, scale)
    # a single example works and matches too
    with torch.no_grad():
        torch.testing.assert_close(folded(x[:1]), model(x[:1]), rtol=tol * 10, atol=tol * 10)


def test_fold_keeps_bn_it_cannot_fold_and_names():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4),      # BN after ReLU
                          nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False))
    _trained_stats(model, (10, 4), dtype=torch.float32)
    folded = bt.fold_batchnorm(model)
    names = [n for n, _ in folded.named_children()]
    assert names == ["0", "1", "2", "3", "4"]
    assert isinstance(folded[2], nn.BatchNorm1d) and isinstance(folded[4], nn.BatchNorm1d)
    model2 = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    _trained_stats(model2, (10, 4), dtype=torch.float32)
    names2 = [n for n, _ in bt.fold_batchnorm(model2).named_children()]
    assert names2 == ["0", "2", "3"]
    with pytest.raises(ValueError, match="track_running_stats"):
        bt.deploy.fold_into(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="features"):
        bt.deploy.fold_into(nn.Linear(3, 4), nn.BatchNorm1d(3))


def test_fold_linear_bn_formula_matches_torch():
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(6, 4)), rng.normal(size=4)
    gamma, beta = rng.uniform(0.5, 2, 4), rng.normal(size=4)
    mean, var = rng.normal(size=4), rng.uniform(0.1, 3, 4)
    W2, b2 = scratch.fold_linear_bn(W, b, gamma, beta, mean, var, eps=1e-3)
    lin, bn = nn.Linear(6, 4).double(), nn.BatchNorm1d(4, eps=1e-3).double().eval()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(W.T)), lin.bias.copy_(torch.tensor(b))
        bn.weight.copy_(torch.tensor(gamma)), bn.bias.copy_(torch.tensor(beta))
        bn.running_mean.copy_(torch.tensor(mean)), bn.running_var.copy_(torch.tensor(var))
    x = rng.normal(size=(9, 6))
    ref = bn(lin(torch.tensor(x))).detach().numpy()
    np.testing.assert_allclose(x @ W2 + b2, ref, rtol=1e-12, atol=1e-12)
    W3, b3 = scratch.fold_linear_bn(W, None, gamma, beta, mean, var, eps=1e-3)
    np.testing.assert_allclose(x @ W3 + b3, ref - (b * gamma / np.sqrt(var + 1e-3)), atol=1e-12)
    with pytest.raises(ValueError, match="gamma"):
        scratch.fold_linear_bn(W, b, gamma[:3], beta, mean, var)


@pytest.mark.parametrize("norm_position", ["before", "after"])
def test_scratch_fold_matches_scratch_and_torch_eval(norm_position):
    net = scratch.mlp([10, 12, 8, 3], norm="bn", rng=0, norm_position=norm_position)
    rng = np.random.default_rng(2)
    for _ in range(4):
        net.forward(rng.normal(1, 2, size=(16, 10)))
    for b in running.batchnorm_layers(net):
        b[1].gamma[...] = rng.uniform(0.5, 2, b[1].num_features)
        b[1].beta[...] = rng.normal(size=b[1].num_features)
    folded = scratch.fold_batchnorm(net)
    assert net.training and not folded.training
    n_bn = sum(isinstance(layer, scratch.BatchNorm) for layer in folded.layers)
    assert n_bn == (0 if norm_position == "before" else 2)
    x = rng.normal(size=(7, 10))
    ref = net.eval().forward(x)
    np.testing.assert_allclose(folded.forward(x), ref, rtol=1e-12, atol=1e-12)
    tnet = to_torch(net.eval())
    np.testing.assert_allclose(bt.fold_batchnorm(tnet)(torch.tensor(x)).detach().numpy(), ref,
                               rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- recompute

def test_recompute_first_layer_is_algorithm_2_and_mode_restored():
    rng = np.random.default_rng(3)
    batches = [rng.normal(2, 3, size=(20, 5)) for _ in range(7)]
    mean, var = running.population_statistics(batches)
    stacked = np.stack(batches)
    np.testing.assert_allclose(mean, stacked.mean(axis=(0, 1)))
    np.testing.assert_allclose(var, 20 / 19 * stacked.var(axis=1).mean(axis=0))
    for bn_cls in (nn.BatchNorm1d, bt.BatchNorm1d):
        model = nn.Sequential(bn_cls(5, momentum=0.3), nn.Linear(5, 4), nn.Dropout(0.5),
                              bn_cls(4)).double()
        model.eval()
        model[2].train()                               # a mixed state must come back as it was
        w = model[1].weight.detach().clone()
        bt.recompute_bn_stats(model, [torch.tensor(b) for b in batches])
        np.testing.assert_allclose(model[0].running_mean.numpy(), mean, rtol=1e-12)
        np.testing.assert_allclose(model[0].running_var.numpy(), var, rtol=1e-12)
        assert int(model[0].num_batches_tracked) == 7
        assert model[0].momentum == 0.3 and model[3].momentum == 0.1
        assert [m.training for m in model] == [False, False, True, False]
        assert torch.equal(model[1].weight, w)


def test_recompute_matches_torch_update_bn_and_scratch():
    from torch.optim.swa_utils import update_bn

    rng = np.random.default_rng(4)
    net = scratch.mlp([6, 9, 7, 3], norm="bn", rng=1)
    for _ in range(3):
        net.forward(rng.normal(size=(8, 6)))
    tnet, tref = to_torch(net), to_torch(net)
    for i, m in enumerate(tref):               # PyTorch's own layers for the reference
        if isinstance(m, bt.BatchNorm1d):
            ref_bn = nn.BatchNorm1d(m.num_features).double()
            ref_bn.load_state_dict(m.state_dict())
            tref[i] = ref_bn
    batches = [rng.normal(1, 2, size=(12, 6)) for _ in range(5)]
    running.recompute_bn_stats(net.eval(), batches)
    assert not net.training and all(not b.training for _, b in running.batchnorm_layers(net))
    bt.recompute_bn_stats(tnet, [(torch.tensor(b), None) for b in batches])
    update_bn([torch.tensor(b) for b in batches], tref)                # PyTorch's own
    for (_, ours), m, r in zip(running.batchnorm_layers(net),
                               [m for m in tnet if isinstance(m, bt.BatchNorm1d)],
                               [m for m in tref if type(m) is nn.BatchNorm1d]):
        np.testing.assert_allclose(ours.running_mean, r.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(ours.running_var, r.running_var.numpy(), rtol=1e-12)
        torch.testing.assert_close(m.running_mean, r.running_mean, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(m.running_var, r.running_var, rtol=1e-12, atol=1e-14)
        assert ours.momentum == 0.1 and m.momentum == 0.1


def test_recompute_errors_leave_stats_untouched():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    _trained_stats(model, (8, 3), dtype=torch.float32)
    before = model[1].running_mean.clone()
    with pytest.raises(ValueError, match="empty"):
        bt.recompute_bn_stats(model, [])
    assert torch.equal(model[1].running_mean, before)
    with pytest.raises(ValueError, match="no batch-norm"):
        bt.recompute_bn_stats(nn.Linear(2, 2), [torch.zeros(2, 2)])
    with pytest.raises(ValueError, match="no BatchNorm"):
        running.recompute_bn_stats(scratch.mlp([2, 3, 2], rng=0), [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="same size"):
        running.population_statistics([np.zeros((3, 2)), np.zeros((4, 2))])


# --------------------------------------------------------------------------- running statistics

@pytest.mark.parametrize("momentum", [0.1, 0.01, None])
@pytest.mark.parametrize("shape", [(10, 4), (3, 4, 5, 2)])
def test_running_stats_three_implementations_step_for_step(momentum, shape):
    """bnlib.scratch.BatchNorm, bnlib.torch.BatchNorm*d and torch.nn.BatchNorm*d, every step."""
    ours = scratch.BatchNorm(4, momentum=momentum)
    two_d = len(shape) == 2
    mine = (bt.BatchNorm1d if two_d else bt.BatchNorm2d)(4, momentum=momentum).double()
    ref = (nn.BatchNorm1d if two_d else nn.BatchNorm2d)(4, momentum=momentum).double()
    rng = np.random.default_rng(5)
    ema_mean, ema_var = np.zeros(4), np.ones(4)
    for step in range(1, 8):
        x = rng.normal(step, 1 + step, size=shape)
        ours.forward(x)
        mine(torch.tensor(x))
        ref(torch.tensor(x))
        axes = (0,) if two_d else (0, 2, 3)
        factor = 1 / step if momentum is None else momentum
        ema_mean = running.ema_update(ema_mean, x.mean(axis=axes), factor)
        ema_var = running.ema_update(ema_var, x.var(axis=axes, ddof=1), factor)
        for got in (ours.running_mean, mine.running_mean.numpy(), ema_mean):
            np.testing.assert_allclose(got, ref.running_mean.numpy(), rtol=1e-12)
        for got in (ours.running_var, mine.running_var.numpy(), ema_var):
            np.testing.assert_allclose(got, ref.running_var.numpy(), rtol=1e-12)
        assert ours.num_batches_tracked == int(mine.num_batches_tracked) == step


def test_momentum_conventions_and_windows():
    assert running.convert_momentum(0.99, "keras", "pytorch") == pytest.approx(0.01)
    assert running.convert_momentum(0.1, "pytorch", "keras") == pytest.approx(0.9)
    assert running.convert_momentum(0.5, "decay", "pytorch") == pytest.approx(0.5)
    assert running.convert_momentum(0.9, "keras", "decay") == pytest.approx(0.9)
    assert running.convert_momentum(0.3, "pytorch", "pytorch") == pytest.approx(0.3)
    with pytest.raises(ValueError, match="source"):
        running.convert_momentum(0.9, "tensorflow", "pytorch")
    # Keras's update with momentum 0.99 equals PyTorch's with 0.01
    r, s = np.array([1.0, 2.0]), np.array([5.0, -1.0])
    keras = 0.99 * r + (1 - 0.99) * s
    np.testing.assert_allclose(running.ema_update(r, s, running.convert_momentum(0.99)), keras)
    assert running.steps_to_forget(0.1) == 44 and running.steps_to_forget(0.01) == 459
    assert running.initial_weight(0.1, 44) < 0.01 < running.initial_weight(0.1, 43)
    assert running.ema_effective_batches(0.1) == pytest.approx(19)
    assert running.ema_effective_batches(0.1, 10_000) == pytest.approx(19)
    assert running.ema_effective_batches(0.1, 1) == pytest.approx(1)
    assert running.ema_effective_batches(1.0, 5) == 1.0
    assert running.ema_mean_age(0.1) == pytest.approx(9)
    # Monte Carlo: the EMA of i.i.d. unit-variance values has variance 1 / effective batches
    rng = np.random.default_rng(6)
    values = rng.standard_normal((4000, 200))
    ema = np.zeros(4000)
    for j in range(200):
        ema = running.ema_update(ema, values[:, j], 0.1)
    assert ema.var() == pytest.approx(1 / 19, rel=0.1)


# --------------------------------------------------------------------------- mode checks

def test_checker_lists_bn_layers_in_training_mode():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(),
                          nn.Sequential(nn.Linear(4, 4), bt.BatchNorm1d(4)))
    assert bt.bn_layers_in_training_mode(model) == ["1", "3.1"]
    model.eval()
    assert bt.bn_layers_in_training_mode(model) == []
    model[3].train()
    assert bt.bn_layers_in_training_mode(model) == ["3.1"]
    net = scratch.mlp([3, 4, 4, 2], norm="bn", rng=0)
    assert scratch.bn_layers_in_training_mode(net) == ["1", "4"]
    assert bt.bn_layers_in_training_mode(to_torch(net)) == ["1", "4"]
    assert scratch.bn_layers_in_training_mode(net.eval()) == []


# --------------------------------------------------------------------------- freezing

def test_requires_grad_false_does_not_freeze_running_stats():
    bn = nn.BatchNorm1d(3)
    for p in bn.parameters():
        p.requires_grad_(False)
    bn.train()
    bn(torch.randn(8, 3) + 5)
    assert not torch.equal(bn.running_mean, torch.zeros(3))       # still moved


@pytest.mark.parametrize("train_affine", [True, False])
def test_freeze_bn_stats_survives_train_and_matches_eval(train_affine):
    torch.manual_seed(1)
    model = _cnn(nn.BatchNorm2d, torch.float32)
    _trained_stats(model, (6, 3, 7, 7), dtype=torch.float32)
    ref = copy.deepcopy(model).eval()
    freeze_target = bt.freeze_bn_stats(model, train_affine=train_affine)
    assert freeze_target is model and bt.bn_layers_in_training_mode(model) == []
    model.train()
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    frozen = [m for m in model.modules() if isinstance(m, bt.FrozenBatchNorm)]
    assert len(frozen) == 3
    stats = [m.running_mean.clone() for m in frozen]
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(x).square().mean().backward()
    opt.step()
    assert all(torch.equal(m.running_mean, s) for m, s in zip(frozen, stats))
    n_affine = sum(isinstance(p, nn.Parameter) for m in frozen for p in m.parameters())
    assert n_affine == (6 if train_affine else 0)
    with pytest.raises(ValueError, match="expects input"):
        frozen[0](torch.zeros(2, 5, 3, 3))


def test_bn_eval_mode_context_manager():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))
    model.train()
    before = model[1].running_mean.clone()
    with bt.bn_eval_mode(model):
        assert not model[1].training and model[2].training
        model(torch.randn(4, 3) + 3)
    assert torch.equal(model[1].running_mean, before)
    assert model[1].training


# --------------------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(n_in=st.integers(1, 9), n_out=st.integers(1, 9), log_scale=st.floats(-3, 3),
       eps=st.sampled_from([1e-5, 1e-3, 0.1]), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_fold_property_any_shape_and_scale(n_in, n_out, log_scale, eps, bias, seed):
    """Folded Linear == Linear + eval-mode BN (scratch and torch.nn), for any sizes and scales."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** log_scale
    lin = scratch.Linear(n_in, n_out, bias=bias, rng=rng)
    if bias:
        lin.b[...] = scale * rng.normal(size=n_out)
    bn = scratch.BatchNorm(n_out, eps=eps).eval()
    bn.gamma[...] = rng.uniform(-2, 2, n_out)
    bn.beta[...] = rng.normal(size=n_out)
    bn.running_mean[...] = scale * rng.normal(size=n_out)
    bn.running_var[...] = scale ** 2 * rng.uniform(0.01, 4, n_out)
    x = scale * rng.normal(size=(5, n_in))
    ref = bn.forward(lin.forward(x))
    folded = scratch.fold_batchnorm(scratch.Sequential(lin, bn))
    assert len(folded) == 1
    np.testing.assert_allclose(folded.forward(x), ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    tfold = bt.fold_batchnorm(to_torch(scratch.Sequential(lin, bn).eval()))
    np.testing.assert_allclose(tfold(torch.tensor(x)).detach().numpy(), ref, rtol=1e-9,
                               atol=1e-9 * np.abs(ref).max())


@settings(max_examples=30, deadline=None)
@given(m=st.integers(2, 12), d=st.integers(1, 4), k=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_cumulative_average_is_algorithm_2(m, d, k, seed):
    """BatchNorm(momentum=None) over k batches == population_statistics, and torch.nn agrees."""
    rng = np.random.default_rng(seed)
    batches = [rng.normal(rng.normal(), rng.uniform(0.1, 3), size=(m, d)) for _ in range(k)]
    ours, ref = scratch.BatchNorm(d, momentum=None), nn.BatchNorm1d(d, momentum=None).double()
    for b in batches:
        ours.forward(b)
        ref(torch.tensor(b))
    mean, var = running.population_statistics(batches)
    np.testing.assert_allclose(ours.running_mean, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.running_var, var, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ref.running_mean.detach().numpy(), mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ref.running_var.detach().numpy(), var, rtol=1e-10, atol=1e-12)


from bnlib.torch.deploy import fold_batchnorm, freeze_bn_stats  # noqa: E402


def test_freeze_bn_stats_on_a_bare_layer_is_an_error_not_a_no_op():
    with pytest.raises(TypeError, match="FrozenBatchNorm"):
        freeze_bn_stats(nn.BatchNorm1d(3))
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, track_running_stats=False))
    assert isinstance(freeze_bn_stats(model)[1], nn.BatchNorm1d)   # no statistics: left alone


def test_folded_linear_refuses_3d_input():
    """Issue 13: Linear + BatchNorm1d applied to (N, C, L) input folded anyway and changed outputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model.train()
    model(torch.randn(16, 4))
    model.eval()
    folded = fold_batchnorm(model)
    x2 = torch.randn(5, 4)
    torch.testing.assert_close(folded(x2), model(x2))
    with pytest.raises(ValueError, match=r"\(N, C\) input only"):
        folded(torch.randn(5, 4, 4))


def test_convert_running_var_between_pytorch_and_keras():
    """Keras averages biased batch variances, PyTorch unbiased ones: a factor m / (m - 1)."""
    rng = np.random.default_rng(0)
    m, momentum_pt = 8, 0.1
    keras_var, torch_var = np.ones(3), np.ones(3)
    for _ in range(200):                       # long enough to forget the initial 1
        batch = rng.normal(size=(m, 3)) * [1.0, 2.0, 0.5]
        biased = batch.var(axis=0)
        keras_var = running.ema_update(keras_var, biased, momentum_pt)   # Keras momentum 0.9
        torch_var = running.ema_update(torch_var, biased * m / (m - 1), momentum_pt)
    converted = running.convert_running_var(keras_var, m, "keras", "pytorch")
    np.testing.assert_allclose(converted, torch_var, rtol=1e-8)
    np.testing.assert_allclose(running.convert_running_var(torch_var, m, "pytorch", "keras"),
                               keras_var, rtol=1e-8)
    torch_bn = torch.nn.BatchNorm1d(3, momentum=momentum_pt).double()
    xs = [torch.from_numpy(rng.normal(size=(m, 3))) for _ in range(200)]
    keras_like = np.ones(3)
    for x in xs:
        torch_bn(x)
        keras_like = running.ema_update(keras_like, x.numpy().var(axis=0), momentum_pt)
    np.testing.assert_allclose(running.convert_running_var(keras_like, m),
                               torch_bn.running_var.numpy(), rtol=1e-8)
    with pytest.raises(ValueError, match="batch_size"):
        running.convert_running_var(keras_var, 1)
