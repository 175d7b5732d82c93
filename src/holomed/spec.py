"""The user's declarative description of a run: modalities, target, split, fusion,
training and evaluation. Written as YAML or built in Python; validated up front.

A wrong spec raises :class:`SpecError` naming the field (dotted path), the file and what
was expected, e.g. ``examples/x.yaml: fusion.name: unknown fusion 'erly'; expected one of
attention, early, ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

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

TASKS = ("binary", "multiclass", "regression")


class SpecError(ValueError):
    """A spec that cannot be used; the message names the field and the file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EncoderSpec(_Strict):
    """Which registered encoder turns a modality into an embedding, and its options."""

    name: str = "mlp"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from holomed.encoders import encoder_names

        if v not in encoder_names():
            raise ValueError(f"unknown encoder {v!r}; expected one of {', '.join(encoder_names())}")
        return v


class ModalitySpec(_Strict):
    """One modality: where its data live and how to read, preprocess and encode it.

    ``source`` is a file (CSV, TSV, Parquet, ``.h5ad``) or a list of files that are
    concatenated row-wise (e.g. a train file and a test file). ``id_column`` names the
    patient-id column; ``None`` means ids come from the first column or from ``options``.
    """

    name: str
    kind: str
    source: list[str] = Field(default_factory=list)
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
        from holomed.modalities import MODALITIES

        if not isinstance(data, dict) or data.get("kind") not in MODALITIES:
            return data
        enc = data.get("encoder")
        default = MODALITIES.get(data["kind"]).default_encoder_for(data.get("preprocessing"))
        if enc is None:
            return {**data, "encoder": {"name": default}}
        if isinstance(enc, dict) and "name" not in enc:
            return {**data, "encoder": {**enc, "name": default}}
        return data

    @field_validator("kind")
    @classmethod
    def _kind_known(cls, v: str, info: ValidationInfo) -> str:
        from holomed.modalities import modality_names

        if v not in modality_names():
            who = f"modality {info.data['name']!r}: " if "name" in info.data else ""
            raise ValueError(
                f"{who}unknown kind {v!r}; expected one of {', '.join(modality_names())}"
            )
        return v

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or not v.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"modality name {v!r} must be letters, digits, '_' or '-'")
        return v


class TargetSpec(_Strict):
    """The label: a column of a table (``source`` + ``id_column`` + ``column``)."""

    source: list[str] = Field(default_factory=list)
    id_column: str | None = None
    column: str = "label"
    task: Literal["binary", "multiclass", "multilabel", "regression"] = "binary"
    classes: list[str] | None = None
    separator: str = ";"  # multilabel: the labels of one patient in one cell, e.g. "AF;RBBB"

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
        from holomed.fusion import fusion_names

        if v not in fusion_names():
            raise ValueError(f"unknown fusion {v!r}; expected one of {', '.join(fusion_names())}")
        return v

    @field_validator("options")
    @classmethod
    def _prefixes(cls, v: dict[str, Any]) -> dict[str, Any]:
        from holomed.fusion import fusion_names

        for k in v:
            if "." in k and k.split(".", 1)[0] not in fusion_names():
                raise ValueError(f"option {k!r} names unknown fusion {k.split('.', 1)[0]!r}")
        return v

    hidden: int = Field(64, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    modality_dropout: float = Field(0.0, ge=0, lt=1)
    imputation: Literal["none", "mean", "learned", "reconstruct"] = "none"


class TrainingSpec(_Strict):
    """Lightning training settings. ``devices``/``accelerator``/``strategy``/``precision``
    pass straight through to ``lightning.Trainer``."""

    max_epochs: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    l2: float = Field(0.0, ge=0)
    patience: int = Field(15, ge=1)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    class_weights: bool = True
    unimodal_loss_weight: float = Field(0.5, ge=0)
    calibration: Literal["none", "temperature", "isotonic"] = "temperature"
    seed: int = 0
    accelerator: str = "cpu"
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = Field(1, ge=1)


class EvaluationSpec(_Strict):
    """What the comparison harness measures and how strategies are selected."""

    seeds: int = Field(5, ge=1)
    n_bootstrap: int = Field(1000, ge=0)
    selection_folds: int = Field(3, ge=2)
    selection_metric: str = "auroc"
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

    @field_validator("missing_rates")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        bad = [r for r in v if not 0 <= r <= 1]
        if bad:
            raise ValueError(f"missing rates must lie in [0, 1]; got {bad}")
        return v


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
    # relational EHR tables turned into modality frames and the target by DuckDB
    # (see holomed.ehr); when set, modalities without ``source`` read from it
    ehr: dict[str, Any] | None = None
    base_dir: str | None = Field(None, exclude=True)

    @field_validator("ehr")
    @classmethod
    def _ehr(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is None:
            return v
        from holomed.ehr import validate_ehr

        return validate_ehr(v)

    @model_validator(mode="after")
    def _check_names(self) -> Spec:
        if not self.modalities:
            raise ValueError("at least one modality is required")
        names = [m.name for m in self.modalities]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"modality names must be unique; repeated: {dup}")
        return self

    # -- helpers ---------------------------------------------------------------------
    @property
    def modality_names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def resolve(self, path: str) -> Path:
        """A source path, relative to the spec file's folder, with ``$VARS`` expanded."""
        import os

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


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec. Relative paths inside resolve against its folder."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: spec file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from None
    return parse_spec(data, where=str(path), base_dir=str(path.parent.resolve()))
