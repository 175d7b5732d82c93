"""Report drafts by retrieval: for a patient's image, the nearest training reports in the
aligned image-text space (:mod:`holomed.generative.align`). Nothing is written for the
patient: a draft is someone else's report, and says so (:data:`DRAFT_LABEL`).

Measured against the patient's real report with

- **BLEU-4**: sacreBLEU's sentence BLEU (``sacrebleu.sentence_bleu``: 13a tokenisation,
  4-gram precision, brevity penalty, exponential smoothing; 0-100);
- **ROUGE-L**: Google's ``rouge-score`` (longest common subsequence F-measure, Porter
  stemming; 0-1);
- **MiniLM cosine**: cosine of the two reports' frozen all-MiniLM-L6-v2 embeddings (the
  ``embed`` function given, normally :func:`holomed.generative.align.note_embeddings`);

beside a random-report baseline: for each patient, the mean of the same metrics over a
few training reports drawn at random. Bootstrap 95 % CIs resample patients; the paired
difference (retrieved - random) has its own CI. Both packages work offline (ROUGE-L
needs no NLTK data; only ROUGE-Lsum would want ``punkt``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from holomed.scoring.metrics import bootstrap_ci

DRAFT_LABEL = "DRAFT — retrieved from training reports, not written for this patient"
METRICS = ("bleu4", "rouge_l", "minilm_cosine")


@dataclass
class Draft:
    """The top-``k`` training reports nearest a patient's image. ``retrieved``: one
    record per report, best first (``rank``, ``source`` = the training patient's id,
    ``similarity`` = cosine in the aligned space, ``text``)."""

    patient: str
    retrieved: list[dict[str, Any]] = field(default_factory=list)
    label: str = DRAFT_LABEL

    @property
    def text(self) -> str:
        """The draft as shown to a reader: the label, then the best report."""
        best = self.retrieved[0] if self.retrieved else {"text": "", "source": "?"}
        return (
            f"{self.label}\n(nearest training report, from patient {best['source']}, "
            f"cosine {best.get('similarity', float('nan')):.3f})\n\n{best['text']}"
        )

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "patient": self.patient, "retrieved": self.retrieved}


def retrieve_drafts(
    image_emb: np.ndarray,
    library_emb: np.ndarray,
    library_texts: Sequence[str],
    library_ids: Sequence[str],
    query_ids: Sequence[str],
    k: int = 3,
) -> list[Draft]:
    """One :class:`Draft` per query: the ``k`` library reports with the highest cosine
    between the query's aligned image embedding ``(q, d)`` and the reports' aligned text
    embeddings ``(L, d)`` (unit vectors; ties broken by library order)."""
    image_emb, library_emb = np.asarray(image_emb), np.asarray(library_emb)
    if len(library_texts) != len(library_emb) or len(library_ids) != len(library_emb):
        raise ValueError("library_emb, library_texts and library_ids must have one row each")
    if len(query_ids) != len(image_emb):
        raise ValueError("query_ids and image_emb must have one row each")
    if not len(library_texts):
        raise ValueError("the report library is empty")
    sim = image_emb @ library_emb.T
    k = max(1, min(int(k), len(library_texts)))
    out = []
    for q, row in enumerate(sim):
        top = np.argsort(-row, kind="stable")[:k]
        out.append(
            Draft(
                patient=str(query_ids[q]),
                retrieved=[
                    {
                        "rank": r + 1,
                        "source": str(library_ids[j]),
                        "similarity": float(row[j]),
                        "text": str(library_texts[j]),
                    }
                    for r, j in enumerate(top)
                ],
            )
        )
    return out


# -- text similarity metrics --------------------------------------------------------


def _scorers() -> tuple[Any, Any]:
    try:
        import sacrebleu
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise ImportError(
            f"draft metrics need the packages 'sacrebleu' and 'rouge-score' ({err}); install "
            "them with `pip install sacrebleu rouge-score`"
        ) from None
    return sacrebleu, rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def text_overlap(candidates: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per pair: ``bleu4`` (sacreBLEU sentence BLEU, 0-100) and ``rouge_l`` (F-measure,
    0-1) of ``candidates[i]`` against ``references[i]``."""
    if len(candidates) != len(references):
        raise ValueError("one reference per candidate")
    sacrebleu, rouge = _scorers()
    bleu = [
        sacrebleu.sentence_bleu(str(c), [str(r)]).score
        for c, r in zip(candidates, references, strict=True)
    ]
    rl = [
        rouge.score(str(r), str(c))["rougeL"].fmeasure
        for c, r in zip(candidates, references, strict=True)
    ]
    return {"bleu4": np.asarray(bleu, float), "rouge_l": np.asarray(rl, float)}


def draft_scores(
    candidates: Sequence[str],
    references: Sequence[str],
    embed: Callable[[list[str]], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`text_overlap` plus ``minilm_cosine`` (when ``embed`` maps texts to unit
    vectors) per pair."""
    out = text_overlap(candidates, references)
    if embed is not None:
        a = np.asarray(embed([str(c) for c in candidates]))
        b = np.asarray(embed([str(r) for r in references]))
        out["minilm_cosine"] = (a * b).sum(1) / np.maximum(
            np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12
        )
    return out


def compare_drafts(
    retrieved: Sequence[str],
    real: Sequence[str],
    random: Sequence[Sequence[str]],
    embed: Callable[[list[str]], np.ndarray] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Retrieved drafts (the top-1 report per patient) against the patients' ``real``
    reports, beside random training reports (``random[i]``: those drawn for patient
    ``i``; their metrics averaged per patient). Per metric: ``retrieved`` and ``random``
    (mean and bootstrap 95 % CI over patients) and their paired ``difference``."""
    n = len(real)
    if len(retrieved) != n or len(random) != n:
        raise ValueError("retrieved, real and random need one entry per patient")
    got = draft_scores(retrieved, real, embed)
    flat = [r for rs in random for r in rs]
    owner = np.repeat(np.arange(n), [len(rs) for rs in random])
    rnd_all = draft_scores(flat, [real[i] for i in owner], embed)
    rnd = {
        m: np.bincount(owner, v, n) / np.maximum(np.bincount(owner, minlength=n), 1)
        for m, v in rnd_all.items()
    }
    out: dict[str, Any] = {
        "patients": int(n),
        "random_reports_per_patient": int(round(len(flat) / max(n, 1))),
        "label": DRAFT_LABEL,
        "definitions": {
            "bleu4": "sacreBLEU sentence BLEU (13a tokens, exp smoothing), 0-100",
            "rouge_l": "rouge-score ROUGE-L F-measure with Porter stemming, 0-1",
            "minilm_cosine": "cosine of frozen all-MiniLM-L6-v2 note embeddings",
        },
    }
    for m in got:
        a, b = got[m], rnd[m]
        d = a - b
        out[m] = {
            "retrieved": {
                "mean": float(a.mean()),
                "ci": list(bootstrap_ci(lambda i, a=a: float(a[i].mean()), n, n_boot, seed)),
            },
            "random": {
                "mean": float(b.mean()),
                "ci": list(bootstrap_ci(lambda i, b=b: float(b[i].mean()), n, n_boot, seed)),
            },
            "difference": {
                "mean": float(d.mean()),
                "ci": list(bootstrap_ci(lambda i, d=d: float(d[i].mean()), n, n_boot, seed)),
            },
        }
    return out
