"""Training with PyTorch Lightning: devices, strategy (DDP ...), precision and nodes
are settings of ``TrainingSpec`` passed to ``lightning.Trainer``; nothing here is a
home-made loop. Early stopping on validation loss restores the best weights."""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

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


def loader(ds: CohortTensors, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=_identity,
        generator=g,
        drop_last=False,
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

    def forward(self, x, present):
        return self.net(x, present)

    def _loss(self, batch, train: bool) -> torch.Tensor:
        present = batch["present"]
        if train:
            present = modality_dropout(present, self.p_drop)
        logits = self.net(batch["x"], present)
        loss = self.task.loss(logits, batch["y"], weighted=True)
        if train:
            fusion = self.net.fusion
            extras = list(self.net.aux_losses)
            if fusion.aux_loss is not None:
                extras.append(fusion.aux_loss)
            if fusion.unimodal_logits and self.unimodal_weight > 0:
                uni = []
                for name, lg in fusion.unimodal_logits.items():
                    rows = fusion.unimodal_present[name]
                    if rows.any():
                        uni.append(self.task.loss(lg[rows], batch["y"][rows], weighted=True))
                if uni:
                    extras.append(self.unimodal_weight * torch.stack(uni).mean())
            if self.l2 > 0:
                extras.append(self.l2 * sum((p**2).sum() for p in self._l2_params))
            if self.l1 > 0 and self._l1_params:
                extras.append(self.l1 * sum(p.abs().sum() for p in self._l1_params))
            if extras:
                loss = loss + torch.stack(extras).sum()
        return loss

    def training_step(self, batch, _):
        loss = self._loss(batch, True)
        self.log("train_loss", loss, prog_bar=False, batch_size=len(batch["y"]))
        return loss

    def validation_step(self, batch, _):
        loss = self._loss(batch, False)
        self.log("val_loss", loss, prog_bar=False, batch_size=len(batch["y"]), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class BestWeights(L.Callback):
    """Keeps the weights of the epoch with the lowest validation loss in memory."""

    def __init__(self) -> None:
        self.best, self.state, self.epoch = float("inf"), None, -1

    def on_validation_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        v = trainer.callback_metrics.get("val_loss")
        if v is not None and float(v) < self.best:
            self.best, self.epoch = float(v), trainer.current_epoch
            self.state = copy.deepcopy(module.net.state_dict())


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
    """Fit ``net`` in place; returns a small history (epochs run, best epoch, losses)."""
    L.seed_everything(seed, workers=True, verbose=False)
    lit = LitMultimodal(
        net, task, cfg.lr, cfg.weight_decay, modality_dropout, unimodal_weight, cfg.l2, cfg.l1
    )
    best = BestWeights()
    callbacks: list[L.Callback] = [best]
    has_val = val_ds is not None and len(val_ds) > 0
    if has_val:
        callbacks.append(
            L.pytorch.callbacks.EarlyStopping(
                "val_loss", patience=cfg.patience, mode="min", verbose=False
            )
        )
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        num_nodes=cfg.num_nodes,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    # one large batch for validation, unless rows are read from disk (lazy images)
    val_batch = cfg.batch_size if has_val and val_ds.lazy else 4096
    val_loader = loader(val_ds, val_batch, False, seed) if has_val else None
    trainer.fit(lit, loader(train_ds, cfg.batch_size, True, seed), val_loader)
    if best.state is not None:
        net.load_state_dict(best.state)
    net.eval()
    return {
        "epochs": int(trainer.current_epoch),
        "best_epoch": int(best.epoch),
        "best_val_loss": None if best.state is None else best.best,
    }
