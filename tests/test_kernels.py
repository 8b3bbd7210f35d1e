"""The Triton kernels of chapter 8 against PyTorch and bnlib.scratch (in Triton's interpreter without a GPU).

Interpreter runs cost about 10 ms per program, so the shapes are small and a
small ``tile`` makes ragged last tiles in both directions at small sizes.
"""
import math
import re

import numpy as np
import pytest
import torch

import bnlib.kernels as K
from bnlib.kernels import bench
from bnlib.kernels.batchnorm import DEFAULT_TILE, INT32_MAX, launch_plan
from bnlib.scratch import functional as scratch

DEVICE = "cpu" if K.interpreted() else "cuda"
SHAPES = [(8, 3), (5, 4, 7), (4, 3, 5, 6), (2, 2, 40, 40)]   # the last: several tiles per channel
# (shape, channels_last, tile): ragged last tiles along both tile axes, in both layouts
RAGGED = [((37, 5), False, 16), ((5, 3, 7), False, 16), ((3, 5, 6, 7), False, 32),
          ((3, 5, 6, 7), True, 32), ((5, 9, 3, 3), True, 16), ((70, 130), False, 4096)]


def _inputs(shape, dtype, seed=0, loc=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = (loc + scale * torch.randn(shape, generator=g, dtype=dtype)).to(DEVICE)
    w = torch.randn(shape[1], generator=g, dtype=dtype).to(DEVICE)
    b = torch.randn(shape[1], generator=g, dtype=dtype).to(DEVICE)
    dy = torch.randn(shape, generator=g, dtype=dtype).to(DEVICE)
    return x, w, b, dy


def _grads(fn, x, w, b, dy):
    x, w, b = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    y = fn(x, w, b)
    return (y.detach(), *torch.autograd.grad(y, (x, w, b), dy))


def _torch_bn(x, w, b):
    return torch.nn.functional.batch_norm(x, None, None, w, b, True, 0.0, 1e-5)


def _triton_bn(x, w, b):
    return K.TritonBatchNormFunction.apply(x, w, b, 1e-5)[0]


def _kernels(x, w, b, dy, **kw):
    y, mu, var, inv_std = K.batchnorm_forward(x, w, b, **kw)
    dx, dgamma, dbeta = K.batchnorm_backward(dy, x, mu, inv_std, w, **kw)
    return y, dx, dgamma, dbeta


def _close(ours, ref, tol):
    for name, a, r in zip(("y", "dx", "dgamma", "dbeta"), ours, ref):
        assert a.shape == r.shape, name
        a, r = a.double(), r.double()
        assert (a - r).abs().max() <= tol * (1 + r.abs().max()), (name, float((a - r).abs().max()))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_forward_and_backward_match_pytorch(shape, dtype, tol):
    x, w, b, dy = _inputs(shape, dtype)
    ours, ref = _grads(_triton_bn, x, w, b, dy), _grads(_torch_bn, x, w, b, dy)
    for a, r in zip(ours, ref):
        assert a.dtype == r.dtype
    _close(ours, ref, tol)


@pytest.mark.parametrize("shape, channels_last, tile", RAGGED)
def test_ragged_tiles_both_layouts_match_pytorch_and_scratch(shape, channels_last, tile):
    x, w, b, dy = _inputs(shape, torch.float64, loc=3.0)
    if channels_last:
        x, dy = (t.to(memory_format=torch.channels_last) for t in (x, dy))
    plan = launch_plan(shape, channels_last, tile)
    if shape != (70, 130):   # the tile does not divide the sizes: masked lanes in the last tiles
        assert plan.block_a * math.ceil(plan.N * (plan.L if plan.layout == "nlc" else 1) / plan.block_a) > (
            plan.N * (plan.L if plan.layout == "nlc" else 1)) or plan.block_b * plan.grid[1] > (
            plan.C if plan.layout == "nlc" else plan.L)
    ours = _kernels(x, w, b, dy, tile=tile)
    _close(ours, _grads(_torch_bn, x, w, b, dy), 1e-12)
    if channels_last:   # the output keeps the input's memory format
        assert ours[0].is_contiguous(memory_format=torch.channels_last)
        assert ours[1].is_contiguous(memory_format=torch.channels_last)
    if len(shape) in (2, 4):   # bnlib.scratch takes (N, D) and (N, C, H, W)
        xn, wn, bn, dyn = (t.cpu().numpy() for t in (x, w, b, dy))
        y_ref, cache = scratch.batchnorm_forward(xn, wn, bn, 1e-5)
        dx_ref, dg_ref, db_ref = scratch.batchnorm_backward(dyn, cache)
        for a, r in zip(ours, (y_ref, dx_ref, dg_ref, db_ref)):
            assert np.abs(a.cpu().numpy() - r).max() <= 1e-12 * (1 + np.abs(r).max())


@pytest.mark.parametrize("shape, channels_last, tile", RAGGED[:5])
def test_several_tiles_per_program_match_pytorch(monkeypatch, shape, channels_last, tile):
    # large tensors give each partial-sum program several tiles, the last program surplus (masked) ones
    monkeypatch.setattr(K.batchnorm, "MAX_PARTIALS", 2)
    plan = launch_plan(shape, channels_last, tile)
    assert plan.tiles_per_program > 1 and plan.partials <= 2
    x, w, b, dy = _inputs(shape, torch.float64, loc=-2.0)
    if channels_last:
        x, dy = (t.to(memory_format=torch.channels_last) for t in (x, dy))
    _close(_kernels(x, w, b, dy, tile=tile), _grads(_torch_bn, x, w, b, dy), 1e-12)


def test_the_int64_path_computes_the_same():
    x, w, b, dy = _inputs((3, 5, 6, 7), torch.float64)
    for channels_last in (False, True):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        xs, dys = x.to(memory_format=fmt), dy.to(memory_format=fmt)
        a = _kernels(xs, w, b, dys, tile=32)
        c = _kernels(xs, w, b, dys, tile=32, force_int64=True)
        assert all(torch.equal(p, q) for p, q in zip(a, c))
        assert launch_plan(x.shape, channels_last, 32, force_int64=True).int64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype):
    # the same rounded inputs, computed in float64: the kernels' error is the output rounding only
    x, w, b, dy = _inputs((6, 3, 5, 5), dtype, loc=2.0)
    ours = _kernels(x, w, b, dy, tile=64)
    assert ours[0].dtype == dtype and ours[2].dtype == torch.float32      # dgamma in float32
    ref = _grads(_torch_bn, *(t.double() for t in (x, w, b, dy)))
    eps = torch.finfo(dtype).eps
    for name, a, r in zip(("y", "dx", "dgamma", "dbeta"), ours, ref):
        err = float((a.double() - r).abs().max() / (1 + r.abs().max()))
        assert err < 2 * eps, (name, err)


