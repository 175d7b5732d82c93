"""Readers, one per format. Each returns data indexed by patient id (strings)."""

from holomed.io.tables import read_table

__all__ = ["read_table"]
