"""Batch norm at inference time in PyTorch: folding, precise statistics, mode checks, freezing (chapter 5).

* :func:`fold_batchnorm`       a copy of a model with every batch norm that follows a
  ``Linear`` or a convolution folded into that layer (eq. ``ch5-fold``);
* :func:`recompute_bn_stats`   recompute the running statistics over many batches with
  the weights fixed (precise BN, Wu & Johnson 2021; AdaBN on target data);
* :func:`bn_layers_in_training_mode`  names of the batch-norm layers left in
  training mode (the forgotten ``model.eval()``);
* :func:`freeze_bn_stats`, :class:`FrozenBatchNorm`  replace batch norm by a fixed
  affine map for fine-tuning, so that ``model.train()`` cannot unfreeze it;
  :func:`bn_eval_mode` keeps the batch-norm layers in eval mode inside a block.

Every function works with ``torch.nn.BatchNorm1d/2d/3d`` and with
:mod:`bnlib.torch`'s ``BatchNorm1d/2d``.  :mod:`bnlib.scratch.deploy` and
:mod:`bnlib.scratch.running` are the NumPy counterparts.
"""
from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from typing import Iterable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["BN_TYPES", "is_batchnorm", "fold_batchnorm", "recompute_bn_stats",
           "bn_layers_in_training_mode", "FrozenBatchNorm", "FoldedLinear", "freeze_bn_stats",
           "bn_eval_mode"]

#: the batch-norm classes the tools recognise: PyTorch's, and bnlib's, which derive from it
BN_TYPES = (nn.modules.batchnorm._BatchNorm,)
_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_batchnorm(module: nn.Module) -> bool:
    """True for ``torch.nn.BatchNorm*d`` (incl. ``SyncBatchNorm``) and ``bnlib.torch.BatchNorm*d``."""
    return isinstance(module, BN_TYPES)


# --------------------------------------------------------------------------- folding