def test_eval_kernel_matches_pytorch_in_every_layout():
    for shape, channels_last, tile in RAGGED:
        x, w, b, _ = _inputs(shape, torch.float32)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        C = shape[1]
        mean, var = torch.randn(C).to(DEVICE), (0.5 + torch.rand(C)).to(DEVICE)
        y = K.eval_batch_norm(x, mean, var, w, b, 1e-5, tile=tile)
        ref = torch.nn.functional.batch_norm(x, mean, var, w, b, False, 0.0, 1e-5)
        assert torch.allclose(y, ref, atol=1e-5), shape
        assert torch.equal(y, K.eval_batch_norm(x, mean, var, w, b, 1e-5, tile=tile, force_int64=True))
        assert torch.allclose(K.eval_batch_norm(x, mean, var, None, None, 1e-5, tile=tile),
                              torch.nn.functional.batch_norm(x, mean, var, None, None, False), atol=1e-5)


# --- the launch plan: pure shape arithmetic, so sizes past 2**31 cost nothing ----------------------

def test_launch_plan_covers_the_tensor_with_contiguous_tiles():
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(int(s) for s in rng.integers(1, 300, size=rng.integers(2, 5)))
        channels_last = bool(rng.integers(2)) and len(shape) == 4
        tile = int(2 ** rng.integers(4, 13))
        p = launch_plan(shape, channels_last, tile)
        N, C, L = shape[0], shape[1], math.prod(shape[2:])
        assert p.block_a * p.block_b <= tile and p.block_b & (p.block_b - 1) == 0
        if p.layout == "nlc":        # rows of C channels: every element in exactly one tile
            assert p.grid[0] * p.block_a >= N * L > (p.grid[0] - 1) * p.block_a
            assert p.grid[1] * p.block_b >= C > (p.grid[1] - 1) * p.block_b
        else:                         # one channel per grid column, tiles of examples x positions
            gl = math.ceil(L / p.block_b)
            assert p.grid == (math.ceil(N / p.block_a) * gl, C)
        assert p.tiles == p.grid[0] and p.partial_grid == (p.partials, p.grid[1])
        assert p.partials * p.tiles_per_program >= p.tiles > (p.partials - 1) * p.tiles_per_program
        assert p.partials <= K.batchnorm.MAX_PARTIALS and p.max_offset >= N * C * L - 1
        assert p.int64 == (p.max_offset > INT32_MAX)


