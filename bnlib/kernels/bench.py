"""Batch norm in PyTorch on one device: memory traffic and time (chapter 8).

Four implementations of the same training-mode forward + backward pass:

* ``composite``: chapter 3's equations as separate PyTorch operations,
  differentiated by autograd (:func:`composite_batch_norm`);
* ``bnlib.torch``: :class:`bnlib.torch.BatchNormFunction`, the compact
  backward of chapter 3 written by hand in PyTorch operations;
* ``torch``: :func:`torch.nn.functional.batch_norm`, PyTorch's own fused
  kernels (cuDNN's on an NVIDIA GPU);
* ``triton``: :mod:`bnlib.kernels`, two fused kernels; timed only when Triton
  compiles for a GPU (its CPU interpreter is a checking tool, not a fast path);
* ``torch.compile``: the composite version compiled (:func:`compiled_composite`),
  timed when asked for by name.

:func:`traffic` counts what each moves with :class:`bnlib.torch.traffic.MemoryTrace`
(for ``triton``, the passes its kernels make by construction);
:func:`time_methods` times them on the same tensors, in turn;
``python -m bnlib bench --device cuda`` prints both on a GPU.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from bnlib.kernels import batchnorm as triton_bn
from bnlib.torch.functional import batch_norm_train
from bnlib.torch.traffic import MemoryTrace

__all__ = ["composite_batch_norm", "compiled_composite", "METHODS", "available_methods", "traffic", "copy_bandwidth",
           "time_methods", "format_rows", "main"]


def composite_batch_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """Training-mode BN as chapter 3 writes it, one PyTorch op per step (autograd does the backward)."""
    dims = [0] + list(range(2, x.dim()))
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mu = x.mean(dim=dims, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=dims, keepdim=True)
    x_hat = (x - mu) / torch.sqrt(var + eps)
    return x_hat * weight.view(shape) + bias.view(shape)


_compiled: dict[str, Callable] = {}


def compiled_composite(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """:func:`composite_batch_norm` through ``torch.compile``, compiled on the first call.

    The compiler fuses the separate operations (forward and backward) into a few
    loops: C++ on the CPU (it needs a C++ compiler), Triton kernels on a GPU.
    """
    if "fn" not in _compiled:
        _compiled["fn"] = torch.compile(composite_batch_norm)
    return _compiled["fn"](x, weight, bias, eps)


METHODS: dict[str, Callable[[Tensor, Tensor, Tensor, float], Tensor]] = {
    "composite": composite_batch_norm,
    "torch.compile": compiled_composite,
    "bnlib.torch": lambda x, w, b, eps: batch_norm_train(x, w, b, eps, check_finite=False)[0],
    "torch": lambda x, w, b, eps: torch.nn.functional.batch_norm(x, None, None, w, b, True, 0.0, eps),
    "triton": lambda x, w, b, eps: triton_bn.TritonBatchNormFunction.apply(x, w, b, eps)[0],
}


def available_methods(device: str) -> list[str]:
    """The methods worth timing on ``device``: ``triton`` only where it is compiled for a GPU."""
    names = ["composite", "bnlib.torch", "torch"]
    if torch.device(device).type == "cuda" and not triton_bn.interpreted():
        names.append("triton")
    return names


def _inputs(shape, device, dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype).to(device).requires_grad_(True)
    dy = torch.randn(shape, generator=g, dtype=dtype).to(device)
    C = shape[1]
    w = (1 + 0.1 * torch.randn(C, generator=g, dtype=dtype)).to(device).requires_grad_(True)
    b = (0.1 * torch.randn(C, generator=g, dtype=dtype)).to(device).requires_grad_(True)
    return x, w, b, dy


def _step(method: str, x: Tensor, w: Tensor, b: Tensor, dy: Tensor) -> Callable[[], tuple]:
    fn = METHODS[method]
    return lambda: torch.autograd.grad(fn(x, w, b, 1e-5), (x, w, b), dy)


def traffic(shape=(64, 32, 16, 16), dtype=torch.float32) -> dict[str, float]:
    """Activation-sized passes over memory of one forward + backward pass, per method.

    Counted on the CPU with :class:`MemoryTrace` (the count does not depend on
    the device); ``triton`` is the sum of :data:`bnlib.kernels.PASSES`.
    """
    x, w, b, dy = _inputs(shape, "cpu", dtype)
    passes = {}
    for method in ("composite", "bnlib.torch", "torch"):
        with MemoryTrace() as trace:
            _step(method, x, w, b, dy)()
        passes[method] = trace.passes(x)
    passes["triton"] = float(sum(triton_bn.PASSES.values()))
    return passes


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(device: str = "cpu", nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """GB/s of ``dst.copy_(src)`` on ``device`` (read + write counted), the best of ``repeats``."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    from bnlib.timing import time_one

    best = time_one(lambda: dst.copy_(src), repeats=repeats, warmup=1,
                    sync=lambda: _synchronize(device)).min
    return 2 * src.numel() * 4 / best / 1e9


