"""Survival: the target, the Cox head of every fusion, the classical survival candidates,
the metrics, bad input, and known-hazard ground truth (SYNTHETIC data)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sksurv.datasets import load_gbsg2
from sksurv.metrics import concordance_index_censored

import holomed.candidates  # noqa: F401  (every family registered)
from holomed.candidate import make_candidate
from holomed.candidates import load_bundle
from holomed.cohort import CohortError, build_cohort, load_cohort, patient_splits
from holomed.fusion import fusion_names
from holomed.scoring.metrics import compute_metrics
from holomed.scoring.survival import calibration_at, risk_groups
from holomed.spec import SpecError, parse_spec
from holomed.survival import Baseline, kaplan_meier
from holomed.synthetic import make_synthetic, synthetic_survival_spec_dict


def spec_for(n=400, seed=1, epochs=10, **options):
    d = synthetic_survival_spec_dict(n_patients=n, seed=seed, **options)
    d["training"]["max_epochs"] = epochs
    return parse_spec(d)


@pytest.fixture(scope="module")
def cohort_split():
    spec = spec_for()
    c = load_cohort(spec)
    tr, te = patient_splits(c, spec.split)[0]
    return spec, c, c.subset(tr), c.subset(te)


def test_the_target_is_time_and_event_and_stratifies_the_split(cohort_split):
    spec, c, train, test = cohort_split
    assert c.task == "survival" and c.y.shape == (len(c), 2)
    assert set(np.unique(c.y[:, 1])) == {0.0, 1.0} and (c.y[:, 0] > 0).all()
    s = c.summary()
    assert s["events"] + s["censored"] == len(c)


@pytest.mark.parametrize("head", ["cox", "discrete"])
@pytest.mark.parametrize("fusion", sorted(fusion_names()))
def test_every_fusion_learns_both_heads_with_curves_and_missing_modalities(
    cohort_split, fusion, head
):
    spec, _, train, test = cohort_split
    # the discrete head has 20 hazards to learn: it needs the default epoch budget
    params = {
        "training.survival_head": head,
        "training.max_epochs": 40 if head == "discrete" else 10,
    }
    m = make_candidate(spec, fusion, 0, None, params).fit(train)
    out = m.predict_proba(test)
    assert out.shape == (len(test), 1 + len(spec.target.horizons))
    surv = out[:, 1:]
    assert np.isfinite(out).all() and ((surv >= 0) & (surv <= 1)).all()
    assert (np.diff(surv, axis=1) <= 1e-12).all()  # S decreases with time
    if head == "cox":  # proportional hazards: higher risk, lower survival at every horizon
        order = np.argsort(out[:, 0])
        assert (np.diff(surv[order], axis=0) <= 1e-9).all()
    # a patient with no modality at all still gets a curve
    none = {n: np.zeros(len(test), bool) for n in m.preprocessors_}
    assert np.isfinite(m.predict_present(test, none)).all()
    # it learnt something: concordance above chance on held-out patients
    assert compute_metrics("survival", test.y, out)["c_index"] > 0.55


def test_classical_survival_candidates_round_trip_through_a_bundle(cohort_split, tmp_path):
    spec, _, train, test = cohort_split
    for name in ("cox", "coxnet", "xgb_cox", "rsf", "km"):
        m = make_candidate(spec, name, 0).fit(train)
        out = m.predict_proba(test)
        path = m.save(tmp_path / name)
        again = load_bundle(path)
        assert np.allclose(again.predict_proba(test), out)
    km = make_candidate(spec, "km", 0).fit(train)
    assert np.allclose(km.predict_proba(test)[:, 1:], kaplan_meier(train.y, spec.target.horizons))
    for head in ("cox", "discrete"):
        neural = make_candidate(spec, "late", 0, None, {"training.survival_head": head})
        neural.fit(train)
        again = load_bundle(neural.save(tmp_path / f"late-{head}"))
        assert np.allclose(again.predict_proba(test), neural.predict_proba(test), atol=1e-6)


def test_learned_risk_ranks_patients_by_the_true_hazard_and_ignores_independent_censoring():
    # SYNTHETIC: exponential times whose log hazard mixes clinical, expression and
    # methylation signals; the truth is known per patient
    # (every modality present, so the truth is recoverable from the inputs)
    def c_vs_truth(censoring):
        opts = {"n_patients": 2000, "seed": 3, "censoring": censoring, "missing": 0.0}
        spec = parse_spec(synthetic_survival_spec_dict(**opts))
        c = load_cohort(spec)
        _, target, _ = make_synthetic(survival=True, **opts)
        tr, te = patient_splits(c, spec.split)[0]
        m = make_candidate(spec, "coxnet", 0).fit(c.subset(tr))
        risk = m.predict_proba(c.subset(te))[:, 0]
        truth = target.loc[c.ids[te], "true_log_hazard"].to_numpy()
        # concordance with the true hazard: every pair comparable (no censoring)
        return concordance_index_censored(np.ones(len(te), bool), -truth, risk)[0], c

    light, c1 = c_vs_truth(1.0)
    heavy, c2 = c_vs_truth(4.0)
    assert c2.y[:, 1].mean() < c1.y[:, 1].mean() - 0.1  # censoring really is heavier
    assert light >= 0.9 and heavy >= 0.9
    assert abs(light - heavy) < 0.02


def test_metrics_match_scikit_survival_and_detect_a_reversed_model(cohort_split):
    spec, _, train, test = cohort_split
    m = make_candidate(spec, "coxnet", 0).fit(train)
    out = m.predict_proba(test)
    res = compute_metrics("survival", test.y, out, spec.target.horizons, train.y)
    want = concordance_index_censored(test.y[:, 1] > 0, test.y[:, 0], out[:, 0])[0]
    assert np.isclose(res["c_index"], want) and res["c_index"] > 0.65
    flipped = out.copy()
    flipped[:, 0] *= -1
    assert compute_metrics("survival", test.y, flipped)["c_index"] < 0.35
    km = make_candidate(spec, "km", 0).fit(train).predict_proba(test)
    assert (
        res["ibs"] < compute_metrics("survival", test.y, km, spec.target.horizons, train.y)["ibs"]
    )
    cal = calibration_at(test.y, out[:, 2], spec.target.horizons[1])
    assert len(cal["predicted"]) == 10 and np.isfinite(cal["ici"])
    groups = risk_groups(test.y, out[:, 0])
    assert len(groups["groups"]) == 3 and groups["logrank_p"] < 0.01
    # numbers at risk: everyone at time 0, never rising, counted from the follow-up times
    ticks = groups["at_risk_times"]
    assert ticks[0] == 0 and len(ticks) == 5
    for g in groups["groups"]:
        assert g["at_risk"][0] == g["n"] and g["at_risk"] == sorted(g["at_risk"], reverse=True)
    assert sum(g["at_risk"][2] for g in groups["groups"]) == int((test.y[:, 0] >= ticks[2]).sum())


def test_gbsg2_penalised_cox_matches_scikit_survivals_own_cox():
    # scikit-survival's bundled GBSG2 (686 breast-cancer patients, clinical table)
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.preprocessing import OneHotEncoder

    x, y = load_gbsg2()
    x = OneHotEncoder().fit_transform(x)
    x = (x - x.mean()) / x.std()
    ids = [f"P{i:04d}" for i in range(len(x))]
    frame = pd.DataFrame(x.to_numpy(), index=ids, columns=[str(c) for c in x.columns])
    target = pd.DataFrame(
        {"time": y["time"], "event": y["cens"].astype(int)},
        index=ids,
    )
    rng = np.random.default_rng(0)
    target["split"] = np.where(rng.random(len(ids)) < 0.3, "test", "train")
    spec = parse_spec(
        {
            "dataset": "custom",
            "modalities": [{"name": "clinical", "kind": "tabular"}],
            "target": {
                "column": "time",
                "event": "event",
                "task": "survival",
                "horizons": [365, 730, 1460],
            },
            "split": {"method": "predefined", "column": "split"},
        }
    )
    c = build_cohort(spec, {"clinical": frame}, target)
    tr, te = patient_splits(c, spec.split)[0]
    out = make_candidate(spec, "cox", 0).fit(c.subset(tr)).predict_proba(c.subset(te))
    ours = compute_metrics("survival", c.y[te], out)["c_index"]
    ref = CoxPHSurvivalAnalysis().fit(x.iloc[tr], y[tr])
    theirs = concordance_index_censored(y["cens"][te], y["time"][te], ref.predict(x.iloc[te]))[0]
    assert abs(ours - theirs) < 0.02 and ours > 0.65


def test_breslow_baseline_is_the_nelson_aalen_estimate_at_zero_risk():
    y = np.array([[1, 1], [2, 0], [3, 1], [4, 1]], dtype=float)
    b = Baseline.fit(np.zeros(4), y)
    # Nelson–Aalen: 1/4 at t=1, + 1/2 at t=3, + 1/1 at t=4
    assert np.allclose(b.at([0.5, 1, 2.5, 3, 10]), [0, 0.25, 0.25, 0.75, 1.75])
    with pytest.raises(ValueError):
        Baseline([1.0, 0.5], [0.1, 0.2])


def _cohort_with(target: pd.DataFrame, **target_spec):
    spec = parse_spec(
        {
            "modalities": [{"name": "t", "kind": "tabular"}],
            "target": {
                "column": "time",
                "event": "event",
                "task": "survival",
                "horizons": [5],
                **target_spec,
            },
            "split": {"method": "holdout"},
        }
    )
    ids = list(target.index)
    frame = pd.DataFrame({"x": np.arange(len(ids), dtype=float)}, index=ids)
    return build_cohort(spec, {"t": frame}, target)


def _target(time, event):
    ids = [f"p{i}" for i in range(len(time))]
    return pd.DataFrame({"time": time, "event": event}, index=ids)


def test_bad_survival_input_gets_a_named_error_or_a_reported_exclusion():
    ok_t, ok_e = [1.0, 2, 3, 4, 8, 9, 10, 12], [1, 0, 1, 1, 0, 1, 0, 1]
    # times <= 0 and missing values: reported exclusions, the rest is kept
    c = _cohort_with(_target([0.0, -1.0, np.nan] + ok_t, [1, 0, 1] + ok_e))
    reasons = {e["id"]: e["reason"] for e in c.excluded}
    assert "<= 0" in reasons["p0"] and "<= 0" in reasons["p1"]
    assert "missing" in reasons["p2"] and len(c) == len(ok_t)
    # events not 0/1; text in the event column; text in the time column
    with pytest.raises(CohortError, match="must be 0 .* patient 'p1' has 2"):
        _cohort_with(_target(ok_t, [1, 2] + ok_e[2:]))
    with pytest.raises(CohortError, match="'event' of patient 'p0' is not a number: 'dead'"):
        _cohort_with(_target(ok_t, ["dead"] + ok_e[1:]))
    with pytest.raises(CohortError, match="'time' of patient 'p3' is not a number"):
        _cohort_with(_target(ok_t[:3] + ["soon"] + ok_t[4:], ok_e))
    # all censored
    with pytest.raises(CohortError, match="all 8 patients are censored"):
        _cohort_with(_target(ok_t, [0] * 8))
    # a horizon beyond the last observed time
    with pytest.raises(CohortError, match=r"horizons \[50.0\] are at or beyond"):
        _cohort_with(_target(ok_t, ok_e), horizons=[5, 50])
    # the spec: survival needs horizons; horizons belong to survival
    with pytest.raises(SpecError, match="horizon"):
        parse_spec(
            {
                "modalities": [{"name": "t", "kind": "tabular"}],
                "target": {"column": "time", "task": "survival"},
            }
        )
    with pytest.raises(SpecError, match="belong to task: survival"):
        parse_spec(
            {
                "modalities": [{"name": "t", "kind": "tabular"}],
                "target": {"column": "y", "horizons": [3]},
            }
        )


def test_one_column_time_event_is_read():
    t = pd.DataFrame(
        {"time": ["1.5,1", "2,0", "3,1", "4,1", "8,0", "9,1", "10,0", "12,1"]},
        index=[f"p{i}" for i in range(8)],
    )
    spec = parse_spec(
        {
            "modalities": [{"name": "t", "kind": "tabular"}],
            "target": {"column": "time", "task": "survival", "horizons": [5]},
            "split": {"method": "holdout"},
        }
    )
    frame = pd.DataFrame({"x": np.arange(8.0)}, index=t.index)
    c = build_cohort(spec, {"t": frame}, t)
    assert np.allclose(c.y[:2], [[1.5, 1], [2, 0]])


def test_calibration_at_a_horizon_is_small_for_the_true_curve_and_large_for_a_wrong_one():
    _, target, _ = make_synthetic(n_patients=3000, seed=5, survival=True)
    y = target[["time", "event"]].to_numpy(dtype=float)
    true_s6 = np.exp(-0.1 * 6 * np.exp(target["true_log_hazard"].to_numpy()))
    good = calibration_at(y, true_s6, 6.0)
    bad = calibration_at(y, true_s6**3, 6.0)  # events predicted far too often
    assert good["ici"] < 0.04 < 0.1 < bad["ici"]
    assert sum(good["n"]) == len(y)


def test_logistic_hazard_likelihood_by_hand():
    import torch

    from holomed.tasks import logistic_hazard_loss, time_cuts

    y = np.array([[1.0, 1], [2.5, 0], [4.0, 1]])
    cuts = time_cuts(y, 2)  # event-time quantiles 2.5 (median) and 4; the last = max time
    assert cuts == [2.5, 4.0]
    logits = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.5, 2.0]])
    h = torch.sigmoid(logits)
    want = (
        -(
            torch.log(h[0, 0])  # event in interval 0
            + torch.log(1 - h[1, 0])  # censored at 2.5: survived interval 0
            + torch.log(1 - h[2, 0])
            + torch.log(h[2, 1])  # survived interval 0, event in interval 1
        )
        / 3
    )
    got = logistic_hazard_loss(logits, torch.tensor(y, dtype=torch.float32), cuts)
    assert torch.isclose(got, want)


def test_compare_selects_among_survival_candidates_and_the_report_draws_them(tmp_path):
    from holomed.evaluation.compare import compare
    from holomed.report.html import render_html

    d = synthetic_survival_spec_dict(n_patients=300, seed=2)
    d["training"]["max_epochs"] = 10
    d["evaluation"].update(candidates=["coxnet", "km", "ensemble"], n_bootstrap=20)
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    res, outs = compare(spec, cohort, ["late"], seeds=1, ablations=False)
    assert res["selected"] in res["strategies"] and res["selection_metric"] == "c_index"
    st = res["strategies"]
    assert {"baseline:coxnet", "baseline:km", "late", "selection (per fold)"} <= set(st)
    km, cox = st["baseline:km"]["metrics"], st["baseline:coxnet"]["metrics"]
    assert km["c_index"]["mean"] == 0.5 and cox["c_index"]["mean"] > 0.65
    assert cox["ibs"]["mean"] < km["ibs"]["mean"]  # better than the null model
    surv = st["baseline:coxnet"]["survival"]
    assert set(surv["per_horizon"]) <= {"3", "6", "12"} and surv["risk_groups"]["logrank_p"] < 0.2
    html = render_html(res)
    assert "Survival: risk groups" in html and "could not be rendered" not in html
    assert "numbers at risk" in html and "lowest risk" in html
    # a classification-only candidate cannot be asked for
    d["evaluation"]["candidates"] = ["lr_early"]
    with pytest.raises(SpecError, match="cannot learn a survival task"):
        compare(parse_spec(d), cohort, ["late"], seeds=1)


def test_subgroup_audit_on_the_c_index():
    from holomed.fairness import survival_audit

    _, target, _ = make_synthetic(n_patients=600, seed=4, survival=True)
    y = target[["time", "event"]].to_numpy(dtype=float)
    risk = target["true_log_hazard"].to_numpy()
    attrs = target[["sex"]]
    res = survival_audit(y, risk, attrs, n_boot=30)
    groups = res["attributes"]["sex"]["groups"]
    for g, entry in groups.items():
        i = (attrs["sex"] == g).to_numpy()
        want = concordance_index_censored(y[i, 1] > 0, y[i, 0], risk[i])[0]
        assert np.isclose(entry["c_index"]["value"], want) and entry["n"] == i.sum()
    gap = res["attributes"]["sex"]["gaps"]["c_index"]
    vals = [e["c_index"]["value"] for e in groups.values()]
    assert np.isclose(gap["value"], max(vals) - min(vals))


def test_random_survival_forest_predicts_what_scikit_survival_predicts(cohort_split, tmp_path):
    from sksurv.ensemble import RandomSurvivalForest

    from holomed.candidates.survival import RSF_DEFAULTS
    from holomed.survival import as_structured

    spec, _, train, test = cohort_split
    m = make_candidate(spec, "rsf", 0).fit(train)
    out = m.predict_proba(test)
    # the same forest fitted by scikit-survival itself: risk and S(horizon) agree
    ref = RandomSurvivalForest(**RSF_DEFAULTS, random_state=0, low_memory=False, n_jobs=1)
    ref.fit(m._design(train, True), as_structured(train.y))
    x = m._design(test, True)
    np.testing.assert_allclose(out[:, 0], np.log(ref.predict(x)) - m.offset_, rtol=1e-6)
    train_risk = m.predict_proba(train)[:, 0]
    assert abs(train_risk.mean()) < 1e-9  # relative to the average training patient
    for j, h in enumerate(spec.target.horizons):
        expected = [f(h) if h >= f.x[0] else 1.0 for f in ref.predict_survival_function(x)]
        np.testing.assert_allclose(out[:, 1 + j], expected, rtol=1e-6)
    assert (np.diff(out[:, 1:], axis=1) <= 1e-12).all()
    assert compute_metrics("survival", test.y, out)["c_index"] > 0.55
    # a bundle whose tree points back to an earlier node is refused, not walked forever
    meta, arrays, texts = m.to_state()
    arrays["forest.left"] = arrays["forest.left"].copy()
    inner = np.nonzero(arrays["forest.left"] >= 0)[0]
    arrays["forest.left"][inner[1]] = inner[0]
    with pytest.raises(ValueError, match="inconsistent"):
        type(m).from_state(spec, meta, arrays, texts)


def test_fast_harrell_c_is_scikit_survivals_number_ties_included():
    """:func:`harrell_c` (O(n log^2 n)) against ``concordance_index_censored`` on random
    samples with tied times, tied risks and censoring at event times; ``oriented`` then
    computes only the metric asked for."""
    from holomed.scoring.metrics import oriented
    from holomed.scoring.survival import harrell_c, survival_metrics

    rng = np.random.default_rng(0)
    for trial in range(400):
        n = int(rng.integers(2, 50))
        t = rng.integers(1, 6, n).astype(float) if trial % 2 else rng.exponential(10, n)
        e = rng.random(n) < rng.uniform(0.05, 0.9)
        if trial % 4 == 0:
            r = rng.integers(0, 3, n).astype(float)
        elif trial % 4 == 1:
            r = rng.normal(size=n)
        else:  # risks closer than the tie tolerance (1e-8) to some neighbours, not all
            r = rng.integers(0, 20, n) * rng.choice([0.4e-8, 0.7e-8, 1.2e-8])
        try:
            want = concordance_index_censored(e, t, r)[0]
        except (ValueError, ZeroDivisionError):
            want = np.nan
        got = harrell_c(e, t, r)
        if np.isnan(want):
            assert np.isnan(got), trial
        else:
            assert got == pytest.approx(want, abs=1e-12), trial
    y = np.c_[rng.exponential(10, 300), rng.random(300) < 0.4]
    out = rng.normal(size=(300, 1))
    only = survival_metrics(y, out, only="c_index")
    assert (
        np.isnan(only["c_index_uno"])
        and only["c_index"] == compute_metrics("survival", y, out)["c_index"]
    )
    assert oriented("survival", "c_index", y, out) == only["c_index"]
    assert np.isnan(harrell_c(y[:, 1] > 0, y[:, 0], np.r_[out[:-1, 0], np.nan]))
    assert np.isnan(harrell_c(y[:, 1] > 0, np.r_[y[:-1, 0], np.nan], out[:, 0]))
    with pytest.raises(ValueError, match="unknown survival metric"):
        survival_metrics(y, out, only="auroc")


@pytest.mark.parametrize("name", ["lr_early", "baseline:gbm", "stack", "rf"])
def test_a_learner_without_survival_is_refused_by_name(name):
    from holomed.candidate import make_candidate

    with pytest.raises(ValueError, match=r"cannot learn a survival task; for it: .*cox"):
        make_candidate(spec_for(n=60), name)


def test_a_survival_fit_report_shows_an_evidence_draft(recwarn):
    from holomed.evaluation.fitrun import fit_run
    from holomed.report.html import render_html

    spec = spec_for(n=200)
    spec.evaluation.n_bootstrap = 20
    _, res = fit_run(spec, load_cohort(spec), "coxnet")
    html = render_html(res)
    assert "Evidence draft" in html and "could not be rendered" not in html
    assert "risk score (log relative hazard) is" in html
    assert "Survival: risk groups" in html and "numbers at risk" in html
    assert not [w for w in recwarn if "could not be rendered" in str(w.message)]


def test_a_k_fold_survival_fit_report_draws_the_out_of_fold_survival(recwarn):
    from holomed.evaluation.fitrun import fit_run
    from holomed.report.html import render_html
    from holomed.spec import override_spec

    spec = spec_for(n=160)
    spec = override_spec(spec, {"split": {"method": "kfold", "n_folds": 3}}, "test")
    spec.evaluation.n_bootstrap = 20
    _, res = fit_run(spec, load_cohort(spec), "coxnet", mode="kfold")
    groups = res["survival"]["risk_groups"]["groups"]
    assert sum(g["n"] for g in groups) == 160  # every patient, out of fold
    html = render_html(res)
    assert "Survival: risk groups" in html and "out of fold for a k-fold fit" in html
    assert not [w for w in recwarn if "could not be rendered" in str(w.message)]


@pytest.mark.parametrize("metric", ["ibs", "td_auroc"])
def test_selection_on_a_horizon_metric_scores_every_candidate(metric):
    """The integrated Brier score and time-dependent AUROC need the horizons: selection,
    the greedy ensemble and its honest fold scores all pass them (they were NaN, and the
    first candidate listed was chosen whatever its score)."""
    from holomed.evaluation.select import no_tick, select

    d = synthetic_survival_spec_dict(n_patients=240, seed=3)
    d["evaluation"].update(selection_metric=metric, selection_folds=3)
    spec = parse_spec(d)
    cohort = load_cohort(spec)
    sel = select(spec, cohort, ["km", "coxnet", "ensemble"], 0, no_tick)
    scores = {n: s.score for n, s in sel.scored.items()}
    assert all(np.isfinite(v) for v in scores.values()), scores
    assert scores["coxnet"] > scores["km"]  # the null model is worse on both metrics
    assert sel.selected != "km" and sel.ensemble_weights
