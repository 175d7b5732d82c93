"""Distributed training, proven rather than assumed: DDP with 2 processes on CPU (gloo)
predicts as one process does, with the same seed and the same rows per step
(``training.batch_size`` is the batch of a step across the processes; each takes half),
on lazily read images and with patients missing a modality. The cohort is built so that a
process's share of a batch is sometimes short, sometimes empty and sometimes without any
image (whose encoder then takes no part in that process's loss).

Two ways in, both compared with one process:

- ``training.devices: 2, strategy: ddp`` from Python (what ``holomed fit --set ...`` does on
  one machine): the fit runs in 2 spawned workers and the best weights come back;
- ``torchrun --nproc_per_node=2`` running ``examples/scale/fit_distributed.py`` (the path
  of several machines, here on one): every process trains, rank 0 alone writes.

Tolerance: max |Δp| <= 1e-4 (the target). Measured: 1.2e-7 both ways (gloo adds two
half-batch gradients where one process sums the whole batch: float rounding, nothing else).

Launching on several machines cannot run here; it is checked dry: the example's torchrun
command parses with torchrun's own parser and matches the spec, and with SLURM's or
torchrun's variables set, the Trainer holomed builds reports the expected world size and
ranks, without starting a process or opening a connection.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image as PILImage

from holomed.cohort import load_cohort, patient_splits
from holomed.modalities.base import LazyRows
from holomed.model import Model
from holomed.spec import load_spec, override_spec

ROOT = Path(__file__).resolve().parents[2]
SCALE = ROOT / "examples" / "scale"
TOL = 1e-4  # max |Δp| between 1 and 2 processes
N = 45
BATCH = 4  # rows per step in all: 2 per process


def write_cohort(root: Path) -> Path:
    """SYNTHETIC: PNG sets (1-2 per patient, a bright square when y = 1) for ~60 % of the
    patients, a 3-column lab table for the others and most of the rest; files + spec."""
    rng = np.random.default_rng(7)
    images, labs, labels = [], [], []
    for i in range(N):
        pid, y = f"P{i:02d}", int(i % 3 == 0)
        has_image = i % 2 == 0 or i % 5 == 1
        if has_image:
            for k in range(1 + i % 4 // 3):
                a = rng.integers(0, 90, (20, 20)).astype(np.uint8)
                if y:
                    a[5:11, 5:11] = 200
                PILImage.fromarray(a).save(root / f"{pid}_{k}.png")
                images.append((pid, f"{pid}_{k}.png"))
        if not has_image or i % 6 != 0:
            labs.append((pid, rng.normal(y, 1.0), rng.normal(), rng.normal()))
        labels.append((pid, y, "test" if i % 4 == 1 else "train"))
    pd.DataFrame(images, columns=["pid", "file"]).to_csv(root / "images.csv", index=False)
    pd.DataFrame(labs, columns=["pid", "a", "b", "c"]).to_csv(root / "labs.csv", index=False)
    pd.DataFrame(labels, columns=["pid", "y", "split"]).to_csv(root / "labels.csv", index=False)
    mlp = {"hidden": 8, "out_dim": 8, "dropout": 0.0, "input_dropout": 0.0}
    spec = {
        "dataset": "ddp-check",
        "description": "SYNTHETIC images + labs, patients missing either (not clinical data)",
        "modalities": [
            {
                "name": "xray",
                "kind": "image",
                "source": "images.csv",
                "id_column": "pid",
                "options": {"path_column": "file"},
                # lazy_mb 0: rows are read from the disk cache batch by batch (LazyImages)
                "preprocessing": {"size": [16, 16], "max_images": 2, "lazy_mb": 0,
                                  "cache_dir": str(root / "cache")},
                "encoder": {"name": "cnn2d", "options": {"hidden": 8, "channels": [4, 8]}},
            },
            {"name": "labs", "kind": "tabular", "source": "labs.csv", "id_column": "pid",
             "encoder": {"name": "mlp", "options": mlp}},
        ],
        "target": {"source": "labels.csv", "id_column": "pid", "column": "y", "task": "binary"},
        "split": {"method": "predefined", "column": "split"},
        # no dropout of any kind: its draws differ per process (see holomed.training)
        "fusion": {"name": "joint", "hidden": 8, "dropout": 0.0, "modality_dropout": 0.0},
        "training": {"max_epochs": 6, "batch_size": BATCH, "lr": 0.01, "val_fraction": 0.25,
                     "patience": 3, "seed": 0, "threads": 1, "accelerator": "cpu"},
    }  # fmt: skip
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(spec path, spec, cohort, training rows, one-process model, its P(y = 1))."""
    root = tmp_path_factory.mktemp("ddp_cohort")
    path = write_cohort(root)
    spec = load_spec(path)
    cohort = load_cohort(spec)
    train_idx, _ = patient_splits(cohort, spec.split)[0]
    one = Model(spec).fit(cohort.subset(train_idx))
    return path, spec, cohort, train_idx, one, one.predict_proba(cohort)[:, 1]


