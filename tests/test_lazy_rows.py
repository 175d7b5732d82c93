"""Lazy preprocessed arrays: training and prediction read them one batch at a time and
give the same results as the materialised array; other code sees an ndarray."""

from __future__ import annotations

import numpy as np
import torch

from holomed.modalities.base import LazyRows
from holomed.training import CohortTensors


class Counting(LazyRows):
    def __init__(self, a: np.ndarray) -> None:
        super().__init__(len(a), a.shape[1:])
        self.a, self.calls = a, []

    def rows(self, idx: np.ndarray) -> np.ndarray:
        self.calls.append(len(idx))
        return self.a[idx]


def test_batches_read_only_their_rows_and_match_the_array():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 2, 3)).astype(np.float32)
    a[3] = np.nan  # an absent patient's row
    present = {"img": np.arange(10) != 3, "tab": np.ones(10, bool)}
    tab = rng.normal(size=(10, 4)).astype(np.float32)
    lazy = Counting(a)
    ds = CohortTensors({"img": lazy, "tab": tab}, present, np.zeros(10))
    eager = CohortTensors({"img": a, "tab": tab}, present, np.zeros(10))
    assert lazy.calls == []  # nothing read up front
    got, ref = ds.__getitems__([3, 5, 7]), eager.__getitems__([3, 5, 7])
    assert lazy.calls == [3]
    assert list(got["x"]) == ["img", "tab"]
    for k in ("img", "tab"):
        torch.testing.assert_close(got["x"][k], ref["x"][k])
    assert (got["x"]["img"][0] == 0).all()  # absent rows zeroed, never NaN


def test_array_code_sees_an_ndarray():
    a = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    lazy = Counting(a)
    assert lazy.shape == (4, 2, 3) and lazy.ndim == 3 and len(lazy) == 4
    np.testing.assert_array_equal(np.asarray(lazy), a)
    np.testing.assert_array_equal(lazy[1:3], a[1:3])
    np.testing.assert_array_equal(lazy[2], a[2])
    np.testing.assert_array_equal(np.where(True, lazy, 0.0), a)


def test_tuple_indexing_selects_rows_first():
    a = np.arange(60, dtype=np.float32).reshape(5, 3, 4)
    lazy = Counting(a)
    np.testing.assert_array_equal(lazy[2, :, -1], a[2, :, -1])
    np.testing.assert_array_equal(lazy[1:4, 0], a[1:4, 0])
    np.testing.assert_array_equal(lazy[[0, 4], 1:, ::2], a[[0, 4], 1:, ::2])


def test_ellipsis_and_new_axes_index_the_whole_array():
    a = np.arange(60, dtype=np.float32).reshape(5, 3, 4)
    lazy = Counting(a)
    np.testing.assert_array_equal(lazy[..., -1], a[..., -1])
    np.testing.assert_array_equal(lazy[None], a[None])
    np.testing.assert_array_equal(lazy[1, ..., 0], a[1, ..., 0])
