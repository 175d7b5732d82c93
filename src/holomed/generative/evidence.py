"""Evidence drafts: one patient's prediction told in plain sentences, every sentence built
from the model's own JSON so that each number it states traces to a place in that JSON.

**No generative language model is used.** Each sentence comes from a fixed template
filled with values read from these documents (nothing is invented, paraphrased or
recomputed beyond formatting):

- ``prediction``: the explanation of one patient in the shape the REST API returns from
  ``POST /v1/models/{name}/explain`` (:meth:`holomed.serve.app.ServedModel.explain_one`;
  :func:`patient_records` builds the same records for ``holomed draft``): probabilities
  and the predicted class (or risk and survival, or the prediction), the calibration
  method, the modalities used / missing / unusable, per-modality Shapley contributions,
  the top features;
- ``card``: the bundle's ``card.json`` (test metrics with 95 % CIs, how they were
  evaluated, the calibration fitted, each modality's coverage in the training cohort);
- ``audit``: the subgroup audit of the model's test evaluation (:func:`holomed.fairness.audit`
  or ``survival_audit``: ``results.json["fairness"]``), when there is one;
- ``attributes``: the patient's own attributes (sex, age band, site ...) when given;
- ``model``: the candidate's family, name and the fusion's imputation setting (how an
  absent modality is handled).

Every :class:`Sentence` lists its ``sources``: an RFC 6901 JSON pointer into those
documents (``/prediction/probabilities/event``, ``/card/metrics_test/brier/value``), the
value found there and, for a number, the text it is shown as. The draft starts with
:data:`EVIDENCE_LABEL`.

A subgroup caveat is written only where the audit says so for a group the patient
belongs to: the group was too small (or had a single class) to judge, the patient's group
was not among the test patients, or the audit flagged a gap (a permutation test of the
largest gap; in audits written before it, a 95 % bootstrap CI excluding 0) on which the
patient's group is the worse side (lower AUROC / TPR / PPV / C-index,
higher FPR / ECE; either side for a flagged calibration gap).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from holomed.explain.records import explanation_record, num, output_record, score_meaning
from holomed.fairness import attribute_groups
from holomed.io.tables import read_table
from holomed.privacy.outputs import spec_key
from holomed.scoring.metrics import LOWER_IS_BETTER

EVIDENCE_LABEL = (
    "DRAFT — generated from the model's outputs by fixed templates; not a diagnosis, "
    "not reviewed by a clinician"
)
PROBABILITY_TASKS = ("binary", "multiclass", "multilabel")
METRIC_WORDS = {
    "auroc": "AUROC",
    "tpr": "sensitivity (TPR)",
    "ppv": "positive predictive value",
    "fpr": "false positive rate",
    "ece": "calibration error (ECE)",
    "calibration_gap": "mean predicted minus observed risk",
    "c_index": "C-index",
}
PERFORMANCE = {  # headline test metrics stated per task, in this order
    "binary": ("auroc", "auprc"),
    "multiclass": ("auroc", "balanced_accuracy"),
    "multilabel": ("auroc",),
    "regression": ("rmse", "r2"),
    "survival": ("c_index", "ibs"),
}
PERFORMANCE_WORDS = {
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "balanced_accuracy": "balanced accuracy",
    "rmse": "RMSE",
    "r2": "R²",
    "c_index": "C-index",
    "ibs": "integrated Brier score",
    "brier": "Brier score",
    "ece": "expected calibration error",
}
CALIBRATION_WORDS = {
    "temperature": "recalibrated by temperature scaling",
    "isotonic": "recalibrated by isotonic regression",
}
TOP_FEATURES = 3  # per modality
# per-pixel / per-sample names read as noise; a kind's vector output (one value per
# patient and feature, e.g. a signal's rhythm features) has names worth reading
NO_FEATURE_NAMES = ("image", "signal")


# -- JSON pointers ------------------------------------------------------------------------


def pointer(*parts: Any) -> str:
    """The RFC 6901 JSON pointer of a path: ``pointer("card", "a/b", 0) -> "/card/a~1b/0"``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def resolve(doc: Any, ptr: str) -> Any:
    """The value at RFC 6901 pointer ``ptr`` in ``doc`` (dicts by key, lists by index);
    ``KeyError`` naming the pointer when it leads nowhere."""
    if ptr == "":
        return doc
    if not ptr.startswith("/"):
        raise KeyError(f"{ptr!r}: a JSON pointer starts with '/'")
    cur = doc
    for raw in ptr[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, Mapping) and key in cur:
            cur = cur[key]
        elif isinstance(cur, Sequence) and not isinstance(cur, str) and key.isdigit():
            if int(key) >= len(cur):
                raise KeyError(f"{ptr!r}: index {key} out of range")
            cur = cur[int(key)]
        else:
            raise KeyError(f"{ptr!r}: no {key!r} there")
    return cur


