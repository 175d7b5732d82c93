"""Every family of candidates, registered by name (see :mod:`holomed.candidate`):
neural fusions (``holomed.model.Model``, one name per fusion strategy), classical
learners (``lr_early``, ``lr_late``, ``lr_l1``, ``gbm``, ``rf``), sparse bilinear
fusion (``lr_cross``), stacking (``stack``) and ensembles
(``ensemble``, ``bag``); survival learners (``cox``, ``coxnet``, ``km``)."""

from pathlib import Path

from holomed.bundle import read_bundle
from holomed.candidate import (
    CANDIDATES,
    CLASSICAL,
    Candidate,
    Param,
    candidate_class,
    candidate_entry,
    candidate_from_state,
    candidate_names,
    canonical,
    make_candidate,
    register_candidate,
)
from holomed.candidates.classical import Classical, LateLinear
from holomed.candidates.cross import CrossLinear
from holomed.candidates.ensemble import Ensemble, blend, caruana
from holomed.candidates.stacking import Stack
from holomed.candidates.survival import CoxLinear
from holomed.errors import BundleError
from holomed.model import Model


def load_bundle(path: Path | str) -> Candidate:
    """Load a verified bundle (:mod:`holomed.bundle`) as the candidate it holds, of any
    family; no code from the bundle runs."""
    path = Path(path)
    spec, state, arrays, texts = read_bundle(path)
    try:
        return candidate_from_state(spec, state, arrays, texts)
    except BundleError:
        raise
    except ImportError as err:  # this installation lacks what the model needs, not the bundle
        raise BundleError(
            f"{path}: loading this model needs the package {err.name or err} (install it, "
            "e.g. with pip); the bundle itself was not read as damaged"
        ) from None
    except Exception as err:  # noqa: BLE001 - any defect of the saved state is the bundle's
        raise BundleError(
            f"{path / 'state.json'}: does not describe a usable model ({type(err).__name__}: {err})"
        ) from None


load = load_bundle

__all__ = [
    "CANDIDATES",
    "CLASSICAL",
    "Candidate",
    "Classical",
    "CoxLinear",
    "CrossLinear",
    "Ensemble",
    "LateLinear",
    "Model",
    "Param",
    "Stack",
    "blend",
    "candidate_class",
    "candidate_entry",
    "candidate_from_state",
    "candidate_names",
    "canonical",
    "caruana",
    "load",
    "load_bundle",
    "make_candidate",
    "register_candidate",
]
