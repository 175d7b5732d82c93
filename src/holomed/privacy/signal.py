"""De-identification of physiological signal files: EDF/EDF+/BDF(+) (``pyedflib``) and WFDB
records (``wfdb``: ``.hea`` header + ``.dat``/``.mat`` samples), keyed by one
:class:`~holomed.privacy.keys.PrivacyKey`.

What a de-identified **EDF** file holds (written with ``pyedflib.EdfWriter`` in the input's
own type: EDF, EDF+, BDF or BDF+):

- the patient field is ``<pseudonym> X X X``: patient code → the patient's pseudonym
  (``P-`` + 20 hex); sex, birthdate and name → ``X`` (the EDF+ "unknown"); patient
  additional removed. The recording field is ``Startdate dd-MMM-yyyy X X X``: admin code,
  technician, equipment and recording additional removed. A plain EDF file's free-text
  patient and recording fields are replaced the same way;
- the start date moved by the patient's keyed date shift (whole days: the time of day,
  sub-second start included, and every onset are kept, so all intervals are). EDF dates
  only run from 1985 to 2084: a shifted start before 1 January 1985 is **clamped** to that
  day (same time of day) and counted under ``start_dates_clamped_to_1985``, so the date
  then no longer lies exactly at the patient's offset; a start already on 1 January 1985
  (the EDF+ convention for an unknown or anonymised date) stays;
- EDF+ annotations keep their onsets and durations; their text goes through the project's
  note de-identifier (:class:`~holomed.privacy.text.NoteDeidentifier`: names, dates,
  numbers ...), or becomes ``[TEXT]`` with ``annotations="drop"``. Texts made only of
  scoring vocabulary (``Sleep stage W``, ``Movement time``, ``Lights off``, apnoea and
  arousal labels ...; :data:`ANNOTATION_WORDS`) are kept as they are in both modes, so a
  hypnogram stays usable (the note de-identifier would take "Start Recording" for a name).
  EDFlib stores at most 40 bytes of annotation text: longer texts are cut (counted);
- the file name is ``<pseudonym>.edf`` (``.bdf``);
- signal labels, units, transducer and prefilter fields, data-record duration, samples per
  record, physical and digital ranges, and every sample (digital values, bit for bit) are
  kept. Discontinuous files (EDF+D/BDF+D) are refused: writing them would close their gaps.
  A plain EDF/BDF file's signal labelled ``EDF Annotations`` (text that pyedflib does not
  parse as annotations, so it cannot be de-identified) is left out and counted.

What a de-identified **WFDB** record holds (the header rewritten line by line; the data
files copied byte for byte):

- the record name → the pseudonym, and the data file names with it (``<pseudonym>.dat``,
  ``.mat``; ``<pseudonym>_<k>.dat`` when a record has several data files);
- the base date moved by the patient's date shift (``DD/MM/YYYY`` and the CPSC form
  ``05-Feb-2020`` are recognised and keep their form); the base time is kept; any other
  value on the record line is removed;
- comment lines: only keys on the allow-list (:data:`KEEP_COMMENTS`: ``Age``, ``Sex``,
  ``Dx``) are kept; ages over 89 become ``90+`` (HIPAA Safe Harbor), an age that is not a
  number is removed; every other comment line (keys such as ``Rx``, ``Hx``, free text) is
  removed and counted;
- bytes before the samples (a data file's byte offset) are zeroed unless they are the
  MATLAB v4 header of a ``.mat`` file with the variable ``val``; bytes after the last
  sample (when the header fixes the file's size) are dropped. Samples are untouched.

Every file is written to a temporary name in the destination folder and renamed into place
(WFDB: the data files first, the header, which makes the record visible, last): an
interrupted run leaves no file that looks finished. With ``verify=True`` (the default) the
written file is read back and its samples compared with the input's (digital values,
exactly); a difference is a :class:`~holomed.errors.PrivacyError` and the file is removed.

Bad input (file not found, unreadable or truncated EDF, missing or truncated WFDB data
file, multi-segment WFDB record) is a :class:`~holomed.errors.PrivacyError` naming the file
as the caller gives it (``where``: a path relative to the cohort's folder in ``holomed
deid``) and a generic reason, never a value read from the file. Reports hold counts by
identifier type only.

:func:`check_signal_record` is an independent verifier: it parses the written EDF header,
its annotation signal and the WFDB header bytes itself (no ``pyedflib``, no ``wfdb``, none
of the de-identifier's code) and lists every field that still holds a value that is not
allowed; given the original file it also flags a start date equal to the original's and
any value of the original's patient or recording fields found again in the header or an
annotation.
"""

from __future__ import annotations

import datetime as dt
import math
import mmap
import os
import re
import struct
import tempfile
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from holomed.errors import PrivacyError
from holomed.privacy.keys import PrivacyKey
from holomed.privacy.text import NoteDeidentifier

__all__ = [
    "ANNOTATION_MODES",
    "AnnotationTexts",
    "ANNOTATION_WORDS",
    "KEEP_COMMENTS",
    "check_signal_record",
    "deidentify_edf",
    "deidentify_signal_record",
    "deidentify_wfdb",
    "is_scoring_vocabulary",
    "signal_record_kind",
]

EDF_SUFFIXES = (".edf", ".bdf", ".rec")
EDF_FIRST_DAY = dt.date(1985, 1, 1)  # EDF's two-digit years cover 1985-2084
EDF_LAST_DAY = dt.date(2084, 12, 31)
EDFLIB_ANNOTATION_BYTES = 40  # EDFlib writes at most this much text per annotation
KEEP_COMMENTS = ("Age", "Sex", "Dx")
ANNOTATION_MODES = ("deidentify", "drop")
DROPPED_TEXT = "[TEXT]"
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

