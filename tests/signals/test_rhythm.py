"""Heart-rhythm features of the signal kind (``preprocessing.rhythm``) on synthetic ECG
records with a known beat train."""

from __future__ import annotations

import numpy as np

from holomed.modalities.signal import (
    RHYTHM_FEATURES,
    SignalPreprocessor,
    r_peaks,
    rhythm_features,
)

FS = 100.0


def ecg(beats_s: np.ndarray, seconds: float = 10.0, leads: int = 3, seed: int = 0) -> np.ndarray:
    """``(L, C)``: a narrow QRS-like spike (20 ms) at each beat time on every lead, with
    lead-specific amplitude and polarity, slow baseline wander and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * FS)) / FS
    spike = np.zeros_like(t)
    for b in beats_s:
        spike += np.exp(-0.5 * ((t - b) / 0.01) ** 2)
    amp = rng.choice([-1.0, 1.0], leads) * rng.uniform(0.5, 1.5, leads)
    x = spike[:, None] * amp[None, :] + 0.2 * np.sin(2 * np.pi * 0.3 * t)[:, None]
    return x + rng.normal(scale=0.02, size=x.shape)


def test_regular_rhythm_gives_its_heart_rate_and_little_variability():
    beats = np.arange(0.4, 10.0, 0.8)  # 75 beats/min
    peaks = r_peaks(ecg(beats), FS)
    assert len(peaks) == len(beats)
    assert np.abs(peaks / FS - beats).max() < 0.03
    f = dict(zip(RHYTHM_FEATURES, rhythm_features(ecg(beats)[None], FS)[0], strict=True))
    assert abs(f["heart_rate"] - 75) < 1.5
    assert f["rr_sd"] < 0.02 and f["prr50"] == 0.0 and f["beats"] == len(beats)


def test_irregular_rhythm_is_more_variable_than_a_regular_one():
    rng = np.random.default_rng(3)
    irregular = np.cumsum(rng.uniform(0.45, 1.2, 14))
    irregular = irregular[irregular < 9.8]
    regular = np.arange(0.4, 10.0, 0.8)
    f = rhythm_features(np.stack([ecg(regular), ecg(irregular, seed=1)]), FS)
    cv, prr50 = RHYTHM_FEATURES.index("rr_cv"), RHYTHM_FEATURES.index("prr50")
    assert f[1, cv] > 5 * f[0, cv] and f[1, prr50] > 0.5


def test_absent_flat_or_too_short_records_give_nan_not_an_error():
    x = np.stack([ecg(np.arange(0.4, 10.0, 0.8)), np.zeros((1000, 3)), np.full((1000, 3), np.nan)])
    f = rhythm_features(x, FS)
    assert np.isfinite(f[0]).all() and np.isnan(f[1:]).all()
    assert rhythm_features(ecg(np.array([1.0, 2.0]))[None], FS).shape == (1, 7)
    assert np.isnan(rhythm_features(ecg(np.array([1.0, 2.0]))[None], FS)).all()


def test_flat_features_add_rhythm_columns_only_when_asked():
    x = np.stack([ecg(np.arange(0.4, 10.0, 0.8)), np.full((1000, 3), np.nan)]).astype(np.float32)
    pre = SignalPreprocessor(rhythm=False)
    pre.channels_, pre.fs_, pre.length_ = ["I", "II", "III"], FS, 1000
    plain, names = pre.flat_features(x)
    pre.rhythm = True
    with_rhythm, names_r = pre.flat_features(x)
    assert names_r[: len(names)] == names
    assert names_r[len(names) :] == [f"rhythm:{s}" for s in RHYTHM_FEATURES]
    np.testing.assert_array_equal(with_rhythm[:, : len(names)], plain)
    assert np.isnan(with_rhythm[1]).all()
    # the option is part of the preprocessor's saved state
    pre.mean_, pre.sd_, pre.feature_names_out_ = np.zeros(3), np.ones(3), list(pre.channels_)
    meta, arrays = pre.get_state()
    assert SignalPreprocessor.from_state(meta, arrays).rhythm is True
