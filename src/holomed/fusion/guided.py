"""``guided``: one modality (``guide``) conditions the others' feature extraction.
``mode='film'``: the guide's embedding produces a per-feature scale and shift (FiLM)
applied to each other modality's features before a feature-extraction block;
``mode='cross_attention'``: each other modality's tokens query the guide's tokens.
Where the guide is absent the other modalities pass unconditioned; the fused vector is
then joined as in ``joint``."""

from __future__ import annotations

import torch
import torch.nn as nn

from holomed.encoders.base import mlp
from holomed.fusion.base import (
    Fusion,
    Imputer,
    masked,
    modality_tokens,
    presence_matrix,
    real_tokens,
    register_fusion,
)


@register_fusion("guided")
class GuidedFusion(Fusion):
    def __init__(
        self,
        dims,
        n_outputs,
        hidden=64,
        dropout=0.2,
        imputation="none",
        guide: str | None = None,
        mode: str = "film",
        heads: int = 4,
    ):
        super().__init__(dims, n_outputs, hidden, dropout, imputation)
        if mode not in ("film", "cross_attention"):
            raise ValueError(f"guided mode must be 'film' or 'cross_attention'; got {mode!r}")
        if guide is not None and guide not in dims:
            raise ValueError(
                f"guided: guide {guide!r} is not a modality; expected one of {self.names}"
            )
        self.guide = guide if guide is not None else self.names[0]
        self.mode = mode
        self.targets = [n for n in self.names if n != self.guide]
        self.imputer = Imputer(dims, imputation, hidden)
        gd = dims[self.guide]
        if mode == "film":
            self.film = nn.ModuleDict({n: nn.Linear(gd, 2 * dims[n]) for n in self.targets})
            for lin in self.film.values():  # start as identity: scale 1, shift 0
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
            self.extract = nn.ModuleDict({n: mlp([dims[n], hidden], dropout) for n in self.targets})
        else:
            self.q = nn.ModuleDict({n: nn.Linear(dims[n], hidden) for n in self.targets})
            self.kv = nn.Linear(gd, hidden)
            self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
            self.extract = nn.ModuleDict({n: mlp([hidden, hidden], dropout) for n in self.targets})
        joined = gd + hidden * len(self.targets) + len(dims)
        self.net = mlp([joined, hidden], dropout)

    def condition(self, encoded, present) -> dict[str, torch.Tensor]:
        """Each target modality's guided features (B, hidden)."""
        g_ok = present[self.guide]
        out = {}
        if self.mode == "film":
            g = masked(encoded[self.guide].embedding, g_ok)
            for n in self.targets:
                x = masked(encoded[n].embedding, present[n])
                gamma, beta = self.film[n](g).chunk(2, dim=1)
                film = x * (1 + gamma) + beta
                out[n] = self.extract[n](torch.where(g_ok[:, None], film, x))
            return out
        gtok = masked(modality_tokens(encoded[self.guide]), g_ok)
        kv = self.kv(gtok)
        # padding keys (empty image slots ...) are masked; a row without the guide masks
        # nothing (its attention is discarded below), so softmax never sees only -inf
        g_real = real_tokens(encoded[self.guide]) | ~g_ok[:, None]
        g_real = g_real | ~g_real.any(1, keepdim=True)
        weights = []
        for n in self.targets:
            q = self.q[n](masked(modality_tokens(encoded[n]), present[n]))
            att, w = self.attn(q, kv, kv, need_weights=True, key_padding_mask=~g_real)
            att = torch.where(g_ok[:, None, None], att, torch.zeros_like(att))
            real = real_tokens(encoded[n]).to(q.dtype)[..., None]  # mean over real queries
            h = ((q + att) * real).sum(1) / real.sum(1).clamp(min=1.0)
            out[n] = self.extract[n](h)
            weights.append(w.mean(1))
        self.guide_attention = weights
        return out

    def forward(self, encoded, present):
        self.reset_outputs()
        filled, self.aux_loss = self.imputer({n: encoded[n].embedding for n in self.names}, present)
        enc = {
            n: type(encoded[n])(
                filled[n],
                None if encoded[n].tokens is None else masked(encoded[n].tokens, present[n]),
                token_mask=encoded[n].token_mask,
            )
            for n in self.names
        }
        # with imputation, absent targets carry imputed features; without, they stay zero
        cond_present = (
            present
            if self.imputation == "none"
            else {n: torch.ones_like(p) for n, p in present.items()}
        )
        cond_present = {
            **cond_present,
            self.guide: present[self.guide]
            if self.imputation == "none"
            else torch.ones_like(present[self.guide]),
        }
        feats = self.condition(enc, cond_present)
        parts = [filled[self.guide]] + [masked(feats[n], cond_present[n]) for n in self.targets]
        return self.net(torch.cat(parts + [presence_matrix(self.names, present)], 1))
