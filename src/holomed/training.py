"""Training with PyTorch Lightning: devices, strategy (DDP ...), precision and nodes
are settings of ``TrainingSpec`` passed to ``lightning.Trainer``; nothing here is a
home-made loop. Early stopping on validation loss restores the best weights.

Several processes (DDP) train the same model as one process would, up to float rounding
(``tests/scale/test_ddp.py``):

- ``training.batch_size`` is the batch of one optimisation step, whatever the number of
  processes W: every process draws the same seeded permutation and keeps rows r, r + W,
  ... of each batch (:class:`GlobalBatches`), so the union of the processes' k-th batches
  is the k-th batch of a one-process run. No padding (Lightning's ``DistributedSampler``
  repeats patients to make the cohort divisible by W) and nothing dropped.
- each process's loss is its rows' sum over the batch's row count times W, so DDP's
  gradient average is the one-process batch mean even when shares differ (the last batch,
  per-modality auxiliary losses over the rows that have the modality); the counts come
  from one small all-reduce per step. Exact for per-row losses (binary, multiclass without
  class weights, multilabel, regression, discrete survival); the Cox partial likelihood
  is computed within each process's share (its risk sets are per process) and a
  class-weighted multiclass mean uses per-process weight sums: close, not equal.
- the validation loss is the sum over all processes' rows over their count.
- holomed's encoders use LayerNorm / GroupNorm, never BatchNorm, so no statistic depends
  on how a batch is split; dropout draws differ per process (each rank is seeded apart),
  so with dropout the runs agree in distribution, not number for number.

How the processes start (:func:`make_trainer`): on one machine, ``strategy: ddp`` (or
``auto`` with several devices) starts W worker processes for the fit only ("spawn"); the
calling process gets the best weights back and predicts, evaluates and writes once.
Under torchrun or SLURM's srun (processes started outside, one per device on every
machine) every process runs the caller's program and trains in step; the weights are the
same everywhere after the fit, and writing is the caller's job on global rank 0
(:func:`global_rank`, ``examples/scale/fit_distributed.py``)."""

from __future__ import annotations

import copy
import logging
import math
import os
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, Dataset, Sampler

from holomed.modalities.base import LazyRows, rows_mask
from holomed.network import MultimodalNet
from holomed.spec import TrainingSpec
from holomed.tasks import Task

for _name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*number of training batches.*")
warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
warnings.filterwarnings("ignore", message=".*validation_step.*but have no .val_dataloader.*")
# frozen extractors (EfficientNet, sentence models) stay in eval mode on purpose
warnings.filterwarnings("ignore", message=".*module.*in eval mode at the start of training.*")
# val_loss is logged once per epoch already summed over every process (on_validation_epoch_end)
warnings.filterwarnings("ignore", message=".*use `self.log\\('val_loss', ..., sync_dist=True\\)`.*")


class CohortTensors(Dataset):
    """Preprocessed arrays as tensors: ``x[m]`` (n, p) with absent rows zeroed,
    ``present[m]`` (n,) bool, ``y`` (n,). Supports batched fetching (``__getitems__``),
    so a batch is one slicing op; works with Lightning's distributed samplers."""

    def __init__(
        self, x: dict[str, np.ndarray], present: dict[str, np.ndarray], y: np.ndarray | None
    ) -> None:
        # lazy arrays (image sets read from the disk cache) stay lazy: rows per batch
        self.lazy = {k: v for k, v in x.items() if isinstance(v, LazyRows)}
        self.x = {
            k: torch.as_tensor(np.where(rows_mask(present[k], v.ndim), v, 0.0), dtype=torch.float32)
            for k, v in x.items()
            if k not in self.lazy
        }
        self.present = {k: torch.as_tensor(v, dtype=torch.bool) for k, v in present.items()}
        n = len(next(iter(present.values())))
        self.y = torch.as_tensor(y if y is not None else np.zeros(n))

    def __len__(self) -> int:
        return len(self.y)

    def __getitems__(self, idx: list[int]) -> dict[str, Any]:
        i = torch.as_tensor(idx, dtype=torch.long)
        x = {k: v[i] for k, v in self.x.items()}
        for k, v in self.lazy.items():
            rows = v.rows(np.asarray(idx))
            keep = rows_mask(self.present[k][i].numpy(), rows.ndim)
            x[k] = torch.as_tensor(np.where(keep, rows, 0.0), dtype=torch.float32)
        return {
            "x": {k: x[k] for k in self.present},
            "present": {k: v[i] for k, v in self.present.items()},
            "y": self.y[i],
        }

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])


