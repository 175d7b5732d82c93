"""The estimator: ``Model(spec).fit(train, val=None)``, ``.predict_proba(cohort)``,
``.evaluate(cohort)``, ``.explain(cohort)``, ``.save(dir)``; ``holomed.load(dir)``.

scikit-learn conventions: ``__init__`` stores its arguments and does nothing else,
``fit`` returns ``self``, learned state ends in ``_``. Preprocessors are fitted on the
training patients (the part not carved off for validation) only.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np
import torch

from holomed.candidate import Candidate, Param, register_candidate, require_spec
from holomed.cohort import Cohort, carve_validation
from holomed.encoders.base import FitData
from holomed.errors import CohortError
from holomed.executor import make_executor
from holomed.explain.attention import attention_readout
from holomed.explain.features import integrated_gradients, top_features
from holomed.explain.modality import modality_shapley
from holomed.fusion import fusion_names, get_fusion
from holomed.modalities import Preprocessor, get_modality
from holomed.modalities.store import size_mb, stored_arrays
from holomed.network import MultimodalNet
from holomed.scoring.calibration import Calibrator
from holomed.spec import Spec, SpecError, override_spec, parse_spec
from holomed.survival import Baseline
from holomed.tasks import Task, time_cuts
from holomed.threads import torch_threads_for
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
    if preprocessors and cohort.modalities and not set(preprocessors) & set(cohort.modalities):
        raise CohortError(
            f"the cohort's modalities {sorted(cohort.modalities)} are none of the model's "
            f"{list(preprocessors)}: every patient would be predicted with no data"
        )
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


def masks_within(given: dict[str, np.ndarray], known: dict[str, np.ndarray]) -> dict:
    """Presence masks for masked prediction: ``given`` per modality (a modality it does
    not name keeps its own), never more than the data hold (a mask cannot make an absent
    modality present); a mask of another length is an error naming the modality."""
    out = {}
    for n, have in known.items():
        m = np.asarray(given.get(n, have), dtype=bool)
        if m.shape != have.shape:
            raise ValueError(f"mask of modality {n!r}: {m.shape[0]} rows for {len(have)} patients")
        out[n] = m & have
    return out


class Model(Candidate):
    """A multimodal network described by a :class:`~holomed.spec.Spec`: the neural family
    of candidates, registered under every fusion strategy's name.

    ``fusion`` and ``seed`` override the spec's ``fusion.name`` and ``training.seed``;
    ``params`` are dotted spec paths (``training.lr``) applied at fit time (a search).
    """

    family = "neural"

    def __init__(
        self,
        spec: Spec,
        fusion: str | None = None,
        seed: int | None = None,
        modalities: list[str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        require_spec(spec)
        self.spec = spec
        self.fusion = fusion
        self.seed = seed
        self.modalities = modalities
        self.params = params

    @property
    def name(self) -> str:  # the candidate's registry name
        return self.fusion_name

    @name.setter
    def name(self, value: str) -> None:
        self.fusion = value

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
        st = self.spec.training.store
        if st is None or size_mb(self.preprocessors_, len(cohort)) < st.min_mb:
            return transform_cohort(self.preprocessors_, cohort)

        def executor():  # made only when chunks remain to be transformed
            return make_executor(st.executor, st.workers, st.ray_address)

        root = self.spec.resolve(st.path)
        return stored_arrays(self.preprocessors_, cohort, root, st.chunk, executor)

    # -- estimator API -------------------------------------------------------------
    def fit(self, train_cohort: Cohort, val: Cohort | None = None) -> Model:
        t0 = time.perf_counter()
        if self.params:
            self.spec = override_spec(self.spec, self.params, where="candidate parameters")
            self.params = None
        cfg = self.spec.training
        if train_cohort.y is None:
            raise CohortError("fit needs a cohort with labels")
        if val is None:
            a, b = carve_validation(
                train_cohort.y, cfg.val_fraction, self.seed_, train_cohort.task, train_cohort.groups
            )
            # no validation carve-out: the cohort itself (a copy of every row is memory)
            whole = not len(b) and len(a) == len(train_cohort)
            fit_c = train_cohort if whole else train_cohort.subset(a)
            val_c = train_cohort.subset(b) if len(b) else None
        else:
            fit_c, val_c = train_cohort, val
        self.preprocessors_ = fit_preprocessors(self._modality_specs(), fit_c, self.seed_)
        self.in_dims_ = {n: p.out_dim for n, p in self.preprocessors_.items()}
        self.in_sizes_ = {n: int(np.prod(p.out_shape)) for n, p in self.preprocessors_.items()}
        n_classes = len(train_cohort.classes or []) or 1
        self.task_ = Task.fit(train_cohort.task, fit_c.y, n_classes, cfg.class_weights)
        if self.task_.name == "survival":
            self.task_.extra["horizons"] = list(self.spec.target.horizons)
            if cfg.survival_head == "discrete":
                self.task_.extra.update(head="discrete", cuts=time_cuts(fit_c.y, cfg.time_bins))
        self.classes_ = train_cohort.classes
        self.net_ = self._build_net()
        ds = CohortTensors(*self._arrays(fit_c), fit_c.y)
        self.net_.fit_start(  # encoders fitted from data (e.g. alignment): training rows only
            FitData(
                fetch=ds.__getitems__,
                present={k: v.numpy() for k, v in ds.present.items()},
                y=fit_c.y,
                task=self.task_.name,
                ids=list(fit_c.ids),
                cohort_ids=list(train_cohort.ids),
                groups=fit_c.groups,
                seed=self.seed_,
                encoders={},
            )
        )
        val_arrays = self._arrays(val_c) if val_c is not None else None
        vds = CohortTensors(*val_arrays, val_c.y) if val_c is not None else None
        n_params = sum(p.numel() for p in self.net_.parameters())
        with torch_threads_for(n_params, cfg.threads):
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
        if self.task_.name == "survival" and cfg.survival_head == "cox":
            # curves: Breslow on the training patients
            risk = self._logits(*self._arrays(fit_c))[:, 0].double().numpy()
            self.task_.extra["baseline"] = Baseline.fit(risk, fit_c.y).to_json()
        elif val_c is not None and self.task_.name not in ("regression", "survival"):
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

    def predict_both(self, cohort: Cohort) -> tuple[np.ndarray, np.ndarray]:
        logits = self._logits(*self._arrays(cohort))  # one pass: calibrated and raw from it
        return self._output(logits), self._output(logits, calibrated=False)

    # public names of the network's steps, for explanation and assessment
    def transform(self, cohort: Cohort) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Preprocessed inputs and presence masks of ``cohort``."""
        return self._arrays(cohort)

    def logits(
        self, x: dict[str, np.ndarray], present: dict[str, np.ndarray], batch_size: int = 8192
    ) -> torch.Tensor:
        """Network outputs before the task's link, in batches (inference mode)."""
        return self._logits(x, present, batch_size)

    def modality_specs(self) -> list:
        """The spec entries of the modalities this model uses."""
        return self._modality_specs()

    def output(self, logits: torch.Tensor, calibrated: bool = True) -> np.ndarray:
        return self._output(logits, calibrated)

    def predictor(self, cohort: Cohort):
        x, known = self._arrays(cohort)  # inputs transformed once, masks varied
        return lambda present: self._output(self._logits(x, masks_within(present, known)))

    def predict_present(self, cohort: Cohort, present: dict[str, np.ndarray]) -> np.ndarray:
        return self.predictor(cohort)(present)

    @classmethod
    def search_space(cls, spec: Spec) -> dict[str, Param]:
        space = {
            "training.lr": Param("float", 3e-4, 1e-2, log=True),
            "training.weight_decay": Param("float", 1e-5, 0.1, log=True),
            "fusion.dropout": Param("float", 0.0, 0.6),
            "fusion.hidden": Param("categorical", choices=(16, 32, 64, 128)),
            "training.l1": Param("float", 1e-6, 1e-2, log=True),
        }
        if spec.training.val_fraction == 0:  # no early stopping: the epoch budget regularises
            space["training.max_epochs"] = Param("int", 10, max(20, spec.training.max_epochs))
        return space

    def feature_attributions(self, cohort: Cohort) -> dict[str, np.ndarray]:
        return integrated_gradients(self, cohort)

    def feature_names(self) -> dict[str, list[str]]:
        return {k: p.feature_names_out_ for k, p in self.preprocessors_.items()}

    def describe(self) -> dict[str, Any]:
        return {"history": getattr(self, "history_", {})}

    # -- state (bundle) ----------------------------------------------------------------
    def to_state(self):
        if not hasattr(self, "net_"):
            raise CohortError("the model is not fitted; call fit() before save()")
        arrays = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}
        pre_state = {}
        for name, pre in self.preprocessors_.items():
            meta, arr = pre.get_state()
            pre_state[name] = {"kind": pre.kind, "meta": meta}
            arrays.update({f"pre.{name}.{k}": np.ascontiguousarray(a) for k, a in arr.items()})
        spec = self.spec.model_copy(deep=True)
        if spec.fusion.name != self.fusion_name:  # the saved strategy's own options, unprefixed
            used = self._fusion_kwargs()
            spec.fusion.options = {
                k: used[k] for k in used if k not in ("hidden", "dropout", "imputation", "kinds")
            }
            spec.fusion.name = self.fusion_name
        if not getattr(get_fusion(self.fusion_name), "imputes", True):
            spec.fusion.imputation = "none"  # this strategy never imputes
        spec.training.seed = self.seed_
        meta = {
            "family": self.family,
            "name": self.fusion_name,
            "fusion": self.fusion_name,
            "seed": self.seed_,
            "spec": spec.model_dump(mode="json", exclude={"base_dir"}),
            "modalities": list(self.preprocessors_),
            "in_dims": self.in_dims_,
            "in_sizes": self.in_sizes_,
            "task": self.task_.to_json(),
            "classes": self.classes_,
            "preprocessors": pre_state,
            "history": self.history_,
            "calibration": self.calibrator_.to_json(),
        }
        return meta, arrays, {}

    @classmethod
    def from_state(cls, spec: Spec, meta: dict[str, Any], arrays: dict[str, np.ndarray], texts):
        if "spec" in meta:  # a member's own spec (its strategy, options and seed)
            spec = parse_spec(meta["spec"], where="bundle member spec", base_dir=spec.base_dir)
        model = cls(spec, fusion=meta["fusion"], seed=meta["seed"], modalities=meta["modalities"])
        model.preprocessors_ = {}
        for name in meta["modalities"]:
            ps = meta["preprocessors"][name]
            prefix = f"pre.{name}."
            sub = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            model.preprocessors_[name] = get_modality(ps["kind"]).preprocessor.from_state(
                ps["meta"], sub
            )
        model.in_dims_ = {k: int(v) for k, v in meta["in_dims"].items()}
        model.in_sizes_ = {k: int(v) for k, v in meta.get("in_sizes", meta["in_dims"]).items()}
        model.task_ = Task.from_json(meta["task"])
        model.classes_ = meta["classes"]
        model.history_ = meta.get("history", {})
        model.calibrator_ = Calibrator.from_json(meta.get("calibration"))
        model.val_ids_ = []
        model.net_ = model._build_net()
        net_state = {k[4:]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith("net.")}
        model.net_.load_state_dict(net_state, strict=True)
        model.net_.eval()
        return model

    def explain(self, cohort: Cohort, top_k: int = 15) -> dict[str, Any]:
        """Why these predictions: per-patient and global modality Shapley values with
        leave-one-out deltas, the fusion's modality weights (if it has them), and the top
        features per modality by Integrated Gradients."""
        names = {k: p.feature_names_out_ for k, p in self.preprocessors_.items()}
        return {
            "contributions": modality_shapley(self, cohort),
            "attention": attention_readout(self, cohort, n_examples=len(cohort)),
            "features": top_features(integrated_gradients(self, cohort), names, top_k),
            "features_method": self.attribution_method,
        }

    attribution_method = "integrated gradients (captum), baseline = training mean"


register_candidate(*fusion_names())(Model)
