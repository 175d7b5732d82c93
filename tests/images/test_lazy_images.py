"""Large image cohorts are read lazily from the disk cache: the lazy rows equal the eager
array, and a model trained on them predicts exactly as one trained on the array."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image as PILImage

from holomed.cohort import build_cohort
from holomed.modalities import ModalityData
from holomed.modalities.base import LazyRows
from holomed.modalities.image import ImagePreprocessor
from holomed.model import Model
from holomed.spec import parse_spec

N = 20


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    root = tmp_path_factory.mktemp("lazy_png")
    rng = np.random.default_rng(0)
    paths = {}
    for i in range(N):
        files = []
        for k in range(1 + i % 2):
            a = rng.integers(0, 80, (20, 20)).astype(np.uint8)
            if i % 2:
                a[4:10, 4:10] = 220
            PILImage.fromarray(a).save(root / f"P{i}_{k}.png")
            files.append(str(root / f"P{i}_{k}.png"))
        paths[f"P{i:02d}"] = files
    return pd.DataFrame({"paths": pd.Series(paths)})


def test_lazy_rows_equal_the_array_and_read_the_cache(frame, tmp_path):
    present = np.ones(N, bool)
    present[3] = False
    data = ModalityData("image", frame, present, ["paths"])
    kw = {"size": [16, 16], "max_images": 2, "cache_dir": str(tmp_path)}
    eager = ImagePreprocessor(**kw, lazy_mb=None).fit(data)
    lazy = ImagePreprocessor(**kw, lazy_mb=0).fit(data)
    x, lx = eager.transform(data), lazy.transform(data)
    assert not isinstance(x, LazyRows) and isinstance(lx, LazyRows)
    assert lx.shape == x.shape
    decoded = lazy.decoded_
    np.testing.assert_array_equal(lx.rows(np.array([5, 3, 0])), x[[5, 3, 0]])
    np.testing.assert_array_equal(np.asarray(lx), x)
    np.testing.assert_array_equal(lx.reshape(N, -1), x.reshape(N, -1))
    assert lazy.decoded_ == decoded  # rows come from the disk cache, nothing decoded again
    import pickle  # spawned processes (ddp_spawn) receive it pickled

    np.testing.assert_array_equal(pickle.loads(pickle.dumps(lx)).rows(np.array([1, 2])), x[1:3])
    f1, names = eager.flat_features(x)
    f2, _ = lazy.flat_features(lx)
    np.testing.assert_allclose(f1, f2)
    # without a cache, nothing is lazy (every batch would decode again)
    assert not isinstance(ImagePreprocessor(size=[16, 16], lazy_mb=0).fit(data).transform(data),
                          LazyRows)  # fmt: skip


def test_a_model_on_lazy_images_predicts_as_one_on_the_array(frame, tmp_path):
    ids = list(frame.index)
    y = np.arange(N) % 2

    def fit(lazy_mb):
        spec = parse_spec(
            {
                "modalities": [
                    {
                        "name": "xray",
                        "kind": "image",
                        "preprocessing": {"size": [16, 16], "max_images": 2, "lazy_mb": lazy_mb,
                                          "cache_dir": str(tmp_path / "cache")},
                        "encoder": {"name": "cnn2d", "options": {"hidden": 8, "channels": [4]}},
                    },
                    {"name": "age", "kind": "tabular"},
                ],
                "target": {"column": "y"},
                "fusion": {"name": "joint", "hidden": 8},
                "training": {"max_epochs": 2, "batch_size": 8, "val_fraction": 0.0},
            }
        )  # fmt: skip
        age = pd.DataFrame({"age": np.linspace(40, 80, N)}, index=ids)
        c = build_cohort(spec, {"xray": frame, "age": age}, pd.DataFrame({"y": y}, index=ids))
        m = Model(spec, seed=0).fit(c)
        return m, c

    m_eager, c = fit(None)
    m_lazy, _ = fit(0)
    x, _ = m_lazy._arrays(c)
    assert isinstance(x["xray"], LazyRows)
    np.testing.assert_allclose(m_lazy.predict_proba(c), m_eager.predict_proba(c), atol=1e-6)
    sub = c.subset(np.arange(12))
    ex = m_lazy.explain(sub, top_k=3)  # explanations materialise it
    assert set(ex["contributions"]["global"]) == {"xray", "age"}
    ref = m_eager.explain(sub, top_k=3)
    # set-pooling weights per patient, aligned with the eager model's (prediction over a
    # lazy array runs in training-sized batches; the read-out must still see everyone)
    got = [e["weights"] for e in ex["attention"]["set_pooling"]["xray"]["examples"]]
    want = [e["weights"] for e in ref["attention"]["set_pooling"]["xray"]["examples"]]
    assert len(got) == len(want) == 12
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), atol=1e-5)


def test_unwritable_cache_warns_and_still_transforms(frame, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    data = ModalityData("image", frame, np.ones(N, bool), ["paths"])
    pre = ImagePreprocessor(size=[16, 16], max_images=2, cache_dir=str(blocker / "cache"))
    with pytest.warns(UserWarning, match="not writable"):
        x = pre.fit(data).transform(data)
    ref = ImagePreprocessor(size=[16, 16], max_images=2).fit(data).transform(data)
    np.testing.assert_allclose(x, ref)


def test_a_slice_rewritten_in_a_series_folder_is_a_cache_miss(tmp_path):
    import os

    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(2):
        PILImage.fromarray(np.full((8, 8), 10 * k, np.uint8)).save(folder / f"s{k}.png")
    pre = ImagePreprocessor(size=[8, 8])
    pre._init_counters()
    before = pre._hasher(str(folder))
    st = os.stat(folder)
    PILImage.fromarray(np.full((8, 8), 99, np.uint8)).save(folder / "s1.png")
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))  # the folder's own stamp unchanged
    assert pre._hasher(str(folder)) != before


def test_images_beyond_max_images_are_reported(frame):
    from holomed.modalities.image import check_images
    from holomed.spec import ModalitySpec

    m = ModalitySpec(name="xray", kind="image", preprocessing={"max_images": 1})
    kept, report = check_images(frame, m, "test")
    extra = [e for e in report if "beyond max_images" in e["reason"]]
    assert sum(e["count"] for e in extra) == N // 2  # odd patients have 2 images
    assert len(kept) == N  # the patients keep the modality
