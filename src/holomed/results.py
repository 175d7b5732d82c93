"""Typed records of a run's results: what the harness writes (``results.json`` of
``holomed compare`` and ``holomed fit``, ``robustness.json`` of ``holomed robustness``) and
what the report, the CLI and the web page read back.

One record per kind — :class:`CompareRecord`, :class:`FitRecord`,
:class:`RobustnessRecord` — built from :class:`MetricSummary` (a metric's mean, SD over
seeds, 95 % bootstrap CI and per-seed values), :class:`StrategyEntry` (one leaderboard
entry) and :class:`RobustnessCurve`. Every record has

- ``from_json(d)``: checks the type of every field it knows and raises
  :class:`~holomed.errors.ResultsError` naming the field (``strategies['late'].metrics
  ['auroc'].ci: expected a list; got str``). Fields may be absent (older runs, partial
  records built by hand); keys it does not know are kept in ``extra``;
- ``to_json()``: the file's JSON object, exactly the schema the writers have always
  written, strict JSON (NaN and infinities become null, :func:`holomed.runfiles.clean`);
- ``to_dict()``: the same object with numbers as they are (NaN kept), the in-memory form
  the harness hands to its callers.

A record read from JSON writes back the keys it was read with, null ones included, so
``R.from_json(d).to_json() == d`` for a strict-JSON ``d``. A record built by a writer
writes its fields except the empty ones the writer leaves out (``OPTIONAL``).

:func:`read_results` reads a file (the error names it), :func:`write_results` writes one
(:func:`holomed.runfiles.write_json`: strict JSON, renamed into place). Each metric's
direction is :data:`holomed.scoring.metrics.LOWER_IS_BETTER`, nowhere else.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from holomed.errors import ResultsError
from holomed.runfiles import clean, write_json

__all__ = [
    "CompareRecord",
    "FitRecord",
    "MetricSummary",
    "Record",
    "RobustnessCurve",
    "RobustnessRecord",
    "RunRecord",
    "StrategyEntry",
    "kind_of",
    "read_results",
    "results_from_json",
    "write_results",
]

R = TypeVar("R", bound="Record")
_NOT_FIELDS = ("extra", "source_keys")


@dataclass
class Record:
    """Base of the result records: JSON in and out, unknown keys kept in ``extra``.

    ``source_keys`` are the keys of the JSON object the record was read from (``None``:
    built by a writer); an empty field is written as null when it was read as null, or,
    for a record built by a writer, when the field is not in ``OPTIONAL``."""

    KIND: ClassVar[str | None] = None
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True)
    source_keys: frozenset[str] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_json(cls: type[R], d: Any, where: str = "") -> R:
        """The record of the JSON object ``d``; :class:`ResultsError` naming the first
        field of the wrong type (``where`` prefixes nested field names)."""
        if not isinstance(d, Mapping):
            raise ResultsError(f"{where or cls.__name__}: expected an object; got {_got(d)}")
        hints, names = _hints(cls), _names(cls)
        values = {n: _decode(hints[n], d[n], _at(where, n)) for n in names if n in d}
        if "kind" in names:
            values.setdefault("kind", None)  # an older file without a kind stays without
            if values["kind"] not in (None, cls.KIND):
                raise ResultsError(
                    f"{_at(where, 'kind')}: expected {cls.KIND!r}; got {values['kind']!r}"
                )
        rec = cls(**values, extra={k: v for k, v in d.items() if k not in names})
        rec.source_keys = frozenset(d)
        rec._check(where)
        return rec

    def _check(self, where: str) -> None:
        """Checks across fields or of a field's shape, after the types (none here)."""

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict in the file's schema, numbers as they are."""
        out: dict[str, Any] = {}
        for name in _names(type(self)):
            value = getattr(self, name)
            if value is None and not self._writes_null(name):
                continue
            out[name] = _plain(value)
        for k, v in self.extra.items():
            out.setdefault(k, _plain(v))
        return out

    def to_json(self) -> dict[str, Any]:
        """The record as strict JSON: :meth:`to_dict` with NaN and infinities as null."""
        return clean(self.to_dict())

    def _writes_null(self, name: str) -> bool:
        if self.source_keys is not None:
            return name in self.source_keys
        return name not in self.OPTIONAL


# -- records -----------------------------------------------------------------------


