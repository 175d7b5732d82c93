"""``joint`` (intermediate, single level): encoder embeddings joined at one level
with presence indicators, trained end to end."""

from __future__ import annotations

import torch

from holomed.encoders.base import mlp
from holomed.fusion.base import Fusion, Imputer, presence_matrix, register_fusion


@register_fusion("joint")
class JointFusion(Fusion):
    def __init__(self, dims, n_outputs, hidden=64, dropout=0.2, imputation="none", layers: int = 1):
        super().__init__(dims, n_outputs, hidden, dropout, imputation)
        self.imputer = Imputer(dims, imputation, hidden)
        self.net = mlp([sum(dims.values()) + len(dims)] + [hidden] * layers, dropout)

    def forward(self, encoded, present):
        self.reset_outputs()
        x, self.aux_loss = self.imputer({n: encoded[n].embedding for n in self.names}, present)
        return self.net(
            torch.cat([x[n] for n in self.names] + [presence_matrix(self.names, present)], 1)
        )
