"""Evidence drafts (:mod:`holomed.generative.evidence`): every sentence's cited values are
the JSON's, and every number shown is one of them; missing modalities are named with how
the model handled them; a subgroup caveat appears only where the audit says so; the draft
is labelled. End to end: ``holomed draft`` on a bundle fitted here."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from holomed.generative.evidence import (
    EVIDENCE_LABEL,
    bundle_audit,
    evidence_draft,
    missing_handling,
    pointer,
    resolve,
)

# -- documents in the shapes the API, the card and the audit have ---------------------------


def prediction(**changes):
    rec = {
        "model": "icu",
        "task": "binary",
        "patient": "P-3f9a",
        "probabilities": {"stable": 0.27, "deteriorated": 0.73},
        "predicted": "deteriorated",
        "calibration": "temperature",
        "modalities": {
            "used": ["vitals", "labs"],
            "missing": ["notes"],
            "unusable": {"ct": "the DICOM file has no pixel data"},
        },
        "warnings": [],
        "intended_use": "Research use only.",
        "contributions": {
            "method": "exact",
            "score": "probability of the positive class",
            "base": 0.41,
            "value": 0.73,
            "modalities": {
                "vitals": {"shapley": 0.08, "leave_one_out": 0.07},
                "labs": {"shapley": 0.24, "leave_one_out": 0.2},
            },
        },
        "top_features": {
            "vitals": [
                {"feature": "sbp", "attribution": -0.05},
                {"feature": "age", "attribution": 0.31},
                {"feature": "hr", "attribution": 0.12},
                {"feature": "temp", "attribution": 0.01},
            ],
            "labs": [{"feature": "lactate", "attribution": 0.44}],
        },
        "features_method": "SHAP (exact linear / LightGBM TreeSHAP)",
    }
    rec.update(changes)
    return rec


CARD = {
    "family": "neural",
    "candidate": "joint",
    "task": "binary",
    "metrics_test": {
        "auroc": {"value": 0.812, "ci": [0.75, 0.87]},
        "brier": {"value": 0.171, "ci": [0.15, 0.19]},
        "ece": {"value": 0.043, "ci": [0.03, 0.09]},
    },
    "evaluation": "held-out test patients (161), model trained on 439",
    "calibration": {"method": "temperature", "temperature": 1.37},
    "data": {"modalities": {"notes": {"coverage": 0.62}, "ct": {"coverage": 0.9}}},
    "intended_use": "Research use only.",
}


def group(n, too_small=False, **metrics):
    return {"n": n, "too_small": too_small, **{k: {"value": v, "ci": [None, None]}
                                              for k, v in metrics.items()}}  # fmt: skip


AUDIT = {
    "threshold": 0.5,
    "min_group": 20,
    "attributes": {
        "site": {
            "groups": {
                "east": group(56, auroc=0.87, fpr=0.16),
                "south": group(60, auroc=0.81, fpr=0.34),
                "north": group(45, auroc=0.71, fpr=0.29),
                "west": group(7, too_small=True, auroc=None, fpr=None),
            },
            "gaps": {
                "auroc": {
                    "value": 0.16,
                    "between": ["east", "north"],
                    "ci": [-0.02, 0.35],
                    "flag": False,
                },
                "fpr": {
                    "value": 0.18,
                    "between": ["south", "east"],
                    "ci": [0.016, 0.4],
                    "flag": True,
                },
            },  # fmt: skip
            "binned": False,
        },
        "age": {
            "groups": {
                "<50": group(40, auroc=0.9),
                "50-70": group(70, auroc=0.7),
                ">=70": group(51, auroc=0.8),
            },
            "gaps": {
                "auroc": {
                    "value": 0.2,
                    "between": ["<50", "50-70"],
                    "ci": [0.05, 0.3],
                    "flag": True,
                }
            },
            "binned": True,
        },  # fmt: skip
    },
}
BINS = {"age": [50, 70]}


def draft_of(pred=None, card=CARD, audit=AUDIT, attributes=None, model=None):
    docs = {
        "prediction": pred or prediction(),
        "card": card or {},
        "audit": audit or {},
        "attributes": attributes or {},
        "model": model or {"family": "neural", "candidate": "joint", "imputation": "none"},
    }
    d = evidence_draft(
        docs["prediction"], card, audit, attributes, docs["model"], BINS, {"card": "card.json"}
    )
    return d, docs


def assert_traced(d, docs):
    """Every source resolves in the documents to the value cited; every number shown is
    that value formatted, and appears in the sentence; every number in a sentence is
    shown by one of its sources (no number comes from elsewhere)."""
    for s in d.sentences:
        shown = []
        for src in s.sources:
            assert resolve(docs, src["path"]) == src["value"], (s.text, src)
            if "shown" in src:
                v = float(src["shown"].replace("+", ""))
                scale = 100.0 if abs(v) > abs(src["value"]) * 10 else 1.0  # percentages
                assert v == pytest.approx(src["value"] * scale, rel=0.01, abs=1e-3 * scale)
                assert src["shown"] in s.text, (s.text, src)
                shown.append(src["shown"])
        # numbers in the text: those shown, or parts of cited text or keys (horizons,
        # counts in the evaluation's wording, feature names), never invented
        cited_text = " ".join(f"{src['path']} {src['value']}" for src in s.sources)
        for num in re.findall(r"(?<![\w.])[+-]?\d+(?:\.\d+)?", s.text):
            assert any(num in x for x in shown) or num in cited_text or num in ("50", "95"), (
                num,
                s.text,
            )


# -- the draft -------------------------------------------------------------------------------


def test_label_and_no_language_model():
    d, _ = draft_of()
    assert d.text.startswith(EVIDENCE_LABEL + "\n")
    assert EVIDENCE_LABEL.startswith("DRAFT") and "not a diagnosis" in EVIDENCE_LABEL
    j = d.to_json()
    assert j["label"] == EVIDENCE_LABEL and "no language model" in j["generator"]
    assert j["text"] == d.text and j["patient"] == "P-3f9a"
    json.dumps(j)  # JSON-ready


def test_every_cited_value_is_the_json_value():
    d, docs = draft_of(attributes={"site": "south", "age": 61})
    assert_traced(d, docs)
    kinds = {s.kind for s in d.sentences}
    assert {"prediction", "calibration", "performance", "contributions", "features",
            "missing", "subgroup_caveat", "use"} <= kinds  # fmt: skip
    first = d.sentences[0]
    assert first.kind == "prediction" and "73.0 %" in first.text and "deteriorated" in first.text


def test_calibration_note_and_metrics():
    d, _ = draft_of()
    cal = d.of_kind("calibration")
    assert "temperature scaling" in cal[0].text and "1.37" in cal[0].text
    assert "Brier score 0.171" in cal[1].text and "0.043" in cal[1].text
    d, _ = draft_of(pred=prediction(calibration="none"))
    assert "not recalibrated" in d.of_kind("calibration")[0].text


def test_a_model_trained_on_all_patients_cites_the_comparison_that_chose_it():
    """``fit --from`` / ``--all`` bundles have no test patients of their own: the draft
    cites the compare run's held-out estimate, and says so; without either, it says the
    performance is unknown."""
    card = {k: v for k, v in CARD.items() if k not in ("metrics_test", "evaluation")}
    card["estimate"] = {
        "run": "compare",
        "candidate": "baseline:lr_late",
        "metrics": {
            "auroc": {"value": 0.923, "ci": [0.868, 0.967]},
            "brier": {"value": 0.151, "ci": [0.132, 0.169]},
        },
        "n_evaluated": 106,
    }
    d, docs = draft_of(card=card)
    assert_traced(d, docs)
    perf = d.of_kind("performance")[0].text
    assert "trained on all labelled patients" in perf and "106 held-out patients" in perf
    assert "AUROC 0.923" in perf and "compare" in perf
    assert "Brier score 0.151" in d.of_kind("calibration")[1].text
    bare = {k: v for k, v in card.items() if k != "estimate"}
    d, _ = draft_of(card=bare)
    assert "performance on new patients is unknown" in d.of_kind("performance")[0].text


def test_contributions_largest_first_with_sign():
    d, _ = draft_of()
    s = d.of_kind("contributions")[1].text
    assert s.index("labs +24.0") < s.index("vitals +8.0")
    neg = prediction()
    neg["contributions"]["modalities"]["vitals"]["shapley"] = -0.3
    d, docs = draft_of(pred=neg)
    s = d.of_kind("contributions")[1].text
    assert s.index("vitals -30.0 percentage points (lowers it)") < s.index("labs +24.0")
    assert "41.0 %" in d.of_kind("contributions")[0].text
    assert_traced(d, docs)


def test_top_features_by_magnitude():
    d, _ = draft_of()
    vit = next(s.text for s in d.of_kind("features") if s.text.startswith("In vitals"))
    assert vit.index("age (+0.31") < vit.index("hr (+0.12") < vit.index("sbp (-0.05")
    assert "temp" not in vit  # three per modality
    assert any("SHAP" in s.text for s in d.of_kind("features"))


def test_feature_names_of_samples_and_pixels_left_out_but_vectors_kept():
    feats = {
        "ecg": [{"feature": "ecg:t0412:c03", "attribution": 0.4}],
        "rhythm": [{"feature": "rhythm:rr_sd", "attribution": 0.2}],
        "xray": [{"feature": "xray:c0:y12:x40", "attribution": 0.3}],
    }
    card = {
        **CARD,
        "modalities": {
            "ecg": {"kind": "signal", "shape": [5000, 12]},
            "rhythm": {"kind": "signal", "shape": [8]},
            "xray": {"kind": "image", "shape": [3, 224, 224]},
        },
    }
    d, docs = draft_of(pred=prediction(top_features=feats), card=card)
    text = " ".join(s.text for s in d.of_kind("features"))
    assert "rhythm:rr_sd" in text
    assert "ecg:t0412" not in text and "xray:c0" not in text
    assert_traced(d, docs)
    # a card without shapes (older bundles) keeps the rule by kind
    old = {**card, "modalities": {m: {"kind": v["kind"]} for m, v in card["modalities"].items()}}
    d, _ = draft_of(pred=prediction(top_features=feats), card=old)
    assert not any("rhythm:rr_sd" in s.text for s in d.of_kind("features"))


def test_missing_modality_named_with_how_it_was_handled():
    d, docs = draft_of()
    miss = d.of_kind("missing")
    assert "Not available for this patient: notes." in miss[0].text
    assert "masks it and never reads its values" in miss[0].text
    assert "notes 62.0 %" in miss[0].text  # training coverage from the card
    assert "unusable" in miss[1].text and "ct (the DICOM file has no pixel data)" in miss[1].text
    assert_traced(d, docs)
    full = prediction(modalities={"used": ["vitals", "labs"], "missing": [], "unusable": {}})
    d, _ = draft_of(pred=full)
    assert "All modalities" in d.of_kind("missing")[0].text


def test_missing_handling_by_family():
    assert "training mean" in missing_handling({"family": "classical", "candidate": "lr_early"})
    assert "natively" in missing_handling({"family": "classical", "candidate": "gbm"})
    assert "only the modalities present" in missing_handling(
        {"family": "neural", "candidate": "late", "imputation": "none"}
    )
    assert "learned placeholder" in missing_handling(
        {"family": "neural", "candidate": "joint", "imputation": "learned"}
    )
    assert "no vote" in missing_handling({"family": "stacking", "candidate": "stack"})


def caveats(d):
    return [s.text for s in d.of_kind("subgroup_caveat")]


def test_subgroup_caveat_only_where_the_audit_flags_the_patients_group():
    # fpr gap flagged between south (higher, worse) and east: only south gets the caveat
    d, docs = draft_of(attributes={"site": "south"})
    (c,) = caveats(d)
    assert "site south" in c and "false positive rate was 0.340" in c and "0.160" in c
    assert "0.180" in c and "0.016" in c
    assert_traced(d, docs)
    d, _ = draft_of(attributes={"site": "east"})
    assert caveats(d) == []
    assert "flagged nothing" in d.of_kind("subgroups")[0].text
    # north: worse AUROC, but that gap was not flagged
    d, _ = draft_of(attributes={"site": "north"})
    assert caveats(d) == []


def test_subgroup_too_small_or_unseen_is_a_caveat():
    d, docs = draft_of(attributes={"site": "west"})
    (c,) = caveats(d)
    assert "only 7 test patients" in c and "too few" in c and "20" in c
    assert_traced(d, docs)
    d, _ = draft_of(attributes={"site": "mars"})
    (c,) = caveats(d)
    assert "no test patient had site mars" in c


def test_numeric_attribute_matched_to_the_audits_band():
    d, docs = draft_of(attributes={"age": 61})
    (c,) = caveats(d)
    assert "age 61 (group 50-70)" in c and "AUROC was 0.700" in c and "0.900" in c
    assert_traced(d, docs)
    d, _ = draft_of(attributes={"age": 30})
    assert caveats(d) == []


def test_no_caveat_without_audit_or_attributes():
    d, _ = draft_of(audit=None, attributes={"site": "south"})
    assert caveats(d) == []
    assert "No subgroup audit" in d.of_kind("subgroups")[0].text
    d, _ = draft_of(attributes=None)
    assert caveats(d) == []
    assert "could not be matched: site, age" in d.of_kind("subgroups")[0].text


@pytest.mark.parametrize(
    "pred, expect",
    [
        ({"task": "regression", "prediction": 5.25}, "prediction is 5.25"),
        (
            {
                "task": "survival",
                "risk": 0.42,
                "survival": {"30": 0.9, "90": 0.75},
                "time_unit": "days",
            },
            "90.0 % at 30 days",
        ),  # fmt: skip
        (
            {
                "task": "multiclass",
                "probabilities": {"a": 0.2, "b": 0.7, "c": 0.1},
                "predicted": "b",
                "calibration": "none",
            },
            "b 70.0 %, a 20.0 %, c 10.0 %",
        ),  # fmt: skip
        (
            {
                "task": "multilabel",
                "probabilities": {"a": 0.6, "b": 0.2},
                "predicted": ["a"],
                "calibration": "none",
            },
            "a (60.0 %)",
        ),  # fmt: skip
    ],
)
def test_other_tasks(pred, expect):
    base = prediction()
    for k in ("probabilities", "predicted", "calibration"):
        base.pop(k)
    base["contributions"]["score"] = "model output"
    rec = {**base, **pred}
    d, docs = draft_of(pred=rec, card={"task": rec["task"]})
    assert expect in d.sentences[0].text
    assert_traced(d, docs)
    if rec["task"] in ("regression", "survival"):
        assert not d.of_kind("calibration")
        assert "percentage points" not in d.text


def test_pointer_round_trip():
    doc = {"a/b": {"~x": [10, {"k": 3}]}}
    p = pointer("a/b", "~x", 1, "k")
    assert p == "/a~1b/~0x/1/k" and resolve(doc, p) == 3
    with pytest.raises(KeyError):
        resolve(doc, "/a~1b/~0x/5")


def test_synthetic_and_warnings_are_stated():
    d, docs = draft_of(pred=prediction(synthetic_data=True, warnings=["field 'x' ignored"]))
    assert any("SYNTHETIC" in s.text for s in d.of_kind("data"))
    assert any("field 'x' ignored" in s.text for s in d.of_kind("data"))
    assert_traced(d, docs)


def test_nan_and_missing_values_are_left_out():
    pred = prediction()
    pred["contributions"]["modalities"]["vitals"]["shapley"] = None
    pred["top_features"]["labs"] = [{"feature": "lactate", "attribution": None}]
    d, docs = draft_of(
        pred=pred, card={"task": "binary", "metrics_test": {"ece": {"value": math.nan}}}
    )
    assert "vitals" not in d.of_kind("contributions")[1].text
    assert not any(s.text.startswith("In labs") for s in d.of_kind("features"))
    assert not any("ECE" in s.text or "calibration error" in s.text for s in d.sentences)
    assert_traced(d, docs)


# -- where the audit is found ----------------------------------------------------------------


def test_bundle_audit_from_results_beside_the_bundle_only_when_metrics_match(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    card = {"metrics_test": {"auroc": {"value": 0.8, "ci": [0.7, 0.9]}}}
    res = {"metrics": {"auroc": {"mean": 0.8, "ci": [0.7, 0.9]}}, "fairness": AUDIT}
    (tmp_path / "results.json").write_text(json.dumps(res))
    audit, where = bundle_audit(bundle, card)
    assert audit == AUDIT and "results.json" in where
    res["metrics"]["auroc"]["mean"] = 0.81  # another run's results: not this model's audit
    (tmp_path / "results.json").write_text(json.dumps(res))
    assert bundle_audit(bundle, card) == (None, None)
    audit, where = bundle_audit(bundle, {**card, "fairness": AUDIT})
    assert audit == AUDIT and where.startswith("card.json")
    assert bundle_audit(tmp_path / "elsewhere" / "bundle", card) == (None, None)


# -- holomed draft, end to end ---------------------------------------------------------------


def test_holomed_draft_writes_traceable_drafts(tmp_path):
    from holomed.cli import app
    from holomed.synthetic import write_synthetic

    runner = CliRunner()
    spec_path = write_synthetic(tmp_path / "data", n_patients=150, seed=5)
    spec = yaml.safe_load(spec_path.read_text())
    spec["evaluation"].update({"seeds": 1, "n_bootstrap": 20, "min_group": 5})
    spec_path.write_text(yaml.safe_dump(spec))
    r = runner.invoke(
        app, ["fit", str(spec_path), "--out", str(tmp_path / "fit"), "--candidate", "lr_early"]
    )
    assert r.exit_code == 0, r.output
    data = tmp_path / "data"
    clinical = pd.read_csv(data / "clinical.csv").head(4)
    clinical.to_csv(tmp_path / "clinical.csv", index=False)
    ids = set(clinical["patient_id"])
    expr = pd.read_csv(data / "expression.csv")
    expr[expr["patient_id"].isin(ids)].head(2).to_csv(tmp_path / "expression.csv", index=False)
    bundle = tmp_path / "fit" / "bundle"
    out = tmp_path / "draft"
    r = runner.invoke(
        app,
        ["draft", str(bundle), "-i", f"clinical={tmp_path / 'clinical.csv'}",
         "-i", f"expression={tmp_path / 'expression.csv'}", "-o", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    got = json.loads((out / "evidence_drafts.json").read_text())
    text = (out / "evidence_drafts.txt").read_text()
    assert got["patients"] == 4 and text.count(EVIDENCE_LABEL) == 4
    assert "no language model" in got["generator"]
    card = json.loads((bundle / "card.json").read_text())
    res = json.loads((tmp_path / "fit" / "results.json").read_text())
    for d in got["drafts"]:
        docs = {"prediction": d["prediction"], "card": card, "audit": res["fairness"],
                "attributes": d["attributes"], "model": d["model"]}  # fmt: skip
        assert d["attributes"].keys() == {"sex", "site"}  # from the clinical table
        for s in d["sentences"]:
            for src in s["sources"]:
                assert resolve(docs, src["path"]) == src["value"], (s["text"], src)
        missing = [s["text"] for s in d["sentences"] if s["kind"] == "missing"]
        for m in d["prediction"]["modalities"]["missing"]:
            assert m in missing[0]
        assert "methylation" in d["prediction"]["modalities"]["missing"]
        assert d["text"].startswith(EVIDENCE_LABEL)
    # --results must be this model's evaluation: another run's, or not a fit run, is
    # refused with the reason; the bundle's own results are accepted
    args = ["draft", str(bundle), "-i", f"clinical={tmp_path / 'clinical.csv'}"]
    mine = tmp_path / "fit" / "results.json"
    r = runner.invoke(app, [*args, "--results", str(mine), "-o", str(tmp_path / "d2")])
    assert r.exit_code == 0, r.output
    other = dict(
        res, metrics={k: dict(v, mean=v["mean"] - 0.01) for k, v in res["metrics"].items()}
    )
    (tmp_path / "other.json").write_text(json.dumps(other))
    (tmp_path / "cmp.json").write_text(json.dumps({"kind": "compare", "fairness": AUDIT}))
    for f, why in (("other.json", "another model's evaluation"), ("cmp.json", "holomed fit")):
        r = runner.invoke(app, [*args, "--results", str(tmp_path / f), "-o", str(tmp_path / "d3")])
        assert r.exit_code == 2 and why in " ".join(r.output.split()), r.output


def test_a_whole_number_attribute_names_the_audits_group_however_it_was_read(tmp_path):
    """The audit names the groups of a column with one empty cell from decimals ("1.0"
    before), and a patient's row read beside a decimal column turned site 1 into 1.0:
    the draft then said no test patient had the site the audit measured."""
    from types import SimpleNamespace

    import numpy as np

    from holomed.fairness import attribute_groups
    from holomed.generative.evidence import attributes_from_files, patient_group

    f = tmp_path / "attributes.csv"
    f.write_text("id,age,site\na,63.5,1\nb,70.0,2\n")
    spec = SimpleNamespace(
        attributes=["age", "site"],
        target=SimpleNamespace(id_column="id"),
        privacy=SimpleNamespace(pseudonymise=False),
    )
    attrs = attributes_from_files(spec, {}, str(f))
    assert attrs["a"]["site"] == 1 and patient_group(attrs["a"]["site"], None) == "1"
    audit_groups = attribute_groups(pd.Series([1.0, 2.0, np.nan]), None)  # read as decimals
    assert list(audit_groups) == ["1", "2", "unknown"]
    audit = {"attributes": {"site": {"groups": {"1": {"n": 40}, "2": {"n": 40}}}}}
    d, _ = draft_of(audit={**AUDIT, **audit}, attributes={"site": attrs["a"]["site"]})
    assert not any("no test patient had" in c for c in caveats(d))
    # an audit written before (groups "1.0", "2.0") still finds the patient's group
    old = {"attributes": {"site": {"groups": {"1.0": {"n": 40}, "2.0": {"n": 40}}}}}
    d, _ = draft_of(audit={**AUDIT, **old}, attributes={"site": 1})
    assert not any("no test patient had" in c for c in caveats(d))