def test_int64_is_chosen_exactly_when_an_offset_passes_int32():
    # (2**15, 2**16): 2**31 elements, the last at offset 2**31 - 1, tiles divide evenly: int32 suffices
    exact = launch_plan((2**15, 2**16))
    assert exact.max_offset == INT32_MAX and not exact.int64
    assert launch_plan((2**15 + 1, 2**16)).int64                     # one row more
    # ResNet-50's first BN at batch 256 (206M values): int32; at batch 4096 (3.3G values): int64
    assert not launch_plan((256, 64, 112, 112)).int64
    assert launch_plan((4096, 64, 112, 112)).int64
    assert launch_plan((4096, 64, 112, 112), channels_last=True).int64
    # a ragged last tile: masked lanes past the end can overflow even when the data fit
    n = (INT32_MAX + 1) // 1024 - 1          # N * 1024 just below 2**31 ...
    p = launch_plan((n, 1, 1000), tile=DEFAULT_TILE)
    assert n * 1000 - 1 <= INT32_MAX
    assert p.max_offset >= n * 1000 - 1
    # one program per tile: the 64-channel layer has hundreds of programs, not 64
    big = launch_plan((256, 64, 56, 56))
    assert big.programs >= 100 * 64 and big.partial_bytes < 1e-3 * 256 * 64 * 56 * 56 * 4
    # batch 4096 channels-last: 802816 tiles, each partial-sum program takes several, the combine stays small
    huge = launch_plan((4096, 64, 112, 112), channels_last=True)
    assert huge.tiles == 4096 * 112 * 112 // 64 and huge.partials <= 1024 and huge.tiles_per_program == 784
    with pytest.raises(ValueError, match="power of two"):
        launch_plan((4, 3), tile=100)


def test_statistics_and_affine_none():
    x, _, _, dy = _inputs((6, 3, 4), torch.float64)
    y, mu, var, inv_std = K.batchnorm_forward(x, None, None)
    dims = (0, 2)
    assert torch.allclose(mu, x.mean(dims)) and torch.allclose(var, x.var(dims, correction=0))
    assert torch.allclose(inv_std, 1 / torch.sqrt(var + 1e-5))
    assert torch.allclose(y, _torch_bn(x, None, None), atol=1e-12)
    dx, dgamma, dbeta = K.batchnorm_backward(dy, x, mu, inv_std, None)
    xr = x.clone().requires_grad_(True)
    (dx_ref,) = torch.autograd.grad(_torch_bn(xr, None, None), xr, dy)
    assert torch.allclose(dx, dx_ref, atol=1e-12)
    assert torch.allclose(dbeta, dy.sum(dims)) and torch.allclose(dgamma, (dy * (x - mu[:, None]) * inv_std[:, None]).sum(dims))


def test_large_mean_small_spread_keeps_the_variance_in_float32():
    # mean 1e4, std 1e-2: the naive E[x^2] - E[x]^2 in float32 loses every digit of the variance
    x, w, b, _ = _inputs((64, 4), torch.float32, loc=1e4, scale=1e-2)
    _, mu, var, _ = K.batchnorm_forward(x, w, b)
    exact = x.double().var(0, correction=0)
    assert ((var.double() - exact).abs() / exact).max() < 1e-3
    naive = (x * x).mean(0) - x.mean(0) ** 2
    assert ((naive.double() - exact).abs() / exact).max() > 0.1     # what the shift avoids


