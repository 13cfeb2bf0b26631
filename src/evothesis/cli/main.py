"""The ``evothesis`` command: serve the collector or pixel management, run migrations, and
the command groups (clients, domains, events, export, process, gdpr, billing, spool,
worker)."""

from __future__ import annotations

import logging
import os
import signal
from typing import Annotated

import typer
import uvicorn

from evothesis import __version__
from evothesis.app import create_app
from evothesis.cli.billing import billing_app
from evothesis.cli.clients import clients_app, domains_app
from evothesis.cli.common import (
    database_url,
    exit_on_sigterm,
    fail,
    load_settings,
    migrate_database,
    migrate_for_serving,
)
from evothesis.cli.events import events_app
from evothesis.cli.export import export_app, process_app, worker
from evothesis.cli.gdpr import gdpr_app
from evothesis.cli.spool import spool_app
from evothesis.config import environment_help
from evothesis.errors import SecretKeyError
from evothesis.heap import limit_malloc_arenas
from evothesis.pixel_management import create_pixel_management_app
from evothesis.registry.secrets import generate_key
from evothesis.server import run_workers, uvicorn_config
from evothesis.services import secret_box

__all__ = ["app", "main"]

logger = logging.getLogger("evothesis.cli")

app = typer.Typer(
    name="evothesis",
    help="Evothesis: self-hosted, privacy-first event collection for data ownership.",
    epilog=environment_help(),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


@app.command(epilog=environment_help())
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    access_log: Annotated[bool, typer.Option(help="Log every HTTP request.")] = False,
    workers: Annotated[
        int, typer.Option(min=1, help="Collector processes sharing the port (one pool each).")
    ] = 1,
) -> None:
    """Run the collector (POST /collect, /health, /metrics, /events/*, the operations
    console at /console/, the demo site).

    With no DATABASE_URL an embedded PostgreSQL is started under EVOTHESIS_DATA_DIR
    (default ./.evothesis). Migrations are applied before the server accepts requests.
    Without PIXEL_MANAGEMENT_URL the registry and its API (/api/v1/..., /pixel/...) are
    served here too; in development client_test is registered for localhost. While
    PostgreSQL is unreachable, accepted events go to the disk spool (SPOOL_DIR) and are
    replayed when it returns; a collector started during such an outage runs if this data
    folder migrated the database before, and attributes the sites in its registry snapshot.
    """
    settings = load_settings()
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    url = database_url(settings)
    migrate_for_serving(url, settings)
    logger.info("Evothesis %s collecting on http://%s:%d/collect", __version__, host, port)
    logger.info("Operations console on http://%s:%d/console/", host, port)
    if workers > 1:
        os.environ["DATABASE_URL"] = url
        run_workers(host=host, port=port, workers=workers, access_log=access_log, settings=settings)
        return
    application = create_app(settings, database_url=url, long_running=True)
    config = uvicorn_config(
        application, host=host, port=port, settings=settings, access_log=access_log
    )
    uvicorn.Server(config).run()


@app.command(epilog=environment_help())
def migrate() -> None:
    """Apply database migrations (also done automatically by `serve`).

    Uses DATABASE_URL, or the embedded PostgreSQL under EVOTHESIS_DATA_DIR when unset.
    """
    settings = load_settings()
    migrate_database(database_url(settings))
    typer.echo("Database schema is up to date.")


@app.command("pixel-management", epilog=environment_help())
def pixel_management(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8001,
    access_log: Annotated[bool, typer.Option(help="Log every HTTP request.")] = False,
) -> None:
    """Run the pixel-management service: the client registry over HTTP.

    Public: /api/v1/config/domain/{domain}, /pixel/{client_id}/tracking.js. Collectors:
    /api/v1/internal/domain/{domain} (PIXEL_MANAGEMENT_TOKEN). Operators:
    /api/v1/clients (EVOTHESIS_ADMIN_TOKEN). With no DATABASE_URL an embedded PostgreSQL is
    started under EVOTHESIS_DATA_DIR; migrations are applied first.
    """
    settings = load_settings()
    try:
        secret_box(settings)  # a missing key stops us before any database is started
    except SecretKeyError as exc:
        fail(str(exc))
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    url = database_url(settings)
    migrate_database(url)
    logger.info("Evothesis %s pixel management on http://%s:%d/", __version__, host, port)
    application = create_pixel_management_app(settings, database_url=url)
    config = uvicorn_config(
        application, host=host, port=port, settings=settings, access_log=access_log
    )
    uvicorn.Server(config).run()


@app.command("secret-key", epilog=environment_help())
def secret_key() -> None:
    """Print a new key for EVOTHESIS_SECRET_KEY (it encrypts client secrets at rest).

    To rotate, set EVOTHESIS_SECRET_KEY=<new>,<old>: the first key seals, all keys open.
    """
    typer.echo(generate_key())


app.add_typer(clients_app)
app.add_typer(domains_app)
app.add_typer(events_app)
app.add_typer(export_app)
app.add_typer(process_app)
app.add_typer(gdpr_app)
app.add_typer(billing_app)
app.add_typer(spool_app)
app.command(epilog=environment_help())(worker)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"evothesis {__version__}")
        raise typer.Exit()


def main() -> None:
    limit_malloc_arenas()
    app()
