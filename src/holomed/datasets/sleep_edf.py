"""Sleep-EDF Expanded (PhysioNet ``sleep-edfx`` 1.0.0), sleep-cassette study: whole-night
PSG recordings (``SC4ssN..-PSG.edf``; ``ss`` = subject 00-82, ``N`` = night 1 or 2) and
their R&K hypnograms (``SC4ssN..-Hypnogram.edf``, EDF+ annotations), cut into 30-s
epochs labelled W, N1, N2, N3, REM.

Checksums. This package does not ship the sha256 of the 306 cassette files: they could
not be taken from the files here. The manifest is PhysioNet's own ``SHA256SUMS.txt``
(https://physionet.org/files/sleep-edfx/1.0.0/SHA256SUMS.txt), read in this order:
``frames(manifest=PATH)``; a ``SHA256SUMS.txt`` in the data folder; else downloaded
into the cache. Every PSG/hypnogram file used is verified against it. The manifest
itself is trusted as served over HTTPS by PhysioNet (or as supplied by the user); it is
not pinned by a checksum of its own.

Lookup: ``$HOLOMED_DATA/sleep_edf`` then the cache ``.../sleep_edf``, files either
directly in the folder or under ``sleep-cassette/``; what is missing is downloaded from
``https://physionet.org/files/sleep-edfx/1.0.0/sleep-cassette/`` (the whole study is
about 8 GB; ``subjects=[0, 1]`` or ``records=["SC4001"]`` restrict it).

Epochs. Each hypnogram annotation covers whole 30-s epochs. R&K stages 3 and 4 become
N3; ``Sleep stage ?`` and ``Movement time`` epochs are excluded and counted, as are
epochs running past the end of the PSG. By default wake is trimmed to ``trim_wake``
minutes (30) before the first and after the last sleep epoch, as is usual for the
cassette recordings (about 20 h each, mostly wake); ``trim_wake=None`` keeps all.
The counts per record and reason are the ``reading_report`` of the epochs frame, which
the cohort lists among its exclusions.

``frames()`` returns ``{"psg": epochs}`` (index ``<record>-e<k>``, ``k`` the epoch number
from the start of the hypnogram; columns ``path``, ``start``, ``stop`` in seconds) and
the target frame with ``label`` (stage), ``subject`` (``split: {group: subject}`` keeps
a subject's epochs and nights on one side of every split), ``record`` and ``night``.
Use the modality with kind ``signal`` and ``preprocessing.channels`` = :data:`CHANNELS`.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from holomed.datasets.base import (
    Dataset,
    DatasetError,
    cache_dir,
    download_file,
    register_dataset,
    sha256,
)
from holomed.io.signals import read_annotations, read_edf_header

CHANNELS = ["EEG Fpz-Cz", "EOG horizontal", "EMG submental"]
EPOCH = 30.0  # seconds
STAGES = ("W", "N1", "N2", "N3", "REM")
STAGE_MAP = {
    "Sleep stage W": "W",
    "Sleep stage 1": "N1",
    "Sleep stage 2": "N2",
    "Sleep stage 3": "N3",
    "Sleep stage 4": "N3",
    "Sleep stage R": "REM",
}
UNSCORED = {"Sleep stage ?": "unscored epoch (stage ?)", "Movement time": "movement time"}
SUMS_URL = "https://physionet.org/files/sleep-edfx/1.0.0/SHA256SUMS.txt"
_NAME = re.compile(r"^(SC4(\d\d)(\d))[A-Z0-9]{2}-(PSG|Hypnogram)\.edf$")


def parse_sums(text: str) -> dict[str, dict[str, tuple[str, str]]]:
    """PhysioNet ``SHA256SUMS.txt`` -> ``{record: {"PSG"|"Hypnogram": (file name,
    sha256)}}`` for the sleep-cassette files (other lines are ignored)."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for line in text.splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            continue
        name = Path(parts[1].strip().lstrip("*")).name
        m = _NAME.match(name)
        if m is None or "sleep-cassette" not in parts[1]:
            continue
        out.setdefault(m.group(1), {})[m.group(4)] = (name, parts[0].lower())
    return {r: v for r, v in sorted(out.items()) if len(v) == 2}


def hypnogram_epochs(
    ann: pd.DataFrame, psg_seconds: float, trim_wake: float | None = 30.0
) -> tuple[pd.DataFrame, dict[str, int]]:
    """30-s epochs from hypnogram annotations (``onset``, ``duration``, ``description``
    in seconds, relative to the PSG start): a frame with ``k`` (epoch number),
    ``start``, ``stop`` and ``label``; and the counts of excluded epochs by reason."""
    rows, dropped = [], {}
    for onset, dur, desc in ann[["onset", "duration", "description"]].itertuples(index=False):
        n = int(round(dur / EPOCH))
        stage = STAGE_MAP.get(desc)
        for j in range(n):
            start = onset + j * EPOCH
            if stage is None:
                why = UNSCORED.get(desc, f"unknown annotation {desc!r}")
            elif start + EPOCH > psg_seconds + 1e-6:
                why = "epoch past the end of the PSG"
            else:
                rows.append((int(round(start / EPOCH)), start, start + EPOCH, stage))
                continue
            dropped[why] = dropped.get(why, 0) + 1
    ep = pd.DataFrame(rows, columns=["k", "start", "stop", "label"])
    if trim_wake is not None and len(ep):
        sleep = ep.index[ep["label"] != "W"]
        if len(sleep):
            lo = ep.loc[sleep[0], "start"] - trim_wake * 60
            hi = ep.loc[sleep[-1], "stop"] + trim_wake * 60
            keep = (ep["start"] >= lo) & (ep["stop"] <= hi)
            if (~keep).sum():
                dropped["wake trimmed (beyond trim_wake of sleep)"] = int((~keep).sum())
            ep = ep.loc[keep]
    return ep.reset_index(drop=True), dropped


