"""Fusion contract, registry and the missing-modality machinery shared by strategies.

A fusion is an ``nn.Module`` built from ``{modality: out_dim}``;
``forward(encoded, present) -> (B, out_dim)``. Decision-level strategies (``late``,
``hybrid``) return logits ``(B, n_outputs)`` combined over the present modalities.
Every strategy accepts any pattern of missing modalities and never reads a missing
modality's values: they are replaced with ``torch.where`` before any arithmetic, so a
NaN or 1e9 in a missing row cannot reach the output or the gradients.

After ``forward`` a strategy may expose ``aux_loss`` (e.g. cross-modal reconstruction),
``unimodal_logits`` (per-modality predictions trained with their own loss) and
``attention_weights`` ``(B, M)`` (per-patient modality weights, readable).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from holomed.encoders.base import Encoded, mlp
from holomed.fusion.mvae import MultimodalVAE
from holomed.registry import Registry

IMPUTATIONS = ("none", "mean", "learned", "reconstruct", "generate")


class Fusion(nn.Module):
    raw_inputs: bool = False  # True: encoders are identity, inputs are joined (early)
    decision_level: bool = False  # True: forward returns logits (B, n_outputs)
    imputes: bool = True  # False: fusion.imputation would be ignored (the spec refuses it)

    def __init__(
        self,
        dims: dict[str, int],
        n_outputs: int,
        hidden: int = 64,
        dropout: float = 0.2,
        imputation: str = "none",
    ) -> None:
        super().__init__()
        if not dims:
            raise ValueError("a fusion needs at least one modality")
        if imputation not in IMPUTATIONS:
            raise ValueError(f"imputation must be one of {IMPUTATIONS}; got {imputation!r}")
        self.names = list(dims)
        self.dims = dict(dims)
        self.n_outputs = n_outputs
        self.hidden = hidden
        self.dropout = dropout
        self.imputation = imputation
        self.out_dim = n_outputs if self.decision_level else hidden
        self.aux_loss: torch.Tensor | None = None
        self.unimodal_logits: dict[str, torch.Tensor] | None = None
        self.attention_weights: torch.Tensor | None = None

    def reset_outputs(self) -> None:
        self.aux_loss, self.unimodal_logits, self.attention_weights = None, None, None
        self.unimodal_present: dict[str, torch.Tensor] | None = None

    def forward(
        self, encoded: dict[str, Encoded], present: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        raise NotImplementedError


FUSIONS: Registry[type[Fusion]] = Registry("fusion")


def register_fusion(name: str) -> Callable[[type[Fusion]], type[Fusion]]:
    return FUSIONS.register(name)


def get_fusion(name: str) -> type[Fusion]:
    return FUSIONS.get(name)


def fusion_names() -> list[str]:
    return FUSIONS.names()


def masked(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Rows of absent patients set to 0 without reading them (NaN-safe)."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(present.view(shape), x, torch.zeros((), dtype=x.dtype, device=x.device))


def presence_matrix(names: list[str], present: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, M) float indicator, modality order ``names``."""
    return torch.stack([present[n].float() for n in names], dim=1)


