"""The table of ``benchmarks/gpu_ddp.sh OUTDIR``: per run its history (processes, epochs,
best epoch), test AUROC, wall seconds, and max / mean |Δp| over every patient against the
run it should match (2 processes against 1 in the same precision; GPU fp32 against CPU
fp32; bf16 against fp32 on the GPU). Writes OUTDIR/gpu_ddp.json (no patient ids).

    python benchmarks/gpu_ddp_table.py OUTDIR [--device NAME]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

PAIRS = [  # (run, reference, what the comparison shows)
    ("{a}_fp32_1", "cpu_fp32_1", "GPU against CPU, 1 process, fp32"),
    ("{a}_fp32_2", "{a}_fp32_1", "2 processes against 1, fp32"),
    ("{a}_bf16_2", "{a}_bf16_1", "2 processes against 1, bf16-mixed"),
    ("{a}_bf16_1", "{a}_fp32_1", "bf16-mixed against fp32, 1 process"),
]


def load_run(out: Path, name: str) -> dict | None:
    folder = out / name
    if not (folder / "predictions.csv").exists():
        return None
    pred = pd.read_csv(folder / "predictions.csv")
    res = json.loads((folder / "results.json").read_text())
    return {"pred": pred, "results": res}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="")
    ap.add_argument("--acc", default="gpu")
    a = ap.parse_args(argv)
    walls = dict(re.findall(r"^(\S+) rc=\d+ wall=([\d.]+)", (a.out / "runs.txt").read_text(), re.M))
    rcs = dict(re.findall(r"^(\S+) rc=(\d+)", (a.out / "runs.txt").read_text(), re.M))
    names = ["cpu_fp32_1"] + [f"{a.acc}_{p}_{n}" for p in ("fp32", "bf16") for n in (1, 2)]
    runs = {n: load_run(a.out, n) for n in names}
    rows = []
    for n in names:
        r = runs[n]
        row = {"run": n, "rc": int(rcs.get(n, -1)), "wall_s": float(walls.get(n, "nan"))}
        if r is not None:
            h = r["results"].get("history", {})
            test = r["results"].get("test_metrics") or {}
            row.update(processes=h.get("processes"), epochs=h.get("epochs"),
                       best_epoch=h.get("best_epoch"), test_auroc=test.get("auroc"))  # fmt: skip
        rows.append(row)
    pairs = []
    for run, ref, what in PAIRS:
        run, ref = run.format(a=a.acc), ref.format(a=a.acc)
        if runs.get(run) is None or runs.get(ref) is None:
            pairs.append({"run": run, "reference": ref, "what": what, "missing": True})
            continue
        p, q = runs[run]["pred"], runs[ref]["pred"]
        assert p["id"].tolist() == q["id"].tolist()
        col = [c for c in p.columns if c.startswith("p_")][-1]
        d = np.abs(p[col].to_numpy() - q[col].to_numpy())
        pairs.append({"run": run, "reference": ref, "what": what, "patients": int(len(d)),
                      "max_abs_dp": float(d.max()), "mean_abs_dp": float(d.mean())})  # fmt: skip
    result = {"device": a.device, "runs": rows, "pairs": pairs}
    (a.out / "gpu_ddp.json").write_text(json.dumps(result, indent=1))
    print("| run | rc | processes | epochs (best) | test AUROC | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        auc = r.get("test_auroc")
        print(f"| {r['run']} | {r['rc']} | {r.get('processes')} | {r.get('epochs')} "
              f"({r.get('best_epoch')}) | {auc if auc is None else round(auc, 4)} | "
              f"{r['wall_s']:.1f} |")  # fmt: skip
    print("\n| comparison | max abs dp | mean abs dp |\n|---|---|---|")
    for p in pairs:
        if p.get("missing"):
            print(f"| {p['what']} | missing | |")
        else:
            print(f"| {p['what']} | {p['max_abs_dp']:.2e} | {p['mean_abs_dp']:.2e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
