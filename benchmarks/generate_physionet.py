"""Cross-modal generation on PhysioNet 2012 (static <-> series), held-out patients.

Spec: examples/physionet2012.yaml, its first outer split (5-fold, the split
``holomed robustness`` uses: 3200 training / 800 test patients). One seed.

Part ``recon`` -- the generator of ``holomed impute`` (:mod:`holomed.generative.impute`,
a product-of-experts multimodal VAE) fitted on the training patients, then each modality
of the test patients hidden in turn and generated (mean of 20 draws) from the other.
``holomed impute`` / ``evaluate`` read tabular and omics values only, so both modalities
are given to it as numeric tables:

- ``static``: Age, Height, Weight and one-hot Gender and ICUType (the spec's two
  categorical columns; ``tables`` would otherwise skip them as non-numeric).
- ``series``: the series as the spec's ``ts_summary`` encoder reads it -- the spec's
  TimeseriesPreprocessor (0-48 h, 2-h grid, log1p of skewed labs, z per variable) fitted
  on the training patients, then per-variable summary statistics over the stay
  (``flat_features``). Two representations: ``mean`` (the per-variable mean over the
  stay, 37 columns, NaN where a variable was never measured) and ``summary`` (all six
  statistics: last, min, max, mean, log count, slope; 222 columns).

R^2 as in ``evaluate`` (over all values, against the training mean, on the table's own
scale) and additionally on the standardised scale (each column z-scored with the
training mean and sd, so Weight's kg do not outweigh a one-hot column), plus per-column
R^2 and r. Reference: ridge regression of each column on the other view (alpha by
RidgeCV on the training patients), the same metrics.

Part ``robustness`` -- ``holomed.evaluation.robustness`` (what ``holomed robustness``
runs) with fusion ``joint`` and ``fusion.imputation`` in {mean, learned, reconstruct,
generate}, ``fusion.modality_dropout=0.3`` (as the ROSMAP run), 1 seed, the spec's
training settings. For each fitted model the embeddings of the test patients (both
modalities present) are captured at the imputer's input, each modality hidden in turn,
and the imputer's fill compared with the real embedding (R^2 against the test mean,
mean per-dimension r): how well each mode fills the embedding the fusion actually sees.

Part ``diagnostic`` (not in ``all``) -- mean, reconstruct and generate once more with a
fixed 20 epochs (``training.val_fraction=0``: no early stopping), 1 seed: does the
fusion's VAE learn its fill given more steps?

Threads 1. Writes benchmarks/results/generative/physionet_generate.json (and
physionet_imputation.png). No patient ids are written.
  HOLOMED_DATA=../shared/data python benchmarks/generate_physionet.py [--part PART]
(PART: recon, robustness, diagnostic or all = recon + robustness)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from holomed.threads import set_threads

set_threads(1)

from holomed.cohort import Cohort, load_cohort, patient_splits  # noqa: E402
from holomed.evaluation.compare import apply_overrides  # noqa: E402
from holomed.generative.impute import Generator, _mean_corr, _r2, tables  # noqa: E402
from holomed.modalities.base import ModalityData  # noqa: E402
from holomed.modalities.timeseries import TimeseriesPreprocessor  # noqa: E402
from holomed.spec import load_spec  # noqa: E402

ROOT = Path(__file__).parents[1]
OUT = ROOT / "benchmarks" / "results" / "generative" / "physionet_generate.json"
MODES = ("mean", "learned", "reconstruct", "generate")


def static_table(cohort: Cohort) -> pd.DataFrame:
    s = cohort.modalities["static"].values
    num = s.select_dtypes(include=[np.number]).astype(float)
    cats = [c for c in s.columns if c not in num.columns]
    dummies = pd.get_dummies(s[cats].astype(object), dtype=float)  # NaN -> all zeros
    for c in cats:  # a missing category stays missing, not "none of them"
        cols = [d for d in dummies.columns if d.startswith(f"{c}_")]
        dummies.loc[s[c].isna().to_numpy(), cols] = np.nan
    return pd.concat([num, dummies], axis=1)


def series_tables(spec, cohort: Cohort, train: np.ndarray) -> dict[str, pd.DataFrame]:
    ms = next(m for m in spec.modalities if m.name == "series")
    data = cohort.modalities["series"]
    pre = TimeseriesPreprocessor(**(ms.preprocessing or {})).fit(
        ModalityData(data.kind, data.values.iloc[train], data.present[train])
    )
    feats, names = pre.flat_features(pre.transform(data))
    full = pd.DataFrame(feats, index=cohort.ids, columns=names).astype(float)
    means = full[[c for c in names if c.endswith(":mean")]]
    return {"mean": means, "summary": full}


def two_view(cohort: Cohort, static: pd.DataFrame, series: pd.DataFrame) -> Cohort:
    mods = {
        "static": ModalityData(
            "tabular", static, cohort.modalities["static"].present, list(static.columns)
        ),
        "series": ModalityData(
            "omics", series, cohort.modalities["series"].present, list(series.columns)
        ),
    }
    return Cohort(cohort.ids, mods, y=cohort.y, name="physionet2012-views")


def score(gen: Generator, data, n: str, rows: np.ndarray, train: np.ndarray) -> dict:
    t = data[n]
    mean, sd = gen.generate(data, rows, hide=n)[n]
    measured = t.x[rows]
    z_true = (measured - gen.mean[n]) / gen.sd[n]
    z_gen = (mean - gen.mean[n]) / gen.sd[n]
    cols = {}
    for j, c in enumerate(t.columns):
        ok = np.isfinite(measured[:, j])
        if ok.sum() < 10:
            cols[c] = {"n": int(ok.sum())}
            continue
        a, b = measured[ok, j], mean[ok, j]
        r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
        cols[c] = {"n": int(ok.sum()), "r2": _r2(a[:, None], b[:, None], gen.mean[n][j]), "r": r}
    return {
        "n": int(len(rows)),
        "r2": _r2(measured, mean, gen.mean[n]),
        "r2_standardised": _r2(z_true, z_gen, np.zeros(len(t.columns))),
        "mean_corr": _mean_corr(measured, mean),
        "mean_sd_standardised": float(np.mean(sd / gen.sd[n])),
        "columns": cols,
    }


def ridge_reference(data, n: str, rows: np.ndarray, train: np.ndarray) -> dict:
    """A deterministic reference: ridge regression (alpha by RidgeCV on the training
    patients) of each column of ``n`` on the other modality's standardised values
    (a missing value as its mean, plus a missingness indicator per column)."""
    from sklearn.linear_model import RidgeCV

    (o,) = [m for m in data if m != n]
    xo = data[o].x
    mu, sd = np.nanmean(xo[train], 0), np.nanstd(xo[train], 0)
    sd = np.where(np.isfinite(sd) & (sd > 1e-8), sd, 1.0)
    z = (xo - np.nan_to_num(mu)) / sd
    miss = ~np.isfinite(z)
    feats = np.hstack([np.where(miss, 0.0, z), miss[:, miss[train].any(0)].astype(float)])
    y = data[n].x
    ytr = train[data[n].present[train] & data[o].present[train]]
    ref = np.nanmean(y[ytr], 0)
    guess = np.tile(ref, (len(rows), 1))
    for j in range(y.shape[1]):
        ok = ytr[np.isfinite(y[ytr, j])]
        if len(ok) >= 20 and np.nanstd(y[ok, j]) > 0:
            m = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(feats[ok], y[ok, j])
            guess[:, j] = m.predict(feats[rows])
    measured = y[rows]
    return {"r2": _r2(measured, guess, ref), "mean_corr": _mean_corr(measured, guess)}


def recon(spec, cohort: Cohort, tr: np.ndarray, te: np.ndarray) -> dict:
    static = static_table(cohort)
    out: dict = {"static_columns": list(static.columns)}
    for rep, series in series_tables(spec, cohort, tr).items():
        view = two_view(cohort, static, series)
        data = tables(view)
        t0 = time.perf_counter()
        gen = Generator(seed=0).fit(data, tr)
        entry: dict = {"fit_seconds": round(time.perf_counter() - t0, 1), "modalities": {}}
        both = data["static"].present[te] & data["series"].present[te]
        rows = te[both]
        for n in data:
            entry["modalities"][n] = score(gen, data, n, rows, tr)
            entry["modalities"][n]["ridge_reference"] = ridge_reference(data, n, rows, tr)
        if rep == "summary":  # the per-variable means inside the summary representation
            t = data["series"]
            mean = gen.generate(data, rows, hide="series")["series"][0]
            j = [i for i, c in enumerate(t.columns) if c.endswith(":mean")]
            entry["modalities"]["series"]["mean_block"] = {
                "r2": _r2(t.x[rows][:, j], mean[:, j], gen.mean["series"][j]),
                "mean_corr": _mean_corr(t.x[rows][:, j], mean[:, j]),
            }
        out[rep] = entry
        s, v = entry["modalities"]["static"], entry["modalities"]["series"]
        print(
            f"[{rep}] fit {entry['fit_seconds']} s; static from series: R2 {s['r2']:.3f} "
            f"(std {s['r2_standardised']:.3f}) r {s['mean_corr']:.3f}; series from static: "
            f"R2 {v['r2']:.3f} (std {v['r2_standardised']:.3f}) r {v['mean_corr']:.3f}; "
            f"ridge: static {s['ridge_reference']}, series {v['ridge_reference']}",
            flush=True,
        )
    return out


def embedding_fill(model, test: Cohort) -> dict:
    """Capture the imputer's input on ``test`` (all present), hide each modality, fill."""
    net = model.net_
    imputer = net.fusion.imputer
    got: dict = {}

    def hook(_mod, args):
        emb, present = args
        got.setdefault("emb", []).append({k: v.detach().clone() for k, v in emb.items()})
        got.setdefault("present", []).append({k: v.clone() for k, v in present.items()})

    h = imputer.register_forward_pre_hook(hook)
    try:
        model.predict_proba(test)
    finally:
        h.remove()
    emb = {k: torch.cat([e[k] for e in got["emb"]]) for k in got["emb"][0]}
    present = {k: torch.cat([p[k] for p in got["present"]]) for k in got["present"][0]}
    both = torch.stack([present[k] for k in present], 1).all(1)
    emb = {k: v[both] for k, v in emb.items()}
    present = {k: v[both] for k, v in present.items()}
    out = {}
    imputer.eval()
    with torch.no_grad():
        for n in emb:
            hidden = dict(present)
            hidden[n] = torch.zeros_like(present[n])
            filled, _ = imputer(emb, hidden)
            a, b = emb[n].numpy(), filled[n].numpy()
            out[n] = {
                "n": int(len(a)),
                "dims": int(a.shape[1]),
                "r2_vs_test_mean": _r2(a, b, a.mean(0)),
                "mean_corr": _mean_corr(a, b),
            }
    return out


