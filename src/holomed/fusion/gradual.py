"""``gradual`` (multi-level): modalities fused one at a time, each step at a new
depth: h1 = f1(e_a), h2 = f2(h1, e_b), ... ``order`` sets the sequence (default: the
spec's order; put the most informative modality first)."""

from __future__ import annotations

import torch
import torch.nn as nn

from holomed.encoders.base import mlp
from holomed.fusion.base import Fusion, Imputer, register_fusion


@register_fusion("gradual")
class GradualFusion(Fusion):
    def __init__(
        self,
        dims,
        n_outputs,
        hidden=64,
        dropout=0.2,
        imputation="none",
        order: list[str] | None = None,
    ):
        super().__init__(dims, n_outputs, hidden, dropout, imputation)
        unknown = [n for n in (order or []) if n not in dims]
        if unknown:
            raise ValueError(
                f"gradual: order names unknown modalities {unknown}; expected among {self.names}"
            )
        order = [n for n in (order or []) if n in dims] + [
            n for n in dims if n not in (order or [])
        ]
        self.order = order
        self.imputer = Imputer(dims, imputation, hidden)
        first = order[0]
        self.first = mlp([dims[first] + 1, hidden], dropout)
        self.steps = nn.ModuleDict(
            {n: mlp([hidden + dims[n] + 1, hidden], dropout) for n in order[1:]}
        )

    def forward(self, encoded, present):
        self.reset_outputs()
        x, self.aux_loss = self.imputer({n: encoded[n].embedding for n in self.names}, present)
        first = self.order[0]
        h = self.first(torch.cat([x[first], present[first][:, None].float()], 1))
        for n in self.order[1:]:
            h = h + self.steps[n](torch.cat([h, x[n], present[n][:, None].float()], 1))
        return h
