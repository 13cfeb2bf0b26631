"""``evothesis gdpr …``: data-subject requests from a shell, through the same
``DataSubjectRequests`` as the admin API, with progress while objects are searched."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from evothesis.cli.common import ProgressReport, command_group, print_json, run_services
from evothesis.gdpr.requests import DataSubjectRequests, SubjectExport

__all__ = ["gdpr_app"]

T = TypeVar("T")

gdpr_app = command_group(
    "gdpr",
    "Data-subject requests by visitor id or user id (following alias links): export, "
    "deletion, audit log.",
)

Client = Annotated[str, typer.Option("--client", help="The client the person's events belong to.")]
Visitor = Annotated[
    str | None,
    typer.Option("--visitor", help="The tracker's visitorId (a Segment anonymousId)."),
]
User = Annotated[
    str | None,
    typer.Option("--user", help="A Segment userId, as sent (instead of --visitor)."),
]


def _one_id(visitor: str | None, user: str | None) -> str:
    """The id the request names; exactly one of --visitor and --user."""
    if (visitor is None) == (user is None):
        raise typer.BadParameter("give exactly one of --visitor and --user")
    return visitor if visitor is not None else str(user)


def _with_requests(work: Callable[[DataSubjectRequests], Awaitable[T]]) -> T:
    return run_services(lambda services: work(services.subjects))


@gdpr_app.command("export")
def export(
    client: Client,
    visitor: Visitor = None,
    user: User = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write the JSON Lines file ('-' for standard output; "
            "default: subject-export-<request id>.jsonl here).",
        ),
    ] = None,
) -> None:
    """Write every event of a visitor or a user, and of every id alias links tie to them
    (buffer and exported objects, each once, oldest first), then the failed events, to one
    JSON Lines file, and record the request in the audit log."""
    _one_id(visitor, user)

    async def work(requests: DataSubjectRequests) -> SubjectExport:
        progress = ProgressReport("searching exported objects", unit="objects")
        try:
            return await requests.export(client, visitor, user_id=user, progress=progress)
        finally:
            progress.close()

    result = _with_requests(work)
    if output is not None and str(output) == "-":
        sys.stdout.buffer.write(result.data)
        sys.stdout.flush()
        return
    path = output or Path(f"subject-export-{result.request_id}.jsonl")
    path.write_bytes(result.data)
    typer.echo(
        f"Wrote {result.events} event(s) and {result.failed_events} failed event(s) to {path} "
        f"({result.buffered_events} events from the buffer, {result.objects_searched} "
        f"exported object(s) searched); request {result.request_id}",
        err=True,
    )


@gdpr_app.command("delete")
def delete(
    client: Client,
    visitor: Visitor = None,
    user: User = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for running exports to finish first.")
    ] = 600.0,
) -> None:
    """Delete a visitor's or a user's events, and those of every id alias links tie to
    them, from the buffer and from every exported object (raw and the client's processed
    files, every format), then print the deletion receipt (also in the audit log and the
    backup bucket). Running it again is safe: it completes a deletion that was cut short
    and otherwise finds nothing more to delete."""
    named = _one_id(visitor, user)
    if not yes:
        typer.confirm(
            f"Delete every event of {'visitor' if user is None else 'user'} {named!r} of "
            f"client {client!r} (and of the ids its alias links tie to it), in the buffer "
            "and in every exported object?",
            abort=True,
        )

    async def work(requests: DataSubjectRequests) -> dict[str, Any]:
        progress = ProgressReport("rewriting exported objects", unit="objects")
        try:
            return await requests.delete(
                client, visitor, user_id=user, wait_s=wait, progress=progress
            )
        finally:
            progress.close()

    print_json(_with_requests(work))


@gdpr_app.command("audit")
def audit(
    client: Annotated[str | None, typer.Option("--client", help="Only this client.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many steps.")] = 100,
) -> None:
    """The audit log of data-subject requests, newest first (ids appear as SHA-256)."""

    async def work(requests: DataSubjectRequests) -> list[dict[str, Any]]:
        return await requests.audit_log(client, limit)

    print_json(_with_requests(work))
