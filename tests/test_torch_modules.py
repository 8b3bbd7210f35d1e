"""bnlib.torch.modules against torch.nn: same outputs, gradients, running statistics and state_dicts."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

import bnlib.torch as bt

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    """Tiny tensors: OpenMP start-up costs more than it saves (and stalls on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}

# (our class, torch's class, input shape)
CASES = [
    (bt.BatchNorm1d, nn.BatchNorm1d, (16, 4)),
    (bt.BatchNorm1d, nn.BatchNorm1d, (8, 4, 5)),
    (bt.BatchNorm2d, nn.BatchNorm2d, (4, 4, 3, 5)),
]
CASE_IDS = ["bn1d-2d", "bn1d-3d", "bn2d-4d"]


def _pair(ours_cls, ref_cls, seed=0, **kwargs):
    """Our module and torch's with the same (random, non-default) parameters and buffers."""
    ref = ref_cls(4, **kwargs)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.rand_like(p) + 0.5 if p is ref.weight else torch.randn_like(p))
    ours = ours_cls(4, **kwargs)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _batch(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 1).to(dtype=dtype, device=device)


def _assert_same_state(ours, ref, tol):
    sd_o, sd_r = ours.state_dict(), ref.state_dict()
    assert list(sd_o) == list(sd_r)
    for k in sd_r:
        if sd_r[k].dtype == torch.long:
            assert torch.equal(sd_o[k], sd_r[k]), k
        else:
            torch.testing.assert_close(sd_o[k], sd_r[k], **tol, msg=k)


# ---------------------------------------------------------------- training mode


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("ours_cls,ref_cls,shape", CASES, ids=CASE_IDS)
def test_train_mode_outputs_and_gradients_match_torch(ours_cls, ref_cls, shape, affine, dtype, device):
    ours, ref = _pair(ours_cls, ref_cls, affine=affine, dtype=dtype, device=device)
    x = _batch(shape, dtype, device, seed=1)
    dy = _batch(shape, dtype, device, seed=2)
    xo, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    yo, yr = ours(xo), ref(xr)
    assert yo.dtype == dtype and yo.device == yr.device
    torch.testing.assert_close(yo, yr, **TOL[dtype])
    yo.backward(dy)
    yr.backward(dy)
    torch.testing.assert_close(xo.grad, xr.grad, **TOL[dtype])
    if affine:
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **TOL[dtype])
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, **TOL[dtype])
    else:
        assert ours.weight is None and ours.bias is None
    _assert_same_state(ours, ref, TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("ours_cls,ref_cls,shape", CASES, ids=CASE_IDS)
def test_running_statistics_and_eval_mode_match_torch(ours_cls, ref_cls, shape, momentum, dtype, device):
    ours, ref = _pair(ours_cls, ref_cls, momentum=momentum, dtype=dtype, device=device)
    for step in range(5):
        x = _batch(shape, dtype, device, seed=10 + step) * (1 + step)  # statistics change per step
        torch.testing.assert_close(ours(x), ref(x), **TOL[dtype])
        _assert_same_state(ours, ref, TOL[dtype])
        assert int(ours.num_batches_tracked) == step + 1
    assert not torch.allclose(ours.running_var, torch.ones_like(ours.running_var))
    ours.eval()
    ref.eval()
    x = _batch(shape, dtype, device, seed=99)
    torch.testing.assert_close(ours(x), ref(x), **TOL[dtype])
    _assert_same_state(ours, ref, TOL[dtype])  # eval mode does not touch the buffers
    assert int(ours.num_batches_tracked) == 5
    single = x[:1]  # one example is fine in eval mode: the running statistics normalise it
    torch.testing.assert_close(ours(single), ref(single), **TOL[dtype])


def test_momentum_none_is_the_plain_average_of_batch_statistics():
    bn = bt.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    means, variances = [], []
    for step in range(4):
        x = _batch((10, 3), torch.float64, "cpu", seed=step) * (step + 1)
        bn(x)
        means.append(x.mean(0))
        variances.append(x.var(0, unbiased=True))
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack(variances).mean(0))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ours_cls,ref_cls,shape", CASES, ids=CASE_IDS)
def test_track_running_stats_false_uses_batch_statistics_in_eval_mode(ours_cls, ref_cls, shape, device):
    ours, ref = _pair(ours_cls, ref_cls, track_running_stats=False, device=device)
    assert ours.running_mean is None and ours.running_var is None and ours.num_batches_tracked is None
    x = _batch(shape, torch.float32, device, seed=3)
    torch.testing.assert_close(ours(x), ref(x), **TOL[torch.float32])
    ours.eval()
    ref.eval()
    y = ours(x)
    torch.testing.assert_close(y, ref(x), **TOL[torch.float32])
    ours.train()
    torch.testing.assert_close(y, ours(x))  # eval == train: batch statistics in both
    assert list(ours.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]


