"""Registration of co-acquired images (``register: rigid | affine``): a structured
phantom and a copy moved by a known rigid transform, saved as NIfTI; the transform is
recovered, the moved image lands on the reference's voxels, the record is kept (and
cached, and summarised in the state), the cache key knows the setting, and failures
name the file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK  # noqa: F401
from scipy import ndimage

from holomed.errors import CohortError
from holomed.io.images import Image, register_image
from holomed.modalities import ModalityData
from holomed.modalities.image import ImagePreprocessor

N = 32
SHIFT = np.array([3.0, -2.0, 2.0])  # voxels of the array, axes (i, j, k)
ANGLES = (5.0, 3.0)  # degrees about the i-j and j-k planes


def phantom(n: int = N, seed: int = 0) -> np.ndarray:
    """An ellipsoid holding a sphere and two blocks of other intensities, smoothed, with
    a little noise: structure in every direction, so a rotation is visible."""
    z, y, x = np.mgrid[:n, :n, :n].astype(float) - (n - 1) / 2
    v = np.zeros((n, n, n), np.float32)
    v[(z / 12) ** 2 + (y / 10) ** 2 + (x / 13) ** 2 <= 1] = 1.0
    v[(z - 3) ** 2 + (y + 4) ** 2 + (x - 5) ** 2 <= 16] = 3.0
    v[4:10, 18:24, 10:16] = 2.0
    v[20:24, 8:12, 18:26] = 4.0
    rng = np.random.default_rng(seed)
    return (ndimage.gaussian_filter(v, 0.8) + rng.normal(0, 0.05, v.shape)).astype(np.float32)


def rotation(deg: float, i: int, j: int) -> np.ndarray:
    a = np.radians(deg)
    r = np.eye(3)
    r[i, i] = r[j, j] = np.cos(a)
    r[i, j], r[j, i] = -np.sin(a), np.sin(a)
    return r


TRUE_R = rotation(ANGLES[0], 0, 1) @ rotation(ANGLES[1], 1, 2)
TRUE_DEG = float(np.degrees(np.arccos((np.trace(TRUE_R) - 1) / 2)))


def moved(v: np.ndarray, r: np.ndarray = TRUE_R, d: np.ndarray = SHIFT) -> np.ndarray:
    """``v`` moved so that the moving image at ``T(x) = r (x - c) + c + d`` (array index
    space, ``c`` the centre) shows what the reference shows at ``x``."""
    c = np.full(3, (v.shape[0] - 1) / 2)
    inv = np.linalg.inv(r)
    return ndimage.affine_transform(v, inv, offset=c - inv @ (c + d), order=1)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Reference and moving volumes (LAS, 1 mm: the reader turns them to RAS)."""
    root = tmp_path_factory.mktemp("reg")
    aff = np.diag([-1.0, 1.0, 1.0, 1.0])
    ref = phantom()
    nib.save(nib.Nifti1Image(ref, aff), root / "ref.nii.gz")
    nib.save(nib.Nifti1Image(moved(ref), aff), root / "moving.nii.gz")
    return root, str(root / "ref.nii.gz"), str(root / "moving.nii.gz")


def data(*sets: list[str], ids: list[str] | None = None) -> ModalityData:
    ids = ids or [f"p{i}" for i in range(len(sets))]
    frame = pd.DataFrame({"paths": [list(s) for s in sets]}, index=ids)
    return ModalityData("image", frame, np.ones(len(sets), bool), ["paths"])


def raw(pre: ImagePreprocessor, x: np.ndarray) -> np.ndarray:
    return x * pre.sd_[0] + pre.mean_[0]


# -- the transform is recovered ------------------------------------------------------


