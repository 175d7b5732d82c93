"""Survival scoring on awkward test sets: no event, fewer patients than risk groups, a
risk decile whose follow-up ends before the horizon, and bootstrap resamples that do
not reach every horizon (SYNTHETIC data)."""

from __future__ import annotations

import numpy as np

from holomed.scoring.metrics import bootstrap_metrics, compute_metrics, summarise
from holomed.scoring.survival import (
    calibration_at,
    horizons_inside,
    per_horizon,
    risk_groups,
    survival_metrics,
    survival_summary,
)

H = [2.0, 4.0, 6.0]


def _out(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.c_[rng.normal(size=n), np.sort(rng.uniform(0.2, 0.9, (n, 3)), axis=1)[:, ::-1]]


def _reference(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(1, 10, n), (rng.random(n) < 0.5).astype(float)]


def test_an_all_censored_test_set_gives_nan_not_an_error():
    rng = np.random.default_rng(1)
    y = np.c_[rng.uniform(1, 9, 20), np.zeros(20)]
    ph = per_horizon(y, _out(20), H, _reference())
    assert ph and all(np.isnan(row["brier"]) for row in ph.values())
    res = survival_summary(y, _out(20), H, _reference())
    assert set(res) == {"per_horizon", "calibration", "risk_groups"}


def test_fewer_patients_than_risk_groups():
    y = np.array([[1.0, 1.0], [2.0, 0.0]])
    rg = risk_groups(y, np.array([0.0, 1.0]))
    assert [g["n"] for g in rg["groups"]] == [1, 1]
    assert rg["groups"][0]["survival"] == [0.0]
    one = risk_groups(np.array([[3.0, 1.0]]), np.array([0.5]))
    assert [g["n"] for g in one["groups"]] == [1]
    res = survival_summary(np.array([[1.0, 1.0], [5.0, 0.0]]), _out(2), H, _reference())
    assert sum(g["n"] for g in res["risk_groups"]["groups"]) == 2


def test_a_decile_followed_less_than_the_horizon_has_no_observed_rate():
    rng = np.random.default_rng(0)
    n, h = 100, 3.0
    p_event = np.linspace(0.05, 0.6, n)
    t = rng.uniform(3.5, 6, n)
    e = (rng.random(n) < 0.5).astype(float)
    t[:10], e[:10] = 1.0, 0  # the lowest-risk decile: everyone censored at 1 < h
    r = calibration_at(np.c_[t, e], 1 - p_event, h)
    assert r["unobserved"] == {"groups": 1, "n": [10], "predicted": [float(p_event[:10].mean())]}
    assert len(r["predicted"]) == len(r["observed"]) == len(r["n"]) == 9 and sum(r["n"]) == 90
    assert r["predicted"][0] > p_event[:10].max()  # the first reported decile is the 2nd
    gap = np.abs(np.array(r["predicted"]) - np.array(r["observed"]))
    assert np.isclose(r["ici"], np.average(gap, weights=r["n"]))


def test_a_decile_whose_events_all_come_before_the_horizon_is_observed():
    # everyone in the riskiest decile has the event before h: observed 1, not unknown
    n, h = 100, 3.0
    p_event = np.linspace(0.05, 0.95, n)
    t = np.full(n, 5.0)
    e = np.zeros(n)
    t[-10:], e[-10:] = 1.0, 1.0
    r = calibration_at(np.c_[t, e], 1 - p_event, h)
    assert r["unobserved"]["groups"] == 0 and r["observed"][-1] == 1.0


def test_summary_without_any_decile_followed_to_the_middle_horizon():
    y = np.c_[np.linspace(0.5, 3.0, 30), np.r_[np.ones(5), np.zeros(25)]]
    y[-1, 0] = 3.5  # follow-up ends before the middle horizon 4
    res = survival_summary(y, _out(30), H, _reference())
    assert res["calibration"] is None


def test_the_bootstrap_keeps_the_horizons_of_the_whole_sample():
    """A resample that loses the one patient followed beyond the last horizon has no
    IBS over [1, 3]: it is NaN, not an IBS over [1, 2]."""
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=n)
    t = rng.exponential(2 * np.exp(-0.5 * x)) + 0.01
    c = rng.uniform(0, 3.2, n)
    y = np.c_[np.minimum(t, c), (t <= c).astype(float)]
    hz = [1.0, 2.0, 3.0]
    assert (y[:, 0] > 3).sum() == 1
    out = np.c_[0.5 * x, np.exp(-np.outer(np.exp(0.5 * x), hz) / 2)]
    ctx = {"horizons": hz, "reference": y}
    fixed = horizons_inside(y, hz, y)
    assert fixed.tolist() == [True, True, True]
    boots = bootstrap_metrics("survival", y, [out], 200, 0, y[:, 1].astype(int), **ctx)
    draws = np.random.default_rng(0)
    # which resamples reach h = 3 (the same draws: stratified by the event)
    strata = [np.nonzero(y[:, 1] == s)[0] for s in (0.0, 1.0)]
    reach = []
    for _ in range(200):
        idx = np.concatenate([draws.choice(g, len(g), replace=True) for g in strata])
        reach.append(bool(horizons_inside(y[idx], hz, y).all()))
    reach = np.array(reach)
    assert 0 < (~reach).sum() < 200
    assert np.isnan(boots["ibs"][~reach]).all() and np.isfinite(boots["ibs"][reach]).all()
    assert np.isnan(boots["td_auroc"][~reach]).all()
    assert np.isfinite(boots["c_index"]).all()  # the other metrics are unaffected
    # the point estimate and every finite resample are over the same three horizons
    point = compute_metrics("survival", y, out, **ctx)["ibs"]
    s = summarise("survival", y, [out], 200, 0, **ctx)["ibs"]
    assert np.isclose(s["mean"], point) and s["ci"][0] <= point <= s["ci"][1]


def test_fixed_horizons_beyond_the_follow_up_are_nan():
    y = _reference(60, seed=2)
    out = _out(60)
    free = survival_metrics(y, out, H, y)
    assert free == survival_metrics(y, out, H, y, fixed=horizons_inside(y, H, y))
    short = y.copy()
    short[:, 0] = np.minimum(short[:, 0], 5.0)  # no follow-up reaches 6
    res = survival_metrics(short, out, H, y, fixed=np.array([True, True, True]))
    assert np.isnan(res["ibs"]) and np.isnan(res["td_auroc"]) and np.isfinite(res["c_index"])