def robustness_part(
    spec, cohort: Cohort, modes=MODES, seeds: int = 3, out_png: Path | None = None
) -> dict:
    from holomed.evaluation.robustness import robustness
    from holomed.evaluation.select import build_candidate

    curves, fills, seconds, history = {}, {}, {}, {}
    kept: dict = {}
    orig = build_candidate

    def keep(*a, **k):  # keep the fitted model to read its imputer afterwards
        cand = orig(*a, **k)
        fit = cand.fit

        def fit_and_keep(c):
            m = fit(c)
            kept.setdefault("models", []).append(m)
            return m

        cand.fit = fit_and_keep
        return cand

    import holomed.evaluation.robustness as rob

    rob.build_candidate = keep
    res = None
    try:
        for mode in modes:
            s = apply_overrides(
                spec, {"fusion.imputation": mode, "fusion.modality_dropout": 0.3}, where="bench"
            )
            t0 = time.perf_counter()
            kept.clear()
            res = robustness(s, cohort, ["joint"], seeds=seeds, baselines=False)
            seconds[mode] = round(time.perf_counter() - t0, 1)
            curves[mode] = next(iter(res["curves"].values()))
            _, te = patient_splits(cohort, s.split, seed=s.training.seed)[0]
            test = cohort.subset(te)
            fills[mode] = [embedding_fill(m, test) for m in kept["models"]]
            history[mode] = [
                {k: m.history_[k] for k in ("epochs", "best_epoch")} for m in kept["models"]
            ]
            au = {
                sc: [round(v, 3) for v in curves[mode][sc]["auroc"]["mean"]]
                for sc in res["scenarios"]
            }
            print(f"[{mode}] {seconds[mode]} s auroc {au} epochs {history[mode]}", flush=True)
    finally:
        rob.build_candidate = orig
    keys = ("dataset", "task", "rates", "scenarios", "metrics", "seeds", "n_test")
    merged = {k: res[k] for k in keys}
    merged["curves"] = curves
    try:
        from holomed.report.plots import robustness_plot

        if out_png is not None:
            robustness_plot(merged, out_png)
    except Exception as err:  # noqa: BLE001  (the plot is a convenience)
        print(f"plot skipped: {err}")
    return {"curves": merged, "embedding_fill": fills, "history": history, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["recon", "robustness", "diagnostic", "all"], default="all")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="1 epoch, one mode, nothing written")
    args = ap.parse_args()
    spec = load_spec(ROOT / "examples" / "physionet2012.yaml")
    if args.smoke:
        spec = apply_overrides(spec, {"training.max_epochs": 1}, where="--smoke")
        cohort = load_cohort(spec)
        print(robustness_part(spec, cohort, modes=("generate",), seeds=1)["embedding_fill"])
        return
    cohort = load_cohort(spec)
    tr, te = patient_splits(cohort, spec.split, seed=spec.training.seed)[0]
    tr, te = np.sort(tr), np.sort(te)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results.update(threads=1, split={"train": int(len(tr)), "test": int(len(te))})
    if args.part in ("recon", "all"):
        results["reconstruction"] = recon(spec, cohort, tr, te)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=1))
    if args.part in ("robustness", "all"):
        results["robustness"] = robustness_part(
            spec, cohort, seeds=args.seeds, out_png=OUT.with_name("physionet_imputation.png")
        )
        results["robustness"]["settings"] = (
            "joint fusion (spec: hidden 64, dropout 0.2), fusion.modality_dropout=0.3, "
            f"{args.seeds} seeds, spec training (max_epochs 40, patience 10, best "
            "validation-loss weights kept)"
        )
    if args.part == "diagnostic":  # the fusion's VAE given a fixed 20 epochs
        fixed = apply_overrides(
            spec, {"training.val_fraction": 0.0, "training.max_epochs": 20}, where="diagnostic"
        )
        results["diagnostic_fixed_epochs"] = robustness_part(
            fixed, cohort, modes=("mean", "reconstruct", "generate"), seeds=1
        )
        results["diagnostic_fixed_epochs"]["settings"] = (
            "as robustness, but training.val_fraction=0 (no early stopping, no "
            "calibration), max_epochs=20, 1 seed"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