# Annotation texts made only of these words (case-insensitive; plus numbers of one or two
# digits and "?") are scoring vocabulary and are kept verbatim.
ANNOTATION_WORDS = frozenset(
    """
    sleep stage stages w wake awake n nrem rem r movement movements time lights light off on
    recording record starts start started ends end ended stop stopped begin begins of the
    and montage calibration impedance check eeg eog emg ecg ekg arousal arousals apnea apnoea
    apneas hypopnea hypopnoea hypopneas obstructive central mixed desaturation desat spo2
    oxygen limb leg legs plm plms periodic snore snoring artifact artefact artifacts event
    events marker epoch unscored unknown scored body position supine prone left right upright
    sitting lateral respiratory effort related rera cheyne stokes breathing bradycardia
    tachycardia asystole atrial fibrillation ventricular pvc pac spike spikes seizure eyes
    open closed blink blinks swallow chewing microsleep pause paused resume resumed segment
    gap data new analysis period note notes clip comment
    """.split()
)
_TOKENS = re.compile(r"[a-z]+[0-9]*|[0-9]+|\?|[^a-z0-9?]")
_SEPARATORS = frozenset(" \t,.:;/()+-_")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _err(where: object, reason: str) -> PrivacyError:
    return PrivacyError(f"{where}: {reason}")


def _without_path(message: object, path: Path) -> str:
    """A library's error message without the file's path (it may hold a name)."""
    text = str(message)
    for p in {str(path), str(path.resolve())}:
        text = text.replace(p, "")
    return text.strip(" :") or "unreadable"