def test_rigid_registration_aligns_a_shifted_rotated_volume(pair):
    root, ref, mov = pair
    d = data([ref, mov])
    plain = ImagePreprocessor(size=[N, N, N])
    x0 = plain.fit(d).transform(d)
    before = corr(x0[0, 0, 0], x0[0, 1, 0])
    t0 = time.perf_counter()
    pre = ImagePreprocessor(size=[N, N, N], register="rigid").fit(d)
    seconds = time.perf_counter() - t0
    x = pre.transform(d)
    after = corr(x[0, 0, 0], x[0, 1, 0])
    assert after > 0.9 and after > before + 0.1, (before, after)
    assert (x[0, :, 1] == 1).all()  # both slots real images
    # the reference itself is untouched by the option
    np.testing.assert_allclose(raw(pre, x[0, 0, 0]), raw(plain, x0[0, 0, 0]), atol=1e-5)
    (rec,) = pre.registration_["p0"]
    assert rec["image"] == 1 and rec["type"] == "rigid" and rec["space"] == "RAS mm"
    assert rec["reference"] == ref and rec["moving"] == mov
    # the file is LAS: the array's first axis runs to the left, so its shift is -x in RAS
    truth = SHIFT * [-1, 1, 1]
    assert np.abs(np.asarray(rec["translation_mm"]) - truth).max() < 1.0  # 1 voxel = 1 mm
    assert abs(rec["rotation_deg"] - TRUE_DEG) < 1.0
    m = np.asarray(rec["matrix"])
    assert m.shape == (4, 4) and np.allclose(m[3], [0, 0, 0, 1])
    assert rec["spacing"] == [1.0, 1.0, 1.0] and rec["shape"] == [N, N, N]
    assert rec["metric_after"] < rec["metric_before"]  # Mattes MI: lower is better
    assert rec["itk_transform"] == "Euler3DTransform" and len(rec["parameters"]) == 6
    json.dumps(pre.registration_)
    assert pre.registered_ == 2  # fit and transform each registered the one moving image
    s = pre.registration_summary_
    assert s["images"] == 1 and abs(s["translation_mm"]["max"] - np.linalg.norm(truth)) < 1
    assert seconds < 10


def test_registration_is_reproducible_and_works_across_contrasts():
    ref = phantom()
    # another contrast: a non-monotone map of the intensities (as PET or another MR
    # sequence), which correlation could not match but mutual information can
    other = (np.sin(moved(ref) * 1.7) * 100 + 20).astype(np.float32)
    fixed = Image(ref, (1.0, 1.0, 1.0), np.eye(4), "ref")
    moving = Image(other, (1.0, 1.0, 1.0), np.eye(4), "other")
    out, rec = register_image(fixed, moving, "rigid")
    _, again = register_image(fixed, moving, "rigid")
    assert rec["parameters"] == again["parameters"]  # bit for bit: fixed seed, one thread
    assert np.abs(np.asarray(rec["translation_mm"]) - SHIFT).max() < 1.0
    assert abs(rec["rotation_deg"] - TRUE_DEG) < 1.0
    assert out.array.shape == ref.shape and out.source == "other"
    assert out.meta["registered_to"] == "ref"
    np.testing.assert_array_equal(out.affine, fixed.affine)


def test_affine_mode_recovers_a_scaling(tmp_path):
    ref = phantom()
    truth = np.diag([1.08, 0.94, 1.0]) @ rotation(4.0, 0, 1)  # stretched and rotated
    nib.save(nib.Nifti1Image(ref, np.eye(4)), tmp_path / "ref.nii.gz")
    mov = moved(ref, truth, np.array([2.0, -1.0, 1.0]))
    nib.save(nib.Nifti1Image(mov, np.eye(4)), tmp_path / "mov.nii.gz")
    d = data([str(tmp_path / "ref.nii.gz"), str(tmp_path / "mov.nii.gz")])
    x = {}
    for mode in ("rigid", "affine"):
        pre = ImagePreprocessor(size=[N, N, N], register=mode).fit(d)
        x[mode] = pre.transform(d)
    (rec,) = pre.registration_["p0"]
    assert rec["type"] == "affine" and rec["itk_transform"] == "AffineTransform"
    assert rec["note"] is None and len(rec["parameters"]) == 12
    np.testing.assert_allclose(np.asarray(rec["matrix"])[:3, :3], truth, atol=0.05)
    after = {m: corr(v[0, 0, 0], v[0, 1, 0]) for m, v in x.items()}
    assert after["affine"] > after["rigid"] > 0.9


