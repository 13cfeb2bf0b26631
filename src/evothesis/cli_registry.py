"""``evothesis clients …`` and ``evothesis domains …``: the registry from a shell.

Commands work on the database directly (``DATABASE_URL``, or the embedded one), through
the same ``RegistryStore`` and validation as the admin API, so a client made here is
indistinguishable from one made over HTTP. Each command migrates first, runs one
``asyncio.run`` and closes its pool. Expected failures (unknown client, domain taken,
invalid setting, wrong secret key, database down) are one line on stderr and exit 1;
typer's usage errors exit 2.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, NoReturn, TypeVar

import asyncpg
import orjson
import typer
from sqlalchemy.exc import SQLAlchemyError

from evothesis.config import Settings, environment_help
from evothesis.errors import EvothesisError
from evothesis.registry.choices import (
    BotPolicy,
    ConsentMode,
    ExportFormat,
    IpCollection,
    PrivacyLevel,
)
from evothesis.registry.secrets import SecretBox, SecretKeyError
from evothesis.registry.store import ClientRecord, ClientSpec, RegistryStore
from evothesis.storage.sessions import describe_error

__all__ = [
    "DATABASE_ERRORS",
    "clients_app",
    "command_group",
    "domains_app",
    "fail",
    "open_secret_box",
    "prepared_database",
    "print_json",
    "print_table",
    "run_on_registry",
]

T = TypeVar("T")

#: What reaching, migrating or querying an absent or misconfigured database raises.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    SQLAlchemyError,
)

_KEEP_WRITE_KEY = (
    "Keep this write key now: it is stored only as a digest and cannot be shown again "
    "(replace it with `evothesis clients rotate-write-key {client_id}`)."
)

ClientId = Annotated[str, typer.Argument(metavar="CLIENT_ID", help="The client's id.")]
Domain = Annotated[
    str, typer.Argument(metavar="DOMAIN", help="An exact host (www.acme.com) or *.acme.com.")
]


def command_group(name: str, help_text: str) -> typer.Typer:
    """A sub-command group whose help lists the environment variables, like every command."""
    return typer.Typer(
        name=name,
        help=help_text,
        epilog=environment_help(),
        no_args_is_help=True,
        rich_markup_mode=None,
    )


clients_app = command_group("clients", "Create, list and change clients in the registry.")
domains_app = command_group("domains", "Give domains to clients, or take them away.")


def fail(message: str) -> NoReturn:
    """One line on stderr and exit 1: operators need the reason, not a traceback."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(1)


def open_secret_box(settings: Settings) -> SecretBox:
    """The box sealing client secrets, or exit 1 naming EVOTHESIS_SECRET_KEY."""
    try:
        return settings.secret_box()
    except SecretKeyError as exc:
        fail(str(exc))


def prepared_database(settings: Settings) -> str:
    from evothesis.cli import database_url, migrate_database

    try:
        url = database_url(settings)
        migrate_database(url)
    except (*DATABASE_ERRORS, ValueError) as exc:  # ValueError: DATABASE_URL is no URL
        fail(f"cannot use the database: {describe_error(exc)}")
    return url


async def _with_store(url: str, box: SecretBox, work: Callable[[RegistryStore], Awaitable[T]]) -> T:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        return await work(RegistryStore(pool, box))
    finally:
        await pool.close()


def run_on_registry(work: Callable[[RegistryStore], Awaitable[T]]) -> T:
    """Run ``work`` against the migrated registry database; failures exit as documented."""
    from evothesis.cli import load_settings

    settings = load_settings()
    box = open_secret_box(settings)
    url = prepared_database(settings)
    try:
        return asyncio.run(_with_store(url, box, work))
    except (EvothesisError, SecretKeyError) as exc:
        fail(str(exc))
    except DATABASE_ERRORS as exc:
        fail(f"cannot use the database: {describe_error(exc)}")


def print_json(value: object) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _remind_to_keep(client_id: str) -> None:
    typer.echo(_KEEP_WRITE_KEY.format(client_id=client_id), err=True)


# ------------------------------------------------------------------------------ clients


