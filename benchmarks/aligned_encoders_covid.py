"""Encoders ``aligned_image`` + ``aligned_text`` against the spec's default encoders on
COVID CXR (X-rays, clinical table, case notes), on the spec's person-level folds, same
folds and seed for every variant:

- ``default``: ``efficientnet_lite0`` (hidden 64) on the X-rays, tf-idf (32) +
  ``text_pool`` on the notes (examples/covid_cxr.yaml as it is);
- ``sentence``: the same, but the notes as MiniLM chunk embeddings (``sentence``) +
  ``text_pool``: what the aligned text encoder reads, without alignment;
- ``aligned``: ``aligned_image`` + ``aligned_text`` (dim 128), the alignment fitted inside
  every fold's fit on that fold's training patients only.

    HOLOMED_DATA=/path/to/shared/data python benchmarks/aligned_encoders_covid.py \
        --fusion late --variants default sentence aligned

One thread. Writes ``benchmarks/results/generative/aligned_encoders_covid.json``:
per variant, per-fold AUROC, the pooled out-of-fold AUROC with a bootstrap CI, seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from holomed.threads import set_threads

ROOT = Path(__file__).resolve().parents[1]


def variant(spec, name: str):
    s = spec.model_copy(deep=True)
    s.base_dir = spec.base_dir
    by = {m.name: m for m in s.modalities}
    if name in ("sentence", "aligned"):
        by["notes"].preprocessing = {"method": "sentence"}
        by["notes"].encoder.name, by["notes"].encoder.options = "text_pool", {}
    if name == "aligned":
        by["xray"].encoder.name, by["xray"].encoder.options = "aligned_image", {}
        by["notes"].encoder.name, by["notes"].encoder.options = "aligned_text", {}
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fusion", default="late")
    ap.add_argument("--variants", nargs="+", default=["default", "sentence", "aligned"])
    ap.add_argument("--folds", type=int, default=None, help="only the first N folds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/generative"))
    args = ap.parse_args()
    set_threads(1)

    from holomed.cohort import load_cohort, patient_splits
    from holomed.model import Model
    from holomed.scoring.metrics import compute_metrics
    from holomed.spec import load_spec

    spec = load_spec(ROOT / "examples/covid_cxr.yaml").with_fusion(args.fusion)
    cohort = load_cohort(spec)
    folds = patient_splits(cohort, spec.split, seed=args.seed)[: args.folds]
    y = cohort.y
    res: dict = {"fusion": args.fusion, "seed": args.seed, "folds": len(folds), "variants": {}}
    for name in args.variants:
        s = variant(spec, name)
        oof = np.full(len(cohort), np.nan)
        per_fold, t0 = [], time.perf_counter()
        for k, (tr, te) in enumerate(folds):
            t1 = time.perf_counter()
            m = Model(s, seed=args.seed).fit(cohort.subset(tr))
            p = m.predict_proba(cohort.subset(te))[:, 1]
            oof[te] = p
            auc = compute_metrics("binary", y[te], np.c_[1 - p, p])["auroc"]
            rec = {"fold": k, "auroc": auc, "seconds": round(time.perf_counter() - t1, 1)}
            enc = m.net_.encoders["xray"] if "xray" in m.net_.encoders else None
            if getattr(enc, "alignment_", None):
                rec["alignment"] = {
                    k2: v for k2, v in enc.alignment_.items() if not isinstance(v, dict)
                }
            per_fold.append(rec)
            print(name, rec, flush=True)
        done = ~np.isnan(oof)
        pooled = compute_metrics("binary", y[done], np.c_[1 - oof[done], oof[done]])["auroc"]
        rng = np.random.default_rng(0)
        idx = np.nonzero(done)[0]
        boots = []
        for _ in range(args.n_boot):
            b = rng.choice(idx, len(idx))
            if len(np.unique(y[b])) == 2:
                boots.append(compute_metrics("binary", y[b], np.c_[1 - oof[b], oof[b]])["auroc"])
        res["variants"][name] = {
            "pooled_auroc": pooled,
            "ci": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))],
            "fold_auroc_mean": float(np.mean([r["auroc"] for r in per_fold])),
            "folds": per_fold,
            "seconds": round(time.perf_counter() - t0, 1),
            "oof": oof.tolist(),
        }
        print(name, {k: v for k, v in res["variants"][name].items() if k not in ("folds", "oof")})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"aligned_encoders_covid_{args.fusion}.json"
    path.write_text(json.dumps(res, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
