"""The book's one timing helper: interleaved repetitions, median and spread, a ``resolved`` flag.

Every timing in the book (chapters 3, 4, 5, 6 and 8, ``python -m bnlib bench``)
goes through :func:`compare`::

    t = compare({"compact": compact, "staged": staged}, repeats=20)
    t["compact"].median, t["compact"].low, t["compact"].high   # seconds
    t.ratio("staged", "compact")      # median / median
    t.resolved("staged", "compact")   # True when the two spreads do not overlap

How it times.  Each function is called ``warmup`` times first (caches, lazy
initialisation, JIT).  Then ``repeats`` rounds: in every round each function is
called once, in an order that rotates from round to round, so that a change in
the machine's load (another process, a frequency change) hits every function
alike and no function always runs first.  A ``prepare`` hook (set a thread
count, synchronise a GPU) runs before each call, outside the timed region, and
``sync`` (e.g. ``torch.cuda.synchronize``) runs before the clock is read at
both ends.

What it reports.  For each function the median (a typical call), the minimum
(the best the machine did) and the *spread*: the 10th to 90th percentile of
the calls (all of them for fewer than five).  Two timings are **resolved** when
their spreads do not overlap; a chapter states "A is faster than B" only then.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

__all__ = ["Timing", "Comparison", "compare", "time_one", "spreads_apart"]


@dataclass
class Timing:
    """The calls of one function: seconds per call, and their summary."""

    name: str
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(np.median(self.seconds))

    @property
    def min(self) -> float:
        return float(np.min(self.seconds))

    @property
    def low(self) -> float:
        """10th percentile of the calls (the minimum for fewer than five calls)."""
        return float(np.percentile(self.seconds, 10)) if len(self.seconds) >= 5 else self.min

    @property
    def high(self) -> float:
        """90th percentile of the calls (the maximum for fewer than five calls)."""
        s = self.seconds
        return float(np.percentile(s, 90)) if len(s) >= 5 else float(np.max(s))

    def __str__(self) -> str:
        return (f"{self.name}: median {_ms(self.median)} (min {_ms(self.min)}, "
                f"spread {_ms(self.low)}-{_ms(self.high)}, {len(self.seconds)} calls)")


def spreads_apart(a: Timing, b: Timing) -> bool:
    """The book's rule for a resolved timing: the 10-90% spreads of ``a`` and ``b`` do not overlap."""
    return a.high < b.low or b.high < a.low


def _ms(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


@dataclass
class Comparison:
    """The :class:`Timing` of every function of one :func:`compare` call."""

    timings: dict[str, Timing]

    def __getitem__(self, name: str) -> Timing:
        if name not in self.timings:
            raise KeyError(f"no timing named {name!r}; have {', '.join(self.timings)}")
        return self.timings[name]

    def __iter__(self):
        return iter(self.timings.values())

    def ratio(self, a: str, b: str) -> float:
        """Median time of ``a`` divided by the median time of ``b``."""
        return self[a].median / self[b].median

    def resolved(self, a: str, b: str) -> bool:
        """True when the spreads (10th-90th percentile) of ``a`` and ``b`` do not overlap."""
        return spreads_apart(self[a], self[b])

    def faster(self, a: str, b: str) -> str:
        """``a``, ``b`` or ``"unresolved"``: which one is faster, if the spreads say so."""
        if not self.resolved(a, b):
            return "unresolved"
        return a if self[a].median < self[b].median else b

    def table(self, reference: str | None = None) -> str:
        """One line per function: median, min, spread, and the ratio to ``reference``."""
        ref = reference or next(iter(self.timings))
        width = max(len(n) for n in self.timings)
        lines = [f"{'':<{width}}  {'median':>10} {'min':>10} {'spread (10-90%)':>22} "
                 f"{'vs ' + ref:>12}  resolved"]
        for t in self:
            res = "-" if t.name == ref else ("yes" if self.resolved(t.name, ref) else "no")
            lines.append(f"{t.name:<{width}}  {_ms(t.median):>10} {_ms(t.min):>10} "
                         f"{_ms(t.low) + ' - ' + _ms(t.high):>22} "
                         f"{self.ratio(t.name, ref):>11.2f}x  {res}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def compare(fns: Mapping[str, Callable[[], object]], repeats: int = 20, warmup: int = 2, *,
            prepare: Mapping[str, Callable[[], object]] | None = None,
            sync: Callable[[], object] | None = None,
            runs: Mapping[str, int] | None = None) -> Comparison:
    """Time each function of ``fns`` with interleaved, rotating repetitions.

    ``repeats`` rounds of one call each (``runs[name]`` overrides the count for
    a slow function, which then sits out the later rounds); ``warmup`` untimed
    calls each first.  ``prepare[name]()`` runs before each call of ``name``
    and ``sync()`` before each clock reading, both outside the timed region.
    """
    if not fns:
        raise ValueError("fns must name at least one function to time")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0; got {warmup}")
    runs = {name: int((runs or {}).get(name, repeats)) for name in fns}
    bad = {n: r for n, r in runs.items() if r < 1}
    if bad:
        raise ValueError(f"runs must be >= 1; got {bad}")
    prepare = prepare or {}
    sync = sync or (lambda: None)
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            prepare.get(name, lambda: None)()
            fns[name]()
    sync()
    out = {name: Timing(name) for name in names}
    for r in range(max(runs.values())):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            if len(out[name].seconds) >= runs[name]:
                continue
            prepare.get(name, lambda: None)()
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            out[name].seconds.append(time.perf_counter() - start)
    return Comparison(out)


def time_one(fn: Callable[[], object], repeats: int = 20, warmup: int = 2,
             sync: Callable[[], object] | None = None) -> Timing:
    """:func:`compare` for a single function: its :class:`Timing`."""
    return compare({"fn": fn}, repeats, warmup, sync=sync)["fn"]
