"""The ``image`` kind: reading tables of paths (several images per patient), honest
checking, lazy decoding with a disk cache, fitting on training patients only, the set
layout with a presence channel, the three encoders, and every fusion strategy end to end
with a table on tiny synthetic PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image as PILImage

import holomed.encoders.image  # noqa: F401  (registers the image encoders)
import holomed.modalities.image.loading as image_loading
from holomed.candidates import load
from holomed.cohort import build_cohort, patient_splits
from holomed.encoders import create_encoder
from holomed.explain.features import top_features
from holomed.fusion import fusion_names
from holomed.modalities import ModalityData
from holomed.modalities.image import ImagePreprocessor, check_images
from holomed.model import Model
from holomed.spec import ModalitySpec, parse_spec

N = 36


def png(path: Path, bright: float, rng: np.random.Generator, size: int = 32) -> str:
    a = rng.normal(60, 10, (size, size))
    a[8:24, 8:24] += bright * 120
    PILImage.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    """36 patients with 1-3 32x32 PNGs; the label is a bright square; 6 have no image."""
    root = tmp_path_factory.mktemp("png")
    rng = np.random.default_rng(0)
    ids = [f"P{i:02d}" for i in range(N)]
    y = np.arange(N) % 2
    rows = []
    for i, pid in enumerate(ids[: N - 6]):
        for k in range(1 + i % 3):
            rows.append((pid, png(root / f"{pid}_{k}.png", y[i], rng)))
    frame = (
        pd.DataFrame(rows, columns=["id", "path"]).groupby("id", sort=False)["path"].agg(list)
    ).to_frame("paths")
    age = pd.DataFrame({"age": rng.normal(60, 10, N) + 3 * y}, index=ids)
    return root, ids, y, frame, age, rows


def mspec(**kw) -> ModalitySpec:
    return ModalitySpec(name="xray", kind="image", **kw)


def data_of(frame: pd.DataFrame, ids: list[str]) -> ModalityData:
    vals = frame.reindex(ids)
    return ModalityData("image", vals, np.isin(ids, frame.index), ["paths"])


# -- reading and checking -------------------------------------------------------------


def test_read_table_with_several_rows_per_patient_and_relative_paths(pngs):
    root, ids, y, frame, age, rows = pngs
    table = pd.DataFrame([(pid, Path(p).name) for pid, p in rows], columns=["pid", "file"])
    table.to_csv(root / "images.csv", index=False)
    pd.DataFrame({"pid": ids, "y": y}).to_csv(root / "y.csv", index=False)
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "xray",
                    "kind": "image",
                    "source": "images.csv",
                    "id_column": "pid",
                    "options": {"path_column": "file"},
                }
            ],
            "target": {"source": "y.csv", "id_column": "pid", "column": "y"},
        },
        base_dir=str(root),
    )
    c = build_cohort(spec)
    md = c.modalities["xray"]
    assert md.present.sum() == N - 6
    paths = md.values.loc["P02", "paths"]
    assert len(paths) == 3 and all(Path(p).is_absolute() and Path(p).exists() for p in paths)


def test_check_reports_unusable_files_and_keeps_the_rest(pngs, tmp_path):
    root, ids, y, frame, age, rows = pngs
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    df = pd.DataFrame(
        {"paths": [[rows[0][1], str(tmp_path / "gone.png")], [str(bad)], [None]]},
        index=["a", "b", "c"],
    )
    out, problems = check_images(df, mspec(), "images.csv")
    assert list(out.index) == ["a"] and out.loc["a", "paths"] == [rows[0][1]]
    by = {(p["id"], p["reason"].split(" (")[0]) for p in problems}
    assert ("a", "image file not found") in by
    assert ("b", "unreadable image file") in by
    assert ("c", "empty image path") in by
    lost = {p["id"] for p in problems if p.get("scope") != "value"}
    assert lost == {"b", "c"}
    assert any(p.get("file", "").endswith("gone.png") for p in problems)


# -- preprocessing --------------------------------------------------------------------


def test_set_layout_presence_channel_and_absent_rows(pngs):
    root, ids, y, frame, age, rows = pngs
    d = data_of(frame, ids)
    pre = ImagePreprocessor(size=[16, 16]).fit(d)
    assert pre.max_images_ == 3 and pre.out_shape == (3, 2, 16, 16) and pre.out_dim == 2
    x = pre.transform(d)
    assert x.shape == (N, 3, 2, 16, 16) and x.dtype == np.float32
    assert np.isnan(x[~d.present]).all() and np.isfinite(x[d.present]).all()
    # P00 has one image: slots 1-2 are padding (zeros, presence 0)
    assert (x[0, 0, 1] == 1).all() and (x[0, 1:] == 0).all()
    assert (x[2, :, 1] == 1).all()
    # standardised with the training pixels' statistics
    real = x[d.present][:, :, 0][x[d.present][:, :, 1] == 1]
    assert abs(real.mean()) < 1e-3 and abs(real.std() - 1) < 1e-2
    # names of every element; explanations flatten to them
    assert len(pre.feature_names_out_) == x[0].size
    assert pre.feature_names_out_[0] == "img0:gray:y0:x0"
    assert pre.feature_names_out_[16 * 16 + 1] == "img0:image_present:y0:x1"
    attr = {"xray": np.where(np.isnan(x), np.nan, np.abs(x))}
    top = top_features(attr, {"xray": pre.feature_names_out_}, k=3)["xray"]
    assert len(top) == 3 and all(t["feature"].startswith("img") for t in top)


def test_fit_on_present_training_rows_only_and_absent_rows_never_read(pngs, tmp_path):
    root, ids, y, frame, age, rows = pngs
    f = frame.copy()
    f.loc["P00", "paths"] = [str(tmp_path / "never-there.png")]  # absent below
    d = data_of(f, ids)
    d = ModalityData("image", d.values, d.present & (np.array(ids) != "P00"), ["paths"])
    pre = ImagePreprocessor(size=[16, 16]).fit(d)
    x = pre.transform(d)
    assert np.isnan(x[0]).all()
    # statistics come from the training rows: other rows change nothing
    half = d.present.copy()
    half[np.arange(N) >= 15] = False
    pre2 = ImagePreprocessor(size=[16, 16]).fit(ModalityData("image", d.values, half, ["paths"]))
    assert pre2.mean_[0] != pytest.approx(pre.mean_[0], abs=1e-9)
    train_ids = ids[1:15]  # the rows 'half' marks present (P00 is absent)
    pre3 = ImagePreprocessor(size=[16, 16]).fit(data_of(frame.loc[train_ids], train_ids))
    assert pre3.mean_[0] == pytest.approx(pre2.mean_[0], rel=1e-6)


def test_second_transform_hits_the_cache_and_decodes_nothing(pngs, tmp_path, monkeypatch):
    root, ids, y, frame, age, rows = pngs
    d = data_of(frame, ids)
    pre = ImagePreprocessor(size=[16, 16], cache_dir=str(tmp_path / "cache")).fit(d)
    n_img = sum(len(p) for p in frame["paths"])
    assert pre.cache_misses_ == n_img and pre.decoded_ == n_img
    x1 = pre.transform(d)
    assert pre.cache_hits_ == n_img and pre.decoded_ == n_img

    def boom(path):
        raise AssertionError(f"decoded {path}")

    monkeypatch.setattr(image_loading, "read_image", boom)
    again = ImagePreprocessor.from_state(*pre.get_state())  # a new process, same cache
    x2 = again.transform(d)
    np.testing.assert_array_equal(x1, x2)
    assert again.cache_hits_ == n_img and again.decoded_ == 0
    # other settings are other cache entries
    other = ImagePreprocessor(size=[8, 8], cache_dir=str(tmp_path / "cache"))
    with pytest.raises(AssertionError, match="decoded"):
        other.fit(d)


def test_state_round_trip_and_flat_features(pngs):
    root, ids, y, frame, age, rows = pngs
    d = data_of(frame, ids)
    pre = ImagePreprocessor(size=[16, 16], percentile=[1, 99], max_images=2).fit(d)
    meta, arrays = pre.get_state()
    import json

    json.dumps(meta)
    again = ImagePreprocessor.from_state(meta, arrays)
    x = pre.transform(d)
    np.testing.assert_array_equal(x, again.transform(d))
    assert pre.truncated_ == sum(max(0, len(p) - 2) for p in frame["paths"])
    f, names = pre.flat_features(x)
    assert f.shape == (N, len(names)) and names[:2] == ["mean", "sd"] and names[-1] == "n_images"
    assert np.isnan(f[~d.present]).all() and np.isfinite(f[d.present]).all()
    # the bright square shows in the thumbnail's centre blocks
    centre = f[:, names.index("thumb:y1x1")]
    pos = d.present & (y == 1)
    neg = d.present & (y == 0)
    assert centre[pos].mean() > centre[neg].mean() + 1


def test_window_and_spacing_geometry(tmp_path):
    import nibabel as nib

    vol = np.zeros((20, 10, 10), np.float32)
    vol[5:15] = 400.0
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 2.0, 2.0, 1.0])), tmp_path / "v.nii.gz")
    d = ModalityData(
        "image", pd.DataFrame({"paths": [[str(tmp_path / "v.nii.gz")]]}, index=["a"]),
        np.array([True]), ["paths"],
    )  # fmt: skip
    pre = ImagePreprocessor(size=[24, 24, 24], spacing=1.0, window=[0, 200]).fit(d)
    x = pre.transform(d)
    img = x[0, 0, 0] * pre.sd_[0] + pre.mean_[0]  # back to window units [0, 1]
    # 20 x 20 x 20 mm at 1 mm, zero-padded into 24^3: the bright band is 10 mm wide
    assert np.isclose(img[2:22, 12, 12], 1.0, atol=0.05).sum() in (10, 11)
    assert np.allclose(img[:, 0, 0], 0.0, atol=1e-5)


# -- encoders -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn2d", "cnn3d"])
def test_set_encoders_pool_real_images_only(name):
    torch.manual_seed(0)
    spatial = (16, 16) if name == "cnn2d" else (8, 8, 8)
    x = torch.randn(3, 3, 2, *spatial)
    x[:, :, 1] = 1.0
    x[0, 2] = 0.0  # patient 0: 2 real images
    x[2] = 0.0  # patient 2: nothing usable
    enc = create_encoder(name, 2, hidden=8).eval()
    out = enc(x)
    assert out.embedding.shape == (3, 8) and out.tokens.shape == (3, 3, 8)
    w = enc.last_weights_
    assert w[0, 2] == 0 and torch.isclose(w[0].sum(), torch.tensor(1.0))
    assert (w[2] == 0).all() and (out.embedding[2] == 0).all()
    # padding slots are never read
    y = x.clone()
    y[0, 2, 0] = 1e6
    torch.testing.assert_close(enc(y).embedding, out.embedding)
    # order of the set does not matter
    z = x.clone()
    z[1] = x[1].flip(0)
    torch.testing.assert_close(enc(z).embedding[1], out.embedding[1], atol=1e-5, rtol=1e-4)
    enc.train()
    enc.augment = True
    assert torch.isfinite(enc(x).embedding).all()


def test_efficientnet_extractor_loads_offline_and_is_frozen():
    import efficientnet_lite_pytorch  # noqa: F401

    enc = create_encoder("efficientnet_lite0", 2, hidden=16)
    feats = enc.backbone(torch.zeros(2, 1, 64, 64))
    assert feats.shape == (2, 1280)
    assert not any(p.requires_grad for p in enc.backbone.parameters())
    enc.train()
    assert not enc.backbone.net.training
    x = torch.zeros(2, 1, 2, 32, 32)
    x[:, :, 1] = 1
    assert enc(x).embedding.shape == (2, 16)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        create_encoder("efficientnet_lite0", 2, weights="/nonexistent/nope.pt")


def test_efficientnet_features_are_remembered_and_user_weights_load(tmp_path, monkeypatch):
    import efficientnet_lite_pytorch  # noqa: F401
    from safetensors.torch import save_file

    enc = create_encoder("efficientnet_lite0", 2, hidden=4).eval()
    x = torch.randn(2, 2, 2, 32, 32)
    x[:, :, 1] = 1
    first = enc(x).embedding
    calls = []
    real = enc.backbone._extract
    monkeypatch.setattr(enc.backbone, "_extract", lambda t: calls.append(len(t)) or real(t))
    torch.testing.assert_close(enc(x).embedding, first)
    assert calls == []  # all four images remembered
    x[0, 0, 0] += 1.0
    enc(x)
    assert calls == [1]  # only the changed image goes through the backbone
    xg = x.clone().requires_grad_(True)
    enc(xg).embedding.sum().backward()  # attributions bypass the memory
    assert calls[-1] == 4 and xg.grad is not None and xg.grad.abs().sum() > 0
    save_file(enc.backbone.net.state_dict(), str(tmp_path / "b.safetensors"))
    other = create_encoder(
        "efficientnet_lite0", 2, hidden=4, weights=str(tmp_path / "b.safetensors")
    )
    for k, v in enc.backbone.net.state_dict().items():
        torch.testing.assert_close(other.backbone.net.state_dict()[k], v)


def test_user_weights_load_into_a_cnn(tmp_path):
    from safetensors.torch import save_file

    a = create_encoder("cnn2d", 2, hidden=8)
    save_file(a.backbone.state_dict(), str(tmp_path / "w.safetensors"))
    b = create_encoder("cnn2d", 2, hidden=8, weights=str(tmp_path / "w.safetensors"))
    for k, v in a.backbone.state_dict().items():
        torch.testing.assert_close(b.backbone.state_dict()[k], v)


# -- end to end -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def xray_cohort(pngs):
    root, ids, y, frame, age, rows = pngs
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "clinical",
                    "kind": "tabular",
                    "encoder": {"name": "mlp", "options": {"hidden": [8]}},
                },
                {
                    "name": "xray",
                    "kind": "image",
                    "preprocessing": {"size": [16, 16], "max_images": 2},
                    "encoder": {"name": "cnn2d", "options": {"hidden": 8, "channels": [4, 8]}},
                },
            ],
            "target": {"column": "y"},
            "split": {"method": "holdout", "test_size": 0.3},
            "fusion": {"hidden": 8, "options": {"guided.guide": "clinical"}},
            "training": {"max_epochs": 2, "batch_size": 16, "val_fraction": 0.2},
        }
    )
    frames = {"clinical": age, "xray": frame}
    return spec, build_cohort(spec, frames, pd.DataFrame({"y": y}, index=ids))


@pytest.mark.parametrize("fusion", fusion_names())
def test_every_strategy_trains_predicts_and_round_trips_with_images(xray_cohort, fusion, tmp_path):
    spec, cohort = xray_cohort
    assert cohort.modalities["xray"].present.sum() == N - 6
    ((tr, te),) = patient_splits(cohort, spec.split)
    m = Model(spec, fusion=fusion, seed=0).fit(cohort.subset(tr))
    p = m.predict_proba(cohort.subset(te))
    assert p.shape == (len(te), 2) and np.isfinite(p).all()
    m.save(tmp_path / "b")
    np.testing.assert_allclose(load(tmp_path / "b").predict_proba(cohort.subset(te)), p, atol=1e-6)


def test_a_tiny_3d_step_on_nifti_volumes(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    ids = [f"V{i}" for i in range(8)]
    y = np.arange(8) % 2
    paths = []
    for i, pid in enumerate(ids):
        v = rng.normal(0, 1, (12, 10, 8)).astype(np.float32) + 2 * y[i]
        nib.save(nib.Nifti1Image(v, np.diag([-1.5, 1.5, 2.0, 1.0])), tmp_path / f"{pid}.nii.gz")
        paths.append([str(tmp_path / f"{pid}.nii.gz")])
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "ct",
                    "kind": "image",
                    "preprocessing": {"size": [8, 8, 8], "zscore": False},
                    "encoder": {"name": "cnn3d", "options": {"hidden": 4, "channels": [4]}},
                }
            ],
            "target": {"column": "y"},
            "fusion": {"name": "joint", "hidden": 4},
            "training": {"max_epochs": 1, "batch_size": 4, "val_fraction": 0.0},
        }
    )
    frames = {"ct": pd.DataFrame({"paths": paths}, index=ids)}
    c = build_cohort(spec, frames, pd.DataFrame({"y": y}, index=ids))
    m = Model(spec, seed=0).fit(c)
    assert m.preprocessors_["ct"].out_shape == (1, 2, 8, 8, 8)
    assert np.isfinite(m.predict_proba(c)).all()


def test_explanations_name_pixels_and_read_the_set_weights(xray_cohort):
    spec, cohort = xray_cohort
    m = Model(spec, fusion="attention", seed=0).fit(cohort)
    ex = m.explain(cohort.subset(np.arange(8)), top_k=5)
    assert set(ex["contributions"]["global"]) == {"clinical", "xray"}
    top = ex["features"]["xray"]
    assert len(top) == 5 and all(t["feature"].startswith("img") for t in top)
    enc = m.net_.encoders["xray"]
    w = enc.last_weights_
    assert w is not None and w.shape[1] == 2
    assert torch.allclose(w.sum(1)[w.sum(1) > 0], torch.tensor(1.0))


def test_changed_file_is_a_cache_miss_and_undecodable_pixels_name_the_file(tmp_path):
    rng = np.random.default_rng(3)
    p = png(tmp_path / "a.png", 0.0, rng)
    d = ModalityData(
        "image", pd.DataFrame({"paths": [[p]]}, index=["a"]), np.array([True]), ["paths"]
    )
    pre = ImagePreprocessor(size=[8, 8], cache_dir=str(tmp_path / "c")).fit(d)
    png(tmp_path / "a.png", 1.0, rng)  # new content, same name
    pre.transform(d)
    assert pre.cache_misses_ == 2 and pre.cache_hits_ == 0
    import pydicom
    from pydicom.data import get_testdata_file

    src = get_testdata_file("CT_small.dcm")
    if src is None:
        pytest.skip("pydicom's CT_small.dcm is not available offline")
    ds = pydicom.dcmread(src)
    ds.PixelData = ds.PixelData[:100]  # header intact, pixels cut short
    ds.save_as(tmp_path / "cut.dcm")
    df = pd.DataFrame({"paths": [[str(tmp_path / "cut.dcm")]]}, index=["b"])
    kept, problems = check_images(df, mspec(), "t.csv")
    assert list(kept.index) == ["b"] and not problems  # the header probe cannot tell
    bad = ModalityData("image", kept, np.array([True]), ["paths"])
    with pytest.raises(ValueError, match="cut.dcm"):
        ImagePreprocessor(size=[8, 8]).fit(bad)


@pytest.mark.parametrize("mode", ["film", "cross_attention"])
def test_the_clinical_table_guides_the_image_pathway(xray_cohort, mode):
    """Guided fusion across kinds: the same X-rays with a different clinical table give
    different image-pathway features; with the guide absent the image pathway is the
    unconditioned one (FiLM) or carries no attention term (cross-attention)."""

    spec, cohort = xray_cohort
    spec = spec.model_copy(deep=True)
    spec.fusion.options = {"guided.guide": "clinical", "guided.mode": mode}
    m = Model(spec, fusion="guided", seed=0).fit(cohort)
    fusion = m.net_.fusion
    assert fusion.guide == "clinical" and fusion.targets == ["xray"] and fusion.mode == mode
    x, present = m._arrays(cohort)
    both = present["xray"] & present["clinical"]
    x = {k: torch.as_tensor(np.nan_to_num(v)) for k, v in x.items()}
    pres = {k: torch.as_tensor(v) for k, v in present.items()}

    def image_features(x, pres):
        m.net_.eval()
        with torch.no_grad():
            return fusion.condition(m.net_.encode(x, pres), pres)["xray"].numpy()

    base = image_features(x, pres)
    other = dict(x, clinical=x["clinical"] + 3.0)  # another clinical table, same images
    changed = image_features(other, pres)
    diff = np.abs(changed - base).max(axis=1)
    assert (diff[both] > 1e-4).all()  # the guide reaches every guided image
    no_guide = dict(pres, clinical=torch.zeros_like(pres["clinical"]))
    a = image_features(x, no_guide)
    b = image_features(other, no_guide)
    np.testing.assert_allclose(a, b, atol=1e-6)  # an absent guide cannot steer
