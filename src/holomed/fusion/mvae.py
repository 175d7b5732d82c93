"""A multimodal VAE with a product-of-experts posterior (Wu & Goodman 2018, "Multimodal
generative models for scalable weakly-supervised learning"): the generator behind
``fusion.imputation: generate`` and ``holomed impute``.

Each modality ``m`` has a Gaussian expert ``q(z | x_m)``; the posterior given any subset
of present modalities is the product of their experts and the prior N(0, I) (precisions
add), so one model generates any modality from whichever others are present. Training
masks modalities at random (each present one is hidden from the encoder with probability
``mask_rate``, at least one kept), and reconstructs every present modality from the
posterior of the visible ones: a hidden modality is thus learned from the others, the
way it will be asked for. The loss is a per-value form of the ELBO: the squared error
per value (a unit-variance Gaussian; a modality's error summed over its values and divided
by their number, then averaged over modalities) plus ``beta`` times the KL divergence to
the prior per latent dimension (summed and divided by ``latent``). Against the summed
ELBO this weighs the KL by about ``d / latent`` more for a ``d``-value modality, which
pulls generated values towards the mean: on ROSMAP's training patients the summed form
overfitted (every held-out R² negative; BENCHMARKS, cross-modal generation), so the
per-value form is the default and ``beta`` lightens it where modalities are predictable.

``generate`` draws ``samples`` latent codes per patient and returns the mean and the
standard deviation of the decoded values (the uncertainty of a generated modality).

Hand-written because no maintained package offers a product-of-experts multimodal VAE
over arbitrary modality subsets as a torch module (pythae's MVAE models fix modalities
per image dataset; multivae is research code): the whole model is about 100 lines.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from holomed.encoders.base import mlp


def _present_rows(present: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.stack([present[n].bool() for n in names], dim=1)


class MultimodalVAE(nn.Module):
    def __init__(
        self,
        dims: dict[str, int],
        latent: int = 16,
        hidden: int = 64,
        beta: float = 1.0,
        mask_rate: float = 0.5,
    ) -> None:
        super().__init__()
        self.names = list(dims)
        self.latent, self.beta, self.mask_rate = latent, beta, mask_rate
        self.enc = nn.ModuleDict(
            {n: mlp([d, hidden, 2 * latent], 0.0, False) for n, d in dims.items()}
        )
        self.dec = nn.ModuleDict({n: mlp([latent, hidden, d], 0.0, False) for n, d in dims.items()})

    def posterior(
        self, x: dict[str, torch.Tensor], visible: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance (B, latent) of the product of the visible experts
        (``visible`` (B, M) bool, modality order ``names``) and the prior. Values of
        invisible rows are never read."""
        b = visible.shape[0]
        prec = torch.ones(b, self.latent, device=visible.device)  # the prior's precision
        num = torch.zeros(b, self.latent, device=visible.device)
        for j, n in enumerate(self.names):
            v = visible[:, j]
            zero = torch.zeros((), dtype=x[n].dtype, device=x[n].device)
            xin = torch.where(v[:, None], x[n], zero)
            mu, logvar = self.enc[n](xin).chunk(2, dim=1)
            p = torch.exp(-logvar.clamp(-8, 8)) * v[:, None].float()
            prec = prec + p
            num = num + p * mu
        return num / prec, -torch.log(prec)

    def _visible(self, present: torch.Tensor) -> torch.Tensor:
        """Random subsets of the present modalities, at least one kept where any is."""
        keep = present & (torch.rand(present.shape, device=present.device) >= self.mask_rate)
        none = ~keep.any(1) & present.any(1)
        if none.any():  # keep one present modality at random
            score = torch.rand(present.shape, device=present.device) * present.float()
            pick = torch.nn.functional.one_hot(score.argmax(1), present.shape[1]).bool()
            keep = torch.where(none[:, None], pick, keep)
        return keep

    def loss(
        self,
        x: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor],
        observed: dict[str, torch.Tensor] | None = None,
        target: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Negative ELBO under random modality masking (module doc); 0 without rows.
        ``observed``: (B, d) bool per modality, values left out of the loss where false
        (a value missing inside a present row). ``target``: what the decoders must
        reproduce, if not ``x`` itself (inside a fusion: the detached embeddings, while
        gradients flow through ``x`` into the encoders)."""
        pm = _present_rows(present, self.names)
        rows = pm.any(1)
        if not rows.any():
            return torch.zeros((), device=pm.device)
        mu, logvar = self.posterior(x, self._visible(pm) if self.training else pm)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon, target = [], x if target is None else target
        for j, n in enumerate(self.names):
            p = pm[:, j]
            if p.any():
                err = (self.dec[n](z[p]) - target[n][p]) ** 2
                if observed is not None:
                    err = err * observed[n][p].float()
                recon.append(err.sum(1).mean() / x[n].shape[1])
        kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)[rows].mean() / self.latent
        return torch.stack(recon).mean() + self.beta * kl

    @torch.no_grad()
    def generate(
        self,
        x: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor],
        samples: int = 8,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{modality: (mean, sd)}`` (B, d) of ``samples`` draws from the posterior of
        the present modalities (the prior where none is)."""
        mu, logvar = self.posterior(x, _present_rows(present, self.names))
        sd = torch.exp(0.5 * logvar)
        draws = {n: [] for n in self.names}
        for _ in range(samples):
            z = mu + torch.randn_like(mu) * sd
            for n in self.names:
                draws[n].append(self.dec[n](z))
        out = {}
        for n, d in draws.items():
            s = torch.stack(d)
            out[n] = (s.mean(0), s.std(0) if samples > 1 else torch.zeros_like(s[0]))
        return out

    def fill(
        self, x: dict[str, torch.Tensor], present: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The decoded posterior mean of the present modalities (differentiable): what
        replaces an absent modality inside a fusion."""
        mu, _ = self.posterior(x, _present_rows(present, self.names))
        return {n: self.dec[n](mu) for n in self.names}
