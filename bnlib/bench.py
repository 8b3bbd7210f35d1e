"""Time batch-norm forward + backward on the CPU: NumPy (ours) against PyTorch (chapter 3).

``python -m bnlib bench`` prints, for each shape, the median time of one
training-mode forward pass plus its backward pass for

* ``numpy compact``: :func:`bnlib.scratch.batchnorm_forward` + :func:`~bnlib.scratch.batchnorm_backward`
  (the readable versions chapter 3 derives)
* ``numpy blocked``: the same formulas walked in cache-sized blocks
  (:mod:`bnlib.scratch.blocked`)
* ``numpy staged``:  :func:`bnlib.scratch.batchnorm_forward` + :func:`~bnlib.scratch.batchnorm_backward_staged`
* ``torch``: ``torch.nn.functional.batch_norm(..., training=True)`` and its
  autograd backward, on CPU tensors sharing memory with the NumPy arrays.

Threads.  NumPy's element-wise operations and reductions run on ONE thread
(only matrix products use a multi-threaded BLAS, and BN has none), so PyTorch
is timed with ``torch.set_num_threads(1)``: the same single core.  For
context the table adds one ``torch`` row with PyTorch's default thread count
(when it is more than one); the ratio column always divides by the
single-thread PyTorch time.

Timing.  The methods are called in turn (round robin) and each one's median
is reported, so a change in the machine's load during the run hits all of them
alike and the ratios stay meaningful on a shared machine.

Byte model.  Batch norm does a handful of additions and multiplications per
element, so it is limited by memory traffic, not arithmetic.  Any
implementation must at least read ``x`` and ``dy`` and write ``y`` and ``dx``:
``4 * x.nbytes`` bytes (a lower bound: re-reading ``x`` for the statistics or
storing ``x_hat`` costs more).  "GB/s" is that count divided by the time, an
*effective* bandwidth, to compare with what the same machine reaches copying a
large array (``memcpy_bandwidth``: read + write of a 256 MiB ``np.copyto``,
measured in the same run).
"""
from __future__ import annotations

import os
import platform
import time
from typing import Callable, Sequence

import numpy as np

from bnlib.scratch import blocked
from bnlib.scratch import functional as F

__all__ = ["time_fn", "memcpy_bandwidth", "bench_results", "main", "DEFAULT_SHAPES"]

DEFAULT_SHAPES: tuple[tuple[int, ...], ...] = ((8192, 512), (64, 64, 32, 32))
ARRAYS_MOVED = 4          # read x, read dy, write y, write dx


