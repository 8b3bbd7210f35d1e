"""The reference answer to exercise 8.2: eval-mode BN as one Triton kernel.

In evaluation mode batch norm is the per-channel affine map ``y = x * s + t``
(chapter 5, eq. ch5-fold); there is nothing to reduce, so the kernel is a
plain element-wise one: each program takes ``BLOCK`` consecutive values of
``x`` viewed as (N, C, L), finds each value's channel ``(i // L) % C`` and
reads its ``s`` and ``t``.  One read of ``x``, one write of ``y``.
"""
import triton
import triton.language as tl

__all__ = ["affine_per_channel_kernel"]


@triton.jit
def affine_per_channel_kernel(X, Y, SCALE, SHIFT, C, L, numel, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = i < numel
    channel = (i // L) % C
    x = tl.load(X + i, mask=inside, other=0.0)
    s = tl.load(SCALE + channel, mask=inside, other=0.0)
    t = tl.load(SHIFT + channel, mask=inside, other=0.0)
    tl.store(Y + i, x * s + t, mask=inside)
