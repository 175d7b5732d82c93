"""The user's declarative description of a run: modalities, target, split, fusion,
training and evaluation. Written as YAML or built in Python; validated up front.

A wrong spec raises :class:`SpecError` naming the field (dotted path), the file and what
was expected, e.g. ``examples/x.yaml: fusion.name: unknown fusion 'erly'; expected one of
attention, early, ...``.

Names of encoders, fusions and modality kinds, and every option given to them, are
checked against their registries (:func:`holomed.registry.builtin`); the ``ehr:`` section
(:mod:`holomed.spec.ehr`) and a PACS source's settings (:mod:`holomed.spec.dicomweb`)
are checked here too.
"""

from __future__ import annotations

import inspect
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from holomed.errors import HolomedError
from holomed.registry import builtin
from holomed.spec.dicomweb import check_modality, is_dicomweb
from holomed.spec.ehr import validate_ehr

TASKS = ("binary", "multiclass", "regression")


class SpecError(HolomedError, ValueError):
    """A spec that cannot be used; the message names the field and the file."""


def _number_problem(v: Any, ann: Any) -> str | None:
    """Why ``v`` cannot fill a field typed ``ann`` that wants a number, or ``None``.

    pydantic's lax mode reads ``true`` as 1 and ``"5"`` as 5; a spec that says
    ``max_epochs: true`` or ``n_folds: "5"`` is a mistake to report, not to guess at.
    Lists and dict values of numbers are checked item by item; an int fills a float."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Annotated:
        return _number_problem(v, args[0])
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if isinstance(v, list):
            lists = [a for a in options if typing.get_origin(a) is list]
            return _number_problem(v, lists[0]) if len(lists) == 1 else None
        scalars = set(options)
        if Any in scalars or (isinstance(v, bool) and bool in scalars):
            return None
        if isinstance(v, str) and str in scalars:
            return None
        want = [a for a in (int, float) if a in scalars]
        return _number_problem(v, want[0]) if want else None
    if origin is list and isinstance(v, list) and args:
        for i, item in enumerate(v):
            why = _number_problem(item, args[0])
            if why:
                return f"item {i} ({item!r}): {why}"
        return None
    if origin is dict and isinstance(v, dict) and len(args) == 2:
        for k, item in v.items():
            why = _number_problem(item, args[1])
            if why:
                return f"{k}: {why}"
        return None
    if ann in (int, float):
        what = "an integer" if ann is int else "a number"
        if isinstance(v, bool):
            return f"expected {what}, not a boolean"
        if isinstance(v, str | bytes):
            return f"expected {what}, not text"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """Every int/float field (and list/dict of them), of every spec model, refuses
        booleans and text instead of coercing them (see :func:`_number_problem`)."""
        field = cls.model_fields.get(info.field_name or "")
        why = None if field is None else _number_problem(v, field.annotation)
        if why:
            raise ValueError(why)
        return v


class EncoderSpec(_Strict):
    """Which registered encoder turns a modality into an embedding, and its options."""

    name: str = "mlp"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        names = builtin("encoder").names()
        if v not in names:
            raise ValueError(f"unknown encoder {v!r}; expected one of {', '.join(names)}")
        return v


class ModalitySpec(_Strict):
    """One modality: where its data live and how to read, preprocess and encode it.

    ``source`` is a file (CSV, TSV, Parquet, ``.h5ad``) or a list of files that are
    concatenated row-wise (e.g. a train file and a test file); for an image modality it
    may be a PACS, ``dicomweb://host[:port]/path`` (``options.dicomweb``, see
    :mod:`holomed.io.dicomweb`). ``id_column`` names the patient-id column; ``None``
    means ids come from the first column or from ``options``.

    ``frame``: for a modality of the spec's ``dataset`` (no ``source``), which of the
    dataset's frames it reads (default: the one of its own name). Two modalities may read
    one frame with different preprocessing, e.g. an ECG as samples for a CNN and as
    heart-rhythm features (``preprocessing.output: rhythm``) for an MLP.
    """

    name: str
    kind: str
    source: list[str] = Field(default_factory=list)
    frame: str | None = None
    id_column: str | None = None
    columns: list[str] | None = None
    categorical: list[str] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    encoder: EncoderSpec = Field(default_factory=EncoderSpec)

    @field_validator("source", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str | Path) else v

    @model_validator(mode="before")
    @classmethod
    def _kind_default_encoder(cls, data: Any) -> Any:
        """No encoder named (or a name without options): the kind's default encoder,
        e.g. ``grud`` for ``timeseries``, ``text_pool`` for ``text`` (``minilm`` for text
        with ``preprocessing.method: tokens``)."""
        kinds = builtin("modality kind")
        if not isinstance(data, dict) or data.get("kind") not in kinds:
            return data
        enc = data.get("encoder")
        default = kinds.get(data["kind"]).default_encoder_for(data.get("preprocessing"))
        if enc is None:
            return {**data, "encoder": {"name": default}}
        if isinstance(enc, dict) and "name" not in enc:
            return {**data, "encoder": {**enc, "name": default}}
        return data

    @field_validator("kind")
    @classmethod
    def _kind_known(cls, v: str, info: ValidationInfo) -> str:
        names = builtin("modality kind").names()
        if v not in names:
            who = f"modality {info.data['name']!r}: " if "name" in info.data else ""
            raise ValueError(f"{who}unknown kind {v!r}; expected one of {', '.join(names)}")
        return v

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or not v.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"modality name {v!r} must be letters, digits, '_' or '-'")
        return v

    @model_validator(mode="after")
    def _dicomweb(self) -> ModalitySpec:
        """``source: dicomweb://host/path`` (images from a PACS, see
        :mod:`holomed.io.dicomweb`): an image modality, one URL without credentials, and
        valid ``options.dicomweb``."""
        if any(is_dicomweb(s) for s in self.source) or "dicomweb" in self.options:
            check_modality(self)
        return self

    @model_validator(mode="after")
    def _encoder_fits(self) -> ModalitySpec:
        kind = builtin("modality kind").get(self.kind)
        if kind.encoder_check is not None:
            why = kind.encoder_check(self.preprocessing, self.encoder.name)
            if why:
                raise ValueError(f"modality {self.name!r}: {why}")
        return self

    @model_validator(mode="after")
    def _frame_or_source(self) -> ModalitySpec:
        if self.frame is not None and self.source:
            raise ValueError(
                f"modality {self.name!r}: 'frame' names a frame of the spec's dataset and "
                "'source' a file; give one of them (two modalities may share a source file)"
            )
        return self


class TargetSpec(_Strict):
    """The label: a column of a table (``source`` + ``id_column`` + ``column``)."""

    source: list[str] = Field(default_factory=list)
    id_column: str | None = None
    column: str = "label"
    task: Literal["binary", "multiclass", "multilabel", "regression", "survival"] = "binary"
    classes: list[str] | None = None
    separator: str = ";"  # multilabel: the labels of one patient in one cell, e.g. "AF;RBBB"
    # survival (right-censored time to event): ``column`` holds the time and ``event`` the
    # event indicator (1 = the event was observed, 0 = censored); without ``event``,
    # ``column`` holds both as "time,event"; times are in ``time_unit``; predictions give
    # the survival probability at each of ``horizons`` (same unit, required)
    event: str | None = None
    time_unit: str = "days"
    horizons: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _survival(self) -> TargetSpec:
        if self.task != "survival":
            if self.event is not None or self.horizons:
                raise ValueError("target.event and target.horizons belong to task: survival")
            return self
        if not self.horizons:
            raise ValueError(
                f"target.horizons: a survival task needs at least one horizon "
                f"(in {self.time_unit}, e.g. [3, 6, 12] months or [30, 90, 365] days)"
            )
        bad = [h for h in self.horizons if not (math.isfinite(h) and h > 0)]
        if bad:
            raise ValueError(f"target.horizons must be positive numbers; got {bad}")
        if sorted(set(self.horizons)) != list(self.horizons):
            raise ValueError(f"target.horizons must increase strictly; got {self.horizons}")
        return self

    @field_validator("source", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str | Path) else v


class SplitSpec(_Strict):
    """How patients are split. ``predefined`` reads a column of the target table (values
    ``train``/``test``, optionally ``val``); ``holdout`` is a stratified hold-out;
    ``kfold`` is stratified k-fold cross-validation."""

    method: Literal["predefined", "holdout", "kfold"] = "holdout"
    column: str | None = "split"
    # target-table column naming the person each row belongs to (admissions, epochs,
    # recordings): all rows of one group fall on the same side of every split
    group: str | None = None
    test_size: float = Field(0.25, gt=0, lt=1)
    n_folds: int = Field(5, ge=2)


class FusionSpec(_Strict):
    """Fusion strategy by registry name, its options, and missing-modality handling.

    Plain ``options`` go to the strategy named here; ``NAME.option`` keys go to strategy
    NAME whenever it runs (e.g. in ``holomed compare --fusion all``):
    ``options: {head_layers: 0, hybrid.combine: weighted, attention.heads: 2}``."""

    name: str = "joint"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        names = builtin("fusion").names()
        if v not in names:
            raise ValueError(f"unknown fusion {v!r}; expected one of {', '.join(names)}")
        return v

    @field_validator("options")
    @classmethod
    def _prefixes(cls, v: dict[str, Any]) -> dict[str, Any]:
        fusions = builtin("fusion")
        for k in v:
            if "." in k and k.split(".", 1)[0] not in fusions:
                raise ValueError(f"option {k!r} names unknown fusion {k.split('.', 1)[0]!r}")
        return v

    hidden: int = Field(64, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    modality_dropout: float = Field(0.0, ge=0, lt=1)
    imputation: Literal["none", "mean", "learned", "reconstruct", "generate"] = "none"


class StoreSpec(_Strict):
    """An on-disk store of the preprocessed arrays (:mod:`holomed.modalities.store`), for
    cohorts larger than memory: written once per (preprocessing, patients) in chunks of
    patients, read one batch at a time by training and prediction. ``training.store: DIR``
    is the short form of ``{path: DIR}``.

    ``path``: the store's folder (relative to the spec file's folder, ``$VARS`` expanded);
    ``min_mb``: use it only when the arrays would exceed this many MB (0: always);
    ``chunk``: patients per chunk (None: about 32 MB of arrays, 256 to 65,536 patients);
    ``executor`` / ``workers`` / ``ray_address``: where chunks are preprocessed
    (:mod:`holomed.executor`); each worker holds a copy of the cohort, so
    ``serial`` keeps memory lowest."""

    path: str
    min_mb: float = Field(0.0, ge=0)
    chunk: int | None = Field(None, ge=1)
    executor: Literal["serial", "local", "ray", "auto"] = "serial"
    workers: int | None = Field(None, ge=1)
    ray_address: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, str | Path):
            data = {"path": str(data)}
        if not isinstance(data, dict):
            raise ValueError(
                f"expected a folder (text) or a mapping with 'path'; got {type(data).__name__}"
            )
        return data

    @field_validator("path")
    @classmethod
    def _folder(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the store's folder is empty; give a folder, e.g. 'runs/store'")
        return v


class TrainingSpec(_Strict):
    """Lightning training settings. ``devices``/``accelerator``/``strategy``/``precision``/
    ``num_nodes`` go to ``lightning.Trainer``; ``ddp`` (or ``auto`` on several devices) is
    run so that several processes train as one would (:mod:`holomed.training`): on one
    machine the fit runs in spawned workers, under torchrun / srun in the launched ones."""

    max_epochs: int = Field(100, ge=1)
    # rows per optimisation step, whatever the number of processes: with W processes (DDP)
    # each takes about batch_size / W of every batch
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    l2: float = Field(0.0, ge=0)
    # L1 on the weights that read input features (encoders' first layers): sparse feature
    # use, for cohorts where few of many features carry signal (omics)
    l1: float = Field(0.0, ge=0)
    patience: int = Field(15, ge=1)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    # class-weighted losses distort predicted risks (the mean risk follows the weights, not
    # the data); imbalance is better met by the decision threshold, so this is off by default
    class_weights: bool = False
    # torch / BLAS threads; None = the cores this process may use (cgroup- and affinity-aware)
    threads: int | None = Field(None, ge=1)
    unimodal_loss_weight: float = Field(0.5, ge=0)
    calibration: Literal["none", "temperature", "isotonic"] = "temperature"
    # survival heads of the networks: "cox" (partial likelihood, Breslow curves) or
    # "discrete" (logistic hazard over ``time_bins`` intervals cut at quantiles of the
    # training event times)
    survival_head: Literal["cox", "discrete"] = "cox"
    time_bins: int = Field(20, ge=2, le=200)
    seed: int = 0
    accelerator: str = "cpu"
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = Field(1, ge=1)
    # DDP's collective backend: None = Lightning's choice (NCCL on GPUs, gloo on CPUs);
    # "gloo" also on GPUs, e.g. for several processes sharing one GPU (NCCL refuses that)
    process_group_backend: Literal["nccl", "gloo"] | None = None
    # preprocessed arrays on disk, read per batch (cohorts larger than memory); None: in memory
    store: StoreSpec | None = None


class SearchSpec(_Strict):
    """Hyper-parameter search (Optuna, seeded TPE with median pruning) inside the inner CV
    on training patients only, per candidate that declares a search space. The budget is
    per candidate and outer split: ``trials`` and/or ``seconds``; ``trials: 0`` keeps the
    defaults (and ``evaluation.grid``, a fixed grid of dotted spec paths, still works)."""

    trials: int = Field(0, ge=0)
    seconds: float | None = Field(None, gt=0)
    candidates: list[str] | None = None  # None: every candidate with a search space


class EvaluationSpec(_Strict):
    """What the comparison harness measures and how strategies are selected."""

    seeds: int = Field(5, ge=1)
    n_bootstrap: int = Field(1000, ge=0)
    selection_folds: int = Field(3, ge=2)
    # draws of the inner folds (repeated CV): scores over all draws x folds, out-of-fold
    # predictions averaged over draws; R times the selection cost
    selection_repeats: int = Field(1, ge=1)
    selection_metric: str = "auroc"
    # "best": the best mean inner-CV score (within 0.001: the simplest of the tied);
    # "one_se": the simplest candidate (linear < boosted trees < stack < network <
    # ensemble) within one standard error (paired per-fold difference) of the best
    selection_rule: Literal["best", "one_se"] = "best"
    # what greedy ensemble selection optimises: the log loss (classification; a smooth
    # proper scoring rule) or the selection metric ("metric"; always so for regression)
    ensemble_objective: Literal["log_loss", "metric"] = "log_loss"
    # bagged ensemble selection (Caruana et al. 2006): greedy selection in this many random
    # halves of the candidates, weights averaged; 0 = plain greedy selection. Chosen on
    # inner-CV evidence (training patients only) of CPSC 2018 and COVID CXR:
    # +0.006 / +0.005 AUROC over plain greedy (benchmarks/ensemble_variants.py)
    ensemble_bags: int = Field(20, ge=0)
    # what a bag varies: "candidates" (random halves of them, Caruana et al. 2006) or
    # "patients" (bootstrap resamples, every candidate in every bag; Sun and Pfahringer
    # 2011). Halves help small cohorts (CPSC, COVID CXR, ROSMAP inner CV); where one
    # candidate dominates, leaving it out of half the bags costs AUROC: PhysioNet 2012's
    # inner CV, 0.8553 with halves against 0.8574 with patients, so its example sets this
    ensemble_bagging: Literal["candidates", "patients"] = "candidates"
    # compare also writes inner_predictions.npz: per outer split, every candidate's
    # out-of-fold predictions on its training patients and the inner folds (row positions,
    # no ids), for studying selection and ensembling on training patients only
    save_inner_predictions: bool = False
    # where the independent fits run (holomed.executor): "auto" = worker
    # processes, one per available core, when there is more than one core, else "serial";
    # "ray": a Ray cluster at ray_address (none: a local one)
    executor: Literal["auto", "serial", "local", "ray"] = "auto"
    workers: int | None = Field(None, ge=1)
    ray_address: str | None = None
    baselines: bool = True
    ablations: bool = True
    missing_rates: list[float] = Field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8])
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    explain: bool = True
    attribute_bins: dict[str, list[float]] = Field(default_factory=dict)
    min_group: int = Field(20, ge=1)
    mitigation: Literal["none", "threshold"] = "none"
    # target-table columns holding existing risk scores (e.g. SAPS-I, SOFA): each is
    # reported alone as a baseline (a logistic map of the score fitted on training
    # patients), never used as a model input
    score_baselines: list[str] = Field(default_factory=list)
    # the candidates selection chooses from, besides the fusion strategies being compared:
    # classical learners, a stack of per-modality learners and a greedy ensemble (Caruana)
    # (None: the task's defaults, lr_early, lr_late, gbm, lr_l1, stack, ensemble; for
    # survival cox, coxnet, xgb_cox, km, ensemble)
    candidates: list[str] | None = None
    search: SearchSpec = Field(default_factory=lambda: SearchSpec())
    # neural candidates are fitted as bags of this many seeds, probabilities averaged
    # (selection, refits, ablations and the deployed model alike; 1 = no bagging)
    bag: int = Field(1, ge=1)
    # the boosted trees (gbm, rf) are fitted as bags of this many seeds, their log-odds
    # averaged (1 = one booster). On PhysioNet 2012's training patients five gained
    # AUROC +0.0032 +- 0.0008 over one (BENCHMARKS); each costs one more booster fit
    tree_bags: int = Field(1, ge=1)

    @field_validator("missing_rates")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        bad = [r for r in v if not 0 <= r <= 1]
        if bad:
            raise ValueError(f"missing rates must lie in [0, 1]; got {bad}")
        return v


class EhrTablesPrivacy(_Strict):
    """How ``holomed deid --tables`` de-identifies the raw tables of the ``ehr:`` section
    (:mod:`holomed.privacy.ehr_tables`); table settings are keyed by the table's alias in
    ``ehr.tables``.

    ``person``: the column holding the person id (MIMIC: ``subject_id``). Its values get
    the patient pseudonym every other modality gets (``key.pseudonym(id)``), and every
    date of a row moves by that person's offset (``key.date_shift_days``).
    ``id_columns``: the other identifier columns, replaced wherever they appear, as a list
    (``[hadm_id, stay_id]``) or ``{column: kind}`` when one kind of id has several column
    names (``{order_provider_id: provider_id}``). A value's pseudonym is
    ``key.pseudonym(kind + ":" + value)``: the same value of one kind gets the same
    pseudonym in every table (joins still work); kinds never collide with each other nor
    with persons. A column whose kind is ``person`` is a person column too.
    ``links``: ``{id kind: table}`` — the table that ties an id to its person, for tables
    without the person column (chartevents by ``stay_id`` -> icustays); by default the
    smallest table holding both columns, unless its ids are shared by several persons
    (providers, caregivers: then no link). A declared link with such an id is an error.
    ``date_columns``: ``{table: [columns]}`` shifted by the row's person offset (a value
    that cannot be read as a date, or a row whose person is unknown, becomes missing and
    is counted; never kept). ``detect_dates`` (default on): other text columns whose
    values are at least half date-like in the first chunk are shifted too (the others set
    missing and counted); fewer date-like values, or any after the first chunk, in a
    column not declared is an error (declare it as a date, text or dropped column).
    ``year_columns``: ``{table: [columns]}`` of whole years (MIMIC ``anchor_year``),
    moved by the shift rounded to whole years (so a year-difference with a shifted date
    can be off by one).
    ``drop_columns``: ``{table: [columns]}`` removed. ``text_columns``: ``{table:
    [columns]}`` of free text, dropped (``text: drop``, the default) or passed through
    the note de-identifier (``text: deidentify``, surrogates or tags as ``notes``).
    Tables with none of these columns (dictionaries such as ``d_items``) are copied
    byte for byte."""

    person: str = "subject_id"
    id_columns: dict[str, str] = Field(default_factory=dict)
    links: dict[str, str] = Field(default_factory=dict)
    date_columns: dict[str, list[str]] = Field(default_factory=dict)
    detect_dates: bool = True
    year_columns: dict[str, list[str]] = Field(default_factory=dict)
    drop_columns: dict[str, list[str]] = Field(default_factory=dict)
    text_columns: dict[str, list[str]] = Field(default_factory=dict)
    text: Literal["drop", "deidentify"] = "drop"

    @field_validator("id_columns", mode="before")
    @classmethod
    def _id_kinds(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if isinstance(v, list):
            if not all(isinstance(c, str) for c in v):
                raise ValueError("expected a list of column names or {column: kind}")
            return {c: c for c in v}
        return v


class PrivacySpec(_Strict):
    """Pseudonyms in outputs, and what ``holomed deid`` removes, pseudonymises or shifts.

    ``pseudonymise``: every output (results, predictions, explanations, report, errors)
    carries keyed pseudonyms instead of patient ids, and no raw cell values; the key comes
    from ``key_file`` or ``$HOLOMED_PRIVACY_KEY_FILE`` / ``$HOLOMED_PRIVACY_KEY`` (see
    :mod:`holomed.privacy.keys`). For ``holomed deid``, per modality name (or ``target``):
    ``drop_columns`` are removed, ``pseudonym_columns`` (other ids, e.g. a person column
    grouping admissions) are replaced by pseudonyms, ``date_columns`` are shifted by the
    patient's offset; ``notes``: surrogates (shifted dates, fake names) or type tags.
    ``ehr_tables`` (:class:`EhrTablesPrivacy`): for a spec with an ``ehr:`` section, the
    raw tables themselves are de-identified (ids, dates, free text), and the new spec
    reads them."""

    pseudonymise: bool = False
    key_file: str | None = None
    drop_columns: dict[str, list[str]] = Field(default_factory=dict)
    pseudonym_columns: dict[str, list[str]] = Field(default_factory=dict)
    date_columns: dict[str, list[str]] = Field(default_factory=dict)
    # ages over 89 become 90 (HIPAA Safe Harbor: one category "90 or older"); None: every
    # table column named age (any case) in every modality and the label table
    age_columns: dict[str, list[str]] | None = None
    notes: Literal["surrogate", "tag"] = "surrogate"
    language: str = "en"
    max_shift_days: int = Field(365, ge=1, le=3650)
    ehr_tables: EhrTablesPrivacy | None = None


class Spec(_Strict):
    """A whole run. ``attributes`` names target-table columns kept apart from features
    (sex, age band, site) for subgroup analysis; they never enter the model."""

    dataset: str = "custom"
    dataset_options: dict[str, Any] = Field(default_factory=dict)
    description: str = ""
    notes: list[str] = Field(default_factory=list)  # caveats for the model card
    modalities: list[ModalitySpec]
    target: TargetSpec = Field(default_factory=TargetSpec)
    attributes: list[str] = Field(default_factory=list)
    split: SplitSpec = Field(default_factory=SplitSpec)
    fusion: FusionSpec = Field(default_factory=FusionSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    # relational EHR tables turned into modality frames and the target by DuckDB
    # (see holomed.ehr); when set, modalities without ``source`` read from it
    ehr: dict[str, Any] | None = None
    base_dir: str | None = Field(None, exclude=True)

    @field_validator("ehr")
    @classmethod
    def _ehr(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return v if v is None else validate_ehr(v)

    @model_validator(mode="after")
    def _check_names(self) -> Spec:
        if not self.modalities:
            raise ValueError("at least one modality is required")
        names = [m.name for m in self.modalities]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"modality names must be unique; repeated: {dup}")
        _check_declared_options(self)
        pv = self.privacy
        for field_name in ("drop_columns", "pseudonym_columns", "date_columns", "age_columns"):
            unknown = sorted(set(getattr(pv, field_name) or {}) - {*names, "target"})
            if unknown:  # a misspelt modality would leave its columns in the output
                raise ValueError(
                    f"privacy.{field_name}: {unknown} are not modalities of this spec; "
                    f"expected modality names ({', '.join(names)}) or 'target'"
                )
        return self

    # -- helpers ---------------------------------------------------------------------
    @property
    def modality_names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def resolve(self, path: str) -> Path:
        """A source path, relative to the spec file's folder, with ``$VARS`` expanded."""
        p = Path(os.path.expandvars(os.path.expanduser(path)))
        if not p.is_absolute() and self.base_dir:
            p = Path(self.base_dir) / p
        return p

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude={"base_dir"}), sort_keys=False)

    def with_fusion(self, name: str, **changes: Any) -> Spec:
        """A copy of this spec with another fusion strategy (and other fusion fields)."""
        fusion = self.fusion.model_copy(update={"name": name, **changes})
        new = self.model_copy(update={"fusion": fusion})
        new.base_dir = self.base_dir
        return new


