"""Does averaging over generated draws predict better than the decoded posterior mean?
ROSMAP **training** patients only (the MOGONET test patients are never loaded into a fit
or a score).

``fusion.imputation: generate`` fills an absent modality with the multimodal VAE's
decoded posterior mean. Multiple imputation (Rubin) would instead draw K latent codes,
predict once per draw and average. The fitted models are the same, so the comparison is
paired: 5-fold CV inside the 245 training patients × 2 seeds, ``joint`` fusion as in
``generate_inner.py`` (``fusion.modality_dropout=0.3``), mRNA removed from 60 % of the
held-out fold. Scored: the posterior-mean fill (the library's), the mean of K draws'
probabilities, and the mean of their log-odds.

    HOLOMED_DATA=../shared/data python benchmarks/generate_draws.py [--draws 8]

Threads 1. Writes benchmarks/results/generative/generate_draws.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from holomed.threads import set_threads

set_threads(1)

from holomed.cohort import load_cohort, patient_splits  # noqa: E402
from holomed.evaluation.robustness import drop_modalities  # noqa: E402
from holomed.evaluation.select import build_candidate  # noqa: E402
from holomed.fusion.mvae import MultimodalVAE  # noqa: E402
from holomed.scoring.metrics import compute_metrics  # noqa: E402
from holomed.spec import SplitSpec, load_spec, override_spec  # noqa: E402

ROOT = Path(__file__).parents[1]
OUT = ROOT / "benchmarks" / "results" / "generative" / "generate_draws.json"


class _Sampled:
    """Context: the VAE's fill decodes one draw from the posterior, not its mean."""

    def __enter__(self):
        self.fill = MultimodalVAE.fill

        def fill(vae, x, present):
            rows = torch.stack([present[n].bool() for n in vae.names], dim=1)
            mu, logvar = vae.posterior(x, rows)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return {n: vae.dec[n](z) for n in vae.names}

        MultimodalVAE.fill = fill

    def __exit__(self, *exc):
        MultimodalVAE.fill = self.fill


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    spec = load_spec(ROOT / "examples" / "rosmap.yaml")
    cohort = load_cohort(spec)
    train_idx, _test = patient_splits(cohort, spec.split, seed=spec.training.seed)[0]
    train = cohort.subset(train_idx)  # the test patients are dropped here
    folds = patient_splits(train, SplitSpec(method="kfold", n_folds=5), seed=0)
    s = override_spec(
        spec,
        {
            "fusion.name": "joint",
            "fusion.options": {},
            "fusion.imputation": "generate",
            "fusion.modality_dropout": 0.3,
        },
        "generate_draws",
    )
    names = ("posterior mean", "mean of draws", "mean log-odds")
    scores: dict[str, list[float]] = {n: [] for n in names}
    t0 = time.perf_counter()
    for k, (tr, te) in enumerate(folds):
        inner, held = train.subset(tr), train.subset(te)
        for seed in range(args.seeds):
            model = build_candidate(s, "joint", seed).fit(inner)
            rng = np.random.default_rng([seed, 1, 0])
            masked = held.with_presence(drop_modalities(held.presence(), "mrna", 0.6, rng))
            p0 = model.predict_proba(masked)
            torch.manual_seed(1000 + seed)
            with _Sampled():
                draws = np.stack([model.predict_proba(masked) for _ in range(args.draws)])
            odds = np.clip(draws[..., 1], 1e-9, 1) / np.clip(draws[..., 0], 1e-9, 1)
            logit = np.log(odds)
            p_logit = 1 / (1 + np.exp(-logit.mean(0)))
            for name, p in (
                ("posterior mean", p0),
                ("mean of draws", draws.mean(0)),
                ("mean log-odds", np.stack([1 - p_logit, p_logit], 1)),
            ):
                scores[name].append(float(compute_metrics("binary", held.y, p)["auroc"]))
        print(k, {n: round(float(np.mean(v)), 4) for n, v in scores.items()}, flush=True)
    base = np.asarray(scores["posterior mean"])
    out = {
        "threads": 1,
        "draws": args.draws,
        "seeds": args.seeds,
        "patients": "ROSMAP MOGONET training patients only (245); 5 inner folds",
        "mrna_removed": 0.6,
        "auroc": {n: float(np.mean(v)) for n, v in scores.items()},
        "minus_posterior_mean": {
            n: {
                "mean": float(np.mean(np.subtract(v, base))),
                "se": float(np.std(np.subtract(v, base), ddof=1) / np.sqrt(len(v))),
            }
            for n, v in scores.items()
        },
        "per_fold_seed": scores,
        "seconds": time.perf_counter() - t0,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    print(json.dumps(out["minus_posterior_mean"], indent=1))


if __name__ == "__main__":
    main()
