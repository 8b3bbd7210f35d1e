"""Training-mode batch normalisation as two fused Triton kernels (chapter 8).

Chapter 3 derived the forward pass (``ch3-forward``) and the compact backward
pass (``ch3-dx``); chapter 8 counts how many times each implementation reads
and writes the activation tensor, and shows that this count, not the
arithmetic, sets the time.  The two kernels here do all of batch
normalisation for one channel in one *program* (one instance of the kernel;
the grid has one program per channel):

forward, :func:`_bn_forward_kernel`, for channel ``c`` with ``m`` values
  1. read ``x`` once, accumulating ``sum(d)`` and ``sum(d**2)`` of the
     shifted values ``d = x - K`` (``K``: the channel's first value), so
     that ``var = mean(d**2) - mean(d)**2`` keeps its precision when the mean
     is large and the spread small (the "shifted data" algorithm);
  2. read ``x`` again and write ``y = (x - mu) * scale + beta`` with
     ``scale = gamma * inv_std`` (not ``x * scale + (beta - mu * scale)``:
     with a large mean that form subtracts two large numbers).

backward, :func:`_bn_backward_kernel`
  1. read ``x`` and ``dy`` once, accumulating ``sum(dy)`` (= dbeta) and
     ``sum(dy * x_hat)`` (= dgamma), with ``x_hat`` recomputed from ``x``,
     ``mu`` and ``inv_std`` instead of stored;
  2. read them again and write ``dx = gamma * inv_std * (dy - sum(dy) / m
     - x_hat * sum(dy * x_hat) / m)``.

So a training step moves the activation-sized tensors ``3 + 5 = 8`` times
(:data:`PASSES`); besides ``x`` itself, the forward pass saves only ``mu``
and ``inv_std`` (two numbers per channel) for the backward pass.

Where the kernels run.  On a machine with a CUDA GPU Triton compiles them for
it and they take CUDA tensors.  Without one, importing :mod:`bnlib.kernels`
sets ``TRITON_INTERPRET=1`` (unless it is set already), and the same kernels
run in Triton's interpreter on CPU tensors: slowly, block by block in NumPy,
but with exactly the code that would run on the GPU.  This is how the tests
and chapter 8 check the kernels without a GPU.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["batchnorm_forward", "batchnorm_backward", "TritonBatchNormFunction",
           "batch_norm", "interpreted", "PASSES"]

PASSES = {"forward": 3, "backward": 5}   # activation-sized reads + writes per kernel
_ACCUMULATE_IN_FLOAT32 = (torch.float16, torch.bfloat16, torch.float32)


def interpreted() -> bool:
    """True when the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    from triton import knobs

    return bool(knobs.runtime.interpret)