# -- the draft ----------------------------------------------------------------------------


@dataclass
class Sentence:
    """One sentence of a draft: ``kind`` (prediction, calibration, performance,
    contributions, features, missing, subgroup_caveat, subgroups, data, use), its
    ``text`` and ``sources`` (``path``: a JSON pointer into the draft's documents,
    ``value``: what is there, ``shown``: how a number appears in ``text``)."""

    kind: str
    text: str
    sources: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "text": self.text, "sources": self.sources}


@dataclass
class EvidenceDraft:
    """A patient's evidence draft: :data:`EVIDENCE_LABEL`, then the sentences.
    ``documents`` says which documents the sources point into (and where they came
    from)."""

    patient: str | None
    sentences: list[Sentence]
    documents: dict[str, str] = field(default_factory=dict)
    label: str = EVIDENCE_LABEL

    @property
    def text(self) -> str:
        """The draft as a reader sees it: the label, then one sentence per line."""
        who = f"Patient {self.patient}" if self.patient else "Patient (no id given)"
        return "\n".join([self.label, who, "", *(s.text for s in self.sentences)]) + "\n"

    def of_kind(self, *kinds: str) -> list[Sentence]:
        return [s for s in self.sentences if s.kind in kinds]

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "patient": self.patient,
            "generator": "fixed templates (holomed.generative.evidence); no language model",
            "documents": self.documents,
            "sentences": [s.to_json() for s in self.sentences],
            "text": self.text,
        }


class _Writer:
    """Collects sentences; ``cite`` records a source and returns how it is shown."""

    def __init__(self, docs: dict[str, Any]) -> None:
        self.docs = docs
        self.sentences: list[Sentence] = []
        self._sources: list[dict[str, Any]] = []

    def get(self, *path: Any) -> Any:
        try:
            return resolve(self.docs, pointer(*path))
        except KeyError:
            return None

    def cite(self, *path: Any, fmt: str | None = None, scale: float = 1.0) -> str:
        """Cite the value at ``path``; return it formatted (``fmt`` of ``value * scale``
        for a number, else the value as text)."""
        value = resolve(self.docs, pointer(*path))
        src: dict[str, Any] = {"path": pointer(*path), "value": value}
        if fmt is not None and num(value) is not None:
            shown = format(float(value) * scale, fmt)
            src["shown"] = shown
        elif isinstance(value, list):
            shown = ", ".join(str(x) for x in value)
        else:
            shown = str(value)
        self._sources.append(src)
        return shown

    def say(self, kind: str, text: str) -> None:
        self.sentences.append(Sentence(kind, text, self._sources))
        self._sources = []


def _pct(w: _Writer, *path: Any) -> str:
    return w.cite(*path, fmt=".1f", scale=100.0) + " %"


def _ci(w: _Writer, *path: Any, fmt: str = ".3f") -> str:
    ci = w.get(*path)
    if not (isinstance(ci, list) and len(ci) == 2 and all(num(x) is not None for x in ci)):
        return ""
    return f" (95 % CI {w.cite(*path, 0, fmt=fmt)} to {w.cite(*path, 1, fmt=fmt)})"


# -- the sentences ------------------------------------------------------------------------


