"""``holomed``: a thin typer face over the estimator and the evaluation harness."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from holomed.errors import HolomedError
from holomed.generative.align_cli import align
from holomed.generative.cli import synthesize as synthesize_cmd
from holomed.predictions import (
    compare_predictions,
    out_of_range,
    prediction_table,
    unknown_categories,
    unused_columns,
)
from holomed.privacy.keys import load_key
from holomed.privacy.outputs import activate, active, redact
from holomed.results import read_results
from holomed.runfiles import (
    read_selection,
    run_lock,
    spec_differences,
    write_inner_predictions,
    write_json,
)
from holomed.serve.cli import audit_app, serve, tokens_app
from holomed.threads import set_threads

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Multimodal healthcare AI: fit, compare, stress-test and serve fusion models.",
)
datasets_app = typer.Typer(no_args_is_help=True, help="Public datasets holomed knows.")
app.add_typer(datasets_app, name="datasets")
console = Console(width=None if os.isatty(1) else 200)

SpecArg = Annotated[
    Path | None, typer.Argument(help="spec YAML; default: the embedded SYNTHETIC demo")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="output directory")]
BundleArg = Annotated[Path, typer.Argument(help="bundle directory from 'holomed fit'")]
InputOpt = Annotated[
    list[str] | None,
    typer.Option("--input", "-i", help="MODALITY=FILE, repeatable; absent modalities are missing"),
]
DatasetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--dataset-option",
        "-d",
        help="KEY=VALUE: read the model's dataset with these options instead of files, "
        "e.g. path=/data/physionet2012/set-b; labelled data are also evaluated",
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="override a spec field: KEY=VALUE, e.g. training.devices=2, "
        "training.strategy=ddp, training.precision=bf16-mixed (repeatable)",
    ),
]


def _message(err: Exception) -> str:
    """One readable line: holomed's own errors (and ValueError/OSError, which name the
    value or the file) as they are; others (KeyError, TypeError ...) with their type."""
    text = str(err).strip() or "(no message)"
    if active():  # privacy on: no ids, cell values or data paths in what is printed
        text = redact(text) + " (patient values redacted for privacy)"
    if isinstance(err, HolomedError | ValueError | OSError):
        return text
    return f"{type(err).__name__}: {text}"


def _privacy_from(spec: Any) -> None:
    """Privacy on for the rest of the command when the spec asks for pseudonyms."""
    if spec.privacy.pseudonymise:
        activate([spec.base_dir or ""])


def _fail(err: Exception) -> None:
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(_message(err))}")
    raise typer.Exit(2)


@contextmanager
def _guard() -> Iterator[None]:
    """Errors become one red line and exit code 2 (``HOLOMED_DEBUG=1``: the traceback)."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as err:  # noqa: BLE001 - every failure is reported, never a traceback
        if os.environ.get("HOLOMED_DEBUG"):
            raise
        _fail(err)


