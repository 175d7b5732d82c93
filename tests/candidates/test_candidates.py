"""The candidate contract, run over every family: fit, predict with any modality missing,
bundle round trip (identical predictions, no pickle), attributions; plus the pieces of
selection (Caruana, stacking's mask-awareness)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import holomed.candidates as C
from holomed.bundle import save_bundle, verify_bundle
from holomed.candidates import load_bundle
from holomed.cohort import load_cohort, patient_splits
from holomed.errors import BundleError
from holomed.spec import parse_spec
from holomed.synthetic import synthetic_spec_dict

FAMILIES = [
    ("lr_early", None),
    ("lr_late", None),
    ("gbm", {"n_estimators": 30}),
    ("rf", {"n_estimators": 40}),
    ("lr_cross", {"max_products": 300}),  # reduced: principal components in the products
    ("late", None),
    ("attention", None),
    ("stack", {"learners": ["lr_early", "gbm"]}),
    ("stack", {"learners": ["lr_l1", "joint"]}),  # a neural per-modality learner too
    ("ensemble", {"members": [{"name": "lr_early", "weight": 2}, {"name": "joint", "weight": 1}]}),
    ("bag", {"base": "joint", "n": 2}),
]


@pytest.fixture(scope="module")
def data():
    d = synthetic_spec_dict(n_patients=220, seed=5)
    d["training"].update({"max_epochs": 3, "patience": 2})
    d["evaluation"].update({"selection_folds": 2})
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    tr, te = patient_splits(cohort, spec.split)[0]
    return spec, cohort.subset(tr), cohort.subset(te)


@pytest.mark.parametrize("name,params", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_round_trips_through_a_bundle(data, name, params, tmp_path, monkeypatch):
    spec, train, test = data
    model = C.make_candidate(spec, name, 0, None, params).fit(train)
    p = model.predict_proba(test)
    assert p.shape == (len(test), 2) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)
    # a pattern of missing modalities: expression gone for everyone, methylation for half
    pres = test.presence()
    pres["expression"] = np.zeros(len(test), bool)
    pres["methylation"] = pres["methylation"] & (np.arange(len(test)) % 2 == 0)
    q = model.predict_present(test, pres)
    assert np.isfinite(q).all()
    save_bundle(model, tmp_path / "b")
    # a classical, stacked or ensemble model: the spec's fusion settings are said not to
    # apply, and how to train it again is given
    spec_text = (tmp_path / "b" / "spec.yaml").read_text()
    again = (
        "holomed fit spec.yaml --from COMPARE_RUN"
        if model.family in ("stacking", "ensemble")
        else f"holomed fit spec.yaml --fusion {model.name} --all"
    )
    assert (again in spec_text) == (model.family != "neural"), spec_text[:200]

    def refuse(*_a, **_k):
        raise AssertionError("a bundle load unpickled something")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded = load_bundle(tmp_path / "b")
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.predict_proba(test), p)
    np.testing.assert_array_equal(loaded.predict_present(test, pres), q)


def test_an_absent_modality_is_never_read(data):
    """Values of absent rows are replaced by garbage: no family's prediction changes."""
    spec, train, test = data
    for name, params in FAMILIES[:8]:
        model = C.make_candidate(spec, name, 0, None, params).fit(train)
        before = model.predict_proba(test)
        m = test.modalities["methylation"]
        frame = m.values.copy()
        absent = ~m.present
        assert absent.any()
        frame.loc[frame.index[absent], :] = 1e6
        test.modalities["methylation"] = type(m)(
            m.kind, frame, m.present.copy(), list(m.feature_names)
        )
        try:
            np.testing.assert_allclose(model.predict_proba(test), before, err_msg=name)
        finally:
            test.modalities["methylation"] = m


def test_classical_attributions_are_exact_shap(data):
    spec, train, test = data
    lr = C.make_candidate(spec, "lr_early", 0).fit(train)
    attr = lr.feature_attributions(test)
    # linear SHAP with the training-mean (0) background sums to the logit minus intercept
    # (presence indicators aside)
    total = sum(np.nan_to_num(a).sum(1) for a in attr.values())
    x = lr._design(test, True)
    logit = x @ lr.model_.coef[0] + lr.model_.intercept[0]
    n_ind = len(lr.preprocessors_)
    pres_part = x[:, -n_ind:] @ lr.model_.coef[0][-n_ind:]
    np.testing.assert_allclose(total, logit - lr.model_.intercept[0] - pres_part, atol=1e-8)
    gbm = C.make_candidate(spec, "gbm", 0, None, {"n_estimators": 20}).fit(train)
    a = gbm.feature_attributions(test)
    assert set(a) == set(spec.modality_names)


