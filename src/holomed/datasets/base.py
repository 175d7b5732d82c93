"""Public datasets: where their files come from (URL + sha256), where they are looked
up, and how they become cohort frames.

Lookup order for dataset ``name``: ``$HOLOMED_DATA/<name>``, then the cache
(``$HOLOMED_CACHE`` or ``~/.cache/holomed``)/``<name>``, then a download from the
original public source into the cache. Every file is verified against its sha256,
wherever it was found; a mismatch is an error naming the file.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from holomed.errors import HolomedError
from holomed.registry import Registry


class DatasetError(HolomedError):
    pass


def download_file(url: str, target: Path, digest: str, dataset: str, hint: str = "") -> Path:
    """Stream ``url`` into ``target`` through a ``.part`` file and keep it only if its
    sha256 is ``digest``; errors name the dataset and the URL (``hint`` is appended)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=120) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"dataset {dataset!r}: cannot download {url}: {err}.{hint}") from None
    got = sha256(tmp)
    if got != digest:
        tmp.unlink()
        raise DatasetError(f"{url}: downloaded sha256 {got} does not match {digest}")
    tmp.rename(target)
    return target


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get("HOLOMED_CACHE", Path.home() / ".cache" / "holomed"))


@dataclass
class Dataset:
    """A dataset's files: ``{file name: sha256}`` downloaded from ``base_url + name``."""

    name: str
    description: str
    base_url: str = ""
    files: dict[str, str] = field(default_factory=dict)
    licence: str = ""
    citation: str = ""
    synthetic: bool = False
    notes: tuple[str, ...] = ()
    # where the data ship with an installed package instead of a download (e.g. the
    # clinical survival tables inside scikit-survival)
    bundled: str = ""
    # the ``dataset_options`` its ``frames`` reads; another is refused, never ignored
    # (None: the keyword arguments of its ``frames``, which Python checks)
    options: tuple[str, ...] | None = ("download",)

    def candidates(self) -> list[Path]:
        out = []
        if os.environ.get("HOLOMED_DATA"):
            out.append(Path(os.environ["HOLOMED_DATA"]) / self.name)
        out.append(cache_dir() / self.name)
        return out

    def verify(self, folder: Path) -> Path:
        for fname, digest in self.files.items():
            f = folder / fname
            if not f.exists():
                raise DatasetError(f"{f}: file of dataset {self.name!r} not found")
            got = sha256(f)
            if got != digest:
                raise DatasetError(f"{f}: sha256 {got} does not match the published {digest}")
        return folder

    def locate(self, download: bool = True) -> Path:
        """The verified folder holding this dataset's files (downloading if allowed)."""
        for c in self.candidates():
            if c.is_dir() and all((c / f).exists() for f in self.files):
                return self.verify(c)
        if not download:
            raise DatasetError(
                f"dataset {self.name!r} not found in {[str(c) for c in self.candidates()]}"
            )
        return self.download(cache_dir() / self.name)

    def download(self, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        for fname, digest in self.files.items():
            target = dest / fname
            if target.exists() and sha256(target) == digest:
                continue
            download_file(
                self.base_url + fname,
                target,
                digest,
                self.name,
                f" Place the files in $HOLOMED_DATA/{self.name} instead.",
            )
        return dest

    def frames(self, **options) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        """({modality: frame indexed by id}, target frame indexed by id)."""
        raise NotImplementedError


DATASETS: Registry[Dataset] = Registry("dataset")


def register_dataset(ds: Dataset) -> Dataset:
    DATASETS.register(ds.name)(ds)
    return ds
