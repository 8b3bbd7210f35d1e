"""Batch norm in PyTorch and Triton: memory traffic and time (chapter 8).

Four implementations of the same training-mode forward + backward pass:

* ``composite``: chapter 3's equations as separate PyTorch operations,
  differentiated by autograd (:func:`composite_batch_norm`);
* ``bnlib.torch``: :class:`bnlib.torch.BatchNormFunction`, the compact
  backward of chapter 3 written by hand in PyTorch operations;
* ``torch``: :func:`torch.nn.functional.batch_norm`, PyTorch's own fused
  kernels (cuDNN's or PyTorch's native ones on an NVIDIA GPU);
* ``triton``: :mod:`bnlib.kernels`, the split-reduction kernels; timed only
  when Triton compiles for a GPU (its CPU interpreter is a checking tool, not a
  fast path);
* ``torch.compile``: the composite version compiled (:func:`compiled_composite`),
  timed when asked for by name.

On the CPU (chapter 8, sections 8.2-8.3): :func:`traffic` counts what each
moves with :class:`bnlib.torch.traffic.MemoryTrace` (for ``triton``, the
passes its kernels make by construction); :func:`time_methods` times them on
the same tensors, in turn, with :func:`bnlib.timing.compare`.

On a GPU, ``python -m bnlib bench --device cuda [--json PATH]`` (:func:`main`,
:func:`run_gpu_bench`): composite, ``torch.compile``, ``torch`` and ``triton``;
forward and forward+backward; float32 and bfloat16; the book's shapes and
ResNet-50's, contiguous and channels-last; each the median of interleaved
repetitions timed with CUDA events (:func:`cuda_event_compare`), with its
spread, the GB/s of a two-phase kernel's traffic and that as a percentage of
the measured device-to-device copy bandwidth; the targets of issue 14
(:func:`targets`); a JSON file with the GPU's name, driver and the versions
(:func:`write_json`), which chapter 8 renders from ``results/gpu/``.  Only
torch, triton and NumPy are needed.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from bnlib.kernels import batchnorm as triton_bn
from bnlib.torch.functional import batch_norm_train
from bnlib.torch.traffic import MemoryTrace

__all__ = ["composite_batch_norm", "compiled_composite", "METHODS", "available_methods", "traffic", "copy_bandwidth",
           "time_methods", "format_rows", "BOOK_SHAPES", "RESNET50_SHAPES", "GPU_METHODS", "TWO_PHASE_PASSES",
           "MIN_PASSES", "cuda_event_compare", "copy_bandwidth_cuda", "bench_rows", "environment",
           "write_json", "load_json", "targets", "format_bench", "run_gpu_bench", "main"]


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


# --------------------------------------------------------------------------
# The GPU bench: python -m bnlib bench --device cuda [--json PATH]
# --------------------------------------------------------------------------

BOOK_SHAPES: tuple[tuple[int, ...], ...] = ((64, 64, 64, 64), (32768, 512), (256, 64, 56, 56), (8192, 1024))
#: the batch-norm layers of ResNet-50 (torchvision), batch 64: the stem, then the first
#: block of each stage at its input resolution and each stage's inner and expanded widths
RESNET50_SHAPES: tuple[tuple[int, ...], ...] = (
    (64, 64, 112, 112), (64, 64, 56, 56), (64, 256, 56, 56), (64, 128, 28, 28), (64, 512, 28, 28),
    (64, 256, 14, 14), (64, 1024, 14, 14), (64, 512, 7, 7), (64, 2048, 7, 7))
SHAPE_SETS = {"book": BOOK_SHAPES, "resnet50": RESNET50_SHAPES, "all": BOOK_SHAPES + RESNET50_SHAPES}
GPU_METHODS = ("composite", "torch.compile", "torch", "triton")
DIRECTIONS = ("forward", "forward+backward")
#: activation-sized DRAM passes of a two-phase fused kernel (statistics, then outputs):
#: forward reads x twice and writes y; backward reads x and dy twice and writes dx
TWO_PHASE_PASSES = {"forward": 3, "forward+backward": 8}
#: the compulsory traffic: forward reads x, writes y; backward reads x and dy, writes dx
MIN_PASSES = {"forward": 2, "forward+backward": 5}
LARGE_BYTES = 64 * 2**20           # "large shapes" of the targets: tensors of 64 MiB and more
TARGET_RATIO = 1.10                # Triton fwd+bwd within 10% of PyTorch's fused kernel, or faster
TARGET_COPY_PCT = 80.0             # and at least 80% of the copy bandwidth at large shapes


def _layout_name(x: Tensor) -> str:
    return "channels_last" if (x.dim() == 4 and not x.is_contiguous()
                               and x.is_contiguous(memory_format=torch.channels_last)) else "contiguous"


def _callable(method: str, direction: str, x: Tensor, w: Tensor, b: Tensor, dy: Tensor) -> Callable:
    fn = METHODS[method]
    if direction == "forward":
        def forward():
            with torch.no_grad():
                return fn(x, w, b, 1e-5)
        return forward
    return lambda: torch.autograd.grad(fn(x, w, b, 1e-5), (x, w, b), dy)


def cuda_event_compare(fns: dict[str, Callable], repeats: int = 25, warmup: int = 3,
                       flush_bytes: int = 256 * 2**20):
    """:func:`bnlib.timing.compare` on the GPU's own clock: CUDA events around each call.

    The same interleaved, rotating rounds and the same :class:`~bnlib.timing.Comparison`
    (median, 10-90% spread, ``resolved``), but every call is bracketed by two
    ``torch.cuda.Event``s and the times are read once at the end, so the
    Python between calls is not timed.  Before each call a ``flush_bytes``
    buffer is zeroed (outside the events), so that no call finds its data in
    the L2 cache left by the one before; while the GPU clears it the CPU queues
    the timed call, as in ``triton.testing.do_bench``.
    """
    from bnlib.timing import Comparison, Timing

    names = list(fns)
    flush = torch.empty(flush_bytes // 4, dtype=torch.float32, device="cuda")
    for name in names:
        for _ in range(warmup):
            fns[name]()
    torch.cuda.synchronize()
    events: dict[str, list] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fns[name]()
            end.record()
            events[name].append((start, end))
    torch.cuda.synchronize()
    return Comparison({name: Timing(name, [s.elapsed_time(e) * 1e-3 for s, e in events[name]])
                       for name in names})


def copy_bandwidth_cuda(nbytes: int = 512 * 2**20, repeats: int = 25) -> float:
    """Device-to-device copy GB/s (read + write counted), the median of CUDA-event timings."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    t = cuda_event_compare({"copy": lambda: dst.copy_(src)}, repeats=repeats)["copy"]
    return 2 * nbytes / t.median / 1e9


