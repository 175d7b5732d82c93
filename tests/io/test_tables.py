"""Table readers: CSV, TSV, Parquet, AnnData .h5ad -> frames indexed by string ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from holomed.errors import CohortError
from holomed.io import read_table


@pytest.fixture
def frame():
    return pd.DataFrame({"pid": ["a", "b", "c"], "g1": [1.0, 2.0, 3.0], "g2": [0.5, 0.1, 0.2]})


def test_csv_tsv_parquet_agree(tmp_path, frame):
    frame.to_csv(tmp_path / "x.csv", index=False)
    frame.to_csv(tmp_path / "x.tsv", index=False, sep="\t")
    frame.to_parquet(tmp_path / "x.parquet", index=False)
    got = [read_table([tmp_path / f], "pid") for f in ("x.csv", "x.tsv", "x.parquet")]
    for g in got:
        assert list(g.index) == ["a", "b", "c"]
        assert list(g.columns) == ["g1", "g2"]
        np.testing.assert_allclose(g.to_numpy(), frame[["g1", "g2"]].to_numpy())


def test_h5ad(tmp_path, frame):
    import anndata

    ad = anndata.AnnData(
        X=frame[["g1", "g2"]].to_numpy(),
        obs=pd.DataFrame(index=frame["pid"].tolist()),
        var=pd.DataFrame(index=["g1", "g2"]),
    )
    ad.write_h5ad(tmp_path / "x.h5ad")
    g = read_table([tmp_path / "x.h5ad"])
    assert list(g.index) == ["a", "b", "c"] and list(g.columns) == ["g1", "g2"]


def test_several_files_concatenate_and_duplicates_are_named(tmp_path, frame):
    frame.iloc[:2].to_csv(tmp_path / "a.csv", index=False)
    frame.iloc[1:].to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(CohortError, match=r"patient 'b' has 2 rows in .*a.csv, .*b.csv"):
        read_table([tmp_path / "a.csv", tmp_path / "b.csv"], "pid")
    frame.iloc[2:].to_csv(tmp_path / "b.csv", index=False)
    assert len(read_table([tmp_path / "a.csv", tmp_path / "b.csv"], "pid")) == 3


def test_headerless_files_get_row_ids(tmp_path):
    np.savetxt(tmp_path / "1_tr.csv", np.eye(3), delimiter=",")
    g = read_table([tmp_path / "1_tr.csv"], None, {"header": False, "id_prefix": "tr-"})
    assert list(g.index) == ["tr-0000", "tr-0001", "tr-0002"]


def test_errors_name_the_file(tmp_path, frame):
    with pytest.raises(CohortError, match="nope.csv: file not found"):
        read_table([tmp_path / "nope.csv"], "pid")
    frame.to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(CohortError, match="id column 'patient' not found"):
        read_table([tmp_path / "x.csv"], "patient")
    (tmp_path / "empty.csv").write_text("pid,g1\n")
    with pytest.raises(CohortError, match="empty.csv: the table has no rows"):
        read_table([tmp_path / "empty.csv"], "pid")
    frame.loc[1, "pid"] = None
    frame.to_csv(tmp_path / "noid.csv", index=False)
    with pytest.raises(CohortError, match="row 3 has no patient id"):
        read_table([tmp_path / "noid.csv"], "pid")
