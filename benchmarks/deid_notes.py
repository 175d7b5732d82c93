"""De-identification of clinical notes: detection quality and speed on synthetic notes.

The notes come from :func:`holomed.privacy.phi_corpus.generate_notes` (English, every
HIPAA Safe Harbor identifier type injected at known offsets, about 2,000 characters each).
Two corpora are scored: one from the seed the recognisers were developed against
(``--dev-seed``) and one from a held-out seed (``--seed``); both are reported.

Measures, per entity type and overall:

- entity-level recall: an injected identifier counts as found when every letter and
  digit of it lies inside some detection (of any type: a phone number tagged as a fax
  number is still removed); ``type_match`` is the share of found identifiers whose
  covering detection has the same type;
- entity-level precision: a detection is correct when it overlaps an injected identifier;
- token-level recall and precision over word tokens (``\\w+``): a token is PHI when it
  overlaps an injected identifier, detected when it overlaps a detection;
- leaks: injected values of 4+ characters still present verbatim in the surrogate output
  (partial dates that the shift leaves unchanged, such as a year, are counted apart);
- speed: notes per second of the full ``deidentify`` call (surrogate mode), min and median
  of ``--runs`` passes over the corpus, single process, with the thread settings printed.

Targets: recall >= 0.95 over all identifiers, >= 0.99 for structured ones, precision
>= 0.85, >= 20 notes/s.

    OMP_NUM_THREADS=1 python benchmarks/deid_notes.py --n 300 --out runs/bench/deid.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

from holomed.privacy.keys import PrivacyKey
from holomed.privacy.phi_corpus import generate_notes
from holomed.privacy.text import EN_DATES, STRUCTURED_TYPES, NoteDeidentifier

DEV_SEED = 1
HELD_OUT_SEED = 424242
_WORD = re.compile(r"\w+")


def _covered(text: str, start: int, end: int, mask: list[bool]) -> bool:
    return all(mask[i] for i in range(start, end) if text[i].isalnum())


def score(notes: list[dict], detections: list[list[tuple[int, int, str]]]) -> dict:
    """Entity- and token-level recall and precision of ``detections`` (one list of
    ``(start, end, type)`` per note) against the notes' injected entities."""
    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    typed: Counter[str] = Counter()
    det_ok: Counter[str] = Counter()
    det_all: Counter[str] = Counter()
    tok = Counter()
    missed_examples: dict[str, list[str]] = defaultdict(list)
    false_examples: dict[str, list[str]] = defaultdict(list)
    for note, dets in zip(notes, detections, strict=True):
        text, gold = note["text"], note["entities"]
        mask = [False] * len(text)
        type_at: list[str | None] = [None] * len(text)
        for s, e, t in dets:
            for i in range(s, e):
                mask[i] = True
                type_at[i] = t
        gmask = [False] * len(text)
        for s, e, _ in gold:
            for i in range(s, e):
                gmask[i] = True
        for s, e, t in gold:
            total[t] += 1
            if _covered(text, s, e, mask):
                found[t] += 1
                kinds = {type_at[i] for i in range(s, e) if text[i].isalnum()}
                typed[t] += kinds == {t}
            elif len(missed_examples[t]) < 8:
                missed_examples[t].append(text[max(0, s - 25) : e + 10].replace("\n", " "))
        for s, e, t in dets:
            det_all[t] += 1
            if any(gmask[s:e]):
                det_ok[t] += 1
            elif len(false_examples[t]) < 8:
                false_examples[t].append(
                    f"{text[s:e]!r} in {text[max(0, s - 25) : e + 10]!r}".replace("\\n", " ")
                )
        for m in _WORD.finditer(text):
            g = any(gmask[m.start() : m.end()])
            p = any(mask[m.start() : m.end()])
            tok["tp"] += g and p
            tok["gold"] += g
            tok["pred"] += p

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b else None

    per_type = {}
    for t in sorted(set(total) | set(det_all)):
        per_type[t] = {
            "n": total[t],
            "recall": ratio(found[t], total[t]),
            "type_match": ratio(typed[t], found[t]),
            "detections": det_all[t],
            "precision": ratio(det_ok[t], det_all[t]),
        }
    structured = [t for t in total if t in STRUCTURED_TYPES]
    return {
        "per_type": per_type,
        "overall": {
            "entities": sum(total.values()),
            "recall": ratio(sum(found.values()), sum(total.values())),
            "recall_structured": ratio(
                sum(found[t] for t in structured), sum(total[t] for t in structured)
            ),
            "recall_unstructured": ratio(
                sum(found[t] for t in total if t not in STRUCTURED_TYPES),
                sum(total[t] for t in total if t not in STRUCTURED_TYPES),
            ),
            "precision": ratio(sum(det_ok.values()), sum(det_all.values())),
            "token_recall": ratio(tok["tp"], tok["gold"]),
            "token_precision": ratio(tok["tp"], tok["pred"]),
        },
        "missed_examples": dict(missed_examples),
        "false_positive_examples": dict(false_examples),
    }