def test_buffers_present_but_tracking_switched_off_later_behaves_like_torch():
    """torch's rule: training uses batch stats without updating; eval uses the (frozen) buffers."""
    ours, ref = _pair(bt.BatchNorm1d, nn.BatchNorm1d, dtype=torch.float64)
    for m in (ours, ref):
        m(_batch((8, 4), torch.float64, "cpu", seed=5))
        m.track_running_stats = False
    x = _batch((8, 4), torch.float64, "cpu", seed=6)
    torch.testing.assert_close(ours(x), ref(x))
    _assert_same_state(ours, ref, TOL[torch.float64])
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x), ref(x))


def test_bias_false_and_empty_batch_like_torch():
    ours, ref = _pair(bt.BatchNorm1d, nn.BatchNorm1d, bias=False)
    assert ours.bias is None and list(ours.state_dict()) == list(ref.state_dict())
    x = _batch((8, 4), torch.float32, "cpu", seed=7)
    torch.testing.assert_close(ours(x), ref(x))
    empty = torch.zeros(0, 4)
    assert ours(empty).shape == ref(empty).shape == (0, 4)
    _assert_same_state(ours, ref, TOL[torch.float32])


# ---------------------------------------------------------------- state_dict and module API


@pytest.mark.parametrize(
    "kwargs", [{}, {"affine": False}, {"track_running_stats": False}, {"momentum": None}]
)
@pytest.mark.parametrize("ours_cls,ref_cls", [(bt.BatchNorm1d, nn.BatchNorm1d), (bt.BatchNorm2d, nn.BatchNorm2d)])
def test_state_dict_round_trips_both_ways(ours_cls, ref_cls, kwargs):
    shape = (6, 4) if ours_cls is bt.BatchNorm1d else (3, 4, 2, 2)
    ours, ref = ours_cls(4, **kwargs), ref_cls(4, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
    for _ in range(3):
        ours(_batch(shape, torch.float32, "cpu", seed=len(_ * "x")))
    if ours.affine:
        with torch.no_grad():
            ours.weight.mul_(3.0)
    fresh_ref = ref_cls(4, **kwargs)
    fresh_ref.load_state_dict(ours.state_dict())  # ours -> torch (strict)
    back = ours_cls(4, **kwargs)
    back.load_state_dict(fresh_ref.state_dict())  # torch -> ours (strict)
    for k, v in ours.state_dict().items():
        assert torch.equal(fresh_ref.state_dict()[k], v), k
        assert torch.equal(back.state_dict()[k], v), k
    ours.eval()
    fresh_ref.eval()
    x = _batch(shape, torch.float32, "cpu", seed=42)
    torch.testing.assert_close(ours(x), fresh_ref(x))


def test_old_state_dict_without_num_batches_tracked_loads():
    ref = nn.BatchNorm1d(4)
    sd = ref.state_dict()
    del sd["num_batches_tracked"]
    sd._metadata[""]["version"] = 1  # written before num_batches_tracked existed
    ours = bt.BatchNorm1d(4)
    ours.load_state_dict(sd)
    assert int(ours.num_batches_tracked) == 0


def test_repr_reset_and_conversion():
    for kwargs in ({}, {"affine": False, "momentum": None}, {"track_running_stats": False, "eps": 1e-3}):
        assert repr(bt.BatchNorm2d(7, **kwargs)) == repr(nn.BatchNorm2d(7, **kwargs))
        assert repr(bt.BatchNorm1d(7, **kwargs)) == repr(nn.BatchNorm1d(7, **kwargs))
    assert repr(bt.LayerNorm([3, 4], elementwise_affine=False)) == repr(nn.LayerNorm([3, 4], elementwise_affine=False))
    bn = bt.BatchNorm1d(3)
    bn(torch.randn(8, 3) * 5 + 2)
    with torch.no_grad():
        bn.weight.fill_(2.0)
    bn.reset_running_stats()
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.weight, torch.full((3,), 2.0))
    bn.reset_parameters()
    assert torch.equal(bn.weight, torch.ones(3)) and torch.equal(bn.bias, torch.zeros(3))
    bn64 = copy.deepcopy(bn).double()
    assert bn64.running_var.dtype == torch.float64 and bn64.num_batches_tracked.dtype == torch.long
    assert bn64(torch.randn(4, 3, dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------- errors


def test_wrong_input_dims_raise_like_torch():
    cases = [
        (bt.BatchNorm1d, nn.BatchNorm1d, (2, 3, 4, 5), "expected 2D or 3D input (got 4D input)"),
        (bt.BatchNorm1d, nn.BatchNorm1d, (3,), "expected 2D or 3D input (got 1D input)"),
        (bt.BatchNorm2d, nn.BatchNorm2d, (2, 3, 4), "expected 4D input (got 3D input)"),
        (bt.BatchNorm2d, nn.BatchNorm2d, (2, 3), "expected 4D input (got 2D input)"),
    ]
    for ours_cls, ref_cls, shape, message in cases:
        x = torch.randn(shape)
        for cls in (ours_cls, ref_cls):
            with pytest.raises(ValueError) as err:
                cls(3)(x)
            assert str(err.value) == message


@pytest.mark.parametrize(
    "cls,shape",
    [(bt.BatchNorm1d, (1, 3)), (bt.BatchNorm1d, (1, 3, 1)), (bt.BatchNorm2d, (1, 3, 1, 1))],
)
def test_single_value_per_channel_raises_in_training(cls, shape):
    ours = cls(3)
    with pytest.raises(ValueError) as err:
        ours(torch.randn(shape))
    assert str(err.value) == (
        f"Expected more than 1 value per channel when training, got input size {torch.Size(shape)}"
    )
    assert int(ours.num_batches_tracked) == 0  # (torch would have counted the failed batch)
    assert torch.equal(ours.running_mean, torch.zeros(3))
    ours.eval()
    assert ours(torch.randn(shape)).shape == shape  # eval mode: fine
    no_stats = cls(3, track_running_stats=False).eval()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        no_stats(torch.randn(shape))  # eval mode but batch statistics: still an error


def test_wrong_number_of_channels_raises():
    message = r"has shape \(3,\) but x of size \({}\) has 5 channels along axis 1"
    with pytest.raises(ValueError, match="running_mean " + message.format("8, 5")):
        bt.BatchNorm1d(3)(torch.randn(8, 5))
    with pytest.raises(ValueError, match="weight " + message.format("8, 5")):
        bt.BatchNorm1d(3, track_running_stats=False)(torch.randn(8, 5))
    with pytest.raises(ValueError, match="running_mean " + message.format("2, 5, 2, 2")):
        bt.BatchNorm2d(3, affine=False)(torch.randn(2, 5, 2, 2))
    with pytest.raises(ValueError, match="running_mean " + message.format("8, 5")):
        bt.BatchNorm1d(3).eval()(torch.randn(8, 5))


# ---------------------------------------------------------------- in a model


def _mlp(bn_cls, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), bn_cls(16), nn.ReLU(), nn.Linear(16, 3)).double()


def test_model_trained_with_sgd_ends_with_the_same_parameters():
    ours, ref = _mlp(bt.BatchNorm1d), _mlp(nn.BatchNorm1d)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for step in range(8):
        x = torch.randn(32, 6, generator=g, dtype=torch.float64) * 2 + 1
        labels = torch.randint(0, 3, (32,), generator=g)
        for model, opt in ((ours, opt_o), (ref, opt_r)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), labels).backward()
            opt.step()
    before = _mlp(nn.BatchNorm1d).state_dict()
    assert not torch.allclose(ref.state_dict()["1.weight"], before["1.weight"])  # it did train
    _assert_same_state(ours, ref, dict(rtol=1e-9, atol=1e-9))
    ours.eval()
    ref.eval()
    x = torch.randn(5, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- layer norm


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "normalized_shape,shape,kwargs",
    [
        (5, (4, 5), {}),
        ((5,), (2, 3, 5), {"bias": False}),
        ([3, 5], (2, 3, 5), {}),
        (5, (4, 5), {"elementwise_affine": False}),
        (5, (5,), {}),
    ],
)
def test_layernorm_matches_torch(normalized_shape, shape, kwargs, dtype, device):
    ref = nn.LayerNorm(normalized_shape, dtype=dtype, device=device, **kwargs)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p))
    ours = bt.LayerNorm(normalized_shape, dtype=dtype, device=device, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x = _batch(shape, dtype, device, seed=4)
    dy = _batch(shape, dtype, device, seed=5)
    xo, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    yo, yr = ours(xo), ref(xr)
    torch.testing.assert_close(yo, yr, **TOL[dtype])
    yo.backward(dy)
    yr.backward(dy)
    torch.testing.assert_close(xo.grad, xr.grad, **TOL[dtype])
    for (name, po), pr in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(po.grad, pr.grad, **TOL[dtype], msg=name)
    ours.eval()
    torch.testing.assert_close(ours(x), yo.detach())  # no running statistics: eval == train


def test_layernorm_wrong_shape_message():
    with pytest.raises(ValueError) as err:
        bt.LayerNorm(5)(torch.randn(2, 4))
    with pytest.raises(RuntimeError) as ref_err:
        nn.LayerNorm(5)(torch.randn(2, 4))
    assert str(err.value).replace(" ", "") == str(ref_err.value).replace(" ", "")


# ---------------------------------------------------------------- packaging


def test_import_bnlib_does_not_import_torch():
    code = "import bnlib, sys; assert 'torch' not in sys.modules, 'import bnlib pulled in torch'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_pytorch_utilities_recognise_bnlib_batchnorm():
    """update_bn and convert_sync_batchnorm treat bnlib's layers as batch norms (chapter 5)."""
    from torch.optim.swa_utils import update_bn

    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 4), bt.BatchNorm1d(4), nn.ReLU()).double()
    ref = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.ReLU()).double()
    ref.load_state_dict(ours.state_dict())
    assert isinstance(ours[1], nn.modules.batchnorm._BatchNorm)
    batches = [torch.randn(16, 5, dtype=torch.float64) * 3 + 1 for _ in range(4)]
    update_bn(batches, ours)
    update_bn(batches, ref)
    assert float(ours[1].running_mean.abs().sum()) > 0           # it did run
    torch.testing.assert_close(ours[1].running_mean, ref[1].running_mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ours[1].running_var, ref[1].running_var, rtol=1e-12, atol=1e-14)
    assert ours[1].momentum == 0.1                                # restored by update_bn
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(
        nn.Sequential(bt.BatchNorm2d(3)))
    assert isinstance(converted[0], nn.SyncBatchNorm)


