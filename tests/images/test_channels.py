"""Co-acquired images stacked as the channels of one image (``as_channels``): three
MR-like sequences per patient (one of another contrast, one moved by a known shift)
written as NIfTI, registered to the first and stacked in the named order; a missing
sequence is a zero channel that is reported; per-channel scaling and statistics; feature
names carry the channel; the cache key, the state and a saved model keep the option; a
grid mismatch without registration names the patient and the file."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK  # noqa: F401
import torch
from scipy import ndimage

import holomed.encoders.image  # noqa: F401  (registers the image encoders)
from holomed.cohort import build_cohort
from holomed.encoders import create_encoder
from holomed.errors import CohortError
from holomed.modalities import ModalityData
from holomed.modalities.image import ImagePreprocessor, check_images
from holomed.spec import ModalitySpec, parse_spec

N = 16
NAMES = ["T1", "T2", "FLAIR"]
SHIFT = (2.0, -1.0, 1.0)  # voxels (= mm) of the FLAIR volume's array axes


def phantom(n: int = N, seed: int = 0) -> np.ndarray:
    """An ellipsoid holding two blocks, smoothed, with a little noise."""
    z, y, x = np.mgrid[:n, :n, :n].astype(float) - (n - 1) / 2
    v = np.zeros((n, n, n), np.float32)
    v[(z / 6) ** 2 + (y / 5) ** 2 + (x / 6.5) ** 2 <= 1] = 1.0
    v[3:6, 9:12, 5:8] = 2.0
    v[9:12, 4:7, 8:12] = 1.5
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(v, 0.7) + rng.normal(0, 0.03, v.shape)).astype(np.float32)


def sequences(v: np.ndarray) -> dict[str, np.ndarray]:
    """T1: the phantom; T2: an inverted contrast (bright where T1 is dark); FLAIR: the
    phantom moved by ``SHIFT`` and scaled (its own intensity range)."""
    return {
        "T1": v,
        "T2": (3.0 - v) * 40.0,
        "FLAIR": ndimage.shift(v, SHIFT, order=1) * 7.0 + 5.0,
    }


def write(root, pid: str, seed: int, skip: str | None = None) -> dict[str, str]:
    out = {}
    for name, a in sequences(phantom(seed=seed)).items():
        if name == skip:
            continue
        path = root / f"{pid}_{name}.nii.gz"
        nib.save(nib.Nifti1Image(a.astype(np.float32), np.eye(4)), path)
        out[name] = str(path)
    return out


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def data(cells: list[list], ids: list[str] | None = None, **columns) -> ModalityData:
    ids = ids or [f"p{i}" for i in range(len(cells))]
    frame = pd.DataFrame({"paths": cells, **columns}, index=ids)
    return ModalityData("image", frame, np.ones(len(cells), bool), ["paths"])


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """Four patients with T1, T2, FLAIR; a fifth without T2."""
    root = tmp_path_factory.mktemp("channels")
    files = {f"p{i}": write(root, f"p{i}", i) for i in range(4)}
    files["p4"] = write(root, "p4", 4, skip="T2")
    return root, files


# -- stacking -------------------------------------------------------------------------


def test_three_sequences_register_and_stack_in_the_named_order(volumes):
    root, files = volumes
    cells = [[f[n] for n in NAMES] for pid, f in files.items() if pid != "p4"]
    d = data(cells)
    pre = ImagePreprocessor(size=[N, N, N], as_channels=NAMES, register="rigid").fit(d)
    x = pre.transform(d)
    assert x.shape == (4, 1, 4, N, N, N) and x.dtype == np.float32
    assert pre.out_shape == (1, 4, N, N, N) and pre.out_dim == 4
    assert pre.channels_ == ("T1", "T2", "FLAIR", "image_present")
    assert (x[:, 0, 3] == 1).all()  # one presence channel for the image as a whole
    t1, t2, flair = x[0, 0, 0], x[0, 0, 1], x[0, 0, 2]
    assert corr(t1, t2) < -0.9  # the inverted contrast sits in the second channel
    x0 = ImagePreprocessor(size=[N, N, N], as_channels=NAMES).fit(d).transform(d)
    before = corr(x0[0, 0, 0], x0[0, 0, 2])
    assert corr(t1, flair) > 0.95 and corr(t1, flair) > before + 0.05, (before, corr(t1, flair))
    # the shift is recovered; each record names its channel and the reference channel
    recs = {r["channel"]: r for r in pre.registration_["p0"]}
    assert set(recs) == {"T2", "FLAIR"} and recs["FLAIR"]["reference_channel"] == "T1"
    assert np.abs(np.asarray(recs["FLAIR"]["translation_mm"]) - SHIFT).max() < 0.75
    assert "grid" not in recs["FLAIR"]
    json.dumps(pre.registration_)
    # per-channel scaling and statistics: each channel is standardised on its own
    assert pre.mean_.shape == (3,) and pre.sd_.shape == (3,)
    for k in range(3):
        assert abs(x[:, 0, k].mean()) < 1e-3 and abs(x[:, 0, k].std() - 1) < 1e-2
    assert pre.channel_summary_ == {
        "channels": NAMES,
        "patients": 4,
        "complete": 4,
        "missing": [],
    }


def test_a_missing_sequence_is_a_zero_channel_and_reported(volumes, tmp_path):
    root, files = volumes
    ids = list(files)
    # a table, one row per image: p4's T2 row has an empty path, so FLAIR keeps its slot;
    # p5 has no usable image at all and loses the modality (here: leaves the cohort)
    rows = [(pid, files[pid].get(n, "")) for pid in ids for n in NAMES]
    rows.append(("p5", str(tmp_path / "gone.nii.gz")))
    pd.DataFrame(rows, columns=["id", "path"]).to_csv(tmp_path / "mr.csv", index=False)
    pd.DataFrame({"id": [*ids, "p5"], "y": [0, 1, 0, 1, 0, 1]}).to_csv(
        tmp_path / "y.csv", index=False
    )
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "mr",
                    "kind": "image",
                    "source": "mr.csv",
                    "preprocessing": {"size": [8, 8, 8], "as_channels": NAMES},
                }
            ],
            "target": {"source": "y.csv", "column": "y"},
        },
        base_dir=str(tmp_path),
    )
    c = build_cohort(spec)
    md = c.modalities["mr"]
    assert list(c.ids) == ids and md.present.all()  # p5 had this modality only
    reported = [e for e in c.excluded if e.get("id") == "p4"]
    assert [e["reason"] for e in reported] == [
        "empty image path; channel 'T2' filled with 0 (the training mean)"
    ]
    assert reported[0]["scope"] == "value" and reported[0]["count"] == 1
    assert any(e.get("id") == "p5" and "no usable image" in e["reason"] for e in c.excluded)
    pre = ImagePreprocessor(size=[8, 8, 8], as_channels=NAMES).fit(md)
    x = pre.transform(md)
    i = list(c.ids).index("p4")
    assert (x[i, 0, 1] == 0).all() and (x[i, 0, 3] == 1).all()
    assert np.abs(x[i, 0, [0, 2]]).max() > 0.5  # T1 and FLAIR are there
    # the T2 statistics come from the four patients that have it
    assert pre.channel_summary_["complete"] == 4 and pre.channel_summary_["patients"] == 5
    (entry,) = pre.channel_summary_["missing"]
    assert entry["channel"] == "T2" and entry["count"] == 1 and "empty" in entry["reason"]
    assert set(pre.missing_channels_) == {"p4"}
    # FLAIR in p4 is where FLAIR is for everyone: its channel matches the others' FLAIR
    assert corr(x[i, 0, 2], x[0, 0, 2]) > 0.8
    # flat features (classical baselines) say per channel what is there
    f, names = pre.flat_features(x)
    assert f[i, names.index("T2:present")] == 0 and f[i, names.index("FLAIR:present")] == 1
    assert "T1:mean" in names
    # a patient without the modality is NaN, as for sets
    absent = ImagePreprocessor.transform(pre, md.masked(np.arange(len(md)) != 0))
    assert np.isnan(absent[0]).all() and np.isnan(pre.flat_features(absent)[0][0]).all()


def test_images_named_by_a_channel_column_are_matched_by_name(volumes, tmp_path):
    root, files = volumes
    # rows out of order, p4 without T2, p3 with an unknown sequence and a second T1
    rows = [(pid, files[pid][n], n) for pid in files for n in reversed(NAMES) if n in files[pid]]
    rows += [("p3", files["p0"]["T1"], "PD"), ("p3", files["p1"]["T1"], "T1")]
    table = pd.DataFrame(rows, columns=["pid", "file", "sequence"])
    table.to_csv(tmp_path / "mr.csv", index=False)
    ms = ModalitySpec(
        name="mr",
        kind="image",
        source=["mr.csv"],
        id_column="pid",
        options={"path_column": "file", "channel_column": "sequence"},
        preprocessing={"as_channels": NAMES},
    )
    spec = parse_spec(
        {"modalities": [ms.model_dump()], "target": {"column": "y"}}, base_dir=str(tmp_path)
    )
    from holomed.modalities.image import read_images

    raw = read_images(spec.modalities[0], spec)
    assert raw.loc["p0", "channels"] == ["FLAIR", "T2", "T1"]
    out, problems = check_images(raw, spec.modalities[0], "mr.csv")
    assert out.loc["p0", "paths"] == [files["p0"][n] for n in NAMES]  # in the named order
    assert out.loc["p4", "paths"] == [files["p4"]["T1"], None, files["p4"]["FLAIR"]]
    by = {(p["id"], p["reason"]) for p in problems}
    assert ("p4", "no image for channel 'T2'; filled with 0 (the training mean)") in by
    assert ("p3", "image of unknown channel 'PD'; the channels are T1, T2, FLAIR: left out") in by
    assert ("p3", "a second image for channel 'T1': left out") in by
    assert out.loc["p3", "paths"][0] == files["p3"]["T1"]  # the first T1 row is kept
    d = ModalityData("image", out, np.ones(len(out), bool), ["paths"])
    pre = ImagePreprocessor(size=[8, 8, 8], as_channels=NAMES).fit(d)
    assert pre.missing_channels_ == {"p4": {"T2": "no image for this channel in the table"}}
    assert pre.channel_report() == [
        {"channel": "T2", "reason": "no image for this channel in the table", "count": 1}
    ]
    # a frame handed over unchecked with an unknown name is an error naming it
    bad = data([[files["p0"]["T1"]]], channels=[["PD"]])
    with pytest.raises(ValueError, match="unknown channel 'PD'"):
        ImagePreprocessor(size=[8, 8, 8], as_channels=NAMES).fit(bad)


def test_2d_channels_by_position_feed_cnn2d_and_efficientnet_refuses_two(tmp_path):
    rng = np.random.default_rng(0)
    cells = []
    for i in range(3):
        a = phantom(seed=i)[8]
        paths = []
        for k, img in enumerate([a, 1 - a + rng.normal(0, 0.01, a.shape)]):
            p = tmp_path / f"s{i}_{k}.nii.gz"
            nib.save(nib.Nifti1Image(np.asarray(img, np.float32), np.eye(4)), p)
            paths.append(str(p))
        cells.append(paths)
    d = data(cells)
    pre = ImagePreprocessor(size=[24, 24], as_channels=True).fit(d)
    assert pre.channel_names_ == ["ch0", "ch1"] and pre.out_shape == (1, 3, 24, 24)
    x = pre.transform(d)
    assert pre.feature_names_out_[24 * 24 + 3] == "img0:ch1:y0:x3"
    enc = create_encoder("cnn2d", pre.out_dim, hidden=4, channels=[4]).eval()
    e = enc(torch.from_numpy(x))
    assert e.embedding.shape == (3, 4) and torch.isfinite(e.embedding).all()
    with pytest.raises(ValueError, match="1 \\(gray\\) or 3 image channels.*got 2"):
        create_encoder("efficientnet_lite0", pre.out_dim)
    # ``true`` with max_images: that many channels; a patient with fewer gets zeros, and
    # a channel no training patient has is an error
    with pytest.raises(ValueError, match=r"no training patient has an image for .*'ch2'"):
        ImagePreprocessor(size=[24, 24], as_channels=True, max_images=3).fit(d)
    d3 = data([cells[0], *[[*c, c[0]] for c in cells[1:]]])
    three = ImagePreprocessor(size=[24, 24], as_channels=True, max_images=3).fit(d3)
    assert three.channel_names_ == ["ch0", "ch1", "ch2"]
    assert three.missing_channels_ == {"p0": {"ch2": "no image for this channel in the table"}}
    x3 = three.transform(d3)
    assert x3.shape == (3, 1, 4, 24, 24) and (x3[0, 0, 2] == 0).all()
    assert corr(x3[1, 0, 2], x3[1, 0, 0]) > 0.999  # the same image, in its own channel


# -- settings, cache, state -----------------------------------------------------------


def test_settings_are_checked(volumes):
    root, files = volumes
    d = data([[files["p0"][n] for n in NAMES]])
    for option, match in [
        ("T1", "expected true or a list of channel names"),
        (["T1", "T1", "T2"], "more than once"),
        (["T1", "a:b"], "not a usable channel name"),
    ]:
        with pytest.raises(ValueError, match=match):
            ImagePreprocessor(size=[8, 8, 8], as_channels=option).fit(d)
    with pytest.raises(ValueError, match="max_images is 2"):
        ImagePreprocessor(size=[8, 8, 8], as_channels=NAMES, max_images=2).fit(d)
    with pytest.raises(ValueError, match="register_reference 'PD'"):
        ImagePreprocessor(size=[8, 8, 8], as_channels=NAMES, register_reference="PD").fit(d)
    # the reference may be named; the others are registered onto FLAIR's grid
    pre = ImagePreprocessor(
        size=[8, 8, 8], as_channels=NAMES, register="rigid", register_reference="FLAIR"
    ).fit(d)
    assert {r["reference_channel"] for r in pre.registration_["p0"]} == {"FLAIR"}
    assert [r["channel"] for r in pre.registration_["p0"]] == ["T1", "T2"]
    # a patient without the reference channel is registered onto its first channel
    d = data([[files["p1"][n] for n in NAMES], [None, files["p0"]["T2"], files["p0"]["FLAIR"]]])
    pre = ImagePreprocessor(size=[8, 8, 8], as_channels=NAMES, register="rigid").fit(d)
    (rec,) = pre.registration_["p1"]
    assert rec["channel"] == "FLAIR" and rec["reference_channel"] == "T2"
    assert pre.missing_channels_ == {"p1": {"T1": "empty image path or unusable image file "
                                            "(see the cohort's report)"}}  # fmt: skip


def test_cache_key_state_and_old_states(volumes, tmp_path):
    root, files = volumes
    d = data([[f.get(n) for n in NAMES] for f in files.values()], ids=list(files))
    cache = str(tmp_path / "cache")
    pre = ImagePreprocessor(
        size=[8, 8, 8], as_channels=NAMES, register="rigid", cache_dir=cache
    ).fit(d)
    plain = ImagePreprocessor(size=[8, 8, 8], register="rigid", cache_dir=cache)
    plain.size_ = [8, 8, 8]
    plain._init_counters()
    assert pre._settings()["as_channels"] == NAMES and "as_channels" not in plain._settings()
    ref = files["p0"]["T1"]
    assert pre._digest(ref) != plain._digest(ref)
    x = pre.transform(d)
    assert pre.decoded_ == 14 and pre.cache_hits_ == 14  # the second pass decodes nothing
    meta, arrays = pre.get_state()
    meta = json.loads(json.dumps(meta))
    assert meta["as_channels"] == NAMES and meta["channel_names_"] == NAMES
    assert meta["channel_summary_"]["missing"][0]["channel"] == "T2"
    again = ImagePreprocessor.from_state(meta, arrays)
    np.testing.assert_array_equal(again.transform(d), x)
    assert again.decoded_ == 0 and again.registered_ == 0  # grids and records cached
    assert list(again.feature_names_out_[:1]) == ["img0:T1:z0:y0:x0"]
    # a state saved before the option existed reads as the set layout
    meta, arrays = ImagePreprocessor(size=[8, 8, 8]).fit(d.subset(np.arange(4))).get_state()
    for k in ("as_channels", "channel_names_", "channel_summary_"):
        assert k not in meta
    old = ImagePreprocessor.from_state(meta, arrays)
    assert old.channel_names_ is None and old.out_shape == (3, 2, 8, 8, 8)
    assert old.channels_ == ("gray", "image_present")


def test_a_grid_mismatch_without_registration_names_the_patient_and_file(volumes, tmp_path):
    root, files = volumes
    big = tmp_path / "p9_T2_big.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, N, N), np.float32) + phantom()[:1], np.eye(4)), big)
    d = data([[files["p0"]["T1"], str(big), files["p0"]["FLAIR"]]], ids=["p9"])
    with pytest.raises(CohortError, match=r"patient 'p9': channel 'T2' \(.*p9_T2_big.nii.gz\)"):
        ImagePreprocessor(size=[8, 8, 8], as_channels=NAMES).fit(d)
    with pytest.raises(CohortError, match="20x16x16 voxels .* on 16x16x16.*set register"):
        ImagePreprocessor(size=[8, 8, 8], as_channels=NAMES).fit(d)
    # the same field of view at another voxel size lands on the grid once ``spacing``
    # resamples both; registration puts it on the reference's grid in any case
    fine = tmp_path / "p9_T2_fine.nii.gz"
    nib.save(nib.Nifti1Image(ndimage.zoom(phantom(), 2, order=1), np.diag([0.5] * 3 + [1])), fine)
    d = data([[files["p0"]["T1"], str(fine), files["p0"]["FLAIR"]]], ids=["p9"])
    with pytest.raises(CohortError, match="p9_T2_fine"):
        ImagePreprocessor(size=[8, 8, 8], as_channels=NAMES).fit(d)
    ImagePreprocessor(size=[8, 8, 8], as_channels=NAMES, spacing=2.0).fit(d)
    ImagePreprocessor(size=[8, 8, 8], as_channels=NAMES, register="rigid").fit(d)


# -- end to end -----------------------------------------------------------------------


def test_a_model_with_stacked_sequences_fits_predicts_saves_and_loads(tmp_path):
    from holomed.candidates import load
    from holomed.explain.features import integrated_gradients, top_features
    from holomed.model import Model

    ids = [f"V{i}" for i in range(6)]
    y = np.arange(6) % 2
    files = {pid: write(tmp_path, pid, i, "T2" if i == 5 else None) for i, pid in enumerate(ids)}
    paths = [[files[pid].get(n) for n in NAMES] for pid in ids]
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "mr",
                    "kind": "image",
                    "preprocessing": {
                        "size": [8, 8, 8],
                        "as_channels": NAMES,
                        "register": "rigid",
                        "cache_dir": str(tmp_path / "cache"),
                    },
                    "encoder": {
                        "name": "cnn3d",
                        "options": {"hidden": 4, "channels": [4], "augment": {"rotate": 5}},
                    },
                }
            ],
            "target": {"column": "y"},
            "fusion": {"name": "joint", "hidden": 4},
            "training": {"max_epochs": 1, "batch_size": 3, "val_fraction": 0.0},
        }
    )
    frames = {"mr": pd.DataFrame({"paths": paths}, index=ids)}
    c = build_cohort(spec, frames, pd.DataFrame({"y": y}, index=ids))
    assert any(e.get("id") == "V5" and "channel 'T2'" in e["reason"] for e in c.excluded)
    m = Model(spec, seed=0).fit(c)
    pre = m.preprocessors_["mr"]
    assert m.in_dims_["mr"] == 4 and pre.out_shape == (1, 4, 8, 8, 8)
    assert pre.channel_summary_["missing"][0]["count"] == 1
    p = m.predict_proba(c)
    assert np.isfinite(p).all()
    m.save(tmp_path / "bundle")
    back = load(tmp_path / "bundle")
    bp = back.preprocessors_["mr"]
    assert bp.channel_names_ == NAMES and bp.as_channels == NAMES
    np.testing.assert_array_equal(bp.mean_, pre.mean_)
    np.testing.assert_allclose(back.predict_proba(c), p, atol=1e-6)
    # attributions are read per channel: the top features name the sequence
    attr = integrated_gradients(m, c, n_steps=4)
    top = top_features(attr, {"mr": pre.feature_names_out_}, k=5)["mr"]
    assert all(t["feature"].split(":")[1] in (*NAMES, "image_present") for t in top)
    share = pre.channel_importance(attr["mr"])
    assert list(share) == NAMES and abs(sum(share.values()) - 1) < 1e-6


def test_efficientnet_reads_three_stacked_sequences_as_rgb():
    import efficientnet_lite_pytorch  # noqa: F401

    enc = create_encoder("efficientnet_lite0", 4, hidden=8, input_size=64).eval()
    x = torch.randn(2, 1, 4, 24, 24)
    x[:, :, 3] = 1
    e = enc(x)
    assert e.embedding.shape == (2, 8) and torch.isfinite(e.embedding).all()
    # the three channels are not averaged away: swapping two changes the features
    swapped = x[:, :, [1, 0, 2, 3]]
    assert not torch.allclose(enc(swapped).embedding, e.embedding)
