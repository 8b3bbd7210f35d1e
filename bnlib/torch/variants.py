"""Batch-norm variants used to test why batch norm works (chapter 7).

* :class:`PerExampleNoisyBatchNorm1d` - Santurkar et al.'s (2018) "noisy"
  batch norm, their Algorithm 1 (appendix A.2.1; chapter 7, eq. ch7-noisy):
  every activation of every example gets its own i.i.d. scale and offset, drawn
  from a distribution whose mean and scale are themselves redrawn per unit at
  every step.  It undoes on purpose the distributional stability batch norm
  gives the next layer, to test whether that stability is what helps.
* :class:`NoisyBatchNorm1d` - a simpler variant (chapter 7, eq.
  ch7-noisy-shared): one random scale and offset per unit and step, shared by
  every example of the batch.
* :class:`LpBatchNorm1d` - batch norm with the standard deviation replaced by
  another spread of the centred batch: the mean absolute deviation (``p=1``),
  the root mean square (``p=2``, standard BN) or the largest absolute deviation
  (``p="inf"``) (Santurkar et al. 2018, section 3.3; chapter 7, eq. ch7-lp).

Both take ``(N, C)`` input, have a learnable ``weight`` (gamma) and ``bias``
(beta), keep running statistics with PyTorch's momentum convention (chapter
5) and use them in evaluation mode.  Their gradients are PyTorch's autograd.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bnlib.torch.modules import BatchNorm1d

__all__ = ["PerExampleNoisyBatchNorm1d", "NoisyBatchNorm1d", "LpBatchNorm1d", "lp_spread"]


class NoisyBatchNorm1d(nn.Module):
    """Batch norm, then ``y = s_t * BN(x) + m_t`` with ``s_t``, ``m_t`` redrawn every training step.

    The *shared* variant: one scale and offset per unit, the same for every
    example of the batch (Santurkar et al.'s own noise, per example, is
    :class:`PerExampleNoisyBatchNorm1d`).

    In training mode every forward pass draws, for each unit ``k``, a fresh
    offset ``m_t[k] ~ U(-mean_range, mean_range)`` and a fresh scale
    ``s_t[k] ~ U(scale_low, scale_high)``, so the distribution of the unit's
    output changes from one step to the next (it is *non-stationary*) although
    batch norm keeps its input at mean beta and std gamma.  In evaluation
    mode the noise is replaced by its expectation: ``s = (scale_low +
    scale_high) / 2`` and ``m = 0``.  The noise comes from a generator seeded
    with ``seed`` (one per layer), so runs are reproducible.  The last draw is
    kept in the buffers ``noise_scale`` and ``noise_mean``.
    """

    def __init__(self, num_features: int, mean_range: float = 1.0, scale_low: float = 0.5,
                 scale_high: float = 2.0, seed: int = 0, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if mean_range < 0:
            raise ValueError(f"mean_range must be >= 0; got {mean_range}")
        if not 0 < scale_low <= scale_high:
            raise ValueError(f"need 0 < scale_low <= scale_high; got {scale_low}, {scale_high}")
        self.bn = BatchNorm1d(num_features, eps=eps, momentum=momentum)
        self.mean_range, self.scale_low, self.scale_high = float(mean_range), float(scale_low), float(scale_high)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.register_buffer("noise_mean", torch.zeros(num_features))
        self.register_buffer("noise_scale", torch.ones(num_features))

    @property
    def num_features(self) -> int:
        return self.bn.num_features

    def resample(self) -> None:
        """Draw this step's offsets and scales (on the CPU generator, then moved)."""
        k = self.num_features
        u = torch.rand(2, k, generator=self.generator, dtype=torch.float64)
        mean = self.mean_range * (2.0 * u[0] - 1.0)
        scale = self.scale_low + (self.scale_high - self.scale_low) * u[1]
        self.noise_mean.copy_(mean.to(self.noise_mean))
        self.noise_scale.copy_(scale.to(self.noise_scale))

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(x)
        if self.training:
            self.resample()
            return self.noise_scale.to(y.dtype) * y + self.noise_mean.to(y.dtype)
        return 0.5 * (self.scale_low + self.scale_high) * y

    def extra_repr(self) -> str:
        return (f"mean ~ U(-{self.mean_range:g}, {self.mean_range:g}), "
                f"scale ~ U({self.scale_low:g}, {self.scale_high:g}) per unit and step")


