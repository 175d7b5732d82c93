"""Command line of synthetic cohorts, mounted by ``holomed.cli``:

``holomed synthesize SPEC --out DIR [--model copula|ctgan|tvae] [--n N] [--seed S]`` fits a
conditional generator to the training patients of the cohort SPEC describes (its tabular
and omics modalities), writes a SYNTHETIC cohort with the same spec to DIR (CSV files,
``spec.yaml``, ``SYNTHETIC.md``) and ``DIR/synthesis_report.json`` (fidelity, utility on
the real holdout, privacy), and prints a short summary
(:mod:`holomed.generative.synthesize`).

Exit codes: 0 done; 1 written, but the privacy check failed (the cohort must not be
shared; the report says why); 2 an error (one line on stderr, ``HOLOMED_DEBUG=1``: the
traceback). Heavy imports (SDV, the models) happen inside the command, so mounting it
costs the main command line nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from holomed.clierrors import cli_guard
from holomed.threads import set_threads


def _echo_err(text: str) -> None:
    typer.secho(text, fg=typer.colors.RED, err=True)


_guard = cli_guard  # errors: one line on stderr, exit code 2


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    return names or None


def synthesize(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="the real cohort's spec YAML")],
    out: Annotated[Path, typer.Option("--out", "-o", help="a new folder for the cohort")],
    model: Annotated[
        str, typer.Option(help="generator: copula (default; fast), ctgan or tvae (SDV)")
    ] = "copula",
    n: Annotated[
        int | None,
        typer.Option("--n", min=1, help="synthetic patients (default: as many as real training)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the split, generator and sampling")] = 0,
    components: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="PCA components per wide omics modality (default: by a column budget; "
            "0: no reduction)",
        ),
    ] = None,
    modalities: Annotated[
        str | None,
        typer.Option(help="comma-separated modalities to synthesise (default: all)"),
    ] = None,
    learners: Annotated[
        str, typer.Option(help="comma-separated candidates of the utility check")
    ] = "lr_early",
    n_bootstrap: Annotated[int, typer.Option(min=0, help="bootstrap resamples of the CIs")] = 1000,
    epochs: Annotated[int, typer.Option(min=1, help="training epochs of ctgan / tvae")] = 300,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch / BLAS threads (default: $HOLOMED_THREADS)")
    ] = None,
) -> None:
    """Write a SYNTHETIC cohort generated from SPEC's training patients, with a report.

    Tabular and omics modalities; the generator is fitted per class on training patients
    only, and judged on the real holdout: fidelity (per-feature KS / Wasserstein,
    correlations), utility (train on synthetic vs on real, AUROC on real patients) and
    privacy (distance to closest record, membership inference). Synthetic patients must
    never enter a real evaluation."""
    with _guard():
        from holomed.candidate import make_candidate
        from holomed.cohort import load_cohort
        from holomed.generative.synthesize import summary_lines
        from holomed.generative.synthesize import synthesize as run
        from holomed.spec import load_spec

        set_threads(threads)
        spec = load_spec(spec_path)
        chosen = tuple(_names(learners) or ["lr_early"])
        for name in chosen:  # before the cohort loads: a typo costs no minutes
            make_candidate(spec, name)
        cohort = load_cohort(spec)
        report = run(
            spec,
            cohort,
            out,
            model=model,
            n=n,
            seed=seed,
            components=components,
            modalities=_names(modalities),
            learners=chosen,
            n_bootstrap=n_bootstrap,
            epochs=epochs,
            tick=lambda m: typer.echo(m),
        )
        for line in summary_lines(report):
            typer.echo(line)
        typer.echo(
            f"-> {out}/spec.yaml (SYNTHETIC; never mix into a real evaluation); report: "
            f"{out}/synthesis_report.json"
        )
    if not report["privacy"]["passed"]:
        _echo_err(
            "privacy check FAILED: " + "; ".join(report["privacy"]["flags"]) + ". The cohort "
            "is written for inspection only: do not share it."
        )
        raise typer.Exit(1)


app = typer.Typer(add_completion=False, help="Synthetic cohorts.")
app.command("synthesize")(synthesize)
