"""Normalised LSTMs (chapter 6): Cooijmans et al.'s recurrent batch norm and a layer-norm LSTM.

:class:`NormLSTM` is one LSTM layer whose pre-activations are normalised in
one of three ways (``norm``):

* ``"none"``: the plain LSTM,
  ``(f, i, o, g) = W_x x_t + W_h h_{t-1} + b``,
  ``c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)``,
  ``h_t = sigmoid(o) * tanh(c_t)``;
* ``"bn"``: the batch-normalised LSTM of Cooijmans et al. (2017), eqs. (6)-(8),

      (f, i, o, g) = BN(W_h h_{t-1}; gamma_h, 0) + BN(W_x x_t; gamma_x, 0) + b,
      c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g),
      h_t = sigmoid(o) * tanh(BN(c_t; gamma_c, beta_c)):

  the input-to-hidden and the hidden-to-hidden terms are normalised
  *separately* (their shifts are fixed at zero, the bias ``b`` does that job)
  and the cell state is normalised before the output gate, not in its own
  recurrence.  The statistics (batch statistics in training, running averages
  in evaluation) are kept *per time step* for ``t = 1 .. t_max``; a step
  beyond ``t_max`` uses the statistics of step ``t_max`` (the paper's rule for
  test sequences longer than every training sequence).  The gains
  ``gamma_x, gamma_h, gamma_c`` are shared by all steps and start at
  ``gamma_init`` (0.1 in the paper; 1.0 is the usual batch-norm default);
* ``"ln"``: the same places normalised with layer norm (Ba et al. 2016's
  layer-norm LSTM): per example over the units, any length, no running
  statistics.

Input ``(N, T, n_in)``; :meth:`NormLSTM.forward` returns the last state
``h_T`` ``(N, hidden)``.  :class:`SequenceClassifier` adds a linear read-out.
The forget gate's bias starts at 1 in every variant.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["NormLSTM", "SequenceClassifier", "NORMS"]

NORMS = ("none", "bn", "ln")


class _StepBN(nn.Module):
    """Per-time-step batch statistics (no affine part): ``t_max`` BatchNorm1d(affine=False)."""

    def __init__(self, width: int, t_max: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.t_max = t_max
        self.steps = nn.ModuleList(nn.BatchNorm1d(width, affine=False, momentum=momentum, eps=eps)
                                   for _ in range(t_max))

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        # step t (0-based) uses its own statistics up to t_max, those of t_max beyond
        return self.steps[min(t, self.t_max - 1)](x)


class NormLSTM(nn.Module):
    """One LSTM layer with no, batch (Cooijmans et al.) or layer normalisation (module docstring)."""

    def __init__(self, n_in: int, hidden: int, norm: str = "none", t_max: int = 28,
                 gamma_init: float = 0.1):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
        if t_max < 1:
            raise ValueError(f"t_max must be a positive number of time steps; got {t_max}")
        self.norm, self.hidden, self.t_max = norm, hidden, t_max
        self.wx = nn.Linear(n_in, 4 * hidden, bias=False)
        self.wh = nn.Linear(hidden, 4 * hidden, bias=False)
        nn.init.orthogonal_(self.wh.weight)
        self.bias = nn.Parameter(torch.zeros(4 * hidden))
        with torch.no_grad():
            self.bias[:hidden] = 1.0                       # forget gate (f, i, o, g order)
        if norm != "none":
            self.gamma_x = nn.Parameter(torch.full((4 * hidden,), float(gamma_init)))
            self.gamma_h = nn.Parameter(torch.full((4 * hidden,), float(gamma_init)))
            self.gamma_c = nn.Parameter(torch.full((hidden,), float(gamma_init)))
            self.beta_c = nn.Parameter(torch.zeros(hidden))
        if norm == "bn":
            self.bn_x, self.bn_h = _StepBN(4 * hidden, t_max), _StepBN(4 * hidden, t_max)
            self.bn_c = _StepBN(hidden, t_max)

    def _n(self, which: str, a: torch.Tensor, t: int) -> torch.Tensor:
        if self.norm == "bn":
            return getattr(self, f"bn_{which}")(a, t)
        return nn.functional.layer_norm(a, a.shape[-1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(f"x must have shape (N, T, n_in); got {tuple(x.shape)}")
        N, T, _ = x.shape
        H = self.hidden
        wx = self.wx(x)                                    # W_x x_t for every t at once
        h = x.new_zeros(N, H)
        c = x.new_zeros(N, H)
        for t in range(T):
            if self.norm == "none":
                a = wx[:, t] + self.wh(h) + self.bias
            else:
                a = (self.gamma_h * self._n("h", self.wh(h), t)
                     + self.gamma_x * self._n("x", wx[:, t], t) + self.bias)
            f, i, o, g = a.split(H, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            c_out = c if self.norm == "none" else self.gamma_c * self._n("c", c, t) + self.beta_c
            h = torch.sigmoid(o) * torch.tanh(c_out)
        return h


class SequenceClassifier(nn.Module):
    """A :class:`NormLSTM` and a linear read-out of its last state: ``(N, T, n_in) -> (N, classes)``."""

    def __init__(self, n_in: int, hidden: int, n_classes: int = 10, norm: str = "none",
                 t_max: int = 28, gamma_init: float = 0.1):
        super().__init__()
        self.lstm = NormLSTM(n_in, hidden, norm, t_max, gamma_init)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.lstm(x))
