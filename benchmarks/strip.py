"""Copy a results JSON without patient-level content (ids, labels, predictions, the list
of excluded patients: only its count stays), so it can be published beside BENCHMARKS.md.

python benchmarks/strip.py runs/bench/physionet2012/results.json \
    benchmarks/results/physionet2012/compare_results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def strip(res: dict) -> dict:
    out = dict(res)
    if isinstance(out.get("excluded"), list):
        out["excluded"] = len(out["excluded"])
    for key in ("eval_ids", "predictions", "ids", "y"):
        out.pop(key, None)
    if isinstance(out.get("contributions"), dict):  # per-patient values and ids of a fit run
        c = out["contributions"]
        out["contributions"] = {k: v for k, v in c.items() if not k.startswith(("ids", "patient"))}
    if isinstance(out.get("attention"), dict):
        out["attention"] = {k: v for k, v in out["attention"].items() if k != "examples"}
    return out


if __name__ == "__main__":
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(strip(json.loads(src.read_text())), indent=1))
