"""DICOM de-identification: PS3.15 Basic Application Level Confidentiality Profile with the
Retain Longitudinal Temporal Information with Modified Dates option, keyed by one
:class:`~holomed.privacy.keys.PrivacyKey`.

What a de-identified file holds:

- the actions of Table E.1-1 (remove, empty, dummy, new UID) applied by ``dicom-anonymizer``
  to every listed attribute, at the top level and inside every sequence item;
- Patient ID and Patient's Name replaced by the patient's pseudonym (``P-`` + 20 hex);
- every date (DA) and the date part of every date-time (DT) moved by the patient's date
  shift (whole days, the same for all files of the patient, so intervals are kept); times
  of day are kept; Patient's Birth Date is emptied and Patient's Birth Time removed;
- instance UIDs (study, series, SOP instance, frame of reference, references in
  sequences ...) replaced by ``key.uid(uid)``: the same input UID gives the same output UID
  in every file and every run with the same key; SOP class and transfer syntax UIDs, and
  UIDs under the DICOM root ``1.2.840.10008.``, are kept;
- private attributes removed; File Meta Information rebuilt and the 128-byte preamble
  blanked;
- Patient Identity Removed = YES, De-identification Method, and the method codes 113100
  (Basic Application Confidentiality Profile) and 113107 (Retain Longitudinal Temporal
  Information Modified Dates Option); Longitudinal Temporal Information Modified =
  MODIFIED.

Pixel data is never changed. Files whose pixels may show burned-in text (Burned In
Annotation = YES, secondary capture SOP classes, modality OT or SC) are not de-identified:
they are reported as quarantined (and copied to a quarantine folder when one is given).

:func:`check_dicom` is an independent verifier: it carries its own copy of Table E.1-1
(456 attributes, from the standard) and does not use ``dicom-anonymizer``.

Reports hold counts and generic reasons only, never a value read from a file.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import logging
import multiprocessing
import os
import re
import shutil
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from holomed.errors import PrivacyError
from holomed.privacy.keys import PrivacyKey

__all__ = [
    "burned_in_reason",
    "check_dicom",
    "deidentify_dataset",
    "deidentify_dicom",
    "deidentify_dicom_folder",
]

# SOP classes whose pixels commonly carry burned-in text: Secondary Capture and its
# multi-frame variants (single bit, grayscale byte/word, true colour).
SECONDARY_CAPTURE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
BURNED_IN_MODALITIES = frozenset({"OT", "SC"})

DICOM_ROOT = "1.2.840.10008."  # UIDs defined by the standard itself (classes, syntaxes)
PSEUDONYM_RE = re.compile(r"P-[0-9a-f]{20}")
DUMMY_TEXT = "ANONYMIZED"  # dicom-anonymizer's dummy for text VRs (D action)

_METHOD_TEXT = [
    "DICOM PS3.15 Basic Application Level Confidentiality Profile",
    "Retain Longitudinal Temporal Information Modified Dates",
    "holomed keyed pseudonym, date shift and 2.25 UIDs",
]
_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float, Double Float
_PATIENT_ID = 0x00100020
_PATIENT_NAME = 0x00100010
_BIRTH_DATE = 0x00100030
_BIRTH_TIME = 0x00100032
_GPS_TIME_STAMP = 0x00160077  # a DT the standard removes even under the dates option
_UID_KEPT_KEYWORDS = frozenset({"CodingSchemeUID"})


_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("holomed_dicom_quiet", default=False)


class _DropWhileQuiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.get()


_PYDICOM_FILTER = _DropWhileQuiet()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom's warnings and log records while a file is handled: they quote
    values read from the file (UIDs, names)."""
    log = logging.getLogger("pydicom")
    if _PYDICOM_FILTER not in log.filters:
        log.addFilter(_PYDICOM_FILTER)
    token = _QUIET.set(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _QUIET.reset(token)


class _InputError(PrivacyError):
    """A file that cannot be de-identified; ``reason`` is generic (no value, no path)."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (_InputError, (self.path, self.reason))


# ---------------------------------------------------------------------------------------
# reading and writing


def _read(path: Path, parse_all: bool = False) -> Dataset:
    """The data set of ``path``; :class:`PrivacyError` naming the file when it is
    unreadable, not DICOM, or its header is broken. Files without the 128-byte preamble
    are accepted when they parse completely and hold SOP Class UID, Study Instance UID or
    Patient ID. ``parse_all`` converts every element now (damage raises here rather than
    when the element is first used)."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        ds = None
    except FileNotFoundError:
        raise _InputError(path, "file not found") from None
    except IsADirectoryError:
        raise _InputError(path, "is a directory") from None
    except PermissionError:
        raise _InputError(path, "permission denied") from None
    except Exception:  # pydicom raises many types on a damaged header
        raise _InputError(path, "unreadable DICOM header") from None
    if ds is None:
        try:
            ds = pydicom.dcmread(path, force=True)
            looks_dicom = len(ds) > 0 and any(
                t in ds for t in (0x00080016, 0x0020000D, _PATIENT_ID)
            )
        except Exception:
            looks_dicom = False
        if not looks_dicom:
            raise _InputError(path, "not a DICOM file")
        parse_all = True
    if len(ds) == 0:  # pydicom stops quietly at a damaged or truncated header
        raise _InputError(path, "unreadable DICOM header")
    if not parse_all:
        return ds
    try:
        for _ in ds.iterall():  # converts every raw element: damage shows up here
            pass
    except Exception:
        raise _InputError(path, "unreadable DICOM content") from None
    return ds


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") or "").strip() if meta is not None else ""
    if ts:
        return ts
    implicit, little = getattr(ds, "original_encoding", (False, True))
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little in (True, None) else ExplicitVRBigEndian


def _write_atomic(ds: Dataset, dst: Path) -> None:
    """Write ``ds`` to a temporary file in ``dst``'s folder, then rename it onto ``dst``:
    an interrupted run leaves no file at ``dst`` (and no temporary file)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pydicom.dcmwrite(fh, ds, enforce_file_format=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, Exception) and not isinstance(err, PrivacyError):
            raise PrivacyError(f"{dst}: writing failed ({type(err).__name__})") from err
        raise


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------
# dates


_DA_RE = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_DT_RE = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?((?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)([+-]\d{4})?"
)


def _fmt_date(d: _dt.date) -> str:
    return f"{d.year:04d}{d.month:02d}{d.day:02d}"


def _shift_da(value: str, days: int) -> str | None:
    """A DA value (``YYYYMMDD``, old ``YYYY.MM.DD``, or a ``A-B`` range) moved by
    ``days``; None when it cannot be parsed or leaves the calendar."""
    if "-" in value:
        parts = [_shift_da(p, days) if p else "" for p in value.split("-")]
        return None if any(p is None for p in parts) or len(parts) != 2 else "-".join(parts)
    m = _DA_RE.fullmatch(value)
    if not m:
        return None
    try:
        d = _dt.date(int(m[1]), int(m[2]), int(m[3])) + _dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return _fmt_date(d)


def _shift_dt(value: str, days: int) -> str | None:
    """A DT value with its date part moved by ``days`` (time and UTC offset kept; a
    year-only or year-month value keeps its precision); None when unparseable."""
    m = _DT_RE.fullmatch(value)
    if not m:
        return None
    year, month, day = int(m[1]), int(m[2] or 1), int(m[3] or 1)
    if m[4] and not m[3]:
        return None  # a time needs a full date before it
    try:
        d = _dt.date(year, month, day) + _dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    date = _fmt_date(d)[: 4 + (2 if m[2] else 0) + (2 if m[3] else 0)]
    return date + (m[4] or "") + (m[5] or "")


# ---------------------------------------------------------------------------------------
# de-identification


@cache
def _base_rules() -> tuple[dict[tuple[int, ...], tuple[str, Callable[..., None]]], str]:
    """dicom-anonymizer's Table E.1-1 (newest edition it ships): tag -> (action code,
    its action function), and the edition's name."""
    from dicomanonymizer import simpledicomanonymizer as da

    codes = {
        da.replace: "D",
        da.empty: "Z",
        da.delete: "X",
        da.replace_UID: "U",
        da.empty_or_replace: "Z/D",
        da.delete_or_empty: "X/Z",
        da.delete_or_replace: "X/D",
        da.delete_or_empty_or_replace: "X/Z/D",
        da.delete_or_empty_or_replace_UID: "X/Z/U*",
    }
    for edition in ("dicomfields_2026c", "dicomfields_2024b", "dicomfields_2023"):
        try:
            actions = da.initialize_actions(edition)
        except (ValueError, ImportError):
            continue
        return {tag: (codes[fn], fn) for tag, fn in actions.items()}, edition
    raise PrivacyError("dicom-anonymizer ships no known Table E.1-1 edition")


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return not value.strip(b"\x00 " if isinstance(value, bytes) else "\x00 ")
    if isinstance(value, (list, MultiValue, Sequence)):
        return all(_is_empty(v) for v in value)
    return str(value).strip() == ""


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, MultiValue)) else [value]


