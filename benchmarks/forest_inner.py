"""Should the random forest (candidate ``rf``, LightGBM in ``rf`` mode) join the default
candidates? Decided on training patients only.

Reads a finished comparison's inner-CV predictions (``holomed compare`` with
``evaluation.save_inner_predictions: true`` keeps them in ``inner_predictions.npz``: per
outer split its training rows, inner folds and every candidate's out-of-fold
predictions), fits ``rf`` (and, as a check that the folds are reproduced, ``gbm``) on the
same inner folds of the same training patients, and scores by the procedure selection
uses:

- each candidate's inner-CV score (mean over inner folds of the selection metric);
- the greedy ensemble's honest score (weights chosen on the other inner folds'
  predictions, scored on the held-out fold; bagged as the run's spec says), once over the
  run's candidates and once with ``rf`` added.

The outer test patients are never read.

    HOLOMED_DATA=../shared/data python benchmarks/forest_inner.py runs/bench/cpsc_rhythm_sf5 \\
        [more run folders] --out benchmarks/results/forest_inner.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from holomed.threads import set_threads

set_threads(1)

from holomed.cohort import load_cohort  # noqa: E402
from holomed.evaluation.select import (  # noqa: E402
    Scored,
    ensemble_selection,
    inner_cv,
    repeats_of,
)
from holomed.scoring.metrics import oriented  # noqa: E402
from holomed.spec import Spec  # noqa: E402


def splits_of(path: Path) -> list[dict]:
    z = np.load(path, allow_pickle=False)
    out: dict[int, dict] = {}
    for key in z.files:
        parts = key.split("/")
        d = out.setdefault(int(parts[0][5:]), {"folds": {}, "oof": {}})
        if parts[1] in ("rows", "y"):
            d[parts[1]] = z[key]
        elif parts[1].startswith("fold"):
            d["folds"].setdefault(int(parts[1][4:]), {})[parts[2]] = z[key]
        elif parts[1] == "oof":
            d["oof"].setdefault(parts[2], {})[int(parts[3])] = z[key]
    return [out[k] for k in sorted(out)]


def scored_of(name: str, oofs: list[np.ndarray], scores: list[float]) -> Scored:
    mean = oofs[0] if len(oofs) == 1 else np.mean(oofs, axis=0)
    return Scored(name, None, float(np.mean(scores)), scores, mean, 0.0, [], oofs)


def run(folder: Path) -> dict:
    t0 = time.perf_counter()
    spec = Spec.model_validate(json.loads((folder / "results.json").read_text())["spec"])
    ev = spec.evaluation
    cohort = load_cohort(spec)
    rows_out = []
    for k, sp in enumerate(splits_of(folder / "inner_predictions.npz")):
        train = cohort.subset(sp["rows"])
        if not np.array_equal(np.asarray(train.y, float), np.asarray(sp["y"], float)):
            raise SystemExit(f"{folder}: split {k}: the labels differ from the saved ones")
        folds = [(f["train"], f["test"]) for _, f in sorted(sp["folds"].items())]
        scored: dict[str, Scored] = {}
        for name, per in sp["oof"].items():
            if name == "ensemble":
                continue
            oofs = [per[r] for r in sorted(per)]
            scores = fold_scores(train.task, sp["y"], oofs, folds, ev.selection_metric)
            scored[name] = scored_of(name, oofs, scores)
        new = {}
        for name in ("gbm", "rf"):
            oofs, scores = inner_cv(spec, train, name, None, folds, seed=0)
            new[name] = scored_of(name, oofs, scores)
        same_gbm = float(np.nanmax(np.abs(new["gbm"].oof - scored["gbm"].oof)))
        args = (train.y, folds, train.task, ev.selection_metric, ev.ensemble_objective)
        w0, s0 = ensemble_selection(scored, *args, ev.ensemble_bags, 0)
        w1, s1 = ensemble_selection({**scored, "rf": new["rf"]}, *args, ev.ensemble_bags, 0)
        row = {
            "split": k,
            "n_train": len(train),
            "gbm_reproduced_max_abs_diff": same_gbm,
            "scores": {n: s.score for n, s in scored.items()},
            "rf": new["rf"].score,
            "ensemble_without_rf": float(np.mean(s0)),
            "ensemble_with_rf": float(np.mean(s1)),
            "rf_weight": w1.get("rf", 0.0),
        }
        print(
            f"{folder.name} split {k}: gbm {row['scores']['gbm']:.4f} rf {row['rf']:.4f} "
            f"ensemble {row['ensemble_without_rf']:.4f} -> {row['ensemble_with_rf']:.4f} "
            f"(rf weight {row['rf_weight']:.2f}; gbm reproduced to {same_gbm:.1e})",
            flush=True,
        )
        rows_out.append(row)
    mean = {
        key: float(np.mean([r[key] for r in rows_out]))
        for key in ("rf", "ensemble_without_rf", "ensemble_with_rf", "rf_weight")
    }
    mean["gbm"] = float(np.mean([r["scores"]["gbm"] for r in rows_out]))
    return {
        "run": str(folder),
        "dataset": spec.dataset,
        "metric": ev.selection_metric,
        "splits": rows_out,
        "mean": mean,
        "seconds": time.perf_counter() - t0,
    }


def fold_scores(task: str, y: np.ndarray, oofs: list, folds: list, metric: str) -> list[float]:
    """Per inner fold, the selection metric of the saved out-of-fold predictions."""
    out = []
    for r, rep in enumerate(repeats_of(folds, len(y))):
        for i in rep:
            b = folds[i][1]
            out.append(float(oriented(task, metric, y[b], oofs[r][b])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/forest_inner.json"))
    a = ap.parse_args()
    out = {"threads": 1, "runs": [run(f) for f in a.runs]}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    for r in out["runs"]:
        print(r["dataset"], {k: round(v, 4) for k, v in r["mean"].items()})


if __name__ == "__main__":
    main()
