"""Cross-modal generation: the product-of-experts VAE, ``holomed impute`` and the fusion
imputation ``generate``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from holomed.candidates import load
from holomed.cohort import Cohort
from holomed.fusion.mvae import MultimodalVAE
from holomed.generative.impute import ImputeError, evaluate, impute
from holomed.modalities.base import ModalityData
from holomed.model import Model


def two_views(n=300, seed=0, missing=0.2):
    """Views ``a`` and ``b`` share 2 latent factors; ``c`` is noise."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, 2))
    truth = {"a": f @ rng.normal(size=(2, 12)), "b": f @ rng.normal(size=(2, 8))}
    vals = {k: v + 0.5 * rng.normal(size=v.shape) for k, v in truth.items()}
    vals["c"] = rng.normal(size=(n, 5))
    ids = np.array([f"P{i:03d}" for i in range(n)])
    mods = {}
    for k, v in vals.items():
        df = pd.DataFrame(v, index=ids, columns=[f"{k}{j}" for j in range(v.shape[1])])
        mods[k] = ModalityData("omics", df, rng.random(n) >= missing, list(df.columns))
    return Cohort(ids, mods, y=(f[:, 0] > 0).astype(int)), truth


def test_product_of_experts_posterior_never_reads_absent_rows_and_narrows_with_evidence():
    vae = MultimodalVAE({"a": 3, "b": 2}, latent=4, hidden=8).eval()
    x = {"a": torch.randn(4, 3), "b": torch.randn(4, 2)}
    x["b"][0] = float("nan")  # patient 0 has no b: never read
    vis = torch.tensor([[True, False], [True, True], [False, False], [True, True]])
    mu, logvar = vae.posterior(x, vis)
    assert torch.isfinite(mu).all() and torch.isfinite(logvar).all()
    # no modality: the prior N(0, I); more experts: a tighter posterior
    assert torch.allclose(mu[2], torch.zeros(4)) and torch.allclose(logvar[2], torch.zeros(4))
    assert (logvar[1] < logvar[0]).all() or (logvar[1] <= logvar[0]).all()
    x["a"][2] = float("nan")
    out = vae.generate(x, {"a": vis[:, 0], "b": vis[:, 1]}, samples=3)
    assert all(torch.isfinite(m).all() and (s >= 0).all() for m, s in out.values())


def test_generated_values_follow_the_shared_factors_and_noise_is_not_invented():
    cohort, truth = two_views()
    idx = np.arange(len(cohort))
    rep = evaluate(cohort, idx[:220], idx[220:], truth=truth, epochs=150, seed=0)
    a, b, c = (rep["modalities"][k] for k in "abc")
    assert a["truth_corr"] > 0.6 and b["truth_corr"] > 0.6  # predictable from the other view
    assert a["r2"] > 0.3 and b["r2"] > 0.3
    assert abs(c["mean_corr"]) < 0.2 and c["r2"] < 0.05  # nothing to predict: the mean
    # the written sd is a predictive one: about 95 % of held-out measured values fall
    # inside mean +- 1.96 sd (the draws' spread alone covered about 60 %)
    for m in (a, b, c):
        assert 0.85 <= m["coverage_95"] <= 0.99, m


