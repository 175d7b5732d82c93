"""Image readers on real-format files shipped with pydicom and nibabel: DICOM (one file,
a series folder), NIfTI, PNG; resampling keeps the physical extent; RAS reorientation;
corrupt or truncated files are errors naming the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from holomed.errors import CohortError
from holomed.io.images import Image, read_image, resample, to_ras, write_nifti

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def ct_small() -> Path:
    from pydicom.data import get_testdata_file

    p = get_testdata_file("CT_small.dcm")
    if p is None:
        pytest.skip("pydicom's CT_small.dcm is not available offline")
    return Path(p)


def nifti(name: str) -> Path:
    p = NIB_DATA / name
    if not p.exists():
        pytest.skip(f"nibabel test file {name} not shipped")
    return p


def test_dicom_file_rescaled_with_spacing():
    p = ct_small()
    img = read_image(p)
    ds = pydicom.dcmread(p)
    raw = ds.pixel_array.astype(np.float32)
    expect = raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(img.array, expect)
    assert img.array.dtype == np.float32 and img.array.shape == (128, 128)
    assert img.spacing == pytest.approx((0.661468, 0.661468))
    assert img.meta["slice_thickness"] == pytest.approx(5.0)
    assert img.affine is not None and img.source == str(p)


def test_pydicom_example_dataset_when_available():
    from pydicom import examples

    try:
        ds = examples.ct
    except Exception:  # noqa: BLE001  fetched on demand in some versions
        pytest.skip("pydicom.examples.ct not available offline")
    img = read_image(ds.filename)
    assert img.array.shape == (int(ds.Rows), int(ds.Columns))


def test_resample_keeps_the_physical_extent_2d_and_3d():
    img = read_image(ct_small())
    r = resample(img, 1.0)
    assert r.array.shape == (85, 85)
    np.testing.assert_allclose(r.extent, img.extent, rtol=1e-6)
    assert r.spacing == pytest.approx((img.extent[0] / 85,) * 2)  # within half a pixel of 1
    vol = read_image(nifti("anatomical.nii"))
    r3 = resample(vol, (3.0, 4.0, 2.5))
    assert r3.array.shape == tuple(np.round(np.asarray(vol.extent) / [3, 4, 2.5]).astype(int))
    np.testing.assert_allclose(r3.extent, vol.extent, rtol=1e-6)
    # the volume's outer corner stays where it was in patient space
    corner = np.r_[-0.5, -0.5, -0.5, 1.0]
    np.testing.assert_allclose(r3.affine @ corner, vol.affine @ corner, atol=1e-6)
    # a constant image stays constant (no ringing, no edge loss)
    flat = resample(Image(np.full((10, 12), 7.0, np.float32), (1.0, 1.0), None, "x"), 0.5)
    assert flat.array.shape == (20, 24) and np.allclose(flat.array, 7.0)


def test_nifti_round_trip_and_ras(tmp_path):
    img = read_image(nifti("anatomical.nii"))
    assert img.array.shape == (33, 41, 25) and img.spacing == (2.0, 2.0, 2.0)
    assert img.orientation == "LAS"
    out = write_nifti(img, tmp_path / "copy.nii.gz")
    back = read_image(out)
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_allclose(back.affine, img.affine)
    ras = to_ras(img)
    assert ras.orientation == "RAS"
    np.testing.assert_array_equal(ras.array, img.array[::-1])
    # the same voxel has the same world coordinate before and after
    i, j, k = 3, 7, 11
    np.testing.assert_allclose(img.affine @ [i, j, k, 1], ras.affine @ [32 - i, j, k, 1], atol=1e-6)


def test_nifti_4d_keeps_the_first_volume():
    img = read_image(nifti("example4d.nii.gz"))
    assert img.array.shape == (128, 96, 24) and img.meta["volumes"] == 2


def test_dicom_series_sorted_into_a_volume(tmp_path):
    src = pydicom.dcmread(ct_small())
    folder = tmp_path / "series"
    folder.mkdir()
    z0 = float(src.ImagePositionPatient[2])
    order = [2, 0, 3, 1]  # file names do not follow the slice order
    for n, k in enumerate(order):
        ds = src.copy()
        ds.ImagePositionPatient = [*src.ImagePositionPatient[:2], z0 + 2.5 * k]
        ds.InstanceNumber = 10 - k  # misleading on purpose: positions win
        arr = src.pixel_array.copy()
        arr[0, 0] = 1000 + k  # marks the slice
        ds.PixelData = arr.tobytes()
        ds.save_as(folder / f"im{n}.dcm")
    vol = read_image(folder)
    assert vol.array.shape == (4, 128, 128)
    marks = vol.array[:, 0, 0] - float(src.RescaleIntercept)
    assert marks.tolist() == [1000, 1001, 1002, 1003]
    assert vol.spacing[0] == pytest.approx(2.5)
    assert vol.spacing[1:] == pytest.approx((0.661468, 0.661468))
    assert to_ras(vol).array.shape[0] in (4, 128)


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    data = ct_small().read_bytes()
    trunc = tmp_path / "truncated.dcm"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CohortError, match="truncated.dcm"):
        read_image(trunc)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(CohortError, match="junk.dcm"):
        read_image(junk)
    gz = gzip.compress(nifti("anatomical.nii").read_bytes())
    bad_nii = tmp_path / "cut.nii.gz"
    bad_nii.write_bytes(gz[: len(gz) // 2])
    with pytest.raises(CohortError, match="cut.nii.gz"):
        read_image(bad_nii)
    from PIL import Image as PILImage

    png = tmp_path / "ok.png"
    PILImage.fromarray(np.zeros((20, 20, 3), np.uint8)).save(png)
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[:40])
    with pytest.raises(CohortError, match="cut.png"):
        read_image(cut)
    with pytest.raises(CohortError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_png_is_read_as_grayscale(tmp_path):
    from PIL import Image as PILImage

    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 255
    PILImage.fromarray(rgb).save(tmp_path / "red.png")
    img = read_image(tmp_path / "red.png")
    assert img.array.shape == (6, 8) and not img.spacing_known
    assert np.allclose(img.array, np.asarray(PILImage.fromarray(rgb).convert("L")))