def test_caruana_prefers_the_better_member_and_can_mix():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = np.clip(y * 0.6 + rng.normal(0.2, 0.25, 400), 0.01, 0.99)
    other = np.clip(y * 0.5 + rng.normal(0.25, 0.3, 400), 0.01, 0.99)
    noise = rng.random(400)
    preds = {
        n: np.stack([1 - p, p], 1) for n, p in [("good", good), ("other", other), ("noise", noise)]
    }
    w = C.caruana(preds, y, "binary", "auroc")
    assert abs(sum(w.values()) - 1) < 1e-9
    assert w.get("good", 0) >= max(w.get("other", 0), w.get("noise", 0))
    assert w.get("noise", 0) <= 0.1


def test_stack_gives_no_vote_to_an_absent_modality(data):
    spec, train, test = data
    st = C.make_candidate(spec, "stack", 0, None, {"learners": ["lr_early"]}).fit(train)
    pres = test.presence()
    x_all = st.predict_present(test, pres)
    pres2 = dict(pres)
    pres2["noise"] = np.zeros(len(test), bool)
    # a patient without 'noise' gets the same prediction whatever 'noise' holds
    rows = ~pres["noise"]
    np.testing.assert_allclose(st.predict_present(test, pres2)[rows], x_all[rows])


def test_tampered_bundles_are_refused_naming_the_file(data, tmp_path, monkeypatch):
    spec, train, test = data
    model = C.make_candidate(spec, "gbm", 0, None, {"n_estimators": 10}).fit(train)
    path = save_bundle(model, tmp_path / "b")
    verify_bundle(path)
    state = json.loads((path / "state.json").read_text())
    state["classes"] = state["classes"][::-1]
    (path / "state.json").write_text(json.dumps(state))
    with pytest.raises(BundleError, match="state.json"):
        load_bundle(path)
    path = save_bundle(model, tmp_path / "c")
    lgbm = next((path / "models").iterdir())
    lgbm.write_text(lgbm.read_text().replace("tree", "tree ", 1))
    with pytest.raises(BundleError, match=lgbm.name):
        load_bundle(path)
    # a file added anywhere, at the top or in a new folder, is refused naming it
    for extra in ("extra.txt", "sub/extra.py"):
        path = save_bundle(model, tmp_path / "x")
        (path / extra).parent.mkdir(exist_ok=True)
        (path / extra).write_text("x")
        with pytest.raises(BundleError, match=rf"{extra}: not listed in the manifest"):
            load_bundle(path)
    # only an earlier bundle is replaced: a file or a folder of other things is refused
    (tmp_path / "notes.csv").write_text("id\n1\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "patients.csv").write_text("id\n1\n")
    for target in (tmp_path / "notes.csv", tmp_path / "mine"):
        with pytest.raises(BundleError, match="is not a holomed bundle"):
            save_bundle(model, target)
    assert (tmp_path / "mine" / "patients.csv").exists() and (tmp_path / "notes.csv").exists()
    (tmp_path / "empty").mkdir()
    verify_bundle(save_bundle(model, tmp_path / "empty"))
    # a site key: unsigned bundles are refused, signed ones load
    monkeypatch.setenv("HOLOMED_BUNDLE_KEY", "site-secret")
    with pytest.raises(BundleError, match="signature"):
        load_bundle(save_bundle_unsigned(model, tmp_path / "d", monkeypatch))
    signed = save_bundle(model, tmp_path / "e")
    np.testing.assert_array_equal(
        load_bundle(signed).predict_proba(test), model.predict_proba(test)
    )


def save_bundle_unsigned(model, path, monkeypatch):
    monkeypatch.delenv("HOLOMED_BUNDLE_KEY")
    out = save_bundle(model, path)
    monkeypatch.setenv("HOLOMED_BUNDLE_KEY", "site-secret")
    return out


def test_a_bundle_is_replaced_whole(data, tmp_path, monkeypatch):
    """A save that fails half-way leaves the earlier bundle untouched and loadable."""
    spec, train, test = data
    a = C.make_candidate(spec, "lr_early", 0).fit(train)
    path = save_bundle(a, tmp_path / "b")
    before = load_bundle(path).predict_proba(test)
    import holomed.bundle as B

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(B, "versions", boom)
    b = C.make_candidate(spec, "gbm", 0, None, {"n_estimators": 5}).fit(train)
    with pytest.raises(OSError):
        save_bundle(b, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(load_bundle(path).predict_proba(test), before)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unknown_candidate_names_the_choices(data):
    spec, _, _ = data
    with pytest.raises(ValueError, match="unknown candidate 'xgb'.*gbm"):
        C.make_candidate(spec, "xgb")
    assert C.canonical("baseline:gbm") == "gbm"


def test_candidates_resolve_by_name_in_a_fresh_interpreter():
    """The registry fills itself: no need to import holomed.candidates first."""
    import subprocess
    import sys

    code = (
        "from holomed.candidate import candidate_class, candidate_names\n"
        "assert candidate_class('gbm').family == 'classical'\n"
        "assert {'stack', 'ensemble', 'lr_l1', 'late'} <= set(candidate_names())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_a_forest_averages_trees_and_only_tree_learners_declare_a_search_space(data):
    """``rf`` is LightGBM in random-forest mode (bagged rows, averaged trees, no learning
    rate), a different model from ``gbm``; the linear learners pick their penalty by
    internal CV, so a search has nothing to vary for them."""
    spec, train, test = data
    rf = C.make_candidate(spec, "rf", 0, None, {"n_estimators": 40}).fit(train)
    gbm = C.make_candidate(spec, "gbm", 0, None, {"n_estimators": 40}).fit(train)
    booster = rf.model_.boosters[0][0]  # the first (only) booster of the bag
    assert "[boosting: rf]" in booster.model_to_string()
    assert not np.allclose(rf.predict_proba(test), gbm.predict_proba(test))
    assert rf.describe()["boosting_type"] == "rf"
    # TreeSHAP of a forest adds up to the logit of its (averaged) prediction, as for gbm
    x = rf._design(test, False)
    for model in (rf.model_, type(rf.model_).from_state(*rf.model_.state())):
        b = model.boosters[0][0]
        bias = np.asarray(b.predict(x, pred_contrib=True))[:, -1] / b.current_iteration()
        p = model.predict(x, 2)[:, 1]
        np.testing.assert_allclose(model.shap(x).sum(1) + bias, np.log(p / (1 - p)), atol=1e-8)
    assert "learning_rate" not in C.candidate_class("rf").search_space(spec)
    with pytest.raises(ValueError, match="both 1"):
        C.make_candidate(spec, "rf", 0, None, {"subsample": 1.0, "colsample_bytree": 1.0}).fit(
            train
        )
    assert C.candidate_class("gbm").search_space(spec)
    assert not C.candidate_class("lr_early").search_space(spec)
    assert not C.candidate_class("lr_l1").search_space(spec)


@pytest.mark.parametrize("name", ["lr_early", "gbm", "joint"])
def test_cohorts_that_do_not_fit_the_model_are_refused_not_scored(data, name):
    from dataclasses import replace

    from holomed.errors import CohortError

    spec, train, test = data
    model = C.make_candidate(spec, name, 0, None, None).fit(train)
    renamed = replace(test, modalities={f"x_{k}": v for k, v in test.modalities.items()})
    with pytest.raises(CohortError, match="are none of the model's"):
        model.predict_proba(renamed)  # was: every patient predicted with no data
    flipped = replace(test, classes=list(test.classes)[::-1])
    with pytest.raises(CohortError, match="not the model's"):
        model.evaluate(flipped)  # was: labels read as the other class
    y = np.asarray(test.y, dtype=float).copy()
    y[0] = np.nan
    with pytest.raises(CohortError, match="1 label"):
        model.evaluate(replace(test, y=y))


@pytest.mark.parametrize("name", ["joint", "gbm", "lr_late", "stack"])
def test_a_candidate_used_before_fit_says_so(data, name):
    from holomed.errors import NotFittedError

    spec, _, test = data
    model = C.make_candidate(spec, name, 0, None, None)
    assert not hasattr(model, "task_")  # still an AttributeError to hasattr
    for call in (model.predict_proba, model.evaluate):
        with pytest.raises(NotFittedError, match="is not fitted.*call fit"):
            call(test)
    with pytest.raises(ValueError, match=r"modalities \['expresion'\] are not in the spec"):
        C.make_candidate(spec, name, 0, ["expresion"], None)


def test_a_candidate_name_is_never_silently_replaced():
    from holomed.errors import RegistryError

    class Mine(C.Candidate):
        pass

    with pytest.raises(RegistryError, match="'gbm' is already registered"):
        C.register_candidate("gbm")(Mine)


def test_parameters_a_learner_would_ignore_are_refused(data):
    spec, train, _ = data
    with pytest.raises(ValueError, match=r"lr_early: takes no parameters.*\['C'\]"):
        C.make_candidate(spec, "lr_early", 0, None, {"C": 100}).fit(train)
    with pytest.raises(ValueError, match=r"\['n_estimator'\] are not LightGBM parameters"):
        C.make_candidate(spec, "gbm", 0, None, {"n_estimator": 5}).fit(train)
    C.make_candidate(spec, "gbm", 0, None, {"n_estimators": 5}).fit(train)


@pytest.mark.parametrize("name", ["joint", "gbm", "lr_early", "stack"])
def test_masks_never_claim_data_that_is_absent_and_may_name_some_modalities(data, name):
    spec, train, test = data
    model = C.make_candidate(spec, name, 0, None, None).fit(train)
    everyone = {n: np.ones(len(test), bool) for n in test.modalities}
    out = model.predict_present(test, everyone)  # absent rows stay absent: no NaN
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, model.predict_proba(test), atol=1e-6)
    drop = {"expression": np.zeros(len(test), bool)}  # the others keep their own masks
    np.testing.assert_allclose(
        model.predict_present(test, drop),
        model.predict_proba(test.with_presence(drop)),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="mask of modality 'expression': 3 rows"):
        model.predict_present(test, {"expression": np.ones(3, bool)})


def test_python_api_misuse_gets_named_errors(data, tmp_path):
    import holomed
    from holomed.errors import CohortError
    from holomed.spec import SpecError

    spec, train, test = data
    with pytest.raises(SpecError, match="takes a spec file's path; got dict"):
        holomed.load_spec({"modalities": []})
    with pytest.raises(TypeError, match="takes a Spec"):
        holomed.Model({"modalities": []})
    with pytest.raises(TypeError, match="takes a Spec"):
        C.make_candidate("examples/rosmap.yaml", "gbm")
    assert len(test.subset([])) == 0 and len(test.subset(np.ones(len(test), bool))) == len(test)
    with pytest.raises(IndexError, match="positions outside"):
        test.subset([len(test)])
    model = C.make_candidate(spec, "gbm", 0, None, {"n_estimators": 5}).fit(train)
    with pytest.raises(CohortError, match="no patient"):
        model.evaluate(test.subset([]))


def _three_class_cohort():
    import pandas as pd

    from holomed.cohort import build_cohort

    rng = np.random.default_rng(0)
    n = 240
    ids = [f"P{i:03d}" for i in range(n)]
    a, b = rng.normal(size=(n, 6)), rng.normal(size=(n, 4))
    label = np.array(["low", "mid", "high"])[np.digitize(a[:, 0] + b[:, 0], [-0.6, 0.6])]
    keep_b = rng.random(n) > 0.2
    frames = {
        "a": pd.DataFrame(a, index=ids, columns=[f"a{i}" for i in range(6)]),
        "b": pd.DataFrame(b, index=ids, columns=[f"b{i}" for i in range(4)]).loc[keep_b],
    }
    spec = parse_spec(
        {
            "modalities": [{"name": "a", "kind": "omics"}, {"name": "b", "kind": "omics"}],
            "target": {"column": "y", "task": "multiclass"},
            "split": {"method": "holdout", "test_size": 0.3},
            "fusion": {"name": "joint", "hidden": 16},
            "training": {"max_epochs": 3, "patience": 2},
            "evaluation": {"selection_folds": 3},
        }
    )
    return spec, build_cohort(spec, frames, pd.DataFrame({"y": label}, index=ids))


@pytest.mark.parametrize("name", ["lr_early", "lr_l1", "gbm", "lr_late", "lr_cross", "stack"])
def test_a_class_absent_from_training_keeps_every_column_with_its_class(name, tmp_path):
    """A rare class outside an inner fold's training patients: the other classes keep
    their own columns (a 'mid' patient must not be scored as 'low'), and it round-trips."""
    spec, cohort = _three_class_cohort()
    low = cohort.classes.index("low")
    train = cohort.subset(np.flatnonzero(cohort.y != low)[:150])
    test = cohort.subset(np.arange(150, len(cohort)))
    model = C.make_candidate(spec, name, 0).fit(train)
    p = model.predict_proba(test)
    assert p.shape == (len(test), 3)
    assert np.all(p[:, low] < 0.05)  # never seen: (almost) no probability
    y = test.y.astype(int)
    for cls in (cohort.classes.index("mid"), cohort.classes.index("high")):
        assert (p[y == cls].argmax(1) == cls).mean() > 0.6, cohort.classes[cls]
    again = load_bundle(save_bundle(model, tmp_path / "b"))
    np.testing.assert_array_equal(again.predict_proba(test), p)


def test_an_ensemble_takes_masks_that_name_some_modalities(data):
    spec, train, test = data
    members = [{"name": "lr_early", "weight": 1}, {"name": "lr_late", "weight": 1}]
    model = C.make_candidate(spec, "ensemble", 0, None, {"members": members}).fit(train)
    drop = {"expression": np.zeros(len(test), bool)}
    want = model.predict_proba(test.with_presence(drop))
    np.testing.assert_allclose(model.predict_present(test, drop), want, atol=1e-9)
    np.testing.assert_allclose(model.predictor(test)(drop), want, atol=1e-9)


def test_edited_bundle_states_are_refused_naming_the_file(data, tmp_path, monkeypatch):
    """Content that passes the manifest (re-hashed, no site key) but cannot be a model:
    a BundleError naming state.json, never a raw AttributeError or NaN predictions."""
    monkeypatch.delenv("HOLOMED_BUNDLE_KEY", raising=False)
    spec, train, test = data
    members = [{"name": "lr_early", "weight": 1}, {"name": "gbm", "weight": 1}]
    model = C.make_candidate(spec, "ensemble", 0, None, {"members": members}).fit(train)

    def edited(tag, edit):
        path = save_bundle(model, tmp_path / tag)
        _rewrite_state(path, edit(json.loads((path / "state.json").read_text())))
        return path

    def zero_weights(s):
        s["weights"] = [0.0, 0.0]
        return s

    def member_not_dict(s):
        s["members"][0] = 3
        return s

    for tag, edit in (
        ("list", lambda s: [s]),
        ("zero", zero_weights),
        ("member", member_not_dict),
    ):
        with pytest.raises(BundleError, match="state.json: does not describe a usable model"):
            load_bundle(edited(tag, edit))


def test_ensemble_selection_without_a_defined_objective_gives_no_ensemble():
    y = np.zeros(20)  # one class: AUROC is undefined for every member
    preds = {"a": np.c_[np.full(20, 0.4), np.full(20, 0.6)], "b": np.full((20, 2), 0.5)}
    assert C.caruana(preds, y, "binary", "auroc") == {}
    with pytest.raises(ValueError, match="ensemble weights"):
        C.blend([preds["a"], preds["b"]], [0.0, 0.0])


def test_bagged_trees_average_log_odds_exactly_and_round_trip(data, tmp_path):
    """``evaluation.tree_bags``: boosters of different seeds, log-odds averaged; TreeSHAP
    stays exact for the averaged score; the bundle holds every booster."""
    from holomed.candidates.classical import Boosted, _sigmoid
    from holomed.spec import override_spec

    spec, train, test = data
    bagged = override_spec(spec, {"evaluation.tree_bags": 3})
    for name in ("gbm", "rf"):
        model = C.make_candidate(bagged, name, 0, None, {"n_estimators": 20}).fit(train)
        bag = model.model_.boosters[0]
        assert len(bag) == 3 and len({b.model_to_string() for b in bag}) == 3
        single = C.make_candidate(spec, name, 0, None, {"n_estimators": 20}).fit(train)
        p = model.predict_proba(test)
        assert not np.allclose(p, single.predict_proba(test))
        again = load_bundle(save_bundle(model, tmp_path / name))
        np.testing.assert_array_equal(again.predict_proba(test), p)
        assert model.describe()["bags"] == 3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + rng.normal(size=200) > 0).astype(int)
    m = Boosted.fit("binary", x, y, 0, {"n_estimators": 20}, bags=2)
    raw = np.mean([Boosted._raw(b, x) for b in m.boosters[0]], axis=0)
    np.testing.assert_allclose(m.predict(x, 2)[:, 1], _sigmoid(raw))
    bias = np.mean([b.predict(x, pred_contrib=True)[:, -1] for b in m.boosters[0]], axis=0)
    np.testing.assert_allclose(m.shap(x).sum(1) + bias, raw, atol=1e-9)
    z = x[:, 1] * 3 + rng.normal(size=200)
    r = Boosted.fit("regression", x, z, 0, {"n_estimators": 20}, bags=2)
    want = np.mean([b.predict(x) for b in r.boosters[0]], axis=0)
    np.testing.assert_allclose(r.predict(x, 1), want)


def test_bagged_trees_keep_classes_of_a_multiclass_task(tmp_path):
    from holomed.spec import override_spec

    spec, cohort = _three_class_cohort()
    spec = override_spec(spec, {"evaluation.tree_bags": 2})
    train, test = cohort.subset(np.arange(150)), cohort.subset(np.arange(150, len(cohort)))
    model = C.make_candidate(spec, "gbm", 0, None, {"n_estimators": 20}).fit(train)
    p = model.predict_proba(test)
    assert p.shape == (len(test), 3) and np.allclose(p.sum(1), 1)
    assert (p.argmax(1) == test.y.astype(int)).mean() > 0.6
    again = load_bundle(save_bundle(model, tmp_path / "b"))
    np.testing.assert_array_equal(again.predict_proba(test), p)


def _rewrite_state(path, state):
    """Replace a bundle's state.json, re-hashing it in the (unsigned) manifest."""
    import hashlib

    (path / "state.json").write_text(json.dumps(state))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["state.json"] = hashlib.sha256((path / "state.json").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_late_linear_recalibrates_its_mean_without_changing_the_ranking(
    data, tmp_path, monkeypatch
):
    """lr_late (binary): the mean of per-modality probabilities is recalibrated on
    cross-fitted means of the training patients; monotone, so the ranking is the plain
    mean's; it round-trips, and a bundle from before (no recalibration) still loads."""
    monkeypatch.delenv("HOLOMED_BUNDLE_KEY", raising=False)
    spec, train, test = data
    model = C.make_candidate(spec, "lr_late", 0).fit(train)
    plain = C.make_candidate(spec, "lr_late", 0, None, {"calibrate": False}).fit(train)
    a, b = model.recalibration_
    assert b > 0 and plain.recalibration_ is None
    p, q = model.predict_proba(test)[:, 1], plain.predict_proba(test)[:, 1]
    np.testing.assert_array_equal(np.argsort(p, kind="stable"), np.argsort(q, kind="stable"))
    np.testing.assert_allclose(model.predict_proba(test, calibrated=False)[:, 1], q)
    z = np.log(q / (1 - q))
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(a + b * z))))
    assert model.describe()["recalibration"] == {"intercept": a, "slope": b}
    path = save_bundle(model, tmp_path / "b")
    np.testing.assert_array_equal(load_bundle(path).predict_proba(test), model.predict_proba(test))
    state = json.loads((path / "state.json").read_text())
    del state["recalibration"]  # as saved before recalibration existed
    _rewrite_state(path, state)
    np.testing.assert_allclose(load_bundle(path).predict_proba(test)[:, 1], q)
    with pytest.raises(ValueError, match="takes only 'calibrate'"):
        C.make_candidate(spec, "lr_late", 0, None, {"C": 1}).fit(train)


def test_a_missing_package_is_named_not_blamed_on_the_bundle(data, tmp_path, monkeypatch):
    import builtins

    spec, train, _ = data
    path = save_bundle(
        C.make_candidate(spec, "gbm", 0, None, {"n_estimators": 5}).fit(train), tmp_path / "b"
    )
    real = builtins.__import__

    def no_lightgbm(name, *args, **kwargs):
        if name == "lightgbm" or name.startswith("lightgbm."):
            raise ModuleNotFoundError("No module named 'lightgbm'", name="lightgbm")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lightgbm)
    with pytest.raises(BundleError, match="needs the package lightgbm"):
        load_bundle(path)
