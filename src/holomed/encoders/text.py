"""Encoder for the ``text`` kind (:mod:`holomed.modalities.text`).

``text_pool``: input ``(B, T, F)`` chunk embeddings (sentence method, zero rows pad
short notes) or ``(B, F)`` tf-idf/SVD vectors (one token). Each chunk is projected to
``hidden`` (Linear -> LayerNorm -> GELU), a learned attention score pools the non-empty
chunks (all-zero chunks are masked out), and an MLP gives the embedding ``(B, hidden)``.
Tokens are the projected chunks ``(B, T, hidden)``, zero at padding. The last pooling
weights are kept in ``last_weights_`` ``(B, T)`` (0 on padding chunks).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from holomed.encoders.base import Encoded, mlp, register_encoder


class TextPool(nn.Module):
    """``hidden``: width of the chunk tokens and of the embedding (``out_dim``, when
    given, overrides it); ``layers``: MLP layers after pooling."""

    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        layers: int = 1,
        dropout: float = 0.1,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        d = self.out_dim = int(out_dim or hidden)
        self.proj = mlp([in_dim, d], dropout)
        self.score = nn.Linear(d, 1)
        self.head = mlp([d] * (layers + 1), dropout)
        self.last_weights_: torch.Tensor | None = None  # (B, T) pooling weights, readable

    def forward(self, x: torch.Tensor) -> Encoded:
        if x.dim() == 2:
            x = x.unsqueeze(1)
            used = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        else:
            used = x.abs().sum(-1) > 0  # (B, T): chunks that are not padding
        h = self.proj(x) * used.unsqueeze(-1)
        # a finite fill keeps gradients finite when a row has no chunk at all
        s = self.score(h).squeeze(-1).masked_fill(~used, -1e9)
        w = torch.softmax(s, dim=1) * used
        self.last_weights_ = w.detach()
        pooled = (w.unsqueeze(-1) * h).sum(1)
        return Encoded(self.head(pooled), tokens=h)


register_encoder("text_pool")(TextPool)