def test_overflowing_variance_raises_in_the_modules_and_nan_input_propagates():
    """Issue 13: LayerNorm returned all zeros for float32 input of about 1e20 (torch.nn: NaN)."""
    x = torch.randn(8, 3) * 1e20
    for module, inp in ((bt.LayerNorm(8), x.T.contiguous()), (bt.BatchNorm1d(3), x)):
        with pytest.raises(ValueError, match="overflows"):
            module(inp)
        nan_in = inp.clone()
        nan_in[0, 0] = float("nan")
        assert torch.isnan(module(nan_in)).any()          # as torch.nn: no error, NaN out
    with pytest.raises(ValueError, match="overflows"):
        bt.layer_norm(x.T.contiguous(), 8)


@pytest.mark.parametrize("build, error", [
    (lambda: bt.LayerNorm(4.7), TypeError), (lambda: bt.LayerNorm("45"), TypeError),
    (lambda: bt.LayerNorm(eps=-1, normalized_shape=3), ValueError),
    (lambda: bt.LayerNorm(()), ValueError), (lambda: bt.BatchNorm1d(True), TypeError),
    (lambda: bt.BatchNorm2d(0), ValueError), (lambda: bt.BatchNorm1d(3, momentum=2), ValueError),
    (lambda: bt.BatchNorm1d(3, eps=float("nan")), ValueError),
])
def test_constructor_arguments_are_validated(build, error):
    """Issue 13: LayerNorm("45") silently had shape (4, 5); BatchNorm(True) one feature."""
    with pytest.raises(error):
        build()