def _write_tmp(dst: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    os.close(fd)
    return Path(tmp)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def signal_record_kind(path: str | os.PathLike[str]) -> str:
    """``"edf"`` for ``.edf``/``.bdf``/``.rec`` files, ``"wfdb"`` for a record path (with or
    without ``.hea``/``.dat``/``.mat``) whose header exists; :class:`PrivacyError` else."""
    p = Path(path)
    if p.suffix.lower() in EDF_SUFFIXES:
        return "edf"
    if Path(f"{_record_base(p)}.hea").is_file():
        return "wfdb"
    raise _err(p, "not an EDF file nor a WFDB record (no header found)")


# ---------------------------------------------------------------------------------------
# annotation text


def is_scoring_vocabulary(text: str) -> bool:
    """Whether ``text`` holds only scoring words (:data:`ANNOTATION_WORDS`), numbers of at
    most two digits, ``?`` and separators."""
    low = text.lower()
    words = 0
    for tok in _TOKENS.findall(low):
        if tok in _SEPARATORS:
            continue
        if tok == "?" or (tok.isdigit() and len(tok) <= 2):
            words += 1
            continue
        m = re.fullmatch(r"([a-z]+)([0-9]{0,2})", tok)
        if tok not in ANNOTATION_WORDS and (m is None or m.group(1) not in ANNOTATION_WORDS):
            return False
        words += 1
    return words > 0


def _cut_utf8(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore").rstrip()


class AnnotationTexts:
    """EDF+ annotation descriptions → de-identified texts (module doc), cached per patient
    and text. ``mode``: one of :data:`ANNOTATION_MODES`; ``notes``: a
    :class:`~holomed.privacy.text.NoteDeidentifier` (a surrogate-mode one with ``key`` when
    None, made on first use). Calling it returns ``(texts, counts, entities by type)``."""

    def __init__(self, mode: str, notes: Any, key: PrivacyKey) -> None:
        if mode not in ANNOTATION_MODES:
            raise PrivacyError(f"annotations: {mode!r} is not one of {ANNOTATION_MODES}")
        self.mode = mode
        self.notes = notes
        self.key = key
        self.cache: dict[tuple[str, str], tuple[str, dict[str, int]]] = {}

    def _deidentifier(self) -> Any:
        if self.notes is None:
            self.notes = NoteDeidentifier(mode="surrogate", key=self.key)
        return self.notes

    def __call__(self, texts: Iterable[str], patient_id: str) -> tuple[list[str], Counter, Counter]:
        out: list[str] = []
        counts: Counter = Counter()
        entities: Counter = Counter()
        for raw in texts:
            text = _CONTROL.sub(" ", unicodedata.normalize("NFC", str(raw))).strip()
            if not text or is_scoring_vocabulary(text):
                new = text
                counts["annotations_kept_as_vocabulary"] += 1
            elif self.mode == "drop":
                new = DROPPED_TEXT
                counts["annotation_texts_dropped"] += 1
            else:
                hit = self.cache.get((patient_id, text))
                if hit is None:
                    hit = self._deidentifier().deidentify(text, patient_id)
                    self.cache[(patient_id, text)] = hit
                new, found = hit
                entities.update(found)
                counts["annotations_deidentified"] += 1
                counts["annotations_changed"] += int(new != text)
            if len(new.encode("utf-8")) > EDFLIB_ANNOTATION_BYTES:
                new = _cut_utf8(new, EDFLIB_ANNOTATION_BYTES)
                counts["annotation_texts_cut_to_40_bytes"] += 1
            out.append(new)
        return out, counts, entities


# ---------------------------------------------------------------------------------------
# EDF


def _filled(value: object) -> bool:
    """Whether a header subfield holds a value (not empty, not the EDF+ ``X``)."""
    v = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return v.strip() not in ("", "X", "X,X")


def _read_edf(src: Path, where: str) -> dict[str, Any]:
    """Everything :func:`deidentify_edf` needs from an EDF file, samples as digital values."""
    import pyedflib

    try:
        with open(src, "rb") as f:
            head = f.read(256)
    except FileNotFoundError:
        raise _err(where, "EDF file not found") from None
    except IsADirectoryError:
        raise _err(where, "is a folder, not an EDF file") from None
    except OSError as err:
        raise _err(where, f"EDF file unreadable ({err.strerror})") from None
    if len(head) < 256:
        raise _err(where, "not an EDF file (header shorter than 256 bytes)")
    if head[192:197] in (b"EDF+D", b"BDF+D"):
        raise _err(
            where,
            "discontinuous EDF+D/BDF+D recording: not supported (writing it with EDFlib "
            "would close its gaps and change the intervals)",
        )
    try:
        r = pyedflib.EdfReader(str(src), annotations_mode=pyedflib.READ_ALL_ANNOTATIONS)
    except Exception as err:  # noqa: BLE001 - pyedflib says what is wrong (size, format)
        raise _err(where, f"unreadable EDF file ({_without_path(err, src)})") from None
    try:
        n = int(r.signals_in_file)
        if n == 0:
            raise _err(where, "the EDF file holds no signal (annotations only)")
        ft = int(r.filetype)
        nrec = int(r.datarecords_in_file)
        plus = ft in (pyedflib.FILETYPE_EDFPLUS, pyedflib.FILETYPE_BDFPLUS)
        # In a plain EDF/BDF file an "EDF Annotations" signal is not parsed as annotations:
        # its bytes are free text that cannot be de-identified, so it is left out.
        channels = [
            i
            for i in range(n)
            if plus or str(r.getLabel(i)).strip() not in ("EDF Annotations", "BDF Annotations")
        ]
        if not channels:
            raise _err(where, "the EDF file holds no signal (annotations only)")
        spr = [int(r.samples_in_datarecord(i)) for i in channels]
        digital = []
        for k, i in enumerate(channels):
            x = np.asarray(r.readSignal(i, digital=True), dtype=np.int32)
            if len(x) != nrec * spr[k]:
                raise _err(
                    where, f"signal {i}: {len(x)} samples, the header implies {nrec * spr[k]}"
                )
            digital.append(x)
        if plus:
            onsets, durations, texts = r.readAnnotations()
        else:
            onsets, durations, texts = [], [], []
        info = {
            "filetype": ft,
            "plus": plus,
            "n": len(channels),
            "text_channels_dropped": n - len(channels),
            "nrec": nrec,
            "record_seconds": float(r.datarecord_duration),
            "spr": spr,
            "headers": [r.getSignalHeader(i) for i in channels],
            "digital": digital,
            "onsets": [float(o) for o in onsets],
            "durations": [float(d) for d in durations],
            "texts": [str(t) for t in texts],
            "start": dt.datetime(
                r.startdate_year,
                r.startdate_month,
                r.startdate_day,
                r.starttime_hour,
                r.starttime_minute,
                r.starttime_second,
            ),
            "subsecond": int(r.starttime_subsecond),  # units of 100 ns
        }
        if plus:
            fields = {
                "patient_code": r.getPatientCode(),
                "patient_name": r.getPatientName(),
                "patient_sex": r.getSex(),
                "patient_birthdate": r.getBirthdate(),
                "patient_additional": r.getPatientAdditional(),
                "admin_code": r.getAdmincode(),
                "technician": r.getTechnician(),
                "equipment": r.getEquipment(),
                "recording_additional": r.getRecordingAdditional(),
            }
        else:
            fields = {"patient_field": r.patient, "recording_field": r.recording}
        info["fields"] = fields
    except PrivacyError:
        raise
    except Exception as err:  # noqa: BLE001
        raise _err(where, f"unreadable EDF content ({_without_path(err, src)})") from None
    finally:
        r.close()
    return info


def _shifted_start(start: dt.datetime, days: int) -> tuple[dt.datetime, str]:
    if start.date() == EDF_FIRST_DAY:  # the EDF+ "unknown / anonymised" start date
        return start, "start_dates_already_anonymous"
    new = start + dt.timedelta(days=days)
    if new.date() < EDF_FIRST_DAY:
        return dt.datetime.combine(EDF_FIRST_DAY, start.time()), "start_dates_clamped_to_1985"
    if new.date() > EDF_LAST_DAY:  # cannot happen with a backward shift; kept for safety
        return dt.datetime.combine(EDF_LAST_DAY, start.time()), "start_dates_clamped_to_2084"
    return new, "start_dates_shifted"


def _write_edf(
    tmp: Path,
    info: dict[str, Any],
    pseudonym: str,
    start: dt.datetime,
    texts: Sequence[str],
    where: str,
) -> None:
    """Write the de-identified file to ``tmp`` (digital samples, data record by record)."""
    import pyedflib
    from pyedflib.edfwriter import set_starttime_subsecond  # EDFlib's setter, exact

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "forcing a record duration" and the like
            w = pyedflib.EdfWriter(str(tmp), info["n"], file_type=info["filetype"])
            try:
                sec = info["record_seconds"]
                heads = []
                for h, s in zip(info["headers"], info["spr"], strict=True):
                    heads.append(
                        {
                            "label": h["label"],
                            "dimension": h["dimension"],
                            "sample_frequency": s / sec,
                            "physical_max": h["physical_max"],
                            "physical_min": h["physical_min"],
                            "digital_max": h["digital_max"],
                            "digital_min": h["digital_min"],
                            "transducer": h["transducer"],
                            "prefilter": h["prefilter"],
                        }
                    )
                w.setSignalHeaders(heads)
                w.setDatarecordDuration(sec)
                w.setPatientCode(pseudonym)  # name, sex, birthdate: "X"; no additional
                w.setStartdatetime(start.replace(microsecond=info["subsecond"] // 100))
                if info["plus"]:
                    per_record = math.ceil((len(texts) + 1) / max(info["nrec"], 1))
                    w.set_number_of_annotation_signals(min(max(per_record, 1), 64))
                if info["subsecond"]:  # exact, in EDFlib's units of 100 ns
                    set_starttime_subsecond(w.handle, info["subsecond"])
                blocks = np.concatenate(
                    [
                        d.reshape(info["nrec"], s)
                        for d, s in zip(info["digital"], info["spr"], strict=True)
                    ],
                    axis=1,
                ).astype(np.int32)
                for row in blocks:
                    if w.blockWriteDigitalSamples(np.ascontiguousarray(row)) < 0:
                        raise _err(where, "writing the de-identified samples failed")
                for onset, duration, text in zip(
                    info["onsets"], info["durations"], texts, strict=True
                ):
                    w.writeAnnotation(onset, duration, text)
            finally:
                w.close()
    except PrivacyError:
        raise
    except Exception as err:  # noqa: BLE001 - EDFlib refuses a header value
        raise _err(where, f"cannot be written as EDF ({_without_path(err, tmp)})") from None
    _fsync(tmp)


def _verify_edf(dst: Path, info: dict[str, Any], start: dt.datetime, where: str) -> None:
    """Read the written file back: samples (digital, exact), layout, physical ranges (to
    the digital resolution), start and annotation onsets must match."""
    import pyedflib

    problems = []
    r = pyedflib.EdfReader(str(dst), annotations_mode=pyedflib.READ_ALL_ANNOTATIONS)
    try:
        if int(r.signals_in_file) != info["n"] or int(r.datarecords_in_file) != info["nrec"]:
            problems.append("signal or data-record count")
        elif abs(float(r.datarecord_duration) - info["record_seconds"]) > 1e-9:
            problems.append("data-record duration")
        else:
            for i in range(info["n"]):
                h, g = info["headers"][i], r.getSignalHeader(i)
                if int(r.samples_in_datarecord(i)) != info["spr"][i]:
                    problems.append(f"signal {i}: samples per record")
                    continue
                x = np.asarray(r.readSignal(i, digital=True), dtype=np.int32)
                if not np.array_equal(x, info["digital"][i]):
                    problems.append(f"signal {i}: samples")
                step = (h["physical_max"] - h["physical_min"]) / max(
                    h["digital_max"] - h["digital_min"], 1
                )
                for k in ("physical_max", "physical_min"):
                    if abs(g[k] - h[k]) > abs(step) / 2 + 1e-12:
                        problems.append(f"signal {i}: {k}")
                for k in ("digital_max", "digital_min"):
                    if int(g[k]) != int(h[k]):
                        problems.append(f"signal {i}: {k}")
        got = dt.datetime(
            r.startdate_year,
            r.startdate_month,
            r.startdate_day,
            r.starttime_hour,
            r.starttime_minute,
            r.starttime_second,
        )
        if got != start or int(r.starttime_subsecond) != info["subsecond"]:
            problems.append("start date-time")
        if info["plus"]:
            onsets, durations, _ = r.readAnnotations()
            a = sorted(zip(info["onsets"], info["durations"], strict=True))
            b = sorted(zip(map(float, onsets), map(float, durations), strict=True))
            if len(a) != len(b):
                problems.append(f"annotations: {len(b)} written of {len(a)}")
            elif any(
                abs(x[0] - y[0]) > 1e-4 or abs(x[1] - y[1]) > 1e-4
                for x, y in zip(a, b, strict=True)
            ):
                problems.append("annotation onsets or durations")
    finally:
        r.close()
    if problems:
        raise _err(where, "the de-identified file differs from the input in " + "; ".join(problems))


def deidentify_edf(
    src: str | os.PathLike[str],
    dst_dir: str | os.PathLike[str],
    key: PrivacyKey,
    patient_id: object,
    *,
    where: str | None = None,
    annotations: str = "deidentify",
    notes: Any = None,
    max_shift_days: int = 365,
    verify: bool = True,
    texts: AnnotationTexts | None = None,
) -> dict[str, Any]:
    """De-identify one EDF/EDF+/BDF(+) file into ``dst_dir/<pseudonym><suffix>`` (module
    doc). ``annotations``: ``"deidentify"`` (the note de-identifier ``notes``, by default a
    surrogate-mode :class:`~holomed.privacy.text.NoteDeidentifier` with ``key``) or
    ``"drop"``; ``texts``: an :class:`AnnotationTexts` shared by many files (its mode and
    de-identifier then apply, and texts seen before for the patient are not analysed
    again). Returns ``{"format", "name", "counts", "entities"}``: the written file's name,
    counts by identifier type and the annotation entities replaced, by type."""
    src = Path(src)
    where = where or str(src)
    texts_of = texts or AnnotationTexts(annotations, notes, key)
    dst_dir = Path(dst_dir)
    pid = str(patient_id)
    info = _read_edf(src, where)
    pseudonym = key.pseudonym(pid)
    counts: Counter = Counter()
    for name, value in info["fields"].items():
        if _filled(value):
            counts[name] += 1
    start, how = _shifted_start(info["start"], key.date_shift_days(pid, max_shift_days))
    counts[how] += 1
    if info["text_channels_dropped"]:
        counts["plain_edf_annotation_channels_dropped"] += info["text_channels_dropped"]
    new_texts, c, entities = texts_of(info["texts"], pid)
    counts.update(c)
    counts["annotations"] += len(new_texts)
    suffix = ".bdf" if info["filetype"] in (2, 3) else ".edf"
    dst = dst_dir / f"{pseudonym}{suffix}"
    if dst.resolve() == src.resolve():
        raise _err(where, "the destination is the source file; write to another folder")
    counts["file_names_pseudonymised"] += 1
    tmp = _write_tmp(dst)
    try:
        _write_edf(tmp, info, pseudonym, start, new_texts, where)
        if verify:
            _verify_edf(tmp, info, start, where)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    counts["samples_unchanged_checked" if verify else "samples_not_checked"] += 1
    return {
        "format": "edf",
        "name": dst.name,
        "counts": dict(counts),
        "entities": dict(entities),
    }


# ---------------------------------------------------------------------------------------
# WFDB

# bytes per sample of the WFDB storage formats whose file size the header fixes
_WFDB_BYTES = {
    "8": 1.0,
    "16": 2.0,
    "24": 3.0,
    "32": 4.0,
    "61": 2.0,
    "80": 1.0,
    "160": 2.0,
    "212": 1.5,
    "310": 4 / 3,
    "311": 4 / 3,
}
_FORMAT = re.compile(r"(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<off>\d+))?$")
_SLASH_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})$")
_NAMED_DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})$")
_TIME = re.compile(r"\[?\d{1,2}(?::\d{1,2}){0,2}(?:\.\d+)?\]?$")
_COMMENT = re.compile(r"^(?P<lead>\s*#\s*)(?P<key>[^\s:]+)(?P<sep>\s*:\s*)(?P<value>.*)$")
_UNKNOWN = frozenset({"", "unknown", "nan", "na", "n/a", "none", "?"})
_AGE = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*(?:y|yr|yrs|year|years)?", re.IGNORECASE)
_DATA_SUFFIXES = (".dat", ".mat")