def _overrides(items: list[str] | None, flag: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` items -> {KEY: VALUE read as YAML}; ``flag`` names the option in
    errors."""
    import yaml

    from holomed.spec import load_yaml

    out = {}
    for item in items or []:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        try:
            out[k.strip()] = load_yaml(v)
        except yaml.YAMLError as err:
            why = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ValueError(f"{flag} {item!r}: the value is not valid YAML ({why})") from None
    return out


def _sources(items: list[str]) -> dict[str, list[str]]:
    sources: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--input {item!r}: expected MODALITY=FILE")
        name, path = item.split("=", 1)
        sources.setdefault(name.strip(), []).append(path)
    return sources


def _load(
    spec_path: Path | None,
    overrides: list[str] | None = None,
    check: Callable[[Any], Any] | None = None,
):
    """The spec (with overrides) and its cohort; ``check(spec)`` runs before the cohort is
    loaded, so that a mistake in the command line (a misspelt candidate) is named at once,
    not after minutes of loading."""
    from holomed.cohort import load_cohort
    from holomed.spec import load_spec, parse_spec
    from holomed.synthetic import demo_spec_dict

    if spec_path is None:
        spec = parse_spec(demo_spec_dict(), where="<embedded synthetic demo>")
        console.print("[yellow]Using the embedded SYNTHETIC demo cohort (not clinical data).[/]")
    else:
        spec = load_spec(spec_path)
    if spec.privacy.pseudonymise:
        activate([spec.base_dir or ""])
    if overrides:
        from holomed.evaluation.compare import apply_overrides

        given = _overrides(overrides)
        spec = apply_overrides(spec, given, where="--set")
        for k in sorted(set(given) & set(spec.evaluation.grid)):
            console.print(
                f"[yellow]note: --set {k} is also in evaluation.grid "
                f"{spec.evaluation.grid[k]}: comparisons try the grid's values for the "
                f"networks (add --set 'evaluation.grid={{}}' to use {given[k]!r} alone)[/]"
            )
    from holomed.candidate import check_spec_candidates

    check_spec_candidates(spec)
    if check is not None:
        check(spec)
    n = set_threads(spec.training.threads)
    console.print(f"threads: {n} (BLAS/OpenMP and torch; small networks train on one)")
    with console.status(f"loading cohort {spec.dataset!r} ..."):
        cohort = load_cohort(spec)
    _cohort_table(cohort)
    return spec, cohort


def _cohort_table(cohort) -> None:
    s = cohort.summary()
    t = Table(title=f"cohort {s['name']}: {s['patients']} patients, task {s['task']}")
    for c in ("modality", "kind", "present", "coverage", "features"):
        t.add_column(c)
    for name, m in s["modalities"].items():
        t.add_row(name, m["kind"], str(m["present"]), f"{m['coverage']:.0%}", str(m["features"]))
    console.print(t)
    if cohort.excluded:
        from holomed.cohort import count_reasons

        console.print(f"[yellow]{len(cohort.excluded)} exclusion(s):[/]")
        for reason, n in count_reasons(cohort.excluded).items():
            console.print(f"  {n} x {reason}")


def _canonical(name: str) -> str:
    from holomed.candidate import canonical

    return canonical(name)


def _fusions(arg: str, spec) -> list[str]:
    """'all' = every fusion strategy; else comma-separated candidate names (fusions,
    lr_early, lr_late, gbm or baseline:gbm, stack, ensemble)."""
    import holomed.candidates  # noqa: F401
    from holomed.candidate import candidate_class, canonical
    from holomed.fusion import fusion_names

    if arg == "all":
        return fusion_names()
    names = [canonical(a) for a in arg.split(",") if a.strip()] or [spec.fusion.name]
    for n in names:
        candidate_class(n)
    return names


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<36}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _ticker(prog: Progress, task: Any) -> Callable[..., None]:
    """Advance the bar by a step's ``units`` (a comparison counts model fits, so its time
    estimate weighs a selection step by its inner fits); when output is not a terminal (a
    log file, CI) the bar cannot redraw, so each step is also written as one line with
    its count and elapsed time."""
    t0 = time.perf_counter()

    def tick(msg: str, units: int = 1) -> None:
        prog.update(task, advance=units, description=msg)
        if not console.is_terminal:
            t = next(x for x in prog.tasks if x.id == task)
            done, total = int(t.completed), int(t.total or 0)
            spent = time.perf_counter() - t0
            left = spent / max(done, 1) * max(total - done, 0)
            console.print(
                f"[{done}/{total}] {msg} ({spent:.0f} s; about {left:.0f} s left)",
                highlight=False,
            )

    return tick


def _fmt(m: dict[str, Any], seeds: int = 2) -> str:
    lo, hi = m["ci"]
    sd = "" if seeds < 2 else f"±{m['sd']:.3f}"  # one seed has no spread to show
    return f"{m['mean']:.3f}{sd} [{lo:.2f},{hi:.2f}]"


def leaderboard(results: dict[str, Any]) -> Table:
    metrics = {
        "regression": ["rmse", "mae", "r2"],
        "multilabel": ["auroc", "auprc", "f1_macro", "f1_micro", "subset_accuracy"],
        "survival": ["c_index", "c_index_uno", "td_auroc", "ibs"],
    }.get(results["task"], ["accuracy", "f1", "auroc", "auprc", "brier"])
    tag = "  [SYNTHETIC DATA]" if results.get("synthetic") else ""
    n_seeds = len(results["seeds"])
    t = Table(
        title=f"{results['dataset']}{tag}: "
        + (f"mean ± sd over {n_seeds} seeds " if n_seeds > 1 else "one seed ")
        + f"[95% bootstrap CI]; selected by CV on train: {results['selected']}"
    )
    t.add_column("entry")
    t.add_column("group")
    for m in metrics:
        t.add_column(m)
    t.add_column("fit s")
    t.add_column("peak MB")
    for name in results["leaderboard"]:
        e = results["strategies"][name]
        style = "bold green" if name == results["selected"] else None
        t.add_row(
            name,
            e["group"],
            *[_fmt(e["metrics"][m], n_seeds) for m in metrics],
            f"{e['fit_seconds']:.1f}",
            f"{e['peak_rss_mb']:.0f}",
            style=style,
        )
    return t


@app.command()
def compare(
    spec_path: SpecArg = None,
    fusion: Annotated[str, typer.Option(help="'all' or comma-separated names")] = "all",
    seeds: Annotated[int | None, typer.Option(min=1, help="seeds (default: the spec's)")] = None,
    out: OutOpt = Path("runs/compare"),
    baselines: Annotated[bool, typer.Option(help="classical baselines")] = True,
    ablations: Annotated[bool, typer.Option(help="single-modality and leave-one-out")] = True,
    executor: Annotated[
        str | None,
        typer.Option(
            help="where the fits run: auto | serial | local | ray (default: the spec's "
            "evaluation.executor)"
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: cores)")] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (executor ray; none: a local one)")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Every strategy + ablations + baselines on the same splits; writes results.json."""
    from holomed.cohort import patient_splits
    from holomed.evaluation.compare import compare as run_compare
    from holomed.evaluation.compare import count_fits
    from holomed.report.plots import leaderboard_plot

    extra = [
        f"evaluation.{k}={v}"
        for k, v in (("executor", executor), ("workers", workers), ("ray_address", ray_address))
        if v is not None
    ]
    with _guard(), run_lock(out):
        spec, cohort = _load(
            spec_path, [*(set_ or []), *extra] or None, lambda sp: _fusions(fusion, sp)
        )
        names = _fusions(fusion, spec)
        n_seeds = seeds or spec.evaluation.seeds
        total = count_fits(
            spec,
            names,
            n_seeds,
            len(patient_splits(cohort, spec.split)),
            baselines and spec.evaluation.baselines,
            ablations and spec.evaluation.ablations,
        )
        with _progress() as prog:
            task = prog.add_task("comparing", total=total)
            inner: list | None = [] if spec.evaluation.save_inner_predictions else None
            results, outputs = run_compare(
                spec,
                cohort,
                names,
                n_seeds,
                baselines=baselines and spec.evaluation.baselines,
                ablations=ablations and spec.evaluation.ablations,
                tick=_ticker(prog, task),
                inner=inner,
            )
        if spec_path is not None and not set_:  # relative to the run folder: no data paths
            results["spec_path"] = os.path.relpath(Path(spec_path).resolve(), out.resolve())
        write_json(out / "results.json", results)
        compare_predictions(results, outputs).to_csv(out / "predictions.csv", index=False)
        if inner:
            write_inner_predictions(out / "inner_predictions.npz", inner)
    leaderboard_plot(results, out / "leaderboard.png")
    console.print(leaderboard(results))
    _report(out)
    console.print(
        f"wrote {out / 'results.json'}, {out / 'predictions.csv'}, {out / 'leaderboard.png'}"
        f" in {results['total_seconds']:.0f} s"
    )


@app.command()
def fit(
    spec_path: SpecArg = None,
    out: OutOpt = Path("runs/fit"),
    fusion: Annotated[
        str | None,
        typer.Option(
            "--fusion",
            "--candidate",
            help="candidate: a fusion strategy, lr_early, lr_late, gbm (or baseline:gbm), "
            "stack (default: the spec's fusion)",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    all_patients: Annotated[
        bool, typer.Option("--all", help="train on all labelled patients (the model to deploy)")
    ] = False,
    from_run: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="a 'holomed compare' run folder: train its selected candidate, with its "
            "chosen parameters, on all labelled patients",
        ),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Fit one candidate and save a bundle to OUT/bundle: on the training patients with a
    test evaluation (holdout/predefined split), per fold with out-of-fold evaluation and
    then on all patients (kfold split), or on all labelled patients (--all, --from).
    Started by torchrun or srun (one process per device, ``training.strategy: ddp``), every
    process trains and global rank 0 alone takes the run folder and writes."""
    from holomed.evaluation.fitrun import fit_mode, fit_run, save_fit
    from holomed.explain.attention import attention_readout  # noqa: F401 (import cost up front)
    from holomed.training import global_rank

    rank = global_rank()  # from the launcher's environment: RANK / SLURM_PROCID
    with _guard(), run_lock(out) if rank == 0 else contextlib.nullcontext(out):
        params = None
        if from_run is not None:
            chosen = read_selection(from_run)
            if spec_path is None:
                if not chosen.get("spec_path"):
                    raise ValueError(
                        f"--from {from_run}: the run did not record its spec file (it was "
                        "run with --set or on the embedded demo); give the spec: "
                        f"holomed fit SPEC --from {from_run}"
                    )
                spec_path = Path(from_run) / chosen["spec_path"]  # absolute stays absolute
            if fusion is not None and _canonical(fusion) != _canonical(chosen["selected"]):
                raise ValueError(
                    f"--fusion {fusion} and --from {from_run} disagree: that run selected "
                    f"{chosen['selected']}; drop --fusion to deploy it, or drop --from to "
                    f"train {fusion} instead"
                )
            fusion = chosen["selected"]
            params = chosen.get("params")
            all_patients = True
            console.print(
                f"deploying [bold]{fusion}[/] selected in {from_run} "
                f"(family {chosen.get('family')}), trained on all labelled patients"
            )
        spec, cohort = _load(spec_path, set_, lambda sp: _fusions(fusion or "", sp))
        if from_run is not None:
            _same_spec(from_run, chosen, spec)
        name = fusion or spec.fusion.name
        mode = fit_mode(spec, all_patients)
        with console.status(f"training {name} ({mode}) ..."):
            model, res = fit_run(spec, cohort, name, seed, params, mode)
        if from_run is not None:
            res["selected_by"] = str(from_run)
            res["estimate"] = chosen.get("estimate")
        trust = res
        if rank != 0:
            console.print(f"rank {rank}: trained; rank 0 writes {out}")
            return
        with console.status("attribution maps of signals and images, bundle ..."):
            save_fit(model, res, cohort, out, mode)
    metrics = trust.get("metrics", {})
    where = res["evaluation"] if mode != "holdout" else f"{res['n_test']} test patients"
    t = Table(
        title=f"{model.name} ({model.family}) on {where} (95% bootstrap CI)"
        + ("  [SYNTHETIC DATA]" if res["synthetic"] else "")
    )
    t.add_column("metric")
    t.add_column("value")
    for k, v in metrics.items():
        t.add_row(k, f"{v['mean']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]")
    if metrics:
        console.print(t)
    else:
        console.print(f"evaluation: {res['evaluation']}")
        est = res.get("estimate")
        m = (est or {}).get("selection_metric")
        if est and m in est["metrics"]:
            v = est["metrics"][m]
            console.print(
                f"expected performance, from {res['selected_by']}: held-out {m} "
                f"{v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}] on "
                f"{est['n_evaluated']} patients (models trained without them)"
            )
    if "contributions" in trust:
        c = trust["contributions"]
        console.print(
            "modality Shapley ("
            + c["metric"]
            + "): "
            + ", ".join(f"{k} {v:+.3f}" for k, v in c["global"].items())
        )
    console.print(
        f"bundle: {out / 'bundle'}  ({res.get('fit_seconds') or 0:.1f} s); "
        f"results: {out / 'results.json'}"
    )
    _report(out)


def _same_spec(from_run: Path, chosen: dict[str, Any], spec: Any) -> None:
    """``--from RUN``: the spec here must be the one the run compared, except for
    settings of how a comparison runs (:data:`holomed.runfiles.RUN_ONLY`)."""
    if chosen.get("spec") is None:
        return
    from holomed.spec import SpecError, parse_spec

    recorded = chosen["spec"]
    try:  # a run of an earlier version lacks newer fields: they take their defaults
        recorded = parse_spec(recorded, where=f"{from_run}").model_dump(
            mode="json", exclude={"base_dir"}
        )
    except (SpecError, ValueError, TypeError):
        pass  # compared as recorded: the differences then name what does not parse
    diff = spec_differences(recorded, spec.model_dump(mode="json", exclude={"base_dir"}))
    if diff:
        raise ValueError(
            f"--from {from_run}: this spec differs from the one that run compared "
            f"({'; '.join(diff[:5])}{' ...' if len(diff) > 5 else ''}); give the spec file "
            "and --set options it ran with (its spec is under 'spec' in its results.json)"
        )


def _report(run_dir: Path) -> None:
    from holomed.report.html import render_report

    path = render_report(run_dir)
    console.print(f"report: {path}")


@app.command()
def robustness(
    spec_path: SpecArg = None,
    out: OutOpt = Path("runs/robustness"),
    fusion: Annotated[str, typer.Option(help="'all' or comma-separated names")] = "all",
    seeds: Annotated[int | None, typer.Option(min=1, help="seeds (default: the spec's)")] = None,
    baselines: Annotated[bool, typer.Option()] = True,
    from_run: Annotated[
        Path | None,
        typer.Option("--from", help="a compare run: test its selected candidate (its params)"),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Test metrics with 0/20/40/60/80 % of test patients losing each modality, and with
    each of a patient's modalities removed at random with that probability (at least one
    kept); writes robustness.json and robustness.png."""
    from holomed.evaluation.robustness import robustness as run
    from holomed.report.plots import robustness_plot

    with _guard(), run_lock(out):
        check = None if from_run is not None else (lambda sp: _fusions(fusion, sp))
        spec, cohort = _load(spec_path, set_, check)
        params = None
        if from_run is not None:
            chosen = read_selection(from_run)
            _same_spec(from_run, chosen, spec)
            fusion = chosen["selected"]
            params = {_fusions(fusion, spec)[0]: chosen.get("params")}
        names = _fusions(fusion, spec)
        n_seeds = seeds or spec.evaluation.seeds
        total = (len(names) + (3 if baselines else 0)) * n_seeds
        with _progress() as prog:
            task = prog.add_task("robustness", total=total)
            curve = run(
                spec,
                cohort,
                names,
                n_seeds,
                baselines=baselines,
                tick=_ticker(prog, task),
                params=params,
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "robustness.json", curve)
    robustness_plot(curve, out / "robustness.png")
    if (out / "results.json").exists():  # a run folder: its report gains the curve
        _report(out)
    metric = curve["metrics"][0]
    t = Table(
        title=f"{metric} when each of a test patient's modalities is removed with probability x "
        f"(at least one kept), mean over {len(curve['seeds'])} seeds"
    )
    t.add_column("entry")
    sc = "random" if "random" in curve["scenarios"] else curve["scenarios"][0]
    for r in curve["rates"]:
        t.add_column(f"{r:.0%}")
    for name, d in curve["curves"].items():
        t.add_row(name, *[f"{v:.3f}" for v in d[sc][metric]["mean"]])
    console.print(t)
    console.print(f"wrote {out / 'robustness.json'} and {out / 'robustness.png'}")


@app.command()
def impute(
    spec_path: SpecArg = None,
    out: OutOpt = Path("runs/impute"),
    modality: Annotated[
        list[str] | None,
        typer.Option("--modality", "-m", help="tabular/omics modalities to use (default: all)"),
    ] = None,
    samples: Annotated[
        int, typer.Option(min=1, help="draws per patient (mean and sd written)")
    ] = 20,
    epochs: Annotated[int, typer.Option(min=1, help="training epochs of the generator")] = 300,
    seed: Annotated[int, typer.Option()] = 0,
    set_: SetOpt = None,
) -> None:
    """Generate the absent tabular/omics modalities of each patient from the ones present
    (multimodal VAE): writes MODALITY.generated.csv (flagged, never mixed with measured
    values), MODALITY.generated_sd.csv and impute_report.json."""
    from holomed.generative.impute import impute as run

    with _guard(), run_lock(out):
        spec, cohort = _load(spec_path, set_)
        with console.status("fitting the generator ..."):
            ids = {m.name: m.id_column for m in spec.modalities if m.id_column}
            report = run(cohort, out, modality, samples, ids, epochs=epochs, seed=seed)
    for name, r in report["modalities"].items():
        lost = r["absent_everywhere"]
        console.print(
            f"{name}: {r['generated']} patients generated, {r['measured']} measured"
            + (f", {lost} with no modality to generate from" if lost else "")
        )
        if r["skipped_columns"]:
            console.print(f"  {name}: columns not numeric, not generated: {r['skipped_columns']}")
    for name, why in report.get("skipped_modalities", {}).items():
        console.print(f"{name}: not generated ({why})")
    console.print(f"wrote {out}")


@app.command()
def predict(
    bundle: BundleArg,
    input: InputOpt = None,
    dataset_option: DatasetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("predictions.csv"),
) -> None:
    """Predict new patients; any modality may be missing for any patient. A patient
    without any usable data is listed with an empty score and its ``excluded_reason``.
    OUT may be an existing folder: the table is then OUT/predictions.csv."""
    from holomed.candidates import load
    from holomed.cohort import dataset_cohort, unlabelled_cohort
    from holomed.provenance import seen_in_training

    with _guard():
        if out.is_dir():
            out = out / "predictions.csv"
        model = load(bundle)
        _privacy_from(model.spec)
        if bool(input) == bool(dataset_option):
            raise ValueError("give either --input MODALITY=FILE or --dataset-option KEY=VALUE")
        if dataset_option:
            cohort = dataset_cohort(
                model.spec, **_overrides(dataset_option, flag="--dataset-option")
            )
        else:
            cohort = unlabelled_cohort(model.spec, _sources(input))
        proba = model.predict_proba(cohort)
        unknown = unknown_categories(model)
        unused = unused_columns(model)
        far = out_of_range(model)
        metrics = model.evaluate(cohort) if cohort.y is not None else None
        seen = None
        if metrics is not None:
            card_path = Path(bundle) / "card.json"
            card = json.loads(card_path.read_text()) if card_path.is_file() else None
            seen = seen_in_training(card, list(cohort.ids))
        df = prediction_table(model, cohort, proba)
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
        mpath = out.with_suffix(".metrics.json")
        if metrics is not None:
            summary = {"n": int(len(cohort)), "metrics": metrics, "excluded": len(cohort.excluded)}
            summary["training_patients_scored"] = seen
            write_json(mpath, summary)
    console.print(f"{len(df)} patients -> {out}")
    if metrics is not None:
        console.print(
            "labelled: "
            + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))
            + f" -> {mpath}"
        )
        if seen and seen["flag"]:
            lo, hi = seen["ci"]
            console.print(
                f"[yellow]about {seen['estimate']} of the {seen['scored']} scored patients "
                f"(95 % interval {lo}-{hi}) look like training patients of this model: "
                "these metrics are not held-out[/]",
                highlight=False,
            )
    for modality, column, n in unknown:
        console.print(
            f"[yellow]modality {modality!r}, column {column!r}: {n} value(s) of a category "
            "not seen in training (encoded as no category)[/]",
            highlight=False,
        )
    for modality, cols in far.items():
        console.print(
            f"[yellow]modality {modality!r}: values far outside the training range (a unit "
            "or typing error?), patients per column: "
            + ", ".join(f"{c} {len(r)}" for c, r in cols.items())
            + "[/]",
            highlight=False,
        )
    for modality, cols in unused:
        more = f" and {len(cols) - 8} more" if len(cols) > 8 else ""
        console.print(
            f"[yellow]modality {modality!r}: {len(cols)} column(s) the model does not read "
            f"were ignored: {cols[:8]}{more}[/]",
            highlight=False,
        )
    for line in _exclusion_lines(cohort.excluded):
        console.print(line, highlight=False)


def _exclusion_lines(excluded: list[dict[str, Any]], shown: int = 10) -> list[str]:
    """What predict says about exclusions, each scope counted apart: patients without
    usable data, modality rows treated as missing, single values set to missing."""
    from rich.markup import escape

    by: dict[str, list[dict[str, Any]]] = {}
    for e in excluded:
        by.setdefault(str(e.get("scope", "modality")), []).append(e)
    lines = []
    if by.get("patient"):
        es = by.pop("patient")
        lines.append(
            f"[yellow]{len(es)} patient(s) without usable data: listed with an empty score "
            "and their excluded_reason:[/]"
        )
        lines += [f"  {escape(str(e['id']))}: {escape(str(e['reason']))}" for e in es[:shown]]
    if by.get("modality"):
        es = by.pop("modality")
        lines.append(f"[yellow]{len(es)} modality row(s) unusable and treated as missing:[/]")
        lines += [
            f"  {escape(str(e['id']))} ({escape(str(e.get('modality', '?')))}): "
            f"{escape(str(e['reason']))}"
            for e in es[:shown]
        ]
    for scope, es in by.items():  # 'value' (and a dataset's own, e.g. 'epoch'): counted
        counts: dict[str, int] = {}
        for e in es:
            key = f"{e['modality']}: {e['reason']}" if "modality" in e else str(e["reason"])
            counts[key] = counts.get(key, 0) + int(e.get("count", 1))
        what = "value(s) set to missing" if scope == "value" else f"{scope}(s) left out"
        lines.append(f"[yellow]{sum(counts.values())} {escape(what)}:[/]")
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:shown]
        lines += [f"  {n} x {escape(k)}" for k, n in top]
    return lines


@app.command()
def explain(
    bundle: BundleArg,
    input: Annotated[list[str], typer.Option("--input", "-i", help="MODALITY=FILE, repeatable")],
    out: OutOpt = Path("runs/explain"),
    maps: Annotated[
        int, typer.Option(help="patients per signal/image modality drawn as attribution maps")
    ] = 3,
) -> None:
    """Explain new patients: per-patient modality Shapley values and leave-one-out
    deltas, the fusion's modality weights and set-pooling weights, top features per
    modality, and occlusion maps (PNG) of signal and image modalities."""
    import pandas as pd

    from holomed.candidates import load
    from holomed.cohort import unlabelled_cohort
    from holomed.explain.maps import attribution_maps

    with _guard():
        if out.exists() and not out.is_dir():
            raise FileExistsError(
                f"--out {out}: is a file; explain writes a folder (explanations.json, "
                "contributions.csv, maps)"
            )
        model = load(bundle)
        _privacy_from(model.spec)
        cohort = unlabelled_cohort(model.spec, _sources(input))
        why = model.explain(cohort)
        contrib = why["contributions"]
        res = {
            "kind": "explain",
            "bundle": str(bundle),
            "fusion": model.name,
            "family": model.family,
            "n_patients": len(cohort),
            "contributions": contrib,
            "attention": why["attention"],
            "features": {"method": why.get("features_method"), "top": why["features"]},
            "excluded": cohort.excluded,
            "attribution_plots": attribution_maps(model, cohort, out, n_patients=maps)
            if model.family == "neural"
            else [],
        }
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "explanations.json", res)
        table = pd.DataFrame(
            {
                "id": cohort.ids,
                "score": contrib["patient_score"],
                "score_without_any_modality": contrib["patient_base"],
                **{f"shapley_{m}": contrib["patient"][m] for m in contrib["modalities"]},
                **{f"loo_{m}": contrib["patient_loo"][m] for m in contrib["modalities"]},
            }
        )
        table.to_csv(out / "contributions.csv", index=False)
    console.print(
        f"{len(cohort)} patients explained -> {out / 'explanations.json'}, "
        f"{out / 'contributions.csv'}"
    )


@app.command()
def draft(
    bundle: BundleArg,
    input: InputOpt = None,
    dataset_option: DatasetOpt = None,
    out: OutOpt = Path("runs/draft"),
    attributes: Annotated[
        Path | None,
        typer.Option(
            help="table of the patients' attributes (sex, site ...) for the subgroup caveats "
            "(default: the attribute columns of the tabular inputs)"
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            help="the fit run's results.json holding the subgroup audit (default: the "
            "card's, else results.json beside the bundle when its metrics are the card's)"
        ),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="features explained per modality")] = 10,
    max_patients: Annotated[
        int, typer.Option(min=1, help="draft at most this many patients (each is explained)")
    ] = 100,
) -> None:
    """Evidence drafts: per patient, the prediction told in sentences (calibration,
    modality contributions, top features, missing modalities, subgroup caveats), each
    citing the JSON values it states. Fixed templates, no language model; labelled DRAFT.
    Writes OUT/evidence_drafts.json and OUT/evidence_drafts.txt."""
    from holomed.candidates import load
    from holomed.cohort import dataset_cohort, unlabelled_cohort
    from holomed.generative.evidence import (
        attributes_from_files,
        bundle_audit,
        evidence_draft,
        model_facts,
        patient_records,
        results_audit,
    )

    with _guard():
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {out}: is a file; draft writes a folder")
        model = load(bundle)
        _privacy_from(model.spec)
        if bool(input) == bool(dataset_option):
            raise ValueError("give either --input MODALITY=FILE or --dataset-option KEY=VALUE")
        sources = _sources(input) if input else {}
        if dataset_option:
            cohort = dataset_cohort(
                model.spec, **_overrides(dataset_option, flag="--dataset-option")
            )
        else:
            cohort = unlabelled_cohort(model.spec, sources)
        try:
            card = json.loads((bundle / "card.json").read_text())
        except (OSError, ValueError):
            card = {}
        if results is not None:
            try:
                res = json.loads(results.read_text())
            except (OSError, ValueError) as err:
                raise ValueError(
                    f"--results {results}: not a readable results.json ({err})"
                ) from None
            audit, why = results_audit(res, card)
            if audit is None:
                raise ValueError(f"--results {results}: {why}")
            where = f"{results}: fairness"
        else:
            audit, where = bundle_audit(bundle, card)
        attrs: dict[str, dict[str, Any]] = {}
        if attributes is not None or sources:
            attrs = attributes_from_files(
                model.spec, sources, str(attributes) if attributes else None
            )
        elif cohort.attributes is not None:
            attrs = {
                str(i): dict(row)
                for i, row in zip(cohort.ids, cohort.attributes.to_dict("records"), strict=True)
            }
        shown = cohort
        if len(cohort) > max_patients:  # a subset forgets exclusions: keep the reasons
            shown = replace(cohort.subset(range(max_patients)), excluded=cohort.excluded)
        docs = {
            "prediction": "the patient's prediction and explanation (the API's explain record)",
            "card": f"{bundle / 'card.json'}",
            "audit": where or "none found",
            "attributes": str(attributes) if attributes else "the tabular inputs' columns",
            "model": "the bundle's candidate: family, name, fusion imputation",
        }
        facts = model_facts(model)
        bins = dict(model.spec.evaluation.attribute_bins)
        records = patient_records(model, shown, top_k=top_k, card=card)
        drafts = [
            evidence_draft(rec, card, audit, attrs.get(rec["patient"]), facts, bins, docs)
            for rec in records
        ]
        out.mkdir(parents=True, exist_ok=True)
        write_json(
            out / "evidence_drafts.json",
            {
                "kind": "evidence_drafts",
                "bundle": str(bundle),
                "generator": "fixed templates (holomed.generative.evidence); no language model",
                "patients": len(drafts),
                # each draft beside the documents its /prediction and /attributes sources
                # point into (/card: the bundle's card.json; /audit: the results it names)
                "drafts": [
                    {
                        **d.to_json(),
                        "prediction": rec,
                        "attributes": attrs.get(rec["patient"]) or {},
                        "model": facts,
                    }
                    for d, rec in zip(drafts, records, strict=True)
                ],
            },
        )
        (out / "evidence_drafts.txt").write_text(
            "\n".join(d.text for d in drafts), encoding="utf-8"
        )
    more = f" (first {max_patients} of {len(cohort)})" if len(cohort) > max_patients else ""
    console.print(
        f"{len(drafts)} evidence drafts{more} -> {out / 'evidence_drafts.json'}, "
        f"{out / 'evidence_drafts.txt'}"
        + ("" if audit else "; no subgroup audit found (no caveats can be matched)")
    )
    for line in _exclusion_lines(cohort.excluded):
        console.print(line, highlight=False)


@app.command()
def deid(
    spec_path: Annotated[Path, typer.Argument(help="the identified cohort's spec")],
    out: Annotated[Path, typer.Option("--out", "-o", help="a new folder")],
    key_file: Annotated[
        Path | None,
        typer.Option(
            help="secret key file (else $HOLOMED_PRIVACY_KEY_FILE / $HOLOMED_PRIVACY_KEY)"
        ),
    ] = None,
    linkage: Annotated[
        Path | None, typer.Option(help="write the pseudonym -> id table here (outside OUT)")
    ] = None,
    tables: Annotated[
        bool | None,
        typer.Option(
            "--tables/--frames",
            help="EHR specs: de-identify the raw ehr.tables (default when "
            "privacy.ehr_tables is set), or the frames the cohort trains on",
        ),
    ] = None,
) -> None:
    """De-identify a cohort: keyed pseudonyms in every modality, notes through Presidio,
    DICOM through the PS3.15 Basic profile (modified dates), declared columns dropped,
    pseudonymised or date-shifted; for an EHR spec, its raw tables (--tables). Writes
    OUT/spec.yaml that reads the result, and OUT/deid_report.json (counts only)."""
    from holomed.privacy.cohort import deidentify_cohort
    from holomed.spec import load_spec

    with _guard():
        spec = load_spec(spec_path)
        activate([spec.base_dir or ""])  # errors from here on show no values
        key = load_key(
            key_file or (spec.resolve(spec.privacy.key_file) if spec.privacy.key_file else None)
        )
        rep = deidentify_cohort(
            spec, out, key, linkage, tick=lambda m: console.print(m), tables=tables
        )
        console.print(
            f"{rep['patients']} patients de-identified in {rep['seconds']} s -> {out}/spec.yaml "
            f"(report: {out}/deid_report.json)"
        )


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="a run folder with results.json and/or robustness.json")
    ],
) -> None:
    """Render RUN_DIR/report.html from the run's JSON results (never recomputed): a
    compare or fit run's results.json, a robustness run's robustness.json, or both."""
    with _guard():
        if (run_dir / "results.json").exists() or not (run_dir / "robustness.json").exists():
            read_results(run_dir / "results.json")  # a ResultsError naming file and field
        _report(run_dir)


@app.command()
def fusions() -> None:
    """List the registered fusion strategies."""
    from holomed.fusion import DESCRIPTIONS, FUSIONS

    t = Table(title="fusion strategies")
    t.add_column("name")
    t.add_column("level")
    t.add_column("what it does")
    for name, cls in FUSIONS.items():
        level = "decision" if cls.decision_level else ("input" if cls.raw_inputs else "embedding")
        t.add_row(name, level, DESCRIPTIONS.get(name, (cls.__doc__ or "").strip().split("\n")[0]))
    console.print(t)


@app.command()
def validate(spec_path: Annotated[Path, typer.Argument()], set_: SetOpt = None) -> None:
    """Check a spec (with any --set overrides) and load its cohort, reporting every
    exclusion."""
    with _guard():
        _load(spec_path, set_)
    console.print("[green]spec and cohort OK[/]")


@app.command()
def demo(out: OutOpt = Path("runs/demo")) -> None:
    """The quick start: writes the SYNTHETIC cohort as CSV files + spec, compares every
    candidate on it, stress-tests the selected one with missing modalities, and trains it
    on all labelled patients as the bundle to deploy (OUT/fit/bundle)."""
    from holomed.synthetic import write_synthetic

    spec_path = write_synthetic(out / "data", demo=True)
    console.print(
        f"[yellow]SYNTHETIC cohort[/] written to {out / 'data'} (known ground truth: "
        f"{out / 'data' / 'ground_truth.json'})"
    )
    compare(
        spec_path,
        fusion="all",
        seeds=None,
        out=out / "compare",
        baselines=True,
        ablations=True,
        set_=None,
    )
    results = json.loads((out / "compare" / "results.json").read_text())
    robustness(
        spec_path,
        out=out / "compare",
        fusion=results["selected"],
        seeds=None,
        baselines=True,
        from_run=out / "compare",
        set_=None,
    )
    fit(
        spec_path,
        out=out / "fit",
        fusion=None,
        seed=None,
        all_patients=True,
        from_run=out / "compare",
        set_=None,
    )


@datasets_app.command("list")
def datasets_list() -> None:
    """Registered datasets and whether their files are found locally."""
    from holomed.datasets import DATASETS

    t = Table(title="datasets ($HOLOMED_DATA, then the cache, then download)")
    for c in ("name", "description", "local copy"):
        t.add_column(c)
    for name, ds in DATASETS.items():
        if ds.synthetic:
            where = "generated"
        elif ds.bundled:
            where = ds.bundled
        else:
            found = [
                c for c in ds.candidates() if c.is_dir() and all((c / f).exists() for f in ds.files)
            ]
            where = str(found[0]) if found else "not found (downloads on first use)"
        t.add_row(name, ds.description, where)
    console.print(t)


@datasets_app.command("fetch")
def datasets_fetch(name: str) -> None:
    """Locate (or download) and checksum-verify a dataset."""
    from holomed.datasets import DATASETS

    with _guard():
        folder = DATASETS.get(name).locate()
    console.print(f"[green]{name}[/]: verified in {folder}")


# serving: the REST API, its tokens and its audit trail (holomed.serve)
app.command("serve")(serve)
app.command("synthesize")(synthesize_cmd)
app.command("align")(align)
app.add_typer(tokens_app, name="tokens")
app.add_typer(audit_app, name="audit")


if __name__ == "__main__":
    app()
