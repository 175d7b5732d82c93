"""The ``signal`` kind: check reports unusable records, lazy per-patient reading, filters,
resampling, crop/pad, normalisation fitted on training patients, state round trip,
flat features for classical baselines, and the kind with ``resnet1d``/``cnn_gru``
through every fusion strategy, prediction and the saved bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_signal_io import write_edf, write_wfdb  # same folder (rootdir-relative import)

from holomed.candidates import load
from holomed.cohort import build_cohort, patient_splits
from holomed.encoders import create_encoder
from holomed.errors import CohortError
from holomed.evaluation.baselines import ClassicalBaseline
from holomed.fusion import fusion_names
from holomed.modalities import ModalityData
from holomed.modalities.signal import RECORD_CACHE, SignalPreprocessor
from holomed.model import Model
from holomed.spec import parse_spec

FS = 100.0
N = 48


def _series(rng, cls: int, seconds: float) -> np.ndarray:
    t = np.arange(0, seconds, 1 / FS)
    f = 8.0 if cls else 3.0
    lead1 = 0.8 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) + 0.2 * rng.normal(size=len(t))
    lead2 = 0.5 * np.sin(2 * np.pi * 1.0 * t) + 0.2 * rng.normal(size=len(t))
    return np.stack([lead1, lead2], 1)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """N patients, half EDF files and half WFDB records (channels I and II, 100 Hz,
    2.5-3.5 s); class 1 has an 8 Hz rhythm on lead I, class 0 a 3 Hz one."""
    folder = tmp_path_factory.mktemp("signals")
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(N)]
    y = np.array([i % 2 for i in range(N)])
    paths = {}
    for i, pid in enumerate(ids):
        x = _series(rng, y[i], float(rng.choice([2.5, 3.0, 3.5])))
        if i % 2:
            paths[pid] = str(write_wfdb(folder, pid, x, ["I", "II"], fs=FS))
        else:
            sig = {"I": 100 * x[:, 0], "II": 100 * x[:, 1]}
            paths[pid] = str(write_edf(folder / f"{pid}.edf", sig, FS))
    demo = pd.DataFrame(
        {"age": rng.normal(60, 10, N) + 5 * y, "sex": rng.choice(["F", "M"], N)}, index=ids
    )
    target = pd.DataFrame({"y": np.where(y == 1, "fast", "slow")}, index=ids)
    return folder, paths, demo, target


def spec_dict(encoder: str = "resnet1d", options: dict | None = None, **pre) -> dict:
    enc = {"resnet1d": {"width": 8, "blocks": 2}, "cnn_gru": {"width": 8, "hidden": 16}}
    return {
        "modalities": [
            {
                "name": "ecg",
                "kind": "signal",
                "preprocessing": {"fs": 50, "duration": 3.0, "bandpass": [0.5, 20], **pre},
                "encoder": {"name": encoder, "options": {**enc[encoder], **(options or {})}},
            },
            {"name": "demo", "kind": "tabular"},
        ],
        "target": {"column": "y", "classes": ["slow", "fast"]},
        "split": {"method": "holdout", "test_size": 0.3},
        "fusion": {
            "name": "joint",
            "hidden": 16,
            "options": {"guided.mode": "cross_attention", "guided.guide": "demo"},
        },
        "training": {"max_epochs": 3, "lr": 0.01, "batch_size": 16, "patience": 3},
    }


@pytest.fixture(scope="module")
def cohort_and_spec(records):
    _, paths, demo, target = records
    spec = parse_spec(spec_dict())
    ecg = pd.DataFrame({"path": pd.Series(paths)}).iloc[6:]  # 6 patients without an ECG
    return spec, build_cohort(spec, {"ecg": ecg, "demo": demo}, target)


# -- check: reported, never silently dropped -----------------------------------------------


def test_check_reports_each_unusable_record_and_the_row_loses_the_modality(records, tmp_path):
    _, paths, demo, target = records
    bad = tmp_path
    blob = Path(paths["P000"]).read_bytes()
    (bad / "trunc.edf").write_bytes(blob[: len(blob) // 2])
    (bad / "junk.edf").write_bytes(b"0" * 600)
    x = np.zeros((300, 2))
    rec = write_wfdb(bad, "T1", x, ["I", "II"], fs=FS)
    Path(f"{rec}.dat").write_bytes(Path(f"{rec}.dat").read_bytes()[:100])
    lead = "E1.dat 16 1000/mV 16 0 0 0 0"
    (bad / "E1.hea").write_text(f"E1 2 100 0\n{lead} I\n{lead} II\n")  # a header, no samples
    (bad / "E1.dat").write_bytes(b"")
    other = write_edf(bad / "v1.edf", {"I": x[:, 0], "V1": x[:, 1]}, FS)
    ecg = pd.DataFrame({"path": pd.Series(paths)})
    ecg["start"], ecg["stop"] = np.nan, np.nan
    broken = {
        "P001": (str(bad / "gone.edf"), "record file not found"),
        "P002": (str(bad / "trunc.edf"), "unreadable or corrupt record"),
        "P003": (str(bad / "junk.edf"), "unreadable or corrupt record"),
        "P004": (str(rec), "unreadable or corrupt record"),
        "P005": (str(bad / "E1"), "record has no samples"),
        "P006": (str(other), "missing channel(s)"),
        "P007": (np.nan, "no record path"),
    }
    for pid, (p, _) in broken.items():
        ecg.loc[pid, "path"] = p
    ecg.loc["P008", ["start", "stop"]] = [1.0, 60.0]  # window past the end
    broken["P008"] = (None, "window outside the record")
    spec = parse_spec(spec_dict(channels=["I", "II"]))
    cohort = build_cohort(spec, {"ecg": ecg, "demo": demo}, target)
    got = {e["id"]: e["reason"] for e in cohort.excluded if e.get("modality") == "ecg"}
    assert set(got) == set(broken)
    for pid, (_, why) in broken.items():
        assert got[pid].startswith(why), (pid, got[pid])
    assert "V1" not in got["P006"].split(";")[0] and "['II']" in got["P006"]
    assert "truncated" in got["P004"]
    present = dict(zip(cohort.ids, cohort.modalities["ecg"].present, strict=True))
    assert not any(present[p] for p in broken) and sum(present.values()) == N - len(broken)
    assert len(cohort) == N  # the patients stay, with their other modality


def test_read_from_a_table_resolves_paths_against_its_folder(records, tmp_path):
    folder, paths, demo, target = records
    table = folder / "ecg_index.csv"
    rel = {pid: Path(p).name for pid, p in paths.items()}
    pd.DataFrame({"pid": list(rel), "record": list(rel.values())}).to_csv(table, index=False)
    d = spec_dict()
    d["modalities"][0].update(source=str(table), id_column="pid", options={"path_column": "record"})
    d["modalities"][1] = {"name": "demo", "kind": "tabular", "source": str(tmp_path / "demo.csv")}
    demo.rename_axis("pid").reset_index().to_csv(tmp_path / "demo.csv", index=False)
    cohort = build_cohort(parse_spec(d), target=target)
    ecg = cohort.modalities["ecg"]
    assert ecg.present.all() and not cohort.excluded
    assert Path(ecg.values.loc["P001", "path"]) == Path(paths["P001"])


# -- preprocessing ---------------------------------------------------------------------


def _data(paths: list[str], **cols) -> ModalityData:
    df = pd.DataFrame({"path": paths, **cols}, index=[f"r{i}" for i in range(len(paths))])
    return ModalityData("signal", df, np.ones(len(df), bool))


def _amplitude(x: np.ndarray, fs: float, f: float) -> float:
    spec = np.abs(np.fft.rfft(x)) / len(x) * 2
    return float(spec[np.argmin(np.abs(np.fft.rfftfreq(len(x), 1 / fs) - f))])


def test_filters_attenuate_out_of_band_sines(tmp_path):
    fs = 250.0
    t = np.arange(0, 8, 1 / fs)
    x = np.sin(2 * np.pi * 5 * t) + np.sin(2 * np.pi * 50 * t) + np.sin(2 * np.pi * 80 * t)
    path = write_edf(tmp_path / "s.edf", {"C": 100 * x}, fs)
    data = _data([str(path)])
    raw = SignalPreprocessor(normalise="none").fit(data).transform(data)[0, :, 0]
    bp = SignalPreprocessor(bandpass=[1, 20], normalise="none").fit(data).transform(data)[0, :, 0]
    notch = SignalPreprocessor(notch=50, normalise="none").fit(data).transform(data)[0, :, 0]
    mid = slice(250, -250)  # away from the edges

    def amp(v, f):
        return _amplitude(v[mid], fs, f)

    assert amp(raw, 50) == pytest.approx(100, rel=0.05)
    assert amp(bp, 5) == pytest.approx(amp(raw, 5), rel=0.05)  # pass band kept
    assert amp(bp, 50) < 0.01 * amp(raw, 50) and amp(bp, 80) < 0.01 * amp(raw, 80)
    assert amp(notch, 50) < 0.05 * amp(raw, 50)
    assert amp(notch, 80) == pytest.approx(amp(raw, 80), rel=0.05)
    low = SignalPreprocessor(bandpass=[None, 20], normalise="none").fit(data).transform(data)
    assert amp(low[0, :, 0], 80) < 0.01 * amp(raw, 80)
    with pytest.raises(ValueError, match="high edge 200 Hz"):
        SignalPreprocessor(bandpass=[1, 200]).fit(data)


def test_resampling_cropping_padding_and_offset(tmp_path):
    fs = 500.0
    t = np.arange(0, 2.0, 1 / fs)  # EDF data records last 1 s: whole seconds only
    x = np.sin(2 * np.pi * 2 * t)
    short = write_edf(tmp_path / "short.edf", {"C": 100 * x}, fs)
    long_ = write_edf(tmp_path / "long.edf", {"C": 100 * np.tile(x, 2)}, fs)
    data = _data([str(short), str(long_)])
    p = SignalPreprocessor(fs=100, duration=3.0, normalise="none").fit(data)
    out = p.transform(data)
    assert out.shape == (2, 300, 1) and p.out_shape == (300, 1)
    assert np.all(out[0, 200:] == 0) and np.abs(out[0, 10:190]).max() > 90  # padded
    np.testing.assert_allclose(out[0, 20:180, 0], 100 * x[::5][20:180], atol=2.0)
    assert np.abs(out[1, 200:]).max() > 90  # the longer record is cropped, not padded
    off = SignalPreprocessor(fs=100, duration=1.0, offset=1.0, normalise="none").fit(data)
    np.testing.assert_allclose(off.transform(data)[0], out[0, 100:200], atol=1e-4)
    auto = SignalPreprocessor(fs=100).fit(data)  # no duration: the longest training record
    assert auto.out_shape == (400, 1)
    win = _data([str(long_)], start=[1.0], stop=[2.0])  # a window: only it is read
    w = SignalPreprocessor(fs=100, normalise="none").fit(win)
    assert w.out_shape == (100, 1)
    np.testing.assert_allclose(w.transform(win)[0, 10:-10], out[1, 110:190], atol=0.05)


def test_normalisation_is_fitted_on_training_patients_and_the_state_round_trips(
    cohort_and_spec,
):
    spec, cohort = cohort_and_spec
    ((tr, te),) = patient_splits(cohort, spec.split)
    train, test = cohort.subset(tr), cohort.subset(te)
    p = SignalPreprocessor(fs=50, duration=3.0, normalise="train").fit(train.modalities["ecg"])
    raw = SignalPreprocessor(fs=50, duration=3.0, normalise="none").fit(train.modalities["ecg"])
    xs = raw.transform(train.modalities["ecg"])
    present = train.modalities["ecg"].present
    real = np.concatenate([r[np.any(r != 0, axis=1)] for r in xs[present]])  # unpadded samples
    np.testing.assert_allclose(p.mean_, real.mean(0), atol=1e-4)
    np.testing.assert_allclose(p.sd_, real.std(0), rtol=1e-3)
    out = p.transform(test.modalities["ecg"])
    absent = ~test.modalities["ecg"].present
    assert absent.any() and np.isnan(out[absent]).all() and np.isfinite(out[~absent]).all()
    meta, arrays = p.get_state()
    meta = json.loads(json.dumps(meta))  # JSON-able, no pickle
    q = SignalPreprocessor.from_state(meta, {k: np.asarray(v) for k, v in arrays.items()})
    RECORD_CACHE.clear()
    np.testing.assert_array_equal(q.transform(test.modalities["ecg"]), out)
    rec = SignalPreprocessor(fs=50, duration=3.0).fit(train.modalities["ecg"])
    z = rec.transform(train.modalities["ecg"])[present][0]
    z = z[np.any(z != 0, axis=1)]
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)


def test_absent_patients_are_never_read(records, cohort_and_spec, tmp_path):
    _, paths, demo, target = records
    victim = tmp_path / "victim.edf"
    victim.write_bytes(Path(paths["P010"]).read_bytes())
    ecg = pd.DataFrame({"path": pd.Series(paths)})
    ecg.loc["P010", "path"] = str(victim)
    spec = cohort_and_spec[0]
    cohort = build_cohort(spec, {"ecg": ecg, "demo": demo}, target)
    i = int(np.nonzero(cohort.ids == "P010")[0][0])
    present = cohort.modalities["ecg"].present.copy()
    present[i] = False
    pre = SignalPreprocessor(fs=50, duration=3.0).fit(cohort.modalities["ecg"].masked(present))
    victim.unlink()  # the absent patient's file is gone
    RECORD_CACHE.clear()
    out = pre.transform(cohort.modalities["ecg"].masked(present))
    assert np.isnan(out[i]).all() and np.isfinite(np.delete(out, i, 0)).all()
    with pytest.raises(CohortError, match=r"patient 'P010'.*victim\.edf"):
        pre.transform(cohort.modalities["ecg"])  # present but unreadable: a named error


def test_flat_features_and_a_classical_baseline(cohort_and_spec):
    spec, cohort = cohort_and_spec
    ((tr, te),) = patient_splits(cohort, spec.split)
    pre = SignalPreprocessor(fs=50, duration=3.0).fit(cohort.modalities["ecg"])
    x = pre.transform(cohort.modalities["ecg"])
    flat, names = pre.flat_features(x)
    assert flat.shape == (len(cohort), len(names)) and len(names) == len(set(names))
    assert {"I:sd", "II:max", "I:power_8-13Hz", "I:spectral_entropy"} <= set(names)
    absent = ~cohort.modalities["ecg"].present
    assert np.isnan(flat[absent]).all() and np.isfinite(flat[~absent]).all()
    bl = ClassicalBaseline(spec, "lr_early").fit(cohort.subset(tr))
    p = bl.predict_proba(cohort.subset(te))
    assert p.shape == (len(te), 2) and np.isfinite(p).all()
    only = ClassicalBaseline(spec, "lr_late", modalities=["ecg"]).fit(cohort.subset(tr))
    y = cohort.subset(te).y
    has = cohort.subset(te).modalities["ecg"].present
    acc = (only.predict_proba(cohort.subset(te)).argmax(1) == y)[has].mean()
    assert acc >= 0.8  # the rhythm's band power separates the classes


# -- encoders and fusion ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options", [("resnet1d", {}), ("cnn_gru", {}), ("cnn_gru", {"rnn": "transformer"})]
)
def test_encoders_shapes_determinism_and_batch_independence(name, options):
    torch.manual_seed(0)
    a = create_encoder(name, 3, **options).eval()
    torch.manual_seed(0)
    b = create_encoder(name, 3, **options).eval()
    x = torch.randn(5, 160, 3)
    ea, eb = a(x), b(x)
    torch.testing.assert_close(ea.embedding, eb.embedding)
    assert ea.embedding.shape == (5, a.out_dim) and ea.tokens.shape[::2] == (5, a.out_dim)
    torch.testing.assert_close(a(x[:1]).embedding, ea.embedding[:1], atol=1e-5, rtol=1e-5)
    assert a(x[:0]).embedding.shape == (0, a.out_dim)  # an empty batch (nobody present)


@pytest.mark.parametrize("fusion", fusion_names())
def test_the_signal_kind_runs_through_every_strategy(cohort_and_spec, fusion, tmp_path):
    spec, cohort = cohort_and_spec
    ((tr, te),) = patient_splits(cohort, spec.split)
    m = Model(spec, fusion=fusion, seed=0).fit(cohort.subset(tr))
    test = cohort.subset(te)
    p = m.predict_proba(test)
    assert p.shape == (len(te), 2) and np.isfinite(p).all()
    assert (~test.modalities["ecg"].present).any()  # absent ECGs handled
    np.testing.assert_allclose(load(m.save(tmp_path / "b")).predict_proba(test), p, atol=1e-6)


@pytest.mark.parametrize("rnn", ["gru", "transformer"])
def test_cnn_gru_tokens_reach_attention_fusion(records, rnn):
    _, paths, demo, target = records
    spec = parse_spec(spec_dict("cnn_gru", {"rnn": rnn}))
    ecg = pd.DataFrame({"path": pd.Series(paths)})
    cohort = build_cohort(spec, {"ecg": ecg, "demo": demo}, target)
    m = Model(spec, fusion="guided", seed=0).fit(cohort)
    x, present = m._arrays(cohort)
    with torch.no_grad():
        enc = m.net_.encode(
            {k: torch.as_tensor(np.nan_to_num(v)) for k, v in x.items()},
            {k: torch.as_tensor(v) for k, v in present.items()},
        )
    assert enc["ecg"].tokens.shape == (N, 150 // 8 + 1, 16)  # 3 stride-2 convs on 150 samples
    assert m.net_.fusion.mode == "cross_attention"
    explained = m.explain(cohort.subset(np.arange(12)), top_k=2)
    assert set(explained["contributions"]["global"]) == {"ecg", "demo"}