class Imputer(nn.Module):
    """Fills absent modalities' embeddings: ``none`` (zeros), ``mean`` (running mean of
    training embeddings), ``learned`` (a trained token per modality) or ``reconstruct``
    (predicted from the present modalities, with an auxiliary reconstruction loss on
    patients where the modality is present) or ``generate`` (a multimodal VAE with a
    product-of-experts posterior, :mod:`holomed.fusion.mvae`, trained as an auxiliary
    loss with random modality masking; an absent modality gets the decoded posterior
    mean of the present ones; ``vae.generate`` gives the mean and standard deviation of
    several draws, the uncertainty of a generated embedding). The presence mask the
    fusion receives stays false for a filled modality: the fusions that read it see the
    embedding flagged as generated."""

    def __init__(
        self, dims: dict[str, int], mode: str = "none", hidden: int = 64, momentum: float = 0.1
    ) -> None:
        super().__init__()
        self.mode, self.names, self.momentum = mode, list(dims), momentum
        if mode == "mean":
            for n, d in dims.items():
                self.register_buffer(f"mean_{n}", torch.zeros(d))
        elif mode == "learned":
            self.tokens = nn.ParameterDict(
                {n: nn.Parameter(torch.zeros(d)) for n, d in dims.items()}
            )
        elif mode == "reconstruct":
            self.proj = nn.ModuleDict({n: nn.Linear(d, hidden) for n, d in dims.items()})
            self.recon = nn.ModuleDict(
                {n: mlp([hidden, hidden, d], 0.0, last_activation=False) for n, d in dims.items()}
            )
        elif mode == "generate":
            self.vae = MultimodalVAE(dims, latent=max(4, hidden // 4), hidden=hidden)
            # the VAE sees each modality's embedding standardised by running statistics of
            # the present training rows: raw embeddings vary by ~0.2 per dimension, and the
            # VAE's pull to its N(0, I) prior then wins (the posterior collapsed to the
            # prior on PhysioNet; the generated fill carried r ~ 0 of the real embedding)
            for n, d in dims.items():
                self.register_buffer(f"gen_mean_{n}", torch.zeros(d))
                self.register_buffer(f"gen_var_{n}", torch.ones(d))

    def forward(
        self, emb: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        clean = {n: masked(emb[n], present[n]) for n in self.names}
        if self.mode == "none":
            return clean, None
        if self.mode in ("mean", "learned"):
            out = {}
            for n in self.names:
                if self.mode == "mean":
                    buf = getattr(self, f"mean_{n}")
                    p = present[n]
                    if self.training and p.any():
                        with torch.no_grad():
                            buf.mul_(1 - self.momentum).add_(self.momentum * clean[n][p].mean(0))
                    fill = buf
                else:
                    fill = self.tokens[n]
                out[n] = torch.where(present[n][:, None], clean[n], fill.expand_as(clean[n]))
            return out, None
        if self.mode == "generate":
            scaled, scale = {}, {}
            for n in self.names:
                mean, var = getattr(self, f"gen_mean_{n}"), getattr(self, f"gen_var_{n}")
                p = present[n]
                if self.training and p.sum() > 1:
                    with torch.no_grad():
                        rows = clean[n][p].detach()
                        mean.mul_(1 - self.momentum).add_(self.momentum * rows.mean(0))
                        var.mul_(1 - self.momentum).add_(self.momentum * rows.var(0))
                scale[n] = (mean, torch.sqrt(var + 1e-5))
                scaled[n] = masked((clean[n] - mean) / scale[n][1], p)
            guess = self.vae.fill(scaled, present)
            out = {
                n: torch.where(present[n][:, None], clean[n], guess[n] * scale[n][1] + scale[n][0])
                for n in self.names
            }
            if self.training:
                # as in ``reconstruct``: the encoders learn from predicting each modality
                # from the others (gradients through the VAE's inputs), while its targets
                # stay fixed (detached), so the loss cannot shrink the embeddings
                target = {n: v.detach() for n, v in scaled.items()}
                return out, self.vae.loss(scaled, present, target=target)
            return out, None
        # reconstruct: each modality from the mean projection of the *other* present ones
        projected = {n: masked(self.proj[n](clean[n]), present[n]) for n in self.names}
        total = torch.stack(list(projected.values())).sum(0)
        count = presence_matrix(self.names, present).sum(1, keepdim=True)
        out, losses = {}, []
        for n in self.names:
            others = (count - present[n][:, None].float()).clamp(min=1.0)
            ctx = (total - projected[n]) / others
            guess = self.recon[n](ctx)
            out[n] = torch.where(present[n][:, None], clean[n], guess)
            has_other = (count[:, 0] - present[n].float()) > 0
            rows = present[n] & has_other
            if self.training and rows.any():
                losses.append(F.mse_loss(guess[rows], clean[n][rows].detach()))
        aux = torch.stack(losses).mean() if losses else None
        return out, aux


def modality_tokens(enc: Encoded) -> torch.Tensor:
    """(B, T, d) tokens of one modality; its embedding as one token if it has none."""
    return enc.tokens if enc.tokens is not None else enc.embedding[:, None, :]


def real_tokens(enc: Encoded) -> torch.Tensor:
    """(B, T) bool: which of :func:`modality_tokens` are real (not padding)."""
    t = modality_tokens(enc)
    if enc.tokens is not None and enc.token_mask is not None:
        return enc.token_mask.to(torch.bool)
    return torch.ones(t.shape[:2], dtype=torch.bool, device=t.device)