@dataclass
class MetricSummary(Record):
    """One metric over seeds (:func:`holomed.scoring.metrics.summarise`): ``mean`` over
    seeds (survival: of the seed-averaged output), ``sd`` over seeds, ``ci`` the 95 %
    bootstrap interval ``[lo, hi]`` of the seed mean, ``per_seed`` each seed's value.
    Undefined values are NaN in memory and null in JSON."""

    mean: float | None = None
    sd: float | None = None
    ci: list[float | None] | None = None
    per_seed: list[float | None] | None = None

    def _check(self, where: str) -> None:
        if self.ci is not None and len(self.ci) != 2:
            raise ResultsError(
                f"{_at(where, 'ci')}: expected [lo, hi]; got a list of {len(self.ci)}"
            )


@dataclass
class StrategyEntry(Record):
    """One entry of a comparison (``results["strategies"][name]``): a candidate, an
    ablation, a baseline or the selection procedure, on the evaluated patients.

    ``group`` (fusion, classical, baseline, stacking, ensemble, single, without,
    selected); ``metrics`` per metric; ``curves`` (ROC/PR of the first seed, binary),
    ``calibration`` (binary), ``contributions`` (modality Shapley), ``features`` (top
    features of a baseline), ``survival`` (risk groups, per horizon); ``fit_seconds``
    (mean per fit) and ``fit_seconds_total``; ``peak_rss_mb`` (MiB); ``params`` (the
    distinct parameters it was fitted with)."""

    group: str | None = None
    curves: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    contributions: dict[str, Any] | None = None
    features: dict[str, Any] | None = None
    metrics: dict[str, MetricSummary] | None = None
    survival: dict[str, Any] | None = None
    fit_seconds: float | None = None
    fit_seconds_total: float | None = None
    peak_rss_mb: float | None = None
    params: list[Any] | None = None


@dataclass
class CompareRecord(Record):
    """``results.json`` of ``holomed compare`` (:func:`holomed.evaluation.compare.compare`).

    Header: ``dataset``, ``synthetic``, ``intended_use``, ``limitations``, ``task``,
    ``classes``, ``split``, ``n_splits``, ``seeds``; selection: ``selection`` (the
    procedure), ``selection_rule`` (in words), ``selection_metric``, ``selection_folds``,
    ``selection_repeats``, ``candidates``, ``selected`` (the deployable choice) with its
    ``selected_family`` and ``selected_params``, ``selection_cv_mean`` and, per outer
    split, ``selection_detail``; results: ``strategies`` (name → :class:`StrategyEntry`),
    ``leaderboard`` (names, best first on the selection metric), ``n_evaluated``,
    ``eval_ids`` and ``y`` (the evaluated patients, in the outputs' order); run:
    ``cohort``, ``excluded`` (the exclusion records; their count in results trimmed for
    publishing), ``excluded_summary``, ``n_bootstrap``, ``total_seconds`` (s),
    ``versions``, ``spec`` and ``spec_path`` (relative to the run folder)."""

    KIND: ClassVar[str | None] = "compare"
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"spec_path"})

    kind: str | None = "compare"
    dataset: str | None = None
    synthetic: bool | None = None
    intended_use: str | None = None
    limitations: list[str] | None = None
    contributions_note: str | None = None
    task: str | None = None
    classes: list[str] | None = None
    split: dict[str, Any] | None = None
    n_splits: int | None = None
    seeds: list[int] | None = None
    selection: str | None = None
    selection_rule: str | None = None
    selection_metric: str | None = None
    selection_folds: int | None = None
    selection_repeats: int | None = None
    candidates: list[str] | None = None
    selected: str | None = None
    selected_family: str | None = None
    selected_params: Any = None
    selection_cv_mean: dict[str, float | None] | None = None
    selection_detail: list[dict[str, Any]] | None = None
    strategies: dict[str, StrategyEntry] | None = None
    leaderboard: list[str] | None = None
    n_evaluated: int | None = None
    eval_ids: list[str] | None = None
    y: list[Any] | None = None
    cohort: dict[str, Any] | None = None
    excluded: list[dict[str, Any]] | int | None = None
    excluded_summary: dict[str, int] | None = None
    n_bootstrap: int | None = None
    total_seconds: float | None = None
    versions: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    spec_path: str | None = None

    def entry(self, name: str | None) -> StrategyEntry | None:
        """The entry ``name`` of the comparison, ``None`` when it has none."""
        return (self.strategies or {}).get(name) if name is not None else None


# the sections of one assessed model (holomed.evaluation.trust.assess) and what fit adds
_FIT_SECTIONS = frozenset(
    {
        "metrics",
        "metrics_uncalibrated",
        "survival",
        "per_label",
        "calibration",
        "curves",
        "predictions",
        "contributions",
        "attention",
        "features",
        "explain_seconds",
        "deletion_curve",
        "fairness",
        "assess_seconds",
        "evaluation",
        "test_ids",
        "n_folds",
        "selected_by",
        "estimate",
        "attribution_plots",
    }
)


