"""Generated values for absent tabular and omics modalities (``holomed impute``).

A :class:`~holomed.fusion.mvae.MultimodalVAE` (product-of-experts posterior, random
modality masking) is fitted to the numeric columns of a cohort's tabular and omics
modalities, each column standardised by its mean and standard deviation over the
patients who have it (a value missing inside a present row counts as the mean and is
left out of the loss). For a patient without a modality it draws ``samples`` values from
the posterior of the modalities the patient has, and writes their mean and a standard
deviation: the draws' spread (what the latent code leaves open) combined with the noise
around the generated mean that the training patients show (the decoder gives a mean, so
the draws alone understate how far a measured value may fall). Generated values are
never mixed with measured ones: they go to files of their own, each row flagged
``generated = 1``.

:func:`evaluate` measures the generator honestly: it is fitted on training patients
only, then each modality of held-out patients who have it is hidden and generated from
the others, and compared with the measured values (R² over all values against the
training mean, the mean per-column correlation, the share of measured values inside the
generated mean ± 1.96 sd, and with a known truth, its error).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from holomed.errors import HolomedError
from holomed.fusion.mvae import MultimodalVAE

KINDS = ("tabular", "omics")


class ImputeError(HolomedError):
    """A cohort the generator cannot use, named."""


@dataclass
class Table:
    """One modality's numeric columns, standardised: ``x`` (n, d) with NaN where a
    value is missing, ``present`` (n,)."""

    columns: list[str]
    x: np.ndarray
    present: np.ndarray
    skipped: list[str] = field(default_factory=list)


def unusable(cohort: Any, names: list[str] | None = None) -> dict[str, str]:
    """Tabular/omics modalities (of ``names``, default all) left out, with the reason."""
    out = {}
    for name, m in cohort.modalities.items():
        if m.kind in KINDS and (names is None or name in names):
            if m.values.select_dtypes(include=[np.number]).shape[1] == 0:
                out[name] = "no numeric column"
    return out


def tables(cohort: Any, names: list[str] | None = None) -> dict[str, Table]:
    """The numeric columns of the cohort's tabular and omics modalities (``names``: a
    selection); non-numeric columns are listed as skipped."""
    out = {}
    usable = []
    for name, m in cohort.modalities.items():
        if m.kind not in KINDS:
            continue
        df = m.values
        num = df.select_dtypes(include=[np.number])
        if num.shape[1] == 0:
            continue
        usable.append(name)
        if names is not None and name not in names:
            continue
        skipped = [str(c) for c in df.columns if c not in num.columns]
        out[name] = Table([str(c) for c in num.columns], num.to_numpy(float), m.present, skipped)
    if names is not None and (unknown := sorted(set(names) - set(out))):
        raise ImputeError(
            f"modalities {unknown}: not tabular/omics modalities with numeric columns "
            f"in this cohort (usable: {sorted(usable)})"
        )
    if len(out) < 2:
        raise ImputeError(
            f"generation needs at least two tabular/omics modalities with numeric columns; "
            f"this cohort has {sorted(out) or 'none'}"
        )
    return out


def with_other(data: dict[str, Table], name: str, rows: np.ndarray) -> np.ndarray:
    """Which of ``rows`` have a modality other than ``name`` to generate it from."""
    others = np.zeros(len(rows), bool)
    for m, u in data.items():
        if m != name:
            others |= u.present[rows]
    return others


class Generator:
    """Fit on some patients' tables, generate any modality from the others."""

    def __init__(
        self,
        latent: int = 16,
        hidden: int = 128,
        epochs: int = 300,
        lr: float = 3e-3,
        batch_size: int = 128,
        seed: int = 0,
        beta: float = 1.0,
    ) -> None:
        if int(epochs) < 1:
            raise ImputeError(f"epochs: {epochs}; the generator needs at least 1 epoch")
        self.latent, self.hidden, self.epochs = latent, hidden, int(epochs)
        self.lr, self.batch_size, self.seed, self.beta = lr, batch_size, seed, beta

    def fit(self, data: dict[str, Table], rows: np.ndarray) -> Generator:
        self.names = list(data)
        self.mean, self.sd = {}, {}
        for n, t in data.items():
            x = t.x[rows][t.present[rows]]
            if len(x) < 2:
                raise ImputeError(f"modality {n!r}: fewer than 2 training patients have it")
            with np.errstate(all="ignore"):
                mu, sd = np.nanmean(x, 0), np.nanstd(x, 0)
            self.mean[n] = np.nan_to_num(mu)
            self.sd[n] = np.where(np.isfinite(sd) & (sd > 1e-8), sd, 1.0)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.vae = MultimodalVAE(
            {n: t.x.shape[1] for n, t in data.items()}, self.latent, self.hidden, self.beta
        )
        opt = torch.optim.Adam(self.vae.parameters(), lr=self.lr, weight_decay=1e-5)
        x, obs, present = self._tensors(data, rows)
        self.vae.train()
        for _ in range(self.epochs):
            order = rng.permutation(len(rows))
            for i in range(0, len(order), self.batch_size):
                b = torch.as_tensor(order[i : i + self.batch_size])
                loss = self.vae.loss(
                    {n: v[b] for n, v in x.items()},
                    {n: p[b] for n, p in present.items()},
                    {n: o[b] for n, o in obs.items()},
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.vae.eval()
        self.noise_sd = self._noise_sd(data, rows)
        return self

    def _noise_sd(self, data: dict[str, Table], rows: np.ndarray) -> dict[str, np.ndarray]:
        """Per column (original scale), the spread of measured values around the
        generated mean that the draws do not show: the decoder returns a mean, so the
        draws' sd is only the latent uncertainty. On the training rows that have the
        modality and another one, the modality is hidden and generated; the mean
        squared residual minus the draws' mean variance is the noise variance (0 where
        the draws already cover it, and where no such row exists)."""
        out = {}
        for n, t in data.items():
            fit_rows = rows[t.present[rows] & with_other(data, n, rows)]
            if len(fit_rows) < 2:
                out[n] = np.zeros(t.x.shape[1])
                continue
            mean, sd = self._draws(data, fit_rows, n, 8)[n]
            with np.errstate(all="ignore"):
                msr = np.nanmean((t.x[fit_rows] - mean) ** 2, 0)
            out[n] = np.sqrt(np.clip(np.nan_to_num(msr - np.mean(sd**2, 0)), 0, None))
        return out

    def _tensors(self, data: dict[str, Table], rows: np.ndarray):
        x, obs, present = {}, {}, {}
        for n in self.names:
            z = (data[n].x[rows] - self.mean[n]) / self.sd[n]
            o = np.isfinite(z)
            x[n] = torch.as_tensor(np.where(o, z, 0.0), dtype=torch.float32)
            obs[n] = torch.as_tensor(o)
            present[n] = torch.as_tensor(data[n].present[rows])
        return x, obs, present

    def generate(
        self,
        data: dict[str, Table],
        rows: np.ndarray,
        hide: str | None = None,
        samples: int = 20,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{modality: (mean, sd)}`` on the original scale for ``rows``, each from the
        posterior of the modalities present (without ``hide``). ``sd`` is the predictive
        spread of a generated value: the draws' spread (latent uncertainty) and the noise
        around the generated mean measured on the training patients, combined."""
        out = self._draws(data, rows, hide, samples)
        return {n: (m, np.sqrt(s**2 + self.noise_sd[n] ** 2)) for n, (m, s) in out.items()}

    def _draws(
        self, data: dict[str, Table], rows: np.ndarray, hide: str | None, samples: int
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Mean and sd of the decoded means of ``samples`` latent draws."""
        x, _, present = self._tensors(data, rows)
        if hide is not None:
            present[hide] = torch.zeros_like(present[hide])
        torch.manual_seed(self.seed)
        out = self.vae.generate(x, present, samples)
        return {
            n: (m.numpy() * self.sd[n] + self.mean[n], s.numpy() * self.sd[n])
            for n, (m, s) in out.items()
        }


def _r2(truth: np.ndarray, guess: np.ndarray, reference: np.ndarray) -> float:
    """1 - SSE / SS around ``reference`` (the training mean), over finite values."""
    ok = np.isfinite(truth)
    ss = float((((truth - reference) ** 2)[ok]).sum())
    return 1.0 - float((((truth - guess) ** 2)[ok]).sum()) / ss if ss > 0 else float("nan")


def _coverage(measured: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> float:
    """Share of finite measured values within ``mean ± 1.96 sd`` (0.95 if calibrated)."""
    ok = np.isfinite(measured)
    inside = np.abs(measured - mean) <= 1.96 * sd
    return float(inside[ok].mean()) if ok.any() else float("nan")


def _mean_corr(truth: np.ndarray, guess: np.ndarray) -> float:
    cs = []
    for j in range(truth.shape[1]):
        ok = np.isfinite(truth[:, j])
        a, b = truth[ok, j], guess[ok, j]
        if ok.sum() > 2 and a.std() > 0 and b.std() > 0:
            cs.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(cs)) if cs else float("nan")


def evaluate(
    cohort: Any,
    train: np.ndarray,
    test: np.ndarray,
    names: list[str] | None = None,
    truth: dict[str, np.ndarray] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Fit on ``train`` rows, then for each modality hide it in the ``test`` rows that
    have it and another modality, generate it, and score (module doc). ``truth``: known
    noise-free values by modality (synthetic cohorts), aligned to the cohort's rows."""
    data = tables(cohort, names)
    t0 = time.perf_counter()
    gen = Generator(**options).fit(data, train)
    fit_s = time.perf_counter() - t0
    report: dict[str, Any] = {"fit_seconds": round(fit_s, 2), "modalities": {}}
    for n, t in data.items():
        rows = test[t.present[test] & with_other(data, n, test)]
        if len(rows) < 3:
            report["modalities"][n] = {"n": int(len(rows)), "note": "too few held-out patients"}
            continue
        mean, sd = gen.generate(data, rows, hide=n)[n]
        measured = t.x[rows]
        entry = {
            "n": int(len(rows)),
            "r2": _r2(measured, mean, gen.mean[n]),
            "mean_corr": _mean_corr(measured, mean),
            "mean_sd": float(np.mean(sd)),
            "coverage_95": _coverage(measured, mean, sd),
            "skipped_columns": t.skipped,
        }
        if truth is not None and n in truth:
            tr = truth[n][rows]
            entry["truth_corr"] = _mean_corr(tr, mean)
            entry["truth_rmse"] = float(np.sqrt(np.nanmean((tr - mean) ** 2)))
        report["modalities"][n] = entry
    return report


def impute(
    cohort: Any,
    out: str | Path,
    names: list[str] | None = None,
    samples: int = 20,
    id_columns: dict[str, str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Fit on every patient and write, per modality, the generated values of the
    patients without it who have another modality: ``<modality>.generated.csv`` (the
    modality's id column, as its source names it in ``id_columns``, else ``id``;
    ``generated`` = 1; the columns) and ``<modality>.generated_sd.csv``, plus
    ``impute_report.json`` (counts, never values)."""
    if samples < 1:
        raise ImputeError(f"samples: {samples}; at least 1 draw per patient")
    data = tables(cohort, names)
    id_of = {n: (id_columns or {}).get(n) or "id" for n in data}
    for n, t in data.items():  # the written header must not repeat a column
        clash = sorted({id_of[n], "generated"} & set(map(str, t.columns)))
        if clash:
            raise ImputeError(
                f"modality {n!r}: its column(s) {clash} would repeat the id or flag column "
                "of the generated table; rename them in the source"
            )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.generated.csv"), *out.glob("*.generated_sd.csv")]:
        old.unlink()  # an earlier run's outputs: none may stand beside this run's report
    everyone = np.arange(len(cohort))
    gen = Generator(**options).fit(data, everyone)
    report: dict[str, Any] = {
        "samples": samples,
        "modalities": {},
        "skipped_modalities": unusable(cohort, names),
    }
    for n, t in data.items():
        others = with_other(data, n, everyone)
        rows = everyone[~t.present & others]
        report["modalities"][n] = {
            "generated": int(len(rows)),
            "measured": int(t.present.sum()),
            "absent_everywhere": int((~t.present & ~others).sum()),
            "skipped_columns": t.skipped,
        }
        if len(rows) == 0:
            continue
        mean, sd = gen.generate(data, rows, samples=samples)[n]
        for suffix, values in (("generated", mean), ("generated_sd", sd)):
            df = pd.DataFrame(values, columns=t.columns)
            df.insert(0, "generated", 1)
            df.insert(0, id_of[n], cohort.ids[rows])
            df.to_csv(out / f"{n}.{suffix}.csv", index=False)
    (out / "impute_report.json").write_text(json.dumps(report, indent=2))
    return report
