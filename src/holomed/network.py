"""The multimodal network: one encoder per modality -> a fusion strategy -> a head.

Encoders run only on the rows of patients who have the modality (absent rows are never
read, and a missing patient cannot shift another's output); their embeddings are
scattered into zero-filled ``(B, d)`` tensors before fusion.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from holomed.encoders import Encoded, create_encoder
from holomed.encoders.base import FitData
from holomed.fusion import get_fusion


class MultimodalNet(nn.Module):
    def __init__(
        self,
        in_dims: dict[str, int],
        encoders: dict[str, tuple[str, dict[str, Any]]],
        fusion: str,
        fusion_kwargs: dict[str, Any],
        n_outputs: int,
        in_sizes: dict[str, int] | None = None,
    ) -> None:
        """``in_dims``: what each encoder is built for (features, or channels of a
        sequence); ``in_sizes``: the flattened per-patient input size, which input-level
        fusion (early) joins (defaults to ``in_dims``)."""
        super().__init__()
        fcls = get_fusion(fusion)
        self.names = list(in_dims)
        self.in_dims = dict(in_dims)
        sizes = in_sizes or in_dims
        self.encoders = nn.ModuleDict(
            {
                n: create_encoder("identity", sizes[n])
                if fcls.raw_inputs
                else create_encoder(encoders[n][0], d, **encoders[n][1])
                for n, d in in_dims.items()
            }
        )
        dims = {n: e.out_dim for n, e in self.encoders.items()}
        try:
            self.fusion = fcls(dims, n_outputs, **fusion_kwargs)
        except TypeError as err:
            raise ValueError(f"fusion {fusion!r}: {err}") from None
        self.head = (
            nn.Identity() if fcls.decision_level else nn.Linear(self.fusion.out_dim, n_outputs)
        )
        self.aux_losses: list[torch.Tensor] = []

    def encode(
        self, x: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
    ) -> dict[str, Encoded]:
        out, self.aux_losses = {}, []
        for n, enc in self.encoders.items():
            p = present[n]
            idx = p.nonzero().squeeze(1)
            e = enc(
                x[n].index_select(0, idx)
            )  # runs on an empty batch too (keeps DDP graphs equal)
            b = p.shape[0]
            emb = e.embedding.new_zeros(b, e.embedding.shape[1]).index_copy(0, idx, e.embedding)
            tok = mask = None
            if e.tokens is not None:
                tok = e.tokens.new_zeros(b, *e.tokens.shape[1:]).index_copy(0, idx, e.tokens)
            if e.token_mask is not None:  # absent rows: no real token
                m = e.token_mask.to(torch.bool)
                mask = m.new_zeros(b, m.shape[1]).index_copy(0, idx, m)
            if e.aux_loss is not None:
                self.aux_losses.append(e.aux_loss)
            out[n] = Encoded(emb, tok, token_mask=mask)
        return out

    def fit_start(self, data: FitData) -> None:
        """Call every encoder's ``fit_start(name, data)`` hook, where it has one (see
        :mod:`holomed.encoders.base`), in modality order; ``data`` holds the training
        patients of this fit only. Identity encoders (input-level fusion) have none."""
        data.encoders = dict(self.encoders.items())
        for name, enc in self.encoders.items():
            hook = getattr(enc, "fit_start", None)
            if callable(hook):
                hook(name, data)

    def input_weights(self) -> list[torch.Tensor]:
        """Weight matrices that read a modality's input features directly (an encoder's
        first layer, or a fusion's input-level layer): what an L1 penalty makes sparse."""
        out = []
        for n, enc in self.encoders.items():
            out += [p for p in enc.parameters() if p.dim() == 2 and p.shape[1] == self.in_dims[n]]
        sizes = set(self.in_dims.values())
        for p in self.fusion.parameters():
            if p.dim() == 2 and (p.shape[1] in sizes or p.shape[1] == sum(self.in_dims.values())):
                out.append(p)
        return out

    def forward(self, x: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.fusion(self.encode(x, present), present))
