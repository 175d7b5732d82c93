"""Private by default in outputs: with ``privacy.pseudonymise`` on, no patient id, name
from the notes or data path appears in any file any command writes, nor in what it
prints. The same run with privacy off finds them (the audit can fail)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from holomed.cli import app
from holomed.errors import PrivacyError
from holomed.privacy.keys import PrivacyKey, load_key

runner = CliRunner()
KEY = "k" * 40
NAMES = ["Quxwellington", "Zyrbathory"]  # two rare surnames, each in two patients' notes


def _cohort(root: Path, n: int = 90) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    ids = [f"HX{i:04d}QZ" for i in range(n)]
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"patient_id": ids, "a": x[:, 0], "b": x[:, 1], "c": x[:, 2]}).to_csv(
        root / "clinical.csv", index=False
    )
    words = ["cough", "fever", "stable", "infiltrate", "clear", "effusion"]
    notes = []
    for i, pid in enumerate(ids):
        text = " ".join(rng.choice(words, 8)) + (" opacity" if y[i] else " normal")
        if i < 4:
            text += f" seen by Dr {NAMES[i % 2]} on 2019-03-14"
        notes.append({"patient_id": pid, "text": text})
    pd.DataFrame(notes).to_csv(root / "notes.csv", index=False)
    pd.DataFrame(
        {"patient_id": ids, "label": y, "split": np.where(np.arange(n) % 4 == 0, "test", "train")}
    ).to_csv(root / "labels.csv", index=False)
    spec = {
        "dataset": "audit",
        "modalities": [
            {
                "name": "clinical",
                "kind": "tabular",
                "source": "clinical.csv",
                "id_column": "patient_id",
            },
            {
                "name": "notes",
                "kind": "text",
                "source": "notes.csv",
                "id_column": "patient_id",
                "preprocessing": {"method": "tfidf", "dim": 4},
            },
        ],  # fmt: skip
        "target": {
            "source": "labels.csv",
            "id_column": "patient_id",
            "column": "label",
            "classes": ["0", "1"],
        },  # fmt: skip
        "split": {"method": "predefined", "column": "split"},
        "fusion": {"name": "late", "hidden": 8},
        "training": {"max_epochs": 3, "val_fraction": 0.0},
        "evaluation": {
            "seeds": 1,
            "n_bootstrap": 10,
            "selection_folds": 2,
            "candidates": ["lr_early", "ensemble"],
        },  # fmt: skip
        "privacy": {"pseudonymise": True},
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    return root / "spec.yaml", ids


def _run_everything(tmp_path: Path, privacy: bool) -> tuple[list[Path], str, list[str], Path]:
    data = tmp_path / "data"
    spec, ids = _cohort(data)
    if not privacy:
        d = yaml.safe_load(spec.read_text())
        d["privacy"]["pseudonymise"] = False
        spec.write_text(yaml.safe_dump(d))
    out = tmp_path / "out"
    printed = []
    inputs = ["-i", f"clinical={data / 'clinical.csv'}", "-i", f"notes={data / 'notes.csv'}"]
    for args in (
        ["fit", str(spec), "--fusion", "late", "--out", str(out / "fit")],
        ["compare", str(spec), "--fusion", "late", "--seeds", "1", "--out", str(out / "cmp")],
        ["predict", str(out / "fit" / "bundle"), *inputs, "--out", str(out / "pred.csv")],
        ["explain", str(out / "fit" / "bundle"), *inputs, "--out", str(out / "explain")],
        ["report", str(out / "cmp")],
    ):
        r = runner.invoke(app, args, env={"HOLOMED_PRIVACY_KEY": KEY, "COLUMNS": "200"})
        assert r.exit_code == 0, (args[0], r.output[-2000:])
        printed.append(r.output)
    files = [f for f in out.rglob("*") if f.is_file()]
    return files, "\n".join(printed), ids, data


def _hits(files: list[Path], printed: str, needles: list[str]) -> list[str]:
    found = []
    for f in files:
        blob = f.read_bytes()
        found += [f"{f.name}: {s}" for s in needles if s.encode() in blob]
    found += [f"<console>: {s}" for s in needles if s in printed.replace("\n", "")]
    return found


def test_no_identifier_in_any_output_of_any_command_with_privacy_on(tmp_path):
    files, printed, ids, data = _run_everything(tmp_path, privacy=True)
    assert len(files) > 10
    needles = [*ids, *NAMES, str(data)]
    assert _hits(files, printed, needles) == []
    # pseudonyms are there instead, the same in every output
    key = PrivacyKey(KEY.encode())
    pred = pd.read_csv(tmp_path / "out" / "pred.csv")
    assert set(pred["id"]) == {key.pseudonym(i) for i in ids}


def test_the_audit_finds_identifiers_when_privacy_is_off(tmp_path):
    files, printed, ids, data = _run_everything(tmp_path, privacy=False)
    hits = _hits(files, printed, ids)
    assert len(hits) > 50


def test_errors_are_redacted_when_privacy_is_on(tmp_path):
    data = tmp_path / "data"
    spec, ids = _cohort(data)
    labels = pd.read_csv(data / "labels.csv", dtype=str)
    labels.loc[3, "label"] = "maybe"
    labels.to_csv(data / "labels.csv", index=False)
    r = runner.invoke(app, ["validate", str(spec)], env={"HOLOMED_PRIVACY_KEY": KEY})
    assert r.exit_code == 2 and "maybe" not in r.output and ids[3] not in r.output
    assert "redacted" in r.output


def test_redaction_keeps_the_names_of_columns_and_modalities():
    from holomed.privacy.outputs import redact

    msg = "labs.csv: column 'crp' is numeric but patient 'P3' has text 'high' (modality 'labs')"
    out = redact(msg)
    assert "column 'crp'" in out and "modality 'labs'" in out
    assert "P3" not in out and "high" not in out and out.count("<value>") == 2


def test_keys_are_checked_and_never_shown(tmp_path, monkeypatch):
    monkeypatch.delenv("HOLOMED_PRIVACY_KEY", raising=False)
    monkeypatch.delenv("HOLOMED_PRIVACY_KEY_FILE", raising=False)
    with pytest.raises(PrivacyError, match="no privacy key"):
        load_key()
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 10)
    with pytest.raises(PrivacyError, match="short.key: privacy key: 10 bytes"):
        load_key(short)
    with pytest.raises(PrivacyError, match="unreadable"):
        load_key(tmp_path / "missing.key")
    good = tmp_path / "good.key"
    good.write_bytes(bytes(range(40)))
    key = load_key(good)
    assert repr(key) == "PrivacyKey(<secret>)"
    a, b = key.pseudonym("P1"), key.pseudonym(" P1 ")
    assert a == b and a.startswith("P-") and len(a) == 22
    assert key.pseudonym("P1") != PrivacyKey(b"y" * 40).pseudonym("P1")
    assert -365 <= key.date_shift_days("P1") <= -1
    assert key.uid("1.2.3").startswith("2.25.") and key.uid("1.2.3") == key.uid("1.2.3")


def test_the_training_sketch_counts_a_group_but_names_nobody():
    """A bundle's sketch of its training patients: scoring them again is flagged with an
    estimate of how many; other patients are not; enumerating the whole id space finds
    members at little better than the base rate."""
    from holomed.provenance import seen_in_training, training_patients

    space = [f"{i:06d}" for i in range(20_000)]  # short record numbers: enumerable
    train = space[:2_000]
    card = {"training_patients": training_patients(train)}
    again = seen_in_training(card, train[:500])
    assert again["flag"] and again["ci"][0] <= 500 <= again["ci"][1]
    other = seen_in_training(card, space[10_000:10_500])
    assert not other["flag"] and other["ci"][0] <= 0 <= other["ci"][1]
    mixed = seen_in_training(card, train[:200] + space[10_000:10_300])
    assert mixed["ci"][0] <= 200 <= mixed["ci"][1]
    # an attacker testing every id one by one: a hit is a member with probability about
    # the base rate / the chance rate, far from a disclosure
    hits = [i for i in space if seen_in_training(card, [i])["hits"]]
    members = len(set(hits) & set(train))
    assert members == len(train)  # every member hits ...
    assert members / len(hits) < 0.25  # ... and so do thousands of others
    assert "000123" not in str(card)