@clients_app.command("add", epilog=environment_help())
def add_client(
    client_id: ClientId,
    name: Annotated[str, typer.Option(help="Display name, e.g. 'Acme Corp'.")],
    privacy_level: Annotated[
        PrivacyLevel, typer.Option(help="How strictly events are treated.")
    ] = PrivacyLevel.STANDARD,
    ip_collection: Annotated[
        IpCollection, typer.Option(help="Keep, anonymise or drop visitor IPs.")
    ] = IpCollection.FULL,
    honour_dnt: Annotated[
        bool, typer.Option("--honour-dnt/--ignore-dnt", help="Respect Do Not Track / GPC.")
    ] = True,
    consent: Annotated[
        ConsentMode, typer.Option(help="Whether the tracker waits for consent.")
    ] = ConsentMode.NONE,
    bots: Annotated[
        BotPolicy,
        typer.Option(help="Bot, crawler and monitor events: keep (flagged is_bot) or drop."),
    ] = BotPolicy.KEEP,
    domains: Annotated[
        list[str] | None,
        typer.Option(
            "--domain", "-d", metavar="DOMAIN", help="A domain the client owns (repeatable)."
        ),
    ] = None,
    export_destination: Annotated[
        str | None, typer.Option(help="The client's bucket URL, e.g. s3://acme-events.")
    ] = None,
    export_format: Annotated[
        ExportFormat, typer.Option(help="File format of processed exports.")
    ] = ExportFormat.JSON,
) -> None:
    """Register a client, optionally with its domains, and print its write key once.

    Nothing is created when the id is taken or a domain is invalid or already owned.
    """
    spec = ClientSpec(
        name=name,
        privacy_level=privacy_level.value,
        ip_collection=ip_collection.value,
        honour_dnt=honour_dnt,
        consent_mode=consent.value,
        bot_policy=bots.value,
        export_destination=export_destination,
        export_format=export_format.value,
    )
    record, write_key = run_on_registry(
        lambda store: store.create_client(client_id, spec, domains or ())
    )
    print_json({**record.as_dict(), "write_key": write_key})
    _remind_to_keep(client_id)


@clients_app.command("list", epilog=environment_help())
def list_clients() -> None:
    """Show every client: id, name, privacy level, whether active, domains."""
    records: list[ClientRecord] = run_on_registry(lambda store: store.list_clients())
    if not records:
        typer.echo("No clients registered; add one with `evothesis clients add`.")
        return
    print_table(
        ("CLIENT ID", "NAME", "LEVEL", "ACTIVE", "DOMAINS"),
        [
            (
                r.client_id,
                r.name,
                r.privacy_level,
                "yes" if r.active else "no",
                ", ".join(r.domains) or "-",
            )
            for r in records
        ],
    )


@clients_app.command("show", epilog=environment_help())
def show_client(client_id: ClientId) -> None:
    """Print one client as JSON (secrets only as has_* flags)."""
    record = run_on_registry(lambda store: store.get_client(client_id))
    print_json(record.as_dict())


def _set_active(client_id: str, active: bool) -> None:
    run_on_registry(lambda store: store.update_client(client_id, {"active": active}))
    typer.echo(f"Client {client_id} {'activated' if active else 'deactivated'}.")


@clients_app.command("deactivate", epilog=environment_help())
def deactivate_client(client_id: ClientId) -> None:
    """Stop accepting events for a client (its domains stay reserved for it)."""
    _set_active(client_id, False)


@clients_app.command("activate", epilog=environment_help())
def activate_client(client_id: ClientId) -> None:
    """Accept events for a deactivated client again."""
    _set_active(client_id, True)


@clients_app.command("rotate-write-key", epilog=environment_help())
def rotate_write_key(client_id: ClientId) -> None:
    """Replace a client's write key; the old one stops working at once."""
    write_key = run_on_registry(lambda store: store.rotate_write_key(client_id))
    typer.echo(write_key)
    _remind_to_keep(client_id)


# ------------------------------------------------------------------------------ domains


@domains_app.command("add", epilog=environment_help())
def add_domain(client_id: ClientId, domain: Domain) -> None:
    """Let CLIENT_ID collect events from DOMAIN (which no other client may own)."""
    canonical = run_on_registry(lambda store: store.add_domain(client_id, domain))
    typer.echo(f"Domain {canonical} added to client {client_id}.")


@domains_app.command("remove", epilog=environment_help())
def remove_domain(client_id: ClientId, domain: Domain) -> None:
    """Stop attributing DOMAIN to CLIENT_ID."""
    canonical = run_on_registry(lambda store: store.remove_domain(client_id, domain))
    typer.echo(f"Domain {canonical} removed from client {client_id}.")
