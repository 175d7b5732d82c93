"""Encoders for regular multi-channel signals ``(B, L, C)`` (channels last, as the
``signal`` kind produces them); ``in_dim`` is the number of channels ``C``.

- ``resnet1d``: a 1-D residual CNN; embedding = global average pool of the last feature
  map, tokens = that feature map as ``(B, L', d)``;
- ``cnn_gru``: a strided convolutional stem that shortens the sequence, then a GRU (or a
  transformer encoder, ``rnn: transformer``); tokens = the sequence outputs.

GroupNorm / LayerNorm only, never BatchNorm: one patient's output does not depend on
the other patients of its batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from holomed.encoders.base import Encoded, register_encoder


def _groups(channels: int, most: int = 8) -> int:
    return math.gcd(channels, most) or 1


def _conv_norm(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.GroupNorm(_groups(c_out), c_out),
    )


class ResidualBlock1d(nn.Module):
    """conv-norm-GELU-dropout-conv-norm + shortcut (1x1 conv when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_norm(c_in, c_out, kernel, stride),
            nn.GELU(),
            nn.Dropout(dropout),
            _conv_norm(c_out, c_out, kernel),
        )
        self.skip = (
            nn.Identity() if c_in == c_out and stride == 1 else _conv_norm(c_in, c_out, 1, stride)
        )
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class ResNet1D(nn.Module):
    """``(B, L, C) -> embedding (B, d)``, tokens ``(B, L', d)``.

    A stem (conv of ``kernel``, stride 2, then max-pool stride 2) and ``blocks``
    residual blocks, each halving the length and doubling the width from ``width``
    (capped at ``max_width``); ``L' ~ L / 2**(blocks + 2)``. ``out_dim`` adds a 1x1
    projection of the last feature map (default: its width)."""

    def __init__(
        self,
        in_dim: int,
        width: int = 32,
        blocks: int = 3,
        kernel: int = 7,
        dropout: float = 0.1,
        max_width: int = 256,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"resnet1d needs blocks >= 1; got {blocks}")
        self.stem = nn.Sequential(
            _conv_norm(in_dim, width, kernel, stride=2),
            nn.GELU(),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        layers, c = [], width
        for i in range(blocks):
            c_out = min(width * 2**i, max_width)
            layers.append(ResidualBlock1d(c, c_out, kernel, 2, dropout))
            c = c_out
        self.blocks = nn.Sequential(*layers)
        self.proj = nn.Identity() if out_dim is None else nn.Conv1d(c, out_dim, 1)
        self.out_dim = int(out_dim or c)

    def forward(self, x: torch.Tensor) -> Encoded:
        h = self.proj(self.blocks(self.stem(x.transpose(1, 2))))  # (B, d, L')
        return Encoded(h.mean(2), tokens=h.transpose(1, 2))


class _Sinusoid(nn.Module):
    """Fixed sinusoidal position code added to ``(B, T, d)`` (any length)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[1], device=x.device, dtype=x.dtype)[:, None]
        i = torch.arange(0, self.d, 2, device=x.device, dtype=x.dtype)
        ang = t / torch.pow(torch.tensor(10000.0, dtype=x.dtype, device=x.device), i / self.d)
        pe = torch.zeros(x.shape[1], self.d, dtype=x.dtype, device=x.device)
        pe[:, 0::2] = torch.sin(ang)
        pe[:, 1::2] = torch.cos(ang[:, : self.d // 2])
        return x + pe


class CNNGRU(nn.Module):
    """``(B, L, C)``: ``stem_layers`` strided convolutions (each halves the length),
    then a ``rnn`` over the shortened sequence: ``gru`` (embedding = the last hidden
    state, both directions when ``bidirectional``) or ``transformer`` (sinusoidal
    positions, pre-norm layers, embedding = mean of the outputs). Tokens = the sequence
    outputs ``(B, L / 2**stem_layers, out_dim)``."""

    def __init__(
        self,
        in_dim: int,
        width: int = 32,
        hidden: int = 64,
        layers: int = 1,
        kernel: int = 7,
        stem_layers: int = 3,
        dropout: float = 0.1,
        rnn: str = "gru",
        heads: int = 4,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        if rnn not in ("gru", "transformer"):
            raise ValueError(f"cnn_gru rnn must be 'gru' or 'transformer'; got {rnn!r}")
        stem, c = [], in_dim
        for _ in range(stem_layers):
            stem += [_conv_norm(c, width, kernel, stride=2), nn.GELU(), nn.Dropout(dropout)]
            c = width
        self.stem = nn.Sequential(*stem)
        self.rnn_kind = rnn
        if rnn == "gru":
            self.rnn = nn.GRU(
                c,
                hidden,
                num_layers=layers,
                batch_first=True,
                bidirectional=bidirectional,
                dropout=dropout if layers > 1 else 0.0,
            )
            self.out_dim = hidden * (2 if bidirectional else 1)
        else:
            if hidden % heads:
                raise ValueError(
                    f"cnn_gru transformer: hidden {hidden} must divide by heads {heads}"
                )
            self.inp = nn.Linear(c, hidden)
            self.pos = _Sinusoid(hidden)
            layer = nn.TransformerEncoderLayer(
                hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True
            )
            self.rnn = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(hidden)
            self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> Encoded:
        h = self.stem(x.transpose(1, 2)).transpose(1, 2)  # (B, T', width)
        if self.rnn_kind == "gru":
            tokens, last = self.rnn(h)
            if self.rnn.bidirectional:
                emb = torch.cat([last[-2], last[-1]], 1)
            else:
                emb = last[-1]
            return Encoded(emb, tokens=tokens)
        tokens = self.norm(self.rnn(self.pos(self.inp(h))))
        return Encoded(tokens.mean(1), tokens=tokens)


_EXAMPLE = (3, (64, 3))  # 64 samples of 3 channels, for the compliance suite
register_encoder("resnet1d", _EXAMPLE)(ResNet1D)
register_encoder("cnn_gru", _EXAMPLE)(CNNGRU)
