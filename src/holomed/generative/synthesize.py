"""``holomed synthesize``: a SYNTHETIC cohort generated from a real one's tabular and omics
modalities, written with the same spec, and a report of its fidelity, utility and privacy.

How it is made (every step fitted on the real TRAINING patients only; the real holdout is
kept for the evaluation):

1. **Split.** The spec's split gives the training patients and the holdout: ``predefined``
   (rows marked ``test`` are the holdout, ``val`` rows train), ``holdout`` (its stratified
   split under ``seed``) or ``kfold`` (its first fold).
2. **One table.** Each training patient becomes one row: tabular columns as they are
   (numbers, categories, gaps), omics columns, the spec's attribute columns, and one
   presence flag per modality some patient lacks. An absent modality's cells are filled
   from a random present patient of the same class (hot-deck), so the generator sees whole
   rows; the flag then removes them again in the synthetic output.
3. **Reduced omics.** A generator fitted to more columns than it has patients per class
   learns a rank-deficient correlation: its samples then lie in the span of the training
   patients, and a distance-based membership attack tells members from non-members (on
   ROSMAP a Gaussian copula on the 600 raw columns reached a membership AUROC of 0.60-0.64).
   So each omics modality wider than its share of a column budget (a quarter of the
   smallest class's training patients, spread over the omics modalities) is synthesised in
   a reduced space: features to normal scores (ranks), PCA to ``k`` components, the
   generator on the scores; back through the components plus Gaussian residual noise with
   each feature's residual variance and its class's residual mean, then each feature's
   empirical quantile function (values stay inside the training range, marginals follow
   the training patients). ``components=0`` keeps every column; ``components=K`` sets K.
4. **Conditional generator.** ``copula`` (default): one SDV Gaussian copula per class, so
   the synthetic labels keep the real class balance exactly; ``ctgan`` / ``tvae``: one SDV
   CTGAN / TVAE with the label as a discrete column, sampled per class with SDV's
   conditions (their native conditional mechanism). The copula was chosen by measurement on
   ROSMAP (BENCHMARKS.md, "Synthetic cohorts"): about 1 s against 9-34 s, and better
   fidelity and utility at 245 patients, where CTGAN did not learn the class signal.
5. **Written** as CSV files (``patient_id`` + columns) and a ``spec.yaml`` that reads them,
   under new ids (``SYNTH-00000``...); dataset ``synthetic-<name>`` so run cards flag it
   synthetic (:func:`holomed.provenance.run_card`); a ``SYNTHETIC.md`` says what it is. The
   generator itself is not saved (nothing to unpickle, ever).

Evaluation (:func:`evaluate_synthetic`, on the written cohort as ``load_cohort`` reads it):

- **fidelity**: per feature, Kolmogorov-Smirnov statistic and Wasserstein distance (in
  units of the real feature's sd), total variation for categories; mean absolute
  difference of Pearson correlation matrices (within and between modalities), each beside
  the same number for the real holdout against the real training patients (the sampling
  noise of real data of that size); and a detection AUROC: a logistic regression telling
  real holdout patients from synthetic ones, scored on halves it was not fitted on
  (0.5 = it cannot tell them apart), beside the same for real training patients in place
  of the synthetic ones (what a difference between the two real sets alone gives).
- **utility**: classical candidates (``lr_early`` by default) trained on the synthetic
  cohort and on the real training patients, both scored on the real holdout only: AUROC
  with stratified bootstrap CIs and the paired difference. No synthetic patient is ever
  scored.
- **privacy**: distance to closest record (DCR) in the standardised feature space, from
  each synthetic record to the real training patients, beside each real holdout patient's
  DCR to the training patients; exact copies; and a distance-based membership-inference
  attack (score = minus the distance to the nearest synthetic record) telling training
  patients from holdout patients: AUROC 0.5 = no membership signal. The check fails (the
  report says so, the CLI exits 1) on an exact copy, a membership AUROC above 0.6, or when
  more than 15 % of synthetic records (5 % expected; more for a holdout so small that
  chance reaches it) sit closer to a training patient than the closest 5 % of holdout
  patients do.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from holomed.candidates import make_candidate
from holomed.cohort import Cohort, load_cohort, patient_splits
from holomed.datasets import DATASETS
from holomed.errors import HolomedError
from holomed.modalities import get_modality
from holomed.runfiles import staged_folder
from holomed.scoring.metrics import compute_metrics, resamples
from holomed.spec import Spec, load_spec

MODELS = ("copula", "ctgan", "tvae")
KINDS = ("tabular", "omics")
TASKS = ("binary", "multiclass")
MEMBERSHIP_LIMIT = 0.6  # membership-inference AUROC above this fails the privacy check
CLOSE_LIMIT = 0.15  # share of synthetic records closer than the holdout's 5th-pct DCR
ID_COLUMN = "patient_id"


class SynthesisError(HolomedError, ValueError):
    """A cohort that cannot be synthesised (kind, task, class size) or a generator failure;
    the message names the modality, class or option concerned."""


# -- generators ------------------------------------------------------------------------


class Generator:
    """The contract a generator fulfils: ``fit(table, discrete, y) -> self`` on the
    training rows (``table`` one row per patient, ``discrete`` its categorical columns,
    ``y`` (n,) class index) and ``sample(y) -> table``: one synthetic row per entry of
    ``y``, in that order, of that class. Tests plug in their own (e.g. a leaky one)."""

    name = "generator"

    def fit(self, table: pd.DataFrame, discrete: list[str], y: np.ndarray) -> Generator:
        raise NotImplementedError

    def sample(self, y: np.ndarray) -> pd.DataFrame:
        raise NotImplementedError


# the fewest training patients with a modality that a generator learns it from
MIN_PATIENTS = 5


def _sdv() -> Any:
    """The SDV package, or a clear error (it is a dependency of holomed; a trimmed install
    may lack it)."""
    try:
        import sdv  # noqa: F401 (checks the import)
        from sdv import single_table
    except ImportError as err:
        raise SynthesisError(
            f"holomed synthesize needs the SDV library ({err}); install it with "
            "'pip install sdv' (it works offline from a package mirror)"
        ) from None
    return single_table


def _seed_int(seed: int, *more: int) -> int:
    return int(np.random.SeedSequence([int(seed), *map(int, more)]).generate_state(1)[0])


class SDVGenerator(Generator):
    """SDV single-table synthesizers behind :class:`Generator`: ``copula`` fits one
    ``GaussianCopulaSynthesizer`` per class (truncated-normal marginals); ``ctgan`` /
    ``tvae`` fit one synthesizer with the label as a discrete column and sample each class
    by SDV conditions. SDV makes no network call (checked with sockets blocked); its
    sampling seed is set per class from ``seed``."""

    LABEL = "__label__"

    def __init__(self, model: str = "copula", seed: int = 0, epochs: int = 300) -> None:
        self.model = model
        self.seed = seed
        self.epochs = epochs

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.model

    def _metadata(self, table: pd.DataFrame, discrete: list[str]) -> Any:
        from sdv.metadata import Metadata

        cols = {
            c: {"sdtype": "categorical" if c in discrete else "numerical"} for c in table.columns
        }
        return Metadata.load_from_dict({"tables": {"table": {"columns": cols}}})

    def _make(self, metadata: Any) -> Any:
        st = _sdv()
        if self.model == "copula":
            return st.GaussianCopulaSynthesizer(metadata, default_distribution="truncnorm")
        cls = st.CTGANSynthesizer if self.model == "ctgan" else st.TVAESynthesizer
        return cls(metadata, epochs=self.epochs)

    def fit(self, table: pd.DataFrame, discrete: list[str], y: np.ndarray) -> SDVGenerator:
        if self.model not in MODELS:
            raise SynthesisError(f"unknown model {self.model!r}; expected one of {MODELS}")
        import torch

        y = np.asarray(y, int)
        self.classes_ = sorted(set(y.tolist()))
        self.synths_: dict[int, Any] = {}
        with _quiet():
            if self.model == "copula":
                for c in self.classes_:
                    part = table[y == c].reset_index(drop=True)
                    s = self._make(self._metadata(part, discrete))
                    s.fit({"table": part})
                    self.synths_[c] = s
            else:
                np.random.seed(_seed_int(self.seed, 1) % 2**32)
                torch.manual_seed(_seed_int(self.seed, 2))
                data = table.reset_index(drop=True).assign(**{self.LABEL: [str(v) for v in y]})
                s = self._make(self._metadata(data, [*discrete, self.LABEL]))
                s.fit({"table": data})
                self.synths_[-1] = s
        return self

    def sample(self, y: np.ndarray) -> pd.DataFrame:
        y = np.asarray(y, int)
        parts = []
        with _quiet():
            for c in sorted(set(y.tolist())):
                n = int((y == c).sum())
                if self.model == "copula":
                    s = self.synths_[c]
                    _set_random_state(s, _seed_int(self.seed, 10, c))
                    got = _table(s.sample(num_rows=n))
                else:
                    from sdv.sampling import Condition

                    s = self.synths_[-1]
                    _set_random_state(s, _seed_int(self.seed, 10, c))
                    got = _table(
                        s.sample_from_conditions([Condition({self.LABEL: str(c)}, num_rows=n)])
                    ).drop(columns=self.LABEL)
                if len(got) != n:
                    raise SynthesisError(
                        f"{self.model}: asked for {n} rows of class {c}, got {len(got)}"
                    )
                parts.append(got.set_axis(np.flatnonzero(y == c)))
        out = pd.concat(parts).sort_index()
        return out.reset_index(drop=True)


def _set_random_state(synth: Any, seed: int) -> None:
    """SDV samples under a fixed seed unless told otherwise; its (private) setter is the
    only way to draw other samples reproducibly."""
    setter = getattr(synth, "_set_random_state", None)
    if setter is not None:
        setter(seed)


def _table(sampled: Any) -> pd.DataFrame:
    return sampled["table"] if isinstance(sampled, dict) else sampled


@contextlib.contextmanager
def _quiet():
    """SDV's progress bars (stderr) and its advisory warnings off inside the block."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def make_generator(model: str | Generator, seed: int = 0, epochs: int = 300) -> Generator:
    """A generator by name (``copula``, ``ctgan``, ``tvae``), or the one given."""
    if isinstance(model, Generator):
        return model
    if model not in MODELS:
        raise SynthesisError(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    _sdv()
    return SDVGenerator(model, seed=seed, epochs=epochs)


# -- the table the generator sees, and back --------------------------------------------


@dataclass
class _Column:
    safe: str  # the generator's column name
    source: str  # "feature", "attribute" or "presence"
    modality: str | None
    name: str
    discrete: bool


@dataclass
class _Reduced:
    """An omics modality in normal-score PCA space (module doc, step 3)."""

    features: list[str]
    mean: np.ndarray  # (p,) of the normal scores
    components: np.ndarray  # (p, k)
    resid_sd: np.ndarray  # (p,)
    resid_class_mean: dict[int, np.ndarray]  # class -> (p,)
    sorted_values: list[np.ndarray]  # per feature, the training values, sorted
    missing_rate: np.ndarray  # (p,) share of missing cells among present rows
    explained: float  # share of the normal scores' variance the k components keep


@dataclass
class TableCodec:
    """Turns training patients into one generator table (module doc, steps 2-3) and
    generated rows back into per-modality frames."""

    components: int | None = None
    seed: int = 0
    columns_: list[_Column] = field(default_factory=list)
    reduced_: dict[str, _Reduced] = field(default_factory=dict)
    kinds_: dict[str, str] = field(default_factory=dict)
    feature_order_: dict[str, list[str]] = field(default_factory=dict)
    presence_rate_: dict[str, float] = field(default_factory=dict)
    linked_: dict[str, _Column] = field(default_factory=dict)

    def _k(self, cohort: Cohort, names: list[str], attrs: list[str]) -> int | None:
        if self.components is not None:
            return self.components or None
        y = cohort.y.astype(int)
        smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
        budget = max(8, smallest // 4)
        omics = [m for m in names if cohort.modalities[m].kind == "omics"]
        fixed = len(attrs) + sum(not cohort.modalities[m].present.all() for m in names)
        fixed += sum(cohort.modalities[m].values.shape[1] for m in names if m not in omics)
        return max(2, (budget - fixed) // max(1, len(omics)))

    def fit_transform(self, cohort: Cohort, names: list[str]) -> tuple[pd.DataFrame, list[str]]:
        rng = np.random.default_rng(_seed_int(self.seed, 20))
        y = cohort.y.astype(int)
        attrs = [] if cohort.attributes is None else list(cohort.attributes.columns)
        # an attribute that is also a tabular column (sex, site ...) follows that column,
        # so the two never disagree; the others are generated as columns of their own
        linked = {c: m for c in attrs if (m := _linked(cohort, names, c)) is not None}
        attrs = [c for c in attrs if c not in linked]
        k = self._k(cohort, names, attrs)
        blocks: list[pd.DataFrame] = []
        self.columns_, self.reduced_ = [], {}
        for m in names:
            md = cohort.modalities[m]
            self.kinds_[m] = md.kind
            present = md.present
            if not present.any():
                raise SynthesisError(f"modality {m!r}: no training patient has it")
            need = max(MIN_PATIENTS, (k or 0) + 1)
            if present.sum() < need:
                raise SynthesisError(
                    f"modality {m!r}: {int(present.sum())} training patient(s) have it; a "
                    f"generator learns its values from at least {need}"
                )
            self.presence_rate_[m] = float(present.mean())
            df = md.values.iloc[np.flatnonzero(present)]
            self.feature_order_[m] = [str(c) for c in df.columns]
            donors = _donors(present, y, rng)
            if md.kind == "omics" and k is not None and df.shape[1] > k:
                red, scores = _reduce(df, y[present], k)
                self.reduced_[m] = red
                block = pd.DataFrame(scores, columns=[f"{m}:pc{i}" for i in range(k)])
                discrete: set[str] = set()
            else:
                block = df.reset_index(drop=True).copy()
                block.columns = [str(c) for c in block.columns]
                discrete = {c for c in block.columns if not pd.api.types.is_numeric_dtype(block[c])}
                for c in discrete:
                    block[c] = block[c].astype(object).where(block[c].notna(), None)
                for c in set(block.columns) - discrete:
                    block[c] = block[c].astype(float)
            # rows of all training patients: absent ones filled from a same-class donor
            full = block.iloc[donors].reset_index(drop=True)
            for c in full.columns:
                self.columns_.append(_Column("", "feature", m, c, c in discrete))
            blocks.append(full)
            if not present.all():
                flag = pd.DataFrame({f"present:{m}": np.where(present, "1", "0")})
                self.columns_.append(_Column("", "presence", m, m, True))
                blocks.append(flag)
        self.linked_ = {
            c: next(
                col
                for col in self.columns_
                if col.source == "feature" and col.modality == m and col.name == str(c)
            )
            for c, m in linked.items()
        }
        if attrs:
            a = cohort.attributes[attrs].reset_index(drop=True).copy()
            for c in attrs:
                numeric = pd.api.types.is_numeric_dtype(a[c]) and not pd.api.types.is_bool_dtype(
                    a[c]
                )
                if numeric:
                    a[c] = a[c].astype(float)
                else:
                    a[c] = (
                        a[c]
                        .astype(object)
                        .where(a[c].notna(), None)
                        .map(lambda v: v if v is None else str(v))
                    )
                self.columns_.append(_Column("", "attribute", None, str(c), not numeric))
            blocks.append(a)
        table = pd.concat(blocks, axis=1)
        for i, col in enumerate(self.columns_):
            col.safe = f"x{i:05d}"
        table.columns = [c.safe for c in self.columns_]
        return table, [c.safe for c in self.columns_ if c.discrete]

    def decode(
        self, table: pd.DataFrame, y: np.ndarray, ids: list[str]
    ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame | None]:
        """Per modality, the synthetic patients who have it (indexed by ``ids``), and the
        attribute frame (or None)."""
        rng = np.random.default_rng(_seed_int(self.seed, 30))
        n = len(table)
        names = list(self.kinds_)
        present = {m: np.ones(n, bool) for m in names}
        for col in self.columns_:
            if col.source == "presence":
                present[col.modality] = table[col.safe].astype(str).to_numpy() == "1"
        none = ~np.any(np.stack([present[m] for m in names]), axis=0)
        if none.any():  # a patient with no modality cannot exist in a cohort
            best = max(names, key=lambda m: self.presence_rate_[m])
            present[best] = present[best] | none
        frames: dict[str, pd.DataFrame] = {}
        for m in names:
            cols = [c for c in self.columns_ if c.modality == m and c.source == "feature"]
            if m in self.reduced_:
                x = _expand(self.reduced_[m], table[[c.safe for c in cols]].to_numpy(float), y, rng)
                df = pd.DataFrame(x, columns=self.reduced_[m].features, index=ids)
            else:
                df = table[[c.safe for c in cols]].copy()
                df.columns = [c.name for c in cols]
                df.index = ids
                for c in cols:
                    if not c.discrete:
                        df[c.name] = pd.to_numeric(df[c.name], errors="coerce").astype(float)
            frames[m] = df.loc[present[m], self.feature_order_[m]]
        attrs = [c for c in self.columns_ if c.source == "attribute"]
        attributes = None
        if attrs or self.linked_:
            attributes = table[[c.safe for c in attrs]].copy()
            attributes.columns = [c.name for c in attrs]
            for name, col in self.linked_.items():
                attributes[name] = table[col.safe].to_numpy()
            attributes.index = ids
        return frames, attributes


def _linked(cohort: Cohort, names: list[str], attr: str) -> str | None:
    """The tabular modality holding a column named ``attr`` with the attribute's values
    for every training patient who has it, or None."""
    for m in names:
        md = cohort.modalities[m]
        if md.kind != "tabular" or attr not in md.values.columns:
            continue
        rows = np.flatnonzero(md.present)
        a = cohort.attributes[attr].iloc[rows].astype(str).to_numpy()
        b = md.values[attr].iloc[rows].astype(str).to_numpy()
        if (a == b).all():
            return m
    return None


def _donors(present: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For every patient, a row of the present-rows block: its own, or (absent) a random
    present patient of the same class (any class when none has it)."""
    pos = np.cumsum(present) - 1  # patient index -> row in the present block
    out = np.where(present, pos, -1)
    for i in np.flatnonzero(~present):
        same = np.flatnonzero(present & (y == y[i]))
        pool = same if len(same) else np.flatnonzero(present)
        out[i] = pos[rng.choice(pool)]
    return out


def _normal_scores(x: np.ndarray) -> np.ndarray:
    """Each column's values to normal scores by rank (average rank for ties); NaN -> 0."""
    from scipy.stats import norm, rankdata

    z = np.zeros_like(x, dtype=float)
    for j in range(x.shape[1]):
        col = x[:, j]
        ok = ~np.isnan(col)
        if ok.sum() == 0:
            continue
        r = rankdata(col[ok])
        z[ok, j] = norm.ppf((r - 0.5) / ok.sum())
    return z


def _reduce(df: pd.DataFrame, y: np.ndarray, k: int) -> tuple[_Reduced, np.ndarray]:
    x = df.to_numpy(dtype=float)
    z = _normal_scores(x)
    mean = z.mean(0)
    zc = z - mean
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    k = min(k, vt.shape[0])
    v = vt[:k].T
    scores = zc @ v
    resid = zc - scores @ v.T
    class_mean = {int(c): resid[y == c].mean(0) for c in np.unique(y)}
    resid_c = resid - np.stack([class_mean[int(c)] for c in y])
    total = float((s**2).sum())
    red = _Reduced(
        features=[str(c) for c in df.columns],
        mean=mean,
        components=v,
        resid_sd=resid_c.std(0),
        resid_class_mean=class_mean,
        sorted_values=[np.sort(x[~np.isnan(x[:, j]), j]) for j in range(x.shape[1])],
        missing_rate=np.isnan(x).mean(0),
        explained=float((s[:k] ** 2).sum() / total) if total > 0 else 1.0,
    )
    return red, scores


def _expand(
    red: _Reduced, scores: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Generated scores (n, k) back to feature values (n, p) (module doc, step 3)."""
    from scipy.stats import norm

    n, p = len(scores), len(red.features)
    cm = np.stack([red.resid_class_mean.get(int(c), np.zeros(p)) for c in y])
    z = red.mean + scores @ red.components.T + cm + rng.normal(size=(n, p)) * red.resid_sd
    u = norm.cdf(z)
    out = np.full((n, p), np.nan)
    for j, vals in enumerate(red.sorted_values):
        if len(vals):
            grid = (np.arange(len(vals)) + 0.5) / len(vals)
            out[:, j] = np.interp(u[:, j], grid, vals)
    gaps = rng.random((n, p)) < red.missing_rate
    out[gaps] = np.nan
    return out


# -- splitting, sizes, ids -------------------------------------------------------------


def real_split(spec: Spec, cohort: Cohort, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(training positions, holdout positions, how): the spec's split (module doc, 1)."""
    s = spec.split
    tr, te = patient_splits(cohort, s, seed)[0]
    if s.method == "predefined":
        how = f"predefined split (column {s.column!r}): 'test' rows are the holdout"
    elif s.method == "holdout":
        how = f"stratified holdout, test_size {s.test_size}, seed {seed}"
    else:
        how = f"first of {s.n_folds} stratified folds (seed {seed}) as the holdout"
    if s.group:
        how += f", groups ({s.group!r}) kept whole"
    return np.sort(tr), np.sort(te), how


def class_counts(y: np.ndarray, n_classes: int, n: int) -> np.ndarray:
    """``n`` split over classes in the proportions of ``y`` (largest remainder); every
    class seen in ``y`` gets at least one row."""
    real = np.bincount(y.astype(int), minlength=n_classes).astype(float)
    want = real / real.sum() * n
    out = np.floor(want).astype(int)
    for i in np.argsort(-(want - out))[: n - out.sum()]:
        out[i] += 1
    short = (real > 0) & (out == 0)
    out[short] = 1
    while out.sum() > n and (out > 1).any():  # take back what the floor gave away
        out[np.argmax(out)] -= 1
    return out


def new_ids(n: int, taken: set[str], seed: int) -> list[str]:
    """``SYNTH-00000``...; another prefix when a real id could be mistaken for one."""
    prefix = "SYNTH"
    ids = [f"{prefix}-{i:05d}" for i in range(n)]
    rng = np.random.default_rng(_seed_int(seed, 40))
    while taken.intersection(ids):
        prefix = "SYNTH" + "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ"), 4))
        ids = [f"{prefix}-{i:05d}" for i in range(n)]
    return ids


# -- the whole run ---------------------------------------------------------------------


def _check(spec: Spec, cohort: Cohort, modalities: list[str] | None) -> list[str]:
    if cohort.task not in TASKS or cohort.y is None:
        raise SynthesisError(
            f"target.task {cohort.task!r}: holomed synthesize generates per class and "
            f"supports {' and '.join(TASKS)} targets"
        )
    kinds = {m.name: m.kind for m in spec.modalities}
    if modalities:
        unknown = [m for m in modalities if m not in cohort.modalities]
        if unknown:
            raise SynthesisError(
                f"--modalities: {unknown} not in the cohort; it has {list(cohort.modalities)}"
            )
        names = [m for m in spec.modality_names if m in modalities]
    else:
        names = [m for m in spec.modality_names if m in cohort.modalities]
    bad = [f"{m} ({kinds[m]})" for m in names if kinds[m] not in KINDS]
    if bad:
        ok = [m for m in names if kinds[m] in KINDS]
        raise SynthesisError(
            f"modalities {bad}: holomed synthesize generates {' and '.join(KINDS)} modalities "
            f"only; choose some with --modalities (here: {', '.join(ok) or 'none'})"
        )
    if not names:
        raise SynthesisError("no modality to synthesise")
    return names


def _new_spec(
    spec: Spec, cohort: Cohort, names: list[str], model: str, seed: int
) -> dict[str, Any]:
    d = spec.model_dump(mode="json", exclude={"base_dir"})
    d["dataset"] = f"synthetic-{spec.dataset}"
    d["dataset_options"] = {}
    d["ehr"] = None
    d["description"] = (
        f"SYNTHETIC cohort generated by holomed synthesize ({model}, seed {seed}) from the "
        f"training patients of {spec.dataset!r}; not real patients"
    )
    d["notes"] = [
        *d.get("notes", []),
        "SYNTHETIC patients (holomed synthesize): results on this cohort check a method; "
        "they are never a clinical result and never a substitute for a real test set.",
    ]

    if spec.dataset in DATASETS:  # derived data: the source's terms and citation still apply
        ds = DATASETS.get(spec.dataset)
        if ds.citation or ds.licence:
            d["notes"].append(
                f"Generated from {ds.description}. Source licence: {ds.licence or 'see source'}. "
                f"Cite: {ds.citation or 'see source'}."
            )
    mods = []
    for m in d["modalities"]:
        if m["name"] not in names:
            continue
        m["source"] = [f"{m['name']}.csv"]
        m["id_column"] = ID_COLUMN
        m["options"] = {}
        mods.append(m)
    d["modalities"] = mods
    t = d["target"]
    t["source"] = ["labels.csv"]
    t["id_column"] = ID_COLUMN
    t["classes"] = list(cohort.classes or [])
    d["split"]["group"] = None
    d["evaluation"]["score_baselines"] = []
    d["privacy"] = {"pseudonymise": False}
    return d


def synthesize(
    spec: Spec,
    cohort: Cohort,
    out: Path | str,
    model: str | Generator = "copula",
    n: int | None = None,
    seed: int = 0,
    components: int | None = None,
    modalities: list[str] | None = None,
    learners: tuple[str, ...] = ("lr_early",),
    n_bootstrap: int = 1000,
    epochs: int = 300,
    tick: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write a synthetic version of ``cohort`` (loaded from ``spec``) to ``out`` and return
    the report (also ``out/synthesis_report.json``); module doc for the method.

    ``n``: synthetic patients (default: as many as real training patients), split over
    classes in the training balance. ``components``: omics PCA components (None: by the
    column budget; 0: no reduction). ``learners``: candidates of the utility check."""
    import yaml

    tick = tick or (lambda _m: None)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SynthesisError(f"{out}: exists and is not an empty folder; give a new folder")
    names = _check(spec, cohort, modalities)
    tr, te, how = real_split(spec, cohort, seed)
    train, hold = cohort.subset(tr), cohort.subset(te)
    k = len(cohort.classes or [])
    counts_tr = np.bincount(train.y.astype(int), minlength=k)
    if counts_tr.min() < 5:
        c = int(np.argmin(counts_tr))
        raise SynthesisError(
            f"class {cohort.classes[c]!r} has {counts_tr[c]} training patient(s); a per-class "
            "generator needs at least 5"
        )
    n = int(n or len(train))
    if n < k:
        raise SynthesisError(f"--n {n}: at least one synthetic patient per class ({k}) needed")
    gen = make_generator(model, seed=seed, epochs=epochs)
    t0 = time.perf_counter()
    codec = TableCodec(components=components, seed=seed)
    table, discrete = codec.fit_transform(train, names)
    tick(
        f"fitting {gen.name} on {len(train)} training patients x {table.shape[1]} columns "
        f"({', '.join(names)})"
    )
    gen.fit(table, discrete, train.y.astype(int))
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    counts = class_counts(train.y, k, n)
    rng = np.random.default_rng(_seed_int(seed, 50))
    y_syn = rng.permutation(np.repeat(np.arange(k), counts))
    sampled = gen.sample(y_syn)
    ids = new_ids(n, set(cohort.ids), seed)
    frames, attributes = codec.decode(sampled, y_syn, ids)
    t_sample = time.perf_counter() - t0

    with staged_folder(out) as partial:
        for m, df in frames.items():
            df.rename_axis(ID_COLUMN).to_csv(partial / f"{m}.csv")
        labels = pd.DataFrame({spec.target.column: [cohort.classes[c] for c in y_syn]}, index=ids)
        if spec.split.method == "predefined" and spec.split.column:
            labels[spec.split.column] = _random_split(y_syn, len(te) / len(cohort), rng)
        if attributes is not None:
            for c in attributes.columns:
                labels[c] = attributes[c]
        labels.rename_axis(ID_COLUMN).to_csv(partial / "labels.csv")
        new = _new_spec(spec, cohort, names, gen.name, seed)
        (partial / "spec.yaml").write_text(yaml.safe_dump(new, sort_keys=False))

        tick("evaluating: fidelity, utility (real holdout only), privacy")
        t0 = time.perf_counter()
        synthetic = load_cohort(load_spec(partial / "spec.yaml"))
        evaluation = evaluate_synthetic(
            spec,
            train,
            hold,
            synthetic,
            learners=learners,
            n_bootstrap=n_bootstrap,
            seed=seed,
            modalities=names,
        )
        t_eval = time.perf_counter() - t0
        report = {
            "synthetic": True,
            "source_dataset": spec.dataset,
            "dataset": new["dataset"],
            "model": gen.name,
            "seed": seed,
            "modalities": names,
            "conditioning": (
                "one synthesizer per class"
                if gen.name == "copula"
                else "label as a discrete column, sampled per class"
                if gen.name in MODELS
                else "the generator's own"
            ),
            "split": {"how": how, "train_patients": len(train), "holdout_patients": len(hold)},
            "patients": {
                "synthetic": n,
                "classes": {c: int(v) for c, v in zip(cohort.classes, counts, strict=True)},
                "train_classes": {
                    c: int(v) for c, v in zip(cohort.classes, counts_tr, strict=True)
                },
            },
            "generator_table": {"columns": int(table.shape[1]), "rows": int(len(table))},
            "reduced": {
                m: {
                    "features": len(r.features),
                    "components": int(r.components.shape[1]),
                    "explained_variance": round(r.explained, 4),
                }
                for m, r in codec.reduced_.items()
            },
            **evaluation,
            "seconds": {
                "fit": round(t_fit, 3),
                "sample": round(t_sample, 3),
                "evaluate": round(t_eval, 3),
            },
            "versions": _versions(),
        }
        (partial / "synthesis_report.json").write_text(json.dumps(_clean(report), indent=1))
        (partial / "SYNTHETIC.md").write_text(_readme(report))
    return report


def _random_split(y: np.ndarray, test_share: float, rng: np.random.Generator) -> list[str]:
    """A 'train'/'test' column with the real holdout's share, per class at random, so a
    predefined split still reads (both sides are synthetic)."""
    out = np.array(["train"] * len(y), dtype=object)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        out[idx[: int(round(test_share * len(idx)))]] = "test"
    return out.tolist()


def _versions() -> dict[str, str]:
    out = {}
    for p in ("holomed", "sdv", "copulas", "ctgan", "rdt"):
        with contextlib.suppress(PackageNotFoundError):
            out[p] = version(p)
    return out


def _clean(x: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _readme(r: dict[str, Any]) -> str:
    p, u, f = r["privacy"], r["utility"], r["fidelity"]["summary"]
    status = "passed" if p["passed"] else "FAILED: " + "; ".join(p["flags"])
    lines = [
        "# SYNTHETIC cohort",
        "",
        f"Every patient here was generated by `holomed synthesize` ({r['model']}, seed "
        f"{r['seed']}) from the {r['split']['train_patients']} training patients of "
        f"`{r['source_dataset']}` ({r['split']['how']}). None is a real person; ids are new.",
        "",
        "- Use it to develop, teach and test pipelines. Results on it are a check of a method, "
        "never a clinical result.",
        "- Never mix these patients into a real evaluation, and never score a model on them "
        "as if they were a test set of real patients.",
        "- `spec.yaml` reads this folder (dataset name starts with `synthetic`, so holomed's "
        "run cards mark every result synthetic). A predefined split column, if any, was drawn "
        "at random: both sides are synthetic.",
        "",
        f"Privacy check: **{status}** (membership-inference AUROC "
        f"{p['membership']['auroc']:.3f}; exact copies {p['dcr']['exact_copies']}).",
        f"Fidelity: mean KS {f['ks_mean']:.3f} (real holdout vs train: "
        f"{f['ks_mean_reference']:.3f}); correlation |diff| {f['corr_mad']:.3f} "
        f"({f['corr_mad_reference']:.3f}).",
    ]
    for name, v in u["learners"].items():
        lines.append(
            f"Utility ({name}, AUROC on {u['holdout_patients']} real holdout patients): "
            f"train on real {v['train_on_real']['auroc']:.3f}, on synthetic "
            f"{v['train_on_synthetic']['auroc']:.3f}."
        )
    lines += ["", "Details: `synthesis_report.json`.", ""]
    return "\n".join(lines)


# -- evaluation ------------------------------------------------------------------------


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (max gap between the empirical CDFs)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def _present_frame(c: Cohort, m: str) -> pd.DataFrame:
    md = c.modalities[m]
    return md.values.iloc[np.flatnonzero(md.present)]


def _distances(real: pd.DataFrame, other: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per feature: ks and wasserstein (in real sd units) for numbers, tvd for categories."""
    from scipy.stats import wasserstein_distance

    out: dict[str, dict[str, float]] = {}
    for col in real.columns:
        a, b = real[col], other[col] if col in other.columns else pd.Series(dtype=float)
        if pd.api.types.is_numeric_dtype(a):
            a = a.to_numpy(float)
            b = pd.to_numeric(b, errors="coerce").to_numpy(float)
            a, b = a[~np.isnan(a)], b[~np.isnan(b)]
            if len(a) == 0 or len(b) == 0:
                continue
            sd = float(a.std()) or 1.0
            out[str(col)] = {"ks": _ks(a, b), "wasserstein_sd": wasserstein_distance(a, b) / sd}
        else:
            pa = a.astype(str).where(a.notna(), "<missing>").value_counts(normalize=True)
            pb = b.astype(str).where(b.notna(), "<missing>").value_counts(normalize=True)
            cats = pa.index.union(pb.index)
            tvd = 0.5 * float(
                np.abs(pa.reindex(cats, fill_value=0) - pb.reindex(cats, fill_value=0)).sum()
            )
            out[str(col)] = {"tvd": tvd}
    return out


def _summ(d: dict[str, dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in ("ks", "wasserstein_sd", "tvd"):
        v = np.array([x[key] for x in d.values() if key in x])
        if len(v):
            out[f"{key}_mean"] = float(v.mean())
            out[f"{key}_median"] = float(np.median(v))
            out[f"{key}_max"] = float(v.max())
    return out


def _numeric_join(c: Cohort, names: list[str]) -> pd.DataFrame:
    """Every numeric feature of every modality side by side (absent = NaN), by patient."""
    parts = []
    for m in names:
        df = c.modalities[m].values
        num = df.select_dtypes(include="number").copy()
        num.iloc[np.flatnonzero(~c.modalities[m].present)] = np.nan
        parts.append(num.set_axis([f"{m}:{x}" for x in num.columns], axis=1))
    return pd.concat(parts, axis=1).reset_index(drop=True)


def _corr_diff(a: pd.DataFrame, b: pd.DataFrame, names: list[str]) -> dict[str, float]:
    """Mean |corr(a) - corr(b)| over feature pairs: all, within one modality, between."""
    ca = a.corr(min_periods=5).to_numpy()
    cb = b.corr(min_periods=5).to_numpy()
    mods = np.array([c.split(":", 1)[0] for c in a.columns])
    iu = np.triu_indices(len(mods), 1)
    d = np.abs(ca - cb)[iu]
    same = mods[iu[0]] == mods[iu[1]]
    ok = np.isfinite(d)

    def mean(mask: np.ndarray) -> float:
        return float(d[mask & ok].mean()) if (mask & ok).any() else float("nan")

    return {"all": mean(np.ones_like(ok)), "within": mean(same), "between": mean(~same)}


def _feature_space(train: Cohort, names: list[str], spec: Spec) -> Callable[[Cohort], np.ndarray]:
    """A standardised feature space fitted on the real training patients (the kinds'
    default preprocessors: median/mean imputation, standard scaling, one-hot categories,
    absent modality = 0 plus a presence indicator)."""
    cats = {m.name: list(m.categorical) for m in spec.modalities}
    pres = {}
    for m in names:
        kind = train.modalities[m].kind
        pcls = get_modality(kind).preprocessor
        pre = pcls(categorical=cats.get(m) or None) if kind == "tabular" else pcls()
        pres[m] = pre.fit(train.modalities[m])

    def transform(c: Cohort) -> np.ndarray:
        parts = []
        for m in names:
            x = np.nan_to_num(pres[m].transform(c.modalities[m]), nan=0.0)
            parts.append(x.reshape(len(c), -1))
            if not train.modalities[m].present.all():
                parts.append(c.modalities[m].present[:, None].astype(float))
        return np.concatenate(parts, axis=1)

    return transform


def _detection(xho: np.ndarray, xsy: np.ndarray, seed: int, repeats: int = 5) -> float:
    """AUROC of a logistic regression telling real holdout patients from synthetic ones
    (0.5: it cannot tell them apart): fitted on one half of each, scored on the other
    half, both ways, over ``repeats`` random halvings, the per-half AUROCs averaged.

    The real side is the holdout because the generator has seen every training patient
    (a detector scored on training patients finds the held-out ones look *more* synthetic,
    since the synthetic rows carry their statistics: AUROC far below 0.5). Each AUROC is
    of one model on patients it was not fitted on, and never pooled across models: pooled
    cross-validated scores of a linear model on many features are biased below 0.5 even
    when there is nothing to detect."""
    from sklearn.linear_model import LogisticRegression

    if min(len(xho), len(xsy)) < 4:
        return float("nan")
    rng = np.random.default_rng(_seed_int(seed, 60))
    aucs = []
    for _ in range(repeats):
        hr, sr = rng.permutation(len(xho)), rng.permutation(len(xsy))
        halves = [
            (hr[: len(hr) // 2], sr[: len(sr) // 2]),
            (hr[len(hr) // 2 :], sr[len(sr) // 2 :]),
        ]
        for (fh, fs), (th, ts) in (halves, halves[::-1]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                clf = LogisticRegression(C=0.1, max_iter=2000).fit(
                    np.concatenate([xho[fh], xsy[fs]]), np.r_[np.zeros(len(fh)), np.ones(len(fs))]
                )
            score = clf.decision_function(np.concatenate([xho[th], xsy[ts]]))
            aucs.append(_rank_auroc(np.r_[np.zeros(len(th)), np.ones(len(ts))], score))
    return float(np.nanmean(aucs))


def _auroc(task: str, y: np.ndarray, p: np.ndarray) -> float:
    """AUROC of probabilities ``p`` (n, k): binary by ranks (fast enough for the
    bootstrap), multiclass one-vs-rest macro (holomed's scoring); NaN with one class."""
    if task != "binary":
        return float(compute_metrics(task, y, p)["auroc"])
    return _rank_auroc(y, p[:, 1])


def _rank_auroc(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos = np.asarray(y) == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _ci(vals: list[float]) -> list[float]:
    v = np.asarray([x for x in vals if np.isfinite(x)])
    return np.quantile(v, [0.025, 0.975]).tolist() if len(v) else [float("nan")] * 2


def _utility(
    spec: Spec,
    train: Cohort,
    hold: Cohort,
    synthetic: Cohort,
    learners: tuple[str, ...],
    n_bootstrap: int,
    seed: int,
    names: list[str],
) -> dict[str, Any]:
    y = hold.y.astype(int)
    out: dict[str, Any] = {
        "metric": "auroc",
        "holdout_patients": len(hold),
        "scored_on": "real holdout patients only; no synthetic patient is ever scored",
        "learners": {},
    }
    for name in learners:
        probs = {}
        for side, data in (("train_on_real", train), ("train_on_synthetic", synthetic)):
            cand = make_candidate(spec, name, seed=seed, modalities=names).fit(data)
            probs[side] = np.asarray(cand.predict_proba(hold), dtype=float)
        res: dict[str, Any] = {}
        boots: dict[str, list[float]] = {s: [] for s in probs}
        for idx in resamples(len(y), n_bootstrap, seed, y):
            for s, p in probs.items():
                boots[s].append(_auroc(train.task, y[idx], p[idx]))
        for s, p in probs.items():
            res[s] = {"auroc": _auroc(train.task, y, p), "ci": _ci(boots[s])}
        diff = [
            a - b for a, b in zip(boots["train_on_synthetic"], boots["train_on_real"], strict=True)
        ]
        res["difference"] = {
            "auroc": res["train_on_synthetic"]["auroc"] - res["train_on_real"]["auroc"],
            "ci": _ci(diff),
            "note": "synthetic minus real; paired bootstrap over the same holdout resamples",
        }
        out["learners"][name] = res
    return out


def _close_limit(m: int) -> float:
    """The most synthetic records that may sit below the holdout's 5th-percentile DCR:
    ``CLOSE_LIMIT`` (15 %; 5 % is expected), or more when the holdout is small enough for
    chance to reach it: the 99th percentile of the share under no difference, where the
    empirical 5th percentile of ``m`` holdout distances, the ``r``-th smallest, sits at a
    Beta(r, m - r + 1) quantile of the true distribution."""
    from scipy.stats import beta

    r = max(1, int(np.ceil(0.05 * m)))
    return float(max(CLOSE_LIMIT, beta.ppf(0.99, r, m - r + 1)))


def _privacy(
    xtr: np.ndarray, xho: np.ndarray, xsy: np.ndarray, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    from sklearn.neighbors import NearestNeighbors

    to_train = NearestNeighbors(n_neighbors=1).fit(xtr)
    dcr_syn = to_train.kneighbors(xsy)[0][:, 0]
    dcr_hold = to_train.kneighbors(xho)[0][:, 0]
    scale = float(np.median(dcr_hold)) or 1.0
    # a copy, up to float32 rounding of values read back from CSV (~1e-7 here)
    exact = int((dcr_syn <= 1e-6 * max(scale, 1.0)).sum())
    p5 = float(np.quantile(dcr_hold, 0.05))
    close = float((dcr_syn < p5).mean())
    close_limit = _close_limit(len(dcr_hold))
    to_syn = NearestNeighbors(n_neighbors=1).fit(xsy)
    d_member = to_syn.kneighbors(xtr)[0][:, 0]
    d_non = to_syn.kneighbors(xho)[0][:, 0]
    lab = np.r_[np.ones(len(d_member)), np.zeros(len(d_non))].astype(int)
    score = -np.r_[d_member, d_non]  # nearer to a synthetic record = more likely a member

    def auc(idx: np.ndarray) -> float:
        return _rank_auroc(lab[idx], score[idx])

    mia = auc(np.arange(len(lab)))
    boots = [auc(idx) for idx in resamples(len(lab), n_bootstrap, seed, lab)]
    flags = []
    if exact:
        flags.append(f"{exact} synthetic record(s) copy a training patient exactly")
    if mia > MEMBERSHIP_LIMIT:
        flags.append(f"membership-inference AUROC {mia:.3f} > {MEMBERSHIP_LIMIT}")
    if close > close_limit:
        flags.append(
            f"{close:.0%} of synthetic records are closer to a training patient than the "
            f"closest 5% of real holdout patients (limit {close_limit:.0%})"
        )

    def q(d: np.ndarray) -> dict[str, float]:
        return {
            "p5": float(np.quantile(d, 0.05)),
            "median": float(np.median(d)),
            "mean": float(d.mean()),
        }

    return {
        "space": "standardised features fitted on the real training patients "
        "(absent modality = 0 + presence indicator); Euclidean",
        "dcr": {
            "synthetic_to_train": q(dcr_syn),
            "holdout_to_train": q(dcr_hold),
            "median_ratio": float(np.median(dcr_syn) / scale),
            "exact_copies": exact,
            "closer_than_holdout_p5": close,
        },
        "membership": {
            "attack": "distance to the nearest synthetic record; members = real training "
            "patients, non-members = real holdout patients",
            "auroc": mia,
            "ci": _ci(boots),
            "members": int(len(d_member)),
            "non_members": int(len(d_non)),
        },
        "limits": {"membership_auroc": MEMBERSHIP_LIMIT, "closer_than_holdout_p5": close_limit},
        "flags": flags,
        "passed": not flags,
    }


def evaluate_synthetic(
    spec: Spec,
    train: Cohort,
    holdout: Cohort,
    synthetic: Cohort,
    learners: tuple[str, ...] = ("lr_early",),
    n_bootstrap: int = 1000,
    seed: int = 0,
    modalities: list[str] | None = None,
) -> dict[str, Any]:
    """Fidelity, utility and privacy of ``synthetic`` against the real ``train`` patients
    it was generated from and a real ``holdout`` it never saw (module doc). Works for any
    synthetic cohort with the same modalities, whatever made it."""
    names = modalities or [m for m in train.modalities if m in synthetic.modalities]
    missing = [m for m in names if m not in synthetic.modalities]
    if missing:
        raise SynthesisError(f"the synthetic cohort lacks modalities {missing}")
    per_modality, per_feature = {}, {}
    ks_s, ks_h, w_s = [], [], []
    for m in names:
        real = _present_frame(train, m)
        syn, ref = _present_frame(synthetic, m), _present_frame(holdout, m)
        ds, dh = _distances(real, syn), _distances(real, ref)
        per_feature[m] = ds
        per_modality[m] = {
            "synthetic": _summ(ds),
            "holdout_reference": _summ(dh),
            "presence": {
                "real_train": float(train.modalities[m].present.mean()),
                "synthetic": float(synthetic.modalities[m].present.mean()),
            },
        }
        ks_s += [v["ks"] for v in ds.values() if "ks" in v]
        ks_h += [v["ks"] for v in dh.values() if "ks" in v]
        w_s += [v["wasserstein_sd"] for v in ds.values() if "ks" in v]
    jr, js, jh = (_numeric_join(c, names) for c in (train, synthetic, holdout))
    corr_s, corr_h = _corr_diff(jr, js, names), _corr_diff(jr, jh, names)
    space = _feature_space(train, names, spec)
    xtr, xho, xsy = space(train), space(holdout), space(synthetic)
    k = len(train.classes or [])
    fidelity = {
        "summary": {
            "ks_mean": float(np.mean(ks_s)) if ks_s else float("nan"),
            "ks_mean_reference": float(np.mean(ks_h)) if ks_h else float("nan"),
            "wasserstein_sd_mean": float(np.mean(w_s)) if w_s else float("nan"),
            "corr_mad": corr_s["all"],
            "corr_mad_reference": corr_h["all"],
            "detection_auroc": _detection(xho, xsy, seed),
            "detection_auroc_reference": _detection(xho, xtr, seed),
        },
        "reference": "the same measure for the real holdout against the real training "
        f"patients ({len(holdout)} vs {len(train)}): the sampling noise of real data",
        "correlation": {"synthetic": corr_s, "holdout_reference": corr_h},
        "class_balance": {
            "real_train": np.bincount(train.y.astype(int), minlength=k).tolist(),
            "synthetic": np.bincount(synthetic.y.astype(int), minlength=k).tolist(),
            "classes": list(train.classes or []),
        },
        "per_modality": per_modality,
        "per_feature": per_feature,
    }
    utility = _utility(spec, train, holdout, synthetic, learners, n_bootstrap, seed, names)
    privacy = _privacy(xtr, xho, xsy, n_bootstrap, seed)
    return {"fidelity": fidelity, "utility": utility, "privacy": privacy}


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The short printed summary of a report."""
    f, u, p = report["fidelity"]["summary"], report["utility"], report["privacy"]
    lines = [
        f"{report['patients']['synthetic']} SYNTHETIC patients ({report['model']}, seed "
        f"{report['seed']}) from {report['split']['train_patients']} training patients of "
        f"{report['source_dataset']!r}; fit {report['seconds']['fit']:.1f} s, sample "
        f"{report['seconds']['sample']:.1f} s",
        f"fidelity: KS mean {f['ks_mean']:.3f} (real holdout vs train "
        f"{f['ks_mean_reference']:.3f}); "
        f"correlation |diff| {f['corr_mad']:.3f} ({f['corr_mad_reference']:.3f}); "
        f"detection AUROC {f['detection_auroc']:.3f} (real train vs holdout "
        f"{f['detection_auroc_reference']:.3f})",
    ]
    for name, v in u["learners"].items():
        r, s, d = v["train_on_real"], v["train_on_synthetic"], v["difference"]
        lines.append(
            f"utility {name} (AUROC, {u['holdout_patients']} real holdout patients): real "
            f"{r['auroc']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}], synthetic {s['auroc']:.3f} "
            f"[{s['ci'][0]:.3f}, {s['ci'][1]:.3f}], diff {d['auroc']:+.3f} "
            f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]"
        )
    m, dcr = p["membership"], p["dcr"]
    lines.append(
        f"privacy: membership AUROC {m['auroc']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]; "
        f"DCR median {dcr['synthetic_to_train']['median']:.3g} (holdout "
        f"{dcr['holdout_to_train']['median']:.3g}); exact copies {dcr['exact_copies']}; "
        f"closer than holdout p5 {dcr['closer_than_holdout_p5']:.1%} -> "
        + ("passed" if p["passed"] else "FAILED")
    )
    return lines
