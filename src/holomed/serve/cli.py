"""Command line of the model server, mounted by ``holomed.cli``:

- ``holomed serve BUNDLE [BUNDLE ...]``: the HTTP API (:mod:`holomed.serve.app`) under
  uvicorn (``--pacs dicomweb://...``: image studies fetched by accession number,
  :mod:`holomed.serve.pacs`);
- ``holomed tokens create --role R [--name N]`` (prints the token once), ``tokens list``,
  ``tokens revoke ID``;
- ``holomed audit verify`` (exit code 1 when the chain is broken), ``audit summary``.

Every command takes ``--db URL`` (else ``$HOLOMED_SERVE_DB``, else the SQLite file
``holomed-serve.db`` in ``--state-dir``, default the current folder). Heavy imports
(FastAPI, SQLAlchemy, the models) happen inside the commands, so mounting these costs
the main command line nothing.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from holomed.clierrors import cli_guard
from holomed.threads import set_threads

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="database URL (SQLAlchemy), or an SQLite file path; default $HOLOMED_SERVE_DB, "
        "else holomed-serve.db in --state-dir",
    ),
]
StateOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="folder of the default SQLite database (default: .)"),
]

serve_app = typer.Typer(no_args_is_help=True, help="Serve bundles over HTTP.")
tokens_app = typer.Typer(no_args_is_help=True, help="API tokens of 'holomed serve'.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail of 'holomed serve'.")


def _echo_err(text: str) -> None:
    typer.secho(text, fg=typer.colors.RED, err=True)


_guard = cli_guard  # errors: one line on stderr, exit code 2


def _engine(db: str | None, state_dir: Path | None, existing: bool = False):
    """The database's engine; ``existing``: a command that only reads or changes what is
    there refuses an SQLite file that does not exist (a typo'd path would otherwise
    create an empty database and report it as empty)."""
    from holomed.serve.settings import db_url, make_engine

    url = db_url(db, state_dir)
    if existing and url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no such database; give the --db (or --state-dir) that "
                "'holomed serve' and 'holomed tokens create' used"
            )
    return make_engine(url)


def quiet_readers() -> None:
    """No header values of uploaded files in warnings or logs: pydicom's reading
    validation off (it warns with the offending values) and its logger to errors."""
    import pydicom

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def serve(
    bundles: Annotated[
        list[str], typer.Argument(help="bundle folders (from 'holomed fit'), or NAME=FOLDER")
    ],
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    db: DbOpt = None,
    state_dir: StateOpt = None,
    max_request_bytes: Annotated[int | None, typer.Option(help="largest request body")] = None,
    max_file_bytes: Annotated[int | None, typer.Option(help="largest uploaded file")] = None,
    max_files: Annotated[int | None, typer.Option(help="most files in one request")] = None,
    max_image_pixels: Annotated[
        int | None, typer.Option(help="most pixels (voxels) of one uploaded image")
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option(help="requests per token per minute (429 beyond)")
    ] = None,
    token_cache_seconds: Annotated[
        float | None, typer.Option(help="how long a verified token is trusted without argon2")
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option(help="concurrent predictions run as one batch, at most")
    ] = None,
    public_docs: Annotated[
        bool, typer.Option(help="serve /docs and /openapi.json without a token")
    ] = False,
    threads: Annotated[
        int | None, typer.Option(help="torch / BLAS threads (default: $HOLOMED_THREADS or 1)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    access_log: Annotated[
        bool, typer.Option(help="uvicorn's access log (paths and status only)")
    ] = False,
    ssl_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM)")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM)")] = None,
    pacs: Annotated[
        str | None,
        typer.Option(
            help="PACS to fetch studies from by accession number: dicomweb://host[:port]/path "
            "(dicomwebs:// for HTTPS); credentials come from --pacs-credentials or "
            "$HOLOMED_DICOMWEB_USER / $HOLOMED_DICOMWEB_PASSWORD, never from the URL"
        ),
    ] = None,
    pacs_credentials: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON file {username, password} or {token} for the PACS"),
    ] = None,
    pacs_timeout: Annotated[
        float | None, typer.Option(help="seconds per request to the PACS (default 30)")
    ] = None,
) -> None:
    """Serve bundles over HTTP: predict and explain, with tokens and an audit trail.

    One patient a request, any subset of the model's modalities (JSON or file uploads);
    API tokens with roles, a hash-chained audit trail, upload limits. Create a token
    first: 'holomed tokens create --role clinician'."""
    with _guard():
        import uvicorn

        from holomed.serve.server import create_app
        from holomed.serve.settings import ServeSettings, db_url, safe_url

        set_threads(threads or int(os.environ.get("HOLOMED_THREADS", "1")))
        quiet_readers()
        settings = ServeSettings.from_env(
            max_request_bytes=max_request_bytes,
            max_file_bytes=max_file_bytes,
            max_files=max_files,
            max_image_pixels=max_image_pixels,
            rate_limit_per_minute=rate_limit,
            token_cache_seconds=token_cache_seconds,
            max_batch=max_batch,
            pacs=pacs,
            pacs_credentials=str(pacs_credentials) if pacs_credentials else None,
            pacs_timeout=pacs_timeout,
        )
        url = db_url(db, state_dir)
        app = create_app(bundles, settings, db=url, public_docs=public_docs)
        state = app.state.holomed
        for m in state.models.values():
            typer.echo(f"model {m.name}: {m.path} (bundle {m.hash[:12]}, {m.task})")
        typer.echo(f"tokens and audit trail: {safe_url(url)}")
        if settings.pacs:
            from holomed.serve.pacs import describe

            typer.echo(describe(settings))
        if state.pseudonyms.scope == "session":
            typer.echo(
                "no privacy key set ($HOLOMED_PRIVACY_KEY[_FILE]): patient pseudonyms use a "
                "random key made now and change when the server restarts"
            )
        if host not in ("127.0.0.1", "localhost", "::1") and not ssl_certfile:
            _echo_err(
                f"warning: listening on {host} without TLS; tokens and patient data cross the "
                "network in clear text (give --ssl-certfile/--ssl-keyfile or use a TLS proxy)"
            )
        # the models' objects live as long as the server: out of the garbage collector's
        # full passes, which otherwise pause every request for tens to hundreds of ms
        gc.collect()
        gc.freeze()
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=access_log,
            ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
            ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
            server_header=False,
        )


serve_app.command("serve")(serve)


@tokens_app.command("create")
def tokens_create(
    role: Annotated[str, typer.Option(help="clinician, researcher or admin")],
    name: Annotated[str, typer.Option(help="who or what holds the token")] = "",
    db: DbOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Create a token; it is printed once (on standard output) and never stored."""
    with _guard():
        from holomed.serve.tokens import ROLES, TokenStore

        if role not in ROLES:  # before the database is opened (or created)
            raise ValueError(f"--role {role!r} unknown; expected one of {', '.join(ROLES)}")
        info, token = TokenStore(_engine(db, state_dir)).create(role, name)
    typer.echo(
        f"token {info.id} ({info.role}) created; it is shown only now, keep it secret:", err=True
    )
    typer.echo(token)


