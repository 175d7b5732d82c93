"""Cross-modal generation of absent modalities: reconstruction quality on held-out
patients whose modality was hidden (``holomed.generative.impute.evaluate``).

- SYNTHETIC two-view factor model with known truth: ``a`` (40 columns) and ``b`` (30
  columns) load on 3 shared latent factors plus noise of sd 1 (and ``c``, 20 columns of
  pure noise); the truth of a view is its noise-free part, predictable from the other.
- ROSMAP (MOGONET split, training patients fit, test patients scored): each omics
  generated from the other two.

Threads 1. Writes benchmarks/results/generative/generate_impute.json.
  HOLOMED_DATA=../shared/data python benchmarks/generate_impute.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from holomed.threads import set_threads

set_threads(1)

from holomed.cohort import Cohort, load_cohort, patient_splits  # noqa: E402
from holomed.generative.impute import evaluate  # noqa: E402
from holomed.modalities.base import ModalityData  # noqa: E402
from holomed.spec import load_spec  # noqa: E402

OUT = Path(__file__).parent / "results" / "generative" / "generate_impute.json"


def factor_cohort(n: int = 600, seed: int = 0) -> tuple[Cohort, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 3))
    truth = {"a": f @ rng.normal(size=(3, 40)), "b": f @ rng.normal(size=(3, 30))}
    values = {k: v + rng.normal(size=v.shape) for k, v in truth.items()}
    values["c"] = rng.normal(size=(n, 20))
    ids = np.array([f"S{i:04d}" for i in range(n)])
    mods = {}
    for k, v in values.items():
        present = rng.random(n) >= 0.2
        df = pd.DataFrame(v, index=ids, columns=[f"{k}{j}" for j in range(v.shape[1])])
        mods[k] = ModalityData("omics", df, present, list(df.columns))
    return Cohort(ids, mods, y=(f[:, 0] > 0).astype(int), name="synthetic-factors"), truth


def main() -> None:
    results: dict = {"threads": 1}
    cohort, truth = factor_cohort()
    idx = np.random.default_rng(1).permutation(len(cohort))
    train, test = np.sort(idx[:450]), np.sort(idx[450:])
    results["synthetic_factors"] = evaluate(cohort, train, test, truth=truth, seed=0)
    print("synthetic", json.dumps(results["synthetic_factors"], indent=1))
    data = os.environ.get("HOLOMED_DATA")
    if data and (Path(data) / "rosmap").exists():
        spec = load_spec(Path(__file__).parents[1] / "examples" / "rosmap.yaml")
        rosmap = load_cohort(spec)
        tr, te = patient_splits(rosmap, spec.split)[0]
        results["rosmap"] = evaluate(rosmap, np.sort(tr), np.sort(te), seed=0)
        print("rosmap", json.dumps(results["rosmap"], indent=1))
    else:
        print("ROSMAP not found under $HOLOMED_DATA: skipped", file=sys.stderr)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
