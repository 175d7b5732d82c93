"""PhysioNet 2012 set A: time and peak memory to load all stays into a cohort, and to
train one epoch of a GRU-D fusion model over every stay on CPU.

    HOLOMED_DATA=../shared/data python benchmarks/physionet2012_speed.py --out speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from holomed.cohort import load_cohort
from holomed.evaluation.compare import apply_overrides
from holomed.evaluation.resources import Measure
from holomed.model import Model
from holomed.spec import load_spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="examples/physionet2012.yaml")
    ap.add_argument("--fusion", default="joint")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = load_spec(args.spec)
    with Measure() as load:
        cohort = load_cohort(spec)
    # one epoch over every stay, no validation carve-out: the time of a training epoch
    tspec = apply_overrides(
        spec,
        {
            "training.max_epochs": args.epochs,
            "training.val_fraction": 0.0,
            "training.calibration": "none",
            "modalities.series.encoder.name": "grud",
        },
    )
    with Measure() as fit:
        model = Model(tspec, fusion=args.fusion, seed=0).fit(cohort)
    t0 = time.perf_counter()
    model.predict_proba(cohort)
    predict_s = time.perf_counter() - t0
    res = {
        "stays": len(cohort),
        "series_observations": int(
            sum(len(e) for e in cohort.modalities["series"].values["events"].dropna())
        ),
        "load_seconds": round(load.seconds, 2),
        "load_peak_rss_mb": round(load.peak_rss_mb, 1),
        "fusion": args.fusion,
        "encoder": "grud",
        "epochs": args.epochs,
        "fit_seconds_incl_preprocessing": round(fit.seconds, 2),
        "train_loop_seconds": round(model.fit_seconds_, 2),
        "fit_peak_rss_mb": round(fit.peak_rss_mb, 1),
        "predict_all_seconds": round(predict_s, 2),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
