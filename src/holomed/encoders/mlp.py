"""Feed-forward encoders for vectors (tables, omics): MLP, denoising autoencoder
(optional reconstruction loss), and identity (raw features, for early fusion)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from holomed.encoders.base import Encoded, mlp, register_encoder


class MLPEncoder(nn.Module):
    """``(B, in_dim) -> (B, out_dim)``; ``input_dropout`` drops input features;
    ``last_activation=False`` leaves the embedding linear (no norm/GELU/dropout)."""

    def __init__(
        self,
        in_dim: int,
        hidden: list[int] | int = 128,
        out_dim: int = 64,
        dropout: float = 0.3,
        input_dropout: float = 0.0,
        last_activation: bool = True,
    ) -> None:
        super().__init__()
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        self.out_dim = out_dim
        self.input_dropout = nn.Dropout(input_dropout)
        self.net = mlp([in_dim, *hidden, out_dim], dropout, last_activation)

    def forward(self, x: torch.Tensor) -> Encoded:
        return Encoded(self.net(self.input_dropout(x)))


class AutoencoderEncoder(nn.Module):
    """Denoising autoencoder: the bottleneck is the embedding; ``recon_weight`` > 0 adds
    the reconstruction loss (MSE on clean inputs) to training as an auxiliary loss."""

    def __init__(
        self,
        in_dim: int,
        hidden: int = 128,
        out_dim: int = 32,
        dropout: float = 0.2,
        noise: float = 0.1,
        recon_weight: float = 0.5,
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.noise, self.recon_weight = noise, recon_weight
        self.encoder = mlp([in_dim, hidden, out_dim], dropout)
        self.decoder = mlp([out_dim, hidden, in_dim], 0.0, last_activation=False)

    def forward(self, x: torch.Tensor) -> Encoded:
        noisy = x + self.noise * torch.randn_like(x) if self.training and self.noise else x
        z = self.encoder(noisy)
        aux = None
        if self.training and self.recon_weight > 0 and len(x):
            aux = self.recon_weight * F.mse_loss(self.decoder(z), x)
        return Encoded(z, aux_loss=aux)


class IdentityEncoder(nn.Module):
    """The preprocessed features themselves, flattened per patient (early fusion joins
    inputs; a (T, C) sequence becomes T*C features)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> Encoded:
        return Encoded(x.flatten(1))


register_encoder("mlp")(MLPEncoder)
register_encoder("autoencoder")(AutoencoderEncoder)
register_encoder("identity")(IdentityEncoder)
