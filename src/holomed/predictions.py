"""The tables of predictions holomed writes: ``predict``'s one row per patient (scores,
predicted class, modalities present, and the patients excluded as a whole with their
reason) and ``compare``'s long table (every entry, seed and evaluated patient)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from holomed.survival import output_names


def prediction_table(model: Any, cohort: Any, proba: np.ndarray) -> pd.DataFrame:
    """One row per patient: scores, the predicted class (survival: the risk score and the
    survival probability at each horizon), which modalities it had, and, for a patient
    excluded as a whole, an empty score and ``excluded_reason``."""
    df = pd.DataFrame({"id": cohort.ids})
    if model.task_.name == "survival":  # risk, then survival at each horizon
        for j, c in enumerate(output_names(model.spec.target.horizons)):
            df[c] = proba[:, j]
    elif proba.ndim == 1:
        df["prediction"] = proba
    else:
        for j, c in enumerate(model.classes_):
            df[f"p_{c}"] = proba[:, j]
        if model.task_.name == "multilabel":
            sep = model.spec.target.separator
            df["predicted"] = [
                sep.join(c for c, on in zip(model.classes_, row, strict=True) if on)
                for row in proba >= 0.5
            ]
        else:
            df["predicted"] = [model.classes_[i] for i in proba.argmax(1)]
    for name in model.preprocessors_:
        df[f"has_{name}"] = cohort.modalities[name].present if name in cohort.modalities else False
    df["excluded_reason"] = ""
    lost = excluded_patients(cohort)
    if lost:
        extra = pd.DataFrame({"id": list(lost), "excluded_reason": list(lost.values())})
        for name in model.preprocessors_:
            extra[f"has_{name}"] = False
        df = pd.concat([df, extra[[c for c in df.columns if c in extra.columns]]])
        df = df.reset_index(drop=True)
    return df


def excluded_patients(cohort: Any) -> dict[str, str]:
    """{id: reason} of the patients excluded as a whole (``scope: patient``) and so not
    in ``cohort.ids``."""
    kept = set(cohort.ids)
    out: dict[str, str] = {}
    for e in cohort.excluded:
        pid = str(e.get("id"))
        if e.get("scope") == "patient" and pid not in kept:
            out[pid] = f"{out[pid]}; {e['reason']}" if pid in out else str(e["reason"])
    return out


def unknown_categories(model: Any) -> list[tuple[str, str, int]]:
    """(modality, column, count) of categorical values the last transform had not seen
    in training (counts only: the values themselves are never shown)."""
    out = []
    for name, pre in getattr(model, "preprocessors_", {}).items():
        for column, n in (getattr(pre, "unknown_categories_", None) or {}).items():
            out.append((name, str(column), int(n)))
    return out


def unused_columns(model: Any) -> list[tuple[str, list[str]]]:
    """(modality, columns) of the last transform's inputs that the model does not read
    (names only)."""
    out = []
    for name, pre in getattr(model, "preprocessors_", {}).items():
        cols = getattr(pre, "unused_columns_", None) or []
        if cols:
            out.append((name, list(cols)))
    return out


def out_of_range(model: Any) -> dict[str, dict[str, list[int]]]:
    """``{modality: {column: row positions}}`` of the last transform's values far outside
    the training range (see the tabular kind; values are never shown)."""
    out: dict[str, dict[str, list[int]]] = {}
    for name, pre in getattr(model, "preprocessors_", {}).items():
        far = getattr(pre, "out_of_range_", None) or {}
        if far:
            out[name] = {str(c): list(rows) for c, rows in far.items()}
    return out


def compare_predictions(results: dict[str, Any], outputs: dict[str, list]) -> pd.DataFrame:
    """``compare``'s long table: one row per entry, seed and evaluated patient, with the
    label and the outputs (class probabilities, the regression value, or the risk and
    survival at each horizon)."""
    rows = []
    ids, y = results["eval_ids"], results["y"]
    for name, outs in outputs.items():
        for seed, o in enumerate(outs):
            if results["task"] == "survival":
                yy = np.asarray(y, dtype=float)
                df = pd.DataFrame(
                    {"entry": name, "seed": seed, "id": ids, "time": yy[:, 0], "event": yy[:, 1]}
                )
                hs = results["spec"]["target"]["horizons"]
                for j, c in enumerate(output_names(hs)):
                    df[c] = o[:, j]
            elif o.ndim == 1:
                df = pd.DataFrame({"entry": name, "seed": seed, "id": ids, "y": y})
                df["prediction"] = o
            else:
                df = pd.DataFrame({"entry": name, "seed": seed, "id": ids, "y": y})
                for j, c in enumerate(results["classes"]):
                    df[f"p_{c}"] = o[:, j]
            rows.append(df)
    return pd.concat(rows)