def _declared(fn: Any, skip: tuple[str, ...] = ()) -> set[str] | None:
    """The keyword options a registered class or factory declares (its ``__init__``
    parameters), or None when it takes any (``**kwargs``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return set(sig.parameters) - {"self", *skip}


def _check(where: str, given: dict[str, Any], owner: Any, skip: tuple[str, ...] = ()) -> None:
    known = _declared(owner, skip)
    unknown = sorted(k for k in given if known is not None and k not in known)
    if unknown:
        raise ValueError(
            f"{where}: unknown option(s) {unknown}; "
            f"{getattr(owner, '__qualname__', owner)} takes {sorted(known or [])}"
        )
    for k, allowed in getattr(owner, "OPTION_CHOICES", {}).items():
        if k in given and given[k] not in allowed:
            raise ValueError(f"{where}.{k}: {given[k]!r} is not one of {list(allowed)}")


def _check_declared_options(spec: Spec) -> None:
    """Every option in the spec is one its registered class declares, so a typo is an
    error when the spec loads instead of a setting silently ignored at fit time."""
    encoders, fusions, kinds = builtin("encoder"), builtin("fusion"), builtin("modality kind")
    for m in spec.modalities:
        pre = kinds.get(m.kind).preprocessor
        _check(f"modalities.{m.name}.preprocessing", m.preprocessing, pre.__init__, ("seed",))
        if hasattr(pre, "OPTION_CHOICES"):
            _check(f"modalities.{m.name}.preprocessing", m.preprocessing, pre, ("seed",))
        if m.encoder.name in encoders:
            _check(
                f"modalities.{m.name}.encoder.options",
                m.encoder.options,
                encoders.get(m.encoder.name),
                ("in_dim",),
            )
    base = ("dims", "n_outputs", "hidden", "dropout", "imputation", "kinds")
    f = spec.fusion
    plain = {k: v for k, v in f.options.items() if "." not in k}
    _check("fusion.options", plain, fusions.get(f.name).__init__, base)
    for k in {k.split(".", 1)[0] for k in f.options if "." in k}:
        sub = {o.split(".", 1)[1]: v for o, v in f.options.items() if o.startswith(k + ".")}
        _check(f"fusion.options ({k}.)", sub, fusions.get(k).__init__, base)
    if f.imputation != "none" and not getattr(fusions.get(f.name), "imputes", True):
        raise ValueError(
            f"fusion.imputation: {f.name!r} fusion combines the present modalities' "
            "predictions and never imputes; remove the setting"
        )


def _format_error(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        got_s = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"{where}: {loc}: {msg}{got_s}")
    return "\n".join(lines)


def parse_spec(data: dict[str, Any], where: str = "<spec>", base_dir: str | None = None) -> Spec:
    """Validate a spec given as a dict; errors name ``where`` and the field."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: a spec is a mapping of fields; got {type(data).__name__}")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_error(err, where)) from None
    spec.base_dir = base_dir
    return spec


