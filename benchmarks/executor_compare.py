"""Largest difference between two runs' predictions (predictions.csv of compare)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

a, b = (pd.read_csv(p, dtype={"id": str}) for p in sys.argv[1:3])
num = [c for c in a.columns if c in b.columns and pd.api.types.is_numeric_dtype(a[c])]
keys = [c for c in a.columns if c not in num]
a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
diff = np.nanmax(np.abs(a[num].to_numpy(float) - b[num].to_numpy(float)))
print(f"rows {len(a)} / {len(b)}; max |difference| over {len(num)} numeric columns: {diff:.3g}")
