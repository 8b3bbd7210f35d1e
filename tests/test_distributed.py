"""bnlib.torch.distributed: synchronised batch norm against full-batch batch norm (chapter 8).

Two module-scoped fixtures spawn real ``gloo`` process groups (two CPU
processes on 127.0.0.1, a few seconds each); everything else runs in this
process without a process group, where SyncBatchNorm must be ordinary
batch norm.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn

import bnlib.torch as bt
from bnlib.torch.distributed import (SyncBatchNorm, SyncBatchNormFunction, compare_sync_and_local,
                                     convert_sync_batchnorm)

SYNC_KEYS = ["sync_vs_full_y", "sync_vs_full_dx", "sync_vs_full_dgamma", "sync_vs_full_dbeta",
             "sync_vs_full_running_mean", "sync_vs_full_running_var"]
LOCAL_KEYS = ["local_vs_full_y", "local_vs_full_dx", "local_vs_full_running_mean",
              "local_vs_full_running_var"]


@pytest.fixture(autouse=True, scope="module")
def _one_cpu_thread():
    """Tiny tensors: OpenMP start-up costs more than it saves (and stalls on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run_4d():
    """Two ranks, (8, 3, 4, 4) split 4 + 4."""
    return compare_sync_and_local(world_size=2, batch=8, channels=3, spatial=(4, 4), seed=0)


@pytest.fixture(scope="module")
def run_2d_unequal():
    """Two ranks, (7, 3) split 4 + 3: the ranks hold different batch sizes."""
    return compare_sync_and_local(world_size=2, batch=7, channels=3, spatial=None, seed=0)


# --------------------------------------------------------------------------
# Several processes
# --------------------------------------------------------------------------


@pytest.mark.parametrize("run", ["run_4d", "run_2d_unequal"])
def test_sync_equals_full_batch(run, request):
    result = request.getfixturevalue(run)
    assert set(SYNC_KEYS + LOCAL_KEYS) <= set(result)
    for key in SYNC_KEYS:
        assert result[key] < 1e-12, (key, result[key])


@pytest.mark.parametrize("run", ["run_4d", "run_2d_unequal"])
def test_local_bn_differs_from_full_batch(run, request):
    result = request.getfixturevalue(run)
    for key in LOCAL_KEYS:
        assert result[key] > 1e-2, (key, result[key])


def test_compare_reports_shards_and_time(run_4d, run_2d_unequal):
    assert run_4d["world_size"] == 2 and run_4d["shard_sizes"] == [4, 4]
    assert run_2d_unequal["shard_sizes"] == [4, 3]
    assert 0 < run_4d["elapsed_s"] < 120


def test_compare_rejects_too_small_shards():
    # checked before any process is started
    with pytest.raises(ValueError, match="at least 2"):
        compare_sync_and_local(world_size=2, batch=3, channels=2, spatial=None)
    with pytest.raises(ValueError, match="at most 2 axes"):
        compare_sync_and_local(world_size=2, batch=4, spatial=(2, 2, 2))


# --------------------------------------------------------------------------
# One process, no process group: ordinary batch norm
# --------------------------------------------------------------------------

CASES = [(nn.BatchNorm1d, (8, 3)), (nn.BatchNorm1d, (4, 3, 5)), (nn.BatchNorm2d, (4, 3, 5, 6)),
         (nn.BatchNorm3d, (2, 3, 2, 3, 4))]


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("ref_cls, shape", CASES, ids=["2d", "3d", "4d", "5d"])
def test_single_process_equals_torch(ref_cls, shape, momentum):
    assert not dist.is_initialized()
    torch.manual_seed(0)
    ref = ref_cls(3, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.normal_()
    ours = SyncBatchNorm(3, momentum=momentum, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    for step in range(2):
        x = (torch.randn(shape, dtype=torch.float64) * 2 + 1).requires_grad_()
        dy = torch.randn(shape, dtype=torch.float64)
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = ours(x), ref(x_ref)
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        y.backward(dy)
        y_ref.backward(dy)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=1e-10, atol=1e-10)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=1e-10, atol=1e-10)
    ours.eval(), ref.eval()
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-10, atol=1e-10)


def test_function_gradcheck_and_stats():
    torch.manual_seed(1)
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: SyncBatchNormFunction.apply(x, w, b, 1e-5, None),
                                    (x, w, b))
    assert torch.autograd.gradcheck(lambda x: SyncBatchNormFunction.apply(x, None, None, 1e-5, None),
                                    (x,))
    y, mu, var, count = SyncBatchNormFunction.apply(x, w, b, 1e-5, None, True)
    var_ref, mu_ref = torch.var_mean(x.detach(), dim=[0, 2, 3], correction=0)
    torch.testing.assert_close(mu, mu_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, var_ref, rtol=1e-12, atol=1e-12)
    assert int(count) == 16 and not mu.requires_grad and not var.requires_grad
    y_ref = bt.BatchNormFunction.apply(x, w, b, 1e-5)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# convert_sync_batchnorm
# --------------------------------------------------------------------------


