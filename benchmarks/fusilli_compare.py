"""holomed against fusilli on ROSMAP, in one run: time and peak memory per fit.

fusilli (https://github.com/florencejt/fusilli, 2.0.0) is NOT a holomed dependency. It is
installed for this benchmark only, in a throw-away virtual environment that reuses the
torch / Lightning / pandas of holomed's .venv (no second torch is downloaded):

    /work/main/.venv/bin/python -m venv /tmp/fusvenv
    SP=$(/work/main/.venv/bin/python -c "import site; print(site.getsitepackages()[0])")
    FSP=$(/tmp/fusvenv/bin/python -c "import site; print(site.getsitepackages()[0])")
    echo "$SP" > "$FSP/main_venv.pth"          # holomed's site-packages, read-only reuse
    /tmp/fusvenv/bin/pip install --no-deps fusilli==2.0.0 torch-geometric sentry-sdk xxhash

(fusilli pins torchmetrics~=0.0 / numpy~=1.25; with --no-deps it runs on the .venv's
torchmetrics 1.x and numpy 2.x unpatched. Delete /tmp/fusvenv afterwards.)

    OMP_NUM_THREADS=1 HOLOMED_DATA=/work/shared/data .venv/bin/python \
        benchmarks/fusilli_compare.py --python-fusilli /tmp/fusvenv/bin/python --runs 3

Every fit is a fresh subprocess (one torch thread), so its peak RSS is its own: the
parent reads it from ``os.wait4`` (``ru_maxrss`` of exactly that child). The child
reports the fit's own wall time (holomed ``Model.fit``; fusilli ``train_and_save_models``)
and the test AUROC; the parent times the whole process (interpreter start, imports, data
loading, fit, prediction). The libraries run alternately, configuration by configuration.

Configurations (the same three omics, MOGONET's 245/106 split, 50 epochs, batch 32, Adam
lr 1e-3, no weight decay, no early stopping, one thread; networks sized to fusilli's
defaults, holomed given at least as many weights):

- ``decision``: fusilli ``TabularDecision`` (per-omics MLP 200-32-64-128-256-256, a linear
  head each, logits averaged) vs holomed ``late`` (per-omics ``mlp`` encoder with the same
  widths, linear heads, mean of logits, unimodal auxiliary loss off).
- ``featuremaps``: fusilli ``ConcatTabularFeatureMaps`` (same per-omics MLPs, concatenated,
  then 256-64 with dropout 0.15) vs holomed ``joint`` (same encoders, then 2 x 256, dropout
  0.15).
- ``early``: fusilli ``ConcatTabularData`` (raw 600 features, then 256-64, dropout 0.15) vs
  holomed ``early`` (raw features + presence flags, then 2 x 256, dropout 0.15).

JSON (no patient ids or labels): benchmarks/results/scale/fusilli_rosmap.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OMICS = {"1": "mrna", "2": "methylation", "3": "mirna"}
EPOCHS, BATCH, LR = 50, 32, 1e-3
ENC = {"hidden": [32, 64, 128, 256], "out_dim": 256, "dropout": 0.0}  # fusilli's mod layers

CONFIGS = {
    "decision": {
        "fusilli": "TabularDecision",
        "holomed": "late",
        "holomed_set": {
            "fusion.options": {"head_layers": 0, "combine": "mean"},
            "training.unimodal_loss_weight": 0.0,
            "fusion.dropout": 0.0,
        },
        "encoders": "mlp",
    },
    "featuremaps": {
        "fusilli": "ConcatTabularFeatureMaps",
        "holomed": "joint",
        "holomed_set": {
            "fusion.options": {"layers": 2},
            "fusion.hidden": 256,
            "fusion.dropout": 0.15,
            "training.unimodal_loss_weight": 0.0,
        },
        "encoders": "mlp",
    },
    "early": {
        "fusilli": "ConcatTabularData",
        "holomed": "early",
        "holomed_set": {
            "fusion.options": {"layers": 2},
            "fusion.hidden": 256,
            "fusion.dropout": 0.15,
            "training.unimodal_loss_weight": 0.0,
        },
        "encoders": "identity",
    },
}


def one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_self_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- workers (children)
def worker_holomed(config: str, seed: int) -> dict:
    t0 = time.perf_counter()
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from holomed.cohort import load_cohort, patient_splits
    from holomed.model import Model
    from holomed.spec import load_spec, override_spec

    one_thread()
    t_import = time.perf_counter() - t0
    cfg = CONFIGS[config]
    overrides = {
        "training.max_epochs": EPOCHS,
        "training.batch_size": BATCH,
        "training.lr": LR,
        "training.weight_decay": 0.0,
        "training.l2": 0.0,
        "training.val_fraction": 0.0,  # no validation carve-out, so no early stopping
        "training.patience": 10**6,
        "training.threads": 1,
        "fusion.modality_dropout": 0.0,
        "fusion.name": cfg["holomed"],
        **cfg["holomed_set"],
    }
    for m in OMICS.values():
        enc = {"name": "mlp", "options": ENC} if cfg["encoders"] == "mlp" else {"name": "identity"}
        overrides[f"modalities.{m}.encoder"] = enc
    spec = override_spec(load_spec(ROOT / "examples/rosmap.yaml"), overrides)
    t1 = time.perf_counter()
    cohort = load_cohort(spec)
    ((tr, te),) = patient_splits(cohort, spec.split)
    train, test = cohort.subset(tr), cohort.subset(te)
    t_load = time.perf_counter() - t1
    rss0 = rss_mb()
    t2 = time.perf_counter()
    model = Model(spec, fusion=cfg["holomed"], seed=seed).fit(train)
    t_fit = time.perf_counter() - t2
    t3 = time.perf_counter()
    proba = model.predict_proba(test)
    t_pred = time.perf_counter() - t3
    p1 = proba[:, -1] if proba.ndim == 2 else proba
    return {
        "import_s": t_import,
        "load_s": t_load,
        "fit_s": t_fit,
        "predict_s": t_pred,
        "rss_before_fit_mb": rss0,
        "peak_rss_self_mb": peak_self_mb(),
        "test_auroc": float(roc_auc_score(np.asarray(test.y), p1)),
        "epochs": int(model.history_["epochs"]),
        "n_params": int(sum(p.numel() for p in model.net_.parameters())),
        "n_train": len(train),
        "n_test": len(test),
    }


def worker_fusilli(config: str, seed: int, data_dir: str) -> dict:
    t0 = time.perf_counter()
    import contextlib
    import io

    import fusilli
    import lightning
    from fusilli.data import prepare_fusion_data
    from fusilli.train import train_and_save_models
    from fusilli.utils.model_chooser import import_chosen_fusion_models
    from lightning.pytorch.callbacks import EarlyStopping
    from sklearn.metrics import roc_auc_score

    one_thread()
    t_import = time.perf_counter() - t0
    cfg = CONFIGS[config]
    out = tempfile.mkdtemp(prefix="fusilli_out_")
    output_paths = {k: os.path.join(out, k) for k in ("losses", "checkpoints", "figures")}
    for p in output_paths.values():
        os.makedirs(p)
    data = Path(data_dir)
    meta = json.loads((data / "meta.json").read_text())
    n_train, n_test = meta["n_train"], meta["n_test"]
    test_indices = list(range(n_train, n_train + n_test))  # MOGONET's test rows
    lightning.seed_everything(seed, verbose=False)
    quiet = io.StringIO()  # fusilli prints per-epoch progress; kept out of the parent's pipe
    t1 = time.perf_counter()
    with contextlib.redirect_stdout(quiet):
        (model_cls,) = import_chosen_fusion_models({"class_name": [cfg["fusilli"]]})
        dm = prepare_fusion_data(
            prediction_task="binary",
            fusion_model=model_cls,
            data_paths={
                "tabular1": str(data / "tabular1.csv"),
                "tabular2": str(data / "tabular2.csv"),
                "tabular3": str(data / "tabular3.csv"),
                "image": "",
            },
            output_paths=output_paths,
            batch_size=BATCH,
            max_epochs=EPOCHS,
            test_indices=test_indices,
            # patience beyond the epoch budget: every fit runs all EPOCHS epochs
            own_early_stopping_callback=EarlyStopping(
                monitor="val_loss", patience=10**6, mode="min"
            ),
        )
    t_load = time.perf_counter() - t1
    rss0 = rss_mb()
    t2 = time.perf_counter()
    with contextlib.redirect_stdout(quiet):
        (pl_model,) = train_and_save_models(
            data_module=dm,
            fusion_model=model_cls,
            max_epochs=EPOCHS,
            enable_checkpointing=False,
            show_loss_plot=False,
        )
    t_fit = time.perf_counter() - t2
    reals = pl_model.val_reals.numpy()
    # fusilli's final pass over its validation (= test) rows; val_preds are hard 0/1 labels
    logits = pl_model.val_logits.numpy()
    shutil.rmtree(out, ignore_errors=True)
    return {
        "fusilli_version": fusilli.__version__,
        "import_s": t_import,
        "load_s": t_load,
        "fit_s": t_fit,
        "predict_s": 0.0,  # the final validation pass is inside train_and_save_models
        "rss_before_fit_mb": rss0,
        "peak_rss_self_mb": peak_self_mb(),
        "test_auroc": float(roc_auc_score(reals, logits)),
        "test_auroc_fusilli_reported": float(pl_model.final_val_metrics[0]),
        "epochs": int(pl_model.current_epoch),
        "n_params": int(sum(p.numel() for p in pl_model.model.parameters())),
        "n_train": n_train,
        "n_test": len(reals),
    }


# ---------------------------------------------------------------- parent
def write_fusilli_csvs(src: Path, dst: Path) -> None:
    """fusilli's input format: one CSV per modality with an ``ID`` column, the features and
    ``prediction_label``; train rows first, then MOGONET's test rows. Temporary files."""
    import numpy as np
    import pandas as pd

    y = {p: np.loadtxt(src / f"labels_{p}.csv").astype(int) for p in ("tr", "te")}
    ids = [f"r{i:04d}" for i in range(len(y["tr"]) + len(y["te"]))]  # row numbers only
    for i, k in enumerate(OMICS, start=1):
        x = np.vstack([np.loadtxt(src / f"{k}_{p}.csv", delimiter=",") for p in ("tr", "te")])
        df = pd.DataFrame(x, columns=[f"{OMICS[k]}_{j}" for j in range(x.shape[1])])
        df.insert(0, "ID", ids)
        df["prediction_label"] = np.concatenate([y["tr"], y["te"]])
        df.to_csv(dst / f"tabular{i}.csv", index=False)
    (dst / "meta.json").write_text(json.dumps({"n_train": len(y["tr"]), "n_test": len(y["te"])}))


