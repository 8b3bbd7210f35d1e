"""Why PyTorch's batch norm on a CPU runs far below the copy bandwidth (chapter 8, section 8.3).

Chapter 8 measured PyTorch's fused batch norm, forward + backward, at a few
GB/s under the byte model of its visible passes, against a copy that moves
several times more, and found that time did not scale with the passes.  The
suspects, each turned into a probe that isolates it:

* **first touch of fresh outputs**: every call allocates new ``y`` and ``dx``
  of the activations' size; allocations that large come straight from the
  operating system (``mmap``), and the first write to each 4 KiB page takes a
  page fault that also zeroes the page.  Probes: a fill and a copy into a fresh
  tensor against the same into a preallocated one, and batch norm through
  ``aten::native_batch_norm.out`` / ``native_batch_norm_backward.out`` with
  preallocated outputs against the ordinary calls;
* **more passes inside the kernels than the operation boundaries show**: the
  statistics need a read of ``x`` before ``y`` can be written, the backward
  sums a read of ``x`` and ``dy`` before ``dx``; probes: a per-channel sum
  (one read) and the forward and backward separately;
* **threads**: the same calls on 1 and on 2 threads;
* **per-operation overhead**: batch norm on a tiny tensor, where the data cost
  nothing.

:func:`gap_probes` builds the probes, each with the activation-sized passes
its byte model counts; :func:`measure_gap` times them in turn with
:func:`bnlib.timing.compare` and returns one row per probe, with GB/s under
that model.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["gap_probes", "measure_gap", "PROBE_PASSES"]

#: activation-sized passes each probe moves at least (reads + writes of x-sized tensors)
PROBE_PASSES = {
    "fill, preallocated": 1, "fill, fresh tensor": 1,
    "copy, preallocated": 2, "copy, fresh tensor": 2,
    "per-channel sum": 1,
    "bn forward, out= buffers": 2, "bn forward, fresh output": 2,
    "bn backward, out= buffers": 3, "bn backward, fresh output": 3,
    "bn forward+backward (autograd)": 5,
}


def gap_probes(shape=(64, 64, 64, 64), dtype=torch.float32, seed: int = 0) -> dict[str, Callable[[], object]]:
    """The probes of the module docstring on tensors of ``shape`` (names as in :data:`PROBE_PASSES`)."""
    aten = torch.ops.aten
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype)
    dy = torch.randn(shape, generator=g, dtype=dtype)
    C = shape[1]
    w = 1 + 0.1 * torch.randn(C, generator=g, dtype=dtype)
    b = 0.1 * torch.randn(C, generator=g, dtype=dtype)
    dims = [0] + list(range(2, len(shape)))
    out, dx, dst = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    mean, invstd, dw, db = (torch.empty(C, dtype=torch.float32) for _ in range(4))
    out.fill_(0), dx.fill_(0), dst.fill_(0)          # touched once: their pages exist
    _, save_mean, save_invstd = aten.native_batch_norm(x, w, b, None, None, True, 0.0, 1e-5)
    xg, wg, bg = (t.clone().requires_grad_(True) for t in (x, w, b))

    def autograd_step():
        y = torch.nn.functional.batch_norm(xg, None, None, wg, bg, True, 0.0, 1e-5)
        return torch.autograd.grad(y, (xg, wg, bg), dy)

    return {
        "fill, preallocated": lambda: dst.fill_(1.0),
        "fill, fresh tensor": lambda: torch.empty_like(x).fill_(1.0),
        "copy, preallocated": lambda: dst.copy_(x),
        "copy, fresh tensor": lambda: x.clone(),
        "per-channel sum": lambda: x.sum(dim=dims),
        "bn forward, out= buffers": lambda: aten.native_batch_norm.out(
            x, w, b, None, None, True, 0.0, 1e-5, out=out, save_mean=mean, save_invstd=invstd),
        "bn forward, fresh output": lambda: aten.native_batch_norm(x, w, b, None, None, True, 0.0, 1e-5),
        "bn backward, out= buffers": lambda: aten.native_batch_norm_backward.out(
            dy, x, w, None, None, save_mean, save_invstd, True, 1e-5, [True, True, True],
            out0=dx, out1=dw, out2=db),
        "bn backward, fresh output": lambda: aten.native_batch_norm_backward(
            dy, x, w, None, None, save_mean, save_invstd, True, 1e-5, [True, True, True]),
        "bn forward+backward (autograd)": autograd_step,
    }


def measure_gap(shape=(64, 64, 64, 64), dtype=torch.float32, repeats: int = 10, threads=(1,),
                names: list[str] | None = None) -> list[dict]:
    """Time the probes (all of them, or ``names``) on each thread count, interleaved.

    One :func:`bnlib.timing.compare` call times every (probe, threads) pair in
    turn; each row has ``name``, ``threads``, ``ms`` (median), ``low_ms`` /
    ``high_ms`` (10-90% spread), ``timing`` (the :class:`~bnlib.timing.Timing`),
    ``passes`` (:data:`PROBE_PASSES`) and ``gbps`` (passes x bytes of ``x`` /
    median).  PyTorch's thread count is restored afterwards.
    """
    from bnlib.timing import compare

    probes = gap_probes(shape, dtype)
    names = names or list(probes)
    unknown = set(names) - set(probes)
    if unknown:
        raise ValueError(f"unknown probes {sorted(unknown)}; known: {list(probes)}")
    nbytes = torch.tensor([], dtype=dtype).element_size()
    for s in shape:
        nbytes *= s
    fns, prepare = {}, {}
    for t in threads:
        for name in names:
            key = f"{name} [{t}]"
            fns[key] = probes[name]
            prepare[key] = (lambda t=t: torch.set_num_threads(t))
    before = torch.get_num_threads()
    try:
        timed = compare(fns, repeats=repeats, warmup=1, prepare=prepare)
    finally:
        torch.set_num_threads(before)
    rows = []
    for t in threads:
        for name in names:
            tm = timed[f"{name} [{t}]"]
            rows.append({"name": name, "threads": t, "ms": 1e3 * tm.median, "low_ms": 1e3 * tm.low,
                         "high_ms": 1e3 * tm.high, "timing": tm, "passes": PROBE_PASSES[name],
                         "gbps": PROBE_PASSES[name] * nbytes / tm.median / 1e9})
    return rows