def _drop_private(ds: Dataset) -> int:
    """Remove private attributes at every level without parsing them; their number."""
    n = 0
    for t in list(ds.keys()):
        if t.is_private:
            del ds[t]
            n += 1
        elif ds[t].VR == "SQ":
            for item in ds[t].value:
                n += _drop_private(item)
    return n


class _Run:
    """One data set's de-identification: the rule table bound to this patient's
    pseudonym, date shift and the key, with counters of what was done."""

    def __init__(self, ds: Dataset, key: PrivacyKey, patient_id: str) -> None:
        self.root = ds
        self.key = key
        self.pseudonym = key.pseudonym(patient_id)
        self.shift = key.date_shift_days(patient_id)
        self.counts: Counter[str] = Counter()
        self.done: set[int] = set()  # ids of sequence items already handled
        base, _ = _base_rules()
        # 2-element tags (group 0002 is rebuilt separately) and repeating-group masks
        self.rules: dict[tuple[int, ...], Callable[[Dataset, Any], None]] = {
            tag: partial(self._apply, code=code, fn=fn)
            for tag, (code, fn) in base.items()
            if tag[0] != 0x0002
        }
        self.by_tag: dict[int, Callable[[Dataset, Any], None]] = {
            (t[0] << 16) | t[1]: fn for t, fn in self.rules.items() if len(t) == 2
        }
        # repeating groups (curves 50xx, overlays 60xx): (group, element, masks) -> action
        self.masks = [(t, fn) for t, fn in self.rules.items() if len(t) == 4]

    # -- actions ------------------------------------------------------------------------

    def _apply(self, ds: Dataset, tag: Any, code: str, fn: Callable[..., None]) -> None:
        """The action ``code`` of Table E.1-1 on ``ds[tag]``, with the overrides of the
        dates option, keyed UIDs and pseudonyms."""
        if tag not in ds:
            return
        elem = ds[tag]
        t = int(elem.tag)
        vr = elem.VR
        if t in (_PATIENT_ID, _PATIENT_NAME):
            self._pseudonymise(ds, elem)
            return
        if t == _BIRTH_DATE:
            if not _is_empty(elem.value):
                elem.value = ""
                self.counts["emptied"] += 1
            return
        if t in (_BIRTH_TIME, _GPS_TIME_STAMP):
            del ds[t]
            self.counts["removed"] += 1
            return
        if vr == "SQ":
            self._sequence(ds, elem, code)
            return
        if code == "X" and vr not in ("DA", "DT", "TM"):
            del ds[t]
            self.counts["removed"] += 1
            return
        if _is_empty(elem.value):
            return
        if vr in ("DA", "DT"):
            self._shift(elem)
        elif vr == "TM":
            self.counts["times_kept"] += 1
        elif vr == "UI":
            self._remap(elem)
        else:
            try:
                fn(ds, tag)
            except NotImplementedError:  # a VR dicom-anonymizer has no dummy for
                del ds[t]
                self.counts["removed"] += 1
                return
            kind = "removed" if t not in ds else "emptied" if "D" not in code else "replaced"
            self.counts[kind] += 1

    def _pseudonymise(self, ds: Dataset, elem: Any) -> None:
        if ds is self.root:
            elem.value = self.pseudonym
        elif int(elem.tag) == _PATIENT_ID and not _is_empty(elem.value):
            elem.value = self.key.pseudonym(str(elem.value))
        else:
            elem.value = ""
        self.counts["pseudonymised"] += 1

    def _sequence(self, ds: Dataset, elem: Any, code: str) -> None:
        if code == "X":
            del ds[elem.tag]
            self.counts["removed"] += 1
        elif code in ("Z", "X/Z"):
            if len(elem.value):
                elem.value = Sequence()
                self.counts["emptied"] += 1
        elif code in ("U", "X/Z/U*"):
            pass  # kept: its items are walked and their UIDs replaced
        elif len(elem.value):  # D, Z/D, X/D, X/Z/D: items kept with dummy values
            self._dummy_items(elem.value)
            self.counts["replaced"] += 1

    def _dummy_items(self, seq: Iterable[Dataset]) -> None:
        from dicomanonymizer.simpledicomanonymizer import replace_element

        for item in seq:
            self.done.add(id(item))
            for t in list(item.keys()):
                act = self.by_tag.get(int(t))
                if act is not None:  # an attribute of the table: its own action first
                    act(item, (t.group, t.element))
                    if t in item and item[t].VR == "SQ":
                        self._walk_items(item[t].value)
                    continue
                e = item[t]
                if e.VR == "SQ":
                    self._dummy_items(e.value)
                elif _is_empty(e.value) or e.VR == "TM":
                    continue
                elif e.VR == "UI":
                    self._generic_uid(e)
                elif e.VR in ("DA", "DT"):
                    self._shift(e)
                else:
                    try:
                        replace_element(e)
                    except NotImplementedError:
                        del item[t]

    def _shift(self, elem: Any) -> None:
        shift = _shift_da if elem.VR == "DA" else _shift_dt
        out = []
        for v in _values(elem.value):
            s = "" if v is None else str(v).strip()
            if not s:
                out.append(s)
                continue
            new = shift(s, self.shift)
            if new is None:
                self.counts["dates_unparseable_emptied"] += 1
                out.append("")
            else:
                self.counts["dates_shifted"] += 1
                out.append(new)
        elem.value = out if len(out) != 1 else out[0]

    def _remap(self, elem: Any) -> None:
        out = []
        for v in _values(elem.value):
            s = "" if v is None else str(v).strip("\x00 ")
            if s:
                self.counts["uids_remapped"] += 1
                s = self.key.uid(s)
            out.append(s)
        elem.value = out if len(out) != 1 else out[0]

    def _generic_uid(self, elem: Any) -> None:
        """A UI attribute outside Table E.1-1: replaced unless it names a class, a
        transfer syntax or a coding scheme, or lies under the DICOM root."""
        kw = elem.keyword or ""
        if kw.endswith(("ClassUID", "SyntaxUID")) or kw in _UID_KEPT_KEYWORDS:
            return
        vals = [str(v).strip("\x00 ") for v in _values(elem.value) if v is not None]
        if all(not v or v.startswith(DICOM_ROOT) for v in vals):
            return
        out = []
        for v in vals:
            if v and not v.startswith(DICOM_ROOT):
                self.counts["uids_remapped"] += 1
                v = self.key.uid(v)
            out.append(v)
        elem.value = out if len(out) != 1 else out[0]

    # -- traversal ----------------------------------------------------------------------

    def _walk(self, ds: Dataset, top: bool) -> None:
        """Below the top level (done by ``anonymize_dataset``): the table in every
        sequence item. At every level: the curve and overlay repeating groups of the
        table, and the VR rules (UIDs, dates) for attributes outside the table."""
        for t in list(ds.keys()):
            if t not in ds or int(t) in _PIXEL_TAGS:
                continue
            g, e = t.group, t.element
            if 0x5000 <= g <= 0x60FF:
                for (g0, e0, gm, em), mask_act in self.masks:
                    if g & gm == g0 & gm and e & em == e0 & em:
                        mask_act(ds, (g, e))
                        break
                if t not in ds:
                    continue
            act = self.by_tag.get(int(t))
            if act is not None and not top:
                act(ds, (t.group, t.element))
                if t not in ds:
                    continue
            elem = ds[t]
            vr = elem.VR
            if vr == "SQ":
                self._walk_items(elem.value)
            elif act is not None or _is_empty(elem.value):
                continue
            elif vr == "UI":
                self._generic_uid(elem)
            elif vr in ("DA", "DT"):
                self._shift(elem)

    def _walk_items(self, seq: Iterable[Dataset]) -> None:
        for item in seq:
            if id(item) not in self.done:
                self.done.add(id(item))
                self._walk(item, top=False)

    def run(self) -> None:
        from dicomanonymizer.simpledicomanonymizer import anonymize_dataset

        ds = self.root
        # private attributes (X) go first, unparsed and at every level, so the rules see
        # fewer elements and dicom-anonymizer need not walk the data set for them again
        self.counts["private_removed"] += _drop_private(ds)
        top_rules = {t: fn for t, fn in self.rules.items() if len(t) == 2}
        anonymize_dataset(
            ds,
            extra_anonymization_rules=None,
            delete_private_tags=False,
            base_rules_gen=lambda: dict(top_rules),
        )
        self._walk(ds, top=True)
        self._mark()

    def _mark(self) -> None:
        ds = self.root
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = list(_METHOD_TEXT)
        items = []
        for value, meaning in _METHOD_CODES:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        # File Meta Information: rebuilt from the de-identified data set (PS3.15 E.1.1 7)
        old = getattr(ds, "file_meta", None)
        meta = FileMetaDataset()
        sop_class = ds.get("SOPClassUID") or (old.get("MediaStorageSOPClassUID") if old else None)
        if sop_class:
            meta.MediaStorageSOPClassUID = sop_class
        sop = ds.get("SOPInstanceUID")
        if not sop and old is not None and old.get("MediaStorageSOPInstanceUID"):
            sop = self.key.uid(str(old.MediaStorageSOPInstanceUID))
        if sop:
            meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = _transfer_syntax(ds)
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "HOLOMED_DEID"
        ds.file_meta = meta
        ds.preamble = b"\x00" * 128