class DuplicateKeyError(yaml.YAMLError):
    """A key written twice in one YAML mapping (plain YAML keeps the last silently)."""

    def __init__(self, key: Any, where: str, line: int, first: int) -> None:
        super().__init__(key, where, line, first)
        self.key, self.where, self.line, self.first = key, where, line, first

    def __str__(self) -> str:
        return (
            f"line {self.line}: key {self.where!r} is given twice (first on line "
            f"{self.first}); remove one"
        )


class SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no object construction) that refuses duplicate keys and
    reads ``1e-3`` as a number (YAML 1.1 alone reads it as text: it wants ``1.0e-3``).
    Use it as ``yaml.load(text, Loader=SpecLoader)`` or through :func:`load_yaml`."""

    _paths: dict[int, str]

    def construct_document(self, node: yaml.Node) -> Any:
        self._paths = {}
        _dotted_paths(node, "", self._paths)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<: *defaults': keys given here override the merged ones
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, typing.Hashable):
                    continue  # the base class reports an unhashable key
                line = key_node.start_mark.line + 1
                if key in seen:
                    parent = getattr(self, "_paths", {}).get(id(node), "")
                    where = f"{parent}.{key}" if parent else str(key)
                    raise DuplicateKeyError(key, where, line, seen[key])
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _dotted_paths(node: yaml.Node, prefix: str, out: dict[int, str]) -> None:
    """The dotted path of every mapping under ``node`` (a list item by its ``name`` when
    it has one, as ``--set modalities.clinical.encoder.name`` addresses it)."""
    if id(node) in out:  # an alias: named where it was first written
        return
    if isinstance(node, yaml.MappingNode):
        out[id(node)] = prefix
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                _dotted_paths(v, f"{prefix}.{k.value}" if prefix else k.value, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            name = str(i)
            if isinstance(item, yaml.MappingNode):
                for k, v in item.value:
                    if getattr(k, "value", None) == "name" and isinstance(v, yaml.ScalarNode):
                        name = v.value
            _dotted_paths(item, f"{prefix}.{name}" if prefix else name, out)


def load_yaml(text: str) -> Any:
    """YAML text -> Python data with :class:`SpecLoader` (safe; duplicate keys refused)."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec. Relative paths inside resolve against its folder.
    A key given twice is an error naming the file, the key and both lines."""
    if not isinstance(path, str | Path):
        raise SpecError(
            f"load_spec takes a spec file's path; got {type(path).__name__} (for a dict, "
            "use holomed.spec.parse_spec)"
        )
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: spec file not found")
    if path.is_dir():
        raise SpecError(f"{path}: is a folder; expected a spec YAML file")
    try:
        data = load_yaml(path.read_text())
    except DuplicateKeyError as err:
        raise SpecError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot be read: {err}") from None
    return parse_spec(data, where=str(path), base_dir=str(path.parent.resolve()))


def override_spec(spec: Spec, overrides: dict[str, Any], where: str = "--set") -> Spec:
    """A copy of ``spec`` with dotted-path fields replaced, re-validated. A modality is
    addressed by its name or position: ``modalities.series.encoder.name``. Errors name
    ``where`` (``--set``, ``evaluation.grid``, a search trial ...) and the field."""
    if not overrides:
        return spec
    data = spec.model_dump(mode="json", exclude={"base_dir"})
    for path, value in overrides.items():
        node: Any = data
        keys = path.split(".")
        for i, k in enumerate(keys[:-1]):
            if isinstance(node, list):
                names = [m.get("name") if isinstance(m, dict) else None for m in node]
                if k in names:
                    node = node[names.index(k)]
                elif k.isdigit() and int(k) < len(node):
                    node = node[int(k)]
                else:
                    raise SpecError(
                        f"{where}: {path}: no item {'.'.join(keys[: i + 1])!r} (names: {names})"
                    )
                continue
            if k not in node or not isinstance(node[k], dict | list):
                node[k] = {}
            node = node[k]
        if isinstance(node, list):
            raise SpecError(f"{where}: {path}: cannot set a list item by this path")
        node[keys[-1]] = value
    return parse_spec(data, where=where, base_dir=spec.base_dir)