def _prediction(w: _Writer, task: str) -> None:
    p = w.docs["prediction"]
    if task in ("binary", "multiclass") and p.get("probabilities"):
        probs = {c: v for c, v in p["probabilities"].items() if num(v) is not None}
        if task == "binary":
            pos = list(p["probabilities"])[-1]
            shown = _pct(w, "prediction", "probabilities", pos)
            text = f"The model's estimated probability of {pos} is {shown}"
        else:
            text = "The model's estimated probabilities are " + ", ".join(
                f"{c} {_pct(w, 'prediction', 'probabilities', c)}"
                for c in sorted(probs, key=lambda c: -probs[c])[:3]
            )
        if p.get("predicted") is not None:
            text += f"; predicted class: {w.cite('prediction', 'predicted')}"
        w.say("prediction", text + ".")
    elif task == "multilabel" and p.get("probabilities"):
        above = [c for c, v in p["probabilities"].items() if (num(v) or 0.0) >= 0.5]
        if above:
            parts = [f"{c} ({_pct(w, 'prediction', 'probabilities', c)})" for c in above]
            w.say("prediction", "Labels with an estimated probability of 50 % or more: "
                  + ", ".join(parts) + ".")  # fmt: skip
        else:
            top = max(p["probabilities"], key=lambda c: num(p["probabilities"][c]) or -1.0)
            w.say(
                "prediction",
                "No label reaches 50 %; the highest is "
                f"{top} at {_pct(w, 'prediction', 'probabilities', top)}.",
            )
    elif task == "survival":
        text = (
            "The model's risk score (log relative hazard) is "
            f"{w.cite('prediction', 'risk', fmt='.3g')}"
        )
        surv = p.get("survival") or {}
        unit = p.get("time_unit") or ""
        parts = [
            f"{_pct(w, 'prediction', 'survival', h)} at {h} {unit}".rstrip()
            for h, v in surv.items()
            if num(v) is not None
        ]
        if parts:
            text += "; estimated probability of no event: " + ", ".join(parts)
        w.say("prediction", text + ".")
    elif num(p.get("prediction")) is not None:
        w.say(
            "prediction",
            f"The model's prediction is {w.cite('prediction', 'prediction', fmt='.4g')}.",
        )


def _calibration(w: _Writer, task: str) -> None:
    p, card = w.docs["prediction"], w.docs["card"]
    if task not in PROBABILITY_TASKS:
        return
    if p.get("calibration") is not None:
        method_path: tuple[str, ...] = ("prediction", "calibration")
    elif (card.get("calibration") or {}).get("method") is not None:
        method_path = ("card", "calibration", "method")
    else:
        method_path = ()
    if method_path:
        method = str(w.get(*method_path))
        shown = w.cite(*method_path)
        if method in CALIBRATION_WORDS:
            text = f"Calibration ({shown}): the probabilities were {CALIBRATION_WORDS[method]}"
            if method == "temperature" and num(w.get("card", "calibration", "temperature")):
                text += f" (temperature {w.cite('card', 'calibration', 'temperature', fmt='.3g')})"
            text += ", fitted on validation patients kept out of training."
        elif method == "none":
            text = (
                f"Calibration ({shown}): the probabilities are the model's own, not recalibrated; "
                "read them as a ranking of risk more than as an exact frequency."
            )
        else:
            text = f"Calibration method: {shown}."
        w.say("calibration", text)


