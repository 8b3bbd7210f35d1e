"""Training-mode batch normalisation as Triton kernels with a split reduction (chapter 8).

Chapter 3 derived the forward pass (``ch3-forward``) and the compact backward
pass (``ch3-dx``).  Both need per-channel sums over ``m = N * H * W`` values
before they can write a single output, and on a GPU that reduction has to be
spread over many *programs* (instances of a kernel) to fill the machine: a
(256, 64, 56, 56) activation has 64 channels but a GPU has over a hundred
multiprocessors, each wanting several programs.  So each pass is split in
three launches:

1. **partial sums** (:func:`_partial_sums_kernel`): ``x`` is covered with
   *tiles*; each program reduces one tile (or, for very large tensors, a few
   consecutive ones) to one partial sum per channel and writes it to a small
   ``(G, C)`` buffer (``G`` partial sums per channel, at most about
   :data:`MAX_PARTIALS`);
2. **combine** (:func:`_combine_kernel`): one program per block of channels
   adds up the ``G`` partial sums (and, in the forward pass, turns them into
   ``mu``, ``var`` and ``inv_std``);
3. **apply** (:func:`_apply_kernel`): the grid covers ``x`` again, each program
   writing ``y`` (forward) or ``dx`` (backward) for its tile.

Two kernels instead of atomics: the partial sums could be added straight into
a ``(C,)`` vector with ``tl.atomic_add``, saving the combine launch, but the
order of floating-point additions would then depend on which program finishes
first (the result changes from run to run in the last bits) and many programs
would contend for the same ``C`` addresses.  The partial buffer is tiny (two
numbers per tile and channel), so the second launch costs a few microseconds
and buys a deterministic result.

Tiles read memory contiguously.  Two layouts:

* ``"ncl"``, contiguous (N, C, *) input viewed as (N, C, L): a channel's values
  come in runs of ``L`` consecutive elements, one run per example; a tile is
  ``BLOCK_A`` examples x ``BLOCK_B`` consecutive positions of one channel.
* ``"nlc"``, channels innermost: 2-D (N, C) input and channels-last (N, H, W, C)
  memory (``x.to(memory_format=torch.channels_last)``), viewed as ``R = N * L``
  rows of ``C`` values; a tile is ``BLOCK_A`` rows x ``BLOCK_B`` channels, so
  neighbouring lanes read neighbouring addresses (the old one-program-per-
  channel kernel read (N, C) input down a column, with stride ``C``).

Numerics.  The statistics use shifted sums: every program subtracts the same
per-channel shift ``K`` (the channel's first value) before summing ``d`` and
``d**2``, so partial sums from different tiles simply add, and
``var = mean(d**2) - mean(d)**2`` keeps its precision when the mean is large
and the spread small (the "shifted data" algorithm).  float16 and bfloat16
input is read, accumulated and combined in float32 (float64 input in float64);
only ``y`` and ``dx`` are written in the input's precision.

Offsets.  Triton computes addresses in the integer type of its operands,
int32 for program ids and for small sizes; past ``2**31 - 1`` elements the
offsets wrap around.  :func:`launch_plan` computes the largest offset any lane
forms (masked lanes of a ragged last tile included) and switches the kernels
to int64 arithmetic (``INT64=True``) when it does not fit, without allocating
anything, so the choice is tested on shapes of 8 GB and more.

Traffic.  Forward: read ``x`` (partial sums), read ``x`` and write ``y``
(apply): 3 activation-sized passes.  Backward: read ``x`` and ``dy``, then read
them again and write ``dx``: 5 passes (:data:`PASSES`).  A library kernel with
the same two-phase structure moves the same 8; only keeping a channel's values
on the chip between the phases (possible when they fit) saves a pass.

Where the kernels run.  On a machine with a CUDA GPU Triton compiles them for
it and they take CUDA tensors.  Without one, importing :mod:`bnlib.kernels`
sets ``TRITON_INTERPRET=1`` (unless it is set already), and the same kernel
*source* runs in Triton's interpreter on CPU tensors, block by block in NumPy.
That checks the indexing, masks and arithmetic, not what the GPU adds: the
interpreter has no memory coalescing, occupancy or scheduling to measure; its
32-bit integers wrap around as the GPU's do, but a tensor large enough to make
them wrap (over ``2**31`` elements, 8 GB of float32) is beyond what a test can
walk through in the interpreter, which is why :func:`launch_plan`'s choice is
tested as arithmetic; and the GPU may compute ``tl.sqrt`` and ``/``
approximately (Triton's ``tl.sqrt_rn`` and ``tl.div_rn`` round as IEEE
requires), where NumPy's are exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["batchnorm_forward", "batchnorm_backward", "TritonBatchNormFunction",
           "batch_norm", "interpreted", "PASSES", "LaunchPlan", "launch_plan", "layout_of",
           "INT32_MAX", "DEFAULT_TILE", "MAX_PARTIALS"]

PASSES = {"forward": 3, "backward": 5}   # activation-sized reads + writes per direction
INT32_MAX = 2**31 - 1
DEFAULT_TILE = 4096                       # elements per program's tile (16 KB of float32)
MAX_PARTIALS = 1024                       # partial sums per channel, at most about
_ACCUMULATE_IN_FLOAT32 = (torch.float16, torch.bfloat16, torch.float32)
_MAX_GRID_Y = 65535                       # CUDA's limit on the second grid dimension


def interpreted() -> bool:
    """True when the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    from triton import knobs

    return bool(knobs.runtime.interpret)