def burned_in_reason(ds: Dataset) -> str | None:
    """Why the pixels of ``ds`` may show burned-in identifying text (Burned In Annotation
    YES, a secondary capture SOP class, modality OT or SC), or None."""
    if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        return "BurnedInAnnotation is YES"
    meta = getattr(ds, "file_meta", None)
    sop = str(ds.get("SOPClassUID", "") or "").strip()
    if not sop and meta is not None:
        sop = str(meta.get("MediaStorageSOPClassUID", "") or "").strip()
    if sop in SECONDARY_CAPTURE_SOP_CLASSES:
        return "secondary capture SOP class (pixels may carry burned-in text)"
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in BURNED_IN_MODALITIES:
        return f"modality {modality} (pixels may carry burned-in text)"
    return None


def _has_pixels(ds: Dataset) -> bool:
    return any(t in ds for t in _PIXEL_TAGS)


def deidentify_dataset(
    ds: Dataset, key: PrivacyKey, patient_id: str | None = None
) -> dict[str, Any]:
    """De-identify ``ds`` in place (see the module docstring; no quarantine check, see
    :func:`burned_in_reason`). ``patient_id`` (default: the data set's Patient ID) sets
    the pseudonym and the date shift. Returns ``{"counts": {action: n}, "no_pixel_data":
    bool}``; :class:`PrivacyError` when no patient id is known."""
    pid = str(patient_id).strip() if patient_id is not None else ""
    if not pid:
        pid = str(ds.get("PatientID", "") or "").strip()
    if not pid:
        raise PrivacyError("no Patient ID in the data set and no patient_id given")
    no_pixels = not _has_pixels(ds)
    run = _Run(ds, key, pid)
    with _quiet():
        run.run()
    return {"counts": dict(sorted(run.counts.items())), "no_pixel_data": no_pixels}


def _original_names(ds: Dataset, key: PrivacyKey, pid: str) -> dict[str, str]:
    """Path-name replacements: the patient ids and the study/series/instance UIDs of
    ``ds`` (read before de-identification) -> their pseudonym / keyed UID."""
    pseudonym = key.pseudonym(pid)
    names = {pid: pseudonym}
    file_pid = str(ds.get("PatientID", "") or "").strip()
    if file_pid:
        names[file_pid] = pseudonym
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        uid = str(ds.get(kw, "") or "").strip("\x00 ")
        if uid:
            names[uid] = key.uid(uid)
    return names


def _rename(rel: Path, names: dict[str, str]) -> Path:
    """``rel`` with every folder or file name equal to a key of ``names`` replaced (a file
    name also when its stem matches, keeping the extension)."""
    parts = []
    for part in rel.parts:
        if part in names:
            part = names[part]
        else:
            p = Path(part)
            if p.suffix and p.stem in names:
                part = names[p.stem] + p.suffix
        parts.append(part)
    return Path(*parts)


def _process(
    src: Path,
    dst_of: Callable[[dict[str, str]], Path],
    key: PrivacyKey,
    patient_of: Callable[[Path, Dataset], str] | str | None,
    quarantine_to: Path | None,
) -> dict[str, Any]:
    """Read, quarantine or de-identify, and write one file."""
    ds = _read(src)
    reason = burned_in_reason(ds)
    if reason is not None:
        if quarantine_to is not None:
            _copy_atomic(src, quarantine_to)
        return {"status": "quarantined", "reason": reason, "counts": {}}
    if callable(patient_of):
        try:
            pid = str(patient_of(src, ds) or "").strip()
        except Exception:
            raise _InputError(src, "patient_of failed") from None
    else:
        pid = str(patient_of or "").strip()
    pid = pid or str(ds.get("PatientID", "") or "").strip()
    if not pid:
        raise _InputError(src, "no Patient ID in the file and none given")
    dst = dst_of(_original_names(ds, key, pid))
    if dst.resolve() == src.resolve():
        raise _InputError(src, "destination is the source file")
    try:
        report = deidentify_dataset(ds, key, pid)
    except PrivacyError:
        raise
    except (OSError, EOFError):  # an element runs past the end of the file
        raise _InputError(src, "unreadable DICOM content") from None
    except Exception as err:  # content dicom-anonymizer or pydicom cannot handle
        raise _InputError(src, f"cannot de-identify ({type(err).__name__})") from None
    _write_atomic(ds, dst)
    return {"status": "deidentified", **report}


