"""One compliance suite for every modality kind in the registry (the timm / sklearn
pattern, as ``tests/fusion/test_compliance.py`` is for fusion strategies): registering
a kind, with a tiny example in ``tests/kinds_examples.py``, is enough to have it tested.

For every kind x every fusion strategy, on a tiny cohort of the kind beside a small
table: fit, predictions under any missing pattern (a patient with no modality
included), ``predict_present`` agreeing with masking the cohort, a bundle round trip
with identical predictions, and finite modality Shapley values that add up. Per kind:
garbage in an absent row (NaN, huge numbers, text, a path to a missing or corrupt
file) is never read, neither at prediction nor at fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from kinds_examples import BUILDERS, COLUMN, GARBAGE, WITHOUT_CLIN, WITHOUT_M, KindExample, N

from holomed.bundle import save_bundle
from holomed.candidates import load_bundle
from holomed.cohort import Cohort
from holomed.errors import CohortError
from holomed.explain.modality import modality_shapley
from holomed.fusion import fusion_names
from holomed.modalities import get_modality, modality_names
from holomed.modalities.base import LazyRows
from holomed.model import Model

# the kinds holomed ships (tests may register toy kinds of their own, e.g. test_extending)
KINDS = [
    k for k in modality_names() if get_modality(k).preprocessor.__module__.startswith("holomed.")
]
STRATEGIES = fusion_names()
# present patients of ``m`` whose row is made absent and filled with garbage
VICTIMS = [2, 5, 9, 14]
# Known library bugs: (kind, garbage) -> reason. Strict xfail: fixing the bug turns the
# case into a failure until the entry is removed.
KNOWN_BUGS: dict[tuple[str, str], str] = {}


def test_every_registered_kind_has_an_example():
    assert set(BUILDERS) == set(KINDS), "add a builder to tests/kinds_examples.py"
    for expected in ("tabular", "omics", "timeseries", "signal", "image", "text"):
        assert expected in KINDS


# -- examples and fits, built once per module --------------------------------------------


class Examples:
    """Each kind's example, built on first use in its own folder."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.built: dict[str, KindExample] = {}

    def __getitem__(self, kind: str) -> KindExample:
        if kind not in self.built:
            self.built[kind] = BUILDERS[kind](self.factory.mktemp(f"kind-{kind}"))
        return self.built[kind]


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Examples:
    return Examples(tmp_path_factory)


_FITS: dict[tuple[str, str], Model] = {}


def fitted(ex: KindExample, fusion: str) -> Model:
    key = (ex.kind, fusion)
    if key not in _FITS:
        _FITS[key] = Model(ex.spec, fusion=fusion, seed=0).fit(ex.cohort)
    return _FITS[key]


def masked(cohort: Cohort, rows: list[int]) -> Cohort:
    """``cohort`` with ``m`` absent for ``rows`` (on top of its own gaps)."""
    pres = cohort.presence()
    m = pres["m"].copy()
    m[rows] = False
    return cohort.with_presence({**pres, "m": m})


def with_garbage(cohort: Cohort, rows: list[int], column: str | None, value) -> Cohort:
    """``cohort`` whose ``m`` rows ``rows`` hold ``value`` (in ``column``, or in every
    column); the presence masks are left as they are."""
    md = cohort.modalities["m"]
    vals: pd.DataFrame = md.values.copy()
    for col in [column] if column else list(vals.columns):
        cells = list(vals[col])
        for i in rows:
            cells[i] = list(value) if isinstance(value, list) else value
        same = isinstance(value, float) and vals[col].dtype.kind == "f"  # else: object
        vals[col] = pd.Series(cells, index=vals.index, dtype=vals[col].dtype if same else object)
    mods = {**cohort.modalities, "m": dataclasses.replace(md, values=vals)}
    return dataclasses.replace(cohort, modalities=mods)


