"""Error types. Messages name the file, patient or field concerned."""

from __future__ import annotations


class HolomedError(Exception):
    """Base class of holomed's errors."""


class CohortError(HolomedError, ValueError):
    """Data that cannot become a cohort, e.g. ``patient 'P0042' has 3 rows in labs.csv;
    expected 1``."""


class RegistryError(HolomedError, KeyError):
    """An unknown name asked of a registry (fusion, encoder, modality kind, dataset)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class NotFittedError(HolomedError, AttributeError):
    """A fitted attribute (``preprocessors_``, ``task_`` ...) asked of a candidate that
    was not fitted: an AttributeError, so ``hasattr`` still says no."""


class BundleError(HolomedError, ValueError):
    """A saved model directory that cannot be loaded."""


class ResultsError(HolomedError, ValueError):
    """A run's results file (``results.json``) that cannot be read or rendered."""


class PrivacyError(HolomedError, ValueError):
    """De-identification that cannot proceed safely: a missing or short key, an unreadable
    note or DICOM file, a date that cannot be parsed."""
