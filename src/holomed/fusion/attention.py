"""``attention``: one token per modality (its embedding, or its own tokens) plus a
summary token pass through self-attention with a padding mask for absent modalities.
The summary token's attention over modalities, averaged over heads and layers, is the
per-patient modality weight ``attention_weights`` (B, M), rows summing to 1 over the
present modalities (over all modalities when an imputation fills the absent ones)."""

from __future__ import annotations

import torch
import torch.nn as nn

from holomed.fusion.base import Fusion, Imputer, masked, real_tokens, register_fusion


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(
            nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d, d)
        )

    def forward(self, x, pad):
        h = self.norm1(x)
        a, w = self.attn(
            h, h, h, key_padding_mask=pad, need_weights=True, average_attn_weights=True
        )
        x = x + a
        return x + self.ff(self.norm2(x)), w


@register_fusion("attention")
class AttentionFusion(Fusion):
    def __init__(
        self,
        dims,
        n_outputs,
        hidden=64,
        dropout=0.2,
        imputation="none",
        heads: int = 4,
        layers: int = 1,
    ):
        super().__init__(dims, n_outputs, hidden, dropout, imputation)
        if hidden % heads:
            raise ValueError(f"attention hidden ({hidden}) must be divisible by heads ({heads})")
        self.imputer = Imputer(dims, imputation, hidden)
        self.proj = nn.ModuleDict({n: nn.Linear(d, hidden) for n, d in dims.items()})
        self.kind_emb = nn.Parameter(torch.randn(len(dims), hidden) * 0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.blocks = nn.ModuleList([_Block(hidden, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(hidden)

    def forward(self, encoded, present):
        self.reset_outputs()
        filled, self.aux_loss = self.imputer({n: encoded[n].embedding for n in self.names}, present)
        keep = (
            present
            if self.imputation == "none"
            else {n: torch.ones_like(p) for n, p in present.items()}
        )
        toks, pads, owner = [], [], []
        for i, n in enumerate(self.names):
            enc = encoded[n]
            own = enc.tokens is not None and self.imputation == "none"
            t = masked(enc.tokens, present[n]) if own else filled[n][:, None, :]
            t = self.proj[n](masked(t, keep[n])) + self.kind_emb[i]
            toks.append(t)
            pad = (~keep[n])[:, None].expand(-1, t.shape[1])
            if own:  # padding tokens (empty image slots, note chunks) are never attended
                pad = pad | ~real_tokens(enc)
            pads.append(pad)
            owner += [i] * t.shape[1]
        b = toks[0].shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1)] + toks, 1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device)] + pads, 1)
        ws = []
        for blk in self.blocks:
            x, w = blk(x, pad)
            ws.append(w[:, 0, 1:])  # the summary token's attention over modality tokens
        w = torch.stack(ws).mean(0)
        owner_t = torch.tensor(owner, device=x.device)
        per_mod = torch.zeros(b, len(self.names), device=x.device).index_add(1, owner_t, w)
        self.attention_weights = per_mod / per_mod.sum(1, keepdim=True).clamp(min=1e-12)
        return self.norm(x[:, 0])