def time_fn(fn: Callable[[], object], repeats: int = 20, warmup: int = 2) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` calls.

    A shorthand for ``bnlib.timing.time_one(fn, repeats, warmup).median``; to
    compare several functions use :func:`bnlib.timing.compare`, which
    interleaves them and says whether the difference is resolved.
    """
    from bnlib.timing import time_one

    return time_one(fn, repeats, warmup).median


def memcpy_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """GB/s (1e9 bytes) of ``np.copyto(dst, src)`` for two ``nbytes`` arrays: read + write counted."""
    src = np.ones(nbytes // 8)
    dst = np.zeros_like(src)
    seconds = time_fn(lambda: np.copyto(dst, src), repeats=repeats, warmup=1)
    return 2 * src.nbytes / seconds / 1e9


def _torch_fn(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, dy: np.ndarray):
    import torch

    xt = torch.from_numpy(x).requires_grad_(True)
    gt = torch.from_numpy(gamma).requires_grad_(True)
    bt = torch.from_numpy(beta).requires_grad_(True)
    dyt = torch.from_numpy(dy)

    def run():
        y = torch.nn.functional.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-5)
        return torch.autograd.grad(y, (xt, gt, bt), dyt)

    return run


def _interleaved(methods, warmup: int):
    """Time the methods with :func:`bnlib.timing.compare` (each on its own thread count)."""
    import torch

    from bnlib.timing import compare

    return compare({name: fn for name, fn, _, _ in methods}, repeats=max(m[3] for m in methods),
                   warmup=warmup,
                   prepare={name: (lambda t=threads: torch.set_num_threads(t))
                            for name, _, threads, _ in methods},
                   runs={name: runs for name, _, _, runs in methods})


def bench_results(shapes: Sequence[tuple[int, ...]] = DEFAULT_SHAPES, repeats: int = 20,
                  dtype=np.float64, staged: bool = True, seed: int = 0,
                  memcpy_bytes: int = 256 * 2**20) -> list[dict]:
    """Time BN forward + backward for each shape; one dict per (shape, method).

    The methods are timed in turn, one call each, ``repeats`` rounds
    (``numpy staged``, the slow teaching version, only ``max(3, repeats // 6)``).

    Keys: ``shape``, ``dtype``, ``method`` ("numpy compact", "numpy blocked", "numpy staged",
    "torch", and "torch (k threads)" when PyTorch has k > 1 threads by default),
    ``threads``, ``runs``, ``ms`` (median), ``ratio`` (time / single-thread torch time),
    ``bytes`` (the byte model: 4 arrays), ``gbps`` (bytes / time) and
    ``memcpy_gbps`` (measured once at the start, copying ``memcpy_bytes``).
    PyTorch's thread count is restored afterwards.
    """
    import torch

    rng = np.random.default_rng(seed)
    memcpy = memcpy_bandwidth(memcpy_bytes)
    default_threads = torch.get_num_threads()
    rows = []
    try:
        for shape in shapes:
            shape = tuple(int(s) for s in shape)
            C = shape[1]
            x = rng.standard_normal(shape).astype(dtype)
            dy = rng.standard_normal(shape).astype(dtype)
            gamma = (1.0 + 0.1 * rng.standard_normal(C)).astype(dtype)
            beta = (0.1 * rng.standard_normal(C)).astype(dtype)

            def compact():
                y, cache = F.batchnorm_forward(x, gamma, beta)
                return F.batchnorm_backward(dy, cache)

            def blocked_fn():
                y, cache = blocked.batchnorm_forward_blocked(x, gamma, beta)
                return blocked.batchnorm_backward_blocked(dy, cache)

            def staged_fn():
                y, cache = F.batchnorm_forward(x, gamma, beta)
                return F.batchnorm_backward_staged(dy, cache)

            # (name, fn, threads, runs): the slow staged version gets fewer runs
            methods = [("numpy compact", compact, 1, repeats),
                       ("numpy blocked", blocked_fn, 1, repeats)]
            if staged:
                methods.append(("numpy staged", staged_fn, 1, max(3, repeats // 6)))
            torch_fn = _torch_fn(x, gamma, beta, dy)
            methods.append(("torch", torch_fn, 1, repeats))
            if default_threads > 1:
                methods.append((f"torch ({default_threads} threads)", torch_fn,
                                default_threads, repeats))
            timed = _interleaved(methods, warmup=1)
            nbytes = ARRAYS_MOVED * x.nbytes
            for name, _, threads, runs in methods:
                t = timed[name]
                rows.append({"shape": shape, "dtype": np.dtype(dtype).name, "method": name,
                             "threads": threads, "runs": runs, "ms": 1e3 * t.median,
                             "min_ms": 1e3 * t.min, "low_ms": 1e3 * t.low,
                             "high_ms": 1e3 * t.high, "ratio": timed.ratio(name, "torch"),
                             "resolved": name == "torch" or timed.resolved(name, "torch"),
                             "bytes": nbytes, "gbps": nbytes / t.median / 1e9,
                             "memcpy_gbps": memcpy})
    finally:
        torch.set_num_threads(default_threads)
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows of :func:`bench_results` as a fixed-width text table."""
    head = (f"{'shape':<18} {'method':<20} {'threads':>7} {'runs':>5} {'ms':>9} "
            f"{'spread (10-90%)':>16} {'vs torch':>9} {'resolved':>8} {'GB/s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        spread = f"{r['low_ms']:.1f}-{r['high_ms']:.1f}" if "low_ms" in r else ""
        res = "yes" if r.get("resolved") else "no"
        lines.append(f"{str(r['shape']):<18} {r['method']:<20} {r['threads']:>7d} "
                     f"{r['runs']:>5d} {r['ms']:>9.1f} {spread:>16} {r['ratio']:>8.2f}x "
                     f"{res:>8} {r['gbps']:>7.2f}")
    return "\n".join(lines)


def main(repeats: int = 20) -> int:
    """``python -m bnlib bench``: print the table for DEFAULT_SHAPES; exit status 0."""
    import torch

    start = time.perf_counter()
    rows = bench_results(DEFAULT_SHAPES, repeats=repeats)
    print("BN forward + backward, float64, CPU; median time of 'runs' calls, methods in turn")
    print(f"numpy {np.__version__}, torch {torch.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; numpy and 'torch' on 1 thread")
    print(f"byte model: read x, dy + write y, dx = {ARRAYS_MOVED} x x.nbytes "
          f"({rows[0]['bytes'] / 2**20:.0f} MiB for {rows[0]['shape']}); "
          f"memcpy (np.copyto, read + write) {rows[0]['memcpy_gbps']:.1f} GB/s")
    print(format_table(rows))
    print(f"(vs torch: time / time of single-thread torch; {time.perf_counter() - start:.0f} s)")
    return 0
