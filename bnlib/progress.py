"""The progress bar of long loops (training, experiments, ``reproduce``).

It lives below :mod:`bnlib.training`, :mod:`bnlib.analysis` and
:mod:`bnlib.experiments`, which all import it, so imports point one way.
"""
from __future__ import annotations

import sys
from typing import Iterable

__all__ = ["progress"]


def progress(iterable: Iterable | None = None, *, total: int | None = None,
             desc: str = "", enabled: bool = False):
    """A tqdm progress bar, shown only when ``enabled`` and stderr is a terminal."""
    from tqdm import tqdm   # the console bar: tqdm.auto would want ipywidgets in notebooks

    show = enabled and sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, disable=not show, leave=False)
