"""Batch renormalisation (Ioffe 2017) as a PyTorch module (chapter 5, section 5.8).

:class:`BatchRenorm` takes ``(N, C)`` or ``(N, C, H, W)`` input, like
``torch.nn.BatchNorm1d/2d``, and computes Algorithm 1 of Ioffe's "Batch
Renormalization" paper (eq. ``ch5-renorm``)::

    r = clip(sigma_B / sigma, 1/r_max, r_max).detach()
    d = clip((mu_B - mu) / sigma, -d_max, d_max).detach()
    y = gamma * ((x - mu_B) / sigma_B * r + d) + beta

in training mode (``sigma_B`` includes ``eps``; ``.detach()`` is the paper's
stop-gradient, the rest is autograd) and ``y = gamma * (x - mu) / sigma + beta``
in evaluation mode.  The buffers ``running_mean`` and ``running_std`` are the
moving mean and standard deviation ``mu`` and ``sigma`` of Algorithm 1, updated
with ``momentum`` as the weight of the new batch.  ``r_max`` and ``d_max`` are
plain attributes to change between steps
(:func:`bnlib.scratch.renorm.renorm_limits`); with their defaults 1 and 0 the
module computes batch norm in training mode.  :mod:`bnlib.scratch.renorm` is
the NumPy version with the backward written by hand; the tests check that the
two agree.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BatchRenorm"]


class BatchRenorm(nn.Module):
    """Batch renormalisation over ``(N, C)`` or ``(N, C, H, W)`` input (Ioffe 2017)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.01,
                 r_max: float = 1.0, d_max: float = 0.0, affine: bool = True):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive integer; got {num_features!r}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1]; got {momentum}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0; got {eps}")
        self.num_features, self.eps, self.momentum = num_features, float(eps), float(momentum)
        self.set_limits(r_max, d_max)
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_std", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def set_limits(self, r_max: float, d_max: float) -> None:
        """Change the clipping limits (``r_max >= 1``, ``d_max >= 0``)."""
        if not r_max >= 1.0 or not d_max >= 0.0:
            raise ValueError(f"need r_max >= 1 and d_max >= 0; got {r_max}, {d_max}")
        self.r_max, self.d_max = float(r_max), float(d_max)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchRenorm({self.num_features}) expects (N, {self.num_features}) or "
                             f"(N, {self.num_features}, H, W) input; got {tuple(x.shape)}")
        axes = [0] if x.dim() == 2 else [0, 2, 3]
        shape = (1, -1) if x.dim() == 2 else (1, -1, 1, 1)
        mean, std = self.running_mean.to(x.dtype), self.running_std.to(x.dtype)
        if self.training:
            if x.numel() // x.shape[1] < 2:
                raise ValueError(f"Expected more than 1 value per channel when training, got input "
                                 f"size {tuple(x.shape)}")
            mu_b = x.mean(dim=axes)
            sigma_b = torch.sqrt(x.var(dim=axes, unbiased=False) + self.eps)
            with torch.no_grad():                                   # the stop-gradient
                r = (sigma_b / std).clamp(1.0 / self.r_max, self.r_max)
                d = ((mu_b - mean) / std).clamp(-self.d_max, self.d_max)
                self.running_mean += self.momentum * (mu_b.to(self.running_mean) - self.running_mean)
                self.running_std += self.momentum * (sigma_b.to(self.running_std) - self.running_std)
                self.num_batches_tracked += 1
            x_hat = (x - mu_b.view(shape)) / sigma_b.view(shape) * r.view(shape) + d.view(shape)
        else:
            x_hat = (x - mean.view(shape)) / std.view(shape)
        if self.affine:
            x_hat = x_hat * self.weight.view(shape) + self.bias.view(shape)
        return x_hat

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps:g}, momentum={self.momentum:g}, "
                f"r_max={self.r_max:g}, d_max={self.d_max:g}")
