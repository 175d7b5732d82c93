"""Choosing how ``fusion.imputation: generate`` trains, on ROSMAP's **training** patients
only (the MOGONET test patients are never loaded into a fit or a score).

5-fold CV inside the 245 training patients; per fold, ``joint`` fusion (the settings of
the robustness benchmark in BENCHMARKS: ``fusion.modality_dropout=0.3``) is fitted with
each imputation and scored on the held-out fold with mRNA removed from 0 % and 60 % of
its patients (masks from the seed). Variants of ``generate``:

- ``generate``: the multimodal VAE's loss reaches the encoders through its inputs, its
  targets detached (as ``reconstruct`` does) — the library's default;
- ``generate_detached``: the VAE trains on detached embeddings (the encoders get no
  signal from it; the earlier default).

Threads 1. Writes benchmarks/results/generative/generate_inner.json.
  HOLOMED_DATA=../shared/data python benchmarks/generate_inner.py [--seeds 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from holomed.threads import set_threads

set_threads(1)

from holomed.cohort import load_cohort, patient_splits  # noqa: E402
from holomed.evaluation.robustness import drop_modalities  # noqa: E402
from holomed.evaluation.select import build_candidate  # noqa: E402
from holomed.fusion.mvae import MultimodalVAE  # noqa: E402
from holomed.scoring.metrics import compute_metrics  # noqa: E402
from holomed.spec import SplitSpec, load_spec, override_spec  # noqa: E402

ROOT = Path(__file__).parents[1]
OUT = ROOT / "benchmarks" / "results" / "generative" / "generate_inner.json"
MODES = ["mean", "learned", "reconstruct", "generate", "generate_detached"]
RATES = [0.0, 0.6]


class _Detached:
    """Context: the VAE loss sees detached inputs (the earlier behaviour)."""

    def __enter__(self):
        self.loss = MultimodalVAE.loss

        def loss(vae, x, present, observed=None, target=None):
            return self.loss(vae, {n: v.detach() for n, v in x.items()}, present, observed)

        MultimodalVAE.loss = loss

    def __exit__(self, *exc):
        MultimodalVAE.loss = self.loss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--encoder", default=None, help="encoder of every omics (spec's: identity)")
    args = ap.parse_args()
    spec = load_spec(ROOT / "examples" / "rosmap.yaml")
    if args.encoder:
        spec = override_spec(
            spec,
            {f"modalities.{m.name}.encoder.name": args.encoder for m in spec.modalities},
            "--encoder",
        )
    cohort = load_cohort(spec)
    train_idx, _test = patient_splits(cohort, spec.split, seed=spec.training.seed)[0]
    train = cohort.subset(train_idx)  # the test patients are dropped here
    folds = patient_splits(train, SplitSpec(method="kfold", n_folds=args.folds), seed=0)
    scores = {m: {str(r): [] for r in RATES} for m in MODES}
    t0 = time.perf_counter()
    for k, (tr, te) in enumerate(folds):
        inner, held = train.subset(tr), train.subset(te)
        for mode in MODES:
            s = override_spec(
                spec,
                {
                    "fusion.name": "joint",
                    "fusion.options": {},
                    "fusion.imputation": mode.split("_")[0],
                    "fusion.modality_dropout": 0.3,
                },
                "generate_inner",
            )
            for seed in range(args.seeds):
                with _Detached() if mode == "generate_detached" else _Nothing():
                    model = build_candidate(s, "joint", seed).fit(inner)
                for j, r in enumerate(RATES):
                    rng = np.random.default_rng([seed, j, 0])
                    masked = held.with_presence(drop_modalities(held.presence(), "mrna", r, rng))
                    res = compute_metrics("binary", held.y, model.predict_proba(masked))
                    scores[mode][str(r)].append(float(res["auroc"]))
            print(
                f"fold {k} {mode:18s}",
                {r: round(float(np.mean(v[-args.seeds :])), 3) for r, v in scores[mode].items()},
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    summary = {
        m: {
            r: {"mean": float(np.mean(v)), "se": float(np.std(v, ddof=1) / np.sqrt(len(v)))}
            for r, v in d.items()
        }
        for m, d in scores.items()
    }
    paired = {
        r: {m: float(np.mean(np.subtract(scores[m][r], scores["reconstruct"][r]))) for m in MODES}
        for r in map(str, RATES)
    }
    out = {
        "threads": 1,
        "folds": args.folds,
        "seeds": args.seeds,
        "patients": "ROSMAP MOGONET training patients only (245)",
        "auroc": summary,
        "minus_reconstruct": paired,
        "seconds": time.perf_counter() - t0,
    }
    out["encoder"] = args.encoder or "identity (the spec's)"
    path = OUT if not args.encoder else OUT.with_name(f"generate_inner_{args.encoder}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


if __name__ == "__main__":
    main()
