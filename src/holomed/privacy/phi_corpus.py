"""Synthetic English clinical notes with every HIPAA Safe Harbor identifier type at known
character offsets, for measuring a de-identifier.

``generate_notes(n, seed)`` returns ``n`` notes, each a dict ``{"text": str, "entities":
[(start, end, type), ...], "kind": str}``: ``text[start:end]`` is an identifier injected by
construction, so the labels are exact. The same ``(n, seed)`` always gives the same notes
(one :class:`random.Random` drives every choice). Notes are about 2,000 characters and are
built from varied templates (discharge summaries, radiology reports, nursing notes, clinic
and emergency notes, referral letters, portal messages, registration sheets) with lists,
abbreviations and clinical text that looks like identifiers but is not (eponyms such as
"Parkinson's disease", drug brand names, vital signs like "132/84", lab values, ages of
89 or less, durations such as "3 days ago"), so that a detector's precision is tested too.

Entity types (the same vocabulary as :mod:`holomed.privacy.text`):
``NAME`` (patients, relatives, providers), ``DATE`` (every format, partial dates, and years
next to a context word such as "in 2019"; only the date part of a date-time), ``AGE``
(ages over 89: the number only), ``MRN``, ``ACCOUNT`` (account, visit, encounter and
accession numbers), ``HEALTH_PLAN`` (member, policy, Medicare/Medicaid ids), ``SSN``,
``LICENSE`` (driver's licence), ``PHONE``, ``FAX``, ``EMAIL``, ``URL``, ``IP``, ``ADDRESS``
(street line or PO box), ``ZIP``, ``LOCATION`` (city or county), ``HOSPITAL`` (hospital,
clinic, nursing home, ward), ``DEVICE`` (serial numbers), ``VEHICLE`` (VIN, licence plate).
States and countries are not identifiers under Safe Harbor and are left unlabelled.

All values are invented: names are drawn from built-in lists, numbers at random.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field

from holomed.privacy.text import ENTITY_TYPES as DEID_TYPES

# the identifier types the corpus injects: all of the de-identifier's but national ids
ENTITY_TYPES = tuple(t for t in DEID_TYPES if t != "NATIONAL_ID")

# -- vocabularies ----------------------------------------------------------------------

FIRST_NAMES = (
    "Amelia Chidi Priya Tomasz Siobhan Xiaoming Oluwaseun Dmitri Abdullah Mariana Kenji "
    "Fatima Liam Noah Olivia Emma Ava Sophia Isabella Mia Charlotte Harper Evelyn Abigail "
    "James Robert Michael William David Richard Joseph Thomas Charles Christopher Daniel "
    "Matthew Anthony Mark Donald Steven Paul Andrew Joshua Kenneth Kevin Brian George "
    "Timothy Ronald Edward Jason Jeffrey Ryan Jacob Gary Nicholas Eric Jonathan Stephen "
    "Larry Justin Scott Brandon Benjamin Samuel Gregory Alexander Patrick Frank Raymond "
    "Jack Dennis Jerry Tyler Aaron Jose Adam Nathan Henry Zachary Douglas Peter Kyle Noel "
    "Walter Ethan Jeremy Harold Carl Keith Roger Gerald Lawrence Terry Sean Austin "
    "Margaret Dorothy Lisa Nancy Karen Betty Helen Sandra Donna Carol Ruth Sharon "
    "Michelle Laura Sarah Kimberly Deborah Jessica Shirley Cynthia Angela Melissa Brenda "
    "Anna Pamela Nicole Samantha Katherine Christine Debra Rachel Carolyn Janet Catherine "
    "Maria Heather Diane Julie Joyce Victoria Kelly Christina Joan Evelyn Lauren Judith "
    "Megan Cheryl Andrea Hannah Martha Jacqueline Frances Gloria Ann Teresa Kathryn Sara "
    "Janice Jean Alice Madison Doris Abigail Julia Judy Grace Denise Amber Marilyn Beverly "
    "Danielle Theresa Sophie Marie Diana Brittany Natalie Rose Hui Wei Aiko Yusuf Amara "
    "Ngozi Kwame Thandiwe Anil Sunita Rajesh Deepa Hamid Leila Omar Zainab Svetlana Igor "
    "Bogdan Agnieszka Pilar Joaquin Guadalupe Alejandro Luz Thi Minh Duc Sione Keala "
    "Ewa Lars Ingrid Sven Astrid Niamh Eoin Padraig Rhys Bronwen Ines Tiago"
).split()

SURNAMES = (
    "Okafor Novak Bruck McAllister Nguyen Kowalski Haddad Fitzgerald Abernathy Oyelaran "
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright "
    "Scott Torres Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell "
    "Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes "
    "Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson "
    "Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood "
    "James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers "
    "Long Ross Foster Jimenez Powell Jenkins Perry Russell Sullivan Bell Coleman Butler "
    "Henderson Barnes Gonzales Fisher Vasquez Simmons Romero Jordan Patterson Alexander "
    "Hamilton Graham Reynolds Griffin Wallace Moreno West Cole Hayes Bryant Herrera "
    "Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro Marshall Owens Harrison "
    "Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry Chen Freeman Webb "
    "Tucker Guzman Burns Crawford Olson Simpson Porter Hunter Gordon Mendez Silva Shaw "
    "Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black Robertson Boyd Rose "
    "Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson Nichols "
    "Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold "
    "Pierce Hansen Peters Santos Hart Bradley Knight Elliott Cunningham Duncan Armstrong "
    "Hudson Carroll Lane Riley Andrews Ray Berry Perkins Hoffman Johnston Matthews Pena "
    "Richards Willis Carpenter Lawrence Sandoval Bishop O'Connor O'Brien Dubois Lefebvre "
    "Yamamoto Tanaka Watanabe Suzuki Ivanova Petrov Kuznetsov Wojcik Horvath Nakamura "
    "Adeyemi Mensah Banda Mokoena Abubakar Chaudhry Iqbal Rahman Hosseini Karimi Yilmaz "
    "Demir Papadopoulos Rossi Esposito Bianchi Moretti Jansen Bakker Lindqvist Johansson "
    "Nielsen Haugen Kristensen Garcia-Lopez Smith-Jones Ng Wu Zhou Huang Liu Sato Park "
    "Choi Jung Kang Cho Yoon Pham Hoang Vu Dang Bui Kahale Faleolo"
).split()

CITIES = (
    ("Fresno", "CA"),
    ("Dayton", "OH"),
    ("Tucson", "AZ"),
    ("Springfield", "IL"),
    ("Worcester", "MA"),
    ("Boise", "ID"),
    ("Spokane", "WA"),
    ("Knoxville", "TN"),
    ("Lubbock", "TX"),
    ("Albany", "NY"),
    ("Savannah", "GA"),
    ("Duluth", "MN"),
    ("Eugene", "OR"),
    ("Macon", "GA"),
    ("Provo", "UT"),
    ("Billings", "MT"),
    ("Fargo", "ND"),
    ("Reno", "NV"),
    ("Akron", "OH"),
    ("Toledo", "OH"),
    ("Syracuse", "NY"),
    ("Scranton", "PA"),
    ("Allentown", "PA"),
    ("Bridgeport", "CT"),
    ("Lowell", "MA"),
    ("Gainesville", "FL"),
    ("Tallahassee", "FL"),
    ("Pensacola", "FL"),
    ("Mobile", "AL"),
    ("Huntsville", "AL"),
    ("Shreveport", "LA"),
    ("Lafayette", "LA"),
    ("Wichita", "KS"),
    ("Topeka", "KS"),
    ("Lincoln", "NE"),
    ("Omaha", "NE"),
    ("Sioux Falls", "SD"),
    ("Cedar Rapids", "IA"),
    ("Green Bay", "WI"),
    ("Kalamazoo", "MI"),
    ("Flint", "MI"),
    ("Fort Wayne", "IN"),
    ("Evansville", "IN"),
    ("Chattanooga", "TN"),
    ("Roanoke", "VA"),
    ("Asheville", "NC"),
    ("Greenville", "SC"),
    ("Charleston", "WV"),
    ("Burlington", "VT"),
    ("Bangor", "ME"),
    ("Manchester", "NH"),
    ("Santa Fe", "NM"),
    ("Las Cruces", "NM"),
    ("Pueblo", "CO"),
    ("Fort Collins", "CO"),
    ("Bakersfield", "CA"),
    ("Modesto", "CA"),
    ("Stockton", "CA"),
    ("Tacoma", "WA"),
    ("Yakima", "WA"),
    ("Anchorage", "AK"),
    ("Hilo", "HI"),
    ("El Paso", "TX"),
    ("Amarillo", "TX"),
    ("Beaumont", "TX"),
    ("Little Rock", "AR"),
    ("Jackson", "MS"),
    ("Gulfport", "MS"),
    ("Joplin", "MO"),
    ("Cheyenne", "WY"),
)
COUNTIES = "Marion Cook Orange Franklin Jefferson Washington Lake Polk Hamilton Monroe".split()
STREETS = (
    "Elm Oak Maple Pine Cedar Birch Walnut Chestnut Willow Spruce Main Church Park High "
    "Washington Lincoln Jefferson Madison Franklin Jackson Highland Sunset Ridge Lakeview "
    "Hillside Meadow Orchard Prospect Pleasant Spring Mill River Forest Valley Summit "
    "Grove Harbor Bay Cherry Laurel Magnolia Dogwood Sycamore Hickory Poplar Aspen Juniper "
    "Holly Ivy Fairview Belmont Clinton Kensington Beacon Commonwealth Martin Luther King"
).split()
STREET_SUFFIXES = (
    "Street St St. Avenue Ave Ave. Road Rd Rd. Boulevard Blvd Blvd. Lane Ln Drive Dr "
    "Dr. Court Ct Way Place Pl Terrace Circle Cir Parkway Pkwy Trail Square"
).split()
HOSPITAL_STEMS = (
    "Mercy General|St. Mary's|Saint Luke's|Lakeside|Riverview|Good Samaritan|Northshore|"
    "Providence|Cedar Valley|Blue Ridge|Sacred Heart|Hillcrest|Brookfield|St. Vincent's|"
    "Mount Sinai West|Bayfront|Pinecrest|Fairview Southdale|Three Rivers|Silver Lake|"
    "Evergreen|Oak Hollow|Saint Joseph|Holy Cross|Willow Creek|Summit Ridge|Harborview"
).split("|")
HOSPITAL_SUFFIXES = (
    "Hospital|Medical Center|Regional Medical Center|Community Hospital|Health Center|"
    "Clinic|Infirmary|Rehabilitation Center|Cancer Center|Children's Hospital|Nursing Home|"
    "Skilled Nursing Facility|Hospice|Memorial Hospital|Family Practice|Urgent Care|"
    "Behavioral Health Center|Surgery Center"
).split("|")
WARD_NAMES = "Nightingale Rosewood Maple Aspen Seacole Harvey Fleming Lister".split()
EMAIL_DOMAINS = (
    "gmail.com yahoo.com outlook.com hotmail.com aol.com icloud.com mail.com protonmail.com "
    "comcast.net verizon.net example.org"
).split()
MONTHS = (
    "January February March April May June July August September October November December"
).split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
STATES = "CA OH AZ IL MA ID WA TN TX NY GA MN OR".split()
INSURERS = (
    "Blue Cross Blue Shield|Aetna|Cigna|UnitedHealthcare|Humana|Kaiser Permanente|"
    "Medicare|Medicaid|Tricare|Anthem|Molina Healthcare|Ambetter"
).split("|")
DEVICES = (
    "dual-chamber pacemaker|implantable cardioverter-defibrillator|insulin pump|"
    "CPAP machine|cochlear implant|spinal cord stimulator|left ventricular assist device|"
    "continuous glucose monitor|vagus nerve stimulator|hearing aid"
).split("|")
DEVICE_MAKERS = "Medtronic|Abbott|Boston Scientific|Biotronik|Tandem|ResMed|Cochlear|Dexcom".split(
    "|"
)
VEHICLE_MAKES = "Honda Civic|Ford F-150|Toyota Camry|Chevrolet Malibu|Subaru Outback".split("|")
CREDENTIALS = "MD|DO|RN|NP|PA-C|MBBS|FNP-BC|APRN|PharmD|LCSW|DPT|CRNA".split("|")
NURSE_CREDENTIALS = ("RN", "LPN", "BSN, RN", "RN, CCRN")
RELATIONS = "daughter son wife husband sister brother niece nephew granddaughter partner".split()

# -- building blocks -------------------------------------------------------------------

Seg = tuple[str, str | None]


@dataclass
class _Person:
    first: str
    last: str
    middle: str


@dataclass
class _Ctx:
    """Everything one note says about its patient, drawn once per note."""

    rng: random.Random
    patient: _Person
    sex: str
    age: int
    dob: dt.date
    admit: dt.date
    discharge: dt.date
    providers: list[_Person]
    nurse: _Person
    relative: _Person
    relation: str
    hospital: str
    other_hospital: str
    city: tuple[str, str]
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def he(self) -> str:
        return "he" if self.sex == "M" else "she"

    @property
    def his(self) -> str:
        return "his" if self.sex == "M" else "her"

    @property
    def title(self) -> str:
        if self.sex == "M":
            return "Mr."
        return self.rng.choice(("Mrs.", "Ms.", "Ms", "Mrs", "Miss"))


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _upper_alnum(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(n))


def _person(rng: random.Random) -> _Person:
    return _Person(rng.choice(FIRST_NAMES), rng.choice(SURNAMES), rng.choice(FIRST_NAMES))


def _ordinal(d: int) -> str:
    if 11 <= d % 100 <= 13:
        return f"{d}th"
    return f"{d}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th') }"


# -- identifier formats ----------------------------------------------------------------


def fmt_date(rng: random.Random, d: dt.date, allow_partial: bool = True) -> list[Seg]:
    """``d`` in one of many written forms; the date part is labelled DATE, context words
    around partial dates ("in") are not."""
    full = [
        lambda: d.isoformat(),
        lambda: d.strftime("%m/%d/%Y"),
        lambda: f"{d.month}/{d.day}/{d.year}",
        lambda: f"{d.month}/{d.day}/{d.strftime('%y')}",
        lambda: d.strftime("%m/%d/%y"),
        lambda: d.strftime("%m-%d-%Y"),
        lambda: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
        lambda: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}",
        lambda: d.strftime("%d-%b-%Y"),
        lambda: d.strftime("%d%b%Y").upper(),
        lambda: d.strftime("%d-%b-%Y").upper(),
        lambda: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
        lambda: f"{MONTHS[d.month - 1]} {d.day} {d.year}",
        lambda: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
        lambda: f"{MONTHS[d.month - 1][:3]}. {d.day}, {d.year}",
        lambda: f"{MONTHS[d.month - 1]} {_ordinal(d.day)}, {d.year}",
        lambda: f"{_ordinal(d.day)} {MONTHS[d.month - 1]} {d.year}",
        lambda: f"the {_ordinal(d.day)} of {MONTHS[d.month - 1]}, {d.year}",
        lambda: f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
        lambda: d.strftime("%Y/%m/%d"),
        lambda: d.strftime("%d.%m.%Y"),
    ]
    partial = [
        lambda: f"{MONTHS[d.month - 1]} {d.year}",
        lambda: f"{MONTHS[d.month - 1][:3]} {d.year}",
        lambda: f"{d.month:02d}/{d.year}",
        lambda: f"{d.month}/{d.year}",
        lambda: f"{d.year}-{d.month:02d}",
        lambda: f"{MONTHS[d.month - 1]} {d.day}",
        lambda: f"{MONTHS[d.month - 1][:3]} {_ordinal(d.day)}",
    ]
    if allow_partial and rng.random() < 0.25:
        return [(rng.choice(partial)(), "DATE")]
    return [(rng.choice(full)(), "DATE")]


def fmt_year_context(rng: random.Random, year: int) -> list[Seg]:
    lead = rng.choice(
        ("in ", "since ", "in early ", "in late ", "back in ", "in the summer of ", "around ")
    )
    return [(lead, None), (str(year), "DATE")]


def fmt_time(rng: random.Random) -> str:
    h, m = rng.randrange(24), rng.randrange(60)
    return rng.choice(
        (
            f"{h:02d}:{m:02d}",
            f"{h:02d}{m:02d}",
            f"{(h % 12) or 12}:{m:02d} {'AM' if h < 12 else 'PM'}",
        )
    )


def fmt_phone(rng: random.Random) -> str:
    area = f"{rng.randint(2, 9)}{rng.randint(0, 8)}{rng.randint(0, 9)}"
    ex = rng.choice(("555", f"{rng.randint(2, 9)}{_digits(rng, 2)}"))
    line = _digits(rng, 4)
    forms = [
        f"({area}) {ex}-{line}",
        f"{area}-{ex}-{line}",
        f"{area}.{ex}.{line}",
        f"{area} {ex} {line}",
        f"+1 {area} {ex} {line}",
        f"+1-{area}-{ex}-{line}",
        f"1-{area}-{ex}-{line}",
        f"({area}){ex}-{line}",
        f"{area}{ex}{line}",
        f"+1 ({area}) {ex}-{line}",
    ]
    intl = [
        f"+44 20 {_digits(rng, 4)} {_digits(rng, 4)}",
        f"+44 7700 {_digits(rng, 6)}",
        f"+33 1 {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)} {_digits(rng, 2)}",
        f"+49 30 {_digits(rng, 7)}",
        f"+91 {_digits(rng, 5)} {_digits(rng, 5)}",
        f"+61 2 {_digits(rng, 4)} {_digits(rng, 4)}",
        f"+52 55 {_digits(rng, 4)} {_digits(rng, 4)}",
    ]
    s = rng.choice(intl) if rng.random() < 0.12 else rng.choice(forms)
    if rng.random() < 0.15:
        s += rng.choice((" ext. ", " x", " ext ", " Ext. ", ", ext. ")) + _digits(
            rng, rng.randint(2, 5)
        )
    return s


def fmt_ssn(rng: random.Random) -> str:
    a = rng.randint(1, 899)
    while a == 666:
        a = rng.randint(1, 899)
    b, c = rng.randint(1, 99), rng.randint(1, 9999)
    sep = rng.choice(("-", "-", "-", " ", ""))
    return f"{a:03d}{sep}{b:02d}{sep}{c:04d}"


def fmt_mrn(rng: random.Random) -> str:
    forms = [
        lambda: _digits(rng, rng.randint(6, 9)),
        lambda: "00" + _digits(rng, 6),
        lambda: f"{_digits(rng, 2)}-{_digits(rng, 2)}-{_digits(rng, 3)}",
        lambda: f"{_digits(rng, 3)}-{_digits(rng, 3)}-{_digits(rng, 3)}",
        lambda: "MR" + _digits(rng, 7),
        lambda: "E" + _digits(rng, 8),
        lambda: _letters(rng, 2) + _digits(rng, 6),
        lambda: f"{_digits(rng, 2)}-{_digits(rng, 3)}-{_digits(rng, 4)}",
    ]
    return rng.choice(forms)()


def fmt_account(rng: random.Random) -> str:
    forms = [
        lambda: _digits(rng, rng.randint(8, 12)),
        lambda: "V" + _digits(rng, 8),
        lambda: f"{_digits(rng, 2)}-{_digits(rng, 3)}-{_digits(rng, 3)}",
        lambda: f"ACC-{_digits(rng, 4)}-{_digits(rng, 6)}",
        lambda: "FIN" + _digits(rng, 9),
        lambda: _letters(rng, 3) + _digits(rng, 7),
    ]
    return rng.choice(forms)()


def fmt_health_plan(rng: random.Random) -> str:
    forms = [
        lambda: _letters(rng, 3) + _digits(rng, 9),
        lambda: (
            f"{rng.randint(1, 9)}{_letters(rng, 1)}{_upper_alnum(rng, 1)}{rng.randint(0, 9)}-"
            f"{_letters(rng, 1)}{_upper_alnum(rng, 1)}{rng.randint(0, 9)}-"
            f"{_letters(rng, 2)}{_digits(rng, 2)}"
        ),
        lambda: "W" + _digits(rng, 9),
        lambda: _digits(rng, 9) + _letters(rng, 1),
        lambda: f"POL-{_digits(rng, 4)}-{_digits(rng, 4)}",
        lambda: _letters(rng, 1) + _digits(rng, 8) + _letters(rng, 2),
        lambda: _digits(rng, 11),
    ]
    return rng.choice(forms)()


def fmt_license(rng: random.Random) -> str:
    forms = [
        lambda: f"{_letters(rng, 1)}{_digits(rng, 3)}-{_digits(rng, 4)}-{_digits(rng, 4)}",
        lambda: _letters(rng, 1) + _digits(rng, 7),
        lambda: _digits(rng, 9),
        lambda: _letters(rng, 1) + _digits(rng, 12),
        lambda: f"{_digits(rng, 3)} {_digits(rng, 3)} {_digits(rng, 3)}",
        lambda: _letters(rng, 2) + _digits(rng, 6),
    ]
    return rng.choice(forms)()


def fmt_serial(rng: random.Random) -> str:
    forms = [
        lambda: _letters(rng, 3) + _digits(rng, 6) + _letters(rng, 1),
        lambda: f"{_upper_alnum(rng, 3)}-{_digits(rng, 3)}-{_digits(rng, 3)}",
        lambda: f"{_digits(rng, 4)}-{_letters(rng, 2)}-{_digits(rng, 4)}",
        lambda: _digits(rng, 8),
        lambda: _letters(rng, 2) + _upper_alnum(rng, 8),
        lambda: f"{_digits(rng, 2)}{_letters(rng, 1)}-{_digits(rng, 5)}",
    ]
    return rng.choice(forms)()


def fmt_vin(rng: random.Random) -> str:
    alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    return "".join(rng.choice(alphabet) for _ in range(17))


def fmt_plate(rng: random.Random) -> str:
    return rng.choice(
        (
            f"{rng.randint(1, 9)}{_letters(rng, 3)}{_digits(rng, 3)}",
            f"{_letters(rng, 3)}-{_digits(rng, 4)}",
            f"{_letters(rng, 3)} {_digits(rng, 3)}",
        )
    )


def fmt_email(rng: random.Random, p: _Person) -> str:
    f, la = p.first.lower(), re.sub(r"[^a-z]", "", p.last.lower())
    local = rng.choice(
        (
            f"{f}.{la}",
            f"{f[0]}{la}",
            f"{la}{f[0]}{rng.randint(1, 99)}",
            f"{f}_{la}{rng.randint(50, 99)}",
            f"{f}.{la}+health",
            f"{la}.family",
        )
    )
    email = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
    return email.upper() if rng.random() < 0.05 else email


def fmt_url(rng: random.Random, p: _Person) -> str:
    f, la = p.first.lower(), re.sub(r"[^a-z]", "", p.last.lower())
    return rng.choice(
        (
            f"https://www.{la}family.com",
            f"http://{f}{la}.blogspot.com",
            f"https://mychart.{rng.choice(('northshore', 'lakeside', 'mercy'))}health.org"
            f"/MyChart/patient/{_digits(rng, 7)}",
            f"www.facebook.com/{f}.{la}.{rng.randint(1, 999)}",
            f"https://portal.example-health.org/records?id={_digits(rng, 8)}",
            f"https://www.gofundme.com/f/help-{f}-{la}",
            f"{la}{f[0]}.net/photos",
            f"https://twitter.com/{f}{la}{rng.randint(1, 99)}",
        )
    )


def fmt_ip(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return "2001:db8:" + ":".join(f"{rng.randrange(65536):x}" for _ in range(3)) + "::1"
    first = rng.choice((10, 172, 192, rng.randint(11, 223)))
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"


def fmt_street(rng: random.Random) -> str:
    if rng.random() < 0.12:
        return rng.choice(("PO Box", "P.O. Box", "P. O. Box", "Post Office Box")) + (
            f" {rng.randint(1, 9999)}"
        )
    num = str(rng.randint(1, 19999))
    direction = rng.choice(("", "", "", "N. ", "S ", "East ", "West ", "NW "))
    name = rng.choice(STREETS)
    if rng.random() < 0.15:
        name += " " + rng.choice(STREETS)
    suffix = rng.choice(STREET_SUFFIXES)
    s = f"{num} {direction}{name} {suffix}"
    if rng.random() < 0.1:
        s = f"{num} {rng.choice(('Highway', 'Route', 'County Road'))} {rng.randint(1, 99)}"
    if rng.random() < 0.3:
        s += rng.choice((", Apt ", " Apt. ", ", Unit ", " #", ", Suite ", ", Apt. ")) + (
            rng.choice((str(rng.randint(1, 40)), f"{rng.randint(1, 9)}{rng.choice('ABCD')}"))
        )
    return s


def fmt_zip(rng: random.Random) -> str:
    z = f"{rng.randint(1000, 99950):05d}"
    return z + f"-{_digits(rng, 4)}" if rng.random() < 0.3 else z


def fmt_address(rng: random.Random, city: tuple[str, str], sep: str = ", ") -> list[Seg]:
    c, st = city
    return [
        (fmt_street(rng), "ADDRESS"),
        (sep, None),
        (c, "LOCATION"),
        (rng.choice((", ", " ")), None),
        (st, None),
        (rng.choice((" ", "  ")), None),
        (fmt_zip(rng), "ZIP"),
    ]


def fmt_hospital(rng: random.Random) -> str:
    return f"{rng.choice(HOSPITAL_STEMS)} {rng.choice(HOSPITAL_SUFFIXES)}"


def fmt_ward(rng: random.Random) -> str:
    return rng.choice(
        (
            f"Ward {rng.randint(1, 12)}{rng.choice(('', 'A', 'B', 'C'))}",
            f"Unit {rng.randint(2, 9)}{rng.choice('ABCDEW')}",
            f"{rng.choice(WARD_NAMES)} Ward",
        )
    )


def fmt_name(rng: random.Random, p: _Person, upper_ok: bool = True) -> str:
    forms = [
        f"{p.first} {p.last}",
        f"{p.first} {p.last}",
        f"{p.first} {p.middle[0]}. {p.last}",
        f"{p.first} {p.middle} {p.last}",
        f"{p.last}, {p.first}",
    ]
    if upper_ok:
        forms += [f"{p.last.upper()}, {p.first.upper()}", f"{p.first.upper()} {p.last.upper()}"]
    return rng.choice(forms)


def fmt_provider(rng: random.Random, p: _Person) -> list[Seg]:
    cred = rng.choice(CREDENTIALS)
    return rng.choice(
        (
            [("Dr. ", None), (f"{p.first} {p.last}", "NAME")],
            [("Dr ", None), (p.last, "NAME")],
            [("Dr. ", None), (p.last, "NAME")],
            [(f"{p.first} {p.last}", "NAME"), (f", {cred}", None)],
            [(f"{p.first[0]}. {p.last}", "NAME"), (f", {cred}", None)],
            [(f"{p.first} {p.middle[0]}. {p.last}", "NAME"), (f" {cred}", None)],
            [(f"{p.last}, {p.first}", "NAME"), (f" {cred}", None)],
            [("Dr. ", None), (f"{p.first[0]}. {p.last}", "NAME")],
        )
    )


def fmt_age(rng: random.Random, age: int) -> list[Seg]:
    label = "AGE" if age > 89 else None
    n = str(age)
    return rng.choice(
        (
            [(n, label), ("-year-old", None)],
            [(n, label), (" year old", None)],
            [(n, label), (" y/o", None)],
            [(n, label), (" yo", None)],
            [(n, label), ("yo", None)],
            [(n, label), (" y.o.", None)],
            [(n, label), ("-yr-old", None)],
            [(n, label), (" years old", None)],
        )
    )


# -- templates -------------------------------------------------------------------------

_SLOT = re.compile(r"\{([a-z_0-9]+)\}")


def _segs(ctx: _Ctx, template: str, slots: dict[str, Callable[[_Ctx], list[Seg]]]) -> list[Seg]:
    out: list[Seg] = []
    pos = 0
    for m in _SLOT.finditer(template):
        if m.start() > pos:
            out.append((template[pos : m.start()], None))
        name = m.group(1)
        if name in slots:
            out.extend(slots[name](ctx))
        else:  # plain words such as {he} and {his}
            out.append((str(getattr(ctx, name)), None))
        pos = m.end()
    if pos < len(template):
        out.append((template[pos:], None))
    return out


def _s_pt_full(c: _Ctx) -> list[Seg]:
    return [(fmt_name(c.rng, c.patient), "NAME")]


def _s_pt_ref(c: _Ctx) -> list[Seg]:
    r = c.rng.random()
    if r < 0.55:
        return [(c.title + " ", None), (c.patient.last, "NAME")]
    if r < 0.8:
        return [(c.patient.last, "NAME")]
    if r < 0.9:
        return [(c.patient.first, "NAME")]
    return [("the patient", None)]


def _s_pt_title(c: _Ctx) -> list[Seg]:
    return [(c.title + " ", None), (c.patient.last, "NAME")]


def _s_prov(i: int) -> Callable[[_Ctx], list[Seg]]:
    return lambda c: fmt_provider(c.rng, c.providers[i % len(c.providers)])


def _s_nurse(c: _Ctx) -> list[Seg]:
    n = c.nurse
    name = c.rng.choice((f"{n.first} {n.last}", f"{n.first[0]}. {n.last}", n.first + " " + n.last))
    return [(name, "NAME"), (", " + c.rng.choice(NURSE_CREDENTIALS), None)]


def _s_relative(c: _Ctx) -> list[Seg]:
    r = c.relative
    name = c.rng.choice((f"{r.first} {r.last}", r.first, f"{r.first} {r.last}"))
    return [(f"{c.his} {c.relation}, ", None), (name, "NAME")]


def _date_slot(attr: str, partial: bool = True) -> Callable[[_Ctx], list[Seg]]:
    return lambda c: fmt_date(c.rng, getattr(c, attr), allow_partial=partial)


def _s_prior(c: _Ctx) -> list[Seg]:
    return fmt_date(c.rng, c.admit - dt.timedelta(days=c.rng.randint(20, 900)))


def _s_future(c: _Ctx) -> list[Seg]:
    return fmt_date(c.rng, c.discharge + dt.timedelta(days=c.rng.randint(5, 60)))


def _s_year(c: _Ctx) -> list[Seg]:
    return fmt_year_context(c.rng, c.admit.year - c.rng.randint(1, 25))


def _s_datetime(c: _Ctx) -> list[Seg]:
    sep = c.rng.choice((" ", " at ", " @ ", "T"))
    if sep == "T":
        return [
            (c.admit.isoformat(), "DATE"),
            (f"T{c.rng.randrange(24):02d}:{c.rng.randrange(60):02d}", None),
        ]
    return fmt_date(c.rng, c.admit, allow_partial=False) + [(sep + fmt_time(c.rng), None)]


def _s_age(c: _Ctx) -> list[Seg]:
    return fmt_age(c.rng, c.age)


def _s_age_labelled(c: _Ctx) -> list[Seg]:
    label = "AGE" if c.age > 89 else None
    lead = c.rng.choice(("aged ", "age: ", "Age ", "age ", "Age: "))
    return [(lead, None), (str(c.age), label)]


def _typed(kind: str, fn: Callable[[random.Random], str]) -> Callable[[_Ctx], list[Seg]]:
    return lambda c: [(fn(c.rng), kind)]


def _ctx_typed(kind: str, lead: tuple[str, ...], fn: Callable[[random.Random], str]):
    def slot(c: _Ctx) -> list[Seg]:
        return [(c.rng.choice(lead), None), (fn(c.rng), kind)]

    return slot


_s_mrn = _ctx_typed(
    "MRN",
    (
        "MRN: ",
        "MRN ",
        "MRN#: ",
        "MRN #",
        "Med Rec #: ",
        "Med Rec No. ",
        "Medical Record Number: ",
        "medical record number ",
        "MR#: ",
        "MR # ",
        "Hospital No.: ",
        "Unit No: ",
        "Chart #: ",
        "Patient ID: ",
    ),
    fmt_mrn,
)
_s_account = _ctx_typed(
    "ACCOUNT",
    (
        "Account #: ",
        "Acct: ",
        "Acct No. ",
        "Account number ",
        "Billing account: ",
        "Visit #: ",
        "Encounter #",
        "FIN: ",
        "CSN: ",
        "Accession #: ",
        "Acc#: ",
    ),
    fmt_account,
)
_s_plan = _ctx_typed(
    "HEALTH_PLAN",
    (
        "Member ID: ",
        "Member ID# ",
        "Medicare ID: ",
        "MBI ",
        "Medicaid #: ",
        "Policy #: ",
        "Policy No. ",
        "Subscriber ID: ",
        "Insurance ID: ",
        "Group #: ",
        "plan ID ",
        "ID# ",
    ),
    fmt_health_plan,
)
_s_ssn = _ctx_typed(
    "SSN",
    ("SSN: ", "SSN ", "SS#: ", "Social Security #: ", "social security number ", "SSN#"),
    fmt_ssn,
)
_s_license = _ctx_typed(
    "LICENSE",
    (
        "Driver's license #: ",
        "DL#: ",
        "DL ",
        "Driver License No. ",
        "driver's licence ",
        "Drivers Lic: ",
        "CA DL ",
        "driver's license number ",
    ),
    fmt_license,
)
_s_phone = _ctx_typed(
    "PHONE",
    (
        "Phone: ",
        "Tel: ",
        "Tel. ",
        "cell ",
        "Cell: ",
        "Mobile: ",
        "Home phone: ",
        "Ph ",
        "tel ",
        "phone ",
        "Work: ",
        "call back number ",
        "",
        "",
    ),
    fmt_phone,
)
_s_fax = _ctx_typed("FAX", ("Fax: ", "Fax ", "FAX: ", "fax ", "Fax#: ", "F: "), fmt_phone)


def _s_email(c: _Ctx) -> list[Seg]:
    return [(fmt_email(c.rng, c.patient if c.rng.random() < 0.7 else c.relative), "EMAIL")]


def _s_url(c: _Ctx) -> list[Seg]:
    return [(fmt_url(c.rng, c.patient), "URL")]


def _s_address(c: _Ctx) -> list[Seg]:
    return fmt_address(c.rng, c.city)


def _s_city(c: _Ctx) -> list[Seg]:
    if c.rng.random() < 0.15:
        return [(f"{c.rng.choice(COUNTIES)} County", "LOCATION")]
    return [(c.city[0], "LOCATION")]


def _s_other_city(c: _Ctx) -> list[Seg]:
    city, st = c.rng.choice(CITIES)
    if c.rng.random() < 0.4:
        return [(city, "LOCATION"), (f", {st}", None)]
    return [(city, "LOCATION")]


def _s_hospital(c: _Ctx) -> list[Seg]:
    return [(c.hospital, "HOSPITAL")]


def _s_other_hospital(c: _Ctx) -> list[Seg]:
    return [(c.other_hospital, "HOSPITAL")]


def _s_ward(c: _Ctx) -> list[Seg]:
    return [(fmt_ward(c.rng), "HOSPITAL")]


def _s_device(c: _Ctx) -> list[Seg]:
    lead = c.rng.choice(
        ("serial no. ", "S/N: ", "S/N ", "serial number ", "SN: ", "Serial #: ", "serial # ")
    )
    return [
        (f"{c.rng.choice(DEVICE_MAKERS)} {c.rng.choice(DEVICES)} ({lead}", None),
        (fmt_serial(c.rng), "DEVICE"),
        (")", None),
    ]


def _s_vehicle(c: _Ctx) -> list[Seg]:
    if c.rng.random() < 0.5:
        return [("VIN ", None), (fmt_vin(c.rng), "VEHICLE")]
    return [("license plate ", None), (fmt_plate(c.rng), "VEHICLE")]


SLOTS: dict[str, Callable[[_Ctx], list[Seg]]] = {
    "pt_full": _s_pt_full,
    "pt_ref": _s_pt_ref,
    "pt_title": _s_pt_title,
    "prov0": _s_prov(0),
    "prov1": _s_prov(1),
    "prov2": _s_prov(2),
    "nurse": _s_nurse,
    "relative": _s_relative,
    "admit": _date_slot("admit", partial=False),
    "discharge": _date_slot("discharge"),
    "dob": _date_slot("dob", partial=False),
    "prior": _s_prior,
    "future": _s_future,
    "year": _s_year,
    "datetime": _s_datetime,
    "age": _s_age,
    "age_l": _s_age_labelled,
    "mrn": _s_mrn,
    "mrn_bare": _typed("MRN", lambda r: _digits(r, r.randint(7, 10))),
    "acct": _s_account,
    "plan": _s_plan,
    "ssn": _s_ssn,
    "dl": _s_license,
    "phone": _s_phone,
    "fax": _s_fax,
    "email": _s_email,
    "url": _s_url,
    "ip": _typed("IP", fmt_ip),
    "address": _s_address,
    "city": _s_city,
    "other_city": _s_other_city,
    "hospital": _s_hospital,
    "other_hospital": _s_other_hospital,
    "ward": _s_ward,
    "device": _s_device,
    "vehicle": _s_vehicle,
    "insurer": lambda c: [(c.rng.choice(INSURERS), None)],
    "vehicle_make": lambda c: [(c.rng.choice(VEHICLE_MAKES), None)],
}

# Headers: one per note kind (several variants each).
HEADERS: dict[str, tuple[str, ...]] = {
    "discharge": (
        "DISCHARGE SUMMARY\n{hospital}\nPatient: {pt_full}    {mrn}    DOB: {dob}\n"
        "Admission Date: {admit}    Discharge Date: {discharge}\n"
        "Attending: {prov0}    PCP: {prov1}\n\n",
        "{hospital} - Discharge Summary\nName: {pt_full} ({mrn_bare})\nDate of birth: {dob}\n"
        "Admitted {admit}; discharged {discharge}. {acct}\nAttending physician: {prov0}\n\n",
    ),
    "radiology": (
        "RADIOLOGY REPORT - {hospital}\nPatient Name: {pt_full}  {mrn}  {acct}\n"
        "Exam: CT CHEST WITH CONTRAST    Exam date: {datetime}\n"
        "Ordering provider: {prov1}\n\n",
        "{hospital} Department of Radiology\n{pt_full}   DOB {dob}   {mrn}\n"
        "MRI BRAIN W/WO CONTRAST performed {datetime}. {acct}\nReferring: {prov1}\n\n",
    ),
    "nursing": (
        "NURSING NOTE {datetime}\n{ward}, {hospital}\nPt: {pt_full}, {mrn}\n\n",
        "Nursing progress note - {ward} - {datetime}\nPatient {pt_full} ({age_l}), {mrn}\n\n",
    ),
    "clinic": (
        "{hospital}\nOUTPATIENT CLINIC NOTE\nDate of service: {admit}\nPatient: {pt_full}   "
        "DOB: {dob}   {mrn}\nProvider: {prov0}\n\n",
        "Clinic visit {admit} - {prov0}\n{pt_full}, {mrn}, DOB {dob}\n\n",
    ),
    "ed": (
        "EMERGENCY DEPARTMENT NOTE - {hospital}\nArrival: {datetime}\nPatient: {pt_full}  "
        "{mrn}  {acct}\nED physician: {prov0}\n\n",
    ),
    "letter": (
        "{hospital}\n{address}\n{phone}   {fax}\n\n{admit}\n\nDear {prov1},\n\n"
        "Re: {pt_full}, DOB {dob}, {mrn}\n\n",
    ),
    "portal": (
        "PATIENT PORTAL MESSAGE\nFrom: {pt_full} <{email}>\nSent: {datetime}\n"
        "To: {prov0}\nSubject: question about my medications\n\n",
    ),
    "registration": (
        "REGISTRATION / FACE SHEET - {hospital}\nPatient: {pt_full}\nDOB: {dob}    {ssn}\n"
        "Address: {address}\n{phone}    Email: {email}\n{dl}\n"
        "Insurance: {insurer}    {plan}\n{acct}    {mrn}\n"
        "Emergency contact: {relative} {phone}\n\n",
    ),
}

# Sentences that carry identifiers, shared by every kind of note.
PHI_SENTENCES = (
    "{pt_ref} is a {age} {sex_word} with a history of CHF and CKD stage 3 who presented to "
    "{hospital} with worsening dyspnea.",
    "{pt_title} is a pleasant {age} {sex_word} seen today for follow-up of {his} atrial "
    "fibrillation.",
    "This {age} {sex_word} was transferred from {other_hospital} in {other_city} on {admit} "
    "for further management.",
    "{pt_ref} lives in {city} with {relative}, who can be reached at {phone}.",
    "{he_cap} lives alone at {address}.",
    "Home address: {address}.",
    "Seen by {prov2} on {prior}; started on apixaban at that time.",
    "Patient was discussed with {prov1}, who agreed with the plan.",
    "{he_cap} was diagnosed with type 2 diabetes {year} and with hypertension {year}.",
    "Prior admission to {other_hospital} {year} for pneumonia.",
    "Last colonoscopy {prior} at {other_hospital} was unremarkable.",
    "Follow up with {prov0} on {future} in the cardiology clinic; {phone}.",
    "Please fax records to {fax} (attention {prov1}).",
    "{he_cap} has a {device} placed {year}.",
    "Interrogation of the {device} on {prior} showed normal function.",
    "{pt_ref}'s {relation} asked that updates be sent to {email}.",
    "{he_cap} keeps a blog about {his} recovery at {url}.",
    "Telehealth visit; patient connected from IP address {ip} using the portal.",
    "Video visit session log: client IP {ip}, link {url}.",
    "Emergency contact: {relative}, {phone}.",
    "{he_cap} was the restrained driver of a {vehicle_make} ({vehicle}) in a low-speed MVC.",
    "Police report lists the vehicle as {vehicle}.",
    "Insurance: {insurer}, {plan}.",
    "Registration confirmed {ssn} and {dl}.",
    "Billing: {acct}; {plan}.",
    "Outside records {mrn} from {other_hospital} were reviewed.",
    "Nurse {nurse} reported that the patient was confused overnight on {ward}.",
    "Transferred to {ward} on {discharge} for telemetry.",
    "{pt_ref} was born on {dob} in {other_city}.",
    "DOB {dob}; {age_l}.",
    "Symptoms began around {prior} and worsened after {his} move to {city}.",
    "{he_cap} works as a bus driver for the city of {city}.",
    "Discharged to {other_hospital} on {discharge}.",
    "Plan reviewed with {relative} by phone ({phone}).",
    "Contact the clinic at {phone} or {fax} with questions.",
    "Appointment scheduled for {future} at {hospital}, {address}.",
    "Last seen in clinic on {prior} by {prov2}.",
    "Referred by {prov1} of {other_hospital}.",
    "Per {prov0}, hold anticoagulation for 48 hours before the procedure on {future}.",
    "{pt_ref} reports {he} moved here from {other_city} {year}.",
    "Previous echo ({prior}) showed EF 40%.",
    "Medicare beneficiary; {plan}.",
    "Identity verified with photo ID ({dl}).",
    "Patient portal account {email}; last login {datetime} from {ip}.",
    "Mailing address: {address}.",
    "Meds last filled {prior} at the pharmacy in {city}.",
)

# Closing lines (signatures), per kind.
CLOSINGS: dict[str, tuple[str, ...]] = {
    "discharge": (
        "\nDischarge condition: stable. Electronically signed by {prov0} on {discharge}.\n",
        "\nDictated by: {prov2}\nSigned: {prov0} {datetime}\ncc: {prov1}\n",
    ),
    "radiology": (
        "\nIMPRESSION:\n1. No pulmonary embolism.\n2. Stable 4 mm right upper lobe nodule.\n"
        "Electronically signed by {prov0} on {datetime}.\n",
        "\nRead by: {prov0}\nVerified: {datetime}\n",
    ),
    "nursing": (
        "\n{nurse}\n",
        "\nSigned: {nurse} {datetime}\n",
    ),
    "clinic": ("\nElectronically signed: {prov0} {datetime}\n", "\n-- {prov0}\n"),
    "ed": ("\nDisposition: admitted to {ward}. Signed {prov0} {datetime}.\n",),
    "letter": (
        "\nYours sincerely,\n\n{prov0}\n{hospital}\n",
        "\nKind regards,\n{prov0}\ncc: {prov2}\n",
    ),
    "portal": ("\nThank you,\n{pt_full}\n{phone}\n",),
    "registration": ("\nRegistered by: {nurse} on {datetime}\n",),
}

FILLER = (
    "Lungs clear to auscultation bilaterally; no wheezes, rales or rhonchi.",
    "Labs: WBC {f1}, Hgb {f2}, Plt {i3}, Na {i4}, K {f5}, Cr {f6} (baseline 1.0).",
    "Vitals: BP {bp}, HR {i1}, RR {i2}, SpO2 {spo2}% on 2L NC, T {t} C.",
    "Continue metoprolol succinate 25 mg PO daily and Lasix 40 mg IV BID.",
    "Started on Eliquis 5 mg b.i.d. for new-onset atrial fibrillation (CHA2DS2-VASc 4).",
    "History of Parkinson's disease, Crohn's disease and Hashimoto thyroiditis.",
    "Foley catheter removed on hospital day 3; voiding spontaneously.",
    "Gram stain showed gram-positive cocci in clusters; blood cultures x2 pending.",
    "Neuro: GCS 15, alert and oriented x3, moving all extremities, Babinski absent.",
    "MoCA 24/30 on screening; Romberg negative.",
    "Per AHA/ACC guidelines, high-intensity statin therapy was continued.",
    "Reports 2/10 pain at rest and 6/10 with ambulation.",
    "Tylenol 650 mg q6h PRN, Zofran 4 mg IV q8h PRN nausea, Senna 8.6 mg qHS.",
    "Echo: EF 35-40%, moderate MR, no pericardial effusion.",
    "CT head without contrast: no acute intracranial hemorrhage or mass effect.",
    "Father died of MI at age {age_small}; mother with type 2 DM, alive at {age_small}.",
    "NKDA. Former smoker, 30 pack-years, quit 10 years ago. Occasional EtOH.",
    "Plan: repeat BMP in AM, daily weights, strict I/O, fluid restriction 1.5 L/day.",
    "Ambulating 150 feet with rolling walker and standby assist of 1.",
    "Status post Whipple procedure; history of Bell's palsy and Graves disease.",
    "Cushing's syndrome was ruled out with a low-dose dexamethasone suppression test.",
    "Braden score 14, Morse fall score 45; fall precautions in place.",
    "Holter monitor showed paroxysmal AF with a maximum HR of 142.",
    "Murphy's sign negative; McBurney's point non-tender.",
    "Wells score 1.5, PE unlikely; D-dimer {f1}.",
    "ICD-10: I50.23, J18.9, N17.9. Code status: Full code.",
    "COVID-19 PCR negative. Influenza vaccine given this season.",
    "Medications:\n1. Aspirin 81 mg PO daily\n2. Atorvastatin 40 mg qHS\n"
    "3. Furosemide 40 mg PO BID\n4. Insulin glargine 18 units SC qHS",
    "- Hold lisinopril for AKI\n- Renal ultrasound ordered\n- Nephrology to follow",
    "Symptoms started 3 days ago with fever to 38.9 and productive cough.",
    "Weight 72.4 kg (down 2.1 kg since admission); I/O -1.2 L.",
    "ABG 7.31/48/62 on 4L NC; lactate {f2}.",
    "Troponin {f3} -> {f4}, trending down; EKG NSR with LBBB, unchanged.",
    "Patient tolerated PT/OT well; recommend SNF vs home with services.",
    "A1c {f6}% (goal < 7%); metformin 1000 mg BID continued.",
    "Alzheimer's dementia, baseline oriented x1; uses a hearing aid in the left ear.",
    "Apgar scores 8 and 9 at 1 and 5 minutes (neonatal history per mother).",
    "Hodgkin lymphoma in remission after ABVD x 6 cycles.",
    "Trendelenburg position used for central line placement; Swan-Ganz not required.",
    "NYHA class III symptoms; ambulates about 50 m before stopping to rest.",
    "Sodium 128 on admission, corrected slowly with 3% saline by 6 mEq/L per 24 h.",
    "Dose adjusted per the Cockcroft-Gault creatinine clearance of 38 mL/min.",
    "GERD on omeprazole 20 mg daily; Nissen fundoplication considered.",
    "Room 412 was cleaned per contact precautions (MRSA screen positive).",
    "Chest X-ray: mild pulmonary vascular congestion, small bilateral effusions.",
    "Pain controlled on oxycodone 5 mg q4h PRN; bowel regimen continued.",
    "PT recommends a 2-wheeled walker. OT to evaluate ADLs on Monday.",
    "Stage 2 pressure injury on sacrum, 2 x 3 cm, dressing changed q.d.",
    "Discussed goals of care; patient wishes to remain Full Code.",
    "The patient is a {age_small}-year-old {sex_word} with COPD on 2L home O2.",
    "Mini-Cog 3/5. PHQ-9 score 7. Lives with family in a single-story home.",
    "Keppra 500 mg BID for seizure prophylaxis; EEG showed no epileptiform activity.",
    "Coumadin held, INR {f1}; vitamin K 2.5 mg PO given.",
    "Influenza A positive; oseltamivir 75 mg BID x 5 days.",
)

KIND_SECTIONS: dict[str, tuple[str, ...]] = {
    "discharge": ("HISTORY OF PRESENT ILLNESS:", "HOSPITAL COURSE:", "DISCHARGE PLAN:"),
    "radiology": ("CLINICAL HISTORY:", "TECHNIQUE:", "COMPARISON:", "FINDINGS:"),
    "nursing": ("S:", "O:", "A:", "P:"),
    "clinic": ("SUBJECTIVE:", "OBJECTIVE:", "ASSESSMENT AND PLAN:"),
    "ed": ("HPI:", "ED COURSE:", "MDM:"),
    "letter": ("", ""),
    "portal": ("",),
    "registration": ("NOTES:",),
}
KINDS = tuple(HEADERS)


def _fill_numbers(rng: random.Random, template: str, ctx: _Ctx) -> str:
    values = {
        "f1": f"{rng.uniform(0.5, 15):.1f}",
        "f2": f"{rng.uniform(6, 16):.1f}",
        "f3": f"{rng.uniform(0.01, 2):.2f}",
        "f4": f"{rng.uniform(0.01, 2):.2f}",
        "f5": f"{rng.uniform(3, 5.5):.1f}",
        "f6": f"{rng.uniform(0.6, 9):.1f}",
        "i1": str(rng.randint(55, 130)),
        "i2": str(rng.randint(12, 28)),
        "i3": str(rng.randint(88, 400)),
        "i4": str(rng.randint(125, 148)),
        "spo2": str(rng.randint(86, 100)),
        "bp": f"{rng.randint(90, 180)}/{rng.randint(50, 100)}",
        "t": f"{rng.uniform(36, 39.5):.1f}",
        "age_small": str(rng.randint(18, 89)),
        "sex_word": "man" if ctx.sex == "M" else "woman",
    }
    return re.sub(r"\{([a-z_0-9]+)\}", lambda m: values[m.group(1)], template)


def _make_ctx(rng: random.Random) -> _Ctx:
    admit = dt.date(2008, 1, 1) + dt.timedelta(days=rng.randrange(365 * 16))
    # ages over 89 in about 40% of notes, so that every run holds many of them
    age = rng.randint(90, 104) if rng.random() < 0.4 else rng.randint(19, 89)
    dob = admit - dt.timedelta(days=age * 365 + rng.randrange(365))
    n_prov = 3
    providers = [_person(rng) for _ in range(n_prov)]
    hospital = fmt_hospital(rng)
    other = fmt_hospital(rng)
    while other == hospital:
        other = fmt_hospital(rng)
    return _Ctx(
        rng=rng,
        patient=_person(rng),
        sex=rng.choice("MF"),
        age=age,
        dob=dob,
        admit=admit,
        discharge=admit + dt.timedelta(days=rng.randint(1, 21)),
        providers=providers,
        nurse=_person(rng),
        relative=_person(rng),
        relation=rng.choice(RELATIONS),
        hospital=hospital,
        other_hospital=other,
        city=rng.choice(CITIES),
    )


def _render(ctx: _Ctx, template: str) -> list[Seg]:
    slots = dict(SLOTS)
    slots["sex_word"] = lambda c: [("man" if c.sex == "M" else "woman", None)]
    slots["he_cap"] = lambda c: [(c.he.capitalize(), None)]
    slots["relation"] = lambda c: [(c.relation, None)]
    return _segs(ctx, template, slots)


def _one_note(rng: random.Random, target_chars: int) -> dict:
    ctx = _make_ctx(rng)
    kind = rng.choice(KINDS)
    segs: list[Seg] = []
    segs += _render(ctx, rng.choice(HEADERS[kind]))
    sections = KIND_SECTIONS[kind]
    phi = list(PHI_SENTENCES)
    rng.shuffle(phi)
    filler = list(FILLER)
    rng.shuffle(filler)

    def next_filler() -> str:
        if not filler:
            filler.extend(FILLER)
            rng.shuffle(filler)
        return _fill_numbers(rng, filler.pop(), ctx)

    n_phi = rng.randint(5, 8)
    closing = _render(ctx, rng.choice(CLOSINGS[kind]))
    closing_len = sum(len(t) for t, _ in closing)

    def length() -> int:
        return sum(len(t) for t, _ in segs)

    # sections: one or two identifier sentences mixed with clinical filler
    per_section = max(1, n_phi // len(sections))
    for i, heading in enumerate(sections):
        if heading:
            segs.append((("\n" if i else "") + heading + "\n", None))
        body: list[list[Seg]] = []
        for _ in range(per_section):
            if phi:
                body.append(_render(ctx, phi.pop()))
        for _ in range(rng.randint(1, 2)):
            body.append([(next_filler(), None)])
        rng.shuffle(body)
        for j, sentence in enumerate(body):
            segs.extend(sentence)
            segs.append(("\n" if "\n" in sentence[-1][0] or j == len(body) - 1 else " ", None))
    # pad with filler (and the odd extra identifier sentence) to the target length
    while length() + closing_len < target_chars - 60:
        if phi and rng.random() < 0.25:
            segs.extend(_render(ctx, phi.pop()))
        else:
            segs.append((next_filler(), None))
        segs.append(("\n" if "\n" in segs[-1][0] else rng.choice((" ", " ", "\n")), None))
    segs.extend(closing)

    text_parts: list[str] = []
    entities: list[tuple[int, int, str]] = []
    pos = 0
    for t, label in segs:
        if label is not None and t:
            entities.append((pos, pos + len(t), label))
        text_parts.append(t)
        pos += len(t)
    return {"text": "".join(text_parts), "entities": entities, "kind": kind}


def generate_notes(n: int, seed: int) -> list[dict]:
    """``n`` synthetic notes, each ``{"text", "entities": [(start, end, type)], "kind"}``,
    about 2,000 characters; the same ``(n, seed)`` always gives the same notes. Entity
    offsets index ``text``; types are those of :data:`ENTITY_TYPES`."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    notes = []
    for _ in range(n):
        notes.append(_one_note(rng, target_chars=rng.randint(1850, 2150)))
    return notes
