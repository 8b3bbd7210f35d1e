"""Eval-mode batch norm as one Triton kernel (exercise 8.2 and its tiled version).

In evaluation mode batch norm is the per-channel affine map ``y = x * s + t``
(chapter 5, eq. ch5-fold) with ``s = gamma / sqrt(running_var + eps)`` and
``t = beta - running_mean * s``; there is nothing to reduce.

* :func:`affine_per_channel_kernel`: the reference answer to exercise 8.2.
  Each program takes ``BLOCK`` consecutive values of contiguous ``x`` viewed as
  (N, C, L), finds each value's channel ``(i // L) % C`` and reads its ``s``
  and ``t``.  One read of ``x``, one write of ``y``.
* :func:`eval_batch_norm`: the library version.  It covers ``x`` with the same
  tiles as the training kernels (:func:`bnlib.kernels.batchnorm.launch_plan`),
  so it reads (N, C) and channels-last input along the channels and switches to
  int64 offsets for tensors past ``2**31`` elements, and it computes ``s`` and
  ``t`` for its channels itself: one launch, no PyTorch ops.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from bnlib.kernels.batchnorm import (DEFAULT_TILE, _accumulator, _arrange, _channels, _check_channel_vector,
                                     _gl, _tile, launch_plan)

__all__ = ["affine_per_channel_kernel", "eval_batch_norm"]


@triton.jit
def affine_per_channel_kernel(X, Y, SCALE, SHIFT, C, L, numel, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = i < numel
    channel = (i // L) % C
    x = tl.load(X + i, mask=inside, other=0.0)
    s = tl.load(SCALE + channel, mask=inside, other=0.0)
    t = tl.load(SHIFT + channel, mask=inside, other=0.0)
    tl.store(Y + i, x * s + t, mask=inside)


@triton.jit
def _eval_kernel(X, Y, MEAN, VAR, W, B, N, C, L, GL, eps,
                 HAS_W: tl.constexpr, HAS_B: tl.constexpr, NLC: tl.constexpr, INT64: tl.constexpr,
                 ACC: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    g = tl.program_id(0)
    cb = tl.program_id(1)
    offsets, mask = _tile(g, cb, N, C, L, GL, NLC, INT64, BLOCK_A, BLOCK_B)
    ch, ch_ok = _channels(cb, C, NLC, BLOCK_B)
    s = 1.0 / tl.sqrt(tl.load(VAR + ch, mask=ch_ok, other=1.0).to(ACC) + eps)
    if HAS_W:
        s = s * tl.load(W + ch, mask=ch_ok, other=0.0).to(ACC)
    t = -tl.load(MEAN + ch, mask=ch_ok, other=0.0).to(ACC) * s
    if HAS_B:
        t = t + tl.load(B + ch, mask=ch_ok, other=0.0).to(ACC)
    if NLC:
        s = s[None, :]
        t = t[None, :]
    x = tl.load(X + offsets, mask=mask, other=0.0).to(ACC)
    tl.store(Y + offsets, (x * s + t).to(Y.dtype.element_ty), mask=mask)


def eval_batch_norm(x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor | None = None,
                    bias: Tensor | None = None, eps: float = 1e-5, *, tile: int = DEFAULT_TILE,
                    force_int64: bool = False) -> Tensor:
    """``torch.nn.functional.batch_norm(x, running_mean, running_var, weight, bias, False, 0, eps)``
    as one tiled Triton kernel; ``y`` in ``x``'s dtype and memory format (no gradient)."""
    x, layout = _arrange(x)
    for name, p in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _check_channel_vector(p, name, x)
    _, acc_tl = _accumulator(x.dtype)
    plan = launch_plan(x.shape, channels_last=(layout == "nlc"), tile=tile, force_int64=force_int64)
    y = torch.empty_like(x)
    _eval_kernel[plan.grid](
        x, y, running_mean, running_var, weight if weight is not None else running_mean,
        bias if bias is not None else running_mean, plan.N, plan.C, plan.L, _gl(plan), eps,
        HAS_W=weight is not None, HAS_B=bias is not None, NLC=plan.layout == "nlc",
        INT64=plan.int64, ACC=acc_tl, BLOCK_A=plan.block_a, BLOCK_B=plan.block_b)
    return y
