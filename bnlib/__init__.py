"""bnlib: the library behind the book *Batch Normalization, from Scratch to the GPU*.

Every chapter imports from here; the library is the single source of truth for
the code the book teaches.  Sub-packages follow the order of the book:

* :mod:`bnlib.scratch`     NumPy from scratch (chapters 1-7)
* :mod:`bnlib.torch`       PyTorch autograd Functions and drop-in modules
* :mod:`bnlib.data`        datasets that work offline
* :mod:`bnlib.preprocessing` standardising features (chapter 1)
* :mod:`bnlib.training`    one training loop for NumPy and PyTorch networks (chapter 4)
* :mod:`bnlib.experiments` the reproduced experiments, at smoke/book/paper scale
* :mod:`bnlib.plots`       the figures the chapters draw
* :mod:`bnlib.exercises`   checks that give students feedback

``import bnlib`` imports NumPy only: PyTorch is loaded by :mod:`bnlib.torch`.
"""
from __future__ import annotations

import inspect

__version__ = "0.1.0"


def show_source(obj) -> None:
    """Print the source code of a bnlib function or class in a notebook.

    The chapters call this instead of pasting a copy of the code, so the text
    always shows exactly what runs.  In Jupyter the source is syntax-highlighted.
    A Triton kernel (``@triton.jit``, chapter 8) shows the function it wraps.
    """
    obj = getattr(obj, "fn", obj) if type(obj).__module__.startswith("triton") else obj
    source = inspect.getsource(obj)
    try:  # pragma: no cover - depends on the front end
        from IPython import get_ipython
        from IPython.display import Code, display

        if get_ipython() is not None:
            display(Code(source, language="python"))
            return
    except ImportError:
        pass
    print(source)