def _record_base(path: Path) -> Path:
    return path.with_suffix("") if path.suffix.lower() in (".hea", ".dat", ".mat") else path


def _shift_date_token(token: str, days: int) -> str | None:
    """A WFDB base date moved by ``days``, in its own form; None when it is no date."""
    m = _SLASH_DATE.match(token)
    if m:
        try:
            d = dt.date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
        except ValueError:
            return None
        d += dt.timedelta(days=days)
        return f"{d.day:02d}/{d.month:02d}/{d.year:04d}"
    m = _NAMED_DATE.match(token)
    if m and m.group(2).upper() in _MONTHS:
        try:
            d = dt.date(int(m.group(3)), _MONTHS.index(m.group(2).upper()) + 1, int(m.group(1)))
        except ValueError:
            return None
        d += dt.timedelta(days=days)
        mon = _MONTHS[d.month - 1]
        old = m.group(2)
        mon = mon if old.isupper() else (mon.lower() if old.islower() else mon.title())
        return f"{d.day:02d}-{mon}-{d.year:04d}"
    return None


def _age(value: str) -> str | None:
    """The value kept for an ``Age`` comment: ``90+`` over 89, unchanged otherwise; None
    when it is not an age (removed)."""
    v = value.strip()
    if v.lower() in _UNKNOWN or v == "90+":
        return v
    m = _AGE.fullmatch(v)
    if m is None:
        return None
    return "90+" if float(m.group(1)) > 89 else v


