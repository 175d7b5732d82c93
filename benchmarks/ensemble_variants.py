"""Ways to ensemble, compared on training patients only: reads the inner-CV predictions
that ``holomed compare`` keeps with ``evaluation.save_inner_predictions: true``
(``inner_predictions.npz``) and scores each way of combining the candidates by the same
honest procedure selection uses. For every inner fold, the way is applied to the other
inner folds' out-of-fold predictions, and its output is scored on this fold. Test patients
are never read.

Ways:

- ``caruana``: greedy selection with replacement on the log loss (holomed's default);
- ``caruana_bagged``: Caruana et al. 2006 ("Getting the most out of ensemble
  selection", section 2.3): 20 bags, each a random half of the candidates; greedy selection
  runs in each bag, and the weights are averaged over the bags;
- ``mean_all``: the plain mean of every candidate;
- ``best``: the best single candidate by the other folds' scores (selection alone);
- ``caruana_per_label`` (multilabel only): greedy selection per label;
- ``caruana_rows``: bagging ensemble selection over patients (Sun and Pfahringer, 2011,
  "Bagging ensemble selection"): greedy selection with every candidate in each of 20
  bootstrap resamples of the selection patients, the weights averaged, so no candidate is
  ever left out of a bag;
- ``*+recal`` (binary only): the way's blend recalibrated, ``logit p' = a + b logit(p)``
  with ``a, b`` fitted on the blend of the other folds (a monotone map: the same ranking,
  different Brier and log loss).

Binary runs also report the log loss and Brier of each way (lower is better).

    python benchmarks/ensemble_variants.py runs/bench/cpsc_sf5 [more run folders] \\
        --out benchmarks/results/ensemble_variants.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from holomed.candidates.ensemble import blend, caruana, caruana_rows
from holomed.scoring.metrics import calibration_stats, log_loss, oriented

BAGS, BAG_FRACTION = 20, 0.5


def splits_of(path: Path) -> list[dict]:
    z = np.load(path, allow_pickle=False)
    out: dict[int, dict] = defaultdict(lambda: {"folds": {}, "oof": {}})
    for key in z.files:
        parts = key.split("/")
        k = int(parts[0][5:])
        if parts[1] in ("rows", "y"):
            out[k][parts[1]] = z[key]
        elif parts[1].startswith("fold"):
            out[k]["folds"].setdefault(int(parts[1][4:]), {})[parts[2]] = z[key]
        elif parts[1] == "oof" and parts[3] == "0":  # the first repeat
            out[k]["oof"][parts[2]] = z[key]
    return [out[k] for k in sorted(out)]


def bagged(preds: dict, y: np.ndarray, task: str, rng: np.random.Generator) -> dict[str, float]:
    names = list(preds)
    total: dict[str, float] = defaultdict(float)
    for _ in range(BAGS):
        pick = rng.choice(len(names), max(2, round(BAG_FRACTION * len(names))), replace=False)
        w = caruana({names[i]: preds[names[i]] for i in sorted(pick)}, y, task, "log_loss")
        for n, v in w.items():
            total[n] += v / BAGS
    return dict(total)


def combine(way: str, preds: dict, y: np.ndarray, task: str, metric: str, seed: int):
    """A function of held-out predictions, fitted on (preds, y) of the other folds."""
    if way == "caruana":
        w = caruana(preds, y, task, "log_loss")
        return lambda p: blend([p[n] for n in w], list(w.values()))
    if way == "caruana_bagged":
        w = bagged(preds, y, task, np.random.default_rng(seed))
        return lambda p: blend([p[n] for n in w], list(w.values()))
    if way == "caruana_rows":  # the library's evaluation.ensemble_bagging: patients
        w = caruana_rows(preds, y, task, "log_loss", bags=BAGS, seed=seed)
        return lambda p: blend([p[n] for n in w], list(w.values()))
    if way.endswith("+recal"):
        f = combine(way[: -len("+recal")], preds, y, task, metric, seed)
        st = calibration_stats(y, f(preds)[:, 1])
        a, b = st["calibration_intercept"], st["calibration_slope"]
        if not (np.isfinite(a) and np.isfinite(b) and b > 0):
            return f

        def recal(p):
            q = np.clip(f(p)[:, 1], 1e-6, 1 - 1e-6)
            r = 1 / (1 + np.exp(-(a + b * np.log(q / (1 - q)))))
            return np.stack([1 - r, r], 1)

        return recal
    if way == "mean_all":
        return lambda p: np.mean([p[n] for n in preds], axis=0)
    if way == "best":
        b = max(preds, key=lambda n: np.nan_to_num(oriented(task, metric, y, preds[n]), nan=-1))
        return lambda p: p[b]
    if way == "caruana_per_label":
        ws = []
        for j in range(y.shape[1]):
            pj = {n: np.stack([1 - v[:, j], v[:, j]], 1) for n, v in preds.items()}
            ws.append(caruana(pj, y[:, j].astype(int), "binary", "log_loss"))

        def f(p):
            cols = [blend([p[n][:, j] for n in w], list(w.values())) for j, w in enumerate(ws)]
            return np.stack(cols, 1)

        return f
    raise ValueError(way)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    report = {}
    for run in a.runs:
        res = json.loads((run / "results.json").read_text())
        task, metric = res["task"], res["selection_metric"]
        ways = ["best", "caruana", "caruana_bagged", "caruana_rows", "mean_all"]
        if task == "multilabel":
            ways.append("caruana_per_label")
        if task == "binary":
            ways += ["caruana_bagged+recal", "caruana_rows+recal"]
        scores: dict[str, list[float]] = defaultdict(list)
        losses: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for k, sp in enumerate(splits_of(run / "inner_predictions.npz")):
            y = sp["y"]
            preds = {n: o for n, o in sp["oof"].items() if n != "ensemble" and np.isfinite(o).all()}
            for i in sorted(sp["folds"]):
                te = sp["folds"][i]["test"]
                rest = np.setdiff1d(np.arange(len(y)), te)
                for way in ways:
                    f = combine(way, {n: p[rest] for n, p in preds.items()}, y[rest], task,
                                metric, seed=1000 * k + i)  # fmt: skip
                    out = f({n: p[te] for n, p in preds.items()})
                    scores[way].append(oriented(task, metric, y[te], out))
                    if task == "binary":
                        losses[way]["log_loss"].append(log_loss(task, y[te], out))
                        losses[way]["brier"].append(float(((out[:, 1] - y[te]) ** 2).mean()))
        summary = {
            w: {
                "mean": float(np.nanmean(v)),
                "se": float(np.nanstd(v) / np.sqrt(len(v))),
                "n": len(v),
            }
            for w, v in scores.items()
        }
        for w, d in losses.items():
            for k, v in d.items():
                diff = np.asarray(v) - np.asarray(losses["caruana"][k])
                summary[w][k] = float(np.mean(v))
                summary[w][f"{k}_paired_diff_vs_caruana"] = float(np.mean(diff))
                summary[w][f"{k}_paired_se"] = float(np.std(diff) / np.sqrt(len(diff)))
        base = np.asarray(scores["caruana"])
        for w, v in scores.items():
            d = np.asarray(v) - base
            summary[w]["paired_diff_vs_caruana"] = float(np.nanmean(d))
            summary[w]["paired_se"] = float(np.nanstd(d) / np.sqrt(len(d)))
        report[res["dataset"]] = {"metric": metric, "ways": summary}
        print(f"\n{res['dataset']} ({metric}, inner folds x outer splits = {len(base)})")
        for w, s in summary.items():
            d, se = s["paired_diff_vs_caruana"], s["paired_se"]
            extra = "".join(
                f"   {k} {s[k]:.4f} ({s[k + '_paired_diff_vs_caruana']:+.4f} ± "
                f"{s[k + '_paired_se']:.4f})"
                for k in ("log_loss", "brier")
                if k in s
            )
            print(
                f"  {w:20s} {s['mean']:.4f} ± {s['se']:.4f}   vs caruana {d:+.4f} ± {se:.4f}"
                + extra
            )
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
