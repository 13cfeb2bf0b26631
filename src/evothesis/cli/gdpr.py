"""``evothesis gdpr …``: data-subject requests from a shell, through the same
``DataSubjectRequests`` as the admin API, with progress while objects are searched."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from evothesis.cli.common import ProgressReport, command_group, print_json, run_services
from evothesis.gdpr.requests import DataSubjectRequests, VisitorExport

__all__ = ["gdpr_app"]

T = TypeVar("T")

gdpr_app = command_group(
    "gdpr", "Data-subject requests by visitor id: export, deletion, audit log."
)

Client = Annotated[str, typer.Option("--client", help="The client the visitor's events belong to.")]
Visitor = Annotated[str, typer.Option("--visitor", help="The tracker's visitorId.")]


def _with_requests(work: Callable[[DataSubjectRequests], Awaitable[T]]) -> T:
    return run_services(lambda services: work(services.subjects))


@gdpr_app.command("export")
def export(
    client: Client,
    visitor: Visitor,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write the JSON Lines file ('-' for standard output; "
            "default: visitor-export-<request id>.jsonl here).",
        ),
    ] = None,
) -> None:
    """Write every event of a visitor (buffer and exported objects, each once, oldest
    first), then its failed events, to one JSON Lines file, and record the request in the
    audit log."""

    async def work(requests: DataSubjectRequests) -> VisitorExport:
        progress = ProgressReport("searching exported objects", unit="objects")
        try:
            return await requests.export(client, visitor, progress=progress)
        finally:
            progress.close()

    result = _with_requests(work)
    if output is not None and str(output) == "-":
        sys.stdout.buffer.write(result.data)
        sys.stdout.flush()
        return
    path = output or Path(f"visitor-export-{result.request_id}.jsonl")
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
    visitor: Visitor,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for running exports to finish first.")
    ] = 600.0,
) -> None:
    """Delete a visitor's events from the buffer and from every exported object (raw and
    the client's processed files, every format), then print the deletion receipt (also in
    the audit log and the backup bucket). Running it again is safe: it completes a
    deletion that was cut short and otherwise finds nothing more to delete."""
    if not yes:
        typer.confirm(
            f"Delete every event of visitor {visitor!r} of client {client!r}, "
            "in the buffer and in every exported object?",
            abort=True,
        )

    async def work(requests: DataSubjectRequests) -> dict[str, Any]:
        progress = ProgressReport("rewriting exported objects", unit="objects")
        try:
            return await requests.delete(client, visitor, wait_s=wait, progress=progress)
        finally:
            progress.close()

    print_json(_with_requests(work))


@gdpr_app.command("audit")
def audit(
    client: Annotated[str | None, typer.Option("--client", help="Only this client.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many steps.")] = 100,
) -> None:
    """The audit log of data-subject requests, newest first (visitors appear as SHA-256)."""

    async def work(requests: DataSubjectRequests) -> list[dict[str, Any]]:
        return await requests.audit_log(client, limit)

    print_json(_with_requests(work))
