"""Fit one model with several processes (DDP) started by torchrun or SLURM's srun, on one
machine or several; predict and write once, on global rank 0.

Every process runs this script: it reads the spec and the cohort, and ``Model.fit`` joins
the processes into one process group (Lightning reads the ranks from torchrun's or
SLURM's environment; ``training.devices`` x ``training.num_nodes`` must equal the
processes started, or Lightning stops with an error saying so). After the fit every
process holds the same weights: rank 0 predicts every patient and writes OUT/bundle,
OUT/predictions.csv and OUT/results.json; the other ranks write nothing.

    torchrun --nnodes=2 --nproc_per_node=2 --rdzv_id=holomed-ddp --rdzv_backend=c10d \\
        --rdzv_endpoint=node0.example.org:29500 \\
        examples/scale/fit_distributed.py examples/scale/ddp.yaml --out runs/ddp
    sbatch examples/scale/slurm.sbatch

Without a launcher it is an ordinary run: ``python examples/scale/fit_distributed.py
examples/scale/ddp.yaml --out runs/one --set training.num_nodes=1 --set
training.devices=1``. (On one machine ``holomed fit SPEC --set training.devices=2 --set
training.strategy=ddp`` needs no launcher at all: the fit runs in spawned workers.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a spec field, e.g. training.num_nodes=1 (the value is read as YAML)",
    )
    ap.add_argument("--all", action="store_true", help="train on every labelled patient")
    a = ap.parse_args(argv)

    import torch

    from holomed.cohort import load_cohort, patient_splits
    from holomed.model import Model
    from holomed.spec import load_spec, override_spec
    from holomed.threads import set_threads
    from holomed.training import global_rank

    overrides = {}
    for item in a.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: expected FIELD=VALUE")
        overrides[key] = yaml.safe_load(value)
    spec = override_spec(load_spec(a.spec), overrides)
    set_threads(spec.training.threads)
    cohort = load_cohort(spec)
    if a.all:
        train_idx, test_idx = np.arange(len(cohort)), np.arange(0)
    else:  # the spec's split (a kfold split: its first fold)
        train_idx, test_idx = patient_splits(cohort, spec.split)[0]
    try:
        model = Model(spec).fit(cohort.subset(train_idx))  # every process, in step
        rank = global_rank()
        if rank != 0:
            print(f"rank {rank}: trained; rank 0 writes", flush=True)
            return 0
        out = a.out
        out.mkdir(parents=True, exist_ok=True)
        p = np.asarray(model.predict_proba(cohort), dtype=float).reshape(len(cohort), -1)
        classes = model.classes_ or []
        names = [f"p_{c}" for c in classes] if len(classes) == p.shape[1] else None
        names = names or [f"out{j}" for j in range(p.shape[1])]
        split = np.full(len(cohort), "train", dtype=object)
        split[test_idx] = "test"
        table = pd.DataFrame(p, columns=names)
        table.insert(0, "split", split)
        table.insert(0, "id", cohort.ids)
        table.to_csv(out / "predictions.csv", index=False)
        test = cohort.subset(test_idx) if len(test_idx) else None
        results = {
            "spec": str(a.spec),
            "history": model.history_,
            "n_train": int(len(train_idx)),
            "n_test": int(len(test_idx)),
            "test_metrics": model.evaluate(test) if test is not None else None,
        }
        model.save(out / "bundle")
        (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
        print(f"rank 0: wrote {out}/bundle, predictions.csv, results.json", flush=True)
        return 0
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
