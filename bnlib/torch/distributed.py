"""Synchronised batch norm: one set of batch statistics across devices with ``torch.distributed`` (chapter 8).

With data parallelism every device (*rank*) sees only its shard of the batch.
Plain batch norm then normalises each shard with that shard's own mean and
variance: the network trains on many small batches, not one large one, and
the running statistics are those of the small batches.  Synchronised batch
norm computes the statistics of the *whole* batch instead, so that the
output, the gradients and the running statistics are the same as on one
device with the full batch.  The notation is chapter 3's (see
:mod:`bnlib.torch.functional`); ``M`` is the number of values per channel
summed over all ranks, ``m_r`` the number on rank ``r``.

Forward pass, two all-reduces (two passes over ``x``, so the variance is
exact and does not lose precision to cancellation)::

    M       = sum over ranks of m_r                   all-reduce 1, with ...
    mu      = (sum over ranks of sum(x)) / M          ... the per-channel sums
    var     = (sum over ranks of sum((x - mu)**2)) / M    all-reduce 2 (biased)
    inv_std = 1 / sqrt(var + eps)
    x_hat   = (x - mu) * inv_std
    y       = gamma * x_hat + beta

Backward pass, one all-reduce of the two per-channel sums stacked together,
then chapter 3's compact formula (equation ``ch3-dx``) with the *global* sums
and the *global* ``M``::

    S1 = sum over ranks of sum(dy)                    all-reduce 3
    S2 = sum over ranks of sum(dy * x_hat)
    dx = gamma * inv_std / M * (M * dy - S1 - x_hat * S2)

Each rank returns its *local* ``dgamma = sum(dy * x_hat)`` and ``dbeta =
sum(dy)``: summed over ranks they equal the full-batch gradients (``S2`` and
``S1``).  This is what data-parallel training wants: with the total loss
``L = sum over ranks of L_r``, ``dx`` above is ``dL/dx`` on each rank, and
every parameter gradient (gamma, beta and those of the layers before, which
receive ``dx``) is a sum of per-rank contributions.
:class:`torch.nn.parallel.DistributedDataParallel` *averages* the parameter
gradients over the ranks, i.e. divides all of them by the world size alike,
so a step follows the gradient of ``L / world_size``: the full-batch mean
loss when every ``L_r`` is the mean over an equal shard.

* :class:`SyncBatchNormFunction`: the autograd Function above;
* :class:`SyncBatchNorm`: drop-in for :class:`torch.nn.SyncBatchNorm` (any input
  of rank >= 2), which falls back to ordinary batch norm on one process;
* :func:`convert_sync_batchnorm`: swap every batch norm of a model for it;
* :func:`collectives` and :func:`wire_bytes`: what this design and
  :class:`torch.nn.SyncBatchNorm`'s send per layer, computed;
* :func:`compare_sync_and_local`: spawn a few CPU processes (``gloo`` over the
  loopback interface) and measure how far synchronised and per-shard batch norm
  are from single-process, full-batch batch norm.

Without an initialised process group (or with world size 1) everything here
is ordinary training-mode batch norm, so the code runs, and is tested, on a
single process too.
"""
from __future__ import annotations

import datetime
import math
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from bnlib.torch.functional import _check_bn_arguments, _opmath, _per_channel, input_gradient
from bnlib.torch.modules import BatchNorm1d, BatchNorm2d, _BatchNorm

__all__ = ["SyncBatchNormFunction", "SyncBatchNorm", "convert_sync_batchnorm",
           "compare_sync_and_local", "collectives", "wire_bytes"]

# The per-channel sums and the count are reduced in float64, so the count is
# exact and the global sums of float32 input lose nothing in the reduction.
_REDUCE_DTYPE = torch.float64


# --------------------------------------------------------------------------
# Collectives: no-ops on a single process
# --------------------------------------------------------------------------