def _held_out(w: _Writer) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Where the card keeps the held-out metrics: its own test evaluation
    (``metrics_test``), or for a model trained on all patients, the estimate of the
    comparison that chose it (``estimate.metrics``)."""
    card = w.docs["card"]
    if card.get("metrics_test"):
        return ("card", "metrics_test"), dict(card["metrics_test"])
    est = card.get("estimate")
    if isinstance(est, Mapping) and isinstance(est.get("metrics"), Mapping):
        return ("card", "estimate", "metrics"), dict(est["metrics"])
    return ("card", "metrics_test"), {}


def _metric_parts(w: _Writer, names: Sequence[str]) -> tuple[list[str], tuple[str, ...]]:
    """The cited phrases of the held-out metrics ``names`` the card has, and where."""
    path, metrics = _held_out(w)
    return [
        f"{PERFORMANCE_WORDS[m]} {w.cite(*path, m, 'value', fmt='.3f')}" + _ci(w, *path, m, "ci")
        for m in names
        if num((metrics.get(m) or {}).get("value")) is not None
    ], path


def _calibration_metrics(w: _Writer, task: str) -> None:
    if task not in PROBABILITY_TASKS:
        return
    parts, _ = _metric_parts(w, ("brier", "ece"))
    if parts:
        w.say(
            "calibration",
            "On the same held-out patients, lower being better: " + "; ".join(parts) + ".",
        )


def _performance(w: _Writer, task: str) -> None:
    parts, path = _metric_parts(w, PERFORMANCE.get(task, ()))
    card = w.docs["card"]
    if not parts:
        w.say(
            "performance",
            "No held-out evaluation is recorded with this model: its performance on new "
            "patients is unknown.",
        )
        return
    if path[1] == "estimate":
        n = w.cite("card", "estimate", "n_evaluated")
        w.say(
            "performance",
            f"This model was trained on all labelled patients; the comparison that chose it "
            f"({w.cite('card', 'estimate', 'run')} run) measured, on {n} held-out patients, "
            + "; ".join(parts)
            + ".",
        )
        return
    on = f" ({w.cite('card', 'evaluation')})" if card.get("evaluation") else ""
    w.say("performance", f"On its test evaluation{on} the model reached " + "; ".join(parts) + ".")


def _contributions(w: _Writer, task: str) -> None:
    c = w.docs["prediction"].get("contributions") or {}
    mods = {
        m: num((v or {}).get("shapley"))
        for m, v in (c.get("modalities") or {}).items()
        if num((v or {}).get("shapley")) is not None
    }
    if not mods:
        return
    prob = task in PROBABILITY_TASKS
    scale, fmt, unit = (100.0, "+.1f", " percentage points") if prob else (1.0, "+.3g", "")
    if num(c.get("base")) is not None and num(c.get("value")) is not None:
        if prob:
            base, value = (
                _pct(w, "prediction", "contributions", "base"),
                _pct(w, "prediction", "contributions", "value"),
            )
        else:
            base = w.cite("prediction", "contributions", "base", fmt=".3g")
            value = w.cite("prediction", "contributions", "value", fmt=".3g")
        score = c.get("score") or "model output"
        w.say(
            "contributions",
            f"Without any of this patient's data the model's {score} would be {base}; with "
            f"the data given it is {value}.",
        )
    parts = []
    for m in sorted(mods, key=lambda m: (-abs(mods[m]), m)):
        shown = w.cite(
            "prediction", "contributions", "modalities", m, "shapley", fmt=fmt, scale=scale
        )
        word = "raises it" if mods[m] > 0 else ("lowers it" if mods[m] < 0 else "no change")
        parts.append(f"{m} {shown}{unit} ({word})")
    method = c.get("method")
    how = (
        f" (Shapley values over the modalities, {w.cite('prediction', 'contributions', 'method')})"
        if method
        else " (Shapley values over the modalities)"
    )
    w.say(
        "contributions",
        "Modality contributions, largest first" + how + ": " + "; ".join(parts) + ".",
    )


def _features(w: _Writer) -> None:
    feats = w.docs["prediction"].get("top_features") or {}
    mods = w.docs["card"].get("modalities") or {}
    wrote = False
    for m, rows in feats.items():
        card = mods.get(m) or {}
        vector = len(card.get("shape") or ()) == 1
        if (card.get("kind") in NO_FEATURE_NAMES and not vector) or not rows:
            continue
        ranked = [
            (k, num(r.get("attribution")))
            for k, r in enumerate(rows)
            if num(r.get("attribution")) is not None
        ]
        ranked = sorted(ranked, key=lambda t: -abs(t[1]))[:TOP_FEATURES]
        if not ranked:
            continue
        parts = []
        for k, a in ranked:
            name = w.cite("prediction", "top_features", m, k, "feature")
            shown = w.cite("prediction", "top_features", m, k, "attribution", fmt="+.3g")
            word = "raises" if a > 0 else ("lowers" if a < 0 else "no effect")
            parts.append(f"{name} ({shown}, {word})")
        w.say(
            "features",
            f"In {m}, the inputs that moved the prediction most: " + ", ".join(parts) + ".",
        )
        wrote = True
    if wrote and w.docs["prediction"].get("features_method"):
        w.say("features", f"Feature attributions by {w.cite('prediction', 'features_method')}.")


def missing_handling(model: Mapping[str, Any]) -> str:
    """How the candidate treats an absent modality, from its family, name and the
    fusion's imputation setting (each family's documented behaviour)."""
    family, name = str(model.get("family") or ""), str(model.get("candidate") or "")
    imputation = str(model.get("imputation") or "none")
    if family == "neural":
        if imputation == "none":
            if name == "late":
                return "the model combines only the modalities present"
            return "the fusion masks it and never reads its values"
        words = {
            "mean": "the training mean of its embedding",
            "learned": "a learned placeholder embedding",
            "reconstruct": "an embedding reconstructed from the modalities present",
            "generate": "an embedding generated from the modalities present (multimodal VAE)",
        }
        return f"the fusion fills it with {words.get(imputation, imputation)}, flagged as absent"
    if name in ("gbm", "rf", "xgb_cox"):
        return "its values are left missing and the trees route them natively"
    if family == "classical_late" or name == "lr_late":
        return "the model averages only the modalities present"
    if family == "stacking":
        return "its learners give no vote and the meta-learner sees it as absent"
    if family == "ensemble":
        return "each member of the ensemble handles it in its own documented way"
    if name == "km":
        return "the model uses no features"
    if family:
        return "it is replaced by its training mean, with a presence indicator"
    return ""


def _missing(w: _Writer) -> None:
    mods = w.docs["prediction"].get("modalities") or {}
    missing, unusable = mods.get("missing") or [], mods.get("unusable") or {}
    used = mods.get("used") or []
    coverage = {
        m: num((v or {}).get("coverage"))
        for m, v in ((w.docs["card"].get("data") or {}).get("modalities") or {}).items()
    }
    if missing:
        text = f"Not available for this patient: {w.cite('prediction', 'modalities', 'missing')}."
        how = missing_handling(w.docs["model"])
        if how:
            for key in ("family", "candidate", "imputation"):
                if w.docs["model"].get(key) is not None:
                    w.cite("model", key)
            it = "it" if len(missing) == 1 else "them"
            text += f" The prediction was made without {it}: {how}."
        seen = [m for m in missing if coverage.get(m) is not None]
        if seen:
            text += (
                " In the training cohort these were present for "
                + ", ".join(
                    f"{m} {_pct(w, 'card', 'data', 'modalities', m, 'coverage')}" for m in seen
                )
                + " of patients."
            )
        w.say("missing", text)
    for m in unusable:
        w.say(
            "missing",
            f"Given but unusable, so treated as missing: {m} "
            f"({w.cite('prediction', 'modalities', 'unusable', m)}).",
        )
    if not missing and not unusable and used:
        w.say(
            "missing",
            "All modalities the model takes were given and used: "
            f"{w.cite('prediction', 'modalities', 'used')}.",
        )


def audit_group_name(group: str, groups: Mapping[str, Any]) -> str:
    """``group`` as the audit spells it: audits written before whole numbers were named
    without a decimal part call group ``1`` ``1.0``."""
    if group in groups:
        return group
    for name in groups:
        try:
            if float(name) == float(group) and float(group).is_integer():
                return name
        except ValueError:
            continue
    return group


def patient_group(value: Any, edges: Sequence[float] | None) -> str:
    """The audit group of one attribute value (binned with ``edges`` as the audit was)."""
    import pandas as pd

    return str(
        attribute_groups(pd.Series([value], dtype=object), list(edges) if edges else None)[0]
    )


def _worse_side(metric: str, between: Sequence[str]) -> list[str]:
    """The group on the worse side of an audit gap (max - min: ``between`` is the group
    with the higher value, then the lower); either side for a calibration gap."""
    if metric == "calibration_gap":
        return [str(g) for g in between]
    if metric == "prevalence":
        return []
    return [str(between[0] if metric in LOWER_IS_BETTER else between[1])]


def _subgroups(w: _Writer, bins: Mapping[str, Sequence[float]]) -> None:
    audit, attrs = w.docs["audit"], w.docs["attributes"]
    per_attr = audit.get("attributes") or {}
    if not per_attr:
        w.say(
            "subgroups",
            "No subgroup audit is available for this model: its performance in subgroups "
            "of patients is unknown.",
        )
        return
    unmatched: list[str] = []
    flagged: set[str] = set()
    for attr, a in per_attr.items():
        value = attrs.get(attr)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            unmatched.append(attr)
            continue
        edges = bins.get(attr) if a.get("binned") else None
        groups = a.get("groups") or {}
        group = audit_group_name(patient_group(value, edges), groups)

        def label(attr: str = attr, group: str = group) -> str:
            shown = w.cite("attributes", attr)
            return f"{attr} {shown}" + (f" (group {group})" if group != shown else "")

        if group not in groups:
            w.say(
                "subgroup_caveat",
                f"Subgroup caveat: no test patient had {label()}; the model's performance for "
                "this group was not measured.",
            )
            flagged.add(attr)
            continue
        g = groups[group]
        if g.get("too_small"):
            n = w.cite("audit", "attributes", attr, "groups", group, "n")
            w.cite("audit", "attributes", attr, "groups", group, "too_small")
            least = (
                f" (at least {w.cite('audit', 'min_group')} and both outcomes needed)"
                if audit.get("min_group") is not None
                else ""
            )
            w.say(
                "subgroup_caveat",
                f"Subgroup caveat: only {n} test patients had {label()}, too few to judge the "
                f"model's performance in this group{least}.",
            )
            flagged.add(attr)
            continue
        for metric, gap in (a.get("gaps") or {}).items():
            if not isinstance(gap, Mapping) or not gap.get("flag"):
                continue
            between = [str(x) for x in gap.get("between") or []]
            if len(between) != 2 or group not in _worse_side(metric, between):
                continue
            other = between[1] if group == between[0] else between[0]
            here = ("audit", "attributes", attr, "groups", group, metric, "value")
            there = ("audit", "attributes", attr, "groups", other, metric, "value")
            if num(w.get(*here)) is None or num(w.get(*there)) is None:
                continue
            gap_at = ("audit", "attributes", attr, "gaps", metric)
            w.cite(*gap_at, "flag")
            word = METRIC_WORDS.get(metric, metric)
            w.say(
                "subgroup_caveat",
                f"Subgroup caveat: for test patients with {label()} the model's {word} was "
                f"{w.cite(*here, fmt='.3f')}, against {w.cite(*there, fmt='.3f')} for "
                f"{attr} {other}; the gap of {w.cite(*gap_at, 'value', fmt='.3f')}"
                f"{_ci(w, *gap_at, 'ci')} was flagged by the audit.",
            )
            flagged.add(attr)
    clear = [a for a in per_attr if a not in unmatched and a not in flagged]
    if clear:
        w.say(
            "subgroups",
            "The subgroup audit of the test evaluation flagged nothing for this patient's "
            + ("other " if flagged else "")
            + "groups ("
            + ", ".join(f"{a} {w.cite('attributes', a)}" for a in clear)
            + ").",
        )
    if unmatched:
        w.say(
            "subgroups",
            "Not given for this patient, so the subgroup audit could not be matched: "
            + ", ".join(unmatched)
            + ".",
        )


def _context(w: _Writer) -> None:
    p = w.docs["prediction"]
    if p.get("synthetic_data") or w.docs["card"].get("synthetic"):
        w.say(
            "data",
            "This model was trained on SYNTHETIC data: the numbers check the method, "
            "not a patient.",
        )
    for i in range(len(p.get("warnings") or [])):
        w.say("data", f"Input warning: {w.cite('prediction', 'warnings', i)}.")
    if p.get("intended_use"):
        w.say("use", f"Intended use (model card): {w.cite('prediction', 'intended_use')}")
    elif w.docs["card"].get("intended_use"):
        w.say("use", f"Intended use (model card): {w.cite('card', 'intended_use')}")


def evidence_draft(
    prediction: Mapping[str, Any],
    card: Mapping[str, Any] | None = None,
    audit: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    bins: Mapping[str, Sequence[float]] | None = None,
    documents: Mapping[str, str] | None = None,
) -> EvidenceDraft:
    """The evidence draft of one patient (see module doc). ``prediction``: the API's
    explain response (or a :func:`patient_records` record); ``card``: the bundle's
    card.json; ``audit``: the subgroup audit (``results.json["fairness"]``), or None;
    ``attributes``: the patient's attributes by name; ``model``: ``family``,
    ``candidate``, ``imputation`` (:func:`model_facts`); ``bins``: the spec's
    ``evaluation.attribute_bins`` (numeric attributes are matched to the audit's
    bands); ``documents``: where each document came from, recorded in the draft."""
    docs = {
        "prediction": dict(prediction),
        "card": dict(card or {}),
        "audit": dict(audit or {}),
        "attributes": {str(k): _plain(v) for k, v in (attributes or {}).items()},
        "model": dict(model or {}),
    }
    if not docs["model"]:
        docs["model"] = {
            k: docs["card"].get(k) for k in ("family", "candidate") if docs["card"].get(k)
        }
    task = str(docs["prediction"].get("task") or docs["card"].get("task") or "")
    w = _Writer(docs)
    _prediction(w, task)
    _calibration(w, task)
    _performance(w, task)
    _calibration_metrics(w, task)
    _contributions(w, task)
    _features(w)
    _missing(w)
    _subgroups(w, bins or {})
    _context(w)
    return EvidenceDraft(
        patient=docs["prediction"].get("patient"),
        sentences=w.sentences,
        documents=dict(documents or {}),
    )


def _plain(v: Any) -> Any:
    """A JSON-ready scalar (numpy numbers to Python; NaN to None)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


