"""``evothesis events …``: what the buffer holds, from a shell, as the operators' endpoints
show it (``GET /events/recent``, ``GET /events/failed``): rows exactly as stored, after the
client's privacy rules and redaction, as JSON."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer

from evothesis.cli.common import command_group, print_json, run_services
from evothesis.registry.domains import site_host
from evothesis.services import Services
from evothesis.storage.events import EventStore

__all__ = ["events_app"]

events_app = command_group("events", "Read the newest stored and failed events.")

Limit = Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")]
ClientOption = Annotated[str | None, typer.Option("--client", help="Only this client.")]


@events_app.command("recent")
def recent(
    limit: Limit = 10,
    client: ClientOption = None,
    site: Annotated[str | None, typer.Option(help="Only this site (a host).")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Only this event type.")] = None,
) -> None:
    """The newest stored events (GET /events/recent)."""
    host = None
    if site:
        host = site_host(site)
        if host is None:
            raise typer.BadParameter(f"{site!r} is not a host", param_hint="--site")

    async def work(services: Services) -> list[dict[str, Any]]:
        rows = await EventStore(services.pool).recent(
            limit, client_id=client, site_id=host, event_type=event_type
        )
        for row in rows:
            row["raw_event_data"] = orjson.loads(row["raw_event_data"])
        return rows

    print_json(run_services(work))


@events_app.command("failed")
def failed(limit: Limit = 50, client: ClientOption = None) -> None:
    """The newest failed events with their reasons (GET /events/failed)."""

    async def work(services: Services) -> list[dict[str, Any]]:
        rows = await EventStore(services.pool).recent_failures(limit, client_id=client)
        for row in rows:
            row["payload"] = orjson.loads(row["payload"])
        return rows

    print_json(run_services(work))
