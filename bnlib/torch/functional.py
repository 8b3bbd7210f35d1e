"""Batch and layer normalisation as PyTorch autograd Functions with hand-written backward passes.

Chapter 3 derives the training-mode batch-normalisation forward pass
(equation ``ch3-forward``) and its compact backward pass (equation ``ch3-dx``)
and checks them in NumPy (:mod:`bnlib.scratch`).  This module writes the same
two formulas as a :class:`torch.autograd.Function`, so PyTorch calls *our*
backward instead of differentiating the forward pass itself; chapter 8 runs it
on the GPU.  Nothing here is NumPy: every tensor stays on its own device.

Notation (same symbols as the book), for an input ``x`` of shape ``(N, C)``,
``(N, C, L)`` or ``(N, C, H, W)``; statistics run over every axis except the
channel axis 1, so each channel sees ``m = numel / C`` values::

    mu      = mean(x)                       per channel
    var     = mean((x - mu)**2)             biased: divides by m
    inv_std = 1 / sqrt(var + eps)
    x_hat   = (x - mu) * inv_std
    y       = gamma * x_hat + beta          (gamma = weight, beta = bias)

and, for an upstream gradient ``dy``::

    dgamma = sum(dy * x_hat)
    dbeta  = sum(dy)
    dx     = gamma * inv_std / m * (m * dy - sum(dy) - x_hat * sum(dy * x_hat))

Input checks.  The functions here refuse input they cannot normalise
correctly (``check_finite=True``, the default): a NaN or infinity in ``x``,
or a finite ``x`` so large that its variance overflows (``|x|`` above about
1e19 in float32), raises ``ValueError`` instead of returning NaN or zeros.
The check reads back one boolean from the device (a synchronisation on a
GPU); the drop-in modules in :mod:`bnlib.torch.modules` switch it off, like
PyTorch's own layers, which never check.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# Half-precision input is normalised in float32 (PyTorch does the same), then
# cast back.  float32 and float64 are computed in their own precision.
_ACCUMULATE_IN_FLOAT32 = (torch.float16, torch.bfloat16)


def _opmath(x: Tensor) -> Tensor:
    return x.float() if x.dtype in _ACCUMULATE_IN_FLOAT32 else x


def _per_channel(t: Tensor, ndim: int) -> Tensor:
    """View a per-channel vector of shape (C,) as (1, C, 1, ...) for broadcasting."""
    return t.reshape((1, -1) + (1,) * (ndim - 2))


def _verify_batch_size(x: Tensor) -> None:
    """Training-mode BN needs at least two values per channel (same message as PyTorch)."""
    values_per_channel = x.shape[0] * math.prod(x.shape[2:])
    if values_per_channel == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.size()}"
        )


def _check_bn_arguments(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float,
                        check_batch_size: bool = True) -> None:
    """Clear errors for input training-mode BN cannot use; ``check_batch_size=False`` skips the
    "more than 1 value per channel" check (synchronised BN checks the global count instead)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(
            f"x must have shape (N, C, *) with at least 2 dimensions; got {x.dim()}-D input "
            f"of size {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    num_channels = x.shape[1]
    for name, p in (("weight", weight), ("bias", bias)):
        if p is None:
            continue
        if not isinstance(p, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(p).__name__}")
        if p.shape != (num_channels,):
            raise ValueError(
                f"{name} has shape {tuple(p.shape)} but x of size {tuple(x.shape)} has "
                f"{num_channels} channels along axis 1: {name} must have shape ({num_channels},)"
            )
    if not eps > 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if check_batch_size:
        _verify_batch_size(x)


def _raise_non_finite(x: Tensor, what: str, check_finite: bool | str = True) -> None:
    """Explain why the statistics are not finite: bad input, or overflow of finite input.

    With ``check_finite="overflow"`` (the modules) NaN or infinite *input* is let
    through, as in ``torch.nn``; only the overflow of finite input, which would
    silently give zeros, raises.
    """
    if not bool(torch.isfinite(x).all()):
        if check_finite == "overflow":
            return
        raise ValueError(
            f"x contains NaN or infinite values; {what} cannot normalise them "
            "(check the input or the layer before)"
        )
    raise ValueError(
        f"the variance of x overflows {x.dtype} (largest |x| = {x.abs().max().item():.3g}); "
        f"{what} would return a wrong answer: rescale x or use torch.float64"
    )


class BatchNormFunction(torch.autograd.Function):
    """Training-mode batch normalisation with the compact backward pass written by hand.

    ``BatchNormFunction.apply(x, weight, bias, eps)`` returns ``y`` for ``x`` of
    shape ``(N, C, *)`` (2-D, 3-D or 4-D), normalising with the batch mean and
    the *biased* batch variance (chapter 3, equation ``ch3-forward``).
    ``weight`` (gamma) and ``bias`` (beta) have shape ``(C,)`` or are ``None``
    (``affine=False``).  ``backward`` evaluates the closed form of chapter 3,
    equation ``ch3-dx``, with no autograd inside.  Under ``create_graph=True``
    (a gradient penalty, a Hessian-vector product) the same formula is
    evaluated with differentiable operations on the saved input, recomputing
    ``x_hat`` from ``x``, so second derivatives are exact too
    (``gradgradcheck`` passes, tested against ``torch.nn``).

    Two optional positional arguments (``apply`` takes no keywords):

    * ``return_stats`` (default ``False``): return ``(y, mu, var)`` instead of
      ``y``, where ``mu`` and the biased ``var`` have shape ``(C,)`` and carry
      no gradient.  :func:`batch_norm_train` uses this, so running statistics
      are updated without computing the statistics twice.
    * ``check_finite`` (default ``True``): raise ``ValueError`` for NaN or
      infinite input, or when the variance overflows (see the module docstring);
      ``"overflow"`` raises only for the overflow (what the modules use: NaN
      input propagates as in ``torch.nn``); ``False`` checks nothing.

    The forward pass saves ``x_hat`` and ``inv_std`` for the backward pass (one
    tensor the size of ``x``, one per channel).  Chapter 8 times this Function
    against PyTorch's fused kernel.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float = 1e-5,
        return_stats: bool = False,
        check_finite: bool = True,
    ):
        _check_bn_arguments(x, weight, bias, eps)
        xc = _opmath(x)
        dims = [0] + list(range(2, x.dim()))  # every axis except the channel axis
        m = x.numel() // x.shape[1] if x.shape[1] else 0

        # Batch statistics.  var_mean uses Welford's algorithm, so float32 input
        # with a large mean does not lose the variance to cancellation.
        if m > 0:
            var, mu = torch.var_mean(xc, dim=dims, correction=0)
        else:  # empty batch: no statistics (0/0 = NaN, computed from x so that torch.compile
            # can trace it); the output is empty anyway
            mu = xc.sum(dim=dims) / 0.0
            var = mu.clone()
        inv_std = torch.rsqrt(var + eps)
        if check_finite and m > 0:
            bad = ~(torch.isfinite(mu) & torch.isfinite(var) & torch.isfinite(inv_std))
            if bool(bad.any()):
                _raise_non_finite(x, "batch normalisation", check_finite)

        x_hat = (xc - _per_channel(mu, x.dim())) * _per_channel(inv_std, x.dim())
        y = x_hat
        if weight is not None:
            y = y * _per_channel(weight, x.dim())  # gamma
        if bias is not None:
            y = y + _per_channel(bias, x.dim())  # beta
        if y is x_hat:
            y = x_hat.clone()  # never hand out the tensor saved for backward
        y = y.to(x.dtype)

        ctx.save_for_backward(x_hat, inv_std, weight, x)
        ctx.eps = eps
        ctx.x_dtype = x.dtype
        ctx.weight_dtype = weight.dtype if weight is not None else None
        ctx.bias_dtype = bias.dtype if bias is not None else None
        if return_stats:
            ctx.mark_non_differentiable(mu, var)
            return y, mu, var
        return y

    @staticmethod
    def backward(ctx, dy: Tensor, *unused_stat_grads: Tensor):
        x_hat, inv_std, weight, x = ctx.saved_tensors
        need_dx, need_dweight, need_dbias = ctx.needs_input_grad[:3]
        ndim = x_hat.dim()
        dims = [0] + list(range(2, ndim))
        m = x_hat.numel() // x_hat.shape[1] if x_hat.shape[1] else 0
        dy = _opmath(dy)
        if torch.is_grad_enabled() and m > 0:
            # create_graph=True: rebuild x_hat from x with differentiable operations so the
            # formula below is itself differentiated correctly (double backward)
            var, mu = torch.var_mean(_opmath(x), dim=dims, correction=0)
            inv_std = torch.rsqrt(var + ctx.eps)
            x_hat = (_opmath(x) - _per_channel(mu, ndim)) * _per_channel(inv_std, ndim)

        sum_dy = dy.sum(dim=dims)  # = dbeta
        sum_dy_xhat = (dy * x_hat).sum(dim=dims)  # = dgamma

        dx = dweight = dbias = None
        if need_dx:
            dx = input_gradient(dy, x_hat, inv_std, weight, m, sum_dy, sum_dy_xhat).to(ctx.x_dtype)
        if need_dweight:
            dweight = sum_dy_xhat.to(ctx.weight_dtype)
        if need_dbias:
            dbias = sum_dy.to(ctx.bias_dtype)
        return dx, dweight, dbias, None, None, None


def input_gradient(dy: Tensor, x_hat: Tensor, inv_std: Tensor, weight: Tensor | None, m: int,
                   sum_dy: Tensor, sum_dy_xhat: Tensor) -> Tensor:
    """Chapter 3, equation ``ch3-dx``: the gradient of the loss with respect to BN's input.

    ``dx = gamma * inv_std / m * (m * dy - sum(dy) - x_hat * sum(dy * x_hat))``, with the
    per-channel sums given, so that synchronised BN (chapter 8) can pass the sums over
    all devices and the global ``m``.
    """
    ndim = x_hat.dim()
    scale = inv_std / m if weight is None else weight.to(inv_std.dtype) * inv_std / m
    return _per_channel(scale, ndim) * (
        m * dy - _per_channel(sum_dy, ndim) - x_hat * _per_channel(sum_dy_xhat, ndim)
    )


def batch_norm_train(
    x: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    check_finite: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode batch normalisation returning ``(y, mu, var)``.

    ``y`` is :class:`BatchNormFunction`'s output (differentiable with the
    hand-written backward of chapter 3, equation ``ch3-dx``); ``mu`` and ``var``
    (biased, divided by ``m``) are the batch statistics of shape ``(C,)``
    computed once in the forward pass, detached from the graph.  Use them to
    update running statistics (chapter 5).
    """
    return BatchNormFunction.apply(x, weight, bias, eps, True, check_finite)


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    check_finite: bool = True,
) -> Tensor:
    """Batch normalisation with the semantics of :func:`torch.nn.functional.batch_norm`.

    * ``training=True``: normalise with the batch statistics through
      :class:`BatchNormFunction` (chapter 3) and, when the running buffers
      are given (both or neither), update them in place (chapter 5)::

          running_mean = (1 - momentum) * running_mean + momentum * mu
          running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)

      The running variance uses the *unbiased* batch variance, the
      normalisation the biased one.  ``momentum=0`` leaves the buffers alone.
    * ``training=False``: normalise with ``running_mean`` and ``running_var``
      (both required), ``y = x * s + t`` with ``s = gamma / sqrt(running_var
      + eps)`` and ``t = beta - running_mean * s`` per channel: an affine map,
      differentiated by autograd.

    An empty batch (``N = 0``) returns an empty output and leaves the running
    statistics unchanged, like PyTorch.  With ``check_finite=True`` non-finite
    input raises ``ValueError`` in training mode (see the module docstring);
    in eval mode the map is affine, so non-finite input gives non-finite
    output in the same places and is not checked.
    """
    if not isinstance(weight, (Tensor, type(None))) or not isinstance(bias, (Tensor, type(None))):
        raise TypeError(
            "weight and bias must be tensors or None; the signature is "
            "batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps) "
            "like torch.nn.functional.batch_norm. For training-mode BN without running "
            "statistics call batch_norm_train(x, weight, bias, eps)."
        )
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if training:
        if running_mean is not None and x.dim() >= 2:
            _check_running(running_mean, "running_mean", x)
            _check_running(running_var, "running_var", x)
        y, mu, var = batch_norm_train(x, weight, bias, eps, check_finite=check_finite)
        m = x.numel() // x.shape[1] if x.shape[1] else 0
        if m > 0 and running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1.0 - momentum).add_(mu.to(running_mean.dtype), alpha=momentum)
                unbiased_var = var * (m / (m - 1))
                running_var.mul_(1.0 - momentum).add_(unbiased_var.to(running_var.dtype), alpha=momentum)
        return y

    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if running_mean is None or running_var is None:
        raise ValueError(
            "running_mean and running_var must be given in evaluation mode (training=False)"
        )
    if x.dim() < 2:
        raise ValueError(f"x must have shape (N, C, *), got {x.dim()}-D input of size {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    _check_running(running_mean, "running_mean", x)
    _check_running(running_var, "running_var", x)
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != (x.shape[1],):
            raise ValueError(
                f"{name} has shape {tuple(p.shape)} but x of size {tuple(x.shape)} has "
                f"{x.shape[1]} channels along axis 1: {name} must have shape ({x.shape[1]},)"
            )
    return _batch_norm_eval(x, running_mean, running_var, weight, bias, eps)


def _check_running(buffer: Tensor, name: str, x: Tensor) -> None:
    if buffer.shape != (x.shape[1],):
        raise ValueError(
            f"{name} has shape {tuple(buffer.shape)} but x of size {tuple(x.shape)} has "
            f"{x.shape[1]} channels along axis 1: {name} must have shape ({x.shape[1]},)"
        )


def _batch_norm_eval(
    x: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    """Eval-mode BN as one per-channel affine map ``y = x * s + t`` (chapter 5)."""
    xc = _opmath(x)
    s = torch.rsqrt(running_var.to(xc.dtype) + eps)
    if weight is not None:
        s = s * weight.to(xc.dtype)
    t = -running_mean.to(xc.dtype) * s
    if bias is not None:
        t = t + bias.to(xc.dtype)
    y = torch.addcmul(_per_channel(t, x.dim()), xc, _per_channel(s, x.dim()))
    return y.to(x.dtype)


# --------------------------------------------------------------------------
# Layer normalisation (chapter 6)
# --------------------------------------------------------------------------


class LayerNormFunction(torch.autograd.Function):
    """Layer normalisation with a hand-written backward pass (chapter 6).

    ``LayerNormFunction.apply(x, normalized_ndim, weight, bias, eps)``
    normalises each example over its last ``normalized_ndim`` axes (the
    ``normalized_shape`` of :class:`torch.nn.LayerNorm`), with the biased
    variance; ``weight`` and ``bias`` have the shape of those axes or are
    ``None``.  It is batch normalisation transposed: the statistics run over
    the features of one example instead of over the examples of one feature,
    so the backward pass is chapter 3's ``ch3-dx`` with the sums taken over
    the normalised axes, applied to ``g = gamma * dy`` (gamma now varies along
    the summed axes)::

        dx     = inv_std / D * (D * g - sum(g) - x_hat * sum(g * x_hat))
        dgamma = sum over the batch axes of dy * x_hat
        dbeta  = sum over the batch axes of dy

    ``D`` is the number of normalised values per example.  Under
    ``create_graph=True`` the backward recomputes ``x_hat`` from the saved
    input with differentiable operations, so double backward is exact.
    Optional positional
    ``check_finite`` (default ``True``) as in :class:`BatchNormFunction`.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        normalized_ndim: int,
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float = 1e-5,
        check_finite: bool = True,
    ):
        xc = _opmath(x)
        dims = list(range(x.dim() - normalized_ndim, x.dim()))
        var, mu = torch.var_mean(xc, dim=dims, correction=0, keepdim=True)
        inv_std = torch.rsqrt(var + eps)
        if check_finite and x.numel() > 0:
            bad = ~(torch.isfinite(mu) & torch.isfinite(var) & torch.isfinite(inv_std))
            if bool(bad.any()):
                if eps == 0.0 and bool(torch.isfinite(x).all()) and bool((var == 0).any()):
                    raise ValueError(
                        "an example has zero variance over the normalised axes and eps=0: "
                        "its x_hat is 0/0; use eps > 0"
                    )
                _raise_non_finite(x, "layer normalisation", check_finite)
        x_hat = (xc - mu) * inv_std
        y = x_hat
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        if y is x_hat:
            y = x_hat.clone()  # never hand out the tensor saved for backward
        y = y.to(x.dtype)

        ctx.save_for_backward(x_hat, inv_std, weight, x)
        ctx.eps = eps
        ctx.normalized_ndim = normalized_ndim
        ctx.x_dtype = x.dtype
        ctx.weight_dtype = weight.dtype if weight is not None else None
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x_hat, inv_std, weight, x = ctx.saved_tensors
        need_dx, _, need_dweight, need_dbias = ctx.needs_input_grad[:4]
        k = ctx.normalized_ndim
        dims = list(range(x_hat.dim() - k, x_hat.dim()))
        batch_dims = list(range(x_hat.dim() - k))
        D = math.prod(x_hat.shape[x_hat.dim() - k:])
        dy = _opmath(dy)
        if torch.is_grad_enabled() and x.numel() > 0:
            # create_graph=True: recompute x_hat differentiably (double backward, as for BN)
            var, mu = torch.var_mean(_opmath(x), dim=dims, correction=0, keepdim=True)
            inv_std = torch.rsqrt(var + ctx.eps)
            x_hat = (_opmath(x) - mu) * inv_std

        def sum_over_batch(t: Tensor) -> Tensor:
            # sum(dim=[]) would sum over everything, so an input with no batch axes is kept as is
            return t.sum(dim=batch_dims) if batch_dims else t

        dx = dweight = dbias = None
        if need_dx:
            g = dy * weight.to(dy.dtype) if weight is not None else dy
            sum_g = g.sum(dim=dims, keepdim=True)
            sum_g_xhat = (g * x_hat).sum(dim=dims, keepdim=True)
            dx = (inv_std / D) * (D * g - sum_g - x_hat * sum_g_xhat)
            dx = dx.to(ctx.x_dtype)
        if need_dweight:
            dweight = sum_over_batch(dy * x_hat).to(ctx.weight_dtype)
        if need_dbias:
            dbias = sum_over_batch(dy).to(ctx.bias_dtype)
        return dx, None, dweight, dbias, None, None


def layer_norm(
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    check_finite: bool = True,
) -> Tensor:
    """Layer normalisation with the semantics of :func:`torch.nn.functional.layer_norm`.

    Normalises over the last ``len(normalized_shape)`` axes of ``x`` with
    :class:`LayerNormFunction` (hand-written backward, chapter 6).  The
    trailing axes of ``x`` must equal ``normalized_shape``; ``weight`` and
    ``bias`` have shape ``normalized_shape`` or are ``None``.
    """
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if len(shape) == 0 or x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape):]) != shape:
        raise ValueError(
            f"Given normalized_shape={list(shape)}, expected input with shape "
            f"[*, {', '.join(str(s) for s in shape)}], but got input of size {list(x.shape)}"
        )
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != shape:
            raise ValueError(
                f"{name} must have shape normalized_shape={shape}, got shape {tuple(p.shape)}"
            )
    if eps < 0.0:
        raise ValueError(f"layer_norm eps must be non-negative, but got {eps}")
    return LayerNormFunction.apply(x, len(shape), weight, bias, eps, check_finite)
