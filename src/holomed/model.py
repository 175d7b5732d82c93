"""The estimator: ``Model(spec).fit(train, val=None)``, ``.predict_proba(cohort)``,
``.evaluate(cohort)``, ``.explain(cohort)``, ``.save(dir)``; ``holomed.load(dir)``.

scikit-learn conventions: ``__init__`` stores its arguments and does nothing else,
``fit`` returns ``self``, learned state ends in ``_``. Preprocessors are fitted on the
training patients (the part not carved off for validation) only.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from holomed.cohort import Cohort, carve_validation
from holomed.errors import CohortError
from holomed.evaluation.calibration import Calibrator
from holomed.evaluation.metrics import compute_metrics
from holomed.fusion import get_fusion
from holomed.modalities import Preprocessor, get_modality
from holomed.network import MultimodalNet
from holomed.spec import Spec, SpecError
from holomed.tasks import Task
from holomed.training import CohortTensors, train


def fit_preprocessors(modality_specs: list, cohort: Cohort, seed: int) -> dict[str, Preprocessor]:
    """One preprocessor per modality, built from the spec's options and fitted on the
    present rows of ``cohort`` (training patients only)."""
    out: dict[str, Preprocessor] = {}
    for m in modality_specs:
        if m.name not in cohort.modalities:
            raise CohortError(f"training cohort lacks modality {m.name!r}")
        opts = dict(m.preprocessing)
        pcls = get_modality(m.kind).preprocessor
        if "seed" in inspect.signature(pcls.__init__).parameters:
            opts.setdefault("seed", seed)
        try:
            pre = pcls(**opts)
        except TypeError as err:
            raise SpecError(f"modalities.{m.name}.preprocessing: {err}") from None
        try:
            out[m.name] = pre.fit(cohort.modalities[m.name])
        except ValueError as err:
            raise CohortError(f"modality {m.name!r}: {err}") from None
    return out


def transform_cohort(
    preprocessors: dict[str, Preprocessor], cohort: Cohort
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Preprocessed inputs (n, p) per modality and presence masks; a modality the
    cohort lacks is absent for everyone."""
    x, present = {}, {}
    n = len(cohort)
    for name, pre in preprocessors.items():
        if name in cohort.modalities:
            data = cohort.modalities[name]
            try:
                x[name] = pre.transform(data)
            except ValueError as err:
                raise CohortError(f"modality {name!r}: {err}") from None
            present[name] = data.present.copy()
        else:
            x[name] = np.full((n, *pre.out_shape), np.nan, np.float32)
            present[name] = np.zeros(n, bool)
    return x, present