def test_affine_mode_with_spacing_lands_on_the_reference_grid(pair):
    root, ref, mov = pair
    d = data([ref, mov])
    pre = ImagePreprocessor(size=[24, 24, 24], spacing=1.5, register="affine").fit(d)
    x = pre.transform(d)
    assert x.shape == (1, 2, 2, 24, 24, 24)
    assert corr(x[0, 0, 0], x[0, 1, 0]) > 0.9
    (rec,) = pre.registration_["p0"]
    # the truth is rigid: an affine stage that cannot improve on it may be dropped
    assert rec["type"] == "affine" and len(rec["parameters"]) in (6, 12)
    assert rec["spacing"] == pytest.approx([1.5] * 3, rel=0.05)  # the resampled grid
    assert rec["shape"] == [21, 21, 21]
    assert abs(rec["rotation_deg"] - TRUE_DEG) < 1.5


def test_2d_images_register_too(tmp_path):
    img = phantom()[16]
    nib.save(nib.Nifti1Image(img, np.eye(4)), tmp_path / "a.nii.gz")
    shifted = ndimage.shift(img, (2.0, -3.0), order=1)
    nib.save(nib.Nifti1Image(shifted.astype(np.float32), np.eye(4)), tmp_path / "b.nii.gz")
    d = data([str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")])
    pre = ImagePreprocessor(size=[N, N], register="rigid").fit(d)
    x = pre.transform(d)
    (rec,) = pre.registration_["p0"]
    assert rec["space"] == "image mm" and rec["itk_transform"] == "Euler2DTransform"
    assert np.abs(np.asarray(rec["translation_mm"]) - [2.0, -3.0]).max() < 1.0
    assert corr(x[0, 0, 0], x[0, 1, 0]) > 0.95


# -- cache, state, report -----------------------------------------------------------


def test_cache_key_knows_the_registration_and_cached_records_come_back(pair, tmp_path):
    root, ref, mov = pair
    d = data([ref, mov])
    cache = str(tmp_path / "cache")
    plain = ImagePreprocessor(size=[N, N, N], cache_dir=cache).fit(d)
    reg = ImagePreprocessor(size=[N, N, N], cache_dir=cache, register="rigid").fit(d)
    assert reg.cache_hits_ == 0 and reg.registered_ == 1  # nothing unregistered reused
    assert plain._digest(mov) != reg._digest(mov, ref)
    assert plain._digest(ref) != reg._digest(ref)
    assert "register" not in plain._settings() and reg._settings()["register"] == "rigid"
    other = ImagePreprocessor(size=[N, N, N], register="rigid", register_reference=1)
    other.size_ = [N, N, N]
    other._init_counters()
    assert other._digest(mov, ref) != reg._digest(mov, ref)
    x = reg.transform(d)
    assert reg.registered_ == 1 and reg.cache_hits_ == 2  # from the cache, records too
    (rec,) = reg.registration_["p0"]
    assert rec["cached"] and rec["type"] == "rigid" and rec["moving"] == mov
    # the state is JSON + arrays, with the summary; a new process reads the cache
    meta, arrays = reg.get_state()
    meta = json.loads(json.dumps(meta))
    assert meta["register"] == "rigid" and meta["registration_summary_"]["images"] == 1
    again = ImagePreprocessor.from_state(meta, arrays)
    np.testing.assert_array_equal(again.transform(d), x)
    assert again.registered_ == 0 and again.decoded_ == 0
    assert again.registration_["p0"][0]["translation_mm"] == rec["translation_mm"]
    # another reference (new content) is another key for the moving image
    alt = tmp_path / "ref2.nii.gz"
    nib.save(nib.Nifti1Image(phantom(seed=1), np.diag([-1.0, 1.0, 1.0, 1.0])), alt)
    assert reg._digest(mov, str(alt)) != reg._digest(mov, ref)


def test_bundles_without_the_option_still_load(pair):
    root, ref, mov = pair
    d = data([ref, mov])
    meta, arrays = ImagePreprocessor(size=[8, 8, 8]).fit(d).get_state()
    for k in ("register", "register_reference", "registration_summary_"):
        meta.pop(k)
    again = ImagePreprocessor.from_state(meta, arrays)
    assert again.register is None and again._register_mode() is None


def test_a_patient_without_the_reference_slot_is_reported_not_registered(pair):
    root, ref, mov = pair
    d = data([ref, mov, ref], [mov, ref])
    pre = ImagePreprocessor(size=[8, 8, 8], register="rigid", register_reference=2).fit(d)
    assert [r["image"] for r in pre.registration_["p0"]] == [0, 1]
    skipped = pre.registration_["p1"]
    assert all(r["type"] is None and "no image 2" in r["skipped"] for r in skipped)
    assert pre.registration_summary_["skipped"] == 2


# -- errors ---------------------------------------------------------------------------


def test_settings_are_checked(pair):
    root, ref, mov = pair
    d = data([ref, mov])
    with pytest.raises(ValueError, match="elastic"):
        ImagePreprocessor(size=[8, 8, 8], register="elastic").fit(d)
    with pytest.raises(ValueError, match="register_reference 2"):
        ImagePreprocessor(size=[8, 8, 8], register="rigid", register_reference=2).fit(d)
    with pytest.raises(ValueError, match="register_reference"):
        ImagePreprocessor(size=[8, 8, 8], register="rigid", register_reference=-1).fit(d)
    assert ImagePreprocessor(register="none")._register_mode() is None


def test_unreadable_or_unregistrable_moving_files_are_named(pair, tmp_path):
    root, ref, mov = pair
    bad = tmp_path / "corrupt_moving.nii.gz"
    bad.write_bytes(Path(mov).read_bytes()[:300])  # truncated gzip
    with pytest.raises(CohortError, match="corrupt_moving.nii.gz"):
        ImagePreprocessor(size=[8, 8, 8], register="rigid").fit(data([ref, str(bad)]))
    flat = tmp_path / "flat_moving.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((N, N, N), np.float32), np.eye(4)), flat)
    with pytest.raises(CohortError, match="flat_moving.nii.gz.*constant"):
        ImagePreprocessor(size=[8, 8, 8], register="rigid").fit(data([ref, str(flat)]))
    far = tmp_path / "far_moving.nii.gz"  # 500 mm away: no overlap to start from
    aff = np.diag([-1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = 500.0
    nib.save(nib.Nifti1Image(moved(phantom()), aff), far)
    with pytest.raises(CohortError, match=r"far_moving.nii.gz: rigid registration to .*failed"):
        ImagePreprocessor(size=[8, 8, 8], register="rigid").fit(data([ref, str(far)]))
    # a 2D image cannot be registered to a 3D reference
    flat2d = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(phantom()[16], np.eye(4)), flat2d)
    with pytest.raises(CohortError, match="slice.nii.gz"):
        register_image(
            Image(phantom(), (1.0,) * 3, None, "ref"),
            Image(phantom()[16], (1.0,) * 2, None, str(flat2d)),
        )


# -- end to end -----------------------------------------------------------------------


def test_a_model_with_registration_and_augmentation_trains_saves_and_loads(tmp_path):
    from holomed.candidates import load
    from holomed.cohort import build_cohort
    from holomed.model import Model
    from holomed.spec import parse_spec

    ids = [f"V{i}" for i in range(6)]
    y = np.arange(6) % 2
    paths = []
    for i, pid in enumerate(ids):
        ref = phantom(seed=i) * (1 + y[i])
        nib.save(nib.Nifti1Image(ref, np.eye(4)), tmp_path / f"{pid}_a.nii.gz")
        shift = np.array([1.0 + i % 3, -1.0, 2.0])
        nib.save(
            nib.Nifti1Image(moved(ref, TRUE_R, shift), np.eye(4)), tmp_path / f"{pid}_b.nii.gz"
        )
        paths.append([str(tmp_path / f"{pid}_a.nii.gz"), str(tmp_path / f"{pid}_b.nii.gz")])
    spec = parse_spec(
        {
            "modalities": [
                {
                    "name": "mr",
                    "kind": "image",
                    "preprocessing": {
                        "size": [8, 8, 8],
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
    m = Model(spec, seed=0).fit(c)
    pre = m.preprocessors_["mr"]
    assert set(pre.registration_) == set(ids)
    assert pre.registration_summary_["images"] == 6
    p = m.predict_proba(c)
    assert np.isfinite(p).all()
    m.save(tmp_path / "bundle")
    back = load(tmp_path / "bundle")
    assert back.preprocessors_["mr"].register == "rigid"
    assert back.preprocessors_["mr"].registration_summary_["images"] == 6
    np.testing.assert_allclose(back.predict_proba(c), p, atol=1e-6)  # eval: no augmentation
