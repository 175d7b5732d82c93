"""What a finished ``holomed compare`` run gives with another ensemble setting, without
refitting anything: the ensemble's weights and honest inner scores depend only on the
candidates' inner out-of-fold predictions (``inner_predictions.npz``, kept with
``evaluation.save_inner_predictions: true``), and its test output is the weighted blend
of the members' test outputs (``predictions.csv``), exactly as ``compare`` builds it. So
the ensemble, the per-fold selection procedure and their test metrics are recomputed
with the library's own functions (``ensemble_selection``, ``choose``, ``blend``,
``summarise``) for ``--bags`` N. The candidates' fits are untouched.

Check: with the run's own setting (``--bags`` as the run had it) the recomputed entries
equal the run's (printed as ``reproduced``).

    python benchmarks/reblend.py runs/bench/cpsc_sf5 --bags 0 20 \\
        --out benchmarks/results/cpsc2018/reblend_bagged.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from holomed.candidates.ensemble import blend
from holomed.evaluation.select import choose, ensemble_selection
from holomed.scoring.metrics import summarise

NON_CANDIDATE = ("selection (per fold)", "ensemble")


class _Scored:  # what ensemble_selection reads of a scored candidate
    def __init__(self, oofs: list[np.ndarray]) -> None:
        self.oofs, self.oof = oofs, np.mean(oofs, axis=0)


def load_inner(path: Path) -> list[dict]:
    z = np.load(path, allow_pickle=False)
    splits: dict[int, dict] = {}
    for key in z.files:
        parts = key.split("/")
        k = int(parts[0][5:])
        d = splits.setdefault(k, {"folds": {}, "oofs": {}})
        if parts[1] in ("rows", "y"):
            d[parts[1]] = z[key]
        elif parts[1].startswith("fold"):
            d["folds"].setdefault(int(parts[1][4:]), {})[parts[2]] = z[key]
        else:
            d["oofs"].setdefault(parts[2], {})[int(parts[3])] = z[key]
    out = []
    for k in sorted(splits):
        d = splits[k]
        folds = [(d["folds"][i]["train"], d["folds"][i]["test"]) for i in sorted(d["folds"])]
        oofs = {n: [v[r] for r in sorted(v)] for n, v in d["oofs"].items()}
        out.append({"rows": d["rows"], "y": d["y"], "folds": folds, "oofs": oofs})
    return out


def outputs_of(pred: pd.DataFrame, res: dict) -> dict[str, list[np.ndarray]]:
    """{entry: [per-seed (n_evaluated, k) outputs]} in ``eval_ids`` order."""
    cols = [c for c in pred.columns if c.startswith("p_")]
    order = {pid: i for i, pid in enumerate(res["eval_ids"])}
    out: dict[str, list[np.ndarray]] = {}
    for (entry, _seed), g in pred.groupby(["entry", "seed"], sort=True):
        a = np.full((len(order), len(cols)), np.nan)
        a[[order[str(i)] for i in g["id"].astype(str)]] = g[cols].to_numpy(dtype=float)
        out.setdefault(entry, []).append(a)
    return out


def reblend(run: Path, bags: int, bagging: str = "candidates") -> dict:
    res = json.loads((run / "results.json").read_text())
    ev, seed = res["spec"]["evaluation"], res["spec"]["training"]["seed"]
    task, metric = res["task"], res["selection_metric"]
    inner = load_inner(run / "inner_predictions.npz")
    pred = pd.read_csv(run / "predictions.csv", dtype={"id": str})
    outs = outputs_of(pred, res)
    seeds = len(res["seeds"])
    # cohort positions: each split's test patients are the cohort's other rows; the
    # evaluated patients (eval_ids order) are their sorted union, as compare makes them
    total = int(res["cohort"]["patients"])
    tests = [np.setdiff1d(np.arange(total), sp["rows"]) for sp in inner]
    evaluated = np.unique(np.concatenate(tests))
    if len(evaluated) != len(res["eval_ids"]):
        raise SystemExit("the evaluated patients do not match the splits' test rows")
    ens = [np.full_like(outs[next(iter(outs))][0], np.nan) for _ in range(seeds)]
    proc = [np.full_like(ens[0], np.nan) for _ in range(seeds)]
    picks, weights = [], []
    pooled: dict[str, list[float]] = {}
    for k, (sp, detail) in enumerate(zip(inner, res["selection_detail"], strict=True)):
        te = np.searchsorted(evaluated, tests[k])  # positions in eval_ids order
        scored = {nm: _Scored(o) for nm, o in sp["oofs"].items() if nm != "ensemble"}
        w, fold_scores = ensemble_selection(
            scored, sp["y"], sp["folds"], task, metric,
            ev.get("ensemble_objective", "log_loss"), bags, seed, None, bagging,
        )  # fmt: skip
        weights.append(w)
        members = {m: f"baseline:{m}" if f"baseline:{m}" in outs else m for m in w}
        for s in range(seeds):
            ens[s][te] = blend([outs[members[m]][s][te] for m in w], list(w.values()))
        scores = {nm: v for nm, v in detail["cv_fold_scores"].items() if nm != "ensemble"}
        scores["ensemble"] = fold_scores
        pick = choose(scores, ev.get("selection_rule", "best"))
        picks.append(pick)
        for nm, v in scores.items():  # every split's inner folds: the deployable choice
            pooled.setdefault(nm, []).extend(v)
        src = (
            ens
            if pick == "ensemble"
            else outs[f"baseline:{pick}" if f"baseline:{pick}" in outs else pick]
        )
        for s in range(seeds):
            proc[s][te] = src[s][te]
    y = np.asarray(res["y"])
    boot = res.get("n_bootstrap", 1000)
    out = {
        "bags": bags,
        "bagging": bagging,
        "per_fold_choice": picks,
        "deployable_choice": choose(pooled, ev.get("selection_rule", "best")),
        "weights": weights,
    }
    for name, o in (("ensemble", ens), ("selection (per fold)", proc)):
        m = summarise(task, y, o, boot, seed=seed)
        out[name] = {k: m[k]["mean"] for k in ("auroc", "auprc", "brier") if k in m}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--bags", type=int, nargs="+", default=[0, 20])
    ap.add_argument("--bagging", choices=["candidates", "patients"], default="candidates")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    res = json.loads((a.run / "results.json").read_text())
    report = {"dataset": res["dataset"], "settings": []}
    for name in ("ensemble", "selection (per fold)"):
        m = res["strategies"][name]["metrics"]
        report[f"run: {name}"] = {k: m[k]["mean"] for k in ("auroc", "auprc", "brier") if k in m}
    for b in a.bags:
        r = reblend(a.run, b, a.bagging)
        report["settings"].append(r)
        print(f"{res['dataset']} bags={b}: ensemble {r['ensemble']}, procedure "
              f"{r['selection (per fold)']}, choices {r['per_fold_choice']}, deployable "
              f"{r['deployable_choice']}")  # fmt: skip
    print("run as recorded:", {k: v for k, v in report.items() if k.startswith("run")})
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
