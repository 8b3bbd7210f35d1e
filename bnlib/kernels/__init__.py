"""bnlib.kernels: batch normalisation as fused Triton kernels (chapter 8).

* :mod:`bnlib.kernels.batchnorm`: the forward and backward kernels (one
  program per channel, two passes over the data each), the autograd
  ``TritonBatchNormFunction`` and ``batch_norm`` with the semantics of
  :func:`torch.nn.functional.batch_norm`.
* :class:`TritonBatchNorm1d`, :class:`TritonBatchNorm2d`: the drop-in modules
  of :mod:`bnlib.torch` with the kernels in training mode.

Without a CUDA GPU, importing this package sets ``TRITON_INTERPRET=1`` (unless
the variable is set already) so that the kernels run in Triton's interpreter
on CPU tensors; this must happen before the kernels are defined, which is why
it is done here.  Triton ships for Linux only; elsewhere the import fails
with a message that says so.
"""
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the platform
    raise ImportError(
        f"bnlib.kernels needs Triton, which is installed from requirements.txt on Linux; "
        f"it is not available here ({sys.platform}): {error}") from error

from bnlib.kernels.batchnorm import (PASSES, TritonBatchNormFunction, batch_norm,  # noqa: E402
                                     batchnorm_backward, batchnorm_forward, interpreted)
from bnlib.kernels.modules import TritonBatchNorm1d, TritonBatchNorm2d  # noqa: E402

__all__ = ["PASSES", "TritonBatchNormFunction", "batch_norm", "batchnorm_backward",
           "batchnorm_forward", "interpreted", "TritonBatchNorm1d", "TritonBatchNorm2d"]