@tokens_app.command("list")
def tokens_list(
    db: DbOpt = None,
    state_dir: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """Every token: id, role, name, creation time, revoked or not (never the secret)."""
    with _guard():
        from holomed.serve.tokens import TokenStore

        rows = TokenStore(_engine(db, state_dir, existing=True)).list_tokens()
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r.public()))
        return
    if not rows:
        typer.echo("no tokens")
    for r in rows:
        state = f"revoked {r.revoked_at}" if r.revoked else "active"
        typer.echo(f"{r.id}  {r.role:<10}  {r.created}  {state:<36}  {r.name}")


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id (12 hex digits)")],
    db: DbOpt = None,
    state_dir: StateOpt = None,
) -> None:
    """Revoke a token. A running server stops accepting it within its token cache time
    (token_cache_seconds, default 30 s)."""
    with _guard():
        from holomed.serve.tokens import TokenStore

        info = TokenStore(_engine(db, state_dir, existing=True)).revoke(token_id)
    typer.echo(f"token {info.id} ({info.role}) revoked at {info.revoked_at}")


@audit_app.command("verify")
def audit_verify(
    db: DbOpt = None,
    state_dir: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
) -> None:
    """Recompute the audit trail's hash chain; report the first edited or missing row.
    Exit code 1 when the chain is broken."""
    with _guard():
        from holomed.serve.audit import verify_chain

        report = verify_chain(_engine(db, state_dir, existing=True))
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    elif report.ok:
        typer.echo(report.message)
    else:
        _echo_err(report.message)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("summary")
def audit_summary(
    db: DbOpt = None,
    state_dir: StateOpt = None,
    since: Annotated[str | None, typer.Option(help="ISO date or time (UTC)")] = None,
) -> None:
    """Request counts by endpoint and status, role, model and day (JSON; no pseudonyms)."""
    with _guard():
        from holomed.serve.audit import summary

        out = summary(_engine(db, state_dir, existing=True), since)
    typer.echo(json.dumps(out, indent=1))
