"""bnlib.kernels: batch normalisation as fused Triton kernels (chapter 8).

* :mod:`bnlib.kernels.batchnorm`: the forward and backward kernels (each
  channel's reduction split over many programs: partial sums per tile, a small
  combine kernel, then an element-wise apply kernel; contiguous tiles for
  (N, C), (N, C, *) and channels-last input; int64 offsets past 2**31
  elements), :func:`launch_plan` (the grid and offset width, computed without
  tensors), the autograd ``TritonBatchNormFunction`` and ``batch_norm`` with
  the semantics of :func:`torch.nn.functional.batch_norm`.
* :mod:`bnlib.kernels.eval_kernel`: eval-mode BN as one kernel
  (:func:`eval_batch_norm`; exercise 8.2).
* :mod:`bnlib.kernels.bench`: ``python -m bnlib bench --device cuda``.
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

from bnlib.kernels.batchnorm import (INT32_MAX, PASSES, LaunchPlan, TritonBatchNormFunction,  # noqa: E402
                                     batch_norm, batchnorm_backward, batchnorm_forward, interpreted,
                                     launch_plan, layout_of)
from bnlib.kernels.eval_kernel import eval_batch_norm  # noqa: E402
from bnlib.kernels.modules import TritonBatchNorm1d, TritonBatchNorm2d  # noqa: E402

__all__ = ["PASSES", "INT32_MAX", "LaunchPlan", "TritonBatchNormFunction", "batch_norm",
           "batchnorm_backward", "batchnorm_forward", "eval_batch_norm", "interpreted", "launch_plan",
           "layout_of", "TritonBatchNorm1d", "TritonBatchNorm2d"]
