"""Count the bytes each PyTorch operation reads and writes (chapter 8).

Batch normalisation does a handful of arithmetic operations per value, so its
cost is set by memory traffic: how many times the activation tensor goes
between memory and the processor.  :class:`MemoryTrace` is a
``TorchDispatchMode`` that sees every ATen operation PyTorch runs inside its
``with`` block (the backward pass included, when it runs inside the block)
and records, for each one, the bytes of its tensor inputs and outputs::

    with MemoryTrace() as trace:
        y = torch.nn.functional.batch_norm(x, None, None, w, b, training=True)
        y.backward(dy)
    trace.total_bytes / x.nbytes      # activation-sized passes over memory

The count is a model, the same at every run and on every machine:

* an operation reads each tensor argument once and writes each output once;
  a per-channel vector broadcast against ``x`` is counted at its own size;
* views (``view``, ``expand``, ``transpose``, ...) and ``detach`` move nothing;
* what an operation does inside (a fused kernel that reads its input twice,
  say) is invisible, so for one op the count is a lower bound on the traffic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["OpTraffic", "MemoryTrace"]

_FREE = {"detach", "alias", "lift_fresh", "empty", "zeros", "ones", "full", "scalar_tensor",
         "empty_like", "_to_copy_noop"}


@dataclass
class OpTraffic:
    """One ATen operation: its name and the bytes it read and wrote."""

    name: str
    bytes_read: int
    bytes_written: int

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written


def _tensor_bytes(values) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(values) if isinstance(t, torch.Tensor))


@dataclass
class MemoryTrace(TorchDispatchMode):
    """Record the memory traffic of every ATen op run inside ``with MemoryTrace() as trace``."""

    ops: list[OpTraffic] = field(default_factory=list)

    def __post_init__(self):
        super().__init__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if not (func.is_view or name in _FREE):
            self.ops.append(OpTraffic(name, _tensor_bytes((args, kwargs)), _tensor_bytes(out)))
        return out

    @property
    def total_bytes(self) -> int:
        """All bytes read and written by the recorded ops."""
        return sum(op.bytes for op in self.ops)

    def passes(self, like: torch.Tensor) -> float:
        """Total traffic in units of ``like.nbytes``: how many times a tensor that size was moved."""
        return self.total_bytes / (like.numel() * like.element_size())

    def table(self, like: torch.Tensor, smallest: float = 0.01) -> str:
        """One line per op, its reads and writes in units of ``like.nbytes``.

        Ops that move less than ``smallest`` of that (per-channel arithmetic,
        say) are summed into one last line instead of listed.
        """
        unit = like.numel() * like.element_size()
        lines = [f"{'op':<28}{'reads':>7}{'writes':>8}"]
        small = [op for op in self.ops if op.bytes < smallest * unit]
        for op in self.ops:
            if op.bytes >= smallest * unit:
                lines.append(f"{op.name:<28}{op.bytes_read / unit:>7.2f}{op.bytes_written / unit:>8.2f}")
        if small:
            lines.append(f"{f'({len(small)} ops on small tensors)':<28}"
                         f"{sum(o.bytes_read for o in small) / unit:>7.2f}"
                         f"{sum(o.bytes_written for o in small) / unit:>8.2f}")
        lines.append(f"{'total':<28}{sum(o.bytes_read for o in self.ops) / unit:>7.2f}"
                     f"{sum(o.bytes_written for o in self.ops) / unit:>8.2f}")
        return "\n".join(lines)
