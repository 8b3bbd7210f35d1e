"""What every experiment shares: scales, seeded configs, results, progress bars.

An experiment module in :mod:`bnlib.experiments` defines

* ``NAME``  - the name used on the command line (``python -m bnlib run NAME``);
* ``Config`` - a dataclass subclassing :class:`ExperimentConfig`; its
  ``SCALES`` class attribute maps ``"smoke"``, ``"book"`` and ``"paper"`` to the
  field values that differ from the defaults;
* ``run(config, progress=False) -> Result`` - a :class:`Result` (or subclass)
  whose ``plot()`` draws the experiment's figure.

The first line of the module docstring is what ``python -m bnlib list`` prints.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from bnlib.progress import progress  # noqa: F401 - re-exported: experiments use base.progress

SCALES = ("smoke", "book", "paper")


@dataclass
class ExperimentConfig:
    """Base of every experiment's ``Config``: a scale, a seed and a device."""

    scale: str = "book"
    seed: int = 0
    device: str = "cpu"

    #: per-scale overrides of the dataclass defaults, set by each experiment
    SCALES: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def at_scale(cls, scale: str = "book", **overrides):
        """The configuration for ``scale`` with ``overrides`` applied on top."""
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
        values = dict(cls.SCALES.get(scale, {}))
        values.update(overrides)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{cls.__module__}.Config has no field(s) {unknown}")
        return cls(scale=scale, **values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


@dataclass
class Result:
    """Raw histories, headline numbers and timings of one experiment run.

    ``histories`` holds the raw arrays (NumPy) an experiment recorded;
    ``summary()`` returns the dict of headline numbers the chapters quote and
    the tests assert; ``timings`` holds wall-clock seconds.  Subclasses add
    ``plot()`` (returning a Matplotlib figure) and any other views.
    """

    name: str
    config: ExperimentConfig
    histories: dict[str, Any] = field(default_factory=dict)
    headline: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return self.headline

    def plot(self):  # pragma: no cover - every experiment overrides this
        raise NotImplementedError(f"experiment {self.name!r} draws no figure")

    def to_json(self) -> dict:
        return _jsonable(
            {"name": self.name, "config": self.config.to_dict(),
             "summary": self.summary(), "timings": self.timings}
        )

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``out_dir/NAME.json`` and ``out_dir/NAME.png``; return both paths."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path, png_path = out / f"{self.name}.json", out / f"{self.name}.png"
        json_path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        fig = self.plot()
        fig.savefig(png_path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        return json_path, png_path


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._start
        return False
