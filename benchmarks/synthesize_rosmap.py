"""Synthetic ROSMAP cohorts (``holomed synthesize``): fidelity, utility, privacy and time
of each generator, on the MOGONET split (generator fitted on the 245 training patients,
everything scored on the 106 real test patients).

    HOLOMED_DATA=/path/to/data python benchmarks/synthesize_rosmap.py

Runs, one thread:
- ``copula`` (the default), seeds 0-4;
- ``copula`` with 980 synthetic patients (4x the real training patients), seeds 0-4;
- ``copula`` without the reduced omics space (``components=0``: a copula on the 600 raw
  columns), seeds 0-2 -- why the reduction exists;
- ``tvae`` and ``ctgan`` (300 epochs), seeds 0-2.
Utility with ``lr_early`` and ``gbm``, 1000 bootstrap resamples. Timings of fit + sample
are the min / median over 3 runs (seeds 0-2; same work, other draws). Writes
``benchmarks/results/generative/synthesize_rosmap.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from holomed.cohort import load_cohort
from holomed.generative.synthesize import synthesize
from holomed.spec import load_spec
from holomed.threads import set_threads

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "generative" / "synthesize_rosmap.json"
# (model, components, n synthetic patients, seeds); None = the defaults (the column
# budget; as many as the real training patients)
RUNS = [
    ("copula", None, None, range(5)),
    ("copula", None, 980, range(5)),
    ("copula", 0, None, range(3)),
    ("tvae", None, None, range(3)),
    ("ctgan", None, None, range(3)),
]


def row(model: str, components: int | None, seed: int, r: dict) -> dict:
    """One run's numbers, flat."""
    u = r["utility"]["learners"]
    f, p = r["fidelity"]["summary"], r["privacy"]
    return {
        "model": model,
        "components": "auto" if components is None else components,
        "seed": seed,
        "synthetic_patients": r["patients"]["synthetic"],
        "reduced": r["reduced"],
        "fit_s": r["seconds"]["fit"],
        "sample_s": r["seconds"]["sample"],
        "utility": {
            k: {
                "real": v["train_on_real"]["auroc"],
                "real_ci": v["train_on_real"]["ci"],
                "synthetic": v["train_on_synthetic"]["auroc"],
                "synthetic_ci": v["train_on_synthetic"]["ci"],
                "difference": v["difference"]["auroc"],
                "difference_ci": v["difference"]["ci"],
            }
            for k, v in u.items()
        },
        "membership_auroc": p["membership"]["auroc"],
        "membership_ci": p["membership"]["ci"],
        "dcr_median": p["dcr"]["synthetic_to_train"]["median"],
        "dcr_holdout_median": p["dcr"]["holdout_to_train"]["median"],
        "dcr_p5": p["dcr"]["synthetic_to_train"]["p5"],
        "dcr_holdout_p5": p["dcr"]["holdout_to_train"]["p5"],
        "closer_than_holdout_p5": p["dcr"]["closer_than_holdout_p5"],
        "exact_copies": p["dcr"]["exact_copies"],
        "privacy_passed": p["passed"],
        "ks_mean": f["ks_mean"],
        "ks_mean_reference": f["ks_mean_reference"],
        "wasserstein_sd_mean": f["wasserstein_sd_mean"],
        "corr_mad": f["corr_mad"],
        "corr_mad_reference": f["corr_mad_reference"],
        "corr_between": r["fidelity"]["correlation"]["synthetic"]["between"],
        "corr_between_reference": r["fidelity"]["correlation"]["holdout_reference"]["between"],
        "detection_auroc": f["detection_auroc"],
        "detection_auroc_reference": f["detection_auroc_reference"],
    }


def summary(rows: list[dict]) -> dict:
    def stats(v: list[float]) -> dict:
        return {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}

    t = [r["fit_s"] + r["sample_s"] for r in rows[:3]]
    out = {
        "runs": len(rows),
        "fit_plus_sample_s": {"min": float(np.min(t)), "median": float(np.median(t))},
        "privacy_passed": sum(r["privacy_passed"] for r in rows),
    }
    for k in ("membership_auroc", "ks_mean", "corr_mad", "detection_auroc", "dcr_median"):
        out[k] = stats([r[k] for r in rows])
    for learner in rows[0]["utility"]:
        for k in ("real", "synthetic", "difference"):
            out[f"{learner}_{k}"] = stats([r["utility"][learner][k] for r in rows])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default=str(ROOT / "examples" / "rosmap.yaml"))
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--only", default=None, help="run only this config (e.g. copula, tvae)")
    a = ap.parse_args()
    if not os.environ.get("HOLOMED_DATA"):
        raise SystemExit("set HOLOMED_DATA to the folder holding rosmap/")
    set_threads(1)
    spec = load_spec(a.spec)
    cohort = load_cohort(spec)
    results: dict = {
        "dataset": "rosmap",
        "split": "MOGONET predefined: 245 training patients (generator), 106 test (scoring)",
        "threads": 1,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other work)",
        "configs": {},
    }
    t_all = time.perf_counter()
    for model, comps, n, seeds in RUNS:
        key = model + ("" if comps is None else f"_components{comps}") + (f"_n{n}" if n else "")
        if a.only and key != a.only:
            continue
        rows = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as tmp:
                r = synthesize(
                    spec,
                    cohort,
                    Path(tmp) / "synth",
                    model=model,
                    seed=seed,
                    components=comps,
                    n=n,
                    learners=("lr_early", "gbm"),
                    n_bootstrap=1000,
                )
            rows.append(row(model, comps, seed, r))
            x = rows[-1]
            ul, ug = x["utility"]["lr_early"], x["utility"]["gbm"]
            print(
                f"{key:20s} seed {seed}: fit+sample {x['fit_s'] + x['sample_s']:6.1f} s | "
                f"lr_early real {ul['real']:.3f} syn {ul['synthetic']:.3f} "
                f"[{ul['synthetic_ci'][0]:.3f}, {ul['synthetic_ci'][1]:.3f}] | gbm real "
                f"{ug['real']:.3f} syn {ug['synthetic']:.3f} | MIA {x['membership_auroc']:.3f} "
                f"| KS {x['ks_mean']:.3f} ({x['ks_mean_reference']:.3f}) | corr "
                f"{x['corr_mad']:.3f} ({x['corr_mad_reference']:.3f}) | detect "
                f"{x['detection_auroc']:.3f} | DCR {x['dcr_median']:.2f} "
                f"({x['dcr_holdout_median']:.2f})",
                flush=True,
            )
        results["configs"][key] = {"runs": rows, "summary": summary(rows)}
    results["total_s"] = round(time.perf_counter() - t_all, 1)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.only and out.exists():  # keep the other models' results
        old = json.loads(out.read_text())
        old["configs"].update(results["configs"])
        results = {**old, "total_s": results["total_s"]}
    out.write_text(json.dumps(results, indent=1))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
