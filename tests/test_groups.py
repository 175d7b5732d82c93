"""Group-wise splits (``split.group``): rows that belong to one person (admissions,
epochs, recordings) never straddle a split — outer folds, hold-out, inner selection
folds and the validation carve-out alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from holomed.cohort import build_cohort, carve_validation, inner_folds, patient_splits
from holomed.errors import CohortError
from holomed.evaluation.compare import compare
from holomed.spec import parse_spec


def _cohort(method: str, n_people: int = 30):
    rng = np.random.default_rng(0)
    person = np.repeat([f"P{i:02d}" for i in range(n_people)], rng.integers(1, 5, n_people))
    ids = [f"A{i:03d}" for i in range(len(person))]
    x = rng.normal(size=(len(ids), 3))
    y = (x[:, 0] > 0).astype(int)
    spec = parse_spec(
        {
            "modalities": [{"name": "labs", "kind": "tabular"}],
            "target": {"column": "y"},
            "split": {"method": method, "n_folds": 3, "group": "person"},
            "fusion": {"name": "late", "hidden": 8},
            "training": {"max_epochs": 2, "val_fraction": 0.25},
            "evaluation": {
                "seeds": 1,
                "n_bootstrap": 0,
                "selection_folds": 2,
                "ablations": False,
                "baselines": False,
                "explain": False,
            },
        }  # fmt: skip
    )
    frames = {"labs": pd.DataFrame(x, index=ids, columns=["a", "b", "c"])}
    target = pd.DataFrame({"y": y, "person": person}, index=ids)
    return spec, build_cohort(spec, frames, target)


@pytest.mark.parametrize("method", ["kfold", "holdout"])
def test_outer_splits_keep_each_person_on_one_side(method):
    spec, cohort = _cohort(method)
    assert cohort.summary()["groups"] == 30
    splits = patient_splits(cohort, spec.split)
    assert len(splits) == (3 if method == "kfold" else 1)
    for tr, te in splits:
        assert not set(cohort.groups[tr]) & set(cohort.groups[te])
    if method == "kfold":
        assert sorted(np.concatenate([te for _, te in splits])) == list(range(len(cohort)))


def test_inner_folds_and_validation_carve_respect_groups():
    _, cohort = _cohort("kfold")
    for a, b in inner_folds(cohort.y, 3, 0, "binary", cohort.groups):
        assert not set(cohort.groups[a]) & set(cohort.groups[b])
    a, b = carve_validation(cohort.y, 0.25, 0, "binary", cohort.groups)
    assert len(b) and not set(cohort.groups[a]) & set(cohort.groups[b])
    assert sorted(np.r_[a, b]) == list(range(len(cohort)))


def test_compare_runs_group_wise_and_missing_group_values_are_errors():
    spec, cohort = _cohort("kfold")
    res, _ = compare(spec, cohort, ["late"], seeds=1)
    assert "late" in res["strategies"] and res["n_evaluated"] == len(cohort)
    frames = {"labs": pd.DataFrame({"a": [1.0, 2.0]}, index=["x", "y"])}
    with pytest.raises(CohortError, match="group column 'person'"):
        build_cohort(
            spec, frames, pd.DataFrame({"y": [0, 1], "person": ["p", None]}, index=["x", "y"])
        )
    with pytest.raises(CohortError, match="split.group column 'who'"):
        build_cohort(
            spec.model_copy(update={"split": spec.split.model_copy(update={"group": "who"})}),
            frames,
            pd.DataFrame({"y": [0, 1]}, index=["x", "y"]),
        )