def test_the_cohort_exercises_what_ddp_can_get_wrong(study):
    _, _, cohort, train_idx, one, _ = study
    present = {k: v.present for k, v in cohort.modalities.items()}
    assert 0 < present["xray"].sum() < len(cohort) and 0 < present["labs"].sum() < len(cohort)
    x, _ = one.transform(cohort)
    assert isinstance(x["xray"], LazyRows)  # images read from the cache, batch by batch
    fit_rows = len(train_idx) - len(one.val_ids_)  # validation carved out
    assert fit_rows % BATCH == 1, "the last batch is one row: process 1's share is empty"
    assert one.history_["processes"] == 1 and one.history_["best_epoch"] >= 0


def test_two_spawned_processes_predict_as_one(study):
    _, spec, cohort, train_idx, one, p1 = study
    two = override_spec(spec, {"training.devices": 2, "training.strategy": "ddp"})
    before = dict(os.environ)
    m2 = Model(two).fit(cohort.subset(train_idx))
    assert m2.history_["processes"] == 2  # really trained by two processes
    assert m2.history_["epochs"] == one.history_["epochs"]
    assert m2.history_["best_epoch"] == one.history_["best_epoch"]
    p2 = m2.predict_proba(cohort)[:, 1]  # here, once, on every patient
    delta = float(np.abs(p2 - p1).max())
    print(f"spawn: max |dp| = {delta:.2e} over {len(p1)} patients")
    assert delta <= TOL
    # the launch leaves no variable behind that would make the next fit look launched
    for key in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK"):
        assert os.environ.get(key) == before.get(key)


def test_two_processes_reading_the_on_disk_store_predict_as_one(study, tmp_path):
    """DDP with ``training.store``: the spawned workers read their batches from the
    memory-mapped store (the rows travel to them as a path, not as arrays)."""
    _, spec, cohort, train_idx, _, p1 = study
    two = override_spec(
        spec,
        {"training.devices": 2, "training.strategy": "ddp", "training.store": str(tmp_path)},
    )
    m2 = Model(two).fit(cohort.subset(train_idx))
    assert m2.history_["processes"] == 2
    assert any(tmp_path.rglob("*.npy")), "the store was written"
    delta = float(np.abs(m2.predict_proba(cohort)[:, 1] - p1).max())
    print(f"spawn + store: max |dp| = {delta:.2e} over {len(p1)} patients")
    assert delta <= TOL


def test_torchrun_two_processes_predict_as_one_and_write_once(study, tmp_path):
    path, _, cohort, _, _, p1 = study
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(SCALE / "fit_distributed.py"), str(path), "--out", str(out),
        "--set", "training.devices=2", "--set", "training.strategy=ddp",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOLOMED_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "rank 1: trained; rank 0 writes" in r.stdout
    assert r.stdout.count("wrote") == 1  # rank 0 only
    results = yaml.safe_load((out / "results.json").read_text())
    assert results["history"]["processes"] == 2
    pred = pd.read_csv(out / "predictions.csv")
    assert pred["id"].tolist() == cohort.ids.tolist()  # every patient, not a shard
    delta = float(np.abs(pred["p_1"].to_numpy() - p1).max())
    print(f"torchrun: max |dp| = {delta:.2e} over {len(p1)} patients")
    assert delta <= TOL
    from holomed.candidates import load

    saved = load(out / "bundle").predict_proba(cohort)[:, 1]
    np.testing.assert_allclose(saved, pred["p_1"].to_numpy(), atol=1e-6)


