"""Every family of candidates, registered by name (see :mod:`holomed.candidate`):
neural fusions (``holomed.model.Model``, one name per fusion strategy), classical
learners (``lr_early``, ``lr_late``, ``gbm``), stacking (``stack``) and ensembles
(``ensemble``, ``bag``)."""

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
from holomed.candidates.ensemble import Ensemble, blend, caruana
from holomed.candidates.stacking import Stack
from holomed.model import Model

__all__ = [
    "CANDIDATES",
    "CLASSICAL",
    "Candidate",
    "Classical",
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
    "make_candidate",
    "register_candidate",
]
