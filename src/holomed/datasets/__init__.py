"""Public datasets by name: source URLs, checksums and loaders."""

from holomed.datasets.base import DATASETS, Dataset, DatasetError, register_dataset
from holomed.datasets import rosmap  # noqa: E402,F401
from holomed import synthetic  # noqa: E402,F401  (registers 'synthetic')

__all__ = ["DATASETS", "Dataset", "DatasetError", "register_dataset"]