def test_holomed_fit_under_torchrun_trains_on_every_rank_and_writes_once(study, tmp_path):
    """``holomed fit`` started by torchrun: both processes train in step, rank 0 alone
    takes the run folder's lock and writes the bundle, which predicts as one process."""
    path, _, cohort, _, _, p1 = study
    out = tmp_path / "fit"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "holomed.cli", "fit", str(path), "--out", str(out),
        "--set", "training.devices=2", "--set", "training.strategy=ddp",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOLOMED_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "rank 1: trained; rank 0 writes" in r.stdout
    assert not (out / ".holomed.lock").exists() and (out / "results.json").is_file()
    results = yaml.safe_load((out / "results.json").read_text())
    assert results["history"]["processes"] == 2
    from holomed.candidates import load

    p2 = load(out / "bundle").predict_proba(cohort)[:, 1]
    delta = float(np.abs(p2 - p1).max())
    print(f"holomed fit under torchrun: max |dp| = {delta:.2e} over {len(p1)} patients")
    assert delta <= TOL


# -- launching on several machines, dry ---------------------------------------------------

LAUNCH_VARS = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_PROCID",
    "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NNODES", "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NAME",
    "SLURM_JOB_ID", "SLURM_NODELIST", "SLURM_CPUS_PER_TASK",
)  # fmt: skip


@pytest.fixture
def clean_launch(monkeypatch):
    """No launcher variable from the environment the tests run in; Lightning's global
    rank-zero flag (set when a Trainer reads ranks) restored afterwards."""
    import lightning_utilities.core.rank_zero as lu
    from lightning.fabric.utilities import rank_zero as fabric_rz
    from lightning.pytorch.utilities import rank_zero as pl_rz

    for key in LAUNCH_VARS:
        monkeypatch.delenv(key, raising=False)
    for mod in (lu, fabric_rz, pl_rz):
        monkeypatch.setattr(mod.rank_zero_only, "rank", getattr(mod.rank_zero_only, "rank", 0))
    return monkeypatch


def example_spec():
    return load_spec(SCALE / "ddp.yaml")


def sbatch_options(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH\s+--([\w-]+)=(\S+)", text, flags=re.M))


def test_the_torchrun_example_parses_and_matches_the_spec():
    from torch.distributed.run import get_args_parser

    text = (SCALE / "torchrun.sh").read_text().replace("$HOST", "node0").replace("$OUT", "o")
    lines = [ln for ln in text.splitlines() if ln.lstrip("# ").startswith("torchrun ")]
    assert len(lines) == 2  # two machines; one machine (commented)
    spec = example_spec()
    for line in lines:
        argv = shlex.split(line.lstrip("# "))[1:]
        a = get_args_parser().parse_args(argv)
        assert int(a.nproc_per_node) == spec.training.devices
        assert (ROOT / a.training_script).resolve() == (SCALE / "fit_distributed.py").resolve()
        script_args = a.training_script_args
        assert load_spec(ROOT / script_args[0]).dataset == spec.dataset
        overrides = dict(v.split("=") for v in script_args[script_args.index("--out") + 2 :][1::2])
        nodes = int(overrides.get("training.num_nodes", spec.training.num_nodes))
        if a.standalone:
            assert nodes == 1 and a.nnodes == "1:1"
        else:
            assert int(a.nnodes) == nodes == 2 and a.rdzv_endpoint == "node0:29500"
            assert a.rdzv_backend == "c10d"


def test_a_slurm_task_reads_its_ranks_from_srun(clean_launch):
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    from holomed.training import global_rank, make_trainer

    spec = example_spec()
    text = (SCALE / "slurm.sbatch").read_text()
    opts = sbatch_options(text)
    nodes, per_node = int(opts["nodes"]), int(opts["ntasks-per-node"])
    assert (nodes, per_node) == (spec.training.num_nodes, spec.training.devices)
    assert re.search(r"^srun python examples/scale/fit_distributed\.py examples/scale/ddp\.yaml",
                     text, flags=re.M)  # fmt: skip
    # what srun sets for the 2nd task of the 2nd node
    for key, value in {
        "SLURM_NTASKS": nodes * per_node, "SLURM_NTASKS_PER_NODE": per_node,
        "SLURM_NNODES": nodes, "SLURM_PROCID": 3, "SLURM_LOCALID": 1, "SLURM_NODEID": 1,
        "SLURM_JOB_NAME": opts["job-name"], "SLURM_JOB_ID": 4242,
        "SLURM_NODELIST": "node[07-08]",
    }.items():  # fmt: skip
        clean_launch.setenv(key, str(value))
    trainer = make_trainer(spec.training)
    env = trainer.strategy.cluster_environment
    assert isinstance(env, SLURMEnvironment) and env.creates_processes_externally
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy._start_method == "popen"  # no children: srun started every task
    assert (trainer.world_size, trainer.global_rank) == (4, 3)
    assert (trainer.node_rank, trainer.local_rank) == (1, 1)
    env.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)
    assert env.main_address == "node07" and env.main_port == 15000 + 4242
    assert global_rank() == 3
    # --ntasks-per-node not matching training.devices is refused by name
    clean_launch.setenv("SLURM_NTASKS_PER_NODE", "3")
    with pytest.raises(ValueError, match="ntasks-per-node"):
        env.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)


