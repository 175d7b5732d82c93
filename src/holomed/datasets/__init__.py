"""Public datasets by name: source URLs, checksums and loaders."""

from holomed import synthetic  # noqa: E402,F401  (registers 'synthetic')
from holomed.datasets import (  # noqa: E402,F401
    covid_cxr,
    cpsc2018,
    physionet2012,
    rosmap,
    sleep_edf,
    survival_tables,
)
from holomed.datasets.base import DATASETS, Dataset, DatasetError, register_dataset

__all__ = ["DATASETS", "Dataset", "DatasetError", "register_dataset"]