# --------------------------------------------------------------------------
# The launch plan: pure Python, no tensors
# --------------------------------------------------------------------------


def _pow2_at_most(n: int, cap: int) -> int:
    """The smallest power of two >= ``n``, capped at ``cap`` (and at least 1)."""
    return max(1, min(cap, 1 << max(0, math.ceil(math.log2(max(n, 1))))))


@dataclass(frozen=True)
class LaunchPlan:
    """How the kernels cover a tensor: tile, grid, partial sums and offset width.

    ``layout`` is ``"ncl"`` or ``"nlc"`` (module docstring); ``N, C, L`` the
    sizes with ``L`` the product of the spatial sizes; a tile is ``block_a`` x
    ``block_b`` elements, ``tiles`` of them per channel (block); ``grid =
    (tiles, channel_blocks)`` is the grid of the apply kernel, one program per
    tile.  The partial-sum kernel's programs each reduce ``tiles_per_program``
    consecutive tiles, so that a channel gets at most about
    :data:`MAX_PARTIALS` partial sums (``partials``, grid ``partial_grid``)
    and the combine kernel (grid ``combine_grid``) stays small.  ``max_offset``
    is the largest element offset any lane computes (masked lanes of ragged or
    surplus tiles included) and ``int64`` whether that needs 64-bit offsets.
    """

    layout: str
    N: int
    C: int
    L: int
    block_a: int
    block_b: int
    grid: tuple[int, int]
    tiles: int
    tiles_per_program: int
    partials: int
    partial_grid: tuple[int, int]
    combine_grid: tuple[int]
    block_c_combine: int
    max_offset: int
    int64: bool

    @property
    def programs(self) -> int:
        """Programs in the grid of the apply kernel (one per tile)."""
        return self.grid[0] * self.grid[1]

    @property
    def partial_bytes(self) -> int:
        """Bytes of the two float32 partial-sum buffers, ``2 * G * C * 4``."""
        return 2 * self.partials * self.C * 4