def deidentify_dicom(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    key: PrivacyKey,
    patient_id: str | None = None,
    *,
    quarantine_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """De-identify the DICOM file ``src`` into ``dst`` (written atomically: a temporary
    file in ``dst``'s folder renamed at the end). ``patient_id`` (default: the file's
    Patient ID) sets the pseudonym and the date shift.

    Returns ``{"status": "deidentified", "counts": {action: n}, "no_pixel_data": bool}``,
    or ``{"status": "quarantined", "reason": ..., "counts": {}}`` for a file whose pixels
    may carry burned-in text: nothing is written to ``dst`` (a copy of the original goes
    to ``quarantine_dir`` when given). :class:`PrivacyError` naming the file when it is
    unreadable, not DICOM, has a broken header, or has no patient id."""
    src, dst = Path(src), Path(dst)
    q = Path(quarantine_dir) / src.name if quarantine_dir is not None else None
    with _quiet():
        return _process(src, lambda _names: dst, key, patient_id, q)


@dataclass(frozen=True)
class _FolderTask:
    src: Path
    rel: Path
    dst_dir: Path
    quarantine_dir: Path | None
    key: PrivacyKey
    patient_of: Callable[[Path, Dataset], str] | None


def _folder_one(task: _FolderTask) -> dict[str, Any]:
    q = task.quarantine_dir / task.rel if task.quarantine_dir is not None else None
    try:
        with _quiet():
            return _process(
                task.src,
                lambda names: task.dst_dir / _rename(task.rel, names),
                task.key,
                task.patient_of,
                q,
            )
    except _InputError as err:
        return {"status": "failed", "reason": err.reason}
    except PrivacyError:
        return {"status": "failed", "reason": "write failed"}
    except Exception as err:
        return {"status": "failed", "reason": f"unexpected error ({type(err).__name__})"}


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and (path == folder or folder in path.parents)


def deidentify_dicom_folder(
    src_dir: str | os.PathLike[str],
    dst_dir: str | os.PathLike[str],
    key: PrivacyKey,
    patient_of: Callable[[Path, Dataset], str] | None = None,
    quarantine_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """De-identify every file below ``src_dir`` into ``dst_dir``, keeping relative paths
    except that a folder or file name equal to a patient id, or to the file's study,
    series or instance UID, becomes the pseudonym / keyed UID.

    ``patient_of(path, dataset)`` gives a file's patient id (default: its Patient ID);
    with ``workers > 1`` files are processed in that many processes (``patient_of`` must
    then be picklable, e.g. a module-level function). Quarantined files are copied to
    ``quarantine_dir`` under their original relative path when it is given.

    Returns counts only: ``files``, ``deidentified``, ``quarantined``, ``failed``,
    ``quarantine_reasons`` / ``failure_reasons`` ({reason: n}, generic texts),
    ``counts`` (actions summed over files), ``no_pixel_data``, ``seconds`` and
    ``files_per_second``."""
    src_root, dst_root = Path(src_dir), Path(dst_dir)
    if not src_root.is_dir():
        raise PrivacyError(f"{src_root}: not a folder")
    q_root = Path(quarantine_dir) if quarantine_dir is not None else None
    skip = [p.resolve() for p in (dst_root, q_root) if p is not None]
    files = sorted(
        p
        for p in src_root.rglob("*")
        if p.is_file() and not any(_inside(p.resolve(), s) for s in skip)
    )
    tasks = [
        _FolderTask(p, p.relative_to(src_root), dst_root, q_root, key, patient_of) for p in files
    ]
    t0 = time.perf_counter()
    if workers > 1 and len(tasks) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
            chunk = max(1, len(tasks) // (workers * 8))
            results = list(ex.map(_folder_one, tasks, chunksize=chunk))
    else:
        results = [_folder_one(t) for t in tasks]
    seconds = time.perf_counter() - t0
    status = Counter(r["status"] for r in results)
    counts: Counter[str] = Counter()
    for r in results:
        counts.update(r.get("counts", {}))
    return {
        "files": len(results),
        "deidentified": status["deidentified"],
        "quarantined": status["quarantined"],
        "failed": status["failed"],
        "quarantine_reasons": dict(
            Counter(r["reason"] for r in results if r["status"] == "quarantined")
        ),
        "failure_reasons": dict(Counter(r["reason"] for r in results if r["status"] == "failed")),
        "counts": dict(sorted(counts.items())),
        "no_pixel_data": sum(1 for r in results if r.get("no_pixel_data")),
        "workers": max(1, workers),
        "seconds": round(seconds, 4),
        "files_per_second": round(len(results) / seconds, 2) if seconds > 0 else None,
    }


# ---------------------------------------------------------------------------------------
# independent checker

# PS3.15 Table E.1-1, transcribed from the standard: (tag, keyword, Basic Profile action,
# whether the Retain Longitudinal Temporal Information Modified Dates option cleans it
# ("C")). Private attributes (X) and the repeating groups Curve Data (50xx,xxxx), Overlay
# Data (60xx,3000) and Overlay Comments (60xx,4000) (all X) are checked separately.
PROFILE_TABLE: tuple[tuple[int, str, str, bool], ...] = (
    (0x00080050, "AccessionNumber", "Z", False),
    (0x00184000, "AcquisitionComments", "X", False),
    (0x00400555, "AcquisitionContextSequence", "X/Z", False),
    (0x00080022, "AcquisitionDate", "X/Z", True),
    (0x0008002A, "AcquisitionDateTime", "X/Z/D", True),
    (0x00181400, "AcquisitionDeviceProcessingDescription", "X/D", False),
    (0x001811BB, "AcquisitionFieldOfViewLabel", "D", False),
    (0x00189424, "AcquisitionProtocolDescription", "X", False),
    (0x00080032, "AcquisitionTime", "X/Z", True),
    (0x00404035, "ActualHumanPerformersSequence", "X", False),
    (0x001021B0, "AdditionalPatientHistory", "X", False),
    (0x0040A353, "AddressTrial", "X", False),
    (0x00380010, "AdmissionID", "X", False),
    (0x00380020, "AdmittingDate", "X", True),
    (0x00081084, "AdmittingDiagnosesCodeSequence", "X", False),
    (0x00081080, "AdmittingDiagnosesDescription", "X", False),
    (0x00380021, "AdmittingTime", "X", True),
    (0x00001000, "AffectedSOPInstanceUID", "X", False),
    (0x00102110, "Allergies", "X", False),
    (0x40000010, "Arbitrary", "X", False),
    (0x0040A078, "AuthorObserverSequence", "X", False),
    (0x22000005, "BarcodeValue", "X/Z", False),
    (0x300A00C3, "BeamDescription", "X", False),
    (0x300A00DD, "BolusDescription", "X", False),
    (0x00101081, "BranchOfService", "X", False),
    (0x0016004D, "CameraOwnerName", "X", False),
    (0x00181007, "CassetteID", "X", False),
    (0x00120060, "ClinicalTrialCoordinatingCenterName", "Z", False),
    (0x00120082, "ClinicalTrialProtocolEthicsCommitteeApprovalNumber", "X", False),
    (0x00120081, "ClinicalTrialProtocolEthicsCommitteeName", "D", False),
    (0x00120020, "ClinicalTrialProtocolID", "D", False),
    (0x00120021, "ClinicalTrialProtocolName", "Z", False),
    (0x00120072, "ClinicalTrialSeriesDescription", "X", False),
    (0x00120071, "ClinicalTrialSeriesID", "X", False),
    (0x00120030, "ClinicalTrialSiteID", "Z", False),
    (0x00120031, "ClinicalTrialSiteName", "Z", False),
    (0x00120010, "ClinicalTrialSponsorName", "D", False),
    (0x00120040, "ClinicalTrialSubjectID", "D", False),
    (0x00120042, "ClinicalTrialSubjectReadingID", "D", False),
    (0x00120051, "ClinicalTrialTimePointDescription", "X", False),
    (0x00120050, "ClinicalTrialTimePointID", "Z", False),
    (0x00400310, "CommentsOnRadiationDose", "X", False),
    (0x00400280, "CommentsOnThePerformedProcedureStep", "X", False),
    (0x300A02EB, "CompensatorDescription", "X", False),
    (0x00209161, "ConcatenationUID", "U", False),
    (0x3010000F, "ConceptualVolumeCombinationDescription", "Z", False),
    (0x30100017, "ConceptualVolumeDescription", "Z", False),
    (0x30100006, "ConceptualVolumeUID", "U", False),
    (0x00403001, "ConfidentialityConstraintOnPatientDataDescription", "X", False),
    (0x30100013, "ConstituentConceptualVolumeUID", "U", False),
    (0x0008009C, "ConsultingPhysicianName", "Z", False),
    (0x0008009D, "ConsultingPhysicianIdentificationSequence", "X", False),
    (0x0050001B, "ContainerComponentID", "X", False),
    (0x0040051A, "ContainerDescription", "X", False),
    (0x00400512, "ContainerIdentifier", "D", False),
    (0x00700086, "ContentCreatorIdentificationCodeSequence", "X", False),
    (0x00700084, "ContentCreatorName", "Z/D", False),
    (0x00080023, "ContentDate", "Z/D", True),
    (0x0040A730, "ContentSequence", "D", False),
    (0x00080033, "ContentTime", "Z/D", True),
    (0x00180010, "ContrastBolusAgent", "Z/D", False),
    (0x0018A003, "ContributionDescription", "X", False),
    (0x00102150, "CountryOfResidence", "X", False),
    (0x0040A307, "CurrentObserverTrial", "X", False),
    (0x00380300, "CurrentPatientLocation", "X", False),
    (0x00080025, "CurveDate", "X", True),
    (0x00080035, "CurveTime", "X", True),
    (0x0040A07C, "CustodialOrganizationSequence", "X", False),
    (0xFFFCFFFC, "DataSetTrailingPadding", "X", False),
    (0x0018937F, "DecompositionDescription", "X", False),
    (0x00082111, "DerivationDescription", "X", False),
    (0x0018700A, "DetectorID", "X/D", False),
    (0x3010001B, "DeviceAlternateIdentifier", "Z", False),
    (0x00500020, "DeviceDescription", "X", False),
    (0x3010002D, "DeviceLabel", "D", False),
    (0x00181000, "DeviceSerialNumber", "X/Z/D", False),
    (0x0016004B, "DeviceSettingDescription", "X", False),
    (0x00181002, "DeviceUID", "U", False),
    (0xFFFAFFFA, "DigitalSignaturesSequence", "X", False),
    (0x04000100, "DigitalSignatureUID", "U", False),
    (0x00209164, "DimensionOrganizationUID", "U", False),
    (0x00380040, "DischargeDiagnosisDescription", "X", False),
    (0x4008011A, "DistributionAddress", "X", False),
    (0x40080119, "DistributionName", "X", False),
    (0x300A0016, "DoseReferenceDescription", "X", False),
    (0x300A0013, "DoseReferenceUID", "U", False),
    (0x3010006E, "DosimetricObjectiveUID", "U", False),
    (0x00189517, "EndAcquisitionDateTime", "X/D", True),
    (0x30100037, "EntityDescription", "X", False),
    (0x30100035, "EntityLabel", "D", False),
    (0x30100038, "EntityLongLabel", "D", False),
    (0x30100036, "EntityName", "X", False),
    (0x300A0676, "EquipmentFrameOfReferenceDescription", "X", False),
    (0x00102160, "EthnicGroup", "X", False),
    (0x00404011, "ExpectedCompletionDateTime", "X", True),
    (0x00080058, "FailedSOPInstanceUIDList", "U", False),
    (0x0070031A, "FiducialUID", "U", False),
    (0x00402017, "FillerOrderNumberImagingServiceRequest", "Z", False),
    (0x30080054, "FirstTreatmentDate", "X/D", True),
    (0x300A0196, "FixationDeviceDescription", "X", False),
    (0x00340002, "FlowIdentifier", "D", False),
    (0x00340001, "FlowIdentifierSequence", "D", False),
    (0x3010007F, "FractionationNotes", "Z", False),
    (0x300A0072, "FractionGroupDescription", "X", False),
    (0x00209158, "FrameComments", "X", False),
    (0x00200052, "FrameOfReferenceUID", "U", False),
    (0x00340007, "FrameOriginTimestamp", "D", True),
    (0x00181008, "GantryID", "X", False),
    (0x00181005, "GeneratorID", "X", False),
    (0x00160076, "GPSAltitude", "X", False),
    (0x00160075, "GPSAltitudeRef", "X", False),
    (0x0016008C, "GPSAreaInformation", "X", False),
    (0x0016008D, "GPSDateStamp", "X", True),
    (0x00160088, "GPSDestBearing", "X", False),
    (0x00160087, "GPSDestBearingRef", "X", False),
    (0x0016008A, "GPSDestDistance", "X", False),
    (0x00160089, "GPSDestDistanceRef", "X", False),
    (0x00160084, "GPSDestLatitude", "X", False),
    (0x00160083, "GPSDestLatitudeRef", "X", False),
    (0x00160086, "GPSDestLongitude", "X", False),
    (0x00160085, "GPSDestLongitudeRef", "X", False),
    (0x0016008E, "GPSDifferential", "X", False),
    (0x0016007B, "GPSDOP", "X", False),
    (0x00160081, "GPSImgDirection", "X", False),
    (0x00160080, "GPSImgDirectionRef", "X", False),
    (0x00160072, "GPSLatitude", "X", False),
    (0x00160071, "GPSLatitudeRef", "X", False),
    (0x00160074, "GPSLongitude", "X", False),
    (0x00160073, "GPSLongitudeRef", "X", False),
    (0x00160082, "GPSMapDatum", "X", False),
    (0x0016007A, "GPSMeasureMode", "X", False),
    (0x0016008B, "GPSProcessingMethod", "X", False),
    (0x00160078, "GPSSatellites", "X", False),
    (0x0016007D, "GPSSpeed", "X", False),
    (0x0016007C, "GPSSpeedRef", "X", False),
    (0x00160079, "GPSStatus", "X", False),
    (0x00160077, "GPSTimeStamp", "X", False),
    (0x0016007F, "GPSTrack", "X", False),
    (0x0016007E, "GPSTrackRef", "X", False),
    (0x00160070, "GPSVersionID", "X", False),
    (0x00700001, "GraphicAnnotationSequence", "D", False),
    (0x00404037, "HumanPerformerName", "X", False),
    (0x00404036, "HumanPerformerOrganization", "X", False),
    (0x00880200, "IconImageSequence", "X", False),
    (0x00084000, "IdentifyingComments", "X", False),
    (0x00204000, "ImageComments", "X", False),
    (0x00284000, "ImagePresentationComments", "X", False),
    (0x00402400, "ImagingServiceRequestComments", "X", False),
    (0x003A0314, "ImpedanceMeasurementDateTime", "D", True),
    (0x40080300, "Impressions", "X", False),
    (0x00080015, "InstanceCoercionDateTime", "X", True),
    (0x00080014, "InstanceCreatorUID", "U", False),
    (0x04000600, "InstanceOriginStatus", "X", False),
    (0x00080081, "InstitutionAddress", "X", False),
    (0x00081040, "InstitutionalDepartmentName", "X", False),
    (0x00081041, "InstitutionalDepartmentTypeCodeSequence", "X", False),
    (0x00080082, "InstitutionCodeSequence", "X/Z/D", False),
    (0x00080080, "InstitutionName", "X/Z/D", False),
    (0x00101050, "InsurancePlanIdentification", "X", False),
    (0x3010004D, "IntendedPhaseEndDate", "X/D", True),
    (0x3010004C, "IntendedPhaseStartDate", "X/D", True),
    (0x00401011, "IntendedRecipientsOfResultsIdentificationSequence", "X", False),
    (0x300A0741, "InterlockDateTime", "D", True),
    (0x300A0742, "InterlockDescription", "D", False),
    (0x300A0783, "InterlockOriginDescription", "D", False),
    (0x40080111, "InterpretationApproverSequence", "X", False),
    (0x4008010C, "InterpretationAuthor", "X", False),
    (0x40080115, "InterpretationDiagnosisDescription", "X", False),
    (0x40080202, "InterpretationIDIssuer", "X", False),
    (0x40080102, "InterpretationRecorder", "X", False),
    (0x4008010B, "InterpretationText", "X", False),
    (0x4008010A, "InterpretationTranscriber", "X", False),
    (0x00083010, "IrradiationEventUID", "U", False),
    (0x00380011, "IssuerOfAdmissionID", "X", False),
    (0x00380014, "IssuerOfAdmissionIDSequence", "X", False),
    (0x00100021, "IssuerOfPatientID", "X", False),
    (0x00380061, "IssuerOfServiceEpisodeID", "X", False),
    (0x00380064, "IssuerOfServiceEpisodeIDSequence", "X", False),
    (0x00400513, "IssuerOfTheContainerIdentifierSequence", "Z", False),
    (0x00400562, "IssuerOfTheSpecimenIdentifierSequence", "Z", False),
    (0x22000002, "LabelText", "X/Z", False),
    (0x00281214, "LargePaletteColorLookupTableUID", "U", False),
    (0x001021D0, "LastMenstrualDate", "X", True),
    (0x0016004F, "LensMake", "X", False),
    (0x00160050, "LensModel", "X", False),
    (0x00160051, "LensSerialNumber", "X", False),
    (0x0016004E, "LensSpecification", "X", False),
    (0x00500021, "LongDeviceDescription", "X", False),
    (0x04000404, "MAC", "X", False),
    (0x0016002B, "MakerNote", "X", False),
    (0x0018100B, "ManufacturerDeviceClassUID", "U", False),
    (0x30100043, "ManufacturerDeviceIdentifier", "Z", False),
    (0x00020003, "MediaStorageSOPInstanceUID", "U", False),
    (0x00102000, "MedicalAlerts", "X", False),
    (0x00101090, "MedicalRecordLocator", "X", False),
    (0x00101080, "MilitaryRank", "X", False),
    (0x04000550, "ModifiedAttributesSequence", "X", False),
    (0x00203406, "ModifiedImageDescription", "X", False),
    (0x00203401, "ModifyingDeviceID", "X", False),
    (0x30080056, "MostRecentTreatmentDate", "X/D", True),
    (0x0018937B, "MultienergyAcquisitionDescription", "X", False),
    (0x003A0310, "MultiplexGroupUID", "U", False),
    (0x00081060, "NameOfPhysiciansReadingStudy", "X", False),
    (0x00401010, "NamesOfIntendedRecipientsOfResults", "X", False),
    (0x04000551, "NonconformingModifiedAttributesSequence", "X", False),
    (0x04000552, "NonconformingDataElementValue", "X", False),
    (0x0040A192, "ObservationDateTrial", "X", True),
    (0x0040A402, "ObservationSubjectUIDTrial", "U", False),
    (0x0040A193, "ObservationTimeTrial", "X", True),
    (0x0040A171, "ObservationUID", "U", False),
    (0x00102180, "Occupation", "X", False),
    (0x00081072, "OperatorIdentificationSequence", "X/D", False),
    (0x00081070, "OperatorsName", "X/Z/D", False),
    (0x00402010, "OrderCallbackPhoneNumber", "X", False),
    (0x00402011, "OrderCallbackTelecomInformation", "X", False),
    (0x00402008, "OrderEnteredBy", "X", False),
    (0x00402009, "OrderEntererLocation", "X", False),
    (0x04000561, "OriginalAttributesSequence", "X", False),
    (0x00101000, "OtherPatientIDs", "X", False),
    (0x00101002, "OtherPatientIDsSequence", "X", False),
    (0x00101001, "OtherPatientNames", "X", False),
    (0x00080024, "OverlayDate", "X", True),
    (0x00080034, "OverlayTime", "X", True),
    (0x300A0760, "OverrideDateTime", "D", True),
    (0x00281199, "PaletteColorLookupTableUID", "U", False),
    (0x0040A07A, "ParticipantSequence", "X", False),
    (0x00101040, "PatientAddress", "X", False),
    (0x00101010, "PatientAge", "X", False),
    (0x00100030, "PatientBirthDate", "Z", False),
    (0x00101005, "PatientBirthName", "X", False),
    (0x00100032, "PatientBirthTime", "X", False),
    (0x00380400, "PatientInstitutionResidence", "X", False),
    (0x00100050, "PatientInsurancePlanCodeSequence", "X", False),
    (0x00101060, "PatientMotherBirthName", "X", False),
    (0x00100010, "PatientName", "Z", False),
    (0x00100101, "PatientPrimaryLanguageCodeSequence", "X", False),
    (0x00100102, "PatientPrimaryLanguageModifierCodeSequence", "X", False),
    (0x001021F0, "PatientReligiousPreference", "X", False),
    (0x00100040, "PatientSex", "Z", False),
    (0x00102203, "PatientSexNeutered", "X/Z", False),
    (0x00101020, "PatientSize", "X", False),
    (0x00102155, "PatientTelecomInformation", "X", False),
    (0x00102154, "PatientTelephoneNumbers", "X", False),
    (0x00101030, "PatientWeight", "X", False),
    (0x00104000, "PatientComments", "X", False),
    (0x00100020, "PatientID", "Z", False),
    (0x300A0650, "PatientSetupUID", "U", False),
    (0x00380500, "PatientState", "X", False),
    (0x00401004, "PatientTransportArrangements", "X", False),
    (0x00400243, "PerformedLocation", "X", False),
    (0x00400254, "PerformedProcedureStepDescription", "X", False),
    (0x00400250, "PerformedProcedureStepEndDate", "X", True),
    (0x00404051, "PerformedProcedureStepEndDateTime", "X", True),
    (0x00400251, "PerformedProcedureStepEndTime", "X", True),
    (0x00400253, "PerformedProcedureStepID", "X", False),
    (0x00400244, "PerformedProcedureStepStartDate", "X", True),
    (0x00404050, "PerformedProcedureStepStartDateTime", "X", True),
    (0x00400245, "PerformedProcedureStepStartTime", "X", True),
    (0x00400241, "PerformedStationAETitle", "X", False),
    (0x00404030, "PerformedStationGeographicLocationCodeSequence", "X", False),
    (0x00400242, "PerformedStationName", "X", False),
    (0x00404028, "PerformedStationNameCodeSequence", "X", False),
    (0x00081050, "PerformingPhysicianName", "X", False),
    (0x00081052, "PerformingPhysicianIdentificationSequence", "X", False),
    (0x00401102, "PersonAddress", "X", False),
    (0x00401104, "PersonTelecomInformation", "X", False),
    (0x00401103, "PersonTelephoneNumbers", "X", False),
    (0x00401101, "PersonIdentificationCodeSequence", "D", False),
    (0x0040A123, "PersonName", "D", False),
    (0x00081048, "PhysiciansOfRecord", "X", False),
    (0x00081049, "PhysiciansOfRecordIdentificationSequence", "X", False),
    (0x00081062, "PhysiciansReadingStudyIdentificationSequence", "X", False),
    (0x40080114, "PhysicianApprovingInterpretation", "X", False),
    (0x00402016, "PlacerOrderNumberImagingServiceRequest", "Z", False),
    (0x00181004, "PlateID", "X", False),
    (0x001021C0, "PregnancyStatus", "X", False),
    (0x00400012, "PreMedication", "X", False),
    (0x300A000E, "PrescriptionDescription", "X", False),
    (0x3010007B, "PrescriptionNotes", "Z", False),
    (0x30100081, "PrescriptionNotesSequence", "Z", False),
    (0x00701101, "PresentationDisplayCollectionUID", "U", False),
    (0x00701102, "PresentationSequenceCollectionUID", "U", False),
    (0x30100061, "PriorTreatmentDoseDescription", "X", False),
    (0x00404052, "ProcedureStepCancellationDateTime", "X", True),
    (0x00181030, "ProtocolName", "X/D", False),
    (0x300A0619, "RadiationDoseIdentificationLabel", "D", False),
    (0x300A0623, "RadiationDoseInVivoMeasurementLabel", "D", False),
    (0x300A067D, "RadiationGenerationModeDescription", "Z", False),
    (0x300A067C, "RadiationGenerationModeLabel", "D", False),
    (0x300C0113, "ReasonForOmissionDescription", "X", False),
    (0x0040100A, "ReasonForRequestedProcedureCodeSequence", "X", False),
    (0x00321030, "ReasonForStudy", "X", False),
    (0x3010005C, "ReasonForSuperseding", "Z", False),
    (0x00402001, "ReasonForTheImagingServiceRequest", "X", False),
    (0x00401002, "ReasonForTheRequestedProcedure", "X", False),
    (0x00321066, "ReasonForVisit", "X", False),
    (0x00321067, "ReasonForVisitCodeSequence", "X", False),
    (0x300A073A, "RecordedRTControlPointDateTime", "D", True),
    (0x3010000B, "ReferencedConceptualVolumeUID", "U", False),
    (0x04000402, "ReferencedDigitalSignatureSequence", "X", False),
    (0x300A0083, "ReferencedDoseReferenceUID", "U", False),
    (0x3010006F, "ReferencedDosimetricObjectiveUID", "U", False),
    (0x30100031, "ReferencedFiducialsUID", "U", False),
    (0x30060024, "ReferencedFrameOfReferenceUID", "U", False),
    (0x00404023, "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID", "U", False),
    (0x00081140, "ReferencedImageSequence", "X/Z/U*", False),
    (0x0040A172, "ReferencedObservationUIDTrial", "U", False),
    (0x00380004, "ReferencedPatientAliasSequence", "X", False),
    (0x00101100, "ReferencedPatientPhotoSequence", "X", False),
    (0x00081120, "ReferencedPatientSequence", "X", False),
    (0x00081111, "ReferencedPerformedProcedureStepSequence", "X/Z/D", False),
    (0x04000403, "ReferencedSOPInstanceMACSequence", "X", False),
    (0x00081155, "ReferencedSOPInstanceUID", "U", False),
    (0x00041511, "ReferencedSOPInstanceUIDInFile", "U", False),
    (0x00081110, "ReferencedStudySequence", "X/Z", False),
    (0x00080092, "ReferringPhysicianAddress", "X", False),
    (0x00080090, "ReferringPhysicianName", "Z", False),
    (0x00080094, "ReferringPhysicianTelephoneNumbers", "X", False),
    (0x00080096, "ReferringPhysicianIdentificationSequence", "X", False),
    (0x00102152, "RegionOfResidence", "X", False),
    (0x300600C2, "RelatedFrameOfReferenceUID", "U", False),
    (0x00400275, "RequestAttributesSequence", "X", False),
    (0x00321070, "RequestedContrastAgent", "X", False),
    (0x00401400, "RequestedProcedureComments", "X", False),
    (0x00321060, "RequestedProcedureDescription", "X/Z", False),
    (0x00401001, "RequestedProcedureID", "X", False),
    (0x00401005, "RequestedProcedureLocation", "X", False),
    (0x00189937, "RequestedSeriesDescription", "X", False),
    (0x00001001, "RequestedSOPInstanceUID", "U", False),
    (0x00321032, "RequestingPhysician", "X", False),
    (0x00321033, "RequestingService", "X", False),
    (0x00189185, "RespiratoryMotionCompensationTechniqueDescription", "X", False),
    (0x00102299, "ResponsibleOrganization", "X", False),
    (0x00102297, "ResponsiblePerson", "X", False),
    (0x40084000, "ResultsComments", "X", False),
    (0x40080118, "ResultsDistributionListSequence", "X", False),
    (0x40080042, "ResultsIDIssuer", "X", False),
    (0x300E0008, "ReviewerName", "X/Z", False),
    (0x30060028, "ROIDescription", "X", False),
    (0x30060038, "ROIGenerationDescription", "X", False),
    (0x300600A6, "ROIInterpreter", "Z", False),
    (0x30060026, "ROIName", "Z", False),
    (0x30060088, "ROIObservationDescription", "X", False),
    (0x30060085, "ROIObservationLabel", "X", False),
    (0x300A0615, "RTAccessoryDeviceSlotID", "Z", False),
    (0x300A0611, "RTAccessoryHolderSlotID", "Z", False),
    (0x3010005A, "RTPhysicianIntentNarrative", "Z", False),
    (0x300A0006, "RTPlanDate", "X/D", True),
    (0x300A0004, "RTPlanDescription", "X", False),
    (0x300A0002, "RTPlanLabel", "D", False),
    (0x300A0003, "RTPlanName", "X", False),
    (0x300A0007, "RTPlanTime", "X/D", True),
    (0x30100054, "RTPrescriptionLabel", "D", False),
    (0x300A062A, "RTToleranceSetLabel", "D", False),
    (0x30100056, "RTTreatmentApproachLabel", "X/D", False),
    (0x3010003B, "RTTreatmentPhaseUID", "U", False),
    (0x00404034, "ScheduledHumanPerformersSequence", "X", False),
    (0x0038001E, "ScheduledPatientInstitutionResidence", "X", False),
    (0x00400006, "ScheduledPerformingPhysicianName", "X", False),
    (0x0040000B, "ScheduledPerformingPhysicianIdentificationSequence", "X", False),
    (0x00400007, "ScheduledProcedureStepDescription", "X", False),
    (0x00400004, "ScheduledProcedureStepEndDate", "X", True),
    (0x00400005, "ScheduledProcedureStepEndTime", "X", True),
    (0x00404008, "ScheduledProcedureStepExpirationDateTime", "X", True),
    (0x00400009, "ScheduledProcedureStepID", "X", False),
    (0x00400011, "ScheduledProcedureStepLocation", "X", False),
    (0x00404010, "ScheduledProcedureStepModificationDateTime", "X", True),
    (0x00400002, "ScheduledProcedureStepStartDate", "X", True),
    (0x00404005, "ScheduledProcedureStepStartDateTime", "X", True),
    (0x00400003, "ScheduledProcedureStepStartTime", "X", True),
    (0x00400001, "ScheduledStationAETitle", "X", False),
    (0x00404027, "ScheduledStationGeographicLocationCodeSequence", "X", False),
    (0x00400010, "ScheduledStationName", "X", False),
    (0x00404025, "ScheduledStationNameCodeSequence", "X", False),
    (0x00321020, "ScheduledStudyLocation", "X", False),
    (0x00321021, "ScheduledStudyLocationAETitle", "X", False),
    (0x00080021, "SeriesDate", "X/D", True),
    (0x0008103E, "SeriesDescription", "X", False),
    (0x0020000E, "SeriesInstanceUID", "U", False),
    (0x00080031, "SeriesTime", "X/D", True),
    (0x00380062, "ServiceEpisodeDescription", "X", False),
    (0x00380060, "ServiceEpisodeID", "X", False),
    (0x300A01B2, "SetupTechniqueDescription", "X", False),
    (0x300A01A6, "ShieldingDeviceDescription", "X", False),
    (0x004006FA, "SlideIdentifier", "X", False),
    (0x001021A0, "SmokingStatus", "X", False),
    (0x00080018, "SOPInstanceUID", "U", False),
    (0x30100015, "SourceConceptualVolumeUID", "U", False),
    (0x0018936A, "SourceEndDateTime", "D", True),
    (0x00340005, "SourceIdentifier", "D", False),
    (0x00082112, "SourceImageSequence", "X/Z/U*", False),
    (0x300A0216, "SourceManufacturer", "X", False),
    (0x30080105, "SourceSerialNumber", "X/Z", False),
    (0x00189369, "SourceStartDateTime", "D", True),
    (0x00380050, "SpecialNeeds", "X", False),
    (0x0040050A, "SpecimenAccessionNumber", "X", False),
    (0x00400602, "SpecimenDetailedDescription", "X", False),
    (0x00400551, "SpecimenIdentifier", "D", False),
    (0x00400610, "SpecimenPreparationSequence", "Z", False),
    (0x00400600, "SpecimenShortDescription", "X", False),
    (0x00400554, "SpecimenUID", "U", False),
    (0x00189516, "StartAcquisitionDateTime", "X/D", True),
    (0x00081010, "StationName", "X/Z/D", False),
    (0x00880140, "StorageMediaFileSetUID", "U", False),
    (0x30060008, "StructureSetDate", "Z", True),
    (0x30060006, "StructureSetDescription", "X", False),
    (0x30060002, "StructureSetLabel", "D", False),
    (0x30060004, "StructureSetName", "X", False),
    (0x30060009, "StructureSetTime", "X/D", True),
    (0x00324000, "StudyComments", "X", False),
    (0x00080020, "StudyDate", "Z", True),
    (0x00081030, "StudyDescription", "X", False),
    (0x00200010, "StudyID", "Z", False),
    (0x00320012, "StudyIDIssuer", "X", False),
    (0x0020000D, "StudyInstanceUID", "U", False),
    (0x00080030, "StudyTime", "Z", True),
    (0x00200200, "SynchronizationFrameOfReferenceUID", "U", False),
    (0x00182042, "TargetUID", "U", False),
    (0x0040A354, "TelephoneNumberTrial", "X", False),
    (0x0040DB0D, "TemplateExtensionCreatorUID", "U", False),
    (0x0040DB0C, "TemplateExtensionOrganizationUID", "U", False),
    (0x40004000, "TextComments", "X", False),
    (0x20300020, "TextString", "X", False),
    (0x00080201, "TimezoneOffsetFromUTC", "X", True),
    (0x00880910, "TopicAuthor", "X", False),
    (0x00880912, "TopicKeywords", "X", False),
    (0x00880906, "TopicSubject", "X", False),
    (0x00880904, "TopicTitle", "X", False),
    (0x00620021, "TrackingUID", "U", False),
    (0x00081195, "TransactionUID", "U", False),
    (0x00185011, "TransducerIdentificationSequence", "X", False),
    (0x30080250, "TreatmentDate", "X/D", True),
    (0x300A00B2, "TreatmentMachineName", "X", False),
    (0x300A0608, "TreatmentPositionGroupLabel", "D", False),
    (0x300A0609, "TreatmentPositionGroupUID", "U", False),
    (0x300A0700, "TreatmentSessionUID", "U", False),
    (0x30100077, "TreatmentSite", "D", False),
    (0x3010007A, "TreatmentTechniqueNotes", "Z", False),
    (0x30080251, "TreatmentTime", "X/D", True),
    (0x300A0736, "TreatmentToleranceViolationDateTime", "D", True),
    (0x300A0734, "TreatmentToleranceViolationDescription", "D", False),
    (0x0018100A, "UDISequence", "X", False),
    (0x0040A124, "UID", "U", False),
    (0x00181009, "UniqueDeviceIdentifier", "X", False),
    (0x30100033, "UserContentLabel", "D", False),
    (0x30100034, "UserContentLongLabel", "D", False),
    (0x0040A352, "VerbalSourceTrial", "X", False),
    (0x0040A358, "VerbalSourceIdentifierCodeSequenceTrial", "X", False),
    (0x0040A088, "VerifyingObserverIdentificationCodeSequence", "Z", False),
    (0x0040A075, "VerifyingObserverName", "D", False),
    (0x0040A073, "VerifyingObserverSequence", "D", False),
    (0x0040A027, "VerifyingOrganization", "D", False),
    (0x00384000, "VisitComments", "X", False),
    (0x00189371, "XRayDetectorID", "D", False),
    (0x00189373, "XRayDetectorLabel", "X", False),
    (0x00189367, "XRaySourceID", "D", False),
)

_TABLE = {tag: (kw, action, dates) for tag, kw, action, dates in PROFILE_TABLE}


def _repeating_rule(tag: BaseTag) -> tuple[str, str, bool] | None:
    group, elem = tag.group, tag.element
    if group % 2:
        return None
    if group & 0xFF00 == 0x5000:
        return ("CurveData", "X", False)
    if group & 0xFF00 == 0x6000 and elem == 0x3000:
        return ("OverlayData", "X", False)
    if group & 0xFF00 == 0x6000 and elem == 0x4000:
        return ("OverlayComments", "X", False)
    return None


def _is_dummy(value: Any) -> bool:
    """Empty, zero, the text ANONYMIZED, or a holomed pseudonym."""
    if value is None:
        return True
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).strip(b"\x00 ").upper() in (b"", DUMMY_TEXT.encode())
    if isinstance(value, (int, float)):
        return value == 0
    s = str(value).strip("\x00 ")
    return (
        s in ("", "0", "0.0", "000Y", "http://anonymized.invalid")
        or s.upper() == DUMMY_TEXT
        or PSEUDONYM_RE.fullmatch(s) is not None
    )


def _uid_ok(elem: Any) -> bool:
    kw = elem.keyword or ""
    if kw.endswith(("ClassUID", "SyntaxUID")) or kw in _UID_KEPT_KEYWORDS:
        return True
    return all(
        not s or s.startswith(("2.25.", DICOM_ROOT))
        for s in (str(v).strip("\x00 ") for v in _values(elem.value) if v is not None)
    )


def _check(ds: Dataset, where: str, dates_ok: bool, out: list[str]) -> None:
    for elem in ds:
        tag = elem.tag
        name = f"{where}({tag.group:04X},{tag.element:04X}) {elem.keyword or 'unknown'}"
        if tag.is_private:
            out.append(f"{name}: private attribute present")
            continue
        rule = _TABLE.get(int(tag)) or _repeating_rule(tag)
        if elem.VR == "SQ":
            action = rule[1] if rule else ""
            if action in ("X", "Z", "X/Z") and len(elem.value):
                out.append(f"{name}: sequence has items (action {action})")
                continue
            for i, item in enumerate(elem.value):
                _check(item, f"{name}[{i}] > ", dates_ok, out)
            continue
        if rule is None:
            if elem.VR == "UI" and not _uid_ok(elem):
                out.append(f"{name}: UID not replaced (not under 2.25.)")
            continue
        _, action, dates = rule
        value = elem.value
        if _is_empty(value):
            continue
        if dates:
            if not dates_ok:
                out.append(
                    f"{name}: date/time kept without the modified-dates option (113107) declared"
                )
            continue
        if "U" in action and elem.VR == "UI":
            uids = [str(v).strip("\x00 ") for v in _values(value)]
            if not all(not u or u.startswith("2.25.") for u in uids):
                out.append(f"{name}: UID not replaced (not under 2.25.)")
            continue
        if action == "X":
            out.append(f"{name}: holds a value (action X)")
        elif not all(_is_dummy(v) for v in _values(value)):
            out.append(f"{name}: holds a value that is not empty or a dummy (action {action})")


def check_dicom(ds_or_path: Dataset | str | os.PathLike[str]) -> list[str]:
    """Every attribute of Table E.1-1 still holding an identifying value, anywhere in the
    data set (sequences included), as messages naming tag and keyword, never the value.

    Rules: X -> any value; Z, X/Z, D and the other dummy actions -> a value other than
    empty, zero, ``ANONYMIZED`` or a holomed pseudonym (``P-`` + 20 hex); U -> a UID not
    under ``2.25.``; dates and times the modified-dates option cleans -> accepted only
    when Patient Identity Removed is YES and the method codes include 113107; Patient's
    Birth Date (Z) is never accepted. Also flagged: private attributes, UIDs outside the
    table not under ``2.25.`` (class, transfer syntax and coding-scheme UIDs and the
    DICOM root excepted), Patient Identity Removed not YES, and (for a file) a preamble
    that is not blank. Does not use dicom-anonymizer. An empty list means clean."""
    with _quiet():
        return _check_all(ds_or_path)


def _check_all(ds_or_path: Dataset | str | os.PathLike[str]) -> list[str]:
    out: list[str] = []
    if isinstance(ds_or_path, Dataset):
        ds = ds_or_path
    else:
        ds = _read(Path(ds_or_path), parse_all=True)
        if ds.preamble and ds.preamble.strip(b"\x00"):
            out.append("file preamble (128 bytes) is not blank")
    pir = str(ds.get("PatientIdentityRemoved", "") or "").strip().upper() == "YES"
    codes = {
        str(item.get("CodeValue", "") or "").strip()
        for item in ds.get("DeidentificationMethodCodeSequence", None) or []
    }
    if not pir:
        out.append("(0012,0062) PatientIdentityRemoved: not YES")
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        _check(meta, "file meta ", pir and "113107" in codes, out)
    _check(ds, "", pir and "113107" in codes, out)
    return out