def _world_size(group=None) -> int:
    """Number of ranks in ``group`` (the default group for ``None``); 1 without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _all_reduce_sum(t: Tensor, group=None) -> Tensor:
    """Sum ``t`` over the ranks of ``group``, in place; return it (unchanged on a single process)."""
    if _world_size(group) > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


# --------------------------------------------------------------------------
# The autograd Function
# --------------------------------------------------------------------------


class SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm with statistics over every rank of a process group.

    ``SyncBatchNormFunction.apply(x, weight, bias, eps, group)`` returns ``y``
    for this rank's shard ``x`` of shape ``(N, C, *)``, normalised with the
    mean and biased variance of the *global* batch (all shards of all ranks of
    ``group``; ``None`` is the default group).  Ranks may hold different
    ``N``: the count is all-reduced, not assumed.  Every rank of the group
    must call it (and its backward) the same number of times, with the same
    ``C``, as for any collective.  Without a process group, or with one rank,
    it is :class:`~bnlib.torch.functional.BatchNormFunction`.

    The forward pass takes two all-reduces (count and sums, then the sums of
    squared deviations), the backward pass one (``sum(dy)`` and
    ``sum(dy * x_hat)`` stacked); see the module docstring for the formulas.
    The gradients of ``weight`` and ``bias`` are this rank's *local* sums, so
    their sum over the ranks is the full-batch gradient.  First-order only
    (:func:`~torch.autograd.function.once_differentiable`).

    Two optional positional arguments (``apply`` takes no keywords):

    * ``return_stats`` (default ``False``): return ``(y, mu, var, count)``,
      with the global ``mu`` and biased ``var`` of shape ``(C,)`` and the
      global number of values per channel ``count`` (a 0-d int64 tensor on
      the CPU), all without gradient; :class:`SyncBatchNorm` updates its
      running statistics with them.
    * ``check_finite`` (default ``True``): raise ``ValueError`` when the global
      statistics are not finite (NaN or infinity in some rank's ``x``, or an
      overflowing variance).  Every rank sees the same statistics, so every
      rank raises.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float = 1e-5,
        group=None,
        return_stats: bool = False,
        check_finite: bool = True,
    ):
        _check_bn_arguments(x, weight, bias, eps, check_batch_size=False)
        xc = _opmath(x)
        ndim = x.dim()
        num_channels = x.shape[1]
        dims = [0] + list(range(2, ndim))  # every axis except the channel axis
        m_local = x.numel() // num_channels if num_channels else 0

        # All-reduce 1: the per-channel sums and, in the last slot, the count.
        sums_and_count = torch.cat([
            xc.sum(dim=dims).to(_REDUCE_DTYPE),
            torch.tensor([m_local], dtype=_REDUCE_DTYPE, device=x.device),
        ])
        _all_reduce_sum(sums_and_count, group)
        m = int(sums_and_count[-1].item())  # the global M, the same on every rank
        if m == 1:
            raise ValueError(
                "Expected more than 1 value per channel when training, got input size "
                f"{x.size()} on this rank and 1 value per channel over all ranks"
            )

        if m > 0:
            mu = (sums_and_count[:-1] / m).to(xc.dtype)
            # All-reduce 2: the per-channel sums of squared deviations (second pass).
            centred = xc - _per_channel(mu, ndim)
            sq = (centred * centred).sum(dim=dims).to(_REDUCE_DTYPE)
            var = (_all_reduce_sum(sq, group) / m).to(xc.dtype)
        else:  # empty global batch: no statistics (NaN); the output is empty anyway
            mu = var = torch.full((num_channels,), float("nan"), dtype=xc.dtype, device=x.device)
            centred = xc - _per_channel(mu, ndim)
        inv_std = torch.rsqrt(var + eps)
        if check_finite and m > 0:
            bad = ~(torch.isfinite(mu) & torch.isfinite(var) & torch.isfinite(inv_std))
            if bool(bad.any()):
                where = ("this rank's x contains NaN or infinite values"
                         if not bool(torch.isfinite(x).all())
                         else "some rank's x contains NaN or infinite values, or the variance "
                              f"overflows {x.dtype} (rescale x or use torch.float64)")
                raise ValueError(f"synchronised batch norm: the global statistics are not finite: {where}")

        x_hat = centred * _per_channel(inv_std, ndim)
        y = x_hat
        if weight is not None:
            y = y * _per_channel(weight, ndim)  # gamma
        if bias is not None:
            y = y + _per_channel(bias, ndim)  # beta
        if y is x_hat:
            y = x_hat.clone()  # never hand out the tensor saved for backward
        y = y.to(x.dtype)

        ctx.save_for_backward(x_hat, inv_std, weight)
        ctx.m = m
        ctx.group = group
        ctx.x_dtype = x.dtype
        ctx.weight_dtype = weight.dtype if weight is not None else None
        ctx.bias_dtype = bias.dtype if bias is not None else None
        if return_stats:
            count = torch.tensor(m, dtype=torch.long)
            ctx.mark_non_differentiable(mu, var, count)
            return y, mu, var, count
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, *unused_stat_grads: Tensor):
        x_hat, inv_std, weight = ctx.saved_tensors
        need_dx, need_dweight, need_dbias = ctx.needs_input_grad[:3]
        ndim = x_hat.dim()
        dims = [0] + list(range(2, ndim))
        m = ctx.m  # the GLOBAL number of values per channel
        dy = _opmath(dy)

        sum_dy = dy.sum(dim=dims)  # local dbeta
        sum_dy_xhat = (dy * x_hat).sum(dim=dims)  # local dgamma

        # All-reduce 3, always (every rank must take part): the global sums S1, S2.
        # torch.stack makes a new tensor, so the local sums above stay local.
        global_sums = _all_reduce_sum(torch.stack([sum_dy, sum_dy_xhat]), ctx.group)
        s1, s2 = global_sums[0], global_sums[1]

        dx = dweight = dbias = None
        if need_dx and m > 0:
            # Chapter 3, equation ch3-dx, with the global sums and the global M:
            # dx = gamma * inv_std / M * (M * dy - S1 - x_hat * S2)
            dx = input_gradient(dy, x_hat, inv_std, weight, m, s1, s2).to(ctx.x_dtype)
        elif need_dx:  # empty batch
            dx = torch.zeros_like(dy, dtype=ctx.x_dtype)
        if need_dweight:
            dweight = sum_dy_xhat.to(ctx.weight_dtype)  # summed over ranks: S2
        if need_dbias:
            dbias = sum_dy.to(ctx.bias_dtype)  # summed over ranks: S1
        return dx, dweight, dbias, None, None, None, None


# --------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------


class SyncBatchNorm(_BatchNorm):
    """Batch norm with statistics synchronised over a process group; drop-in for ``torch.nn.SyncBatchNorm``.

    Same constructor (``process_group=None`` is the default group), parameters,
    buffers and ``state_dict`` keys as PyTorch's layer and as
    :class:`bnlib.torch.BatchNorm2d`; input of shape ``(N, C, *)`` with any
    number of trailing axes.

    * Training mode, with an initialised process group of more than one rank:
      :class:`SyncBatchNormFunction` normalises with the statistics of the
      global batch, and the running statistics are updated with the global
      mean and the global *unbiased* variance ``var * M / (M - 1)`` (``M``
      values per channel over all ranks), so they are the same on every rank.
      ``momentum=None`` gives the cumulative average, as in the parent.
    * Otherwise (eval mode, or a single process): exactly
      :class:`bnlib.torch.BatchNorm2d`'s forward pass, i.e. ordinary batch
      norm; in eval mode nothing is communicated.

    Input is not checked for NaN or infinity (as in PyTorch).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device, dtype, bias=bias)
        self.process_group = process_group

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"SyncBatchNorm({self.num_features}) expects input of shape "
                f"(N, {self.num_features}, *); got {tuple(x.shape)}"
            )

    def _synchronise(self) -> bool:
        """True when the batch statistics are to be gathered over several ranks."""
        return (self.training and dist.is_available() and dist.is_initialized()
                and _world_size(self.process_group) > 1)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self._synchronise():
            return super().forward(x)

        y, mu, var, count = SyncBatchNormFunction.apply(
            x, self.weight, self.bias, self.eps, self.process_group, True, False
        )
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
            m = int(count)
            if m > 0:  # an empty global batch leaves the running statistics alone
                with torch.no_grad():
                    # running = (1 - momentum) * running + momentum * global statistic
                    self.running_mean.mul_(1.0 - factor).add_(
                        mu.to(self.running_mean.dtype), alpha=factor)
                    unbiased_var = var * (m / (m - 1))
                    self.running_var.mul_(1.0 - factor).add_(
                        unbiased_var.to(self.running_var.dtype), alpha=factor)
        return y

    def extra_repr(self) -> str:
        group = "" if self.process_group is None else f", process_group={self.process_group}"
        return super().extra_repr() + group