def launch_plan(shape, channels_last: bool = False, tile: int = DEFAULT_TILE,
                force_int64: bool = False) -> LaunchPlan:
    """The :class:`LaunchPlan` for input of ``shape`` (N, C, *), computed without any tensor.

    ``channels_last`` says that the channel axis is innermost in memory
    (channels-last 4-D input); 2-D (N, C) input, and any input with ``L = 1``,
    is planned as ``"nlc"`` anyway (its channels are innermost).  ``tile`` is
    the number of elements per program (a power of two).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must be (N, C, *), got {shape}")
    if tile < 1 or tile & (tile - 1):
        raise ValueError(f"tile must be a power of two, got {tile}")
    N, C = shape[0], shape[1]
    L = math.prod(shape[2:])
    layout = "nlc" if (channels_last or L == 1) else "ncl"
    if layout == "nlc":
        R = N * L
        block_b = _pow2_at_most(C, min(128, tile))             # channels per tile (contiguous)
        block_a = _pow2_at_most(R, max(1, tile // block_b))    # rows per tile
        tiles = -(-R // block_a)
        channel_blocks = -(-C // block_b)
    else:
        if C > _MAX_GRID_Y:
            raise ValueError(f"{C} channels exceed the grid limit of {_MAX_GRID_Y} for "
                             "contiguous (N, C, *) input; use channels-last memory")
        block_b = _pow2_at_most(L, min(1024, tile))            # positions per tile (contiguous)
        block_a = _pow2_at_most(N, max(1, tile // block_b))    # examples per tile
        gl = -(-L // block_b)
        tiles = -(-N // block_a) * gl
        channel_blocks = C
    per_program = -(-tiles // MAX_PARTIALS)
    partials = -(-tiles // per_program)
    last_tile = partials * per_program - 1                     # surplus tiles of the last program: masked
    if layout == "nlc":
        max_offset = ((last_tile + 1) * block_a - 1) * C + channel_blocks * block_b - 1
    else:
        max_offset = ((last_tile // gl + 1) * block_a - 1) * C * L + (C - 1) * L + gl * block_b - 1
    block_c_combine = _pow2_at_most(C, 16)
    return LaunchPlan(layout=layout, N=N, C=C, L=L, block_a=block_a, block_b=block_b,
                      grid=(tiles, channel_blocks), tiles=tiles, tiles_per_program=per_program,
                      partials=partials, partial_grid=(partials, channel_blocks),
                      combine_grid=(-(-C // block_c_combine),), block_c_combine=block_c_combine,
                      max_offset=max_offset, int64=force_int64 or max_offset > INT32_MAX)


# --------------------------------------------------------------------------
# The kernels
# --------------------------------------------------------------------------


@triton.jit
def _tile(g, cb, N, C, L, GL, NLC: tl.constexpr, INT64: tl.constexpr,
          BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    """Offsets and mask of tile ``g`` (of channel block ``cb``): (BLOCK_A, BLOCK_B) each."""
    if NLC:   # rows r = n * L + l of C channels; lanes along a row are neighbours in memory
        r = g * BLOCK_A + tl.arange(0, BLOCK_A)
        ch = cb * BLOCK_B + tl.arange(0, BLOCK_B)
        if INT64:
            r = r.to(tl.int64)
        offsets = r[:, None] * C + ch[None, :]
        mask = (r[:, None] < N * L) & (ch[None, :] < C)
    else:     # examples n of one channel cb, positions l: runs of L consecutive values
        n = (g // GL) * BLOCK_A + tl.arange(0, BLOCK_A)
        pos = (g % GL) * BLOCK_B + tl.arange(0, BLOCK_B)
        c = cb
        if INT64:
            n = n.to(tl.int64)
            c = c.to(tl.int64)
        offsets = n[:, None] * C * L + c * L + pos[None, :]
        mask = (n[:, None] < N) & (pos[None, :] < L)
    return offsets, mask


@triton.jit
def _channels(cb, C, NLC: tl.constexpr, BLOCK_B: tl.constexpr):
    """The channels of channel block ``cb`` and their mask: BLOCK_B consecutive channels for
    ``nlc`` input, the one channel ``cb`` for ``ncl`` (a scalar mask, always true)."""
    if NLC:
        ch = cb * BLOCK_B + tl.arange(0, BLOCK_B)
    else:
        ch = cb
    return ch, ch < C


@triton.jit
def _first_offset(ch, L, NLC: tl.constexpr, INT64: tl.constexpr):
    """Offset of channel ``ch``'s first value x[0, ch, 0], the shift of the shifted sums."""
    if NLC:
        return ch
    else:
        if INT64:
            return ch.to(tl.int64) * L
        else:
            return ch * L