def _model():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5), nn.BatchNorm1d(5, momentum=None, eps=1e-3), bt.BatchNorm1d(5),
    )
    model.train()
    model(torch.randn(6, 1, 6, 6))  # non-trivial running statistics
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_()
    return model


def test_convert_sync_batchnorm_replaces_layers_and_keeps_state():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    ref = copy.deepcopy(model)
    weight_of_bn = model[1].weight
    converted = convert_sync_batchnorm(model.eval())
    assert converted is model  # in place
    assert [type(m) for m in model] == [nn.Conv2d, SyncBatchNorm, nn.ReLU, nn.Flatten, nn.Linear,
                                        SyncBatchNorm, SyncBatchNorm]
    assert model[1].weight is weight_of_bn  # the same Parameter: optimisers stay valid
    assert model[5].momentum is None and model[5].eps == 1e-3 and not model[5].training
    after = model.state_dict()
    assert list(after) == list(before)
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)
    x = torch.randn(3, 1, 6, 6)
    torch.testing.assert_close(model(x), ref.eval()(x))
    # already synchronised layers are left alone; a lone batch norm comes back converted
    assert convert_sync_batchnorm(model)[1] is model[1]
    single = convert_sync_batchnorm(nn.BatchNorm2d(4, affine=False, track_running_stats=False))
    assert isinstance(single, SyncBatchNorm) and single.weight is None and single.running_mean is None


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------


def test_bad_input_gives_clear_errors():
    layer = SyncBatchNorm(3)
    with pytest.raises(ValueError, match="at least 2D"):
        layer(torch.randn(3))
    with pytest.raises(ValueError, match=r"\(N, 3, \*\)"):
        layer(torch.randn(4, 2))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        SyncBatchNormFunction.apply(torch.randn(1, 3), None, None, 1e-5, None)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        SyncBatchNormFunction.apply(torch.randn(5), None, None, 1e-5, None)
    with pytest.raises(ValueError, match="weight has shape"):
        SyncBatchNormFunction.apply(torch.randn(4, 3), torch.ones(2), None, 1e-5, None)
    with pytest.raises(ValueError, match="not finite"):
        SyncBatchNormFunction.apply(torch.tensor([[1.0], [float("nan")]]), None, None, 1e-5, None)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        convert_sync_batchnorm("not a model")


def test_wire_bytes_of_both_designs(monkeypatch):
    from bnlib.torch import distributed as D

    # bnlib's forward: two all-reduces in float64 (C + 1, then C numbers); torch's: one all-gather of 2C + 1
    assert D.collectives(64, "bnlib")["forward"] == [("all_reduce", 65, 8), ("all_reduce", 64, 8)]
    assert D.collectives(64, "torch")["forward"] == [("all_gather", 129, 4)]
    assert D.collectives(64, "bnlib")["backward"] == D.collectives(64, "torch")["backward"] == [("all_reduce", 128, 4)]
    two, eight = D.wire_bytes(64, 2, "bnlib"), D.wire_bytes(64, 8, "bnlib")
    assert two["forward_bytes"] == (65 + 64) * 8 and eight["forward_bytes"] == 2 * 7 / 8 * (65 + 64) * 8
    assert D.wire_bytes(64, 2, "torch")["forward_bytes"] == 129 * 4
    assert D.wire_bytes(64, 8, "torch")["forward_bytes"] == 7 * 129 * 4
    # the all-gather grows with the ranks, the all-reduces do not: equal at 4 ranks, torch sends more beyond
    for k in (2, 3):
        assert D.wire_bytes(64, k, "torch")["forward_bytes"] < D.wire_bytes(64, k, "bnlib")["forward_bytes"]
    assert D.wire_bytes(64, 4, "torch")["forward_bytes"] == D.wire_bytes(64, 4, "bnlib")["forward_bytes"]
    for k in (8, 64):
        assert D.wire_bytes(64, k, "torch")["forward_bytes"] > D.wire_bytes(64, k, "bnlib")["forward_bytes"]
    assert two["forward_collectives"] == 2 and D.wire_bytes(64, 2, "torch")["forward_collectives"] == 1
    assert D.wire_bytes(64, 1, "bnlib")["forward_bytes"] == 0
    with pytest.raises(ValueError, match="design"):
        D.collectives(8, "nccl")


def test_the_function_issues_the_collectives_it_is_said_to(monkeypatch):
    from bnlib.torch import distributed as D

    sent = []
    monkeypatch.setattr(D, "_all_reduce_sum", lambda t, group=None: sent.append((t.numel(), t.element_size())) or t)
    x = torch.randn(6, 5, 3, 3, requires_grad=True)
    y = D.SyncBatchNormFunction.apply(x, torch.ones(5, requires_grad=True), torch.zeros(5), 1e-5, None)
    forward = list(sent)
    torch.autograd.grad(y.sum(), x)
    expected = D.collectives(5, "bnlib")
    assert forward == [(n, b) for _, n, b in expected["forward"]]
    assert sent[len(forward):] == [(n, b) for _, n, b in expected["backward"]]