def missing_pattern(cohort: Cohort) -> Cohort:
    """``m`` also absent for every third patient; patient 0 (who has no ``clin``) then
    has no modality at all."""
    out = masked(cohort, [0, *range(3, N, 3)])
    pres = out.presence()
    assert not pres["clin"][0] and not pres["m"][0], "patient 0 should have nothing"
    assert pres["clin"].any() and pres["m"].any()
    return out


# -- the example is what it claims ----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_example_has_the_kind_and_its_gaps(examples, kind):
    ex = examples[kind]
    c = ex.cohort
    assert len(c) == N and set(c.modalities) == {"clin", "m"}
    assert c.modalities["m"].kind == kind == get_modality(kind).name
    assert c.modalities["m"].present.sum() == N - WITHOUT_M
    assert c.modalities["clin"].present.sum() == N - WITHOUT_CLIN
    assert all(c.modalities["m"].present[VICTIMS]), "victims must have the modality"
    assert ex.garbage, "name at least one garbage value an absent row may hold"
    if kind == "image":  # the example reads its rows lazily, from the disk cache
        x, _ = fitted(ex, "joint").transform(c)
        assert isinstance(x["m"], LazyRows)


# -- every kind through every strategy ----------------------------------------------------


@pytest.mark.parametrize("fusion", STRATEGIES)
@pytest.mark.parametrize("kind", KINDS)
def test_kind_through_every_strategy(examples, kind, fusion, tmp_path):
    ex = examples[kind]
    m = fitted(ex, fusion)
    assert m.preprocessors_["m"].kind == kind

    # predictions under a missing pattern, a patient with nothing included
    c = missing_pattern(ex.cohort)
    proba = m.predict_proba(c)
    assert proba.shape == (N, 2) and np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    assert m.predict(c).shape == (N,)

    # masking by predict_present is masking the cohort
    np.testing.assert_allclose(
        m.predict_present(ex.cohort, c.presence()), proba, rtol=1e-6, atol=1e-7
    )

    # bundle round trip: nothing pickled, identical predictions
    save_bundle(m, tmp_path / "bundle")
    assert not list((tmp_path / "bundle").rglob("*.pkl"))
    back = load_bundle(tmp_path / "bundle")
    assert back.fusion_name == fusion and back.preprocessors_["m"].kind == kind
    np.testing.assert_array_equal(back.predict_proba(c), proba)

    # modality Shapley values: finite, zero where the patient lacks the modality, and
    # per patient they add up to score(all) - score(none) (efficiency)
    sh = modality_shapley(m, c)
    assert set(sh["global"]) == {"clin", "m"}
    assert all(np.isfinite(v) for v in sh["global"].values())
    per = {k: np.asarray(v) for k, v in sh["patient"].items()}
    assert all(np.isfinite(v).all() and v.shape == (N,) for v in per.values())
    for k, v in per.items():
        assert (v[~c.modalities[k].present] == 0).all(), k
    gap = np.asarray(sh["patient_score"]) - np.asarray(sh["patient_base"])
    np.testing.assert_allclose(per["clin"] + per["m"], gap, atol=1e-9)


# -- absent rows are never read ----------------------------------------------------------

GARBAGE_CASES = [
    pytest.param(
        kind,
        name,
        id=f"{kind}-{name}",
        marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[(kind, name)])]
        if (kind, name) in KNOWN_BUGS
        else [],
    )
    for kind in KINDS
    for name in GARBAGE.get(kind, {})
]


def test_every_kind_names_its_garbage():
    assert set(GARBAGE) == set(KINDS) and all(GARBAGE.values())


def _check_never_read(model: Model, clean: Cohort, bad: Cohort, where: str) -> None:
    """Same predictions from ``clean`` and ``bad`` (which differ in absent rows only),
    as a cohort, through ``predict_present`` with another mask, and per modality
    Shapley value."""
    np.testing.assert_array_equal(model.predict_proba(bad), model.predict_proba(clean), where)
    other = missing_pattern(clean).presence()
    np.testing.assert_array_equal(
        model.predict_present(bad, other), model.predict_present(clean, other), where
    )
    a, b = modality_shapley(model, bad), modality_shapley(model, clean)
    assert a["patient"] == b["patient"] and a["global"] == b["global"], where


