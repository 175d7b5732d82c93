"""One candidate, fitted and assessed: what ``holomed fit`` runs.

Three modes:

- ``holdout`` (a ``holdout`` or ``predefined`` split): train on the training patients,
  assess on the test patients, save that model;
- ``kfold`` (a ``kfold`` split): one model per fold; every patient is predicted once by
  a model that never saw it, and metrics, calibration and the subgroup audit are
  computed on these pooled out-of-fold predictions (explanations, and the threshold
  mitigation of a binary audit, come from the first fold's model on its test patients).
  The saved model is then trained on all labelled patients;
- ``all``: train on all labelled patients and save (no test patients are left; the
  evaluation is the comparison or CV run that chose the candidate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import holomed.candidates  # noqa: F401  (every family registered)
from holomed.candidate import Candidate
from holomed.cohort import Cohort, patient_splits
from holomed.evaluation.select import build_candidate, empty_outputs, output_columns
from holomed.evaluation.trust import (
    assess,
    curves,
    feature_summary,
    fit_results,
    subgroup_audit,
)
from holomed.explain.maps import attribution_maps
from holomed.provenance import model_card, training_patients
from holomed.results import FitRecord, write_results
from holomed.scoring.calibration import reliability
from holomed.scoring.metrics import calibration_stats, compute_metrics, summarise
from holomed.scoring.survival import metric_context, survival_summary
from holomed.spec import Spec

MODES = ("holdout", "kfold", "all")


def fit_mode(spec: Spec, all_patients: bool) -> str:
    if all_patients:
        return "all"
    return "kfold" if spec.split.method == "kfold" else "holdout"


def _pooled(
    spec: Spec, cohort: Cohort, out: np.ndarray, raw: np.ndarray, trust: dict[str, Any]
) -> dict[str, Any]:
    """Replace the test-set sections of ``trust`` by their out-of-fold versions (the
    threshold mitigation, fitted on one fold's validation patients, stays fold 0's and
    says so)."""
    ev, task, y = spec.evaluation, cohort.task, cohort.y
    ctx = metric_context(task, spec.target.horizons, y)
    seed, groups = spec.training.seed, cohort.groups  # groups: whole persons resampled
    trust["metrics"] = summarise(task, y, [out], ev.n_bootstrap, seed, groups, **ctx)
    trust["metrics_uncalibrated"] = summarise(task, y, [raw], ev.n_bootstrap, seed, groups, **ctx)
    if task == "survival":
        trust["survival"] = survival_summary(y, out, spec.target.horizons, y)
    if task in ("binary", "multiclass") and "calibration" in trust:
        after, before = compute_metrics(task, y, out), compute_metrics(task, y, raw)
        cal = trust["calibration"]
        cal["fitted_on"] = "per fold, on validation patients carved from that fold's training"
        cal["after"] = {
            "ece": after["ece"],
            "brier": after["brier"],
            "reliability": reliability(y, out),
        }
        cal["before"] = {
            "ece": before["ece"],
            "brier": before["brier"],
            "reliability": reliability(y, raw),
        }
        if task == "binary":
            cal["after"].update(calibration_stats(y, out[:, 1]))
            cal["before"].update(calibration_stats(y, raw[:, 1]))
        trust["curves"] = curves(y, out)
        trust["predictions"] = {
            "ids": cohort.ids.tolist(),
            "y": y.tolist(),
            "score": (out[:, 1] if out.shape[1] == 2 else out.max(1)).round(5).tolist(),
        }
    on = f"out-of-fold predictions of all {len(y)} patients"
    fold0 = (trust.get("fairness") or {}).get("mitigation")
    audited = subgroup_audit(spec, task, y, out, cohort.attributes)
    if audited is not None:
        trust["fairness"] = audited
        trust["fairness"]["on"] = on
        if fold0:  # group thresholds need one model's validation patients: fold 0's
            note = (
                "fold 0 only: thresholds fitted on fold 0's validation patients and applied "
                "to fold 0's test patients (not the pooled out-of-fold predictions)"
            )
            for entry in fold0.values():
                if isinstance(entry, dict):
                    entry["on"] = note
            trust["fairness"]["mitigation"] = fold0
    return trust


def fit_run(
    spec: Spec,
    cohort: Cohort,
    name: str,
    seed: int | None = None,
    params: dict[str, Any] | None = None,
    mode: str = "holdout",
) -> tuple[Candidate, dict[str, Any]]:
    """Fit candidate ``name`` as ``mode`` says (see module doc); returns the model to
    save and the run's results (``results.json``): a :class:`~holomed.results.FitRecord`
    as :meth:`~holomed.results.Record.to_dict` (numbers as computed, NaN kept)."""
    if mode not in MODES:
        raise ValueError(f"unknown fit mode {mode!r}; expected one of {MODES}")
    seed = spec.training.seed if seed is None else seed
    if cohort.y is None:
        raise ValueError("fit needs labelled patients")

    def make() -> Candidate:
        return build_candidate(spec, name, seed, None, params)

    if mode == "all":
        model = make().fit(cohort)
        trust: dict[str, Any] = {
            "evaluation": f"not here: trained on all {len(cohort)} labelled patients; the "
            "comparison or cross-validation run that chose this candidate is its evaluation"
        }
        if spec.evaluation.explain:  # what the model learned, on the patients it saw
            attr = model.feature_attributions(cohort)
            if attr:
                on = "the training patients (all labelled; no test patients in this run)"
                trust["features"] = feature_summary(model, attr, on)
        return model, fit_results(spec, cohort, model, len(cohort), 0, trust).to_dict()
    splits = patient_splits(cohort, spec.split, seed=spec.training.seed)
    if mode == "holdout":
        tr, te = splits[0]
        train, test = cohort.subset(tr), cohort.subset(te)
        model = make().fit(train)
        trust = assess(model, test, spec, train)
        trust["evaluation"] = f"held-out test patients ({len(te)}), model trained on {len(tr)}"
        rec = fit_results(spec, cohort, model, len(tr), len(te), trust)
        rec.test_ids = test.ids.tolist()
        return model, rec.to_dict()
    k = output_columns(spec, cohort)
    out, raw = (
        empty_outputs(len(cohort), cohort.task, k),
        empty_outputs(len(cohort), cohort.task, k),
    )
    trust = {}
    for fold, (tr, te) in enumerate(splits):
        train, test = cohort.subset(tr), cohort.subset(te)
        m = make().fit(train)
        out[te], raw[te] = m.predict_both(test)
        if fold == 0:
            trust = assess(m, test, spec, train)
    trust = _pooled(spec, cohort, out, raw, trust)
    trust["evaluation"] = (
        f"out-of-fold over {len(splits)} folds: every one of {len(cohort)} patients predicted "
        "once by a model that did not see it; explanations from fold 0's model on its "
        f"{len(splits[0][1])} test patients; the saved model is trained on all patients"
    )
    model = make().fit(cohort)
    rec = fit_results(spec, cohort, model, len(cohort), len(cohort), trust)
    rec.n_folds = len(splits)
    return model, rec.to_dict()


def save_fit(model: Candidate, res: dict[str, Any], cohort: Cohort, out: Path, mode: str) -> None:
    """Write a fit run to ``out``: attribution maps of the test patients' signals and
    images (neural candidates, when the run has test patients and ``evaluation.explain``),
    the bundle with its model card (``out/bundle``), and ``out/results.json`` (``res``,
    :func:`fit_run`'s results, checked as a :class:`~holomed.results.FitRecord`)."""
    rec = FitRecord.from_json(res)
    if model.spec.evaluation.explain and model.family == "neural":
        if mode != "all" and rec.test_ids:
            test = cohort.subset(cohort.index_of(rec.test_ids))
            rec.attribution_plots = attribution_maps(model, test, out)
            res["attribution_plots"] = rec.attribution_plots  # the caller's copy too
    card = model_card(rec.to_dict(), cohort.summary(), len(cohort.excluded))
    held_out = set(rec.test_ids or []) if mode == "holdout" else set()
    card["training_patients"] = training_patients([i for i in cohort.ids if i not in held_out])
    model.save(out / "bundle", card=card)
    write_results(rec, out / "results.json")
