"""Encoders for the ``timeseries`` kind. Input ``(B, T, 3V + 1)``: values, masks and
deltas of V variables and the step's time (see :mod:`holomed.modalities.timeseries`).

- ``grud``: GRU-D (Che et al., Sci Rep 2018) — unobserved inputs decay from the last
  observation toward the training mean (0 after scaling) and the hidden state decays
  with the time since observation; tokens are the hidden states.
- ``ts_transformer``: a transformer over the steps with a learned continuous-time
  embedding (linear + periodic terms of the step's time, as in mTAN); steps with no
  observation are masked out; a summary token gives the embedding.
- ``ts_summary``: last, min, max, mean, count and slope of each variable through an MLP
  (the summary-statistics model; the classical baselines use the same statistics).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from holomed.encoders.base import Encoded, mlp, register_encoder


def _split(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    nv = (x.shape[-1] - 1) // 3
    return x[..., :nv], x[..., nv : 2 * nv], x[..., 2 * nv : 3 * nv], x[..., -1:]


def _variables(in_dim: int) -> int:
    if in_dim < 4 or (in_dim - 1) % 3:
        raise ValueError(
            f"a timeseries encoder expects 3V + 1 input channels (values, masks, deltas, "
            f"time); got {in_dim}"
        )
    return (in_dim - 1) // 3


class GRUD(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        nv = _variables(in_dim)
        self.out_dim = hidden
        self.gamma_x = nn.Parameter(torch.zeros(nv))  # per-variable input decay rate
        self.beta_x = nn.Parameter(torch.zeros(nv))
        self.gamma_h = nn.Linear(nv, hidden)
        self.cell = nn.GRUCell(2 * nv, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> Encoded:
        vals, mask, delta, _ = _split(x)
        b, steps, _ = vals.shape
        # decays use hours scaled by the window (deltas in [0, 1]); x 48 steps' worth
        d = delta * steps
        gx = torch.exp(-torch.relu(d * self.gamma_x.abs() + self.beta_x))
        gh = torch.exp(-torch.relu(self.gamma_h(d)))
        h = vals.new_zeros(b, self.out_dim)
        last = vals.new_zeros(b, vals.shape[-1])
        states = []
        for s in range(steps):
            m = mask[:, s]
            last = torch.where(m > 0, vals[:, s], last)
            xin = m * vals[:, s] + (1 - m) * gx[:, s] * last  # decays toward the mean (0)
            h = self.cell(torch.cat([xin, m], 1), gh[:, s] * h)
            states.append(h)
        tokens = torch.stack(states, 1)
        return Encoded(self.drop(self.norm(h)), tokens=tokens)


class TimeEmbedding(nn.Module):
    """t -> [w0 t + b0, sin(W t + b)] (learned frequencies), t in window fractions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1)
        self.periodic = nn.Linear(1, dim - 1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.linear(t), torch.sin(self.periodic(t * 48.0))], -1)


class TSTransformer(nn.Module):
    def __init__(
        self,
        in_dim: int,
        hidden: int = 64,
        heads: int = 4,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        nv = _variables(in_dim)
        d_model = self.out_dim = hidden
        self.inp = nn.Linear(2 * nv, d_model)
        self.time = TimeEmbedding(d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 2 * d_model, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> Encoded:
        vals, mask, _, t = _split(x)
        h = self.inp(torch.cat([vals * mask, mask], -1)) + self.time(t)
        b = h.shape[0]
        h = torch.cat([self.cls.expand(b, -1, -1), h], 1)
        empty = mask.sum(-1) == 0  # steps without any observation
        pad = torch.cat([empty.new_zeros(b, 1), empty], 1)
        if b == 0:  # nobody has the modality in this batch (attention cannot reshape 0 rows)
            out = self.norm(h)
        else:
            out = self.norm(self.encoder(h, src_key_padding_mask=pad))
        tokens = out[:, 1:] * (~empty).unsqueeze(-1)
        return Encoded(out[:, 0], tokens=tokens)


def summary_statistics_torch(x: torch.Tensor) -> torch.Tensor:
    """(B, T, 3V + 1) -> (B, 6V): last, min, max, mean, count, slope per variable;
    undefined statistics (no observation) are 0, the training mean after scaling."""
    vals, mask, _, t = _split(x)
    m = mask > 0.5
    steps = vals.shape[1]
    cnt = m.sum(1).float()
    has = cnt > 0
    safe = cnt.clamp(min=1)
    mean = (vals * m).sum(1) / safe
    big = torch.finfo(vals.dtype).max
    vmin = torch.where(has, vals.masked_fill(~m, big).amin(1), 0.0)
    vmax = torch.where(has, vals.masked_fill(~m, -big).amax(1), 0.0)
    pos = torch.arange(steps, device=x.device).view(1, -1, 1)
    last_idx = torch.where(m, pos, -1).amax(1).clamp(min=0)
    last = torch.where(has, vals.gather(1, last_idx.unsqueeze(1)).squeeze(1), 0.0)
    tt = t.expand_as(vals)
    tm = (tt * m).sum(1) / safe
    dt = (tt - tm.unsqueeze(1)) * m
    dv = (vals - mean.unsqueeze(1)) * m
    sxx = (dt * dt).sum(1)
    slope = torch.where(sxx > 1e-9, (dt * dv).sum(1) / sxx.clamp(min=1e-9), 0.0)
    return torch.cat([last, vmin, vmax, mean, torch.log1p(cnt), slope.clamp(-10, 10)], 1)


class TSSummary(nn.Module):
    def __init__(
        self, in_dim: int, hidden: int = 64, layers: int = 1, dropout: float = 0.1
    ) -> None:
        super().__init__()
        nv = _variables(in_dim)
        self.out_dim = hidden
        self.net = mlp([6 * nv] + [hidden] * layers, dropout)

    def forward(self, x: torch.Tensor) -> Encoded:
        return Encoded(self.net(summary_statistics_torch(x)))


_EXAMPLE = (7, (12, 7))  # 12 steps of 2 variables: values, masks, deltas, time
register_encoder("grud", _EXAMPLE)(GRUD)
register_encoder("ts_transformer", _EXAMPLE)(TSTransformer)
register_encoder("ts_summary", _EXAMPLE)(TSSummary)
