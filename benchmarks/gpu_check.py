"""GPU check (needs a CUDA machine): every fusion strategy trains through Lightning on
the GPU in fp32 and bf16 mixed precision, and through the DDP strategy; test AUROC and
fit seconds are compared with the CPU on the same machine. SYNTHETIC data.

    python benchmarks/gpu_check.py --out runs/bench/gpu.json
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import torch

from holomed.cohort import load_cohort, patient_splits
from holomed.fusion import fusion_names
from holomed.model import Model
from holomed.spec import parse_spec
from holomed.synthetic import synthetic_spec_dict


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--out", default="runs/bench/gpu.json")
    a = ap.parse_args()
    d = synthetic_spec_dict(n_patients=a.n, seed=0)
    d["training"].update({"max_epochs": 20, "batch_size": 256, "patience": 50})
    base = parse_spec(d)
    cohort = load_cohort(base)
    tr, te = patient_splits(cohort, base.split)[0]
    train, test = cohort.subset(tr), cohort.subset(te)
    configs = [
        ("cpu", "32-true", "auto"),
        ("gpu", "32-true", "auto"),
        ("gpu", "bf16-mixed", "auto"),
        ("gpu", "32-true", "ddp"),
    ]
    res = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "n_train": int(len(tr)),
        "n_test": int(len(te)),
        "runs": [],
    }
    for acc, prec, strat in configs:
        for f in fusion_names():
            if strat == "ddp" and f not in ("late", "attention", "guided"):
                continue
            spec = base.model_copy(deep=True)
            spec.training.accelerator, spec.training.precision = acc, prec
            spec.training.strategy = strat
            row = {"accelerator": acc, "precision": prec, "strategy": strat, "fusion": f}
            try:
                t = time.perf_counter()
                m = Model(spec, fusion=f, seed=0).fit(train)
                row["fit_seconds"] = round(time.perf_counter() - t, 2)
                row["epochs"] = m.history_["epochs"]
                row["auroc"] = round(m.evaluate(test)["auroc"], 4)
                row["param_device_after_fit"] = str(next(m.net_.parameters()).device)
            except Exception as err:  # noqa: BLE001 - report every failure, keep going
                row["error"] = f"{type(err).__name__}: {err}"
                row["trace"] = traceback.format_exc()[-1500:]
            print(json.dumps(row), flush=True)
            res["runs"].append(row)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