def convert_sync_batchnorm(model: nn.Module, process_group=None) -> nn.Module:
    """Replace every batch norm of ``model`` by a :class:`SyncBatchNorm`, in place; return the model.

    Every module that is a ``torch.nn.modules.batchnorm._BatchNorm`` (PyTorch's
    ``BatchNorm1d/2d/3d`` and ``SyncBatchNorm``, :mod:`bnlib.torch`'s
    ``BatchNorm1d/2d``) but not already a :class:`SyncBatchNorm` is replaced by
    one with the same settings (``eps``, ``momentum``, ``affine``,
    ``track_running_stats``), training mode and ``requires_grad``.  The new
    layer holds the *same* parameter and buffer tensors (not copies), so the
    ``state_dict`` keeps its keys and values and an optimiser built before the
    conversion still updates the parameters.  Like
    ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``, ``model`` itself is
    changed in place, except when ``model`` *is* a batch norm: then the new
    layer is returned and ``model`` is left as it was.  Deep-copy the model
    first to keep the original.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, nn.modules.batchnorm._BatchNorm) and not isinstance(model, SyncBatchNorm):
        return _to_sync(model, process_group)
    for name, child in list(model.named_children()):
        new_child = convert_sync_batchnorm(child, process_group)
        if new_child is not child:
            setattr(model, name, new_child)
    return model


def _to_sync(bn: nn.modules.batchnorm._BatchNorm, process_group) -> SyncBatchNorm:
    """A SyncBatchNorm sharing ``bn``'s parameters and buffers."""
    sync = SyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine,
                         bn.track_running_stats, process_group, device="meta",
                         bias=getattr(bn, "bias", None) is not None or not bn.affine)
    # Parameters and buffers: the very same tensors (None stays None).
    for name in ("weight", "bias"):
        setattr(sync, name, getattr(bn, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        sync.register_buffer(name, getattr(bn, name))
    sync.train(bn.training)
    if hasattr(bn, "qconfig"):
        sync.qconfig = bn.qconfig
    return sync


# --------------------------------------------------------------------------
# Demo and check: synchronised vs per-shard vs full-batch batch norm
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# Bytes on the wire: bnlib's two all-reduces against torch's one all-gather
# --------------------------------------------------------------------------


def collectives(channels: int, design: str = "bnlib", input_bytes: int = 4) -> dict[str, list[tuple]]:
    """The collectives one synchronised BN layer issues, per direction: ``(kind, numbers, bytes each)``.

    ``design="bnlib"`` (:class:`SyncBatchNormFunction`): forward, an all-reduce
    of the ``C`` sums and the count, then one of the ``C`` sums of squared
    deviations (both in float64, :data:`_REDUCE_DTYPE`); backward, an all-reduce
    of ``sum(dy)`` and ``sum(dy * x_hat)``, ``2C`` numbers in the input's
    precision (float32 for half-precision input).  ``design="torch"``
    (``torch.nn.SyncBatchNorm``, ``torch/nn/modules/_functions.py``): forward,
    one all-gather of every rank's ``(mean, invstd, count)``, ``2C + 1``
    float32 numbers, merged as in eq. ``ch8-merge``; backward, the same
    all-reduce of ``2C`` numbers.
    """
    C = int(channels)
    grads = 8 if input_bytes == 8 else 4
    if design == "bnlib":
        return {"forward": [("all_reduce", C + 1, 8), ("all_reduce", C, 8)],
                "backward": [("all_reduce", 2 * C, grads)]}
    if design == "torch":
        return {"forward": [("all_gather", 2 * C + 1, 8 if input_bytes == 8 else 4)],
                "backward": [("all_reduce", 2 * C, grads)]}
    raise ValueError(f"design must be 'bnlib' or 'torch', got {design!r}")


def wire_bytes(channels: int, world_size: int, design: str = "bnlib", input_bytes: int = 4) -> dict[str, float]:
    """Bytes each rank sends for one synchronised BN layer, forward and backward, with ring collectives.

    A ring all-reduce of ``n`` bytes sends ``2 (k - 1) / k * n`` bytes from every
    rank in ``2 (k - 1)`` steps; a ring all-gather of ``n`` bytes per rank sends
    ``(k - 1) * n`` in ``k - 1`` steps (``k`` ranks).  Returns
    ``forward_bytes``, ``backward_bytes``, ``forward_collectives`` (how many
    collectives run one after the other: each is a round trip every rank waits
    for) and ``forward_steps`` (ring steps, the latency term).
    """
    k = int(world_size)
    if k < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    out = {}
    for direction, calls in collectives(channels, design, input_bytes).items():
        sent = steps = 0.0
        for kind, numbers, size in calls:
            n = numbers * size
            if kind == "all_reduce":
                sent += 2 * (k - 1) / k * n
                steps += 2 * (k - 1)
            else:
                sent += (k - 1) * n
                steps += k - 1
        out[f"{direction}_bytes"] = sent
        out[f"{direction}_collectives"] = len(calls)
        out[f"{direction}_steps"] = steps
    return out


def _free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it when binding to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_interface() -> str:
    """Name of the loopback network interface (``lo`` on Linux, ``lo0`` on macOS)."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (AttributeError, OSError):  # no if_nameindex (Windows)
        names = []
    for name in ("lo", "lo0"):
        if name in names:
            return name
    return next((name for name in names if name.startswith("lo")), "lo")


def _local_bn_class(ndim: int) -> type[_BatchNorm]:
    return BatchNorm1d if ndim in (2, 3) else BatchNorm2d


def _train_step(layer: nn.Module, x: Tensor, dy: Tensor) -> dict[str, Tensor]:
    """One training-mode forward and backward pass; what comes out, detached."""
    layer.train()
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    y.backward(dy)
    return {
        "y": y.detach(),
        "dx": x.grad.detach(),
        "dgamma": layer.weight.grad.detach().clone(),
        "dbeta": layer.bias.grad.detach().clone(),
        "running_mean": layer.running_mean.detach().clone(),
        "running_var": layer.running_var.detach().clone(),
    }


def _make_layer(cls, inputs: dict) -> nn.Module:
    layer = cls(inputs["channels"], momentum=inputs["momentum"], dtype=inputs["dtype"])
    with torch.no_grad():
        layer.weight.copy_(inputs["weight"])
        layer.bias.copy_(inputs["bias"])
    return layer


def _compare_worker(rank: int, world_size: int, init_method: str, workdir: str,
                    timeout_s: float) -> None:
    """One rank of :func:`compare_sync_and_local` (module level, so ``spawn`` can import it)."""
    os.environ["GLOO_SOCKET_IFNAME"] = _loopback_interface()  # this child only: loopback
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        inputs = torch.load(Path(workdir) / "inputs.pt")
        x = inputs["x_shards"][rank]
        dy = inputs["dy_shards"][rank]
        results = {
            "sync": _train_step(_make_layer(SyncBatchNorm, inputs), x, dy),
            "local": _train_step(_make_layer(_local_bn_class(x.dim()), inputs), x, dy),
        }
        torch.save(results, Path(workdir) / f"rank{rank}.pt")
        dist.barrier()  # nobody leaves while another rank may still need a collective
    finally:
        dist.destroy_process_group()


def _max_abs(a: Tensor, b: Tensor) -> float:
    return (a - b).abs().max().item() if a.numel() else 0.0


def compare_sync_and_local(
    world_size: int = 2,
    batch: int = 8,
    channels: int = 3,
    spatial: tuple[int, ...] | None = (4, 4),
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    *,
    momentum: float | None = 1.0,
    timeout: float = 120.0,
) -> dict:
    """Run synchronised and per-shard batch norm on ``world_size`` CPU processes; compare with one process.

    One global batch ``x`` of shape ``(batch, channels, *spatial)`` (``spatial=None``
    for ``(batch, channels)``) and an upstream gradient ``dy`` are drawn with
    ``seed``, together with a random gamma and beta, and split along axis 0 into
    ``world_size`` shards (``torch.tensor_split``: the first shards get one
    sample more when ``batch`` does not divide evenly).  ``world_size``
    processes (``torch.multiprocessing.spawn``, backend ``gloo`` on 127.0.0.1,
    one thread each) each run one training step, forward and backward with their
    shard of ``dy``, of (a) :class:`SyncBatchNorm` and (b) plain
    :class:`bnlib.torch.BatchNorm1d`/``BatchNorm2d`` on their shard.  This
    process runs the same plain layer on the whole batch.  With the default
    ``momentum=1.0`` the running statistics after the step are the batch
    statistics themselves (mean and unbiased variance); pass ``0.1`` for
    PyTorch's default.

    Returns a dict of maximum absolute differences (floats) from the full-batch
    layer (the shards' ``y`` and ``dx`` concatenated; ``dgamma`` and ``dbeta``
    summed over ranks; running statistics: the worst rank):

    * ``sync_vs_full_y``, ``sync_vs_full_dx``, ``sync_vs_full_dgamma``,
      ``sync_vs_full_dbeta``, ``sync_vs_full_running_mean``,
      ``sync_vs_full_running_var``: rounding errors only;
    * ``local_vs_full_y``, ``local_vs_full_dx``, ``local_vs_full_running_mean``,
      ``local_vs_full_running_var``: *not* small, the reason for synchronising;

    and ``world_size``, ``shard_sizes`` (list of ints) and ``elapsed_s`` (wall
    seconds, process start-up included).  A worker that fails raises
    ``RuntimeError`` with its traceback; workers still running after
    ``timeout`` seconds are terminated and ``TimeoutError`` is raised.
    """
    import torch.multiprocessing as mp

    start = time.perf_counter()
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    spatial = tuple(spatial) if spatial is not None else ()
    if len(spatial) > 2:
        raise ValueError(f"spatial must have at most 2 axes (BatchNorm1d/2d), got {spatial}")
    if channels < 1 or any(s < 1 for s in spatial):
        raise ValueError(f"channels and spatial sizes must be positive, got {channels}, {spatial}")
    per_sample = math.prod(spatial)
    smallest_shard = batch // world_size
    if smallest_shard * per_sample < 2:
        raise ValueError(
            f"batch={batch} over world_size={world_size} gives a shard of {smallest_shard} "
            f"sample(s), {smallest_shard * per_sample} value(s) per channel: plain batch norm "
            "on a shard needs at least 2; use a larger batch"
        )

    gen = torch.Generator().manual_seed(seed)
    shape = (batch, channels) + spatial
    # Different scale and offset per channel, so the statistics are not all (0, 1).
    offset = _per_channel(torch.randn(channels, generator=gen, dtype=dtype) * 2.0, len(shape))
    scale = _per_channel(torch.rand(channels, generator=gen, dtype=dtype) + 0.5, len(shape))
    x = torch.randn(shape, generator=gen, dtype=dtype) * scale + offset
    dy = torch.randn(shape, generator=gen, dtype=dtype)
    weight = torch.rand(channels, generator=gen, dtype=dtype) + 0.5
    bias = torch.randn(channels, generator=gen, dtype=dtype)
    x_shards = [s.clone() for s in torch.tensor_split(x, world_size, dim=0)]
    dy_shards = [s.clone() for s in torch.tensor_split(dy, world_size, dim=0)]
    inputs = dict(x_shards=x_shards, dy_shards=dy_shards, weight=weight, bias=bias,
                  channels=channels, momentum=momentum, dtype=dtype)

    # The reference: one process, the whole batch, plain batch norm.
    full = _train_step(_make_layer(_local_bn_class(x.dim()), inputs), x, dy)

    with tempfile.TemporaryDirectory(prefix="bnlib-syncbn-") as workdir:
        torch.save(inputs, Path(workdir) / "inputs.pt")
        init_method = f"tcp://127.0.0.1:{_free_loopback_port()}"
        context = mp.spawn(_compare_worker, args=(world_size, init_method, workdir, timeout),
                           nprocs=world_size, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not context.join(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"compare_sync_and_local: the {world_size} worker processes did not "
                        f"finish within {timeout} s"
                    )
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
            raise RuntimeError(f"compare_sync_and_local: a worker process failed:\n{err}") from err
        finally:
            for p in context.processes:  # after an error or a timeout: stop the rest
                if p.is_alive():
                    p.terminate()
                p.join(5)
        ranks = [torch.load(Path(workdir) / f"rank{r}.pt") for r in range(world_size)]

    out: dict = {}
    for kind in ("sync", "local"):
        res = [r[kind] for r in ranks]
        out[f"{kind}_vs_full_y"] = _max_abs(torch.cat([r["y"] for r in res]), full["y"])
        out[f"{kind}_vs_full_dx"] = _max_abs(torch.cat([r["dx"] for r in res]), full["dx"])
        if kind == "sync":
            for g in ("dgamma", "dbeta"):
                out[f"sync_vs_full_{g}"] = _max_abs(sum(r[g] for r in res), full[g])
        for s in ("running_mean", "running_var"):
            out[f"{kind}_vs_full_{s}"] = max(_max_abs(r[s], full[s]) for r in res)
    out["world_size"] = world_size
    out["shard_sizes"] = [s.shape[0] for s in x_shards]
    out["elapsed_s"] = time.perf_counter() - start
    return out
