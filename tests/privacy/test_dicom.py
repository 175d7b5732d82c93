"""DICOM de-identification: the profile on real and fully-populated files, keyed UIDs and
dates, quarantine, bad input, atomic writes, folders, and the independent checker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from holomed.errors import PrivacyError
from holomed.privacy.dicom import (
    PROFILE_TABLE,
    check_dicom,
    deidentify_dataset,
    deidentify_dicom,
    deidentify_dicom_folder,
)
from holomed.privacy.keys import PrivacyKey

KEY = PrivacyKey(b"holomed-test-key-0123456789abcdef")
OTHER_KEY = PrivacyKey(b"another-test-key-0123456789abcdef")

# shipped with pydicom (no download); a name that is absent is skipped
SHIPPED = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "rtstruct.dcm",
    "test-SR.dcm",
    "reportsi.dcm",
    "waveform_ecg.dcm",
    "examples_overlay.dcm",
    "examples_jpeg2k.dcm",
    "liver_1frame.dcm",
]

NAME, MRN = "Roe^Johnathan", "MRN-4711"
ORIG_UID = "1.2.826.0.1.3680043.2.1143.4711"
VALUES = {
    "AE": "ROESTATION",
    "AS": "045Y",
    "CS": "ROE",
    "DA": "20200115",
    "DS": "12.5",
    "DT": "20200115083000",
    "IS": "42",
    "LO": "Johnathan Roe MRN-4711",
    "LT": "Johnathan Roe, 1 Main Street",
    "PN": NAME,
    "SH": MRN,
    "ST": "Johnathan Roe, 1 Main Street",
    "TM": "083000",
    "UC": "Johnathan Roe",
    "UI": ORIG_UID,
    "UR": "http://hospital.example/roe",
    "UT": "Johnathan Roe narrative",
    "FL": 1.5,
    "FD": 1.5,
    "SL": 7,
    "SS": 7,
    "UL": 7,
    "US": 7,
    "SV": 7,
    "UV": 7,
    "AT": 0x00100010,
}


def _shipped(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not shipped with this pydicom")
    return Path(path)


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _identifying_item() -> Dataset:
    item = Dataset()
    item.PatientName = NAME
    item.PatientID = MRN
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = ORIG_UID + ".9"
    item.StudyDate = "20200115"
    item.InstitutionName = "Roe Memorial Hospital"
    return item


def _fill(ds: Dataset, with_command_group: bool = False) -> list[int]:
    """Every attribute of the checker's table with an identifying value (plus curve and
    overlay groups); the tags filled."""
    filled = []
    for tag, _kw, _action, _dates in PROFILE_TABLE:
        group = tag >> 16
        if group == 0x0002 or (group == 0x0000 and not with_command_group):
            continue
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr == "SQ":
            value = Sequence([_identifying_item()])
        elif vr.startswith("O") or vr == "UN":
            value = b"ROE-4711"
        else:
            value = VALUES[vr]
        ds.add_new(tag, vr, value)
        filled.append(tag)
    for tag, vr, value in (
        (0x50003000, "OB", b"ROE-4711"),
        (0x60003000, "OW", b"ROE-4711"),
        (0x60004000, "LT", "Johnathan Roe"),
    ):
        ds.add_new(tag, vr, value)
        filled.append(tag)
    return filled


def _private(ds: Dataset) -> None:
    block = ds.private_block(0x0009, "HOLOMED TEST", create=True)
    block.add_new(0x01, "LO", NAME)
    block.add_new(0x02, "SQ", Sequence([_identifying_item()]))


def _populated_file(path: Path, patient: str = MRN, sop: str | None = None) -> Path:
    """A small CT-like file where every table attribute holds an identifying value, at
    the top level and inside a sequence the table does not list; private attributes at
    both levels; 8x8 pixels."""
    ds = Dataset()
    _fill(ds)
    nested = Dataset()
    _fill(nested)
    _private(nested)
    ds.ReferencedSeriesSequence = Sequence([nested])  # not in the table: walked
    _private(ds)
    ds.PatientID = patient
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = sop or generate_uid()
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "NO"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
    ds.PixelRepresentation, ds.PhotometricInterpretation = 0, "MONOCHROME2"
    ds.PixelData = bytes(range(128))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _ct(tmp: Path, name: str, **attrs: object) -> Path:
    """CT_small.dcm with some attributes set, written to ``tmp/name``."""
    ds = pydicom.dcmread(_shipped("CT_small.dcm"))
    with warnings.catch_warnings():  # some tests set invalid values on purpose
        warnings.simplefilter("ignore")
        for kw, value in attrs.items():
            setattr(ds, kw, value)
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


# -- the checker's own table --------------------------------------------------------------


def test_profile_table_is_consistent_with_the_dictionary() -> None:
    tags = [t for t, *_ in PROFILE_TABLE]
    assert len(tags) == len(set(tags)) >= 400
    for tag, keyword, action, dates in PROFILE_TABLE:
        assert keyword_for_tag(tag) == keyword, _tag_text(tag)
        assert action in {"X", "Z", "D", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
        if dates:  # the modified-dates option cleans dates and times only
            assert dictionary_VR(tag) in ("DA", "DT", "TM") or keyword in (
                "TimezoneOffsetFromUTC",
                "FrameOriginTimestamp",
            )
    keywords = {kw for _, kw, *_ in PROFILE_TABLE}
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientAddress", "OtherPatientIDs",
               "InstitutionName", "ReferringPhysicianName", "AccessionNumber", "StudyID",
               "DeviceSerialNumber", "StationName", "MedicalRecordLocator", "ContentCreatorName",
               "PatientMotherBirthName", "MilitaryRank", "EthnicGroup", "Occupation"):  # fmt: skip
        assert kw in keywords


# -- shipped files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_is_clean_after_and_flagged_before(name: str, tmp_path: Path) -> None:
    src = _shipped(name)
    original = pydicom.dcmread(src, force=True)
    before = check_dicom(src)
    assert before, "the checker must flag the identified original"
    assert any("PatientIdentityRemoved" in m for m in before)
    pid = None if str(original.get("PatientID", "")).strip() else "P0001"
    report = deidentify_dicom(src, tmp_path / "out.dcm", KEY, patient_id=pid)
    assert report["status"] == "deidentified"
    assert check_dicom(tmp_path / "out.dcm") == []
    out = pydicom.dcmread(tmp_path / "out.dcm")
    for kw in ("PixelData", "WaveformSequence"):
        if kw in original:
            assert kw in out
    if "PixelData" in original:
        assert out.PixelData == original.PixelData
    assert report["no_pixel_data"] == ("PixelData" not in original)
    assert out.PatientID == KEY.pseudonym(pid or original.PatientID)
    assert out.PatientName == out.PatientID
    # counts only: no value read from the file appears in the report
    text = json.dumps(report)
    for value in (original.get("PatientID"), original.get("StudyInstanceUID")):
        if value:
            assert str(value) not in text


def test_private_tags_flagged_then_removed(tmp_path: Path) -> None:
    src = _shipped("CT_small.dcm")
    before = check_dicom(src)
    assert any("private attribute" in m for m in before)
    report = deidentify_dicom(src, tmp_path / "o.dcm", KEY)
    assert report["counts"]["private_removed"] > 0
    assert not any(e.tag.is_private for e in pydicom.dcmread(tmp_path / "o.dcm").iterall())


def test_preamble_and_file_meta_are_replaced(tmp_path: Path) -> None:
    src = _shipped("CT_small.dcm")  # its preamble holds a TIFF header
    assert "file preamble (128 bytes) is not blank" in check_dicom(src)
    deidentify_dicom(src, tmp_path / "o.dcm", KEY)
    out = pydicom.dcmread(tmp_path / "o.dcm")
    assert out.preamble == b"\x00" * 128
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.ImplementationVersionName == "HOLOMED_DEID"
    codes = [
        (i.CodeValue, i.CodingSchemeDesignator) for i in out.DeidentificationMethodCodeSequence
    ]
    assert codes == [("113100", "DCM"), ("113107", "DCM")]
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


# -- every attribute of the table ---------------------------------------------------------


def test_every_table_attribute_is_flagged_then_cleaned(tmp_path: Path) -> None:
    src = _populated_file(tmp_path / "in.dcm")
    before = check_dicom(src)
    filled = [t for t, *_ in PROFILE_TABLE if t >> 16 not in (0x0000, 0x0002)]
    filled += [0x50003000, 0x60003000, 0x60004000]
    flagged_top = {m.split(" ", 1)[0] for m in before if m.startswith("(")}
    missing = [_tag_text(t) for t in filled if _tag_text(t) not in flagged_top]
    assert missing == [], "the checker misses identifying values"
    assert any(m.startswith("(0008,1115) ReferencedSeriesSequence[0] > ") for m in before)
    assert any(m.startswith("file meta (0002,0003)") for m in before)

    report = deidentify_dicom(src, tmp_path / "out.dcm", KEY)
    assert report["status"] == "deidentified"
    assert check_dicom(tmp_path / "out.dcm") == []
    out = pydicom.dcmread(tmp_path / "out.dcm")
    assert out.PixelData == bytes(range(128))
    shift = KEY.date_shift_days(MRN)
    assert shift < 0
    import datetime as dt

    expected = (dt.date(2020, 1, 15) + dt.timedelta(days=shift)).strftime("%Y%m%d")
    assert out.StudyDate == expected
    assert out.ReferencedSeriesSequence[0].StudyDate == expected
    assert out.AcquisitionDateTime == expected + "083000"  # the time of day is kept
    assert out.StudyTime == "083000"
    assert out.PatientBirthDate == ""
    assert "PatientBirthTime" not in out
    assert out.StudyInstanceUID == KEY.uid(ORIG_UID)
    nested = out.ReferencedSeriesSequence[0]
    assert nested.StudyInstanceUID == KEY.uid(ORIG_UID)
    assert nested.PatientID == KEY.pseudonym(VALUES["LO"])  # a nested id: its own pseudonym
    ref = out.ReferencedImageSequence[0]  # X/Z/U*: kept, UIDs replaced
    assert ref.ReferencedSOPInstanceUID == KEY.uid(ORIG_UID + ".9")
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ref.PatientName == "" and ref.InstitutionName in ("", "ANONYMIZED")
    assert "RequestAttributesSequence" not in out
    assert len(out.ReferencedStudySequence) == 0
    for kind in ("removed", "emptied", "replaced", "uids_remapped", "dates_shifted"):
        assert report["counts"][kind] > 0
    assert report["counts"]["private_removed"] == 3 * 2  # creator + 2 elements, 2 levels
    text = json.dumps(report)
    assert MRN not in text and "Roe" not in text and ORIG_UID not in text


def test_every_table_attribute_in_memory_including_command_group() -> None:
    ds = Dataset()
    filled = _fill(ds, with_command_group=True)
    _private(ds)
    ds.PatientID = MRN
    before = check_dicom(ds)
    assert {_tag_text(t) for t in filled} <= {m.split(" ", 1)[0] for m in before}
    report = deidentify_dataset(ds, KEY)
    assert check_dicom(ds) == []
    assert report["no_pixel_data"] is True
    assert ds[0x00001001].value == KEY.uid(ORIG_UID)  # Requested SOP Instance UID (U)
    assert 0x00001000 not in ds  # Affected SOP Instance UID (X)


def test_checker_flags_what_the_profile_forbids() -> None:
    ds = Dataset()
    ds.PatientIdentityRemoved = "YES"
    ds.PatientName = "P-0123456789abcdef0123"  # a pseudonym: accepted
    ds.PatientID = "ANONYMIZED"  # a dummy: accepted
    ds.OtherPatientIDs = "MRN-1"  # X
    ds.StudyDate = "20200101"  # a date without the 113107 option declared
    ds.PatientBirthDate = "19700101"  # never kept
    ds.StudyInstanceUID = "1.2.3.4"  # U, not under 2.25
    ds.ConcatenationFrameOffsetNumber = 0
    ds.MappingResourceUID = "1.2.840.10008.8.1.1"  # DICOM root: accepted
    ds.ReferencedSeriesSequence = Sequence([Dataset()])
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.5"
    problems = check_dicom(ds)
    flagged = {m.split(":")[0] for m in problems}
    assert flagged == {
        "(0010,1000) OtherPatientIDs",
        "(0008,0020) StudyDate",
        "(0010,0030) PatientBirthDate",
        "(0020,000D) StudyInstanceUID",
        "(0008,1115) ReferencedSeriesSequence[0] > (0020,000E) SeriesInstanceUID",
    }
    assert not any(v in " ".join(problems) for v in ("MRN-1", "20200101", "1.2.3.4"))
    item = Dataset()
    item.CodeValue = "113107"
    ds.DeidentificationMethodCodeSequence = Sequence([item])
    assert "(0008,0020) StudyDate" not in {m.split(":")[0] for m in check_dicom(ds)}
    del ds.PatientIdentityRemoved
    assert "(0012,0062) PatientIdentityRemoved: not YES" in check_dicom(ds)


# -- keyed UIDs and dates -----------------------------------------------------------------


def test_same_uid_same_output_across_files_calls_and_runs(tmp_path: Path) -> None:
    from dicomanonymizer import simpledicomanonymizer

    study = "1.2.826.0.1.3680043.2.1143.100"
    a = _ct(tmp_path, "a.dcm", StudyInstanceUID=study, SOPInstanceUID=study + ".1")
    b = _ct(tmp_path, "b.dcm", StudyInstanceUID=study, SOPInstanceUID=study + ".2")
    deidentify_dicom(a, tmp_path / "a1.dcm", KEY)
    deidentify_dicom(b, tmp_path / "b1.dcm", KEY)
    deidentify_dicom(a, tmp_path / "a2.dcm", KEY)
    deidentify_dicom(a, tmp_path / "a3.dcm", OTHER_KEY)
    a1, b1, a2, a3 = (
        pydicom.dcmread(tmp_path / f) for f in ("a1.dcm", "b1.dcm", "a2.dcm", "a3.dcm")
    )
    assert a1.StudyInstanceUID == b1.StudyInstanceUID == KEY.uid(study)
    assert a1.SOPInstanceUID != b1.SOPInstanceUID
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert a1[kw].value == a2[kw].value
        assert a1[kw].value != a3[kw].value
        assert a1[kw].value.startswith("2.25.")
    assert a1.PatientID != a3.PatientID
    assert simpledicomanonymizer.dictionary == {}  # its random per-process UIDs are never used

    # another process with the same key gives the same UIDs (dicom-anonymizer's would not)
    script = textwrap.dedent(
        """
        import sys
        from holomed.privacy.dicom import deidentify_dicom
        from holomed.privacy.keys import load_key
        deidentify_dicom(sys.argv[1], sys.argv[2], load_key())
        """
    )
    env = {**os.environ, "HOLOMED_PRIVACY_KEY": KEY.secret.decode(), "OMP_NUM_THREADS": "1"}
    env.pop("HOLOMED_PRIVACY_KEY_FILE", None)
    subprocess.run(
        [sys.executable, "-c", script, str(a), str(tmp_path / "a4.dcm")], check=True, env=env
    )
    a4 = pydicom.dcmread(tmp_path / "a4.dcm")
    assert (a4.StudyInstanceUID, a4.SOPInstanceUID, a4.PatientID, a4.StudyDate) == (
        a1.StudyInstanceUID,
        a1.SOPInstanceUID,
        a1.PatientID,
        a1.StudyDate,
    )


def test_dates_of_one_patient_shift_by_the_same_days(tmp_path: Path) -> None:
    import datetime as dt

    def day(s: str) -> dt.date:
        return dt.datetime.strptime(s, "%Y%m%d").date()

    a = _ct(
        tmp_path,
        "a.dcm",
        PatientID="P0042",
        StudyDate="20200101",
        AcquisitionDateTime="20200101101500.5+0100",
    )
    b = _ct(tmp_path, "b.dcm", PatientID="P0042", StudyDate="20200311")
    c = _ct(tmp_path, "c.dcm", PatientID="P0043", StudyDate="20200101")
    for f in (a, b, c):
        deidentify_dicom(f, tmp_path / f"o-{f.name}", KEY)
    oa, ob, oc = (pydicom.dcmread(tmp_path / f"o-{n}") for n in ("a.dcm", "b.dcm", "c.dcm"))
    shift = KEY.date_shift_days("P0042")
    assert day(oa.StudyDate) - day("20200101") == dt.timedelta(days=shift)
    assert day(ob.StudyDate) - day(oa.StudyDate) == dt.timedelta(days=70)  # interval kept
    assert oa.AcquisitionDateTime == day(oa.StudyDate).strftime("%Y%m%d") + "101500.5+0100"
    assert day(oc.StudyDate) - day("20200101") == dt.timedelta(days=KEY.date_shift_days("P0043"))
    # an explicit patient id overrides the file's and drives pseudonym and shift
    deidentify_dicom(a, tmp_path / "o-x.dcm", KEY, patient_id="cohort-7")
    ox = pydicom.dcmread(tmp_path / "o-x.dcm")
    assert ox.PatientID == KEY.pseudonym("cohort-7")
    assert day(ox.StudyDate) - day("20200101") == dt.timedelta(days=KEY.date_shift_days("cohort-7"))


def test_unparseable_date_is_emptied_and_counted(tmp_path: Path) -> None:
    src = _ct(tmp_path, "a.dcm", StudyDate="2020-13-45", SeriesDate="2020", ContentDate="00010101")
    report = deidentify_dicom(src, tmp_path / "o.dcm", KEY)
    out = pydicom.dcmread(tmp_path / "o.dcm")
    assert out.StudyDate == "" and out.SeriesDate == "" and out.ContentDate == ""
    assert report["counts"]["dates_unparseable_emptied"] == 3
    assert check_dicom(tmp_path / "o.dcm") == []


# -- quarantine ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attrs, reason",
    [
        ({"BurnedInAnnotation": "YES"}, "BurnedInAnnotation is YES"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7.2"}, "secondary capture"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "secondary capture"),
        ({"Modality": "OT"}, "modality OT"),
    ],
)
def test_burned_in_text_is_quarantined_not_written(
    tmp_path: Path, attrs: dict[str, str], reason: str
) -> None:
    src = _ct(tmp_path / "in", "a.dcm", **attrs)
    report = deidentify_dicom(src, tmp_path / "out" / "a.dcm", KEY, quarantine_dir=tmp_path / "q")
    assert report["status"] == "quarantined" and reason in report["reason"]
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "q" / "a.dcm").read_bytes() == src.read_bytes()
    report = deidentify_dicom(src, tmp_path / "out2" / "a.dcm", KEY)  # no quarantine copy
    assert report["status"] == "quarantined" and not (tmp_path / "out2").exists()


def test_shipped_secondary_capture_is_quarantined(tmp_path: Path) -> None:
    src = _shipped("SC_rgb_small_odd.dcm")
    report = deidentify_dicom(src, tmp_path / "o.dcm", KEY)
    assert report["status"] == "quarantined"
    assert not (tmp_path / "o.dcm").exists()


# -- bad input ----------------------------------------------------------------------------


def test_broken_header_names_the_file(tmp_path: Path) -> None:
    good = _shipped("CT_small.dcm").read_bytes()
    broken = tmp_path / "broken_header.dcm"
    broken.write_bytes(good[:128] + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f" + b"\x01" * 40)
    with pytest.raises(PrivacyError, match="broken_header.dcm"):
        deidentify_dicom(broken, tmp_path / "o.dcm", KEY)
    with pytest.raises(PrivacyError, match="broken_header.dcm"):
        check_dicom(broken)
    assert not (tmp_path / "o.dcm").exists()


@pytest.mark.parametrize("content", [b"patient,name\nP0042,Roe\n", b"", b"\x00" * 300])
def test_not_dicom_names_the_file(tmp_path: Path, content: bytes) -> None:
    src = tmp_path / "notes.csv"
    src.write_bytes(content)
    with pytest.raises(PrivacyError, match=r"notes\.csv: not a DICOM file"):
        deidentify_dicom(src, tmp_path / "o.dcm", KEY)


def test_missing_file_and_missing_patient_id(tmp_path: Path) -> None:
    with pytest.raises(PrivacyError, match="nothere.dcm: file not found"):
        deidentify_dicom(tmp_path / "nothere.dcm", tmp_path / "o.dcm", KEY)
    src = _ct(tmp_path, "anon.dcm", PatientID="")
    with pytest.raises(PrivacyError, match="anon.dcm: no Patient ID"):
        deidentify_dicom(src, tmp_path / "o.dcm", KEY)
    assert deidentify_dicom(src, tmp_path / "o.dcm", KEY, "P9")["status"] == "deidentified"


def test_no_pixel_data_is_deidentified_with_a_flag(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_shipped("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(tmp_path / "header_only.dcm")
    report = deidentify_dicom(tmp_path / "header_only.dcm", tmp_path / "o.dcm", KEY)
    assert report["status"] == "deidentified" and report["no_pixel_data"] is True
    assert check_dicom(tmp_path / "o.dcm") == []


def test_destination_equal_to_source_is_refused(tmp_path: Path) -> None:
    src = _ct(tmp_path, "a.dcm")
    with pytest.raises(PrivacyError, match="destination is the source"):
        deidentify_dicom(src, src, KEY)


# -- atomic writes ------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError("disk gone"), KeyboardInterrupt()])
def test_interrupted_write_leaves_no_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    src = _ct(tmp_path / "in", "a.dcm")
    out = tmp_path / "out"

    def write_half_then_fail(fp: object, ds: Dataset, **kwargs: object) -> None:
        fp.write(b"\x00" * 128 + b"DICM" + b"\x02\x00" * 50)  # type: ignore[attr-defined]
        raise error

    monkeypatch.setattr(pydicom, "dcmwrite", write_half_then_fail)
    with pytest.raises(PrivacyError if isinstance(error, Exception) else KeyboardInterrupt):
        deidentify_dicom(src, out / "a.dcm", KEY)
    assert list(out.iterdir()) == []  # neither the file nor a temporary left


def test_interrupted_rewrite_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _ct(tmp_path / "in", "a.dcm")
    dst = tmp_path / "out" / "a.dcm"
    deidentify_dicom(src, dst, KEY)
    first = dst.read_bytes()

    def fail(fp: object, ds: Dataset, **kwargs: object) -> None:
        fp.write(b"partial")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pydicom, "dcmwrite", fail)
    with pytest.raises(PrivacyError, match="writing failed"):
        deidentify_dicom(src, dst, KEY)
    assert dst.read_bytes() == first
    assert [p.name for p in dst.parent.iterdir()] == ["a.dcm"]


# -- folders ------------------------------------------------------------------------------


def _patient_tree(root: Path) -> dict[str, str]:
    """root/<patient id>/<study uid>/<sop uid>.dcm for two patients, one secondary
    capture, one text file and one broken file; the SOP UIDs by file."""
    sops = {}
    for pid, n in (("P0042", 3), ("P0043", 2)):
        study = f"1.2.826.0.1.3680043.2.1143.{int(pid[1:])}"
        for i in range(n):
            sop = f"{study}.{i + 1}"
            _ct(
                root / pid / study,
                f"{sop}.dcm",
                PatientID=pid,
                StudyInstanceUID=study,
                SOPInstanceUID=sop,
            )
            sops[sop] = pid
    _ct(root / "P0042" / "sc", "P0042", PatientID="P0042", SOPClassUID="1.2.840.10008.5.1.4.1.1.7")
    (root / "P0043" / "notes_P0043.txt").write_text("Johnathan Roe, MRN P0043")
    (root / "P0043" / "broken.dcm").write_bytes(
        b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f"
    )
    return sops


def test_folder_report_paths_and_reasons(tmp_path: Path) -> None:
    src, dst, q = tmp_path / "src", tmp_path / "dst", tmp_path / "q"
    sops = _patient_tree(src)
    report = deidentify_dicom_folder(src, dst, KEY, quarantine_dir=q)
    assert (report["files"], report["deidentified"], report["quarantined"], report["failed"]) == (
        8,
        5,
        1,
        2,
    )
    assert report["failure_reasons"] == {"not a DICOM file": 1, "unreadable DICOM header": 1}
    assert report["files_per_second"] > 0 and report["counts"]["uids_remapped"] > 0
    text = json.dumps(report)
    for secret in ("P0042", "P0043", "Roe", *sops):
        assert secret not in text
    written = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    expected = sorted(
        f"{KEY.pseudonym(pid)}/{KEY.uid(sop.rsplit('.', 1)[0])}/{KEY.uid(sop)}.dcm"
        for sop, pid in sops.items()
    )
    assert written == expected
    for p in dst.rglob("*.dcm"):
        assert check_dicom(p) == []
    assert (q / "P0042" / "sc" / "P0042").is_file()  # the original, for review


def test_folder_patient_of_and_workers(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _patient_tree(src)
    report = deidentify_dicom_folder(src, dst, KEY, patient_of=_cohort_id, workers=2)
    assert (report["deidentified"], report["failed"], report["workers"]) == (5, 2, 2)
    pseudonyms = {pydicom.dcmread(p).PatientID for p in dst.rglob("*.dcm")}
    assert pseudonyms == {KEY.pseudonym("cohort-P0042"), KEY.pseudonym("cohort-P0043")}
    # the folder named by the file's Patient ID takes the pseudonym written in the files
    assert {p.name for p in dst.iterdir()} == pseudonyms


def _cohort_id(path: Path, ds: Dataset) -> str:
    return f"cohort-{ds.PatientID}"


def test_folder_inside_source_is_not_walked(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _ct(src, "a.dcm")
    report = deidentify_dicom_folder(src, src / "deid", KEY)
    assert report["files"] == 1
    report = deidentify_dicom_folder(src, src / "deid", KEY)
    assert report["files"] == 1  # the outputs of the first run are skipped


def test_truncated_file_names_the_file(tmp_path: Path) -> None:
    good = _shipped("CT_small.dcm").read_bytes()
    src = tmp_path / "truncated.dcm"
    src.write_bytes(good[:1000])  # ends inside an element of the data set
    with pytest.raises(PrivacyError, match=r"truncated\.dcm: unreadable DICOM content"):
        deidentify_dicom(src, tmp_path / "o.dcm", KEY)
    assert not (tmp_path / "o.dcm").exists()