def test_impute_writes_flagged_files_apart_from_measured_values(tmp_path):
    cohort, _ = two_views(n=120)
    rep = impute(cohort, tmp_path, ["a", "b"], samples=4, epochs=20)
    a = cohort.modalities["a"]
    gen = pd.read_csv(tmp_path / "a.generated.csv", dtype={"id": str})
    sd = pd.read_csv(tmp_path / "a.generated_sd.csv", dtype={"id": str})
    has_b = cohort.modalities["b"].present
    expected = set(cohort.ids[~a.present & has_b])
    assert set(gen["id"]) == expected and rep["modalities"]["a"]["generated"] == len(expected)
    assert (gen["generated"] == 1).all() and list(gen.columns[2:]) == list(a.values.columns)
    assert not set(gen["id"]) & set(cohort.ids[a.present])  # never a measured patient
    assert (sd.iloc[:, 2:].to_numpy() >= 0).all()
    assert rep["modalities"]["a"]["absent_everywhere"] == int((~a.present & ~has_b).sum())
    assert "P0" not in (tmp_path / "impute_report.json").read_text()  # counts, not ids
    json.loads((tmp_path / "impute_report.json").read_text())
    # --samples is honoured: one draw has no latent spread, only the noise measured on
    # the training patients (the same for every patient); a rerun leaves no earlier file
    (tmp_path / "old.generated.csv").write_text("id,generated\nX,1\n")
    impute(cohort, tmp_path, ["a", "b"], samples=1, epochs=20)
    sd1 = pd.read_csv(tmp_path / "a.generated_sd.csv", dtype={"id": str}).iloc[:, 2:].to_numpy()
    assert np.allclose(sd1, sd1[0]) and (sd1 > 0).any()
    assert (sd.iloc[:, 2:].to_numpy() >= sd1[0] - 1e-9).all()
    assert not np.allclose(sd.iloc[:, 2:].to_numpy(), sd1[0])
    assert not (tmp_path / "old.generated.csv").exists()
    with pytest.raises(ImputeError, match="at least 1 draw"):
        impute(cohort, tmp_path, ["a", "b"], samples=0)
    with pytest.raises(ImputeError, match="at least 1 epoch"):  # not an untrained decoder
        impute(cohort, tmp_path, ["a", "b"], epochs=0)
    # a tabular modality without a numeric column is named in the report, not dropped
    ids = cohort.ids
    text = pd.DataFrame({"sex": ["F"] * len(ids)}, index=ids)
    cohort.modalities["d"] = ModalityData("tabular", text, np.ones(len(ids), bool), ["sex"])
    rep = impute(cohort, tmp_path, None, samples=2, epochs=5)
    assert rep["skipped_modalities"] == {"d": "no numeric column"}


def test_impute_writes_the_sources_id_column_and_refuses_a_repeated_header(tmp_path):
    cohort, _ = two_views(n=80)
    impute(cohort, tmp_path, ["a", "b"], samples=2, id_columns={"a": "patient_id"}, epochs=5)
    assert pd.read_csv(tmp_path / "a.generated.csv").columns[0] == "patient_id"
    assert pd.read_csv(tmp_path / "b.generated.csv").columns[0] == "id"  # none given
    # a feature named like the id or the flag column: a clear error, not a pandas one
    b = cohort.modalities["b"]
    frame = b.values.rename(columns={"b0": "generated"})
    cohort.modalities["b"] = ModalityData("omics", frame, b.present, list(frame.columns))
    with pytest.raises(ImputeError, match=r"modality 'b'.*\['generated'\]"):
        impute(cohort, tmp_path, ["a", "b"], samples=2, epochs=5)


def test_impute_needs_two_numeric_modalities_and_names_the_wrong_one(tmp_path):
    cohort, _ = two_views(n=40)
    with pytest.raises(ImputeError, match="'zzz'"):
        impute(cohort, tmp_path, ["a", "zzz"])
    with pytest.raises(ImputeError, match="at least two"):
        impute(cohort, tmp_path, ["a"])


def test_fusion_imputation_generate_trains_and_round_trips(make_tiny_spec, tiny_cohort, tmp_path):
    spec = make_tiny_spec(fusion={"name": "joint", "imputation": "generate"})
    model = Model(spec).fit(tiny_cohort)
    p = model.predict_proba(tiny_cohort)
    assert np.isfinite(p).all()
    model.save(tmp_path / "b")
    back = load(tmp_path / "b")
    np.testing.assert_allclose(back.predict_proba(tiny_cohort), p, atol=1e-6)