class PerExampleNoisyBatchNorm1d(nn.Module):
    """Batch norm, then ``y[i, j] = s[i, j] * BN(x)[i, j] + m[i, j]``: Santurkar et al.'s Algorithm 1.

    At every training step, for each unit ``j``, draw the parameters of that
    step's noise distribution, ``mu_j ~ U(-n_mu, n_mu)`` and ``sigma_j ~ U(1,
    n_sigma)``; then, for each example ``i`` and unit ``j`` independently,
    ``m[i, j] ~ U(mu_j - r_mu, mu_j + r_mu)`` and ``s[i, j] ~ N(sigma_j,
    r_sigma^2)`` (the paper writes ``N(sigma, r_sigma)``; we read ``r_sigma``
    as the standard deviation).  Santurkar et al. (appendix A.2.1) use
    ``n_mu = 0.5``, ``n_sigma = 1.25``, ``r_mu = r_sigma = 0.1``, the
    defaults.  In evaluation mode the noise is replaced by its expectation:
    scale ``(1 + n_sigma) / 2``, offset 0.  The noise comes from a CPU
    generator seeded with ``seed``; the last step's ``mu_j`` and ``sigma_j``
    are kept in the buffers ``noise_mu`` and ``noise_sigma``.
    """

    def __init__(self, num_features: int, n_mu: float = 0.5, n_sigma: float = 1.25, r_mu: float = 0.1,
                 r_sigma: float = 0.1, seed: int = 0, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if n_mu < 0 or r_mu < 0 or r_sigma < 0:
            raise ValueError(f"n_mu, r_mu and r_sigma must be >= 0; got {n_mu}, {r_mu}, {r_sigma}")
        if n_sigma < 1:
            raise ValueError(f"n_sigma must be >= 1 (sigma ~ U(1, n_sigma)); got {n_sigma}")
        self.bn = BatchNorm1d(num_features, eps=eps, momentum=momentum)
        self.n_mu, self.n_sigma, self.r_mu, self.r_sigma = float(n_mu), float(n_sigma), float(r_mu), float(r_sigma)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.register_buffer("noise_mu", torch.zeros(num_features))
        self.register_buffer("noise_sigma", torch.ones(num_features))

    @property
    def num_features(self) -> int:
        return self.bn.num_features

    def sample(self, n: int) -> tuple[Tensor, Tensor]:
        """This step's ``(s, m)``, each of shape ``(n, C)``, drawn on the CPU generator (float64)."""
        k, g = self.num_features, self.generator
        u = torch.rand(2, k, generator=g, dtype=torch.float64)
        mu = self.n_mu * (2.0 * u[0] - 1.0)                          # mu_j ~ U(-n_mu, n_mu)
        sigma = 1.0 + (self.n_sigma - 1.0) * u[1]                    # sigma_j ~ U(1, n_sigma)
        m = mu + self.r_mu * (2.0 * torch.rand(n, k, generator=g, dtype=torch.float64) - 1.0)
        s = sigma + self.r_sigma * torch.randn(n, k, generator=g, dtype=torch.float64)
        self.noise_mu.copy_(mu.to(self.noise_mu))
        self.noise_sigma.copy_(sigma.to(self.noise_sigma))
        return s, m

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(x)
        if self.training:
            s, m = self.sample(y.shape[0])
            return s.to(y) * y + m.to(y)
        return 0.5 * (1.0 + self.n_sigma) * y

    def extra_repr(self) -> str:
        return (f"per unit and step mu ~ U(-{self.n_mu:g}, {self.n_mu:g}), sigma ~ U(1, {self.n_sigma:g}); "
                f"per example m ~ U(mu -/+ {self.r_mu:g}), s ~ N(sigma, {self.r_sigma:g}^2)")


def lp_spread(x_c: Tensor, p) -> Tensor:
    """Spread of each column of the centred batch ``x_c``: eq. (ch7-lp).

    ``p=1``: mean absolute deviation; ``p=2``: root mean square (the biased
    standard deviation); ``p="inf"``: largest absolute deviation.  Other
    ``p >= 1``: ``(mean |x_c|^p)^(1/p)``.
    """
    if p in ("inf", math.inf):
        return x_c.abs().amax(dim=0)
    p = float(p)
    if p < 1:
        raise ValueError(f"p must be >= 1 or 'inf'; got {p}")
    if p == 1.0:
        return x_c.abs().mean(dim=0)
    if p == 2.0:
        return x_c.pow(2).mean(dim=0).sqrt()
    return x_c.abs().pow(p).mean(dim=0).pow(1.0 / p)


class LpBatchNorm1d(nn.Module):
    """``y = gamma * (x - mu_B) / (s_p + eps) + beta`` with ``s_p`` the Lp spread of the batch.

    ``s_p`` is :func:`lp_spread` of the centred batch; ``p=2`` is standard
    batch norm except that ``eps`` is added to the spread, not to the variance.
    Running ``running_mean`` and ``running_spread`` follow PyTorch's momentum
    convention (no unbiasing) and are used in evaluation mode.
    """

    def __init__(self, num_features: int, p=2, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if not (p in ("inf", math.inf) or float(p) >= 1):
            raise ValueError(f"p must be >= 1 or 'inf'; got {p!r}")
        self.num_features, self.p, self.eps, self.momentum = num_features, p, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_spread", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"x must have shape (N, {self.num_features}); got {tuple(x.shape)}")
        if self.training:
            if x.shape[0] < 2:
                raise ValueError("LpBatchNorm1d needs more than one example per batch in training mode")
            mu = x.mean(dim=0)
            x_c = x - mu
            s = lp_spread(x_c, self.p)
            with torch.no_grad():
                self.running_mean.lerp_(mu.detach().to(self.running_mean), self.momentum)
                self.running_spread.lerp_(s.detach().to(self.running_spread), self.momentum)
        else:
            x_c = x - self.running_mean.to(x.dtype)
            s = self.running_spread.to(x.dtype)
        return self.weight * x_c / (s + self.eps) + self.bias

    def extra_repr(self) -> str:
        return f"{self.num_features}, p={self.p}, eps={self.eps}, momentum={self.momentum}"
