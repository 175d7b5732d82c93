"""Calibration: temperature / isotonic fitted on validation patients, saved in bundles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from holomed.evaluation.calibration import Calibrator, fit_temperature, reliability
from holomed.evaluation.metrics import ece


def _overconfident(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(scale=1.5, size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(int)
    return torch.as_tensor(3.0 * true_logit[:, None]), y  # 3x too sharp


def test_temperature_recovers_the_overconfidence():
    logits, y = _overconfident()
    t = fit_temperature(logits, y, "binary")
    assert t == pytest.approx(3.0, rel=0.2)


def test_calibrators_reduce_ece_and_keep_ranking():
    logits, y = _overconfident()
    raw = torch.sigmoid(logits[:, 0]).numpy()
    raw2 = np.c_[1 - raw, raw]
    for method in ("temperature", "isotonic"):
        cal = Calibrator(method).fit(logits[:1000], y[:1000], "binary")
        out = cal.proba(
            np.c_[
                1 - torch.sigmoid(cal.logits(logits)[:, 0]).numpy(),
                torch.sigmoid(cal.logits(logits)[:, 0]).numpy(),
            ]
        )
        assert ece(y[1000:], out[1000:]) < ece(y[1000:], raw2[1000:])
        back = Calibrator.from_json(cal.to_json())
        np.testing.assert_allclose(back.proba(out), cal.proba(out))


def test_reliability_bins_count_every_patient():
    logits, y = _overconfident(500)
    p = torch.sigmoid(logits[:, 0]).numpy()
    r = reliability(y, np.c_[1 - p, p], bins=10)
    assert sum(r["count"]) == 500
    assert all(0 <= v <= 1 for v in r["observed"] + r["predicted"])


def test_isotonic_refuses_multiclass_and_small_sets_are_left_alone():
    with pytest.raises(ValueError, match="binary"):
        Calibrator("isotonic").fit(torch.zeros(50, 3), np.arange(50) % 3, "multiclass")
    cal = Calibrator("temperature").fit(torch.zeros(5, 1), np.array([0, 1, 0, 1, 0]), "binary")
    assert cal.method == "none"
