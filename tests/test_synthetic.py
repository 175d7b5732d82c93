"""The synthetic cohort's ground truth is real: signal where it says, none where not."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from holomed.synthetic import GROUND_TRUTH, make_synthetic


def _auc(x, y):
    return cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=5, scoring="roc_auc").mean()


def test_signal_modalities_predict_and_noise_does_not():
    frames, target, truth = make_synthetic(n_patients=1500, seed=0, missing=0.0, interaction=0.0)
    y = (target["label"] == "event").to_numpy().astype(int)
    assert truth["signal_modalities"] == GROUND_TRUTH["signal_modalities"]
    assert _auc(frames["expression"].to_numpy(), y) > 0.75
    assert _auc(frames["methylation"].to_numpy(), y) > 0.62
    assert abs(_auc(frames["noise"].to_numpy(), y) - 0.5) < 0.06


def test_interaction_needs_both_modalities():
    frames, target, _ = make_synthetic(n_patients=2000, seed=1, missing=0.0, interaction_only=True)
    y = (target["label"] == "event").to_numpy().astype(int)
    e, m = frames["expression"]["g005"].to_numpy(), frames["methylation"]["cg005"].to_numpy()
    alone = max(_auc(e[:, None], y), _auc(m[:, None], y))
    together = _auc(np.c_[e, m, e * m], y)
    assert alone < 0.56 and together > 0.75


def test_missingness_is_controlled_and_deterministic():
    a = make_synthetic(n_patients=1000, seed=4, missing=0.3)[0]
    b = make_synthetic(n_patients=1000, seed=4, missing=0.3)[0]
    assert 0.62 < len(a["expression"]) / 1000 < 0.78
    assert len(a["clinical"]) == 1000
    assert a["expression"].equals(b["expression"])


def test_the_main_effects_listed_are_the_generators():
    """The ground truth's main effects, fitted back from a large noise-free cohort."""
    frames, target, truth = make_synthetic(n_patients=20000, seed=2, missing=0.0, interaction=0.0)
    y = (target["label"] == "event").to_numpy().astype(int)
    names = list(truth["main_effects"])
    cols = []
    for name in names:
        mod, col = name.split(":")
        cols.append(frames[mod][col].fillna(frames[mod][col].mean()).to_numpy(dtype=float))
    fit = LogisticRegression(C=1e6, max_iter=5000).fit(np.c_[tuple(cols)], y)
    # lab values are missing at random (10 %), which attenuates lab0 a little
    np.testing.assert_allclose(fit.coef_[0], list(truth["main_effects"].values()), rtol=0.15)