def _identity(batch: Any) -> Any:
    return batch


def _dist() -> tuple[int, int]:
    """(global rank, world size) of the initialised process group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def global_rank() -> int:
    """This process's global rank: from the process group once training started it, else
    from the launcher's environment (torchrun's ``RANK``, SLURM's ``SLURM_PROCID``); 0 in
    a single process. Write results only where it is 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    for key in ("RANK", "SLURM_PROCID"):
        v = os.environ.get(key, "").strip()
        if v.isdigit():
            return int(v)
    return 0


class GlobalBatches(Sampler[list[int]]):
    """Batches of ``batch_size`` rows per optimisation step, split across processes.

    Each epoch draws one permutation of the ``n`` rows (or keeps their order) and cuts it
    into batches; process r of W keeps rows r, r + W, ... of every batch (``distributed``:
    r and W are read at iteration time from the process group, which the DDP strategy has
    set up by then in every process; otherwise the process takes every row). Every
    process has ``ceil(n / batch_size)`` batches, a share may be short or empty, and no
    row is repeated or dropped. The generator (shared with the ``DataLoader``) is drawn
    from as torch's ``RandomSampler`` + ``BatchSampler`` draw from it, its permutation for
    an empty remainder included, so a one-process run shuffles exactly as a plain shuffled
    loader did."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator,
        distributed: bool = False,
    ) -> None:
        self.n, self.batch_size, self.shuffle, self.generator = n, batch_size, shuffle, generator
        self.distributed = distributed

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = _dist() if self.distributed else (0, 1)
        n, b, g = self.n, self.batch_size, self.generator
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for s in range(0, n, b):
            if self.shuffle and n % b and s + b >= n:
                torch.randperm(n, generator=g)  # RandomSampler's remainder, before a short batch
            yield order[s : s + b][rank::world].tolist()
        if self.shuffle and not n % b:
            torch.randperm(n, generator=g)  # ... or when asked past the last full batch


class _Generator(torch.Generator):
    """A CPU generator that pickles as its state (bytes): spawned DDP workers receive the
    loaders pickled, and torch's own reduction of a generator (its state shared through a
    file descriptor) does not rebuild in a spawned process."""

    def __reduce__(self):
        return (_generator, (bytes(self.get_state().numpy()),))


def _generator(state: bytes) -> _Generator:
    g = _Generator()
    g.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return g


def loader(
    ds: CohortTensors, batch_size: int, shuffle: bool, seed: int, distributed: bool = False
) -> DataLoader:
    """Batches of ``batch_size`` rows per step, split across the processes of a DDP run
    when ``distributed`` (:class:`GlobalBatches`); Lightning must not replace the sampler
    (``use_distributed_sampler=False``)."""
    g = _Generator()
    g.manual_seed(seed)
    return DataLoader(
        ds,
        batch_sampler=GlobalBatches(len(ds), batch_size, shuffle, g, distributed),
        collate_fn=_identity,
        generator=g,
    )


def modality_dropout(
    present: dict[str, torch.Tensor], p: float, gen: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Drop each present modality with probability ``p`` per patient; a patient who
    would lose all keeps its original modalities."""
    if p <= 0:
        return present
    names = list(present)
    pres = torch.stack([present[n] for n in names], 1)
    drop = torch.rand(pres.shape, generator=gen) < p
    new = pres & ~drop.to(pres.device)
    lost = new.sum(1) == 0
    new[lost] = pres[lost]
    return {n: new[:, i] for i, n in enumerate(names)}