@pytest.mark.parametrize(("kind", "garbage"), GARBAGE_CASES)
def test_absent_rows_are_never_read_at_prediction(examples, kind, garbage):
    """Rows of ``m`` marked absent and filled with garbage: every strategy's
    predictions are those of the same rows absent with their real values."""
    ex = examples[kind]
    clean = masked(ex.cohort, VICTIMS)
    bad = with_garbage(clean, VICTIMS, ex.column, ex.garbage[garbage])
    for fusion in STRATEGIES:
        _check_never_read(fitted(ex, fusion), clean, bad, f"{kind} {fusion} {garbage}")


def _fit_cases() -> list:
    """Per kind, every garbage at once (one per row); each known bug in a case of its
    own, marked."""
    out = []
    for kind in KINDS:
        known = [n for n in GARBAGE.get(kind, {}) if (kind, n) in KNOWN_BUGS]
        rest = [n for n in GARBAGE.get(kind, {}) if n not in known]
        out.append(pytest.param(kind, rest, id=f"{kind}-all"))
        for n in known:
            reason = KNOWN_BUGS[(kind, n)]
            mark = pytest.mark.xfail(strict=True, reason=reason)
            out.append(pytest.param(kind, [n], id=f"{kind}-{n}", marks=mark))
    return out


@pytest.mark.parametrize(("kind", "names"), _fit_cases())
def test_absent_rows_are_never_read_at_fit(examples, kind, names):
    """Training on a cohort whose absent rows hold garbage gives the model trained on
    the same rows absent with their real values (preprocessors fit on present rows
    only; the network never sees absent values): identical weights and predictions,
    for input-level (early) and token-level (attention) fusion."""
    ex = examples[kind]
    rows = list(range(N - WITHOUT_M - len(names), N - WITHOUT_M))  # present ones, made absent
    clean = masked(ex.cohort, rows)
    bad = clean
    for i, name in zip(rows, names, strict=True):
        bad = with_garbage(bad, [i], ex.column, ex.garbage[name])
    for fusion in ("early", "attention"):
        a = Model(ex.spec, fusion=fusion, seed=0).fit(clean)
        b = Model(ex.spec, fusion=fusion, seed=0).fit(bad)
        sa, sb = a.net_.state_dict(), b.net_.state_dict()
        assert list(sa) == list(sb), fusion
        for k, v in sa.items():
            np.testing.assert_array_equal(sb[k].numpy(), v.numpy(), f"{fusion} {k}")
        np.testing.assert_array_equal(b.predict_proba(clean), a.predict_proba(clean), fusion)
        _check_never_read(b, clean, bad, f"{kind} {fusion} fit")


# Lazy kinds whose error for an unreadable file is not yet the library's own (named) one.
KNOWN_FILE_ERROR_BUGS: dict[str, str] = {}


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(
            k,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FILE_ERROR_BUGS[k])]
            if k in KNOWN_FILE_ERROR_BUGS
            else [],
        )
        for k in KINDS
        if COLUMN.get(k) in ("path", "paths")
    ],
)
def test_missing_file_of_a_present_row_is_a_named_error(examples, kind):
    """The control of the lazy kinds' garbage: the same missing file on a row marked
    present is the library's error (:class:`CohortError`) naming the file, never a
    silent guess nor a bare ``OSError``."""
    ex = examples[kind]
    m = fitted(ex, "joint")
    bad = with_garbage(ex.cohort, [VICTIMS[0]], ex.column, ex.garbage["gone"])
    with pytest.raises(CohortError, match="does-not-exist"):
        m.predict_proba(bad)
