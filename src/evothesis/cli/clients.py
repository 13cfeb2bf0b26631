"""``evothesis clients …`` and ``evothesis domains …``: the registry from a shell.

Commands work on the database directly (``DATABASE_URL``, or the embedded one), through
the same ``RegistryStore`` and validation as the admin API, so a client made here is
indistinguishable from one made over HTTP. Expected failures (unknown client, domain taken,
invalid setting, wrong secret key, database down) are one line on stderr and exit 1;
typer's usage errors exit 2.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from evothesis.api.client_models import ClientChanges
from evothesis.cli.common import (
    command_group,
    fail,
    print_json,
    print_table,
    registry_of,
    run_services,
)
from evothesis.config import environment_help
from evothesis.domain import (
    BotPolicy,
    ConsentMode,
    ExportFormat,
    FileLayout,
    IpCollection,
    PrivacyLevel,
    UserIdStorage,
)
from evothesis.registry.secrets import new_notify_secret
from evothesis.registry.store import ClientRecord, ClientSpec, RegistryStore
from evothesis.services import Services

__all__ = ["clients_app", "domains_app"]

T = TypeVar("T")


def run_on_registry(work: Callable[[RegistryStore], Awaitable[T]]) -> T:
    """Run ``work`` against the migrated registry database; failures exit as documented."""
    return run_services(lambda services: work(registry_of(services)))


_KEEP_WRITE_KEY = (
    "Keep this write key now: it is stored only as a digest and cannot be shown again "
    "(replace it with `evothesis clients rotate-write-key {client_id}`)."
)

ClientId = Annotated[str, typer.Argument(metavar="CLIENT_ID", help="The client's id.")]
Domain = Annotated[
    str, typer.Argument(metavar="DOMAIN", help="An exact host (www.acme.com) or *.acme.com.")
]


_SCHEDULE = typer.Option(
    help="Delivery schedule: real-time, hourly (minute 0, UTC), daily (00:00 UTC) or a "
    "cron expression in UTC such as '*/15 * * * *' (default: EXPORT_SCHEDULE)."
)
_THRESHOLD = typer.Option(
    min=1, help="Deliver as soon as this many of the client's events are waiting."
)
_NOTIFY_URL = typer.Option(
    help="Webhook told (signed) about paused and resumed destinations, failing and "
    "dead-lettered deliveries and finished replays."
)
_USER_IDS = typer.Option(
    help="What a Segment message's userId is stored as (default: the privacy level's: "
    "standard kept, gdpr hashed; hipaa always drops them)."
)
_LAYOUT = typer.Option(help="Folders of the files: dated (YYYY/MM/DD) or hive (export_date=…).")
_TABLE_RETENTION = typer.Option(
    min=0,
    max=3650,
    help="Days a table keeps removed files before vacuum (default TABLE_RETENTION).",
)

clients_app = command_group("clients", "Create, list and change clients in the registry.")
domains_app = command_group("domains", "Give domains to clients, or take them away.")


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
    require_write_key: Annotated[
        bool,
        typer.Option(
            "--require-write-key/--no-require-write-key",
            help="Refuse events with neither a page of the client (Origin/Referer) nor its "
            "write key (stored events say how they were authenticated either way).",
        ),
    ] = False,
    user_ids: Annotated[UserIdStorage | None, _USER_IDS] = None,
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
        ExportFormat,
        typer.Option(
            help="Format of processed exports: files (json: the seed's document) or a "
            "delta/iceberg table."
        ),
    ] = ExportFormat.JSON,
    export_layout: Annotated[FileLayout, _LAYOUT] = FileLayout.DATED,
    table_retention_days: Annotated[int | None, _TABLE_RETENTION] = None,
    export_schedule: Annotated[str | None, _SCHEDULE] = None,
    export_threshold: Annotated[int | None, _THRESHOLD] = None,
    notify_url: Annotated[str | None, _NOTIFY_URL] = None,
) -> None:
    """Register a client, optionally with its domains, and print its write key once (and
    its webhook's signing secret, with --notify-url).

    Nothing is created when the id is taken or a domain is invalid or already owned.
    """
    notify_secret = new_notify_secret() if notify_url else None
    spec = ClientSpec(
        name=name,
        privacy_level=privacy_level,
        ip_collection=ip_collection,
        honour_dnt=honour_dnt,
        consent_mode=consent,
        bot_policy=bots,
        require_write_key=require_write_key,
        user_id_storage=user_ids,
        export_destination=export_destination,
        export_format=export_format,
        export_layout=export_layout,
        table_retention_days=table_retention_days,
        export_schedule=export_schedule,
        export_threshold=export_threshold,
        notify_url=notify_url,
        notify_secret=notify_secret,
    )
    record, write_key = run_on_registry(
        lambda store: store.create_client(client_id, spec, domains or ())
    )
    secrets = {"write_key": write_key}
    if notify_secret:
        secrets["notify_secret"] = notify_secret
    print_json({**record.as_dict(), **secrets})
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


def _credentials(pairs: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--export-credential")
        found[key] = value
    return found


@clients_app.command("update", epilog=environment_help())
def update_client(
    client_id: ClientId,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    privacy_level: Annotated[
        PrivacyLevel | None, typer.Option(help="How strictly events are treated.")
    ] = None,
    ip_collection: Annotated[
        IpCollection | None, typer.Option(help="Keep, anonymise or drop visitor IPs.")
    ] = None,
    honour_dnt: Annotated[
        bool | None, typer.Option("--honour-dnt/--ignore-dnt", help="Respect Do Not Track / GPC.")
    ] = None,
    consent: Annotated[
        ConsentMode | None, typer.Option(help="Whether the tracker waits for consent.")
    ] = None,
    bots: Annotated[BotPolicy | None, typer.Option(help="keep (flagged is_bot) or drop.")] = None,
    require_write_key: Annotated[
        bool | None,
        typer.Option(
            "--require-write-key/--no-require-write-key",
            help="Refuse events with neither a page of the client nor its write key.",
        ),
    ] = None,
    user_ids: Annotated[UserIdStorage | None, _USER_IDS] = None,
    default_user_ids: Annotated[
        bool, typer.Option("--default-user-ids", help="Back to the privacy level's.")
    ] = False,
    export_destination: Annotated[
        str | None,
        typer.Option(
            help="The client's bucket URL; an empty value ('') clears it (its files then go "
            "to PROCESSED_S3_BUCKET)."
        ),
    ] = None,
    export_format: Annotated[
        ExportFormat | None,
        typer.Option(help="Format of processed exports: files or a delta/iceberg table."),
    ] = None,
    export_credentials: Annotated[
        list[str] | None,
        typer.Option(
            "--export-credential",
            metavar="KEY=VALUE",
            help="Replaces the destination's credentials (repeatable: access_key_id, "
            "secret_access_key, session_token, endpoint, region). Visible to other users "
            "of this machine in its process list: prefer the admin API on shared hosts.",
        ),
    ] = None,
    clear_export_credentials: Annotated[
        bool, typer.Option(help="Remove the destination's stored credentials.")
    ] = False,
    export_layout: Annotated[FileLayout | None, _LAYOUT] = None,
    table_retention_days: Annotated[int | None, _TABLE_RETENTION] = None,
    default_table_retention: Annotated[
        bool, typer.Option("--default-table-retention", help="Back to TABLE_RETENTION.")
    ] = False,
    export_schedule: Annotated[str | None, _SCHEDULE] = None,
    export_threshold: Annotated[int | None, _THRESHOLD] = None,
    notify_url: Annotated[str | None, _NOTIFY_URL] = None,
    default_schedule: Annotated[
        bool, typer.Option("--default-schedule", help="Back to EXPORT_SCHEDULE.")
    ] = False,
    no_threshold: Annotated[
        bool, typer.Option("--no-threshold", help="Never deliver early.")
    ] = False,
    no_notify: Annotated[bool, typer.Option("--no-notify", help="Remove the webhook.")] = False,
    rotate_notify_secret: Annotated[
        bool,
        typer.Option(
            "--rotate-notify-secret", help="A new signing secret for the webhook (printed once)."
        ),
    ] = False,
    ip_salt: Annotated[
        str | None,
        typer.Option(help="A new IP salt, hex, at least 16 bytes (hashed IPs change with it)."),
    ] = None,
) -> None:
    """Change some settings of a client (PATCH /api/v1/clients/CLIENT_ID): the options
    given change, the others stay, checked exactly as the admin API checks them. A new
    webhook gets a signing secret, printed once."""
    given: dict[str, object] = {
        key: value
        for key, value in {
            "name": name,
            "privacy_level": privacy_level,
            "ip_collection": ip_collection,
            "honour_dnt": honour_dnt,
            "consent_mode": consent,
            "bot_policy": bots,
            "require_write_key": require_write_key,
            "user_id_storage": user_ids,
            "export_format": export_format,
            "export_layout": export_layout,
            "table_retention_days": table_retention_days,
            "export_schedule": export_schedule,
            "export_threshold": export_threshold,
            "notify_url": notify_url,
            "ip_salt": ip_salt,
        }.items()
        if value is not None
    }
    if export_destination is not None:
        given["export_destination"] = export_destination or None
    if export_credentials and clear_export_credentials:
        raise typer.BadParameter("give --export-credential or --clear-export-credentials")
    if export_credentials:
        given["export_credentials"] = _credentials(export_credentials)
    elif clear_export_credentials:
        given["export_credentials"] = None
    for cleared, field in (
        (default_schedule, "export_schedule"),
        (default_table_retention, "table_retention_days"),
        (default_user_ids, "user_id_storage"),
        (no_threshold, "export_threshold"),
    ):
        if cleared:
            given[field] = None
    if no_notify:
        given["notify_url"] = given["notify_secret"] = None
    if not given and not rotate_notify_secret:
        raise typer.BadParameter("give at least one setting to change")
    try:
        changes = ClientChanges.model_validate(given).changes()
    except ValidationError as exc:
        fail(
            "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
            )
        )
    secret = None

    async def update(store: RegistryStore) -> ClientRecord:
        nonlocal secret
        current = await store.get_client(client_id)
        if rotate_notify_secret or (notify_url and not current.has_notify_secret):
            secret = changes["notify_secret"] = new_notify_secret()
        return await store.update_client(client_id, changes)

    record = run_on_registry(update)
    print_json({**record.as_dict(), **({"notify_secret": secret} if secret else {})})
    if secret:
        typer.echo(
            "Keep this notify secret now: notices are signed with it and it cannot be shown "
            "again (replace it with --rotate-notify-secret).",
            err=True,
        )


@clients_app.command("test-destination", epilog=environment_help())
def test_destination(client_id: ClientId) -> None:
    """Write a small file where the client's exports go and delete it again, as
    processing would; exit 1 with the store's error when either step fails."""

    async def work(services: Services) -> dict[str, object]:
        await registry_of(services).get_client(client_id)
        return await services.pipeline.test_destination(client_id)

    print_json(run_services(work))


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
