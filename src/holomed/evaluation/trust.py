"""Everything a clinician asks of one trained model on its test patients, as plain
JSON: metrics with CIs (calibrated and not), ROC/PR curves, calibration before/after,
modality contributions (Shapley + leave-one-out), attention read-out, top features per
modality, a deletion curve, and the subgroup audit: the sections of a fit run's
:class:`~holomed.results.FitRecord`. Reports render this; they never recompute it."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from holomed.cohort import Cohort, count_reasons
from holomed.explain.attention import attention_readout
from holomed.explain.features import deletion_curve, top_features
from holomed.explain.modality import modality_shapley
from holomed.fairness import attribute_groups, audit, mitigate_thresholds, survival_audit
from holomed.provenance import run_card, versions
from holomed.results import FitRecord
from holomed.scoring.calibration import reliability
from holomed.scoring.metrics import (
    calibration_stats,
    compute_metrics,
    multilabel_metrics,
    summarise,
)
from holomed.scoring.survival import metric_context, survival_summary
from holomed.spec import Spec


def curves(y: np.ndarray, proba: np.ndarray, max_points: int = 200) -> dict[str, Any]:
    """ROC and precision-recall points (binary), thinned to ``max_points``."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    if proba.ndim != 2 or proba.shape[1] != 2 or len(np.unique(y)) < 2:
        return {}
    fpr, tpr, _ = roc_curve(y, proba[:, 1])
    prec, rec, _ = precision_recall_curve(y, proba[:, 1])

    def thin(*arrs):
        idx = np.unique(np.linspace(0, len(arrs[0]) - 1, min(max_points, len(arrs[0]))).astype(int))
        return [np.asarray(a)[idx].round(5).tolist() for a in arrs]

    f, t = thin(fpr, tpr)
    r, p = thin(rec, prec)
    return {"roc": {"fpr": f, "tpr": t}, "pr": {"recall": r, "precision": p}}


def feature_summary(model: Any, attr: dict[str, Any], on: str) -> dict[str, Any]:
    """The top features per modality from ``attr`` (``model.feature_attributions``),
    the method, which patients (``on``) and, for a model with explicit cross-modal
    products (``lr_cross``), the products it kept."""
    out = {
        "method": "integrated gradients (captum), baseline = training mean"
        if model.family == "neural"
        else "SHAP (exact linear / LightGBM TreeSHAP / members' weighted mean)",
        "on": on,
        "top": top_features(attr, model.feature_names()),
    }
    if callable(getattr(model, "interactions", None)):
        out["interactions"] = model.interactions(10)
    return out


def subgroup_audit(
    spec: Spec, task: str, y: np.ndarray, out: np.ndarray, attributes: Any
) -> dict[str, Any] | None:
    """The subgroup audit of outputs ``out`` of ``y`` over the spec's attributes: of the
    risk score on Harrell's C (survival) or of P(positive) (binary); None for other tasks
    or without attributes."""
    if not spec.attributes or attributes is None or task not in ("binary", "survival"):
        return None
    ev = spec.evaluation
    run = survival_audit if task == "survival" else audit
    return run(
        y,
        out[:, 0] if task == "survival" else out[:, 1],
        attributes,
        ev.attribute_bins,
        n_boot=min(ev.n_bootstrap, 200),
        min_group=ev.min_group,
        seed=spec.training.seed,
    )


