"""Constructor-argument checks shared by the NumPy and PyTorch layers (no torch import).

Bad arguments fail when the layer is built, with the argument's name:
``LayerNorm(4.7)``, ``LayerNorm("45")``, ``BatchNorm(True)`` and
``LayerNorm(eps=-1)`` raise instead of building a layer of the wrong shape.
"""
from __future__ import annotations

import math
import numbers
from typing import Any


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer; got {value!r} "
                        f"({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value}")
    return int(value)


def shape(value: Any, name: str) -> tuple[int, ...]:
    """An int or a sequence of ints (each >= 1) as a tuple; a string is not a shape."""
    if isinstance(value, (str, bytes)) or (not isinstance(value, numbers.Integral)
                                            and not hasattr(value, "__iter__")):
        raise TypeError(f"{name} must be an int or a sequence of ints; got {value!r}")
    if isinstance(value, numbers.Integral):
        return (positive_int(value, name),)
    dims = tuple(value)
    if not dims:
        raise ValueError(f"{name} must name at least one axis; got {value!r}")
    return tuple(positive_int(d, f"{name}[{i}]") for i, d in enumerate(dims))


def eps(value: Any, name: str = "eps") -> float:
    """A finite float >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {value}")
    return float(value)


def momentum(value: Any, name: str = "momentum") -> float | None:
    """``None`` (cumulative average) or a number in [0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1] or None; got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] or None; got {value}")
    return float(value)