def leaks(notes: list[dict], outputs: list[str]) -> dict[str, dict[str, int]]:
    """Injected values (4+ characters) found verbatim in the surrogate output more often
    than the original text holds them outside identifiers ("Bell" stays in "Bell's palsy"
    when Mr. Bell is replaced), per type. Dates are split: ``full`` dates (day, month and
    year) that survive are leaks; a ``partial`` date (a year, a month and year) that the
    shift leaves unchanged is expected (a shift of -40 days moves "in 2019" to 2019 most
    of the year) and counted apart."""
    out: Counter[str] = Counter()
    partial: Counter[str] = Counter()
    for note, text in zip(notes, outputs, strict=True):
        src = note["text"]
        for s, e, t in note["entities"]:
            value = src[s:e]
            if len(value) < 4:
                continue
            pat = re.compile(rf"(?<!\w){re.escape(value)}(?!\w)")
            outside = sum(
                1
                for m in pat.finditer(src)
                if not any(a < m.end() and m.start() < b for a, b, _ in note["entities"])
            )
            if len(pat.findall(text)) <= outside:
                continue
            parsed = EN_DATES.parse(value) if t == "DATE" else None
            if parsed is not None and not (parsed.has_day and parsed.has_year):
                partial[t] += 1
            else:
                out[t] += 1
    return {"leaks": dict(out), "partial_dates_unchanged_by_shift": dict(partial)}


def run_seed(deid: NoteDeidentifier, n: int, seed: int, runs: int) -> dict:
    notes = generate_notes(n, seed)
    detections = [deid.analyze(note["text"]) for note in notes]
    result = score(notes, detections)
    rates = []
    outputs: list[str] = []
    for r in range(runs):
        t0 = time.perf_counter()
        outs = [
            deid.deidentify(note["text"], patient_id=f"P{i:04d}")[0] for i, note in enumerate(notes)
        ]
        rates.append(len(notes) / (time.perf_counter() - t0))
        if r == 0:
            outputs = outs
    chars = sum(len(note["text"]) for note in notes)
    result["leaks"] = leaks(notes, outputs)
    result["speed"] = {
        "notes": len(notes),
        "mean_chars": round(chars / max(1, len(notes))),
        "notes_per_s_min": round(min(rates), 2),
        "notes_per_s_median": round(statistics.median(rates), 2),
        "runs": runs,
    }
    result["seed"] = seed
    return result


def _fmt(v: float | None) -> str:
    return "   -  " if v is None else f"{v:6.3f}"


def print_table(name: str, res: dict) -> None:
    print(f"\n== {name} (seed {res['seed']}, {res['speed']['notes']} notes) ==")
    print(f"{'type':<12} {'n':>5} {'recall':>7} {'typed':>7} {'dets':>5} {'prec':>7}")
    for t, r in res["per_type"].items():
        print(
            f"{t:<12} {r['n']:>5} {_fmt(r['recall']):>7} {_fmt(r['type_match']):>7} "
            f"{r['detections']:>5} {_fmt(r['precision']):>7}"
        )
    o = res["overall"]
    print(
        f"overall: entities {o['entities']}, recall {o['recall']}, structured "
        f"{o['recall_structured']}, unstructured {o['recall_unstructured']}, precision "
        f"{o['precision']}; tokens: recall {o['token_recall']}, precision {o['token_precision']}"
    )
    s = res["speed"]
    print(
        f"speed: {s['notes_per_s_min']} (min) / {s['notes_per_s_median']} (median) notes/s over "
        f"{s['runs']} runs, {s['mean_chars']} chars/note"
    )
    lk = res["leaks"]
    print(
        f"verbatim leaks in surrogate output: {lk['leaks'] or 'none'}; partial dates left "
        f"unchanged by the shift: {lk['partial_dates_unchanged_by_shift']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="notes per seed")
    ap.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="held-out seed")
    ap.add_argument("--dev-seed", type=int, default=DEV_SEED, help="development seed")
    ap.add_argument("--runs", type=int, default=3, help="timed passes per seed")
    ap.add_argument("--out", default="runs/bench/deid_notes.json")
    ap.add_argument("--examples", action="store_true", help="print missed / false examples")
    a = ap.parse_args()

    key = PrivacyKey(b"benchmark-key-not-secret-0123456789abcdef")
    deid = NoteDeidentifier(language="en", mode="surrogate", key=key)
    t0 = time.perf_counter()
    deid.analyze("Warm-up note for Mr. Smith seen on 2020-01-01.")
    load_s = time.perf_counter() - t0

    results = {
        "threads": {
            k: os.environ.get(k)
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        },
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "model_load_s": round(load_s, 2),
        "process": "single process, one note at a time",
        "held_out": run_seed(deid, a.n, a.seed, a.runs),
        "dev": run_seed(deid, a.n, a.dev_seed, a.runs),
    }
    print(
        f"threads: {results['threads']}, cpus: {results['cpu_count']}, "
        f"model load {results['model_load_s']} s"
    )
    for name in ("held_out", "dev"):
        print_table(name, results[name])
        if a.examples:
            for kind in ("missed_examples", "false_positive_examples"):
                print(f"-- {kind}")
                for t, ex in results[name][kind].items():
                    for e in ex:
                        print(f"  {t}: {e}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
