"""Drop-in replacements for ``torch.nn.BatchNorm1d``, ``BatchNorm2d`` and ``LayerNorm``.

Each module has the constructor, parameters, buffers and ``state_dict`` keys of
its PyTorch namesake, so a ``state_dict`` saved from one loads into the other,
and it gives the same outputs, gradients and running statistics (up to
floating-point rounding).  The difference is inside: the training-mode
forward and backward passes are :class:`bnlib.torch.functional.BatchNormFunction`
(chapter 3's equations ``ch3-forward`` and ``ch3-dx``) and
:class:`~bnlib.torch.functional.LayerNormFunction` (chapter 6), written out in
Python instead of PyTorch's fused C++/CUDA kernels, so they are slower but
readable.  Chapter 5 explains the running statistics and the eval mode;
chapter 8 runs these modules on the GPU.

Like PyTorch's layers, the modules let NaN or infinite input through:
non-finite input gives non-finite output, exactly as in PyTorch.  Call
:func:`bnlib.torch.functional.batch_norm` or
:func:`~bnlib.torch.functional.layer_norm` directly to have it checked.

PyTorch's own module test inputs (``module_db``) pass against these modules
(``tests/test_module_db.py``).  The differences that remain, each pinned by a
test there or in ``tests/test_torch_modules.py``:

* finite input whose variance overflows the dtype raises ``ValueError``
  (``torch.nn`` returns zeros or NaN);
* ``torch.jit.script`` is not supported: TorchScript cannot compile a custom
  ``autograd.Function`` (and is deprecated; ``torch.compile`` works);
* float64 input to float32 parameters is computed in the input's dtype, where
  ``torch.nn`` raises "mixed dtype";
* a training batch that is rejected (one value per channel) is not counted in
  ``num_batches_tracked``; ``torch.nn`` counts it before raising.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bnlib import _validate
from bnlib.torch.functional import _verify_batch_size, batch_norm, layer_norm


class _BatchNorm(nn.modules.batchnorm._BatchNorm):
    """What ``BatchNorm1d`` and ``BatchNorm2d`` share; they differ only in the input check.

    The class derives from PyTorch's private ``_BatchNorm`` base only so that
    PyTorch's utilities recognise it as a batch norm (``isinstance`` checks in
    ``torch.optim.swa_utils.update_bn``, ``SyncBatchNorm.convert_sync_batchnorm``
    and the like).  It inherits no behaviour: the constructor and every method
    of that base are written out again below.

    Parameters ``weight`` (gamma, ones) and ``bias`` (beta, zeros) of shape
    ``(num_features,)`` when ``affine``; buffers ``running_mean`` (zeros),
    ``running_var`` (ones) and ``num_batches_tracked`` (a long scalar) when
    ``track_running_stats``; otherwise these attributes are ``None``.

    In training mode the layer normalises with the batch statistics and
    updates the running ones (chapter 5)::

        running = (1 - momentum) * running + momentum * batch_statistic

    with the unbiased batch variance for ``running_var``; ``momentum=None``
    uses ``1 / num_batches_tracked`` instead, a cumulative (plain) average of
    all batches seen.  In eval mode it normalises with the running statistics,
    or with the batch statistics when there are none
    (``track_running_stats=False``).
    """

    _version = 2  # version 2 added num_batches_tracked, as in PyTorch
    # The functional form the layer calls; bnlib.kernels swaps in the Triton kernels (chapter 8).
    _batch_norm = staticmethod(batch_norm)
    __constants__ = ["track_running_stats", "momentum", "eps", "num_features", "affine"]
    num_features: int
    eps: float
    momentum: float | None
    affine: bool
    track_running_stats: bool

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        nn.Module.__init__(self)  # not the base's constructor: everything is set up here
        num_features = _validate.positive_int(num_features, "num_features")
        self.num_features = num_features
        self.eps = _validate.eps(eps)
        self.momentum = _validate.momentum(momentum)
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory_kwargs))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory_kwargs))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory_kwargs))
            self.register_buffer("running_var", torch.ones(num_features, **factory_kwargs))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batch seen."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics and set gamma to 1 and beta to 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _check_input_dim(self, x: Tensor) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # A state_dict written before num_batches_tracked existed (version < 2) loads with 0.
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and self.track_running_stats:
            key = prefix + "num_batches_tracked"
            if key not in state_dict:
                state_dict[key] = (
                    self.num_batches_tracked
                    if self.num_batches_tracked is not None
                    and self.num_batches_tracked.device != torch.device("meta")
                    else torch.tensor(0, dtype=torch.long)
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        # Batch statistics in training mode, and in eval mode when there are no running ones.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if use_batch_stats:
            _verify_batch_size(x)  # before num_batches_tracked changes

        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)

        # The buffers are updated only when they are tracked and we are training.
        pass_buffers = not self.training or self.track_running_stats
        return self._batch_norm(
            x,
            self.running_mean if pass_buffers else None,
            self.running_var if pass_buffers else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
            check_finite="overflow",
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` input; drop-in for ``torch.nn.BatchNorm1d``.

    Statistics per channel ``C`` over ``N`` (and ``L``).  Same arguments,
    parameters, buffers, ``state_dict`` and behaviour as PyTorch's layer; the
    training-mode pass is :class:`bnlib.torch.functional.BatchNormFunction`
    (chapter 3, equations ``ch3-forward`` and ``ch3-dx``).  NaN or infinite
    input propagates (as in PyTorch); finite input whose variance overflows
    the dtype raises ``ValueError`` in training mode, where PyTorch silently
    returns zeros.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 2 and x.dim() != 3:
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of ``(N, C, H, W)`` input; drop-in for ``torch.nn.BatchNorm2d``.

    Statistics per channel ``C`` over ``N``, ``H`` and ``W``.  Same arguments,
    parameters, buffers, ``state_dict`` and behaviour as PyTorch's layer; the
    training-mode pass is :class:`bnlib.torch.functional.BatchNormFunction`
    (chapter 3, equations ``ch3-forward`` and ``ch3-dx``).  NaN or infinite
    input propagates (as in PyTorch); finite input whose variance overflows
    the dtype raises ``ValueError`` in training mode, where PyTorch silently
    returns zeros.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")


class LayerNorm(nn.Module):
    """Layer normalisation over the last axes; drop-in for ``torch.nn.LayerNorm`` (chapter 6).

    Each example is normalised over its trailing ``normalized_shape`` axes
    with its own mean and biased variance, in training and eval mode alike
    (no running statistics).  ``weight`` (ones) and ``bias`` (zeros) have shape
    ``normalized_shape`` when ``elementwise_affine`` (``bias=False`` drops the
    bias).  The pass is :class:`bnlib.torch.functional.LayerNormFunction`
    with its hand-written backward.  NaN or infinite input propagates (as in
    PyTorch); finite input whose variance overflows the dtype (``|x|`` about
    ``1e20`` in float32) raises ``ValueError``, as the functional
    :func:`~bnlib.torch.functional.layer_norm` does, where ``torch.nn.LayerNorm``
    returns NaN.
    """

    __constants__ = ["normalized_shape", "eps", "elementwise_affine"]
    normalized_shape: tuple[int, ...]
    eps: float
    elementwise_affine: bool

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        nn.Module.__init__(self)  # not the base's constructor: everything is set up here
        self.normalized_shape = _validate.shape(normalized_shape, "normalized_shape")
        self.eps = _validate.eps(eps)
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, **factory_kwargs))
            if bias:
                self.bias = nn.Parameter(torch.empty(self.normalized_shape, **factory_kwargs))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Set gamma to 1 and beta to 0."""
        if self.elementwise_affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(
            x, self.normalized_shape, self.weight, self.bias, self.eps, check_finite="overflow"
        )

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
        )