def bench_rows(timings: dict[str, "object"], *, shape, layout: str, dtype: str, direction: str,
               element_size: int, copy_gbps: float, reference: str = "torch") -> list[dict]:
    """JSON-ready rows for one (shape, layout, dtype, direction) from a :class:`~bnlib.timing.Comparison`.

    ``timings`` maps method names to :class:`~bnlib.timing.Timing` (any object
    with ``median``, ``min``, ``low``, ``high`` and ``seconds``), so the format
    is tested with fake timings.  Per row: times in ms (median, min, 10-90%
    spread), ``bytes`` (the two-phase kernel's DRAM traffic, :data:`TWO_PHASE_PASSES`
    activation-sized passes, the same for every method so that ``gbps`` is an
    effective rate), ``gbps``, ``pct_copy`` (``gbps`` as a percentage of the
    measured copy bandwidth), ``gbps_min`` (the compulsory traffic of
    :data:`MIN_PASSES` over the time), ``ratio`` to ``reference`` and
    ``resolved`` (spreads apart from ``reference``'s).
    """
    from bnlib.timing import spreads_apart

    numel = math.prod(shape)
    nbytes = numel * element_size
    ref = timings.get(reference)
    rows = []
    for method, t in timings.items():
        moved = TWO_PHASE_PASSES[direction] * nbytes
        gbps = moved / t.median / 1e9
        rows.append({
            "shape": list(shape), "layout": layout, "dtype": dtype, "direction": direction,
            "method": method, "ms": 1e3 * t.median, "min_ms": 1e3 * t.min,
            "low_ms": 1e3 * t.low, "high_ms": 1e3 * t.high, "calls": len(t.seconds),
            "tensor_bytes": nbytes, "bytes": moved, "gbps": gbps,
            "pct_copy": 100.0 * gbps / copy_gbps if copy_gbps else float("nan"),
            "gbps_min": MIN_PASSES[direction] * nbytes / t.median / 1e9,
            "ratio": t.median / ref.median if ref is not None else float("nan"),
            "resolved": bool(ref is not None and (method == reference or spreads_apart(t, ref))),
        })
    return rows


