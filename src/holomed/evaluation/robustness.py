"""Missing-modality robustness: a model trained once per seed is evaluated on test
patients with growing shares of a modality removed.

Scenarios: ``<modality>`` (that modality removed for a fraction ``r`` of the test
patients, chosen at random) and ``random`` (every patient-modality pair removed with
probability ``r``; a patient who would lose everything keeps one of its modalities,
chosen at random). Masks are drawn from the seed, so runs are repeatable. Only the
presence masks change: the values stay where they are and are never read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import holomed.candidates  # noqa: F401  (every family registered)
from holomed.candidate import CLASSICAL as BASELINES
from holomed.candidate import candidate_class, candidate_entry, canonical, make_candidate
from holomed.cohort import Cohort, patient_splits
from holomed.evaluation.select import build_candidate
from holomed.provenance import run_card
from holomed.results import RobustnessCurve, RobustnessRecord
from holomed.scoring.metrics import compute_metrics
from holomed.spec import Spec


def drop_modalities(
    present: dict[str, np.ndarray], scenario: str, rate: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    out = {k: v.copy() for k, v in present.items()}
    n = len(next(iter(present.values())))
    if rate <= 0:
        return out
    if scenario == "random":
        names = list(present)
        pres = np.stack([present[k] for k in names], 1)
        keep = pres & (rng.random(pres.shape) >= rate)
        lost = (keep.sum(1) == 0) & (pres.sum(1) > 0)
        for i in np.nonzero(lost)[0]:
            keep[i, rng.choice(np.nonzero(pres[i])[0])] = True
        return {k: keep[:, j] for j, k in enumerate(names)}
    if scenario not in present:
        raise ValueError(
            f"unknown robustness scenario {scenario!r}; expected a modality or 'random'"
        )
    idx = rng.choice(n, int(round(rate * n)), replace=False)
    out[scenario][idx] = False
    return out


def robustness(
    spec: Spec,
    cohort: Cohort,
    fusions: list[str],
    seeds: int | None = None,
    rates: list[float] | None = None,
    baselines: bool = True,
    tick: Callable[[str], None] | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The curves on the first outer split's test patients: a
    :class:`~holomed.results.RobustnessRecord` (``rates``, ``scenarios``, ``metrics``,
    ``curves[entry][scenario][metric]`` with ``mean`` and ``sd`` over seeds per rate) as
    :meth:`~holomed.results.Record.to_dict`, what ``robustness.json`` holds."""
    seeds = seeds or spec.evaluation.seeds
    rates = rates if rates is not None else spec.evaluation.missing_rates
    tick = tick or (lambda _m: None)
    tr, te = patient_splits(cohort, spec.split, seed=spec.training.seed)[0]
    train, test = cohort.subset(tr), cohort.subset(te)
    scenarios = list(cohort.modality_names) + (["random"] if len(cohort.modality_names) > 1 else [])
    metrics = {
        "regression": ("rmse", "r2"),
        "multilabel": ("auroc", "f1_macro"),
        "survival": ("c_index", "td_auroc", "ibs"),
    }.get(cohort.task, ("auroc", "accuracy", "balanced_accuracy"))
    context = (
        {"horizons": spec.target.horizons, "reference": train.y}
        if cohort.task == "survival"
        else {}
    )
    entries: list[tuple[str, Callable[[int], Any]]] = [
        (
            candidate_entry(canonical(f)),
            lambda s, f=f, p=(params or {}).get(f): build_candidate(spec, f, s, None, p).fit(train),
        )
        for f in fusions
    ]
    if baselines:
        entries += [
            (f"baseline:{b}", lambda s, b=b: make_candidate(spec, b, s).fit(train))
            for b in BASELINES
            if f"baseline:{b}" not in {e[0] for e in entries}
            and cohort.task in candidate_class(b).tasks
        ]
    curves: dict[str, dict[str, dict[str, RobustnessCurve]]] = {}
    base_present = test.presence()
    for name, make in entries:
        vals = {sc: {m: np.full((seeds, len(rates)), np.nan) for m in metrics} for sc in scenarios}
        for s in range(seeds):
            model = make(s)
            for sc in scenarios:
                for j, r in enumerate(rates):
                    rng = np.random.default_rng([s, j, scenarios.index(sc)])
                    masked = test.with_presence(drop_modalities(base_present, sc, r, rng))
                    res = compute_metrics(
                        cohort.task, test.y, model.predict_proba(masked), **context
                    )
                    for m in metrics:
                        vals[sc][m][s, j] = res[m]
            tick(f"robustness {name} seed {s}")
        curves[name] = {
            sc: {
                m: RobustnessCurve(mean=np.nanmean(v, 0).tolist(), sd=np.nanstd(v, 0).tolist())
                for m, v in d.items()
            }
            for sc, d in vals.items()
        }
    return RobustnessRecord(
        dataset=spec.dataset,
        synthetic=run_card(spec)["synthetic"],
        task=cohort.task,
        rates=list(rates),
        scenarios=scenarios,
        metrics=list(metrics),
        seeds=list(range(seeds)),
        n_test=int(len(te)),
        curves=curves,
    ).to_dict()
