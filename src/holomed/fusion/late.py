"""``late`` (decision level): one predictor per modality, combined over the present
ones by ``combine``: ``mean`` of logits, ``prob_mean`` (mean of probabilities; binary
and multiclass tasks),
``weighted`` (learned weights, renormalised over present modalities), ``uncertainty``
(each predictor also estimates its own log-variance; per-patient weights =
softmax(-log-variance) over present modalities) or
``stacking`` (a linear model on the per-modality logits and presence indicators).
Each predictor is also trained on its own (``unimodal_logits``). A patient with no
modality gets the learned prior (the bias)."""

from __future__ import annotations

import torch
import torch.nn as nn

from holomed.encoders.base import mlp
from holomed.fusion.base import Fusion, masked, presence_matrix, register_fusion

COMBINES = ("mean", "prob_mean", "weighted", "uncertainty", "stacking")


def combine_logits(
    logits: torch.Tensor, pres: torch.Tensor, weights: torch.Tensor | None, prior: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``logits`` (B, M, K) of present members -> (B, K) and the weights (B, M) used.
    ``weights`` (B, M) raw scores or None (equal); absent members get weight 0."""
    scores = torch.zeros_like(pres) if weights is None else weights
    scores = scores.masked_fill(pres == 0, float("-inf"))
    any_present = pres.sum(1, keepdim=True) > 0
    w = torch.softmax(torch.where(any_present, scores, torch.zeros_like(scores)), dim=1)
    w = torch.where(any_present, w, torch.zeros_like(w))
    out = (w.unsqueeze(-1) * logits).sum(1)
    return torch.where(any_present, out, prior.expand_as(out)), w


@register_fusion("late")
class LateFusion(Fusion):
    decision_level = True
    imputes = False  # combines the present modalities' predictions; nothing to impute

    def __init__(
        self,
        dims,
        n_outputs,
        hidden=64,
        dropout=0.2,
        imputation="none",
        combine: str = "mean",
        head_layers: int = 1,
    ):
        super().__init__(dims, n_outputs, hidden, dropout, imputation)
        if combine not in COMBINES:
            raise ValueError(f"late combine must be one of {COMBINES}; got {combine!r}")
        self.combine = combine
        extra = 1 if combine == "uncertainty" else 0
        self.heads = nn.ModuleDict(
            {
                n: nn.Sequential(
                    mlp([d] + [hidden] * head_layers, dropout), nn.Linear(hidden, n_outputs + extra)
                )
                if head_layers
                else nn.Linear(d, n_outputs + extra)
                for n, d in dims.items()
            }
        )
        self.prior = nn.Parameter(torch.zeros(n_outputs))
        if combine == "weighted":
            self.scores = nn.Parameter(torch.zeros(len(dims)))
        if combine == "stacking":
            self.stack = nn.Linear(len(dims) * (n_outputs + 1), n_outputs)

    def forward(self, encoded, present):
        self.reset_outputs()
        outs = {
            n: masked(self.heads[n](masked(encoded[n].embedding, present[n])), present[n])
            for n in self.names
        }
        logits = torch.stack([outs[n][:, : self.n_outputs] for n in self.names], 1)
        pres = presence_matrix(self.names, present)
        self.unimodal_logits = {n: outs[n][:, : self.n_outputs] for n in self.names}
        self.unimodal_present = {n: present[n] for n in self.names}
        if self.combine == "stacking":
            feats = torch.cat([logits.flatten(1), pres], 1)
            out = self.stack(feats)
            self.attention_weights = pres / pres.sum(1, keepdim=True).clamp(min=1)
            return torch.where(pres.sum(1, keepdim=True) > 0, out, self.prior.expand_as(out))
        weights = None
        if self.combine == "weighted":
            weights = self.scores.expand_as(pres)
        elif self.combine == "uncertainty":
            weights = -torch.stack([outs[n][:, -1] for n in self.names], 1)
        if self.combine == "prob_mean":
            return self._prob_mean(logits, pres)
        out, self.attention_weights = combine_logits(logits, pres, weights, self.prior)
        return out

    def _prob_mean(self, logits: torch.Tensor, pres: torch.Tensor) -> torch.Tensor:
        """Logits whose probabilities are the mean of the present modalities' ones."""
        _, w = combine_logits(logits, pres, None, self.prior)
        self.attention_weights = w
        if self.n_outputs == 1:
            p = (w.unsqueeze(-1) * torch.sigmoid(logits)).sum(1).clamp(1e-6, 1 - 1e-6)
            out = torch.log(p) - torch.log1p(-p)
        else:
            p = (w.unsqueeze(-1) * torch.softmax(logits, -1)).sum(1).clamp_min(1e-9)
            out = torch.log(p)
        none = pres.sum(1, keepdim=True) == 0
        return torch.where(none, self.prior.expand_as(out), out)