def time_methods(shape, device: str = "cpu", dtype=torch.float32, repeats: int = 10,
                 methods: list[str] | None = None) -> list[dict]:
    """Median time of one forward + backward per method, timed by :func:`bnlib.timing.compare`.

    One dict per method: ``method``, ``ms`` (median), ``min_ms``, ``low_ms`` /
    ``high_ms`` (the 10th-90th percentile spread), ``timing`` (the
    :class:`bnlib.timing.Timing`, for :func:`bnlib.timing.spreads_apart` between any two
    rows), ``resolved`` (spread apart from
    the ``torch`` row's), ``passes`` (from :func:`traffic`
    at the same shape), ``gbps`` (bytes moved under that count / time) and
    ``ratio`` (time / the ``torch`` time).
    """
    methods = methods or available_methods(device)
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {sorted(METHODS)}")
    from bnlib.timing import compare

    x, w, b, dy = _inputs(shape, device, dtype)
    timed = compare({m: _step(m, x, w, b, dy) for m in methods}, repeats=repeats, warmup=1,
                    sync=lambda: _synchronize(device))   # warm-up compiles the Triton kernels
    passes = traffic(shape, dtype)          # torch.compile's fused loops are not traced: NaN
    nbytes = x.numel() * x.element_size()
    reference = "torch" if "torch" in methods else methods[0]
    return [{"method": m, "ms": 1e3 * timed[m].median, "min_ms": 1e3 * timed[m].min,
             "low_ms": 1e3 * timed[m].low, "high_ms": 1e3 * timed[m].high, "timing": timed[m],
             "passes": passes.get(m, float("nan")),
             "gbps": passes.get(m, float("nan")) * nbytes / timed[m].median / 1e9,
             "ratio": timed.ratio(m, reference),
             "resolved": m == reference or timed.resolved(m, reference),
             "shape": tuple(shape), "device": device,
             "dtype": str(dtype).replace("torch.", "")}
            for m in methods]


def format_rows(rows: list[dict]) -> str:
    """The rows of :func:`time_methods` as a text table."""
    lines = [f"{'shape':<18}{'method':<13}{'ms':>9}{'spread (10-90%)':>18}{'vs torch':>10}"
             f"{'resolved':>9}{'passes':>8}{'GB/s':>8}"]
    for r in rows:
        spread = f"{r['low_ms']:.3f}-{r['high_ms']:.3f}" if "low_ms" in r else ""
        res = "yes" if r.get("resolved") else "no"
        lines.append(f"{str(r['shape']):<18}{r['method']:<13}{r['ms']:>9.3f}{spread:>18}"
                     f"{r['ratio']:>9.2f}x{res:>9}{r['passes']:>8.1f}{r['gbps']:>8.1f}")
    return "\n".join(lines)


def main(device: str = "cuda", repeats: int = 20) -> int:
    """``python -m bnlib bench --device cuda``: the chapter 8 table on a GPU."""
    shapes = [(256, 64, 56, 56), (32, 256, 28, 28), (8192, 1024)]
    name = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "CPU"
    print(f"BN forward + backward, float32, {name}, torch {torch.__version__}; "
          f"copy bandwidth {copy_bandwidth(device):.0f} GB/s")
    for shape in shapes:
        print(format_rows(time_methods(shape, device, repeats=repeats)))
    return 0