def assess(model: Any, test: Cohort, spec: Spec, train: Cohort | None = None) -> dict[str, Any]:
    """The trust sections of a fit run (see module doc)."""
    ev = spec.evaluation
    t0 = time.perf_counter()
    task = test.task
    proba, raw = model.predict_both(test)
    neural = getattr(model, "family", "neural") == "neural"
    ref = train.y if train is not None and train.y is not None else None
    ctx = metric_context(task, spec.target.horizons, ref)
    seed, groups = spec.training.seed, test.groups  # groups: whole persons resampled
    out: dict[str, Any] = {
        "metrics": summarise(task, test.y, [proba], ev.n_bootstrap, seed, groups, **ctx),
        "metrics_uncalibrated": summarise(task, test.y, [raw], ev.n_bootstrap, seed, groups, **ctx),
    }
    if task == "survival":
        out["survival"] = survival_summary(test.y, proba, spec.target.horizons, ref)
    if task == "multilabel":
        per = multilabel_metrics(test.y, proba, per_label=True)["per_label"]
        out["per_label"] = {test.classes[j]: v for j, v in per.items()}
    if task in ("binary", "multiclass"):
        before, after = compute_metrics(task, test.y, raw), compute_metrics(task, test.y, proba)
        cal = getattr(model, "calibrator_", None)
        val_ids = getattr(model, "val_ids_", None) or []
        out["calibration"] = {
            **(cal.to_json() if cal is not None else {"method": "none", "temperature": 1.0}),
            "fitted_on": f"{len(val_ids)} validation patients carved from training"
            if cal is not None and val_ids
            else "not recalibrated (the model's own probabilities)",
            "before": {
                "ece": before["ece"],
                "brier": before["brier"],
                "reliability": reliability(test.y, raw),
            },
            "after": {
                "ece": after["ece"],
                "brier": after["brier"],
                "reliability": reliability(test.y, proba),
            },
        }
        if task == "binary":
            out["calibration"]["after"].update(calibration_stats(test.y, proba[:, 1]))
            out["calibration"]["before"].update(calibration_stats(test.y, raw[:, 1]))
        out["curves"] = curves(test.y, proba)
        out["predictions"] = {
            "ids": test.ids.tolist(),
            "y": test.y.tolist(),
            "score": (proba[:, 1] if proba.shape[1] == 2 else proba.max(1)).round(5).tolist(),
        }
    if ev.explain:
        t1 = time.perf_counter()
        out["contributions"] = modality_shapley(model, test)
        out["attention"] = attention_readout(model, test) if neural else None
        attr = model.feature_attributions(test)
        if attr:
            out["features"] = feature_summary(model, attr, "the test patients")
        out["explain_seconds"] = round(time.perf_counter() - t1, 2)
        if neural and attr and task in ("binary", "multiclass"):
            out["deletion_curve"] = deletion_curve(model, test, attr)
    audited = subgroup_audit(spec, task, test.y, proba, test.attributes)
    if audited is not None:
        out["fairness"] = audited
    mitigate = ev.mitigation == "threshold" and train is not None
    if audited is not None and task == "binary" and mitigate:
        score = proba[:, 1]
        if getattr(model, "val_ids_", None):
            val = train.subset(np.asarray(model.val_ids_))
            sv = model.predict_proba(val)[:, 1]
            # the audit's group names; groups too small or of one outcome in validation
            # keep the plain threshold (reported as not mitigated)
            out["fairness"]["mitigation"] = {
                attr: mitigate_thresholds(
                    val.y,
                    sv,
                    attribute_groups(val.attributes[attr], None),
                    test.y,
                    score,
                    attribute_groups(test.attributes[attr], None),
                    seed=spec.training.seed,
                    min_group=ev.min_group,
                )
                for attr in test.attributes.columns
                if attr not in ev.attribute_bins
            }
    out["assess_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def fit_results(
    spec: Spec, cohort: Cohort, model: Any, n_train: int, n_test: int, trust: dict[str, Any]
) -> FitRecord:
    """The record of a fit run (``results.json``): run card, cohort, exclusions and the
    trust sections of :func:`assess` (those it made, as it made them)."""
    card = run_card(spec)
    header = FitRecord(
        dataset=spec.dataset,
        synthetic=card["synthetic"],
        task=cohort.task,
        classes=cohort.classes,
        fusion=model.name,
        family=model.family,
        seed=getattr(model, "seed_", model.seed),
        n_train=n_train,
        n_test=n_test,
        cohort=cohort.summary(),
        excluded=cohort.excluded,
        excluded_summary=count_reasons(cohort.excluded),
        fit_seconds=getattr(model, "fit_seconds_", None),
        history=getattr(model, "history_", {}),
        intended_use=card["intended_use"],
        limitations=card["limitations"],
        versions=versions(),
        spec=spec.model_dump(mode="json", exclude={"base_dir"}),
    )
    # the sections are checked as read back, so one assess left null stays null
    return FitRecord.from_json({**header.to_dict(), **trust})