def test_a_torchrun_process_reads_its_ranks_from_torchelastic(clean_launch):
    from lightning.fabric.plugins.environments import TorchElasticEnvironment
    from lightning.pytorch.strategies import DDPStrategy

    from holomed.training import global_rank, make_trainer

    spec = example_spec()
    for key, value in {
        "RANK": 2, "WORLD_SIZE": 4, "LOCAL_RANK": 0, "LOCAL_WORLD_SIZE": 2, "GROUP_RANK": 1,
        "MASTER_ADDR": "node0", "MASTER_PORT": 29500, "TORCHELASTIC_RUN_ID": "holomed-ddp",
    }.items():  # fmt: skip
        clean_launch.setenv(key, str(value))
    trainer = make_trainer(spec.training)
    env = trainer.strategy.cluster_environment
    assert isinstance(env, TorchElasticEnvironment) and env.creates_processes_externally
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.strategy._start_method == "popen"
    assert (trainer.world_size, trainer.global_rank, trainer.node_rank) == (4, 2, 1)
    assert (env.main_address, env.main_port) == ("node0", 29500)
    env.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)
    assert global_rank() == 2
    clean_launch.setenv("WORLD_SIZE", "6")  # 3 processes per machine started, 2 in the spec
    with pytest.raises(ValueError):
        env.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)
    # a spec of one process under a two-process launch: Lightning would let each process
    # train the whole model alone; holomed refuses it by name
    clean_launch.setenv("WORLD_SIZE", "2")
    one = override_spec(spec, {"training.num_nodes": 1, "training.devices": 1})
    with pytest.raises(ValueError, match=r"launched as 2 processes.*1 x 1"):
        make_trainer(one.training)


def test_without_a_launcher_one_machine_spawns_and_several_are_refused(clean_launch):
    from holomed.training import global_rank, make_trainer

    spec = example_spec()
    one_machine = override_spec(spec, {"training.num_nodes": 1})
    trainer = make_trainer(one_machine.training)
    # the fit alone runs in the workers; this process predicts and writes once
    assert trainer.strategy._start_method == "spawn" and trainer.world_size == 2
    single = override_spec(spec, {"training.num_nodes": 1, "training.devices": 1})
    assert type(make_trainer(single.training).strategy).__name__ == "SingleDeviceStrategy"
    with pytest.raises(ValueError, match="torchrun or SLURM"):
        make_trainer(spec.training)  # 2 machines and nothing that starts their processes
    assert global_rank() == 0


def test_the_collective_backend_can_be_gloo_on_gpus(clean_launch):
    """``training.process_group_backend: gloo`` reaches Lightning's DDP strategy (two
    processes sharing one GPU need it: NCCL refuses two ranks on one device); any other
    name is refused by the spec, naming the field."""
    from holomed.spec import SpecError
    from holomed.training import make_trainer

    for key, value in {
        "RANK": 1, "WORLD_SIZE": 2, "LOCAL_RANK": 0, "LOCAL_WORLD_SIZE": 1, "GROUP_RANK": 1,
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": 29411, "TORCHELASTIC_RUN_ID": "gloo",
    }.items():  # fmt: skip
        clean_launch.setenv(key, str(value))
    two_nodes = {"training.num_nodes": 2, "training.devices": 1}
    spec = override_spec(example_spec(), {**two_nodes, "training.process_group_backend": "gloo"})
    trainer = make_trainer(spec.training)
    assert trainer.strategy._process_group_backend == "gloo"
    assert (trainer.world_size, trainer.global_rank, trainer.node_rank) == (2, 1, 1)
    default = make_trainer(override_spec(example_spec(), two_nodes).training)
    assert default.strategy._process_group_backend is None  # Lightning decides at set-up
    with pytest.raises(SpecError, match="process_group_backend"):
        override_spec(example_spec(), {"training.process_group_backend": "mpi"})
