"""Time of the survival ensemble selection (bagged greedy on Harrell's C, with the honest
per-inner-fold scores) with holomed's O(n log^2 n) Harrell's C against scikit-survival's
``concordance_index_censored``, side by side in one run, on the sizes of a PhysioNet 2012
inner split (2,660 training patients, 3 inner folds, 7 candidates, 20 bags).
SYNTHETIC out-of-fold risks (Gaussian around a shared true risk); the two C-indices are
checked equal on every call. One thread; min / median of ``--repeats`` runs.

    python benchmarks/survival_select_speed.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

import numpy as np

from holomed.threads import set_threads

set_threads(1)

from sksurv.metrics import concordance_index_censored  # noqa: E402

import holomed.scoring.survival as surv  # noqa: E402
from holomed.evaluation.select import Scored, ensemble_selection  # noqa: E402

ROOT = Path(__file__).parents[1]


def sksurv_c(event, time_, risk, tol: float = 1e-8) -> float:
    try:
        return float(concordance_index_censored(event, time_, risk, tied_tol=tol)[0])
    except (ValueError, ZeroDivisionError):
        return float("nan")


def problem(n: int = 2660, k: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    true = rng.normal(size=n)
    t = np.minimum(rng.exponential(np.exp(-true) * 200), 365.0)
    e = (t < 365) & (rng.random(n) < 0.9)
    y = np.c_[np.ceil(t), e.astype(float)]
    folds = _folds(n, 3, rng)
    scored = {}
    for j in range(k):
        oof = (true + rng.normal(scale=0.8 + 0.1 * j, size=n))[:, None]
        scored[f"c{j}"] = Scored(f"c{j}", None, 0.0, [], oof, 0.0, [], [oof])
    return scored, y, folds


def _folds(n: int, k: int, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    perm = rng.permutation(n)
    parts = np.array_split(perm, k)
    return [
        (np.sort(np.concatenate(parts[:i] + parts[i + 1 :])), np.sort(p))
        for i, p in enumerate(parts)
    ]


def timed(c_index, scored, y, folds) -> tuple[float, dict, list]:
    with mock.patch.object(surv, "harrell_c", c_index):
        t0 = time.perf_counter()
        w, scores = ensemble_selection(scored, y, folds, "survival", "c_index", bags=20, seed=0)
        return time.perf_counter() - t0, w, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/survival/select_speed.json"
    )
    a = ap.parse_args()
    scored, y, folds = problem()
    out: dict = {"threads": 1, "patients": len(y), "candidates": len(scored), "bags": 20}
    for name, fn in (("holomed harrell_c", surv.harrell_c), ("scikit-survival", sksurv_c)):
        runs = [timed(fn, scored, y, folds) for _ in range(a.repeats)]
        secs = [r[0] for r in runs]
        out[name] = {"seconds": secs, "min": min(secs), "median": float(np.median(secs)),
                     "weights": runs[0][1], "fold_scores": runs[0][2]}  # fmt: skip
        print(name, f"min {min(secs):.1f} s, median {np.median(secs):.1f} s", flush=True)
    fast, slow = out["holomed harrell_c"], out["scikit-survival"]
    out["same_result"] = fast["weights"] == slow["weights"] and np.allclose(
        fast["fold_scores"], slow["fold_scores"], atol=1e-12
    )
    print("same weights and scores:", out["same_result"])
    a.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
