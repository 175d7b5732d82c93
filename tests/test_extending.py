"""Adding a modality kind and an encoder is one module and two registrations: a toy
sequence kind ((T, C) per patient, tokens out of a GRU) runs through every fusion
strategy, explanation and the bundle without touching the library."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from holomed.candidates import load
from holomed.cohort import build_cohort, patient_splits
from holomed.encoders import ENCODERS, Encoded, register_encoder
from holomed.fusion import fusion_names
from holomed.modalities import MODALITIES, ModalityKind, Preprocessor, register_modality
from holomed.modalities.omics import check_omics
from holomed.model import Model
from holomed.spec import parse_spec

T, C = 8, 3


class ToySeriesPreprocessor(Preprocessor):
    """Columns 't{t}_c{c}' -> (n, T, C), standardised per channel on training rows."""

    kind = "toy_series"

    def fit(self, data):
        x = self._cube(data.values[data.present])
        self.mean_, self.sd_ = x.mean((0, 1)), x.std((0, 1)) + 1e-6
        self.feature_names_out_ = [f"c{c}" for c in range(C)]
        return self

    @staticmethod
    def _cube(df):
        return df.to_numpy(float).reshape(len(df), T, C)

    @property
    def out_shape(self):
        return (T, C)

    def transform(self, data):
        out = ((self._cube(data.values) - self.mean_) / self.sd_).astype(np.float32)
        out[~data.present] = np.nan
        return out

    def get_state(self):
        return {"names": self.feature_names_out_}, {"mean": self.mean_, "sd": self.sd_}

    @classmethod
    def from_state(cls, meta, arrays):
        p = cls()
        p.feature_names_out_, p.mean_, p.sd_ = meta["names"], arrays["mean"], arrays["sd"]
        return p


class ToyGRU(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 16):
        super().__init__()
        self.out_dim = hidden
        self.gru = nn.GRU(C, hidden, batch_first=True)

    def forward(self, x):
        tokens, h = self.gru(x)
        return Encoded(h[-1], tokens=tokens)


if "toy_series" not in MODALITIES:
    register_modality(
        ModalityKind(
            "toy_series",
            read=lambda m, s: None,
            check=check_omics,
            preprocessor=ToySeriesPreprocessor,
            default_encoder="toy_gru",
        )
    )
if "toy_gru" not in ENCODERS:
    register_encoder("toy_gru")(ToyGRU)


@pytest.fixture(scope="module")
def cohort_and_spec():
    rng = np.random.default_rng(0)
    n = 160
    ids = [f"P{i:03d}" for i in range(n)]
    series = rng.normal(size=(n, T, C))
    tab = rng.normal(size=(n, 4))
    y = (series[:, -3:, 0].mean(1) + tab[:, 0] > 0).astype(int)
    cols = [f"t{t}_c{c}" for t in range(T) for c in range(C)]
    frames = {
        "ecg": pd.DataFrame(series.reshape(n, -1), index=ids, columns=cols).iloc[20:],
        "labs": pd.DataFrame(tab, index=ids, columns=[f"l{i}" for i in range(4)]),
    }
    spec = parse_spec(
        {
            "modalities": [
                {"name": "ecg", "kind": "toy_series", "encoder": {"name": "toy_gru"}},
                {"name": "labs", "kind": "omics"},
            ],
            "target": {"column": "y"},
            "split": {"method": "holdout", "test_size": 0.3},
            "fusion": {
                "name": "joint",
                "hidden": 16,
                "options": {"guided.mode": "cross_attention", "guided.guide": "labs"},
            },
            "training": {"max_epochs": 8, "lr": 0.01},
        }
    )
    cohort = build_cohort(spec, frames, pd.DataFrame({"y": y}, index=ids))
    return spec, cohort


@pytest.mark.parametrize("fusion", fusion_names())  # early joins the flattened (T, C) input
def test_a_registered_sequence_kind_runs_through_every_strategy(cohort_and_spec, fusion, tmp_path):
    spec, cohort = cohort_and_spec
    ((tr, te),) = patient_splits(cohort, spec.split)
    m = Model(spec, fusion=fusion, seed=0).fit(cohort.subset(tr))
    test = cohort.subset(te)
    p = m.predict_proba(test)
    assert p.shape == (len(te), 2) and np.isfinite(p).all()
    assert (~test.modalities["ecg"].present).any()  # absent sequences handled
    np.testing.assert_allclose(load(m.save(tmp_path / "b")).predict_proba(test), p, atol=1e-6)
    c = m.explain(test)["contributions"]
    assert set(c["global"]) == {"ecg", "labs"}


def test_sequence_tokens_reach_cross_attention_guidance(cohort_and_spec):
    spec, cohort = cohort_and_spec
    m = Model(spec, fusion="guided", seed=0).fit(cohort)
    x, present = m._arrays(cohort)
    xt = {k: torch.as_tensor(np.nan_to_num(v)) for k, v in x.items()}
    pt = {k: torch.as_tensor(v) for k, v in present.items()}
    with torch.no_grad():
        enc = m.net_.encode(xt, pt)
    assert enc["ecg"].tokens.shape[1:] == (T, 16)
    assert m.net_.fusion.mode == "cross_attention" and m.net_.fusion.guide == "labs"