@dataclass
class FitRecord(Record):
    """``results.json`` of ``holomed fit`` (:func:`holomed.evaluation.fitrun.fit_run`).

    Header: ``dataset``, ``synthetic``, ``task``, ``classes``, the candidate (``fusion``
    its name, ``family``, ``seed``), ``n_train``/``n_test`` patients, ``cohort``,
    ``excluded`` (records, or their count), ``excluded_summary``, ``fit_seconds`` (s),
    ``history`` (of training), ``intended_use``, ``limitations``, ``versions``, ``spec``.
    Sections, present when the run has them: ``metrics`` and ``metrics_uncalibrated``
    (per metric), ``survival``, ``per_label``, ``calibration``, ``curves``,
    ``predictions``, ``contributions``, ``attention``, ``features``, ``deletion_curve``,
    ``fairness``, ``explain_seconds`` and ``assess_seconds`` (s), ``evaluation`` (how, in
    words), ``test_ids``, ``n_folds``, ``selected_by`` (the comparison run it deploys),
    ``estimate`` (that run's held-out metrics of the candidate: what a model trained on
    all patients can be expected to do) and ``attribution_plots``."""

    KIND: ClassVar[str | None] = "fit"
    OPTIONAL: ClassVar[frozenset[str]] = _FIT_SECTIONS

    kind: str | None = "fit"
    dataset: str | None = None
    synthetic: bool | None = None
    task: str | None = None
    classes: list[str] | None = None
    fusion: str | None = None
    family: str | None = None
    seed: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    cohort: dict[str, Any] | None = None
    excluded: list[dict[str, Any]] | int | None = None
    excluded_summary: dict[str, int] | None = None
    fit_seconds: float | None = None
    history: dict[str, Any] | list[Any] | None = None
    intended_use: str | None = None
    limitations: list[str] | None = None
    versions: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    metrics: dict[str, MetricSummary] | None = None
    metrics_uncalibrated: dict[str, MetricSummary] | None = None
    survival: dict[str, Any] | None = None
    per_label: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    curves: dict[str, Any] | None = None
    predictions: dict[str, Any] | None = None
    contributions: dict[str, Any] | None = None
    attention: dict[str, Any] | None = None
    features: dict[str, Any] | None = None
    explain_seconds: float | None = None
    deletion_curve: dict[str, Any] | None = None
    fairness: dict[str, Any] | None = None
    assess_seconds: float | None = None
    evaluation: str | None = None
    test_ids: list[str] | None = None
    n_folds: int | None = None
    selected_by: str | None = None
    estimate: dict[str, Any] | None = None
    attribution_plots: list[dict[str, Any]] | None = None


@dataclass
class RobustnessCurve(Record):
    """One metric against the missing rates: ``mean`` and ``sd`` over seeds, one value
    per rate."""

    mean: list[float | None] | None = None
    sd: list[float | None] | None = None


@dataclass
class RobustnessRecord(Record):
    """``robustness.json`` of ``holomed robustness``
    (:func:`holomed.evaluation.robustness.robustness`): on ``n_test`` test patients, for
    each entry, scenario (a modality, or ``random``) and metric, the curve over ``rates``
    (shares of test patients missing the modality): ``curves[entry][scenario][metric]``.
    Files written before records carried a kind have none."""

    KIND: ClassVar[str | None] = "robustness"
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"synthetic"})

    kind: str | None = "robustness"
    dataset: str | None = None
    synthetic: bool | None = None
    task: str | None = None
    rates: list[float] | None = None
    scenarios: list[str] | None = None
    metrics: list[str] | None = None
    seeds: list[int] | None = None
    n_test: int | None = None
    curves: dict[str, dict[str, dict[str, RobustnessCurve]]] | None = None


RunRecord = CompareRecord | FitRecord | RobustnessRecord
RECORDS: dict[str, type[Record]] = {
    "compare": CompareRecord,
    "fit": FitRecord,
    "robustness": RobustnessRecord,
}
# the keys without which a file of each kind is not that run's results
REQUIRED: dict[str, tuple[str, ...]] = {
    "compare": ("dataset", "task", "strategies", "leaderboard", "selected"),
    "fit": ("dataset", "task"),
    "robustness": ("rates", "scenarios", "curves"),
}


