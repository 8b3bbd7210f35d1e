"""bnlib.timing: interleaved repetitions, median and spread, the resolved flag."""
from __future__ import annotations

import time

import pytest

from bnlib.timing import compare, time_one


def test_compare_interleaves_and_rotates():
    order = []
    fns = {name: (lambda n=name: order.append(n)) for name in "abc"}
    compare(fns, repeats=3, warmup=0)
    assert order == list("abc") + list("bca") + list("cab")


def test_prepare_and_runs():
    calls, prepared = [], []
    t = compare({"fast": lambda: calls.append("fast"), "slow": lambda: calls.append("slow")},
                repeats=4, warmup=1, prepare={"slow": lambda: prepared.append(1)},
                runs={"slow": 2})
    assert len(t["fast"].seconds) == 4 and len(t["slow"].seconds) == 2
    assert calls.count("slow") == 3 and len(prepared) == 3     # 1 warm-up + 2 timed


def test_a_real_difference_is_resolved_and_noise_is_not():
    t = compare({"sleep5": lambda: time.sleep(0.005), "sleep0": lambda: None}, repeats=7)
    assert t.resolved("sleep5", "sleep0") and t.faster("sleep5", "sleep0") == "sleep0"
    assert t.ratio("sleep5", "sleep0") > 10
    same = compare({"a": lambda: time.sleep(0.002), "b": lambda: time.sleep(0.002)}, repeats=9)
    # identical work: the spreads overlap unless the machine changed speed between calls
    assert same.faster("a", "b") in ("a", "b", "unresolved")
    assert "resolved" in same.table()


def test_timing_summary():
    t = time_one(lambda: time.sleep(0.001), repeats=6, warmup=0)
    assert t.min <= t.low <= t.median <= t.high
    assert len(t.seconds) == 6 and "median" in str(t)


@pytest.mark.parametrize("kwargs, message", [
    ({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup"), ({"runs": {"a": 0}}, "runs")])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare({"a": lambda: None}, **kwargs)
    with pytest.raises(ValueError, match="at least one"):
        compare({})


def test_spreads_apart_is_the_resolved_rule():
    from bnlib.timing import Timing, spreads_apart

    fast, slow = Timing("fast", [1.0, 1.1, 1.2]), Timing("slow", [2.0, 2.1, 2.2])
    overlapping = Timing("overlap", [1.15, 2.05, 1.5])
    assert spreads_apart(fast, slow) and spreads_apart(slow, fast)
    assert not spreads_apart(fast, overlapping)
