"""Clinical survival tables shipped inside scikit-survival (no download): one tabular
modality plus a time-to-event target (columns ``time``, ``event``).

- ``gbsg2``: German Breast Cancer Study Group 2 (Schumacher et al. 1994), 686 women with
  node-positive breast cancer; recurrence-free survival in days.
- ``whas500``: Worcester Heart Attack Study, 500 patients; survival in days after a
  myocardial infarction.
- ``flchain``: serum free light chains (Dispenzieri et al. 2012), 7,874 residents of
  Olmsted County; survival in days. ``chapter`` (the cause of death) is an outcome and
  is dropped.

Each table keeps its own columns; categorical columns stay text so the tabular
preprocessing one-hot encodes them. A ``split`` column (25 % test, seeded by
``dataset_options.seed``) allows a predefined split; ``kfold`` ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from holomed.datasets.base import Dataset, DatasetError, register_dataset

LOADERS = {
    "gbsg2": ("load_gbsg2", "cens", "time", ()),
    "whas500": ("load_whas500", "fstat", "lenfol", ()),
    "flchain": ("load_flchain", "death", "futime", ("chapter",)),
}


@dataclass
class SurvivalTable(Dataset):
    table: str = ""

    def frames(self, **options: Any) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        import sksurv.datasets as skd

        loader, event_col, time_col, drop = LOADERS[self.table]
        try:
            x, y = getattr(skd, loader)()
        except (OSError, ValueError) as err:  # a broken scikit-survival install
            raise DatasetError(
                f"dataset {self.name!r}: scikit-survival cannot read it: {err}"
            ) from None
        ids = [f"{self.name}-{i:05d}" for i in range(len(x))]
        x = x.drop(columns=[c for c in drop if c in x.columns]).copy()
        for c in x.columns:
            if isinstance(x[c].dtype, pd.CategoricalDtype):
                x[c] = x[c].astype(object).where(x[c].notna(), None)
        x.index = ids
        rng = np.random.default_rng(int(options.get("seed", 0)))
        target = pd.DataFrame(
            {
                "time": np.asarray(y[time_col], dtype=float),
                "event": np.asarray(y[event_col], dtype=float),
                "split": np.where(rng.random(len(ids)) < 0.25, "test", "train"),
            },
            index=ids,
        )
        return {"clinical": x}, target


for _name, _desc in {
    "gbsg2": "GBSG2 breast cancer, recurrence-free survival (scikit-survival's copy)",
    "whas500": "Worcester Heart Attack Study, 500 patients (scikit-survival's copy)",
    "flchain": "serum free light chains, Olmsted County (scikit-survival's copy)",
}.items():
    register_dataset(
        SurvivalTable(
            name=_name,
            description=_desc,
            table=_name,
            bundled="in scikit-survival (no download)",
            options=("seed",),
        )
    )