@dataclass
class SleepEDF(Dataset):
    """Files and checksums come from a manifest at run time (see the module doc)."""

    sums_url: str = SUMS_URL

    # -- files -------------------------------------------------------------------------
    def _manifest(self, manifest: str | Path | None, download: bool) -> str:
        if manifest is not None:
            p = Path(manifest)
            if not p.is_file():
                raise DatasetError(f"{p}: checksum manifest not found")
            return p.read_text()
        for c in self.candidates():
            if (c / "SHA256SUMS.txt").is_file():
                return (c / "SHA256SUMS.txt").read_text()
        if not download:
            raise DatasetError(
                f"dataset {self.name!r}: no SHA256SUMS.txt in "
                f"{[str(c) for c in self.candidates()]}; download {self.sums_url} next to the "
                "files or pass manifest=PATH"
            )
        dest = cache_dir() / self.name / "SHA256SUMS.txt"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(self.sums_url, timeout=60) as r:
                text = r.read().decode()
        except OSError as err:
            raise DatasetError(
                f"dataset {self.name!r}: cannot download {self.sums_url}: {err}. Place "
                f"SHA256SUMS.txt and the files in $HOLOMED_DATA/{self.name} instead."
            ) from None
        dest.write_text(text)
        return text

    def _file(self, name: str, digest: str, download: bool, verify: bool) -> Path:
        for c in self.candidates():
            for f in (c / name, c / "sleep-cassette" / name):
                if f.is_file():
                    if verify and sha256(f) != digest:
                        raise DatasetError(f"{f}: sha256 does not match the published {digest}")
                    return f
        if not download:
            raise DatasetError(
                f"dataset {self.name!r}: {name} not found in {[str(c) for c in self.candidates()]}"
            )
        dest = cache_dir() / self.name / "sleep-cassette" / name
        return download_file(self.base_url + name, dest, digest, self.name)

    # -- frames --------------------------------------------------------------------------
    def frames(self, **options: Any) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        """Options: ``subjects`` (ints), ``records`` (``SC4001`` ...), ``trim_wake``
        (minutes or None), ``manifest`` (path), ``download``, ``verify`` (sha256)."""
        download = options.get("download", True)
        verify = options.get("verify", True)
        pairs = parse_sums(self._manifest(options.get("manifest"), download))
        if options.get("subjects") is not None:
            subjects = {int(s) for s in options["subjects"]}
            pairs = {r: v for r, v in pairs.items() if int(r[3:5]) in subjects}
        if options.get("records") is not None:
            pairs = {r: v for r, v in pairs.items() if r in set(options["records"])}
        if not pairs:
            raise DatasetError(f"dataset {self.name!r}: no sleep-cassette record selected")
        trim = options.get("trim_wake", 30.0)
        epochs, labels, report = [], [], []
        for rec, files in pairs.items():
            psg_file = self._file(*files["PSG"], download, verify)
            hyp = self._file(*files["Hypnogram"], download, verify)
            h = read_edf_header(psg_file)
            ann = read_annotations(hyp)
            shift = _start_shift(ann.attrs.get("start_datetime"), h.meta.get("start_datetime"))
            ann = ann.assign(onset=ann["onset"] + shift)
            ep, dropped = hypnogram_epochs(ann, h.duration, trim)
            report += [
                {"id": rec, "modality": "psg", "reason": why, "scope": "epoch", "count": n}
                for why, n in dropped.items()
            ]
            ids = [f"{rec}-e{k}" for k in ep["k"]]
            epochs.append(
                pd.DataFrame(
                    {
                        "path": str(psg_file),
                        "start": ep["start"].to_numpy(),
                        "stop": ep["stop"].to_numpy(),
                    },
                    index=ids,
                )
            )
            labels.append(
                pd.DataFrame(
                    {
                        "label": ep["label"].to_numpy(),
                        "subject": rec[3:5],
                        "record": rec,
                        "night": int(rec[5]),
                    },
                    index=ids,
                )
            )
        psg = pd.concat(epochs)
        psg.attrs["reading_report"] = report
        return {"psg": psg}, pd.concat(labels)


def _start_shift(hyp_start: Any, psg_start: Any) -> float:
    """Seconds from the PSG's start to the hypnogram's (0 when either is unknown)."""
    try:
        return float((pd.Timestamp(hyp_start) - pd.Timestamp(psg_start)).total_seconds())
    except (TypeError, ValueError):
        return 0.0


SLEEP_EDF = register_dataset(
    SleepEDF(
        name="sleep_edf",
        options=("manifest", "download", "verify", "subjects", "records", "trim_wake"),
        description="Sleep-EDF Expanded sleep-cassette: 30-s PSG epochs (Fpz-Cz EEG, horizontal "
        "EOG, submental EMG) -> W/N1/N2/N3/REM",
        base_url="https://physionet.org/files/sleep-edfx/1.0.0/sleep-cassette/",
        files={},  # from PhysioNet's SHA256SUMS.txt at run time (see the module doc)
        licence="Open Data Commons Attribution License v1.0 (PhysioNet)",
        citation="Kemp et al., IEEE Trans Biomed Eng 47(9):1185 (2000); Goldberger et al., "
        "Circulation 101:e215 (2000)",
        notes=(
            "Epochs of one subject are strongly correlated: split by subject, not by epoch.",
            "The submental EMG of the cassette files is a 1 Hz envelope; it is resampled to "
            "the EEG rate when read.",
        ),
    )
)
