"""One tiny example cohort per modality kind, built in a folder, for suites driven by the
kind registry (``tests/test_kind_compliance.py``).

Each example pairs the kind's modality ``m`` with a small table ``clin`` (so that every
fusion strategy has two modalities), on ``N`` patients whose label shows in ``m``. Some
patients have no ``m`` at all (never given to the reader), two have no ``clin``.

Each example also lists *garbage*: values an absent row of ``m`` may hold (NaN, huge
numbers, text in a numeric column, a path to a file that does not exist or is corrupt)
that no step may ever read.

Adding a kind: add a builder to :data:`BUILDERS`; the suite fails until one exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyedflib
import wfdb
from PIL import Image as PILImage

from holomed.cohort import Cohort, build_cohort
from holomed.modalities.timeseries import Events
from holomed.spec import Spec, parse_spec

N = 32  # patients
WITHOUT_M = 6  # the last patients have no ``m`` at all
WITHOUT_CLIN = 2  # the first patients have no ``clin``


@dataclass
class KindExample:
    """``spec`` and ``cohort`` (modalities ``clin`` and ``m``), and ``garbage``: named
    replacements for the value of an absent row of ``m`` (a cell of column ``column``)."""

    kind: str
    spec: Spec
    cohort: Cohort
    column: str | None  # None: every feature column of the row
    garbage: dict[str, Any] = field(default_factory=dict)


def labels() -> np.ndarray:
    return np.arange(N) % 2


def ids() -> list[str]:
    return [f"P{i:03d}" for i in range(N)]


def spec_of(kind: str, preprocessing: dict, encoder: tuple[str, dict]) -> Spec:
    """Two modalities (``clin`` tabular, ``m`` of ``kind``), tiny everything."""
    return parse_spec(
        {
            "modalities": [
                {
                    "name": "clin",
                    "kind": "tabular",
                    "encoder": {"name": "mlp", "options": {"hidden": [8]}},
                },
                {
                    "name": "m",
                    "kind": kind,
                    "preprocessing": preprocessing,
                    "encoder": {"name": encoder[0], "options": encoder[1]},
                },
            ],
            "target": {"column": "y"},
            "fusion": {"hidden": 8, "options": {"guided.guide": "clin"}},
            "training": {"max_epochs": 2, "batch_size": 16, "val_fraction": 0.2, "lr": 0.01},
        },
        where=f"kind example {kind!r}",
    )


def clinical(rng: np.random.Generator) -> pd.DataFrame:
    """Age (a little signal) and sex, for all but the first WITHOUT_CLIN patients."""
    y = labels()
    df = pd.DataFrame(
        {"age": rng.normal(60, 10, N) + 2 * y, "sex": rng.choice(["F", "M"], N)}, index=ids()
    )
    return df.iloc[WITHOUT_CLIN:]


def target() -> pd.DataFrame:
    return pd.DataFrame({"y": labels()}, index=ids())


def with_m(kind: str, spec: Spec, m: pd.DataFrame, rng, folder: Path) -> KindExample:
    frames = {"clin": clinical(rng), "m": m}
    cohort = build_cohort(spec, frames, target())
    assert not cohort.excluded, cohort.excluded
    garbage = {name: make(folder) for name, make in GARBAGE[kind].items()}
    return KindExample(kind, spec, cohort, COLUMN[kind], garbage)


def _has_m() -> list[str]:
    return ids()[: N - WITHOUT_M]


# -- tables ------------------------------------------------------------------------------


def tabular(folder: Path) -> KindExample:
    """Three numeric columns (one with gaps, so indicators exist) and a categorical."""
    rng = np.random.default_rng(1)
    y = labels()[: N - WITHOUT_M]
    n = len(y)
    df = pd.DataFrame(
        {
            "lab1": rng.normal(0, 1, n) + 1.5 * y,
            "lab2": rng.normal(5, 2, n),
            "lab3": np.where(rng.random(n) < 0.3, np.nan, rng.normal(0, 1, n)),
            "stage": rng.choice(["I", "II", "III"], n),
        },
        index=_has_m(),
    )
    spec = spec_of("tabular", {}, ("mlp", {"hidden": [8]}))
    return with_m("tabular", spec, df, rng, folder)


def omics(folder: Path) -> KindExample:
    """12 features, a variance filter to 8 and PCA to 4 components (fitted state)."""
    rng = np.random.default_rng(2)
    y = labels()[: N - WITHOUT_M]
    x = rng.normal(0, 1, (len(y), 12)) * np.linspace(0.5, 2, 12)
    x[:, :3] += 2 * y[:, None]
    df = pd.DataFrame(x, index=_has_m(), columns=[f"g{i}" for i in range(12)])
    pre = {"variance_top_k": 8, "reduce": "pca", "dim": 4}
    spec = spec_of("omics", pre, ("mlp", {"hidden": [8]}))
    return with_m("omics", spec, df, rng, folder)


# -- irregular series ----------------------------------------------------------------


def timeseries(folder: Path) -> KindExample:
    """Two variables over 6 h on a 2-h grid; class 1 has a rising lactate."""
    rng = np.random.default_rng(3)
    y = labels()
    rows = []
    for i, pid in enumerate(_has_m()):
        for t in np.sort(rng.uniform(0, 6, rng.integers(2, 6))):
            rows.append((pid, t, "lactate", 2 + y[i] * t / 3 + rng.normal(0, 0.1)))
            if rng.random() < 0.5:
                rows.append((pid, t, "hr", rng.normal(90, 10)))
    long = pd.DataFrame(rows, columns=["id", "time", "variable", "value"])
    spec = spec_of("timeseries", {"window": [0, 6], "resolution": 2.0}, ("grud", {"hidden": 8}))
    return with_m("timeseries", spec, long, rng, folder)


# -- regular signals (lazy: read per patient from files) ------------------------------

FS = 50.0


def write_edf(path: Path, x: np.ndarray, names: list[str], fs: float) -> str:
    headers = [
        {
            "label": lab,
            "dimension": "uV",
            "sample_frequency": fs,
            "physical_min": -500.0,
            "physical_max": 500.0,
            "digital_min": -32768,
            "digital_max": 32767,
        }
        for lab in names
    ]
    data = [np.ascontiguousarray(100 * x[:, j], dtype=np.float64) for j in range(len(names))]
    pyedflib.highlevel.write_edf(str(path), data, headers)
    return str(path)


def write_wfdb(folder: Path, name: str, x: np.ndarray, names: list[str], fs: float) -> str:
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * len(names),
        sig_name=names,
        p_signal=x,
        fmt=["16"] * len(names),
        adc_gain=[1000.0] * len(names),
        baseline=[0] * len(names),
        write_dir=str(folder),
    )
    return str(folder / name)


def corrupt_file(folder: Path, name: str, head: bytes = b"") -> str:
    """A file with ``name`` whose bytes are no valid record or image."""
    path = folder / name
    path.write_bytes(head + b"\0garbage" * 40)
    return str(path)


def signal(folder: Path) -> KindExample:
    """Two leads, 2 s at 50 Hz; half EDF, half WFDB; class 1 has an 8 Hz rhythm."""
    rng = np.random.default_rng(4)
    y = labels()
    t = np.arange(0, 2.0, 1 / FS)
    paths = {}
    for i, pid in enumerate(_has_m()):
        f = 8.0 if y[i] else 3.0
        x = np.stack(
            [
                0.8 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)),
                0.5 * np.sin(2 * np.pi * t) + 0.2 * rng.normal(size=len(t)),
            ],
            1,
        )
        if i % 2:
            paths[pid] = write_wfdb(folder, pid, x, ["I", "II"], FS)
        else:
            paths[pid] = write_edf(folder / f"{pid}.edf", x, ["I", "II"], FS)
    spec = spec_of("signal", {"fs": FS, "duration": 2.0}, ("resnet1d", {"width": 8, "blocks": 2}))
    df = pd.DataFrame({"path": pd.Series(paths)})
    return with_m("signal", spec, df, rng, folder)


# -- images (lazy: decoded per patient, through a disk cache) ------------------------------


def png(path: Path, bright: float, rng: np.random.Generator, size: int = 12) -> str:
    a = rng.normal(60, 10, (size, size))
    a[3:9, 3:9] += bright * 120
    PILImage.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path)
    return str(path)


def image(folder: Path) -> KindExample:
    """1-2 12x12 PNGs per patient, resized to 8x8; class 1 has a bright square. Read
    lazily (``lazy_mb: 0``) from a disk cache, so batches read rows on demand."""
    rng = np.random.default_rng(5)
    y = labels()
    cells = {}
    for i, pid in enumerate(_has_m()):
        cells[pid] = [png(folder / f"{pid}_{k}.png", y[i], rng) for k in range(1 + i % 2)]
    pre = {"size": [8, 8], "max_images": 2, "cache_dir": str(folder / "cache"), "lazy_mb": 0}
    spec = spec_of("image", pre, ("cnn2d", {"hidden": 8, "channels": [4]}))
    df = pd.DataFrame({"paths": pd.Series(cells)})
    return with_m("image", spec, df, rng, folder)


# -- notes -------------------------------------------------------------------------

GOOD = ["stable", "afebrile", "comfortable", "improving", "eating well"]
BAD = ["hypotensive", "septic", "intubated", "deteriorating", "confused"]
FILL = ["seen on ward round", "reviewed by team", "plan discussed"]


def text(folder: Path) -> KindExample:
    """1-2 short notes per patient, TF-IDF reduced to 4 dimensions (no sentence model)."""
    rng = np.random.default_rng(6)
    y = labels()
    rows = []
    for i, pid in enumerate(_has_m()):
        for _ in range(rng.integers(1, 3)):
            words = rng.choice(BAD if y[i] else GOOD, 2).tolist() + rng.choice(FILL, 1).tolist()
            rows.append((pid, " ".join(rng.permutation(words))))
    notes = pd.DataFrame(rows, columns=["id", "text"])
    pre = {"method": "tfidf", "dim": 4, "min_df": 1}
    spec = spec_of("text", pre, ("text_pool", {"hidden": 8}))
    return with_m("text", spec, notes, rng, folder)


BUILDERS: dict[str, Callable[[Path], KindExample]] = {
    "tabular": tabular,
    "omics": omics,
    "timeseries": timeseries,
    "signal": signal,
    "image": image,
    "text": text,
}


# -- garbage an absent row of ``m`` may hold ----------------------------------------------

# The column of ``m``'s values that holds a patient's data (None: every feature column).
COLUMN: dict[str, str | None] = {
    "tabular": None,
    "omics": None,
    "timeseries": "events",
    "signal": "path",
    "image": "paths",
    "text": "text",
}

NUMERIC_GARBAGE: dict[str, Callable[[Path], Any]] = {
    "nan": lambda f: np.nan,
    "huge": lambda f: 1e30,
    "neg_huge": lambda f: -1e30,
    "inf": lambda f: np.inf,
    "text": lambda f: "garbage",
}

# By kind: name -> ``make(folder) -> value`` (files a value names are written by make).
GARBAGE: dict[str, dict[str, Callable[[Path], Any]]] = {
    "tabular": NUMERIC_GARBAGE,
    "omics": NUMERIC_GARBAGE,
    "timeseries": {
        "nan_events": lambda f: Events(
            np.array([1.0, 2.0]), np.array([0, 1]), np.array([np.nan, np.inf]), ("lactate", "zzz")
        ),
        "huge_events": lambda f: Events(np.array([1.0]), np.array([0]), np.array([1e30]), ("hr",)),
        "none": lambda f: None,
        "text": lambda f: "garbage",
    },
    "signal": {
        "gone": lambda f: str(f / "does-not-exist.edf"),
        "corrupt_edf": lambda f: corrupt_file(f, "corrupt.edf", b"0       "),
        "corrupt_wfdb": lambda f: corrupt_file(f, "corrupt.hea"),
        "nan": lambda f: np.nan,
        "directory": lambda f: str(f),
    },
    "image": {
        "gone": lambda f: [str(f / "does-not-exist.png")],
        "corrupt": lambda f: [corrupt_file(f, "corrupt.png", b"\x89PNG\r\n\x1a\n")],
        "one_good_one_gone": lambda f: [str(f / "P000_0.png"), str(f / "gone.png")],
        "empty": lambda f: [],
        "none": lambda f: None,
        "text": lambda f: "garbage",
    },
    "text": {
        "nan": lambda f: np.nan,
        "none": lambda f: None,
        "number": lambda f: 12345,
        "unseen_words": lambda f: "zebrastripe " * 500,
        "empty": lambda f: "",
    },
}
