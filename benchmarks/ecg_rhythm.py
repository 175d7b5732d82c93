"""Heart-rhythm features for the classical candidates on CPSC 2018, decided on training
records only.

For each outer split of ``examples/cpsc2018.yaml`` (5-fold, seed 0), LightGBM (one model
per diagnosis; 200 trees, 7 leaves, learning rate 0.05) is scored by 5-fold inner CV on
that split's **training** records (macro-AUROC over the diagnoses present), with the
signal kind's per-lead summary features alone, plus :func:`rhythm_features` (R peaks from
the multi-lead envelope, the library's detector), or plus the same features from
``wfdb.processing.xqrs_detect`` on lead II. The test records of the split are never
used. Threads 1. Writes benchmarks/results/cpsc2018/ecg_rhythm.json.

    HOLOMED_DATA=../shared/data python benchmarks/ecg_rhythm.py
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np

from holomed.threads import set_threads

set_threads(1)

import lightgbm as lgb  # noqa: E402
import wfdb.processing  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from holomed.cohort import inner_folds, load_cohort, patient_splits  # noqa: E402
from holomed.modalities.signal import (  # noqa: E402
    RHYTHM_FEATURES,
    SignalPreprocessor,
    rhythm_features,
    rr_features,
)
from holomed.spec import load_spec  # noqa: E402

ROOT = Path(__file__).parents[1]
OUT = ROOT / "benchmarks" / "results" / "cpsc2018" / "ecg_rhythm.json"


def xqrs_features(x: np.ndarray, fs: float, lead: int) -> np.ndarray:
    """The same RR features from wfdb's XQRS detector on one lead."""
    out = np.full((len(x), len(RHYTHM_FEATURES)), np.nan)
    for i, rec in enumerate(x):
        with contextlib.redirect_stdout(io.StringIO()):
            peaks = wfdb.processing.xqrs_detect(rec[:, lead].astype(float), fs=fs, verbose=False)
        out[i] = rr_features(peaks, fs)
    return out


def inner_auroc(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> float:
    scores = []
    for a, b in inner_folds(y[idx], 5, 0, "multilabel", None):
        tr, te = idx[a], idx[b]
        per = []
        for j in range(y.shape[1]):
            if not 0 < y[te, j].sum() < len(te):
                continue
            m = lgb.LGBMClassifier(
                n_estimators=200,
                learning_rate=0.05,
                num_leaves=7,
                min_child_samples=5,
                verbose=-1,
                n_jobs=1,
            )
            m.fit(x[tr], y[tr, j])
            per.append(roc_auc_score(y[te, j], m.predict_proba(x[te])[:, 1]))
        scores.append(float(np.mean(per)))
    return float(np.mean(scores))


def main() -> None:
    t0 = time.perf_counter()
    spec = load_spec(ROOT / "examples" / "cpsc2018.yaml")
    cohort = load_cohort(spec)
    ecg = cohort.modalities["ecg"]
    opts = {k: v for k, v in spec.modalities[0].preprocessing.items() if k != "rhythm"}
    pre = SignalPreprocessor(**opts).fit(ecg)  # unsupervised per-lead scaling only
    x = pre.transform(ecg)
    base, _ = pre.flat_features(x)
    t1 = time.perf_counter()
    env = rhythm_features(x, pre.fs_)
    t_env = time.perf_counter() - t1
    t1 = time.perf_counter()
    xq = xqrs_features(x, pre.fs_, pre.channels_.index("II"))
    t_xq = time.perf_counter() - t1
    inputs = {
        "summary": base,
        "summary + rhythm (multi-lead envelope)": np.hstack([base, env]),
        "summary + rhythm (wfdb XQRS, lead II)": np.hstack([base, xq]),
    }
    splits = patient_splits(cohort, spec.split, seed=0)
    table = {k: [inner_auroc(v, cohort.y, tr) for tr, _te in splits] for k, v in inputs.items()}
    for k, v in table.items():
        print(f"{k:40s}", [round(a, 3) for a in v], f"mean {np.mean(v):.3f}")
    out = {
        "threads": 1,
        "records": len(cohort),
        "protocol": "inner 5-fold CV on each outer split's training records only",
        "inner_macro_auroc": table,
        "mean": {k: float(np.mean(v)) for k, v in table.items()},
        "beats_median": float(np.nanmedian(env[:, -1])),
        "no_rhythm": int(np.isnan(env).any(1).sum()),
        "seconds_features": {"envelope": t_env, "xqrs": t_xq},
        "seconds": time.perf_counter() - t0,
    }
    OUT.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
