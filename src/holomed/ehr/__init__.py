"""Cohorts from relational EHR tables (CSV, CSV.gz, Parquet), joined and windowed by
DuckDB SQL.

The spec's ``ehr:`` section names the tables, the unit of prediction (the *index*: one
row of one table, e.g. an admission, with its anchor time), the tables joined to it,
the target, the attributes kept for subgroup analysis, and how each modality is cut
from the tables::

    ehr:
      root: $HOLOMED_DATA/mimic_iv_demo           # relative to the spec file
      tables:
        admissions: hosp/admissions.csv.gz        # alias: path under root
        patients: hosp/patients.csv.gz
        labevents: hosp/labevents.csv.gz
        d_labitems: hosp/d_labitems.csv.gz
      index: {table: admissions, key: hadm_id, time: admittime, filter: "anchor_age >= 18"}
      joins: [{table: patients, keys: subject_id}]   # left joins; one row per index unit
      target: hospital_expire_flag                 # column or SQL expression
      group: subject_id                            # -> column 'group' of the target frame
      attributes: {sex: gender, age: anchor_age}   # name: column or SQL expression
      modalities:
        demographics: {kind: tabular, columns: [gender, anchor_age, insurance]}
        labs:
          kind: timeseries
          table: labevents
          key: hadm_id          # events column holding the index key
          time: charttime
          variable: itemid
          value: valuenum       # numeric value; value_text only explains what is not
          value_text: value
          dictionary: {table: d_labitems, key: itemid, label: label}
          items: [50912, 50983]
          window: [0, 24]       # hours after the anchor time, [start, end)

Expressions (``filter``, ``target``, ``group``, ``attributes``, tabular ``columns``,
timeseries ``time``/``variable``/``value``/``filter``/``index_key``) are DuckDB SQL over
the tables in scope, referred to by alias: the index table and its joins, or the events
table. A bare name is a column. The connection may read only the folders of the listed
tables (DuckDB's ``enable_external_access = false`` with ``allowed_directories``).

Output of :func:`ehr_frames` (what :func:`holomed.cohort.build_cohort` takes):

- ``frames[name]`` for a ``tabular`` modality: one row per index unit, indexed by the
  index key as text (index name ``id``), one column per feature;
- ``frames[name]`` for a ``timeseries`` modality: long form, columns ``id`` (str),
  ``time`` (float, hours since the unit's anchor time), ``variable`` (str), ``value``
  (float), sorted by id, time, variable;
- ``target``: indexed by id, the target column (named as the spec's
  ``target.column``), the attribute columns and, when ``group`` is set, ``group``.

Reading is honest: nothing is dropped without being counted. The counts are in
``target.attrs["ehr_report"]`` (a plain dict, see :func:`ehr_frames`); the per-unit
losses (a unit without anchor time, values that are not numbers per unit and variable)
are also in one modality frame's ``attrs["reading_report"]``, which ``build_cohort``
copies into ``cohort.excluded``. Each event is counted once, under the first reason that
applies, in this order: ``no_key``, ``unmatched_key`` (its key is no index unit),
``unit_excluded`` (its unit failed the index filter or has no anchor time),
``item_not_selected``, ``excluded_by_filter``, ``no_time``, ``before_window``,
``after_window``, ``non_numeric``, else ``kept``. With ``index_key`` (events matched on a
column other than the index key, e.g. labs by ``subject_id``), an event that matches
several units is counted once per unit.
"""

# One idea per file: holomed.spec.ehr (the spec's ehr: section, validated when the spec
# loads), sql (identifiers, literals, keys and times as SQL), tables (the tables opened in
# DuckDB, with checks that name file and column), index (the units of prediction), series
# (a timeseries cut from an events table, every event counted), frames (ehr_frames: all
# of it put together).

from __future__ import annotations

from holomed.ehr.frames import ehr_frames
from holomed.ehr.series import STATUSES
from holomed.spec.ehr import (
    DictionarySpec,
    EHRSpec,
    IndexSpec,
    JoinSpec,
    TableSpec,
    TabularSource,
    TimeseriesSource,
    validate_ehr,
)

__all__ = [
    "STATUSES",
    "DictionarySpec",
    "EHRSpec",
    "IndexSpec",
    "JoinSpec",
    "TableSpec",
    "TabularSource",
    "TimeseriesSource",
    "ehr_frames",
    "validate_ehr",
]
