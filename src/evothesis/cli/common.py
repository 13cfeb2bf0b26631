"""What every ``evothesis`` command shares: settings, the database, the services, and how a
command ends (one line and exit 1 on an expected failure, never a traceback).

Every command that works on data opens the same ``Services`` (``services.py``) as the
collector and the pixel-management service do, through ``run_services``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, TypeVar

import asyncpg
import orjson
import typer
from pydantic import ValidationError
from rich.progress import Progress as Bar
from rich.progress import TaskID
from sqlalchemy.exc import SQLAlchemyError

from evothesis.config import Settings, environment_help, read_settings
from evothesis.embedded import start_embedded_postgres
from evothesis.errors import ConflictingSettings, EvothesisError
from evothesis.logs import configure_logging
from evothesis.registry.store import RegistryStore
from evothesis.services import CLI_POOL, Services, open_services, secret_box
from evothesis.storage.migrate import migrated_before, record_migration, upgrade
from evothesis.storage.pool import database_unreachable
from evothesis.storage.sessions import describe_error

__all__ = [
    "DATABASE_ERRORS",
    "ProgressReport",
    "command_group",
    "database_url",
    "exit_on_sigterm",
    "fail",
    "load_settings",
    "migrate_database",
    "migrate_for_serving",
    "prepared_database",
    "print_json",
    "print_table",
    "registry_of",
    "run_services",
]

T = TypeVar("T")

logger = logging.getLogger("evothesis.cli")

#: What reaching, migrating or querying an absent or misconfigured database raises.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    SQLAlchemyError,
)

#: The same, or a ``DATABASE_URL`` that is no URL at all (``ValueError``).
_UNUSABLE_DATABASE: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, ValueError)


def command_group(name: str, help_text: str) -> typer.Typer:
    """A sub-command group whose help lists the environment variables, like every command."""
    return typer.Typer(
        name=name,
        help=help_text,
        epilog=environment_help(),
        no_args_is_help=True,
        rich_markup_mode=None,
    )


def fail(message: str) -> NoReturn:
    """One line on stderr and exit 1: operators need the reason, not a traceback."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(1)


def load_settings(*, quiet: bool = False) -> Settings:
    """Read the environment once and set up logging at ``LOG_LEVEL`` (``quiet``: ``INFO``
    becomes ``WARNING``, for commands whose output is their answer).

    A bad value, or two names of one setting (the seed's and ours) set to different values,
    stops the program with one line naming the variables (exit 2); variables that look like
    settings but that nothing reads are warned about.

    The process's umask is set from the settings here, before anything is created: the data
    folder, local buckets and spool hold events and keys, owner-only unless configured.
    """
    try:
        settings, check = read_settings()
    except ConflictingSettings as exc:
        typer.echo(f"Invalid configuration: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        typer.echo(f"Invalid configuration: {problems}", err=True)
        raise typer.Exit(2) from None
    os.umask(settings.umask)
    level = settings.log_level
    configure_logging("WARNING" if quiet and level == "INFO" else level)
    unread = check.unread_message()
    if unread is not None:
        logging.getLogger("evothesis.config").warning(unread)
    return settings


def database_url(settings: Settings) -> str:
    """``DATABASE_URL`` when set; otherwise start the embedded server under the data folder."""
    if settings.database_url:
        return settings.database_url
    return start_embedded_postgres(settings.data_dir)


def migrate_database(url: str) -> None:
    logger.info("Applying database migrations")
    upgrade(url)


def migrate_for_serving(url: str, settings: Settings) -> None:
    """Migrate before collecting, and note it in the data folder.

    When no PostgreSQL answers, the collector starts anyway (spooling events, attributing
    from its registry snapshot) if this data folder has migrated that database to this
    version's head before: the schema the spooled rows need is there when it returns.
    Otherwise it stops with one line: a new database, or a new version whose migrations
    were never applied, would leave spooled rows nowhere to go.
    """
    try:
        migrate_database(url)
    except _UNUSABLE_DATABASE as exc:
        if not database_unreachable(exc):
            fail(f"cannot use the database: {describe_error(exc)}")
        if not migrated_before(url, settings.data_dir):
            fail(
                f"PostgreSQL does not answer ({describe_error(exc)}), and {settings.data_dir} "
                "has no record of migrating this database to this version; start the "
                "collector once it answers"
            )
        logger.warning(
            "PostgreSQL does not answer (%s): migrations skipped, the schema is at this "
            "version's revision since an earlier start",
            describe_error(exc),
        )
        return
    try:
        record_migration(url, settings.data_dir)
    except OSError as exc:
        logger.warning(
            "Cannot note the migration in %s (%s): a start while PostgreSQL is down will "
            "be refused",
            settings.data_dir,
            exc,
        )


def prepared_database(settings: Settings) -> str:
    """The database URL, migrated; an unusable database ends the command with one line."""
    try:
        url = database_url(settings)
        migrate_database(url)
    except _UNUSABLE_DATABASE as exc:
        fail(f"cannot use the database: {describe_error(exc)}")
    return url


def exit_on_sigterm(signum: int, frame: object) -> None:
    """Uvicorn re-raises SIGTERM after its graceful shutdown; turning it into a normal exit
    lets atexit hooks run, which stop the embedded PostgreSQL, and reports success."""
    raise SystemExit(0)


def run_services(work: Callable[[Services], Awaitable[T]]) -> T:
    """Run ``work`` on the services of the configured (or embedded) database, migrated, with
    a small pool. A missing secret key stops the command before any database is started;
    our errors and an unreachable database end it with one line."""
    settings = load_settings(quiet=True)
    try:
        secret_box(settings)
    except EvothesisError as exc:
        fail(str(exc))
    url = prepared_database(settings)

    async def run() -> T:
        async with open_services(settings, database_url=url, pool_size=CLI_POOL) as services:
            return await work(services)

    try:
        return asyncio.run(run())
    except EvothesisError as exc:
        fail(str(exc))
    except DATABASE_ERRORS as exc:
        fail(f"cannot use the database: {describe_error(exc)}")


def registry_of(services: Services) -> RegistryStore:
    """The registry of the command's database (``run_services`` made sure the key opens it)."""
    assert services.registry is not None
    return services.registry


def print_json(value: object) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


class ProgressReport:
    """A bar on a terminal; elsewhere (CI, logs) a line every ``every_s`` seconds."""

    def __init__(self, label: str, every_s: float = 5.0, *, unit: str = "events") -> None:
        self._label = label
        self._unit = unit
        self._every = every_s
        self._last = 0.0
        self._bar: Bar | None = None
        self._task: TaskID | None = None
        if sys.stderr.isatty():
            self._bar = Bar(transient=False)
            self._task = self._bar.add_task(label, total=None)
            self._bar.start()

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total)
            return
        now = time.monotonic()
        if now - self._last >= self._every or done >= total:
            self._last = now
            share = f" ({100 * done / total:.0f}%)" if total else ""
            typer.echo(f"{self._label}: {done}/{total} {self._unit}{share}", err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
