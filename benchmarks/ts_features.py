"""More summary statistics of ICU time series for the classical candidates, decided on
training patients only (PhysioNet 2012 set A, in-hospital death).

The timeseries kind gives the classical candidates six statistics per variable over the
48 h grid (last, min, max, mean, log count, slope). This script asks whether more help:
the first value, the standard deviation, the mean of the last 12 h and the hours since the
last observation. For each outer split of ``examples/physionet2012.yaml`` (5-fold, seed
0) the preprocessors are fitted on that split's training patients and LightGBM (the
``gbm`` candidate's defaults) and L2 logistic regression (C by internal CV, as
``lr_early``) are scored by the spec's 3-fold inner CV on the training patients only.
The outer test patients are never used. One thread.

    HOLOMED_DATA=../shared/data python benchmarks/ts_features.py \\
        --out benchmarks/results/physionet2012/ts_features.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from holomed.threads import set_threads

set_threads(1)

import lightgbm as lgb  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from holomed.candidates.classical import GBM_DEFAULTS  # noqa: E402
from holomed.cohort import inner_folds, load_cohort, patient_splits  # noqa: E402
from holomed.model import fit_preprocessors, transform_cohort  # noqa: E402
from holomed.spec import load_spec  # noqa: E402

ROOT = Path(__file__).parents[1]
EXTRA = ("first", "sd", "mean_last12h", "hours_since_last")


def extra_statistics(x: np.ndarray, nv: int, hours: float) -> np.ndarray:
    """(n, T, 3V+1) grid of the timeseries kind -> (n, 4V): first value, sd, mean over
    the last 12 h of the window and hours since the last observation (NaN / the whole
    window when never observed)."""
    vals, mask = x[..., :nv], x[..., nv : 2 * nv] > 0.5
    n, steps, _ = vals.shape
    cnt = mask.sum(1)
    has = cnt > 0
    first_idx = np.argmax(mask, axis=1)
    first = np.where(has, np.take_along_axis(vals, first_idx[:, None, :], 1)[:, 0], np.nan)
    v = np.where(mask, vals, 0.0)
    mean = np.divide(v.sum(1), cnt, out=np.full((n, nv), np.nan), where=has)
    sq = np.where(mask, (vals - np.nan_to_num(mean)[:, None, :]) ** 2, 0.0).sum(1)
    sd = np.where(cnt > 1, np.sqrt(sq / np.maximum(cnt - 1, 1)), np.nan)
    tail = max(1, int(round(steps * 12.0 / hours)))
    mt, vt = mask[:, -tail:], v[:, -tail:]
    ct = mt.sum(1)
    mean_tail = np.divide(vt.sum(1), ct, out=np.full((n, nv), np.nan), where=ct > 0)
    last_idx = steps - 1 - np.argmax(mask[:, ::-1, :], axis=1)
    since = np.where(has, (steps - 1 - last_idx) * hours / steps, hours)
    out = np.concatenate([first, sd, mean_tail, since], 1).astype(np.float32)
    out[np.isnan(x).all(axis=(1, 2))] = np.nan
    return out


def inner_scores(x: np.ndarray, y: np.ndarray, idx: np.ndarray, folds: int) -> dict:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    gbm, lr = [], []
    for a, b in inner_folds(y[idx], folds, 0, "binary"):
        tr, te = idx[a], idx[b]
        kw = {**GBM_DEFAULTS, "random_state": 0, "n_jobs": 1, "verbose": -1,
              "subsample_freq": 1, "deterministic": True, "force_row_wise": True}  # fmt: skip
        m = lgb.LGBMClassifier(**kw).fit(x[tr], y[tr])
        gbm.append(roc_auc_score(y[te], m.predict_proba(x[te])[:, 1]))
        xi = np.where(np.isnan(x), 0.0, x)
        miss = np.isnan(x).any(0)
        xi = np.hstack([xi, np.isnan(x[:, miss]).astype(float)])
        lin = make_pipeline(
            StandardScaler(), LogisticRegressionCV(Cs=[0.003, 0.01, 0.03, 0.1], max_iter=500)
        ).fit(xi[tr], y[tr])
        lr.append(roc_auc_score(y[te], lin.predict_proba(xi[te])[:, 1]))
    return {"gbm": float(np.mean(gbm)), "lr": float(np.mean(lr))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/physionet2012/ts_features.json"
    )
    a = ap.parse_args()
    t0 = time.perf_counter()
    spec = load_spec(ROOT / "examples" / "physionet2012.yaml")
    cohort = load_cohort(spec)
    y = np.asarray(cohort.y).astype(int)
    rows = []
    for k, (tr, _te) in enumerate(patient_splits(cohort, spec.split, seed=0)):
        pre = fit_preprocessors(spec.modalities, cohort.subset(tr), 0)
        x, _ = transform_cohort(pre, cohort)
        static, _ = pre["static"].flat_features(x["static"])
        base, _ = pre["series"].flat_features(x["series"])
        nv = len(pre["series"].variables_)
        hours = float(np.diff(pre["series"].window_)[0])
        extra = extra_statistics(x["series"], nv, hours)
        inputs = {
            "six statistics (now)": np.hstack([static, base]),
            "+ first, sd, last-12h mean, hours since last": np.hstack([static, base, extra]),
        }
        row = {name: inner_scores(v, y, tr, spec.evaluation.selection_folds)
               for name, v in inputs.items()}  # fmt: skip
        rows.append(row)
        print(k, json.dumps(row), flush=True)
    mean = {name: {m: float(np.mean([r[name][m] for r in rows])) for m in ("gbm", "lr")}
            for name in rows[0]}  # fmt: skip
    out = {"threads": 1, "protocol": "inner 3-fold CV on each outer split's training "
           "patients (5-fold, seed 0); test patients never used",
           "extra": EXTRA, "splits": rows, "mean": mean,
           "seconds": time.perf_counter() - t0}  # fmt: skip
    a.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(mean, indent=1))


if __name__ == "__main__":
    main()