def _clean_prefix(head: bytes, is_mat: bool) -> bytes:
    """Bytes before the samples: kept only when they are a MATLAB v4 header naming the
    variable ``val`` (what WFDB's .mat files hold); zeros otherwise."""
    if is_mat and len(head) >= 24:
        mopt, _rows, _cols, imagf, namlen = struct.unpack("<5i", head[:20])
        if mopt in (0, 10, 20, 30) and imagf == 0 and 20 + namlen == len(head):
            if head[20:] == b"val\x00":
                return head
    return bytes(len(head))


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def deidentify_wfdb(
    src: str | os.PathLike[str],
    dst_dir: str | os.PathLike[str],
    key: PrivacyKey,
    patient_id: object,
    *,
    where: str | None = None,
    keep_comments: Sequence[str] = KEEP_COMMENTS,
    max_shift_days: int = 365,
    verify: bool = True,
) -> dict[str, Any]:
    """De-identify one WFDB record (``rec``, ``rec.hea``, ``rec.dat`` ...) into
    ``dst_dir/<pseudonym>.hea`` and its data files (module doc); ``keep_comments``: the
    comment keys kept (case-insensitive). Returns ``{"format", "name", "counts",
    "entities"}``; ``name`` is the record path without extension."""
    import wfdb

    rec = _record_base(Path(src))
    where = str(_record_base(Path(where or str(rec))))
    hea = Path(f"{rec}.hea")
    if not hea.is_file():
        raise _err(f"{where}.hea", "WFDB header not found")
    try:
        text = _read_text(hea)
        h = wfdb.rdheader(str(rec))
    except Exception:  # noqa: BLE001 - any parser failure becomes a named error
        raise _err(f"{where}.hea", "unreadable WFDB header") from None
    if getattr(h, "seg_name", None) is not None:
        raise _err(f"{where}.hea", "multi-segment WFDB records are not supported")
    pid = str(patient_id)
    pseudonym = key.pseudonym(pid)
    lines, files, counts = _wfdb_header_lines(
        text,
        pseudonym,
        key.date_shift_days(pid, max_shift_days),
        {k.lower() for k in keep_comments},
        int(h.n_sig or 0),
        f"{where}.hea",
    )
    names = list(files)
    new_names = {}
    for k, fname in enumerate(names):
        suffix = Path(fname).suffix.lower()
        suffix = suffix if suffix in _DATA_SUFFIXES else ".dat"
        new_names[fname] = f"{pseudonym}{suffix}" if len(names) == 1 else f"{pseudonym}_{k}{suffix}"
    counts["data_file_names_pseudonymised"] += len(names)
    header = "\n".join(
        line if isinstance(line, str) else new_names[line[0]] + line[1] for line in lines
    )
    dst_dir = Path(dst_dir)
    if dst_dir.resolve() == rec.parent.resolve() and rec.name == pseudonym:
        raise _err(f"{where}.hea", "the destination is the source record; write to another folder")
    sig_len = int(h.sig_len or 0)
    written: list[Path] = []
    try:
        for fname, new in new_names.items():
            lay = files[fname]
            dstf = dst_dir / new
            tmp = _write_tmp(dstf)
            written.append(tmp)
            counts.update(
                _copy_data(rec.parent / fname, tmp, lay, sig_len, str(Path(where).parent / fname))
            )
            os.replace(tmp, dstf)
            written[-1] = dstf
        # the header makes the record visible: written last, and read back first under a
        # hidden name when verifying
        fd, name = tempfile.mkstemp(prefix=f".{pseudonym}.", suffix=".hea", dir=dst_dir)
        probe = Path(name)
        written.append(probe)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(header + "\n")
        if verify:
            _verify_wfdb(rec, probe.with_suffix(""), where)
        _fsync(probe)
        os.replace(probe, dst_dir / f"{pseudonym}.hea")
        written[-1] = dst_dir / f"{pseudonym}.hea"
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    counts["samples_unchanged_checked" if verify else "samples_not_checked"] += 1
    return {"format": "wfdb", "name": pseudonym, "counts": dict(counts), "entities": {}}