@triton.jit
def _bn_forward_kernel(X, Y, W, B, MEAN, VAR, INV_STD, N, C, L, eps,
                       HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                       ACC: tl.constexpr, BLOCK: tl.constexpr):
    # One program normalises channel c of x viewed as (N, C, L), contiguous.
    c = tl.program_id(0)
    m = N * L
    first = c * L                                   # offset of x[0, c, 0]
    K = tl.load(X + first).to(ACC)                  # the shift of the shifted-data algorithm
    sum_d = tl.zeros([BLOCK], dtype=ACC)
    sum_d2 = tl.zeros([BLOCK], dtype=ACC)
    for start in range(0, m, BLOCK):                # pass 1: read x, accumulate
        j = start + tl.arange(0, BLOCK)             # j-th value of the channel: n = j // L, l = j % L
        inside = j < m
        offsets = (j // L) * (C * L) + first + (j % L)
        x = tl.load(X + offsets, mask=inside, other=0.0).to(ACC)
        d = tl.where(inside, x - K, 0.0)
        sum_d += d
        sum_d2 += d * d
    mean_d = tl.sum(sum_d, axis=0) / m
    var = tl.maximum(tl.sum(sum_d2, axis=0) / m - mean_d * mean_d, 0.0)
    mu = K + mean_d
    inv_std = 1.0 / tl.sqrt(var + eps)
    tl.store(MEAN + c, mu)
    tl.store(VAR + c, var)
    tl.store(INV_STD + c, inv_std)

    scale = inv_std
    if HAS_W:
        scale = scale * tl.load(W + c).to(ACC)
    beta = 0.0
    if HAS_B:
        beta = tl.load(B + c).to(ACC)
    for start in range(0, m, BLOCK):                # pass 2: read x, write y
        j = start + tl.arange(0, BLOCK)
        inside = j < m
        offsets = (j // L) * (C * L) + first + (j % L)
        x = tl.load(X + offsets, mask=inside, other=0.0).to(ACC)
        tl.store(Y + offsets, ((x - mu) * scale + beta).to(Y.dtype.element_ty), mask=inside)


@triton.jit
def _bn_backward_kernel(DY, X, W, MEAN, INV_STD, DX, DW, DB, N, C, L,
                        HAS_W: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    # One program differentiates channel c: eq. ch3-dx with x_hat recomputed from x.
    c = tl.program_id(0)
    m = N * L
    first = c * L
    mu = tl.load(MEAN + c)
    inv_std = tl.load(INV_STD + c)
    sum_dy = tl.zeros([BLOCK], dtype=ACC)
    sum_dy_xhat = tl.zeros([BLOCK], dtype=ACC)
    for start in range(0, m, BLOCK):                # pass 1: read x and dy, accumulate
        j = start + tl.arange(0, BLOCK)
        inside = j < m
        offsets = (j // L) * (C * L) + first + (j % L)
        x = tl.load(X + offsets, mask=inside, other=0.0).to(ACC)
        dy = tl.load(DY + offsets, mask=inside, other=0.0).to(ACC)
        x_hat = tl.where(inside, (x - mu) * inv_std, 0.0)
        sum_dy += dy
        sum_dy_xhat += dy * x_hat
    dbeta = tl.sum(sum_dy, axis=0)
    dgamma = tl.sum(sum_dy_xhat, axis=0)
    tl.store(DB + c, dbeta)
    tl.store(DW + c, dgamma)

    scale = inv_std
    if HAS_W:
        scale = scale * tl.load(W + c).to(ACC)
    mean_dy = dbeta / m
    mean_dy_xhat = dgamma / m
    for start in range(0, m, BLOCK):                # pass 2: read x and dy, write dx
        j = start + tl.arange(0, BLOCK)
        inside = j < m
        offsets = (j // L) * (C * L) + first + (j % L)
        x = tl.load(X + offsets, mask=inside, other=0.0).to(ACC)
        dy = tl.load(DY + offsets, mask=inside, other=0.0).to(ACC)
        x_hat = (x - mu) * inv_std
        dx = scale * (dy - mean_dy - x_hat * mean_dy_xhat)
        tl.store(DX + offsets, dx.to(DX.dtype.element_ty), mask=inside)


def _accumulator(dtype: torch.dtype):
    if dtype == torch.float64:
        return torch.float64, tl.float64
    if dtype in _ACCUMULATE_IN_FLOAT32:
        return torch.float32, tl.float32
    raise TypeError(f"the Triton kernels take float16, bfloat16, float32 or float64 tensors, got {dtype}")


def _as_ncl(x: Tensor, what: str = "x") -> tuple[Tensor, int, int, int]:
    """``x`` of shape (N, C, *) as a contiguous tensor with its (N, C, L) sizes."""
    if x.dim() < 2:
        raise ValueError(f"{what} must have shape (N, C, *), got {x.dim()}-D input of size {tuple(x.shape)}")
    if x.device.type == "cpu" and not interpreted():
        raise ValueError(f"{what} is a CPU tensor, but Triton is compiling for the GPU: move it to "
                         "CUDA, or set TRITON_INTERPRET=1 before importing bnlib.kernels")
    if x.device.type != "cpu" and interpreted():
        raise ValueError(f"{what} is on {x.device}, but the kernels run in Triton's CPU interpreter "
                         "(TRITON_INTERPRET=1): pass a CPU tensor")
    N, C = x.shape[0], x.shape[1]
    L = math.prod(x.shape[2:])
    return x.contiguous(), N, C, L


def _check_channel_vector(p: Tensor | None, name: str, x: Tensor) -> None:
    if p is not None and p.shape != (x.shape[1],):
        raise ValueError(f"{name} has shape {tuple(p.shape)} but x of size {tuple(x.shape)} has "
                         f"{x.shape[1]} channels along axis 1: {name} must have shape ({x.shape[1]},)")


def _block_size(m: int) -> int:
    return max(16, min(1024, triton.next_power_of_2(m)))


def batchnorm_forward(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                      eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training-mode BN of ``x`` (N, C, *) with the fused forward kernel.

    Returns ``(y, mu, var, inv_std)``: ``y`` like ``x``; the batch mean ``mu``,
    the biased batch variance ``var`` and ``inv_std = 1 / sqrt(var + eps)``,
    each of shape ``(C,)`` in the accumulation precision (float32, or float64
    for float64 input).
    """
    x, N, C, L = _as_ncl(x)
    _check_channel_vector(weight, "weight", x)
    _check_channel_vector(bias, "bias", x)
    if N * L < 2:
        raise ValueError(f"expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    acc_torch, acc_tl = _accumulator(x.dtype)
    y = torch.empty_like(x)
    mu, var, inv_std = (torch.empty(C, dtype=acc_torch, device=x.device) for _ in range(3))
    _bn_forward_kernel[(C,)](
        x, y, weight if weight is not None else x, bias if bias is not None else x,
        mu, var, inv_std, N, C, L, eps,
        HAS_W=weight is not None, HAS_B=bias is not None,
        ACC=acc_tl, BLOCK=_block_size(N * L))
    return y, mu, var, inv_std


def batchnorm_backward(dy: Tensor, x: Tensor, mu: Tensor, inv_std: Tensor,
                       weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, dgamma, dbeta)`` for the upstream gradient ``dy`` (eq. ``ch3-dx``), fused.

    ``mu`` and ``inv_std`` are what :func:`batchnorm_forward` returned for ``x``.
    ``dgamma`` and ``dbeta`` come back in the accumulation precision.
    """
    x, N, C, L = _as_ncl(x)
    if dy.shape != x.shape:
        raise ValueError(f"dy has shape {tuple(dy.shape)}, x has {tuple(x.shape)}: they must match")
    dy = dy.contiguous()
    acc_torch, acc_tl = _accumulator(x.dtype)
    dx = torch.empty_like(x)
    dgamma = torch.empty(C, dtype=acc_torch, device=x.device)
    dbeta = torch.empty(C, dtype=acc_torch, device=x.device)
    _bn_backward_kernel[(C,)](
        dy, x, weight if weight is not None else x, mu, inv_std, dx, dgamma, dbeta, N, C, L,
        HAS_W=weight is not None, ACC=acc_tl, BLOCK=_block_size(N * L))
    return dx, dgamma, dbeta


class TritonBatchNormFunction(torch.autograd.Function):
    """Training-mode BN whose forward and backward are the two fused kernels.

    ``TritonBatchNormFunction.apply(x, weight, bias, eps)`` returns ``(y, mu,
    var)`` with the biased batch variance ``var`` (the statistics carry no
    gradient), the same contract as ``BatchNormFunction.apply(..., True)`` in
    :mod:`bnlib.torch.functional`.  It saves ``x``, ``mu`` and ``inv_std``:
    the backward kernel recomputes ``x_hat`` from them.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = 1e-5):
        y, mu, var, inv_std = batchnorm_forward(x, weight, bias, eps)
        ctx.save_for_backward(x, mu, inv_std, weight)
        ctx.dtypes = (weight.dtype if weight is not None else None,
                      bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(mu, var)
        return y, mu, var

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, _dmu, _dvar):
        x, mu, inv_std, weight = ctx.saved_tensors
        dx, dgamma, dbeta = batchnorm_backward(dy, x, mu, inv_std, weight)
        w_dtype, b_dtype = ctx.dtypes
        return (dx if ctx.needs_input_grad[0] else None,
                dgamma.to(w_dtype) if ctx.needs_input_grad[1] else None,
                dbeta.to(b_dtype) if ctx.needs_input_grad[2] else None,
                None)


def batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, *, check_finite: bool = False) -> Tensor:
    """:func:`torch.nn.functional.batch_norm` with the Triton kernels in training mode.

    Training mode normalises with :class:`TritonBatchNormFunction` and updates
    the running statistics as PyTorch does (unbiased variance, ``momentum``
    weighing the new batch; chapter 5).  Evaluation mode is one per-channel
    affine map and uses :func:`bnlib.torch.functional.batch_norm` (PyTorch
    ops).  ``check_finite`` is accepted for the same signature as
    :func:`bnlib.torch.functional.batch_norm` and ignored (the kernels never
    check, like PyTorch's).
    """
    from bnlib.torch import functional as F

    if not training:
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if x.numel() == 0:
        return F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)
    y, mu, var = TritonBatchNormFunction.apply(x, weight, bias, eps)
    if running_mean is not None:
        _check_channel_vector(running_mean, "running_mean", x)
        _check_channel_vector(running_var, "running_var", x)
        m = x.numel() // x.shape[1]
        with torch.no_grad():
            running_mean.mul_(1.0 - momentum).add_(mu.to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1.0 - momentum).add_((var * (m / (m - 1))).to(running_var.dtype),
                                                  alpha=momentum)
    return y