@triton.jit
def _channel_sum(v, NLC: tl.constexpr):
    """Sum a tile per channel: over rows for ``nlc`` (a vector), over the whole tile for ``ncl``."""
    if NLC:
        return tl.sum(v, axis=0)
    else:
        return tl.sum(tl.sum(v, axis=1), axis=0)


@triton.jit
def _partial_sums_kernel(X, DY, MEAN, INV_STD, P1, P2, N, C, L, GL, TILES_PER_PROGRAM,
                         BACKWARD: tl.constexpr, NLC: tl.constexpr, INT64: tl.constexpr,
                         ACC: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    # Program g reduces tiles g*T ... g*T + T - 1 (T = TILES_PER_PROGRAM) of channel block cb:
    # Forward:  P1[g, c] = sum of d, P2[g, c] = sum of d*d, with d = x - K[c] (K: x[0, c]).
    # Backward: P1[g, c] = sum of dy,  P2[g, c] = sum of dy * x_hat.
    g = tl.program_id(0)
    cb = tl.program_id(1)
    ch, ch_ok = _channels(cb, C, NLC, BLOCK_B)
    if BACKWARD:
        mu = tl.load(MEAN + ch, mask=ch_ok, other=0.0)
        inv_std = tl.load(INV_STD + ch, mask=ch_ok, other=0.0)
        if NLC:
            mu = mu[None, :]
            inv_std = inv_std[None, :]
    else:
        shift = tl.load(X + _first_offset(ch, L, NLC, INT64), mask=ch_ok, other=0.0).to(ACC)
        if NLC:
            shift = shift[None, :]
    acc1 = tl.zeros([BLOCK_A, BLOCK_B], dtype=ACC)
    acc2 = tl.zeros([BLOCK_A, BLOCK_B], dtype=ACC)
    for k in range(0, TILES_PER_PROGRAM):
        offsets, mask = _tile(g * TILES_PER_PROGRAM + k, cb, N, C, L, GL, NLC, INT64, BLOCK_A, BLOCK_B)
        x = tl.load(X + offsets, mask=mask, other=0.0).to(ACC)
        if BACKWARD:
            dy = tl.load(DY + offsets, mask=mask, other=0.0).to(ACC)
            acc1 += dy
            acc2 += tl.where(mask, dy * ((x - mu) * inv_std), 0.0)
        else:
            d = tl.where(mask, x - shift, 0.0)
            acc1 += d
            acc2 += d * d
    tl.store(P1 + g * C + ch, _channel_sum(acc1, NLC), mask=ch_ok)
    tl.store(P2 + g * C + ch, _channel_sum(acc2, NLC), mask=ch_ok)


@triton.jit
def _combine_kernel(P1, P2, X, OUT1, OUT2, OUT3, G, C, L, m, eps,
                    FINALIZE: tl.constexpr, NLC: tl.constexpr, INT64: tl.constexpr,
                    ACC: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr):
    # Add up the G partial sums of a block of channels.  Backward: OUT1 = sum P1 (dbeta),
    # OUT2 = sum P2 (dgamma).  Forward (FINALIZE): OUT1 = mu, OUT2 = var, OUT3 = inv_std.
    ch = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_ok = ch < C
    s1 = tl.zeros([BLOCK_C], dtype=ACC)
    s2 = tl.zeros([BLOCK_C], dtype=ACC)
    for start in range(0, G, BLOCK_G):
        g = start + tl.arange(0, BLOCK_G)
        ok = (g[:, None] < G) & ch_ok[None, :]
        s1 += tl.sum(tl.load(P1 + g[:, None] * C + ch[None, :], mask=ok, other=0.0), axis=0)
        s2 += tl.sum(tl.load(P2 + g[:, None] * C + ch[None, :], mask=ok, other=0.0), axis=0)
    if FINALIZE:
        shift = tl.load(X + _first_offset(ch, L, NLC, INT64), mask=ch_ok, other=0.0).to(ACC)
        mean_d = s1 / m
        var = tl.maximum(s2 / m - mean_d * mean_d, 0.0)
        tl.store(OUT1 + ch, shift + mean_d, mask=ch_ok)
        tl.store(OUT2 + ch, var, mask=ch_ok)
        tl.store(OUT3 + ch, 1.0 / tl.sqrt(var + eps), mask=ch_ok)
    else:
        tl.store(OUT1 + ch, s1, mask=ch_ok)
        tl.store(OUT2 + ch, s2, mask=ch_ok)


@triton.jit
def _apply_kernel(X, DY, OUT, MEAN, INV_STD, W, B, S1, S2, N, C, L, GL, m,
                  BACKWARD: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                  NLC: tl.constexpr, INT64: tl.constexpr, ACC: tl.constexpr,
                  BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr):
    # Forward:  y  = (x - mu) * gamma * inv_std + beta
    # Backward: dx = gamma * inv_std * (dy - S1 / m - x_hat * S2 / m)   (eq. ch3-dx)
    g = tl.program_id(0)
    cb = tl.program_id(1)
    offsets, mask = _tile(g, cb, N, C, L, GL, NLC, INT64, BLOCK_A, BLOCK_B)
    ch, ch_ok = _channels(cb, C, NLC, BLOCK_B)
    mu = tl.load(MEAN + ch, mask=ch_ok, other=0.0)
    inv_std = tl.load(INV_STD + ch, mask=ch_ok, other=0.0)
    scale = inv_std
    if HAS_W:
        scale = scale * tl.load(W + ch, mask=ch_ok, other=0.0).to(ACC)
    if BACKWARD:
        a = tl.load(S1 + ch, mask=ch_ok, other=0.0) / m         # mean of dy
        b = tl.load(S2 + ch, mask=ch_ok, other=0.0) / m         # mean of dy * x_hat
    else:
        a = inv_std * 0.0
        b = inv_std * 0.0
        if HAS_B:
            a = tl.load(B + ch, mask=ch_ok, other=0.0).to(ACC)  # beta
    if NLC:
        mu = mu[None, :]
        inv_std = inv_std[None, :]
        scale = scale[None, :]
        a = a[None, :]
        b = b[None, :]
    x = tl.load(X + offsets, mask=mask, other=0.0).to(ACC)
    if BACKWARD:
        dy = tl.load(DY + offsets, mask=mask, other=0.0).to(ACC)
        x_hat = (x - mu) * inv_std
        out = scale * (dy - a - x_hat * b)
    else:
        out = (x - mu) * scale + a
    tl.store(OUT + offsets, out.to(OUT.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------
# Python wrappers
# --------------------------------------------------------------------------


def _accumulator(dtype: torch.dtype):
    if dtype == torch.float64:
        return torch.float64, tl.float64
    if dtype in _ACCUMULATE_IN_FLOAT32:
        return torch.float32, tl.float32
    raise TypeError(f"the Triton kernels take float16, bfloat16, float32 or float64 tensors, got {dtype}")


def _check_device(x: Tensor, what: str) -> None:
    if x.device.type == "cpu" and not interpreted():
        raise ValueError(f"{what} is a CPU tensor, but Triton is compiling for the GPU: move it to "
                         "CUDA, or set TRITON_INTERPRET=1 before importing bnlib.kernels")
    if x.device.type != "cpu" and interpreted():
        raise ValueError(f"{what} is on {x.device}, but the kernels run in Triton's CPU interpreter "
                         "(TRITON_INTERPRET=1): pass a CPU tensor")


def layout_of(x: Tensor) -> str:
    """``"nlc"`` when ``x``'s channels are innermost in memory (2-D or channels-last), else ``"ncl"``."""
    if x.dim() == 2:
        return "nlc"
    if x.is_contiguous() and x[0, 0].numel() > 1:
        return "ncl"
    return "nlc" if x.movedim(1, -1).is_contiguous() else "ncl"


def _arrange(x: Tensor, what: str = "x", like: str | None = None) -> tuple[Tensor, str]:
    """``x`` (N, C, *) in a memory order the kernels read: its own when it is one, else contiguous.

    ``like`` forces the layout (``dy`` must be laid out as ``x``).
    """
    if x.dim() < 2:
        raise ValueError(f"{what} must have shape (N, C, *), got {x.dim()}-D input of size {tuple(x.shape)}")
    _check_device(x, what)
    layout = like or layout_of(x)
    if layout == "nlc":
        if not x.movedim(1, -1).is_contiguous():
            x = x.movedim(1, -1).contiguous().movedim(-1, 1)
    elif not x.is_contiguous():
        x = x.contiguous()
    return x, layout


def _check_channel_vector(p: Tensor | None, name: str, x: Tensor) -> None:
    if p is not None and p.shape != (x.shape[1],):
        raise ValueError(f"{name} has shape {tuple(p.shape)} but x of size {tuple(x.shape)} has "
                         f"{x.shape[1]} channels along axis 1: {name} must have shape ({x.shape[1]},)")


def _plan_for(x: Tensor, layout: str, tile: int, force_int64: bool) -> LaunchPlan:
    return launch_plan(x.shape, channels_last=(layout == "nlc"), tile=tile, force_int64=force_int64)


def _gl(plan: LaunchPlan) -> int:
    """Tiles along L per example block (``ncl``); 1 for ``nlc``."""
    return -(-plan.L // plan.block_b) if plan.layout == "ncl" else 1


def _reduce(x: Tensor, dy: Tensor | None, mu: Tensor | None, inv_std: Tensor | None,
            plan: LaunchPlan, acc_torch, acc_tl, eps: float):
    """Launch the partial-sum and combine kernels; return the per-channel results."""
    G, C = plan.partials, plan.C
    p1 = torch.empty((G, C), dtype=acc_torch, device=x.device)
    p2 = torch.empty((G, C), dtype=acc_torch, device=x.device)
    backward = dy is not None
    _partial_sums_kernel[plan.partial_grid](
        x, dy if backward else x, mu if backward else p1, inv_std if backward else p1, p1, p2,
        plan.N, plan.C, plan.L, _gl(plan), plan.tiles_per_program,
        BACKWARD=backward, NLC=plan.layout == "nlc", INT64=plan.int64, ACC=acc_tl,
        BLOCK_A=plan.block_a, BLOCK_B=plan.block_b)
    outs = [torch.empty(C, dtype=acc_torch, device=x.device) for _ in range(2 if backward else 3)]
    _combine_kernel[plan.combine_grid](
        p1, p2, x, outs[0], outs[1], outs[-1], G, C, plan.L, plan.N * plan.L, eps,
        FINALIZE=not backward, NLC=plan.layout == "nlc", INT64=plan.int64, ACC=acc_tl,
        BLOCK_G=_pow2_at_most(G, 128), BLOCK_C=plan.block_c_combine)
    return outs


def batchnorm_forward(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                      eps: float = 1e-5, *, tile: int = DEFAULT_TILE,
                      force_int64: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training-mode BN of ``x`` (N, C, *): partial sums, combine, apply (three launches).

    Returns ``(y, mu, var, inv_std)``: ``y`` like ``x`` (same memory format:
    channels-last input gives channels-last output); the batch mean ``mu``, the
    biased batch variance ``var`` and ``inv_std = 1 / sqrt(var + eps)``, each of
    shape ``(C,)`` in the accumulation precision (float32, or float64 for
    float64 input).  ``tile`` (elements per program) and ``force_int64`` are
    for tests: small tiles make ragged edges at small sizes, and the 64-bit
    offset path can be checked on a small tensor.
    """
    x, layout = _arrange(x)
    _check_channel_vector(weight, "weight", x)
    _check_channel_vector(bias, "bias", x)
    if x.numel() // max(x.shape[1], 1) < 2:
        raise ValueError(f"expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    acc_torch, acc_tl = _accumulator(x.dtype)
    plan = _plan_for(x, layout, tile, force_int64)
    mu, var, inv_std = _reduce(x, None, None, None, plan, acc_torch, acc_tl, eps)
    y = torch.empty_like(x)
    _apply_kernel[plan.grid](
        x, x, y, mu, inv_std, weight if weight is not None else mu, bias if bias is not None else mu,
        mu, mu, plan.N, plan.C, plan.L, _gl(plan), plan.N * plan.L,
        BACKWARD=False, HAS_W=weight is not None, HAS_B=bias is not None,
        NLC=plan.layout == "nlc", INT64=plan.int64, ACC=acc_tl,
        BLOCK_A=plan.block_a, BLOCK_B=plan.block_b)
    return y, mu, var, inv_std


def batchnorm_backward(dy: Tensor, x: Tensor, mu: Tensor, inv_std: Tensor,
                       weight: Tensor | None = None, *, tile: int = DEFAULT_TILE,
                       force_int64: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, dgamma, dbeta)`` for the upstream gradient ``dy`` (eq. ``ch3-dx``), three launches.

    ``mu`` and ``inv_std`` are what :func:`batchnorm_forward` returned for ``x``.
    ``dgamma`` and ``dbeta`` come back in the accumulation precision; ``dx``
    in ``x``'s dtype and memory format.
    """
    x, layout = _arrange(x)
    if dy.shape != x.shape:
        raise ValueError(f"dy has shape {tuple(dy.shape)}, x has {tuple(x.shape)}: they must match")
    dy, _ = _arrange(dy, "dy", like=layout)
    acc_torch, acc_tl = _accumulator(x.dtype)
    plan = _plan_for(x, layout, tile, force_int64)
    dbeta, dgamma = _reduce(x, dy, mu, inv_std, plan, acc_torch, acc_tl, 0.0)
    dx = torch.empty_like(x)
    _apply_kernel[plan.grid](
        x, dy, dx, mu, inv_std, weight if weight is not None else mu, mu, dbeta, dgamma,
        plan.N, plan.C, plan.L, _gl(plan), plan.N * plan.L,
        BACKWARD=True, HAS_W=weight is not None, HAS_B=False,
        NLC=plan.layout == "nlc", INT64=plan.int64, ACC=acc_tl,
        BLOCK_A=plan.block_a, BLOCK_B=plan.block_b)
    return dx, dgamma, dbeta


class TritonBatchNormFunction(torch.autograd.Function):
    """Training-mode BN whose forward and backward are the Triton kernels.

    ``TritonBatchNormFunction.apply(x, weight, bias, eps)`` returns ``(y, mu,
    var)`` with the biased batch variance ``var`` (the statistics carry no
    gradient), the same contract as ``BatchNormFunction.apply(..., True)`` in
    :mod:`bnlib.torch.functional`.  It saves ``x``, ``mu`` and ``inv_std``:
    the backward kernels recompute ``x_hat`` from them.
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
    """:func:`torch.nn.functional.batch_norm` with the Triton kernels.

    Training mode normalises with :class:`TritonBatchNormFunction` and updates
    the running statistics as PyTorch does (unbiased variance, ``momentum``
    weighing the new batch; chapter 5).  Evaluation mode is one per-channel
    affine map: the kernel of :mod:`bnlib.kernels.eval_kernel` when no input
    needs a gradient, :func:`bnlib.torch.functional.batch_norm` (PyTorch ops,
    differentiable) otherwise.  ``check_finite`` is accepted for the same
    signature as :func:`bnlib.torch.functional.batch_norm` and ignored (the
    kernels never check, like PyTorch's).
    """
    from bnlib.torch import functional as F

    if not training:
        needs_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, weight, bias))
        if running_mean is None or running_var is None or needs_grad or x.numel() == 0:
            return F.batch_norm(x, running_mean, running_var, weight, bias, False, momentum, eps)
        from bnlib.kernels.eval_kernel import eval_batch_norm

        return eval_batch_norm(x, running_mean, running_var, weight, bias, eps)
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
