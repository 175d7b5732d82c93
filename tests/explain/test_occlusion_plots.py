"""Occlusion attributions over sequence inputs and the signal / image attribution plots:
a window that carries the signal gets the attribution, and the PNGs are written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from holomed.cohort import build_cohort
from holomed.explain.drawing import image_saliency_plot, signal_attribution_plot
from holomed.explain.features import occlusion
from holomed.model import Model
from holomed.spec import parse_spec


@pytest.fixture(scope="module")
def series_model():
    """The label is the sign of channel 'a' in the last hours; 'b' is noise."""
    rng = np.random.default_rng(0)
    n, rows = 80, []
    ids = [f"P{i:02d}" for i in range(n)]
    y = rng.integers(0, 2, n)
    for i, pid in enumerate(ids):
        for t in range(12):
            late = t >= 8
            rows.append((pid, t + 0.5, "a", (2 * y[i] - 1) * 2.0 * late + rng.normal(0, 0.3)))
            rows.append((pid, t + 0.5, "b", rng.normal()))
    frames = {"vitals": pd.DataFrame(rows, columns=["id", "time", "variable", "value"])}
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "vitals",
                    "kind": "timeseries",
                    "preprocessing": {"window": [0, 12], "resolution": 1.0},
                    "encoder": {"name": "ts_transformer", "options": {"hidden": 16, "layers": 1}},
                }
            ],
            "target": {"column": "y"},
            "fusion": {"name": "late", "hidden": 16},
            "training": {"max_epochs": 40, "lr": 0.01, "val_fraction": 0.0},
        }  # fmt: skip
    )
    cohort = build_cohort(spec, frames, pd.DataFrame({"y": y}, index=ids))
    return Model(spec, seed=0).fit(cohort), cohort


def test_occlusion_finds_the_window_that_carries_the_signal(series_model):
    model, cohort = series_model
    assert model.evaluate(cohort)["auroc"] > 0.95
    a = occlusion(model, cohort, "vitals", window=(2, 1))
    assert a.shape == (len(cohort), 12, 7)
    mag = np.abs(a).mean(0)
    # channel 0 = values of 'a'; its late hours matter far more than its early hours or 'b'
    assert mag[8:, 0].mean() > 5 * mag[:8, 0].mean()
    assert mag[8:, 0].mean() > 5 * mag[8:, 1].mean()
    with pytest.raises(ValueError, match="one size per input axis"):
        occlusion(model, cohort, "vitals", window=(2,))


def test_signal_and_image_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    sig, att = rng.normal(size=(500, 3)), rng.normal(size=(500, 3))
    p = signal_attribution_plot(sig, att, ["I", "II", "V1"], tmp_path / "s.png", fs=100.0)
    assert p.exists() and p.stat().st_size > 5000
    img = rng.random((32, 32))
    q = image_saliency_plot(img, rng.normal(size=(32, 32)), tmp_path / "i.png")
    assert q.exists() and q.stat().st_size > 3000
    with pytest.raises(ValueError, match=r"\(L, C\)"):
        signal_attribution_plot(sig, att[:, :2], ["I", "II", "V1"], tmp_path / "x.png")
