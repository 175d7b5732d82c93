"""Command line of image-text alignment, mounted by ``holomed.cli``:

``holomed align SPEC --out DIR [--epochs N] [--seed S] ...`` trains the CLIP-style dual
encoder of :mod:`holomed.generative.align` on the spec's image and text modalities,
evaluates it on held-out patients over the spec's split (retrieval both ways against
random and TF-IDF ridge, zero-shot against a linear probe, report drafts against random
reports), then fits the aligner to keep on every patient with both. Writes
``DIR/align_results.json`` and ``DIR/aligned_heads/`` (safetensors + JSON); with
``--drafts N``, ``DIR/drafts.json`` holds N labelled example drafts (they quote training
notes: opt-in).

Heavy imports happen inside the command, so mounting it costs the main command line
nothing. Errors are one line on stderr and exit code 2 (``HOLOMED_DEBUG=1``: the
traceback).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from holomed.clierrors import cli_guard
from holomed.privacy.outputs import activate
from holomed.runfiles import run_lock, write_json
from holomed.threads import set_threads

_guard = cli_guard  # errors: one line on stderr, exit code 2


def _prompts(items: list[str] | None) -> dict[str, list[str]] | None:
    if not items:
        return None
    out: dict[str, list[str]] = {}
    for item in items:
        cls, eq, text = item.partition("=")
        if not eq or not cls.strip() or not text.strip():
            raise ValueError(f"--prompt {item!r}: expected CLASS=TEXT, e.g. '1=COVID-19 pneumonia'")
        out.setdefault(cls.strip(), []).append(text.strip())
    return out


def _fmt(rec: dict) -> str:
    lo, hi = rec.get("ci", [None, None])
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    return f"{rec['mean']:.2f}{ci}"


def align(
    spec: Annotated[Path, typer.Argument(help="spec YAML with an image and a text modality")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    epochs: Annotated[int, typer.Option(help="most training epochs (early stopping)")] = 300,
    seed: Annotated[
        int | None, typer.Option(help="seed (default: the spec's training.seed)")
    ] = None,
    folds: Annotated[
        int | None, typer.Option(help="evaluate only the first N folds of the spec's split")
    ] = None,
    tune: Annotated[
        str,
        typer.Option(help="what of the image network learns: projection, conv_head, last_block"),
    ] = "projection",
    dim: Annotated[int, typer.Option(help="shared embedding size")] = 128,
    input_size: Annotated[
        int, typer.Option(help="pixels the image network sees (images are resized)")
    ] = 224,
    image: Annotated[str | None, typer.Option(help="image modality (default: the first)")] = None,
    text: Annotated[str | None, typer.Option(help="text modality (default: the first)")] = None,
    prompt: Annotated[
        list[str] | None,
        typer.Option(help="zero-shot prompt CLASS=TEXT (repeatable; default: the dataset's)"),
    ] = None,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples of the CIs")] = 1000,
    drafts: Annotated[
        int, typer.Option(help="write this many labelled example drafts to drafts.json")
    ] = 0,
    threads: Annotated[
        int | None, typer.Option(help="torch / BLAS threads (default: $HOLOMED_THREADS or all)")
    ] = None,
) -> None:
    """Align images and notes (CLIP-style), evaluate retrieval, zero-shot and drafts.

    Cross-validated on the spec's patient-level split, then refitted on every patient
    with an image and a note; the heads are saved to OUT/aligned_heads."""
    with _guard():
        from holomed.generative.align import TUNES, evaluate_alignment, fit_aligner

        if tune not in TUNES:  # before minutes of loading images
            raise ValueError(f"--tune {tune!r}: expected one of {', '.join(TUNES)}")
        from holomed.provenance import run_card, versions
        from holomed.spec import load_spec

        set_threads(threads)
        s = load_spec(spec)
        if s.privacy.pseudonymise:
            activate([s.base_dir or ""])
        given = _prompts(prompt)
        t0 = time.perf_counter()
        with run_lock(out):
            res = evaluate_alignment(
                s,
                image=image,
                text=text,
                seed=seed,
                folds=folds,
                n_boot=n_boot,
                prompts=given,
                keep_drafts=drafts,
                progress=typer.echo,
                epochs=epochs,
                tune=tune,
                dim=dim,
                input_size=input_size,
            )
            examples = res.pop("draft_examples", [])
            typer.echo("fitting the aligner to keep on every patient with an image and a note")
            final = fit_aligner(
                s,
                image=image,
                text=text,
                seed=seed,
                epochs=epochs,
                tune=tune,
                dim=dim,
                input_size=input_size,
            )
            heads = final.save(out / "aligned_heads")
            res["final_fit"] = {
                "pairs": int(final.n_pairs_),
                "fit_pairs": int(final.n_fit_),
                "val_pairs": int(final.n_val_),
                "best_epoch": int(final.best_epoch_),
                "heads": heads.name,
            }
            res["runtime_s"] = round(time.perf_counter() - t0, 1)
            res["spec"] = str(spec)
            res["versions"] = versions()
            res["card"] = run_card(s)
            write_json(out / "align_results.json", res)
            if examples:
                write_json(out / "drafts.json", examples)
            else:  # an earlier run's drafts must not stand beside these results
                (out / "drafts.json").unlink(missing_ok=True)
    r = res["retrieval"]
    typer.echo(
        f"held-out pairs {res['data']['held_out_pairs']} over {res['settings']['folds']} "
        f"fold(s), galleries of {r['gallery_sizes']}"
    )
    for way in ("image_to_text", "text_to_image"):
        a, b = r[way]["aligned"], r[way]["tfidf_ridge"]
        typer.echo(
            f"{way.replace('_', ' ')}: R@1 {_fmt(a['recall@1'])}  R@5 {_fmt(a['recall@5'])}  "
            f"R@10 {_fmt(a['recall@10'])}  median rank {a['median_rank']['mean']:.1f}  | random "
            f"R@5 {a['recall@5']['random']:.2f}  | tf-idf ridge R@5 {_fmt(b['recall@5'])}"
        )
    if "zero_shot" in res:
        typer.echo(
            f"zero-shot AUROC {_fmt(res['zero_shot']['auroc'])}  linear probe AUROC "
            f"{_fmt(res['linear_probe']['auroc'])}"
        )
    d = res["drafts"]
    typer.echo(
        f"drafts ROUGE-L {_fmt(d['rouge_l']['retrieved'])} vs random "
        f"{_fmt(d['rouge_l']['random'])}; BLEU-4 {_fmt(d['bleu4']['retrieved'])} vs "
        f"{_fmt(d['bleu4']['random'])}"
    )
    typer.echo(
        f"wrote {out / 'align_results.json'} and {out / 'aligned_heads'} ({res['runtime_s']} s)"
    )