def _wfdb_header_lines(
    text: str, pseudonym: str, days: int, allowed: set[str], n_sig: int, where: str
) -> tuple[list[str | tuple[str, str]], dict[str, dict[str, Any]], Counter]:
    """The header's lines de-identified; a signal line is ``(data file name, rest of the
    line)`` so the caller names the files. Also each data file's layout (byte offset,
    bytes per frame when the format fixes it) and the counts."""
    counts: Counter = Counter()
    out: list[str | tuple[str, str]] = []
    files: dict[str, dict[str, Any]] = {}
    record_done = False
    signals = 0
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            m = _COMMENT.match(line)
            if m is None or m.group("key").lower() not in allowed:
                counts["comments_dropped"] += 1
                continue
            value = m.group("value").strip()
            if m.group("key").lower() == "age":
                new = _age(value)
                if new is None:
                    counts["comments_dropped"] += 1
                    continue
                counts["ages_over_89_to_90_plus"] += int(new != value)
                value = new
            counts[f"comments_kept_{m.group('key').lower()}"] += 1
            out.append(f"{m.group('lead').lstrip()}{m.group('key')}{m.group('sep')}{value}")
            continue
        tokens = stripped.split()
        if not record_done:
            record_done = True
            if "/" in tokens[0]:
                raise _err(where, "multi-segment WFDB records are not supported")
            counts["record_names_pseudonymised"] += 1
            kept = [pseudonym, *tokens[1:4]]
            for tok in tokens[4:]:
                moved = _shift_date_token(tok, days)
                if moved is not None:
                    kept.append(moved)
                    counts["base_dates_shifted"] += 1
                elif _TIME.match(tok):
                    kept.append(tok)  # the time of day is kept
                else:
                    counts["record_line_values_dropped"] += 1
            out.append(" ".join(kept))
            continue
        if signals >= n_sig:
            counts["lines_dropped"] += 1
            continue
        signals += 1
        fname = tokens[0]
        if fname == "~":
            out.append(stripped)
            continue
        out.append((fname, stripped[len(fname) :]))
        lay = files.setdefault(fname, {"offset": 0, "bytes": 0.0, "known": True})
        fm = _FORMAT.match(tokens[1]) if len(tokens) > 1 else None
        if fm is None or fm.group("fmt") not in _WFDB_BYTES:
            lay["known"] = False
        else:
            lay["offset"] = max(lay["offset"], int(fm.group("off") or 0))
            lay["bytes"] += _WFDB_BYTES[fm.group("fmt")] * int(fm.group("spf") or 1)
    if not record_done:
        raise _err(where, "unreadable WFDB header (no record line)")
    return out, files, counts