# -- records for holomed draft -------------------------------------------------------------


def model_facts(candidate: Any) -> dict[str, Any]:
    """What :func:`missing_handling` reads of a loaded candidate: family, name and, for a
    neural fusion, ``spec.fusion.imputation``."""
    out: dict[str, Any] = {
        "family": getattr(candidate, "family", None),
        "candidate": getattr(candidate, "name", None),
    }
    if out["family"] == "neural":
        out["imputation"] = candidate.spec.fusion.imputation
    return out


def _outputs(candidate: Any, row: np.ndarray) -> dict[str, Any]:
    """A prediction's outputs as the API words them."""
    t = candidate.spec.target
    cal = getattr(candidate, "calibrator_", None)
    return output_record(
        candidate.task_.name, row, candidate.classes_ or [], t.horizons or (),
        getattr(t, "time_unit", None), str(getattr(cal, "method", None) or "none"),
    )  # fmt: skip


def patient_records(
    candidate: Any, cohort: Any, top_k: int = 10, card: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One record per patient of ``cohort`` in the shape of the API's explain response
    (:meth:`holomed.serve.app.ServedModel.explain_one`): each patient is predicted and
    explained on its own, as the server does. Patients excluded as a whole are not in
    ``cohort.ids`` and get no record."""
    proba = np.asarray(candidate.predict_proba(cohort))
    task = candidate.task_.name
    names = list(candidate.preprocessors_)
    card = card or {}
    out = []
    for i, pid in enumerate(cohort.ids):
        one = cohort.subset(np.array([i]))
        why = candidate.explain(one, top_k=top_k)
        present = {
            n: bool(cohort.modalities[n].present[i]) if n in cohort.modalities else False
            for n in names
        }
        used = [n for n in names if present[n]]
        unusable = {
            str(e["modality"]): str(e.get("reason", ""))
            for e in cohort.excluded
            if str(e.get("id")) == str(pid)
            and e.get("scope", "modality") == "modality"
            and e.get("modality")
        }
        rec: dict[str, Any] = {
            "model": card.get("candidate") or getattr(candidate, "name", None),
            "task": task,
            "patient": str(pid),
            **_outputs(candidate, proba[i]),
            "modalities": {
                "used": used,
                "missing": [n for n in names if not present[n] and n not in unusable],
                "unusable": unusable,
            },
            "warnings": [],
            "intended_use": card.get("intended_use"),
        }
        rec.update(explanation_record(why, used, task))
        out.append(rec)
    return out


# -- where the audit is -------------------------------------------------------------------


def bundle_audit(
    bundle: Any, card: Mapping[str, Any] | None = None
) -> tuple[dict | None, str | None]:
    """The subgroup audit of a bundle's test evaluation and where it was found: the
    card's own ``fairness`` when it has one, else ``results.json`` beside the bundle (the
    layout ``holomed fit`` writes: ``OUT/bundle`` and ``OUT/results.json``), used only when
    its test metrics are the card's (so it is the evaluation of this model). ``(None,
    None)`` when neither."""
    card = dict(card or {})
    if isinstance(card.get("fairness"), Mapping) and card["fairness"].get("attributes"):
        return dict(card["fairness"]), "card.json: fairness"
    path = Path(bundle).parent / "results.json"
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    fair, _why = results_audit(res, card)
    if fair is None:
        return None, None
    return fair, f"{path.name} beside the bundle: fairness (test metrics match the card)"


def results_audit(res: Any, card: Mapping[str, Any] | None) -> tuple[dict | None, str | None]:
    """The subgroup audit (``fairness``) of a fit run's results, when its test metrics
    are those of the bundle's card (so it audits this model): ``(audit, None)``, else
    ``(None, why not)``."""
    if not isinstance(res, Mapping) or res.get("kind", "fit") != "fit":
        return None, "not the results of 'holomed fit'"
    fair = res.get("fairness")
    if not isinstance(fair, Mapping) or not fair.get("attributes"):
        return None, "it holds no subgroup audit (fairness)"
    mine = (card or {}).get("metrics_test") or {}
    theirs = res.get("metrics") or {}
    if not mine or set(mine) != set(theirs):
        return None, "its test metrics are not the bundle card's: another model's evaluation"
    for k, v in mine.items():
        a, b = num((v or {}).get("value")), num((theirs.get(k) or {}).get("mean"))
        if (a is None) != (b is None) or (a is not None and b is not None and abs(a - b) > 1e-9):
            return None, f"its test {k} is not the bundle card's: another model's evaluation"
    return dict(fair), None


def attributes_from_files(
    spec: Any, sources: Mapping[str, Sequence[str]], attributes_file: str | None = None
) -> dict[str, dict[str, Any]]:
    """Each patient's attributes (``spec.attributes``) by id: from ``attributes_file`` (a
    table whose id column is ``spec.target.id_column``, else its first column) when
    given, else from the tabular input files that carry those columns (the raw values,
    as the label table holds them). Ids are pseudonymised as the cohort's are when the
    spec asks for it."""
    wanted = list(spec.attributes)
    if not wanted:
        return {}
    frames = []
    if attributes_file is not None:
        df = read_table([attributes_file], spec.target.id_column, {})
        missing = [a for a in wanted if a not in df.columns]
        if len(missing) == len(wanted):
            raise ValueError(
                f"{attributes_file}: none of the attribute columns {wanted} found; columns "
                f"are {list(df.columns)[:10]}"
            )
        frames.append(df)
    else:
        kinds = {m.name: m for m in spec.modalities}
        for name, paths in sources.items():
            m = kinds.get(name)
            if m is None or m.kind != "tabular":
                continue
            df = read_table([str(p) for p in paths], m.id_column, m.options)
            if any(a in df.columns for a in wanted):
                frames.append(df)
    out: dict[str, dict[str, Any]] = {}
    for df in frames:
        cols = [a for a in wanted if a in df.columns]
        # object columns: a row keeps each column's own type (iterrows would turn a whole
        # number into a decimal beside a decimal column, naming another audit group)
        for pid, row in df[cols].astype(object).iterrows():
            rec = out.setdefault(str(pid), {})
            for a in cols:
                v = _plain(row[a])
                if v is not None and a not in rec:
                    rec[a] = v
    if spec.privacy.pseudonymise and out:
        key = spec_key(spec)
        out = {key.pseudonym(pid): rec for pid, rec in out.items()}
    return out


# -- an example from a fit run's results (the HTML report) ---------------------------------


def results_example(res: Mapping[str, Any]) -> dict[str, Any] | None:
    """The documents of an evidence draft for one test patient of a fit run, read from
    its ``results.json`` only (the report's rule: render, never recompute): the
    per-patient modality Shapley values, the score with no modality and the model output
    (``contributions``), absent modalities (a null leave-one-out value), the test metrics,
    calibration, cohort coverage and subgroup audit. The patient shown is the first test
    patient with a missing modality (else the first). ``None`` when the run has no
    per-patient contributions. Per-patient feature attributions and the test patients'
    attributes are not in ``results.json``: the example has no feature sentence, and its
    subgroup audit cannot be matched to the patient."""
    c = res.get("contributions") or {}
    ids, patient = c.get("ids") or [], c.get("patient") or {}
    if not ids or not patient:
        return None
    mods = [m for m in (c.get("modalities") or list(patient)) if m in patient]
    loo = c.get("patient_loo") or {}

    def absent(m: str, i: int) -> bool:
        v = loo.get(m)
        return bool(v) and i < len(v) and v[i] is None

    i = next((k for k in range(len(ids)) if any(absent(m, k) for m in mods)), 0)
    task = str(res.get("task") or "")
    used = [m for m in mods if not absent(m, i)]
    value = num((c.get("patient_score") or [None] * len(ids))[i])
    pred: dict[str, Any] = {"task": task, "patient": str(ids[i])}
    classes = [str(x) for x in (res.get("classes") or [])]
    if task == "binary" and len(classes) == 2 and value is not None:
        pred["probabilities"] = {classes[0]: 1.0 - value, classes[1]: value}
        pred["predicted"] = classes[int(value >= 0.5)]
        pred["calibration"] = str((res.get("calibration") or {}).get("method") or "none")
    elif task == "regression" and value is not None:
        pred["prediction"] = value
    elif task == "survival" and value is not None:
        pred["risk"] = value  # the contributions' score: the log relative hazard
    pred["modalities"] = {
        "used": used,
        "missing": [m for m in mods if m not in used],
        "unusable": {},
    }
    pred["contributions"] = {
        "method": c.get("method"),
        "score": score_meaning(task),
        "base": num((c.get("patient_base") or [None] * len(ids))[i]),
        "value": value,
        "modalities": {
            m: {
                "shapley": num(patient[m][i]),
                "leave_one_out": num((loo.get(m) or [None] * len(ids))[i]),
            }
            for m in used
        },
    }
    pred["intended_use"] = res.get("intended_use")
    cal = res.get("calibration") or {}
    card = {
        "task": task,
        "metrics_test": {
            k: {"value": v.get("mean"), "ci": v.get("ci")}
            for k, v in (res.get("metrics") or {}).items()
            if isinstance(v, Mapping)
        },
        "evaluation": res.get("evaluation"),
        "calibration": {k: cal.get(k) for k in ("method", "temperature")} if cal else None,
        "data": {"modalities": (res.get("cohort") or {}).get("modalities") or {}},
        "synthetic": bool(res.get("synthetic")),
    }
    spec = res.get("spec") or {}
    model = {"family": res.get("family"), "candidate": res.get("fusion")}
    if res.get("family") == "neural":
        model["imputation"] = (spec.get("fusion") or {}).get("imputation")
    return {
        "prediction": pred,
        "card": card,
        "audit": res.get("fairness") or None,
        "attributes": {},
        "model": model,
        "bins": ((spec.get("evaluation") or {}).get("attribute_bins")) or {},
        "index": i,
    }