def kind_of(d: Mapping[str, Any]) -> str:
    """The kind of a results object: its ``kind``; without one, ``robustness`` for a
    robustness curve (``rates`` and ``scenarios``), else ``compare`` (older
    comparisons wrote no kind)."""
    kind = d.get("kind")
    if kind:
        return str(kind)
    return "robustness" if "rates" in d and "scenarios" in d else "compare"


def results_from_json(d: Mapping[str, Any], kind: str | None = None) -> RunRecord:
    """The record of a results object, by its kind (:func:`kind_of`); with ``kind``, the
    object must be of that kind (one without a kind is taken as it)."""
    if not isinstance(d, Mapping):
        raise ResultsError(f"expected a JSON object of results; got {_got(d)}")
    found = _found_kind(d, kind)
    return typing.cast(RunRecord, RECORDS[found].from_json(d))


def read_results(path: Path | str, kind: str | None = None) -> RunRecord:
    """The record of a results file (with ``kind``: it must be of that kind, see
    :func:`results_from_json`); :class:`ResultsError` naming the file when it is missing,
    unreadable, not JSON, of an unknown or other kind, lacks its kind's keys
    (``REQUIRED``) or has a field of the wrong type (named too)."""
    path = Path(path)
    if not path.is_file():
        why = "is a folder" if path.is_dir() else "not found"
        raise ResultsError(
            f"{path}: {why}; run `holomed fit`, `holomed compare` or `holomed robustness` "
            "with --out there"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: cannot be read ({err})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object of results; got {_got(data)}")
    try:
        found = _found_kind(data, kind)
        missing = [k for k in REQUIRED[found] if k not in data]
        if missing:
            raise ResultsError(
                f"not the results of a {found} run: missing key(s) {', '.join(missing)}"
            )
        return results_from_json(data, kind)
    except ResultsError as err:
        raise ResultsError(f"{path}: {err}") from None


def _found_kind(d: Mapping[str, Any], kind: str | None) -> str:
    found = kind_of(d) if kind is None or d.get("kind") else kind
    if found not in RECORDS:
        raise ResultsError(f"kind: unknown kind {found!r}; expected one of {', '.join(RECORDS)}")
    if kind is not None and found != kind:
        raise ResultsError(f"kind: expected {kind!r}; got {found!r}")
    return found


def write_results(record: Record, path: Path | str) -> Path:
    """Write ``record.to_json()`` to ``path`` (strict JSON, renamed into place)."""
    return write_json(path, record.to_json())


# -- field types -------------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in _NOT_FIELDS)


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _got(v: Any) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _wrong(where: str, expected: str, v: Any) -> ResultsError:
    return ResultsError(f"{where}: expected {expected}; got {_got(v)}")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


def _decode(tp: Any, v: Any, where: str) -> Any:
    """``v`` checked against the annotation ``tp`` (records decoded, lists copied)."""
    if tp is Any:
        return v
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        if v is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        errors = []
        for a in args:  # the first type that fits
            try:
                return _decode(a, v, where)
            except ResultsError as err:
                errors.append(err)
        inside = [e for e in errors if not str(e).startswith(f"{where}: ")]
        if inside:  # the right container with a wrong value inside: name that value
            raise inside[0]
        raise _wrong(where, " or ".join(_expected(a) for a in args), v)
    if origin is list:
        if not isinstance(v, list | tuple):
            raise _wrong(where, "a list", v)
        (item,) = typing.get_args(tp)
        return [_decode(item, x, f"{where}[{i}]") for i, x in enumerate(v)]
    if origin is dict:
        if not isinstance(v, dict):
            raise _wrong(where, "an object", v)
        item = typing.get_args(tp)[1]
        if item is Any:
            return v
        return {k: _decode(item, x, f"{where}[{k!r}]") for k, x in v.items()}
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_json(v, where)
    ok, expected = _SCALARS[tp]
    if not ok(v):
        raise _wrong(where, expected, v)
    return v


_SCALARS: dict[Any, tuple[Any, str]] = {
    str: (lambda v: isinstance(v, str), "a string"),
    bool: (lambda v: isinstance(v, bool | np.bool_), "true or false"),
    int: (lambda v: isinstance(v, int | np.integer) and not isinstance(v, bool), "an integer"),
    float: (_is_number, "a number"),
}


def _expected(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, Record)):
        return "an object"
    return _SCALARS[tp][1] if tp in _SCALARS else str(tp)


def _plain(v: Any) -> Any:
    """Records as dicts, recursively; other values as they are."""
    if isinstance(v, Record):
        return v.to_dict()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v
