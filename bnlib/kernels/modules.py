"""``TritonBatchNorm1d`` and ``TritonBatchNorm2d``: bnlib's drop-in layers on the fused kernels (chapter 8).

Everything but the training-mode arithmetic is inherited from
:class:`bnlib.torch.BatchNorm1d` / :class:`bnlib.torch.BatchNorm2d`: the same
arguments, parameters, buffers and ``state_dict`` as ``torch.nn``'s layers, the
same running statistics (``momentum=None`` included), eval mode.  Swapping a
model's layers for these changes which code computes the batch statistics and
the gradients, nothing else.
"""
from __future__ import annotations

from bnlib.kernels.batchnorm import batch_norm
from bnlib.torch.modules import BatchNorm1d, BatchNorm2d

__all__ = ["TritonBatchNorm1d", "TritonBatchNorm2d"]


class TritonBatchNorm1d(BatchNorm1d):
    """:class:`bnlib.torch.BatchNorm1d` whose training mode runs the Triton kernels."""

    _batch_norm = staticmethod(batch_norm)


class TritonBatchNorm2d(BatchNorm2d):
    """:class:`bnlib.torch.BatchNorm2d` whose training mode runs the Triton kernels."""

    _batch_norm = staticmethod(batch_norm)