def _copy_data(src: Path, tmp: Path, layout: dict[str, Any], sig_len: int, where: str) -> Counter:
    """Copy one data file: the prefix before the samples cleaned, bytes after the last
    sample (when the format fixes the size) dropped."""
    counts: Counter = Counter()
    if not src.is_file():
        raise _err(where, "WFDB data file not found")
    size = src.stat().st_size
    keep = size
    if layout["known"] and sig_len > 0:
        exact = layout["bytes"] * sig_len
        need = layout["offset"] + math.ceil(exact)
        if size < need:
            raise _err(where, f"WFDB data file truncated: {size} bytes, the header implies {need}")
        if exact == int(exact) and size > need:
            keep = need
            counts["data_file_trailing_bytes_dropped"] += size - need
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        head = fi.read(layout["offset"])
        clean = _clean_prefix(head, src.suffix.lower() == ".mat")
        counts["data_file_prefix_bytes_blanked"] += int(clean != head) * len(head)
        fo.write(clean)
        left = keep - len(head)
        while left > 0:
            chunk = fi.read(min(left, 1 << 22))
            if not chunk:
                break
            fo.write(chunk)
            left -= len(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    return +counts


def _verify_wfdb(src_rec: Path, probe_rec: Path, where: str) -> None:
    """The written record's digital samples must equal the input's."""
    import wfdb

    try:
        a = wfdb.rdrecord(str(src_rec), physical=False)
        b = wfdb.rdrecord(str(probe_rec), physical=False)
    except Exception:  # noqa: BLE001
        raise _err(where, "the de-identified record cannot be read back") from None
    same = (
        a.d_signal is not None
        and b.d_signal is not None
        and a.d_signal.shape == b.d_signal.shape
        and np.array_equal(a.d_signal, b.d_signal)
        and float(a.fs) == float(b.fs)
        and list(a.adc_gain) == list(b.adc_gain)
        and list(a.baseline) == list(b.baseline)
    )
    if not same:
        raise _err(where, "the de-identified record's samples differ from the input's")


# ---------------------------------------------------------------------------------------
# dispatch


def deidentify_signal_record(
    src: str | os.PathLike[str],
    dst_dir: str | os.PathLike[str],
    key: PrivacyKey,
    patient_id: object,
    *,
    where: str | None = None,
    annotations: str = "deidentify",
    notes: Any = None,
    keep_comments: Sequence[str] = KEEP_COMMENTS,
    max_shift_days: int = 365,
    verify: bool = True,
    texts: AnnotationTexts | None = None,
) -> dict[str, Any]:
    """An EDF file (:func:`deidentify_edf`) or a WFDB record (:func:`deidentify_wfdb`) by
    its path."""
    src = Path(src)
    where = where or str(src)
    if src.suffix.lower() in EDF_SUFFIXES:
        return deidentify_edf(
            src,
            dst_dir,
            key,
            patient_id,
            where=where,
            annotations=annotations,
            notes=notes,
            max_shift_days=max_shift_days,
            verify=verify,
            texts=texts,
        )
    if not Path(f"{_record_base(src)}.hea").is_file():
        raise _err(
            str(_record_base(Path(where))) + ".hea",
            "not an EDF file and no WFDB header found",
        )
    return deidentify_wfdb(
        src,
        dst_dir,
        key,
        patient_id,
        where=where,
        keep_comments=keep_comments,
        max_shift_days=max_shift_days,
        verify=verify,
    )


# ---------------------------------------------------------------------------------------
# the independent checker: its own parsing of EDF and WFDB headers, none of the code above

_CHECK_PSEUDONYM = r"P-[0-9a-f]{20}"
_CHECK_EDF_PATIENT = re.compile(rf"(?:X|{_CHECK_PSEUDONYM}) X X X")
_CHECK_EDF_RECORDING = re.compile(r"Startdate (X|\d{2}-[A-Z]{3}-\d{4}) X X X")
_CHECK_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
_CHECK_ALLOWED_COMMENTS = frozenset({"age", "sex", "dx"})
_CHECK_TEXT_SUFFIXES = (".edf", ".bdf", ".rec")


def _edf_header(raw: bytes) -> dict[str, Any]:
    """The fixed EDF header and the signal headers, parsed from bytes."""
    if len(raw) < 256:
        raise ValueError("short header")
    ns = int(raw[252:256].decode("ascii").strip())
    need = 256 * (ns + 1)
    if len(raw) < need:
        raise ValueError("short header")

    def fields(offset: int, width: int) -> list[str]:
        return [
            raw[offset + i * width : offset + (i + 1) * width].decode("latin-1").strip()
            for i in range(ns)
        ]

    o = 256
    labels = fields(o, 16)
    o += 16 * ns
    transducer = fields(o, 80)
    o += 80 * ns
    dimension = fields(o, 8)
    o += 8 * ns
    o += 8 * ns * 4  # physical and digital ranges
    prefilter = fields(o, 80)
    o += 80 * ns
    spr = [int(v) for v in fields(o, 8)]
    return {
        "bdf": raw[0] == 0xFF,
        "patient": raw[8:88].decode("latin-1").strip(),
        "recording": raw[88:168].decode("latin-1").strip(),
        "startdate": raw[168:176].decode("latin-1").strip(),
        "starttime": raw[176:184].decode("latin-1").strip(),
        "header_bytes": int(raw[184:192].decode("ascii").strip()),
        "reserved": raw[192:236].decode("latin-1").strip(),
        "nrec": int(raw[236:244].decode("ascii").strip()),
        "ns": ns,
        "labels": labels,
        "transducer": transducer,
        "dimension": dimension,
        "prefilter": prefilter,
        "spr": spr,
        "text": raw[:need].decode("latin-1"),
    }


def _edf_annotation_texts(path: Path, hdr: dict[str, Any]) -> list[str]:
    """The text of every TAL in the file's annotation signals."""
    ann = [
        i for i, lab in enumerate(hdr["labels"]) if lab in ("EDF Annotations", "BDF Annotations")
    ]
    if not ann:
        return []
    width = 3 if hdr["bdf"] else 2
    offsets = np.cumsum([0, *hdr["spr"]]) * width
    rec = int(offsets[-1])
    texts: list[str] = []
    size = path.stat().st_size
    nrec = hdr["nrec"] if hdr["nrec"] >= 0 else (size - hdr["header_bytes"]) // max(rec, 1)
    if rec == 0 or nrec <= 0:
        return []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for r in range(nrec):
            base = hdr["header_bytes"] + r * rec
            for i in ann:
                chunk = mm[base + int(offsets[i]) : base + int(offsets[i + 1])]
                for tal in chunk.split(b"\x00"):
                    parts = tal.split(b"\x14")
                    for part in parts[1:]:
                        if part.strip():
                            texts.append(part.decode("utf-8", errors="replace"))
    return texts


def _edf_date(startdate: str, starttime: str) -> dt.datetime | None:
    try:
        d, m, y = (int(v) for v in startdate.split("."))
        hh, mi, ss = (int(v) for v in starttime.split("."))
        return dt.datetime(1900 + y if y >= 85 else 2000 + y, m, d, hh, mi, ss)
    except ValueError:
        return None


_CHECK_GENERIC_WORDS = frozenset(
    "patient recording description startdate unknown anonymous anonymised anonymized test "
    "file unit none male female".split()
)


def _identifying_words(hdr: dict[str, Any]) -> list[str]:
    """Values of an original EDF header's patient and recording fields worth searching for
    (the EDF+ placeholders, the sex letter and the start date excepted)."""
    words: set[str] = set()
    patient = hdr["patient"].split()
    recording = hdr["recording"].split()
    if recording[:1] == ["Startdate"]:
        recording = recording[2:]
    for i, tok in enumerate(patient + recording):
        if tok in ("X", "x") or (i == 1 and tok in ("M", "F")):
            continue
        parts = {tok, *re.split(r"[_,\s]+", tok)}
        words.update(p for p in parts if (len(p) >= 3 and not p.isdigit()) or len(p) >= 5)
    return sorted(w for w in words if w.lower() not in _CHECK_GENERIC_WORDS)


def _check_edf(path: Path, original: Path | None) -> list[str]:
    found: list[str] = []
    try:
        with open(path, "rb") as f:
            raw = f.read(256)
            ns = int(raw[252:256].decode("ascii").strip())
            raw += f.read(256 * ns)
        hdr = _edf_header(raw)
    except (OSError, ValueError):
        return ["file: unreadable EDF header"]
    if not re.fullmatch(rf"{_CHECK_PSEUDONYM}(_\d+)?", path.stem):
        found.append("file name: not a pseudonym")
    patient = " ".join(hdr["patient"].split())
    if patient and not _CHECK_EDF_PATIENT.fullmatch(patient):
        found.append("patient field: holds values other than a pseudonym and X placeholders")
    code = patient.split()[0] if patient else ""
    if code.startswith("P-") and code != path.stem.split("_")[0]:
        found.append("patient field: pseudonym differs from the file name's")
    recording = " ".join(hdr["recording"].split())
    m = _CHECK_EDF_RECORDING.fullmatch(recording)
    if recording and m is None:
        found.append("recording field: holds values other than the start date and X placeholders")
    start = _edf_date(hdr["startdate"], hdr["starttime"])
    if start is None:
        found.append("start date: unreadable")
    elif m is not None and m.group(1) != "X":
        d, mon, y = m.group(1).split("-")
        if (int(d), _CHECK_MONTHS.index(mon) + 1, int(y)) != (start.day, start.month, start.year):
            found.append("recording field: start date differs from the header's")
    plus = hdr["reserved"].startswith(("EDF+", "BDF+"))
    if not plus and any(lab in ("EDF Annotations", "BDF Annotations") for lab in hdr["labels"]):
        found.append("signals: a plain EDF file carries an annotation signal (free text)")
    texts = _edf_annotation_texts(path, hdr)
    if original is not None:
        try:
            with open(original, "rb") as f:
                oraw = f.read(256)
                ons = int(oraw[252:256].decode("ascii").strip())
                oraw += f.read(256 * ons)
            ohdr = _edf_header(oraw)
        except (OSError, ValueError):
            return [*found, "original: unreadable EDF header"]
        ostart = _edf_date(ohdr["startdate"], ohdr["starttime"])
        if (
            start is not None
            and ostart is not None
            and start.date() == ostart.date()
            and start.date() != dt.date(1985, 1, 1)
        ):
            found.append("start date: equals the original's")
        words = _identifying_words(ohdr)
        header_text = hdr["text"].lower()
        for w in words:
            if w.lower() in header_text:
                found.append("header: holds a value of the original's patient or recording field")
                break
        for w in words:
            if any(w.lower() in t.lower() for t in texts):
                found.append(
                    "annotations: hold a value of the original's patient or recording field"
                )
                break
        if ostart is not None:
            forms = (
                f"{ostart.day:02d}-{_CHECK_MONTHS[ostart.month - 1]}-{ostart.year}",
                f"{ostart.day:02d}.{ostart.month:02d}.{ostart.year}",
                f"{ostart.month:02d}/{ostart.day:02d}/{ostart.year}",
                ostart.date().isoformat(),
            )
            if ostart.date() != dt.date(1985, 1, 1) and any(
                f.lower() in t.lower() for t in texts for f in forms
            ):
                found.append("annotations: hold the original start date")
    return found


def _wfdb_date(token: str) -> dt.date | None:
    m = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", token)
    try:
        if m:
            return dt.date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
        m = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", token)
        if m and m.group(2).upper() in _CHECK_MONTHS:
            month = _CHECK_MONTHS.index(m.group(2).upper()) + 1
            return dt.date(int(m.group(3)), month, int(m.group(1)))
    except ValueError:
        return None
    return None


def _wfdb_lines(hea: Path) -> tuple[list[str], list[str]]:
    """(record and signal lines, comment lines) of a WFDB header."""
    raw = hea.read_bytes().decode("latin-1")
    body, comments = [], []
    for line in raw.splitlines():
        s = line.strip()
        if not s:
            continue
        (comments if s.startswith("#") else body).append(s)
    return body, comments


def _check_wfdb(path: Path, original: Path | None, allowed: frozenset[str]) -> list[str]:
    found: list[str] = []
    base = path.with_suffix("") if path.suffix.lower() in (".hea", ".dat", ".mat") else path
    hea = Path(f"{base}.hea")
    try:
        body, comments = _wfdb_lines(hea)
    except OSError:
        return ["file: WFDB header unreadable"]
    if not body:
        return ["header: no record line"]
    rec = body[0].split()
    name = rec[0]
    if not re.fullmatch(_CHECK_PSEUDONYM, name):
        found.append("record line: record name is not a pseudonym")
    if name != base.name:
        found.append("record line: record name differs from the file name")
    dates = [d for d in (_wfdb_date(t) for t in rec[4:]) if d is not None]
    for tok in rec[4:]:
        if _wfdb_date(tok) is None and not re.fullmatch(r"\[?[\d:.]+\]?", tok):
            found.append("record line: a value that is neither a base time nor a date")
    n_sig = int(rec[1]) if len(rec) > 1 and rec[1].isdigit() else 0
    for k, line in enumerate(body[1 : 1 + n_sig]):
        toks = line.split()
        fname = toks[0]
        if fname == "~":
            continue
        if not re.fullmatch(rf"{re.escape(name)}(_\d+)?\.(dat|mat)", fname):
            found.append(f"signal line {k + 1}: data file name is not the record's pseudonym")
        m = re.fullmatch(r"\d+(?:x\d+)?(?::\d+)?(?:\+(\d+))?", toks[1] if len(toks) > 1 else "")
        offset = int(m.group(1) or 0) if m else 0
        f = hea.parent / fname
        if offset and f.is_file():
            with open(f, "rb") as fh:
                head = fh.read(offset)
            mat_ok = (
                fname.endswith(".mat")
                and len(head) == offset >= 24
                and head[20:24] == b"val\x00"
                and struct.unpack("<i", head[16:20])[0] == offset - 20
            )
            if any(head) and not mat_ok:
                found.append(f"signal line {k + 1}: bytes before the samples are not blank")
    if len(body) > 1 + n_sig:
        found.append("header: lines after the signal lines")
    for k, c in enumerate(comments):
        m = re.fullmatch(r"#\s*([^\s:]+)\s*:\s*(.*)", c)
        if m is None:
            found.append(f"comment {k + 1}: free text (not key: value)")
            continue
        key, value = m.group(1).lower(), m.group(2).strip()
        if key not in allowed:
            found.append(f"comment {k + 1}: key not on the allow-list")
        elif key == "age" and value.lower() not in _UNKNOWN and value != "90+":
            a = re.fullmatch(r"(\d{1,3}(?:\.\d+)?)\s*(?:y|yr|yrs|years?)?", value, re.I)
            if a is None:
                found.append(f"comment {k + 1}: age is not a number")
            elif float(a.group(1)) > 89:
                found.append(f"comment {k + 1}: age over 89")
    if original is not None:
        obase = (
            original.with_suffix("")
            if original.suffix.lower() in (".hea", ".dat", ".mat")
            else original
        )
        try:
            obody, _ = _wfdb_lines(Path(f"{obase}.hea"))
        except OSError:
            return [*found, "original: WFDB header unreadable"]
        orec = obody[0].split() if obody else []
        odates = [d for d in (_wfdb_date(t) for t in orec[4:]) if d is not None]
        if odates and dates and set(odates) & set(dates):
            found.append("record line: base date equals the original's")
        if orec and len(orec[0]) >= 3:
            text = hea.read_bytes().decode("latin-1")
            if orec[0] in text:
                found.append("header: holds the original record name")
    return found


def check_signal_record(
    path: str | os.PathLike[str],
    original: str | os.PathLike[str] | None = None,
    allowed_comments: Iterable[str] | None = None,
) -> list[str]:
    """Every field of a de-identified EDF file or WFDB record (its ``.hea``) that still
    holds a value that is not allowed, as generic findings (no values): an EDF patient
    field other than ``<pseudonym> X X X``, a recording field other than ``Startdate
    <date> X X X``, a file or record name that is not a pseudonym, a WFDB comment whose key
    is not on ``allowed_comments`` (default ``Age``, ``Sex``, ``Dx``) or an age over 89,
    non-blank bytes before a data file's samples. Given ``original`` (the input file or
    record), also a start/base date equal to the original's and any value of the
    original's patient/recording fields (EDF) or its record name (WFDB) found again in the
    header or, for EDF+, in an annotation. An empty list: nothing found."""
    p = Path(path)
    o = Path(original) if original is not None else None
    if p.suffix.lower() in _CHECK_TEXT_SUFFIXES:
        return _check_edf(p, o)
    allowed = (
        _CHECK_ALLOWED_COMMENTS
        if allowed_comments is None
        else frozenset(k.lower() for k in allowed_comments)
    )
    return _check_wfdb(p, o, allowed)
