"""bnlib.bench: the timing helpers and the table behind ``python -m bnlib bench``."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from bnlib import bench


def test_time_fn_is_the_median():
    calls = []
    delays = iter([0.0, 0.0, 0.001, 0.03, 0.001])      # 2 warm-up calls, then 3 timed

    def fn():
        calls.append(1)
        time.sleep(next(delays))

    t = bench.time_fn(fn, repeats=3, warmup=2)
    assert len(calls) == 5
    assert 0.0009 < t < 0.02                               # the slow outlier is ignored
    with pytest.raises(ValueError, match="repeats"):
        bench.time_fn(fn, repeats=0)


def test_memcpy_bandwidth_is_plausible():
    gbps = bench.memcpy_bandwidth(nbytes=8 * 2**20, repeats=2)
    assert math.isfinite(gbps) and 0.1 < gbps < 10_000


def test_bench_results_structure():
    shapes = [(64, 8), (4, 3, 4, 4)]
    rows = bench.bench_results(shapes, repeats=2, memcpy_bytes=8 * 2**20)
    methods = {r["method"] for r in rows}
    assert {"numpy compact", "numpy staged", "torch"} <= methods
    assert {r["shape"] for r in rows} == set(shapes)
    for r in rows:
        for key in ("ms", "ratio", "gbps", "memcpy_gbps"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r["bytes"] == 4 * np.prod(r["shape"]) * 8
        assert r["gbps"] == pytest.approx(r["bytes"] / (r["ms"] * 1e-3) / 1e9)
        assert r["dtype"] == "float64"
    for shape in shapes:
        torch_row = next(r for r in rows if r["shape"] == shape and r["method"] == "torch")
        assert torch_row["ratio"] == pytest.approx(1.0) and torch_row["threads"] == 1
    table = bench.format_table(rows)
    assert "numpy compact" in table and "(64, 8)" in table


def test_main_prints_the_table(monkeypatch, capsys):
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setattr(bench, "DEFAULT_SHAPES", ((32, 4),))
    small_copy = bench.memcpy_bandwidth
    monkeypatch.setattr(bench, "memcpy_bandwidth", lambda nbytes: small_copy(8 * 2**20, 2))
    assert bench.main(repeats=1) == 0
    out = capsys.readouterr().out
    assert "numpy compact" in out and "memcpy" in out and "byte model" in out
    assert torch.get_num_threads() == threads                # restored