def test_gradcheck_float64():
    x, w, b, _ = _inputs((4, 2, 3), torch.float64)
    args = tuple(t.requires_grad_(True) for t in (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w, b: _triton_bn(x, w, b), args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_modules_track_running_statistics_like_pytorch(momentum):
    torch.manual_seed(0)
    ours = K.TritonBatchNorm2d(3, momentum=momentum).to(DEVICE)
    ref = torch.nn.BatchNorm2d(3, momentum=momentum).to(DEVICE)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ref.weight.copy_(ours.weight)
    for step in range(3):
        x = (torch.randn(4, 3, 5, 5) * (1 + step) + step).to(DEVICE)
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(ours, key).float(), getattr(ref, key).float(), atol=1e-5), key
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 5, 5).to(DEVICE)
    assert torch.allclose(ours(x), ref(x), atol=1e-5)
    layer = K.TritonBatchNorm1d(4).to(DEVICE)
    assert torch.allclose(layer(torch.ones(6, 4).to(DEVICE).cumsum(0)),
                          torch.nn.BatchNorm1d(4).to(DEVICE)(torch.ones(6, 4).to(DEVICE).cumsum(0)), atol=1e-5)


def test_a_small_cnn_trains_the_same_with_either_layer():
    def net(bn):
        torch.manual_seed(1)
        return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), bn(4), torch.nn.ReLU(),
                                   torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)).double().to(DEVICE)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 1, 8, 8, generator=g, dtype=torch.float64).to(DEVICE)
    labels = torch.randint(0, 3, (16,), generator=g).to(DEVICE)
    models = [net(torch.nn.BatchNorm2d), net(K.TritonBatchNorm2d)]
    for model in models:
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(5):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), labels).backward()
            opt.step()
    for p, q in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.allclose(p.double(), q.double(), atol=1e-10)


def _t(*shape, dtype=torch.float32):
    return torch.ones(shape, dtype=dtype, device=DEVICE).cumsum(0)


@pytest.mark.parametrize("call, message", [
    (lambda: K.batchnorm_forward(_t(5)), "must have shape (N, C, *)"),
    (lambda: K.batchnorm_forward(_t(1, 3)), "more than 1 value per channel"),
    (lambda: K.batchnorm_forward(_t(4, 3), _t(2)), "weight has shape (2,)"),
    (lambda: K.batchnorm_forward(_t(4, 3, dtype=torch.int64)), "float16, bfloat16, float32 or float64"),
    (lambda: K.batchnorm_backward(_t(4, 2), _t(4, 3), _t(3), _t(3)), "dy has shape (4, 2)"),
    (lambda: K.batchnorm_forward(torch.ones(4, 3, device="meta" if DEVICE == "cpu" else "cpu")),
     "TRITON_INTERPRET"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        call()


def test_bench_counts_passes_and_times_each_method():
    passes = bench.traffic((16, 8, 6, 6))
    assert passes["torch"] == pytest.approx(5.0, abs=0.05)          # read x, write y; read x, dy, write dx
    assert passes["triton"] == 8
    assert passes["composite"] > 2 * passes["bnlib.torch"] > 4 * passes["torch"]
    rows = bench.time_methods((16, 8, 6, 6), "cpu", repeats=2)
    assert [r["method"] for r in rows] == ["composite", "bnlib.torch", "torch"]   # no Triton timing on a CPU
    assert all(r["ms"] > 0 and r["gbps"] > 0 for r in rows)
    assert next(r for r in rows if r["method"] == "torch")["ratio"] == 1.0
    with pytest.raises(ValueError, match="unknown methods"):
        bench.time_methods((4, 2), "cpu", methods=["torch", "cudnn"])
    assert "composite" in bench.format_rows(rows)


def test_composite_matches_pytorch():
    x, w, b, dy = _inputs((6, 3, 4, 4), torch.float64)
    for a, r in zip(_grads(bench.composite_batch_norm, x, w, b, dy), _grads(_torch_bn, x, w, b, dy)):
        assert torch.allclose(a, r, atol=1e-10)


def test_torch_compile_of_the_composite_matches_pytorch():
    # torch.compile fuses chapter 3's equations (chapter 8 times it); same values and gradients
    x, w, b, dy = (t.cpu() for t in _inputs((8, 3, 4, 4), torch.float32))
    for a, r in zip(_grads(bench.compiled_composite, x, w, b, dy), _grads(_torch_bn, x, w, b, dy)):
        assert torch.allclose(a, r, atol=1e-4)
    assert bench.time_methods((8, 3, 4, 4), "cpu", repeats=1, methods=["torch.compile", "torch"])[0]["ms"] > 0
