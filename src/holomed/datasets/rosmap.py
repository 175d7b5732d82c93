"""ROSMAP multi-omics as preprocessed and split by MOGONET (Wang et al., Nat Commun
2021): mRNA, DNA methylation and miRNA (200 features each), Alzheimer's disease vs
normal control, 245 train / 106 test. Files as published in the MOGONET repository;
they carry no sample ids, so ids are ``ROSMAP-tr-0000`` / ``ROSMAP-te-0000`` by row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from holomed.datasets.base import Dataset, register_dataset

OMICS = {"1": "mrna", "2": "methylation", "3": "mirna"}


@dataclass
class Rosmap(Dataset):
    def frames(self, **options) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        folder = self.locate(download=options.get("download", True))
        parts = {"tr": "train", "te": "test"}
        ids = {}
        labels = []
        for p, split in parts.items():
            y = np.loadtxt(folder / f"labels_{p}.csv").astype(int)
            ids[p] = [f"ROSMAP-{p}-{i:04d}" for i in range(len(y))]
            labels.append(
                pd.DataFrame({"label": np.where(y == 1, "AD", "NC"), "split": split}, index=ids[p])
            )
        frames = {}
        for k, name in OMICS.items():
            feat = pd.read_csv(folder / f"{k}_featname.csv", header=None)[0].astype(str).tolist()
            blocks = [
                pd.DataFrame(
                    np.loadtxt(folder / f"{k}_{p}.csv", delimiter=","), index=ids[p], columns=feat
                )
                for p in parts
            ]
            frames[name] = pd.concat(blocks)
        return frames, pd.concat(labels)


ROSMAP = register_dataset(
    Rosmap(
        name="rosmap",
        description="ROSMAP mRNA + methylation + miRNA, AD vs NC, MOGONET split 245/106",
        base_url="https://raw.githubusercontent.com/txWang/MOGONET/"
        "32d9066b7fe289b3f7cdb496a5668834079c274c/ROSMAP/",
        files={
            "1_featname.csv": "1df5c536e47eb0d532abbb8bea6a9361bba01a913e03cd03b8ef06fb7849a660",
            "1_te.csv": "d9d9daf05915556fd13008fb6ad7d88e0c5a8a57e5a985548640d4cd1563712b",
            "1_tr.csv": "37bfcc58da320bf6c37b22617ed821dcfa96ca4abd334adf4d42c8e3375d972b",
            "2_featname.csv": "7431418fb193e02a1c1431f9446ccc227c8818a4d40c1cb72a2b640a0d8d38b7",
            "2_te.csv": "546e9d7f640e54c4c1d6540ed2c1a3adb10497635e7d6b8d4099b4930271ac76",
            "2_tr.csv": "b1d1d20f8793e5f11248218f19493d9a7be366ee5bbbaff585058401976f8a21",
            "3_featname.csv": "2b0b3451af16597ae34342a6abc99e397482fef30a61821a8e8fe7cb69276bae",
            "3_te.csv": "c0d9efd6c35e8c5768b759238c95c64674d7e1e7f76ed07fca6f168d67e676f4",
            "3_tr.csv": "fd8708bc0c41f774209f9e6a49a74c5a9acd510dd62eadc299a18d49ccd9e862",
            "labels_te.csv": "20d728c6f51f79ff5fa7719b960daf22074a0e6e1f3028869042b02ca4e3f68d",
            "labels_tr.csv": "5859aa107dbf406937938ebefbec122d01fea5d41a9bd0292199f4406749e45d",
        },
        licence="MOGONET repository: MIT; ROSMAP data: Rush ADRC / AMP-AD terms, research use",
        citation="Wang et al., Nat Commun 12, 3445 (2021); Bennett et al., J Alzheimers Dis (2018)",
        notes=(
            "Features were pre-selected and min-max scaled by the MOGONET authors on the whole "
            "cohort, so the published split is not free of feature-selection leakage.",
            "351 people: confidence intervals are wide; differences of 0.02-0.03 between "
            "strategies are within noise.",
        ),
    )
)
