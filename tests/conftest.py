"""Shared fixtures: a tiny synthetic cohort with fast training settings, and access to
the real datasets under ``$HOLOMED_DATA`` (skipped locally when absent, a failure in
CI where the data must be present)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from holomed.cohort import Cohort, build_cohort
from holomed.spec import Spec, parse_spec
from holomed.synthetic import make_synthetic, synthetic_spec_dict

TINY_PATIENTS = 120
TINY_MISSING = 0.3  # chance each omics modality is absent for a patient

# The tensors here are tiny: one intra-op thread is fastest, and it keeps the suite fast
# when other processes load the CPUs (OpenMP's spinning threads can then slow tiny ops
# down a hundredfold).
torch.set_num_threads(int(os.environ.get("HOLOMED_TEST_THREADS", "1")))
# commands run through the CLI bound their threads too (holomed.threads): keep them at one
os.environ.setdefault("HOLOMED_THREADS", os.environ.get("HOLOMED_TEST_THREADS", "1"))


@pytest.fixture(autouse=True)
def _privacy_off_after_each_test():
    """A command run in-process with privacy on (``holomed deid``, a pseudonymising
    spec) switches redaction on for the process, as it should for one command; the
    next test starts without it."""
    yield
    from holomed.privacy.outputs import deactivate

    deactivate()


# -- real data ---------------------------------------------------------------------


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require_shared_data(name: str | None = None) -> Path:
    """``$HOLOMED_DATA`` (or its ``name`` sub-folder) when it exists. When it does not:
    ``pytest.skip`` with the reason, except in CI (``CI=true``), where a missing
    dataset is a failure, never a silent skip."""
    root = os.environ.get("HOLOMED_DATA")
    folder = None if not root else (Path(root) / name if name else Path(root))
    if folder is None or not folder.is_dir():
        what = f"dataset folder {name!r}" if name else "the dataset root"
        msg = (
            f"{what} not found: HOLOMED_DATA={root!r}"
            + ("" if folder is None else f" ({folder} is not a directory)")
            + "; point HOLOMED_DATA at the shared data folder to run this test"
        )
        if _in_ci():
            pytest.fail(msg + " -- in CI the real data must be present", pytrace=False)
        pytest.skip(msg)
    return folder


@pytest.fixture
def shared_data() -> Path:
    """``Path($HOLOMED_DATA)``; skip (locally) or fail (CI=true) when it is absent."""
    return require_shared_data()


@pytest.fixture
def shared_dataset() -> Callable[[str], Path]:
    """``shared_dataset("rosmap") -> $HOLOMED_DATA/rosmap``, with the same skip/fail rule."""
    return require_shared_data


# -- tiny synthetic cohort ---------------------------------------------------------


def tiny_spec_dict(**changes: Any) -> dict[str, Any]:
    """The synthetic spec with settings small enough for unit tests (a fit < 0.2 s)."""
    d = synthetic_spec_dict(n_patients=TINY_PATIENTS, seed=0, missing=TINY_MISSING)
    d["fusion"].update(hidden=16, dropout=0.1, modality_dropout=0.2)
    d["training"].update(max_epochs=5, batch_size=32, lr=0.003, patience=5, val_fraction=0.2)
    d["evaluation"].update(seeds=1, n_bootstrap=0, selection_folds=2)
    for section, values in changes.items():
        d[section] = {**d.get(section, {}), **values} if isinstance(values, dict) else values
    return d


@pytest.fixture(scope="session")
def tiny_spec() -> Spec:
    return parse_spec(tiny_spec_dict(), where="tiny-synthetic")


@pytest.fixture(scope="session")
def tiny_cohort(tiny_spec: Spec) -> Cohort:
    """120 synthetic patients, 4 modalities; each omics modality absent for ~30 %.
    Session-scoped: tests must not modify it in place (use ``subset``/``with_presence``)."""
    frames, target, _ = make_synthetic(n_patients=TINY_PATIENTS, seed=0, missing=TINY_MISSING)
    return build_cohort(tiny_spec, frames, target)


@pytest.fixture(scope="session")
def make_tiny_spec() -> Callable[..., Spec]:
    """``make_tiny_spec(fusion={"name": "late"}, training={...})``: the tiny spec with
    sections updated."""

    def make(**changes: Any) -> Spec:
        return parse_spec(tiny_spec_dict(**changes), where="tiny-synthetic")

    return make