def run_child(python: str, args: list[str], env: dict) -> dict:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), *args], stdout=out, stderr=err, env=env
        )
        # reap it ourselves: ru_maxrss of exactly this child (KiB on Linux)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, etext = out.read(), err.read()
    line = next((ln for ln in text.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{etext[-4000:]}")
    res = json.loads(line[len("RESULT ") :])
    res["process_s"] = wall
    res["peak_rss_mb"] = usage.ru_maxrss / 1024
    return res


def summarise(runs: list[dict], key: str) -> dict:
    v = [r[key] for r in runs]
    return {"min": min(v), "median": statistics.median(v), "max": max(v)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python-fusilli", help="python of the throw-away fusilli env")
    ap.add_argument("--python-holomed", default=sys.executable)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--data", default=None, help="ROSMAP folder (default $HOLOMED_DATA/rosmap)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/scale/fusilli_rosmap.json"))
    ap.add_argument("--worker", choices=["holomed", "fusilli"], help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:  # child: one fit, one line of JSON
        if a.worker == "holomed":
            res = worker_holomed(a.config, a.seed)
        else:
            res = worker_fusilli(a.config, a.seed, a.data_dir)
        sys.stdout.write("RESULT " + json.dumps(res) + "\n")
        return

    if not a.python_fusilli:
        ap.error("--python-fusilli PATH (the throw-away fusilli environment's python) is required")
    data = Path(a.data or os.path.join(os.environ.get("HOLOMED_DATA", ""), "rosmap"))
    if not (data / "1_tr.csv").exists():
        sys.exit(f"ROSMAP not found at {data}; set HOLOMED_DATA or --data")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HOLOMED_DATA=str(data.parent))
    env["PYTHONWARNINGS"] = "ignore"
    load_start = os.getloadavg()  # the machine is shared: record how busy it was
    tmp = Path(tempfile.mkdtemp(prefix="fusilli_rosmap_"))
    try:
        write_fusilli_csvs(data, tmp)
        results: dict = {}
        for config in a.configs:
            runs: dict[str, list] = {"holomed": [], "fusilli": []}
            for seed in range(a.runs):  # alternate, so drift on a shared machine hits both
                for lib in ("fusilli", "holomed"):
                    py = a.python_fusilli if lib == "fusilli" else a.python_holomed
                    args = ["--worker", lib, "--config", config, "--seed", str(seed)]
                    if lib == "fusilli":
                        args += ["--data-dir", str(tmp)]
                    r = run_child(py, args, env)
                    runs[lib].append(r)
                    print(
                        f"{config:12s} {lib:8s} seed {seed}: fit {r['fit_s']:6.2f} s, "
                        f"process {r['process_s']:6.2f} s, peak {r['peak_rss_mb']:6.0f} MB, "
                        f"AUROC {r['test_auroc']:.3f}, epochs {r['epochs']}",
                        flush=True,
                    )
            summary = {
                lib: {
                    k: summarise(rs, k)
                    for k in ("fit_s", "process_s", "peak_rss_mb", "test_auroc", "import_s")
                }
                for lib, rs in runs.items()
            }
            ratio = {
                k: summary["fusilli"][k]["median"] / summary["holomed"][k]["median"]
                for k in ("fit_s", "process_s", "peak_rss_mb")
            }
            ratio.update(
                {
                    f"{k}_min": summary["fusilli"][k]["min"] / summary["holomed"][k]["min"]
                    for k in ("fit_s", "process_s", "peak_rss_mb")
                }
            )
            results[config] = {
                "fusilli_model": CONFIGS[config]["fusilli"],
                "holomed_fusion": CONFIGS[config]["holomed"],
                "runs": runs,
                "summary": summary,
                "ratio_fusilli_over_holomed": ratio,
            }
        doc = {
            "benchmark": "holomed vs fusilli, ROSMAP (MOGONET split), per-fit time and peak RSS",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "lr": LR,
            "runs_per_config": a.runs,
            "threads": 1,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg_1_5_15_start": [round(x, 2) for x in load_start],
                "loadavg_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
            },
            "configs": {
                k: {kk: vv for kk, vv in v.items() if kk != "holomed_set"}
                | {"holomed_overrides": v["holomed_set"]}
                for k, v in CONFIGS.items()
                if k in a.configs
            },
            "results": results,
        }
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
        print()
        print("config       library  fit s min/med   process s med  peak MB min/med  AUROC med")
        for config, r in results.items():
            for lib in ("holomed", "fusilli"):
                s = r["summary"][lib]
                print(
                    f"{config:12s} {lib:8s} {s['fit_s']['min']:6.2f}/{s['fit_s']['median']:6.2f}"
                    f"   {s['process_s']['median']:8.2f}     "
                    f"{s['peak_rss_mb']['min']:6.0f}/{s['peak_rss_mb']['median']:6.0f}"
                    f"    {s['test_auroc']['median']:.3f}"
                )
            q = r["ratio_fusilli_over_holomed"]
            print(
                f"{config:12s} fusilli/holomed (medians): fit {q['fit_s']:.2f}x, "
                f"process {q['process_s']:.2f}x, peak RSS {q['peak_rss_mb']:.2f}x"
            )
        print(f"\nwrote {a.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