class Model:
    """A multimodal model described by a :class:`~holomed.spec.Spec`.

    ``fusion`` and ``seed`` override the spec's ``fusion.name`` and ``training.seed``.
    """

    def __init__(
        self,
        spec: Spec,
        fusion: str | None = None,
        seed: int | None = None,
        modalities: list[str] | None = None,
    ) -> None:
        self.spec = spec
        self.fusion = fusion
        self.seed = seed
        self.modalities = modalities

    # -- configuration -------------------------------------------------------------
    @property
    def fusion_name(self) -> str:
        return self.fusion or self.spec.fusion.name

    @property
    def seed_(self) -> int:
        return self.spec.training.seed if self.seed is None else self.seed

    def _modality_specs(self):
        names = self.modalities or self.spec.modality_names
        unknown = [n for n in names if n not in self.spec.modality_names]
        if unknown:
            raise SpecError(f"modalities {unknown} are not in the spec")
        return [m for m in self.spec.modalities if m.name in names]

    def _fusion_kwargs(self) -> dict[str, Any]:
        f = self.spec.fusion
        kw = {"hidden": f.hidden, "dropout": f.dropout, "imputation": f.imputation}
        # plain options belong to the spec's strategy; 'NAME.option' to strategy NAME
        if self.fusion_name == f.name:
            kw.update({k: v for k, v in f.options.items() if "." not in k})
        prefix = self.fusion_name + "."
        kw.update({k[len(prefix) :]: v for k, v in f.options.items() if k.startswith(prefix)})
        fcls = get_fusion(self.fusion_name)
        params = inspect.signature(fcls.__init__).parameters
        if "kinds" in params and "kinds" not in kw:
            kw["kinds"] = {m.name: m.kind for m in self._modality_specs()}
        used_names = {m.name for m in self._modality_specs()}
        for key in ("guide", "order"):  # guided / gradual: names must exist in the spec
            if kw.get(key) is None:
                continue
            named = [kw[key]] if isinstance(kw[key], str) else list(kw[key])
            unknown = set(named) - set(self.spec.modality_names)
            if unknown:
                raise SpecError(
                    f"fusion.options.{key}: unknown modalities {sorted(unknown)}; "
                    f"expected among {self.spec.modality_names}"
                )
            kept = [n for n in named if n in used_names]  # ablations may remove some
            kw[key] = (kept[0] if kept else None) if isinstance(kw[key], str) else kept
        if kw.get("groups") is not None:  # hybrid groups: keep the modalities in use
            used = {m.name for m in self._modality_specs()}
            unknown = {n for g in kw["groups"] for n in g} - set(self.spec.modality_names)
            if unknown:
                raise SpecError(f"fusion.options.groups: unknown modalities {sorted(unknown)}")
            kw["groups"] = [[n for n in g if n in used] for g in kw["groups"]]
        return kw

    def _build_net(self) -> MultimodalNet:
        encoders = {
            m.name: (m.encoder.name, dict(m.encoder.options)) for m in self._modality_specs()
        }
        torch.manual_seed(self.seed_)
        return MultimodalNet(
            self.in_dims_,
            encoders,
            self.fusion_name,
            self._fusion_kwargs(),
            self.task_.n_outputs,
            in_sizes=getattr(self, "in_sizes_", None),
        )

    # -- data ------------------------------------------------------------------------
    def _arrays(self, cohort: Cohort) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return transform_cohort(self.preprocessors_, cohort)

    # -- estimator API -------------------------------------------------------------
    def fit(self, train_cohort: Cohort, val: Cohort | None = None) -> Model:
        t0 = time.perf_counter()
        cfg = self.spec.training
        if train_cohort.y is None:
            raise CohortError("fit needs a cohort with labels")
        if val is None:
            a, b = carve_validation(
                train_cohort.y, cfg.val_fraction, self.seed_, train_cohort.task, train_cohort.groups
            )
            fit_c, val_c = train_cohort.subset(a), (train_cohort.subset(b) if len(b) else None)
        else:
            fit_c, val_c = train_cohort, val
        self.preprocessors_ = fit_preprocessors(self._modality_specs(), fit_c, self.seed_)
        self.in_dims_ = {n: p.out_dim for n, p in self.preprocessors_.items()}
        self.in_sizes_ = {n: int(np.prod(p.out_shape)) for n, p in self.preprocessors_.items()}
        n_classes = len(train_cohort.classes or []) or 1
        self.task_ = Task.fit(train_cohort.task, fit_c.y, n_classes, cfg.class_weights)
        self.classes_ = train_cohort.classes
        self.net_ = self._build_net()
        ds = CohortTensors(*self._arrays(fit_c), fit_c.y)
        val_arrays = self._arrays(val_c) if val_c is not None else None
        vds = CohortTensors(*val_arrays, val_c.y) if val_c is not None else None
        self.history_ = train(
            self.net_,
            self.task_,
            ds,
            vds,
            cfg,
            self.spec.fusion.modality_dropout,
            self.seed_,
            cfg.unimodal_loss_weight,
        )
        self.val_ids_ = [] if val_c is None else val_c.ids.tolist()
        self.calibrator_ = Calibrator("none")
        if val_c is not None and self.task_.name != "regression":
            val_logits = self._logits(*val_arrays)  # type: ignore[misc]
            self.calibrator_ = Calibrator(cfg.calibration).fit(val_logits, val_c.y, self.task_.name)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _logits(
        self, x: dict[str, np.ndarray], present: dict[str, np.ndarray], batch_size: int = 8192
    ) -> torch.Tensor:
        ds = CohortTensors(x, present, None)
        if ds.lazy:  # rows read from disk per batch: keep batches small, memory flat
            batch_size = min(batch_size, self.spec.training.batch_size)
        self.net_.eval()
        outs = []
        with torch.inference_mode():
            for s in range(0, len(ds), batch_size):
                b = ds.__getitems__(list(range(s, min(s + batch_size, len(ds)))))
                outs.append(self.net_(b["x"], b["present"]))
        return torch.cat(outs) if outs else torch.zeros(0, self.task_.n_outputs)

    def _output(self, logits: torch.Tensor, calibrated: bool = True) -> np.ndarray:
        cal = getattr(self, "calibrator_", None)
        if not calibrated or cal is None:
            return self.task_.output(logits)
        return cal.proba(self.task_.output(cal.logits(logits)))

    def predict_proba(self, cohort: Cohort, calibrated: bool = True) -> np.ndarray:
        """Class probabilities (n, K), recalibrated on the validation patients unless
        ``calibrated=False``; for regression, predictions (n,)."""
        return self._output(self._logits(*self._arrays(cohort)), calibrated)

    def predict(self, cohort: Cohort) -> np.ndarray:
        out = self.predict_proba(cohort)
        if self.task_.name == "multilabel":
            return (out >= 0.5).astype(int)
        return out if self.task_.name == "regression" else out.argmax(1)

    def evaluate(self, cohort: Cohort) -> dict[str, float]:
        if cohort.y is None:
            raise CohortError("evaluate needs a cohort with labels")
        return compute_metrics(self.task_.name, cohort.y, self.predict_proba(cohort))

    def explain(self, cohort: Cohort, top_k: int = 15) -> dict[str, Any]:
        """Why these predictions: per-patient and global modality Shapley values with
        leave-one-out deltas, the fusion's modality weights (if it has them), and the top
        features per modality by Integrated Gradients."""
        from holomed.evaluation.trust import attention_readout
        from holomed.explain.features import integrated_gradients, top_features
        from holomed.explain.modality import modality_shapley

        names = {k: p.feature_names_out_ for k, p in self.preprocessors_.items()}
        return {
            "contributions": modality_shapley(self, cohort),
            "attention": attention_readout(self, cohort, n_examples=len(cohort)),
            "features": top_features(integrated_gradients(self, cohort), names, top_k),
        }

    # -- persistence -----------------------------------------------------------------
    def save(self, path: str | Path, card: dict[str, Any] | None = None) -> Path:
        from holomed.bundle import save_bundle

        return save_bundle(self, Path(path), card)


def load(path: str | Path) -> Model:
    """Load a bundle saved by :meth:`Model.save` (no code from the bundle is run)."""
    from holomed.bundle import load_bundle

    return load_bundle(Path(path))