def environment(device: str = "cuda") -> dict:
    """GPU name, driver, CUDA, torch, triton and numpy versions (what the JSON's ``meta`` records)."""
    import datetime
    import platform
    import subprocess

    import numpy as np

    meta = {"torch": torch.__version__, "triton": getattr(triton_bn.triton, "__version__", "?"),
            "numpy": np.__version__, "python": platform.python_version(), "cuda": torch.version.cuda,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "gpu": "none", "driver": "unknown"}
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        meta["gpu"] = torch.cuda.get_device_name()
        props = torch.cuda.get_device_properties(0)
        meta["multiprocessors"] = props.multi_processor_count
        meta["memory_gib"] = round(props.total_memory / 2**30, 1)
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            meta["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 else "unknown"
        except (OSError, subprocess.SubprocessError, IndexError):
            pass
    return meta


def write_json(path, meta: dict, rows: list[dict]) -> dict:
    """Write ``{"meta", "rows", "targets"}`` to ``path`` (folders created); return that dict."""
    import json
    from pathlib import Path

    result = {"meta": meta, "rows": rows, "targets": targets(rows)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
    return result


def load_json(path) -> dict:
    """A file written by :func:`write_json`, with the shapes as tuples again."""
    import json
    from pathlib import Path

    result = json.loads(Path(path).read_text())
    for r in result["rows"]:
        r["shape"] = tuple(r["shape"])
    return result


def targets(rows: list[dict]) -> list[dict]:
    """Issue 14's two targets, per (shape, layout, dtype) with a ``triton`` and a ``torch`` forward+backward row.

    ``ratio``: Triton's median time / PyTorch's fused kernel's, met when <=
    :data:`TARGET_RATIO`; ``pct_copy``: Triton's two-phase traffic as a percentage
    of the copy bandwidth, met when >= :data:`TARGET_COPY_PCT`, judged only for
    tensors of :data:`LARGE_BYTES` or more (``None`` below).
    """
    out = []
    keyed = {(tuple(r["shape"]), r["layout"], r["dtype"], r["direction"], r["method"]): r for r in rows}
    for (shape, layout, dtype, direction, method), r in keyed.items():
        if method != "triton" or direction != "forward+backward":
            continue
        ref = keyed.get((shape, layout, dtype, direction, "torch"))
        if ref is None:
            continue
        large = r["tensor_bytes"] >= LARGE_BYTES
        out.append({"shape": list(shape), "layout": layout, "dtype": dtype,
                    "ratio": r["ms"] / ref["ms"], "ratio_met": r["ms"] / ref["ms"] <= TARGET_RATIO,
                    "pct_copy": r["pct_copy"],
                    "copy_met": (r["pct_copy"] >= TARGET_COPY_PCT) if large else None})
    return out


def format_bench(result: dict) -> str:
    """A stored bench result as a text table (one line per row), with the targets after it."""
    meta = result["meta"]
    lines = [f"{meta.get('gpu')}, driver {meta.get('driver')}, CUDA {meta.get('cuda')}, torch "
             f"{meta.get('torch')}, triton {meta.get('triton')}; copy {meta.get('copy_gbps', float('nan')):.0f} GB/s",
             f"{'shape':<20}{'layout':<15}{'dtype':<10}{'direction':<18}{'method':<15}{'ms':>9}"
             f"{'spread':>19}{'vs torch':>9}{'GB/s':>8}{'% copy':>8}"]
    for r in result["rows"]:
        lines.append(f"{str(tuple(r['shape'])):<20}{r['layout']:<15}{r['dtype']:<10}{r['direction']:<18}"
                     f"{r['method']:<15}{r['ms']:>9.3f}{r['low_ms']:>9.3f}-{r['high_ms']:<9.3f}"
                     f"{r['ratio']:>8.2f}x{r['gbps']:>8.0f}{r['pct_copy']:>8.1f}")
    for t in result.get("targets", []):
        copy = "n/a (small)" if t["copy_met"] is None else ("met" if t["copy_met"] else "missed")
        lines.append(f"target {tuple(t['shape'])} {t['layout']} {t['dtype']}: triton/torch "
                     f"{t['ratio']:.2f} ({'met' if t['ratio_met'] else 'missed'}), "
                     f"{t['pct_copy']:.0f}% of copy ({copy})")
    return "\n".join(lines)


def _configurations(shapes):
    for shape in shapes:
        layouts = ["contiguous", "channels_last"] if len(shape) == 4 else ["contiguous"]
        for layout in layouts:
            yield shape, layout


def run_gpu_bench(shapes=BOOK_SHAPES + RESNET50_SHAPES, dtypes=("float32", "bfloat16"),
                  methods=GPU_METHODS, directions=DIRECTIONS, repeats: int = 25, *, device: str = "cuda",
                  compare: Callable | None = None, copy_gbps: float | None = None,
                  progress: Callable[[str], object] | None = print) -> tuple[dict, list[dict]]:
    """Time every method, direction, dtype, layout and shape; return ``(meta, rows)``.

    ``compare(fns, repeats)`` times a dict of callables (default: CUDA events,
    :func:`cuda_event_compare`); the tests pass :func:`bnlib.timing.compare`
    and run it on the CPU with tiny shapes.  Each configuration's methods are
    timed together, interleaved.
    """
    if compare is None:
        compare = cuda_event_compare
    import torch._dynamo

    for knob in ("recompile_limit", "cache_size_limit"):   # one compilation per configuration,
        if hasattr(torch._dynamo.config, knob):            # not a silent fall-back to eager after 8
            setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), 1024))
    meta = environment(device)
    if copy_gbps is None:
        copy_gbps = copy_bandwidth_cuda() if torch.device(device).type == "cuda" else copy_bandwidth(device)
    meta.update({"copy_gbps": copy_gbps, "repeats": repeats, "device": device,
                 "byte_model": "two-phase DRAM passes: forward 3, forward+backward 8 (TWO_PHASE_PASSES)"})
    rows = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        for shape, layout in _configurations(shapes):
            x, w, b, dy = _inputs(shape, device, dtype)
            if layout == "channels_last":
                x = x.detach().to(memory_format=torch.channels_last).requires_grad_(True)
                dy = dy.to(memory_format=torch.channels_last)
            for direction in directions:
                fns = {m: _callable(m, direction, x, w, b, dy) for m in methods}
                timed = compare(fns, repeats)
                rows += bench_rows({m: timed[m] for m in methods}, shape=shape, layout=layout,
                                   dtype=dtype_name, direction=direction, element_size=x.element_size(),
                                   copy_gbps=copy_gbps)
                if progress:
                    best = min(methods, key=lambda m: timed[m].median)
                    progress(f"{str(shape):<20} {layout:<14} {dtype_name:<9} {direction:<17} "
                             f"fastest {best} {1e3 * timed[best].median:.3f} ms")
            del x, w, b, dy
    return meta, rows


def main(device: str = "cuda", repeats: int = 25, json_path=None, shapes: str = "all") -> int:
    """``python -m bnlib bench --device cuda [--json PATH] [--shapes book|resnet50|all]``.

    Times composite PyTorch, ``torch.compile``, PyTorch's fused kernel and the
    Triton kernels, forward and forward+backward, float32 and bfloat16, on the
    book's shapes and ResNet-50's, prints the table and the targets, and writes
    the JSON when ``json_path`` is given (``results/gpu/NAME.json`` is where
    chapter 8 looks).  Needs only torch, triton and NumPy.
    """
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        print("bench --device cuda needs a CUDA GPU; none is available here")
        return 2
    if triton_bn.interpreted():
        print("TRITON_INTERPRET=1 is set: unset it to time the compiled Triton kernels")
        return 2
    meta, rows = run_gpu_bench(SHAPE_SETS[shapes], repeats=repeats)
    meta["command"] = f"python -m bnlib bench --device cuda --repeats {repeats} --shapes {shapes}"
    result = {"meta": meta, "rows": rows, "targets": targets(rows)}
    if json_path:
        result = write_json(json_path, meta, rows)
        print(f"wrote {json_path}")
    print(format_bench(result))
    return 0