def _bn_scale_shift(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """``s = gamma / sqrt(running_var + eps)`` and ``t = beta - s * running_mean``, in float64."""
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    s = gamma / torch.sqrt(var + bn.eps)
    return s, beta - s * mean


class FoldedLinear(nn.Linear):
    """A ``Linear`` with a ``BatchNorm1d`` folded into it: valid for ``(N, C)`` input only.

    ``BatchNorm1d`` on ``(N, C, L)`` normalises the channel axis 1, but a
    ``Linear`` acts on the last axis, so the fold is wrong there; this layer
    raises instead of returning the wrong numbers.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(
                f"this Linear has a BatchNorm1d folded into it, which is valid for (N, C) input "
                f"only; got {x.dim()}-D input of shape {tuple(x.shape)} (fold the layers by hand "
                "for (N, C, L) input, or keep the batch norm)")
        return super().forward(x)


@torch.no_grad()
def fold_into(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``layer`` (``Linear`` or ``Conv*d``) that computes ``bn(layer(x))`` in eval mode.

    Eq. ``ch5-fold``: every output channel ``k`` of the layer is scaled by
    ``s_k = gamma_k / sqrt(running_var_k + eps)`` and its bias becomes
    ``s_k * (b_k - running_mean_k) + beta_k``; a layer without bias gets one.
    Computed in float64 and stored in the layer's dtype.  A ``Linear`` comes
    back as a :class:`FoldedLinear`, which refuses input that is not 2-D.
    """
    if not isinstance(layer, _FOLDABLE):
        raise TypeError(f"can fold batch norm only into Linear or Conv layers; got {type(layer).__name__}")
    if not is_batchnorm(bn):
        raise TypeError(f"bn must be a batch-norm layer; got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn has no running statistics (track_running_stats=False): it "
                         "normalises with batch statistics even in eval mode and cannot be folded")
    n_out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.num_features != n_out:
        raise ValueError(f"bn has {bn.num_features} features but the layer has {n_out} outputs")
    if isinstance(layer, nn.modules.conv._ConvNd) and layer.transposed:   # pragma: no cover
        raise TypeError("transposed convolutions are not folded")
    s, t = _bn_scale_shift(bn)
    new = copy.deepcopy(layer)
    if type(new) is nn.Linear:
        new.__class__ = FoldedLinear
    w = new.weight.detach().double()
    shape = (-1,) + (1,) * (w.dim() - 1)                   # scale the output-channel axis 0
    new.weight.copy_((w * s.reshape(shape)).to(new.weight.dtype))
    b = new.bias.detach().double() if new.bias is not None else torch.zeros_like(s)
    folded_bias = (s * b + t).to(dtype=new.weight.dtype, device=new.weight.device)
    if new.bias is None:
        new.bias = nn.Parameter(folded_bias, requires_grad=new.weight.requires_grad)
    else:
        new.bias.copy_(folded_bias)
    return new


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference, every foldable batch norm folded into the layer before it.

    Inside every ``nn.Sequential`` (at any depth), a batch-norm layer that
    directly follows a ``Linear``, ``Conv1d``, ``Conv2d`` or ``Conv3d`` with as
    many outputs as it has features is merged into that layer
    (:func:`fold_into`, eq. ``ch5-fold``) and removed; the other modules keep
    their names.  Batch norms elsewhere (after an activation, in a custom
    ``forward`` whose data flow cannot be seen, without running statistics)
    are kept.  The copy is in eval mode and computes what ``model`` computes
    in eval mode, up to rounding; ``model`` itself is not changed.

    ``Linear`` followed by ``BatchNorm1d`` is folded for 2-D input ``(N, C)``,
    the usual case: a ``Linear`` applied to ``(N, C, L)`` input would act on
    ``L``, which ``BatchNorm1d`` does not normalise, so the folded layer (a
    :class:`FoldedLinear`) raises ``ValueError`` for any other input.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    new = copy.deepcopy(model)
    _fold_children(new)
    return new.eval()


def _fold_children(module: nn.Module) -> None:
    for child in module.children():
        _fold_children(child)
    if not isinstance(module, nn.Sequential):
        return
    items = list(module._modules.items())
    kept: list[tuple[str, nn.Module]] = []
    changed = False
    for name, child in items:
        prev = kept[-1][1] if kept else None
        if (is_batchnorm(child) and isinstance(prev, _FOLDABLE)
                and child.running_mean is not None
                and child.num_features == (prev.out_features if isinstance(prev, nn.Linear)
                                           else prev.out_channels)):
            kept[-1] = (kept[-1][0], fold_into(prev, child))
            changed = True
        else:
            kept.append((name, child))
    if changed:
        module._modules = OrderedDict(kept)


# --------------------------------------------------------------------------- statistics

def _batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if is_batchnorm(m)]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, batches: Iterable, *, device=None) -> nn.Module:
    """Recompute the running statistics of every batch norm over ``batches``, weights fixed.

    Every batch-norm layer with running statistics is reset and, with
    ``momentum=None``, accumulates the plain average of its batch means and
    unbiased batch variances over the batches (Ioffe & Szegedy's Algorithm 2,
    eq. ``ch5-alg2``), each layer seeing its input as in training.  All other
    modules run in eval mode (dropout off); no gradient is computed and no
    parameter changes.  Afterwards every module's training flag and every
    batch norm's momentum are what they were.  Items of ``batches`` may be
    tensors, NumPy arrays or ``(x, y)`` pairs (``x`` is used); they are moved
    to the model's device and dtype.  Used for precise BN (Wu & Johnson 2021)
    and for AdaBN (Li et al. 2016: statistics of the target data).

    Returns ``model`` (changed in place), like ``torch.optim.swa_utils.update_bn``.
    """
    bns = [m for _, m in _batchnorms(model) if m.running_mean is not None]
    if not bns:
        raise ValueError("the model has no batch-norm layer with running statistics")
    param = next(model.parameters(), None)
    buf = bns[0].running_mean
    device = device or (param.device if param is not None else buf.device)
    dtype = param.dtype if param is not None else buf.dtype
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in bns}
    saved = {m: (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in bns}
    count = 0
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        for x in batches:
            if isinstance(x, (tuple, list)):
                x = x[0]
            x = torch.as_tensor(x).to(device=device, dtype=dtype)
            model(x)
            count += 1
        if count == 0:
            raise ValueError("batches is empty: no statistics to average")
    except BaseException:
        for m, (mean, var, n) in saved.items():
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(n)
        raise
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return model


def bn_layers_in_training_mode(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of the batch-norm layers in training mode.

    Call it before inference: a non-empty list means the model will normalise
    with the statistics of each incoming batch and keep changing its running
    statistics, the forgotten ``model.eval()``.  During training it should list
    every batch norm (unless they are frozen on purpose).
    """
    return [name for name, m in _batchnorms(model) if m.training]


# --------------------------------------------------------------------------- freezing

class FrozenBatchNorm(nn.Module):
    """Batch norm with fixed statistics: ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` always.

    Made from a trained batch norm by :func:`freeze_bn_stats`; behaves like that
    layer in eval mode, in training *and* eval mode, so ``model.train()`` does
    not bring back batch statistics.  The running statistics are buffers that
    never change.  ``gamma`` and ``beta`` stay trainable parameters when
    ``train_affine`` (the usual fine-tuning choice), else they become buffers.
    Works for input ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``, ...
    """

    def __init__(self, bn: nn.Module, train_affine: bool = True):
        super().__init__()
        if not is_batchnorm(bn):
            raise TypeError(f"bn must be a batch-norm layer; got {type(bn).__name__}")
        if bn.running_mean is None:
            raise ValueError("bn has no running statistics (track_running_stats=False) to freeze")
        self.num_features = bn.num_features
        self.eps = bn.eps
        mean = bn.running_mean.detach().clone()
        self.register_buffer("running_mean", mean)
        self.register_buffer("running_var", bn.running_var.detach().clone())
        gamma = bn.weight.detach().clone() if bn.weight is not None else torch.ones_like(mean)
        beta = bn.bias.detach().clone() if bn.bias is not None else torch.zeros_like(mean)
        self.train_affine = bool(train_affine)
        if self.train_affine:
            self.weight = nn.Parameter(gamma)
            self.bias = nn.Parameter(beta)
        else:
            self.register_buffer("weight", gamma)
            self.register_buffer("bias", beta)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"FrozenBatchNorm({self.num_features}) expects input (N, "
                             f"{self.num_features}, ...); got {tuple(x.shape)}")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(shape) + shift.reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, train_affine={self.train_affine}"


def freeze_bn_stats(model: nn.Module, train_affine: bool = True) -> nn.Module:
    """Replace, in place, every batch norm of ``model`` by a :class:`FrozenBatchNorm`; return ``model``.

    After this, neither ``model.train()`` nor training steps can change the
    normalisation statistics: the way to fine-tune a pretrained network on
    small batches.  ``requires_grad=False`` on gamma and beta alone does *not*
    do this (the running statistics still move in training mode).
    ``train_affine=False`` also fixes gamma and beta.  Batch norms without
    running statistics are left alone.  A bare batch-norm layer cannot be
    replaced in place: ``freeze_bn_stats(bn)`` raises ``TypeError``; use
    ``FrozenBatchNorm(bn)``.
    """
    if is_batchnorm(model):
        raise TypeError(f"freeze_bn_stats replaces the batch norms inside a model; "
                        f"for a bare {type(model).__name__} use FrozenBatchNorm(layer)")
    _freeze_children(model, train_affine)
    return model


def _freeze_children(model: nn.Module, train_affine: bool) -> None:
    for name, child in list(model.named_children()):
        if is_batchnorm(child):
            if child.running_mean is not None:
                setattr(model, name, FrozenBatchNorm(child, train_affine))
        else:
            _freeze_children(child, train_affine)


@contextlib.contextmanager
def bn_eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``with bn_eval_mode(model):`` every batch norm in eval mode inside the block, modes restored after.

    For a training step that must not use or change batch statistics (the
    other modules, dropout for example, stay as they are).
    """
    bns = [m for _, m in _batchnorms(model)]
    modes = [m.training for m in bns]
    try:
        for m in bns:
            m.eval()
        yield model
    finally:
        for m, mode in zip(bns, modes):
            m.train(mode)
