"""Small transformer encoders with Post-LN, Pre-LN or Pre-RMSNorm blocks (chapter 6, section 6.6).

A block is self-attention followed by a position-wise feed-forward network
(``d -> 4d -> d``, ReLU), each wrapped in a residual connection.  Where the
normalisation sits (``placement``):

* ``"post"`` (the original transformer, Vaswani et al. 2017):
  ``x = N(x + Attn(x))``, ``x = N(x + FFN(x))``: the normalisation is on the
  residual path, between the blocks;
* ``"pre"`` (Xiong et al. 2020's Pre-LN): ``x = x + Attn(N(x))``,
  ``x = x + FFN(N(x))``, and one more ``N`` after the last block: the residual
  path is never normalised.

``norm`` is ``"ln"`` (``torch.nn.LayerNorm``) or ``"rms"``
(``torch.nn.RMSNorm``, Zhang & Sennrich 2019: no mean, no shift).
:class:`TinyTransformer` embeds tokens, adds a learned position embedding,
runs ``depth`` blocks and maps every position to ``vocab`` logits.
:func:`ffn_grad_norms` gives the gradient norm of every block's second
feed-forward matrix, the quantity of Xiong et al.'s Figure 3.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Block", "TinyTransformer", "ffn_grad_norms", "PLACEMENTS"]

PLACEMENTS = ("post", "pre")


def _norm(kind: str, d: int) -> nn.Module:
    if kind == "ln":
        return nn.LayerNorm(d)
    if kind == "rms":
        return nn.RMSNorm(d, eps=1e-5)
    raise ValueError(f"norm must be 'ln' or 'rms'; got {kind!r}")


class Block(nn.Module):
    """One transformer encoder block, Post- or Pre-normalised (module docstring)."""

    def __init__(self, d: int, heads: int, placement: str = "pre", norm: str = "ln"):
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be 'post' or 'pre'; got {placement!r}")
        self.placement = placement
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d))
        self.n1, self.n2 = _norm(norm, d), _norm(norm, d)

    def _attend(self, x):
        return self.attn(x, x, x, need_weights=False)[0]

    def forward(self, x):
        if self.placement == "post":
            x = self.n1(x + self._attend(x))
            return self.n2(x + self.ffn(x))
        x = x + self._attend(self.n1(x))
        return x + self.ffn(self.n2(x))


class TinyTransformer(nn.Module):
    """Token and position embeddings, ``depth`` blocks, a final norm for Pre-LN, a linear read-out."""

    def __init__(self, vocab: int, length: int, d: int = 64, heads: int = 4, depth: int = 6,
                 placement: str = "pre", norm: str = "ln"):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(length, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads, placement, norm) for _ in range(depth))
        self.final = _norm(norm, d) if placement == "pre" else nn.Identity()
        self.out = nn.Linear(d, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.out(self.final(x))


def ffn_grad_norms(model: TinyTransformer, tokens: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """Frobenius norm of dL/dW of every block's second feed-forward matrix (one batch, mean loss)."""
    model.zero_grad()
    logits = model(tokens)
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    norms = [float(b.ffn[2].weight.grad.norm()) for b in model.blocks]
    model.zero_grad()
    return norms
