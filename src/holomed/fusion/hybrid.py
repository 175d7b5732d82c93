"""``hybrid``: early (joint) fusion inside groups of modalities, late fusion across
groups. ``groups`` lists the groups (names); by default, modalities are grouped by
kind when there are several kinds, else each modality forms a group and one more group
holds them all (intermediate and late fusion side by side). A group is present when
any of its members is; groups combine by ``combine`` as in ``late``."""

from __future__ import annotations

import torch
import torch.nn as nn

from holomed.encoders.base import mlp
from holomed.fusion.base import Fusion, Imputer, masked, presence_matrix, register_fusion
from holomed.fusion.late import combine_logits


@register_fusion("hybrid")
class HybridFusion(Fusion):
    decision_level = True

    def __init__(
        self,
        dims,
        n_outputs,
        hidden=64,
        dropout=0.2,
        imputation="none",
        groups: list[list[str]] | None = None,
        kinds: dict[str, str] | None = None,
        combine: str = "mean",
    ):
        super().__init__(dims, n_outputs, hidden, dropout, imputation)
        if groups is None:
            by_kind: dict[str, list[str]] = {}
            for n in self.names:
                by_kind.setdefault((kinds or {}).get(n, "?"), []).append(n)
            groups = list(by_kind.values())
            if len(groups) == 1:
                groups = [[n] for n in self.names] + (
                    [list(self.names)] if len(self.names) > 1 else []
                )
        unknown = {n for g in groups for n in g} - set(self.names)
        if unknown:
            raise ValueError(f"hybrid groups name unknown modalities {sorted(unknown)}")
        groups = [list(g) for g in groups if g]
        grouped = {n for g in groups for n in g}
        groups += [[n] for n in self.names if n not in grouped]
        if combine not in ("mean", "weighted"):
            raise ValueError(f"hybrid combine must be 'mean' or 'weighted'; got {combine!r}")
        self.groups, self.combine = groups, combine
        self.group_names = ["+".join(g) for g in groups]
        self.imputer = Imputer(dims, imputation, hidden)
        self.nets = nn.ModuleList(
            [
                nn.Sequential(
                    mlp([sum(dims[n] for n in g) + len(g), hidden], dropout),
                    nn.Linear(hidden, n_outputs),
                )
                for g in groups
            ]
        )
        self.prior = nn.Parameter(torch.zeros(n_outputs))
        self.scores = nn.Parameter(torch.zeros(len(groups))) if combine == "weighted" else None

    def forward(self, encoded, present):
        self.reset_outputs()
        x, self.aux_loss = self.imputer({n: encoded[n].embedding for n in self.names}, present)
        logits, gp = [], []
        for g, net in zip(self.groups, self.nets, strict=True):
            p = torch.stack([present[n] for n in g], 1).any(1)
            inp = torch.cat([x[n] for n in g] + [presence_matrix(g, present)], 1)
            logits.append(masked(net(masked(inp, p)), p))
            gp.append(p)
        pres = torch.stack(gp, 1).float()
        stacked = torch.stack(logits, 1)
        self.unimodal_logits = dict(zip(self.group_names, logits, strict=True))
        self.unimodal_present = dict(zip(self.group_names, gp, strict=True))
        weights = None if self.scores is None else self.scores.expand_as(pres)
        out, self.attention_weights = combine_logits(stacked, pres, weights, self.prior)
        return out