class LitMultimodal(L.LightningModule):
    def __init__(
        self,
        net: MultimodalNet,
        task: Task,
        lr: float,
        weight_decay: float,
        modality_dropout: float = 0.0,
        unimodal_weight: float = 0.5,
        l2: float = 0.0,
        l1: float = 0.0,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.net, self.task = net, task
        self.lr, self.weight_decay = lr, weight_decay
        self.p_drop, self.unimodal_weight = modality_dropout, unimodal_weight
        self.l2 = l2
        # coupled L2 on weight matrices (not biases / norms), as in penalised regression
        self._l2_params = [p for n, p in net.named_parameters() if p.dim() >= 2]
        # L1 on the weights that read input features: sparse feature use, as the lasso
        self.l1, self._l1_params = l1, net.input_weights() if l1 > 0 else []
        self.seed, self.threads = seed, threads
        # epochs run, best epoch, processes, best validation loss (its float32 bits; -1:
        # none), written by BestWeights at the end of the fit. A buffer, so it comes back
        # from spawned workers with the weights (Lightning returns the module's state dict
        # to the calling process); integers, so no precision setting or device (MPS has no
        # float64) changes it
        self.register_buffer("fit_record", torch.tensor([0, -1, 1, -1], dtype=torch.int64))
        self._val_sum = self._val_n = None

    def forward(self, x, present):
        return self.net(x, present)

    @property
    def _world(self) -> int:
        return int(self.trainer.world_size) if self._trainer is not None else 1

    def setup(self, stage: str) -> None:
        # inside each training process (after a spawn, too): Lightning sets cores / W
        # threads from os.cpu_count(), which ignores cgroup limits; keep holomed's bound
        if self._world > 1:
            if self.threads:
                torch.set_num_threads(self.threads)
            # dropout and modality dropout draw per process: seed each rank apart, or the
            # processes would drop the same positions of their shares
            rank = int(self.trainer.global_rank)
            torch.manual_seed(int(np.random.SeedSequence([self.seed, rank]).generate_state(1)[0]))

    def _totals(self, local: list[float]) -> list[float]:
        """Sums over the processes of per-process counts (one all-reduce); ``local`` as
        it is in one process."""
        if self._world == 1:
            return local
        t = torch.tensor(local, dtype=torch.float64, device=self.device)
        return self.trainer.strategy.reduce(t, reduce_op="sum").tolist()

    def _loss(self, batch, train: bool) -> torch.Tensor:
        present = batch["present"]
        if train:
            present = modality_dropout(present, self.p_drop)
        logits = self.net(batch["x"], present)
        n = len(batch["y"])
        if not train:
            return self.task.loss(logits, batch["y"], weighted=True) if n else logits.sum() * 0.0
        fusion = self.net.fusion
        uni_names = list(fusion.unimodal_logits or {}) if self.unimodal_weight > 0 else []
        rows = {m: fusion.unimodal_present[m] for m in uni_names}
        # rows of the whole step's batch (every process), then this process's share of each
        # mean, scaled by W: DDP averages gradients over W processes, so the sum of shares
        # x W / W is the one-process mean; in one process every factor is exactly 1.0
        local = [float(n)] + [float(r.sum()) for r in rows.values()]
        total = self._totals(local)
        share = [self._world * k / t if t else 0.0 for k, t in zip(local, total, strict=True)]
        if n:
            loss = self.task.loss(logits, batch["y"], weighted=True) * share[0]
        else:  # an empty share still takes part in the step (DDP's gradient all-reduce)
            loss = logits.sum() * 0.0
        extras = [a * share[0] for a in self.net.aux_losses]
        if fusion.aux_loss is not None:
            extras.append(fusion.aux_loss * share[0])
        if uni_names:
            uni = []
            for i, name in enumerate(uni_names):
                if total[i + 1] == 0:  # no row of the step's batch has this modality
                    continue
                lg, r = fusion.unimodal_logits[name], rows[name]
                if r.any():
                    uni.append(self.task.loss(lg[r], batch["y"][r], weighted=True) * share[i + 1])
                else:  # present elsewhere in the batch: a zero with a gradient path
                    uni.append(lg.sum() * 0.0)
            if uni:
                extras.append(self.unimodal_weight * torch.stack(uni).mean())
        # penalties are the same in every process; DDP's average leaves them as they are
        if self.l2 > 0:
            extras.append(self.l2 * sum((p**2).sum() for p in self._l2_params))
        if self.l1 > 0 and self._l1_params:
            extras.append(self.l1 * sum(p.abs().sum() for p in self._l1_params))
        if extras:
            loss = loss + torch.stack(extras).sum()
        return loss

    def training_step(self, batch, _):
        loss = self._loss(batch, True)
        self.log("train_loss", loss, prog_bar=False, batch_size=max(1, len(batch["y"])))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros((), device=self.device)
        self._val_n = torch.zeros((), device=self.device)

    def validation_step(self, batch, _):
        n = len(batch["y"])
        loss = self._loss(batch, False).detach().float()
        self._val_sum = self._val_sum + loss * n
        self._val_n = self._val_n + n

    def on_validation_epoch_end(self) -> None:
        # the mean over every validation patient, whichever process holds it (no padding)
        s, n = self._val_sum, self._val_n
        if self._world > 1:
            s, n = self.trainer.strategy.reduce(torch.stack([s, n]), reduce_op="sum")
        if float(n) > 0:
            self.log("val_loss", s / n, prog_bar=False)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class BestWeights(L.Callback):
    """Keeps the weights of the epoch with the lowest validation loss in memory, and puts
    them back into the network at the end of the fit (in the process that trained: a
    spawned worker returns them to the caller with the module's state)."""

    def __init__(self) -> None:
        self.best, self.state, self.epoch = float("inf"), None, -1

    def on_validation_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        v = trainer.callback_metrics.get("val_loss")
        if v is not None and float(v) < self.best:
            self.best, self.epoch = float(v), trainer.current_epoch
            self.state = copy.deepcopy(module.net.state_dict())

    def on_fit_end(self, trainer, module) -> None:
        if self.state is not None:
            module.net.load_state_dict(self.state)
        bits = -1
        if self.state is not None:  # val_loss is a float32: its bits hold it exactly
            bits = int(torch.tensor([self.best], dtype=torch.float32).view(torch.int32).item())
        record = [trainer.current_epoch, self.epoch, trainer.world_size, bits]
        module.fit_record.copy_(torch.tensor(record, dtype=torch.int64))


def _ddp_strategy(
    probe: L.Trainer, cfg: TrainingSpec, find_unused: bool
) -> DDPStrategy | str | None:
    """The DDP strategy holomed uses in place of ``ddp`` / ``ddp_spawn`` / ``auto`` (when
    Lightning resolves it to DDP); None to keep the spec's strategy as it is.

    - processes started outside (torchrun, srun; Lightning's cluster environment says
      so): ``popen`` without children, every process runs the caller's program;
    - one machine, W > 1 processes: ``spawn``, so only the fit runs in the workers.
      Lightning's ``ddp`` would start the caller's command again (``sys.argv``) in W - 1
      children, and each would load, predict and write its outputs once more;
    - ``find_unused_parameters`` (``find_unused``): with missing modalities or modality
      dropout a process's share of a batch can lack a modality, and that encoder then
      takes no part in its loss; DDP must know, or it waits for gradients that never
      come. torch then warns once per process if the first step used every parameter.
    DDP over one process (``devices: 1``) is one process: ``auto``. Any other strategy
    name (``ddp_fork``, ``fsdp``, ``deepspeed`` ...) is the user's choice, passed to
    Lightning unchanged."""
    if cfg.strategy not in ("auto", "ddp", "ddp_spawn"):
        return None
    st = probe.strategy
    if not isinstance(st, DDPStrategy):
        return None
    if st.launcher is not None and st.launcher.is_interactive_compatible:
        return None  # a notebook: Lightning forks (ddp_fork); leave it so
    env = st.cluster_environment
    external = env is not None and env.creates_processes_externally
    if probe.num_nodes > 1 and not external:
        raise ValueError(
            f"training.num_nodes={probe.num_nodes}: several machines need a launcher that starts "
            "one process per device on each of them (torchrun or SLURM's srun); see "
            "examples/scale/README.md"
        )
    if probe.num_nodes * probe.num_devices == 1 and not external:
        return "auto"  # DDP over one process is one process (no process group to set up)
    return DDPStrategy(start_method="popen" if external else "spawn",
                       find_unused_parameters=find_unused,
                       process_group_backend=cfg.process_group_backend)  # fmt: skip


def make_trainer(
    cfg: TrainingSpec, callbacks: list[L.Callback] | None = None, find_unused: bool = True
) -> L.Trainer:
    """The ``lightning.Trainer`` of ``cfg`` (devices, strategy, nodes, precision) with
    holomed's DDP choices (:func:`_ddp_strategy`). Building it starts no process and
    opens no connection, so a launch can be checked dry: ``trainer.world_size``,
    ``global_rank``, ``node_rank``, ``strategy.cluster_environment``."""
    _launched_as_configured(cfg)
    hw = {
        "accelerator": cfg.accelerator,
        "devices": cfg.devices,
        "num_nodes": cfg.num_nodes,
        "precision": cfg.precision,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    ddp = None
    one = cfg.devices == 1 and cfg.num_nodes == 1  # Lightning's "auto": one device, no DDP
    if cfg.strategy in ("ddp", "ddp_spawn") or (cfg.strategy == "auto" and not one):
        probe = L.Trainer(strategy=cfg.strategy, **hw)  # how Lightning resolves the settings
        ddp = _ddp_strategy(probe, cfg, find_unused)
    return L.Trainer(
        max_epochs=cfg.max_epochs,
        strategy=ddp if ddp is not None else cfg.strategy,
        callbacks=callbacks or [],
        num_sanity_val_steps=0,
        deterministic=True,
        # GlobalBatches splits each batch across processes itself (no padding)
        use_distributed_sampler=False,
        **hw,
    )


_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def _launched_as_configured(cfg: TrainingSpec) -> None:
    """Started by a launcher (torchrun, srun: ``WORLD_SIZE`` above 1), the processes must
    be the spec's ``devices`` x ``num_nodes``; otherwise each would train the whole model
    alone (Lightning runs one process per device it was told of and does not check)."""
    world = os.environ.get("WORLD_SIZE")
    if not world or not world.isdigit() or int(world) <= 1:
        return
    devices = cfg.devices
    if isinstance(devices, list):
        devices = len(devices)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if not isinstance(devices, int):
        return  # "auto": Lightning's choice
    if devices * cfg.num_nodes != int(world):
        raise ValueError(
            f"launched as {world} processes (WORLD_SIZE), but training.devices x "
            f"training.num_nodes is {devices} x {cfg.num_nodes}; set them to the launcher's "
            "processes per machine and machines (e.g. --set training.devices=2 with "
            "torchrun --nproc_per_node=2)"
        )


def train(
    net: MultimodalNet,
    task: Task,
    train_ds: CohortTensors,
    val_ds: CohortTensors | None,
    cfg: TrainingSpec,
    modality_dropout: float,
    seed: int,
    unimodal_weight: float = 0.5,
) -> dict[str, Any]:
    """Fit ``net`` in place; returns a small history (epochs run, best epoch, losses,
    processes). With DDP on one machine the workers train and the best weights come
    back into ``net`` here; prediction afterwards is the caller's, in this process, on
    all patients (``Model._logits`` runs the network directly, never a shard)."""
    L.seed_everything(seed, workers=True, verbose=False)
    best = BestWeights()
    callbacks: list[L.Callback] = [best]
    has_val = val_ds is not None and len(val_ds) > 0
    if has_val:
        callbacks.append(
            L.pytorch.callbacks.EarlyStopping(
                "val_loss", patience=cfg.patience, mode="min", verbose=False
            )
        )
    # can a process's share of a batch lack a modality? (see _ddp_strategy)
    find_unused = modality_dropout > 0 or not all(bool(p.all()) for p in train_ds.present.values())
    trainer = make_trainer(cfg, callbacks, find_unused)
    # per process: the threads holomed chose for this fit, shared by the processes of a machine
    threads = max(1, torch.get_num_threads() // max(1, trainer.num_devices))
    lit = LitMultimodal(
        net,
        task,
        cfg.lr,
        cfg.weight_decay,
        modality_dropout,
        unimodal_weight,
        cfg.l2,
        cfg.l1,
        seed=seed,
        threads=threads,
    )
    # one large batch for validation, unless rows are read from disk (lazy images)
    val_batch = cfg.batch_size if has_val and val_ds.lazy else 4096
    ddp = trainer.world_size > 1  # the batches split across processes
    val_loader = loader(val_ds, val_batch, False, seed, ddp) if has_val else None
    external = getattr(trainer.strategy, "cluster_environment", None)
    external = external is not None and external.creates_processes_externally
    before = {k: os.environ.get(k) for k in _LAUNCH_ENV}
    try:
        trainer.fit(lit, loader(train_ds, cfg.batch_size, True, seed, ddp), val_loader)
    finally:
        if not external:  # a launcher's variables would make the next fit look launched
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    net.eval()
    epochs, best_epoch, processes, bits = lit.fit_record.tolist()
    best_val = None
    if bits != -1:
        best_val = torch.tensor([bits], dtype=torch.int32).view(torch.float32).item()
    return {
        "epochs": epochs,
        "best_epoch": best_epoch,
        "best_val_loss": best_val,
        "processes": processes,
    }
