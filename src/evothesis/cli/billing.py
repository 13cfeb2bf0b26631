"""``evothesis billing …``: usage, discoveries and the monthly invoice from a shell, through
the same ``Billing`` object as the admin API (docs/billing.md).

Like the export commands they use ``DATABASE_URL`` or start the embedded PostgreSQL, read
the configured backup bucket, and show progress while reading metering files.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from evothesis.billing.invoice import TABLE_COLUMNS, invoice_csv, table_rows
from evothesis.billing.period import month_period, parse_period
from evothesis.billing.service import Billing
from evothesis.cli.common import (
    ProgressReport,
    command_group,
    fail,
    print_json,
    print_table,
    run_services,
)
from evothesis.config import Settings
from evothesis.errors import BackupUnreadable, InvalidPeriod
from evothesis.services import Services

__all__ = ["billing_app"]

T = TypeVar("T")

billing_app = command_group("billing", "Usage per client, site and day; monthly invoices.")

ClientOption = Annotated[
    str | None, typer.Option("--client", help="Only this client (default: every client).")
]


def _valid(check: Callable[[], T]) -> T:
    """Input is checked before any database is started; a bad one is a usage error (2)."""
    try:
        return check()
    except InvalidPeriod as exc:
        raise typer.BadParameter(exc.message) from None


def _rate(text: str | None, settings: Settings) -> Decimal:
    if text is None:
        return settings.billing_rate_per_1000_events
    try:
        rate = Decimal(text)
    except InvalidOperation:
        rate = Decimal(-1)
    if not rate.is_finite() or rate < 0:
        fail(f"--rate must be a non-negative decimal number of dollars, not {text!r}")
    return rate


def _on_billing(work: Callable[[Billing, Settings], Awaitable[T]]) -> T:
    async def run(services: Services) -> T:
        try:
            return await work(services.billing, services.settings)
        except BackupUnreadable as exc:
            fail(f"cannot read the backup bucket: {exc}")

    return run_services(run)


def _progress() -> ProgressReport:
    return ProgressReport("reading metering files", unit="files")


@billing_app.command("report")
def report(
    month: Annotated[str, typer.Option(help="The month to bill, YYYY-MM (UTC days).")],
    rate: Annotated[
        str | None,
        typer.Option(
            help="Dollars per 1,000 accepted events (default BILLING_RATE_PER_1000_EVENTS)."
        ),
    ] = None,
    csv_path: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Where to write the CSV invoice (default ./invoice-YYYY-MM.csv)."
        ),
    ] = None,
    client: ClientOption = None,
) -> None:
    """Print the month's usage per client (sites, new sites, accepted, stored, rejected
    events, bytes, amount) and write one CSV invoice line per client."""
    _valid(lambda: month_period(month))
    target = csv_path or Path(f"invoice-{month}.csv")

    async def work(billing: Billing, settings: Settings) -> None:
        price = _rate(rate, settings)
        progress = _progress()
        try:
            lines, usage = await billing.invoice(month, price, client, progress=progress)
        finally:
            progress.close()
        print_table(TABLE_COLUMNS, table_rows(lines))
        target.write_text(invoice_csv(lines))
        typer.echo(f"Invoice for {month} ({len(lines)} client(s)) written to {target}")
        if not usage.reconciliation.reconciled:
            typer.echo(
                "Warning: metering does not reconcile with the export ledger: "
                f"{usage.reconciliation.as_dict()}",
                err=True,
            )

    _on_billing(work)


@billing_app.command("usage")
def usage(
    first: Annotated[str, typer.Option("--from", help="First day, YYYY-MM-DD (UTC).")],
    last: Annotated[str, typer.Option("--to", help="Last day, YYYY-MM-DD, included.")],
    client: ClientOption = None,
) -> None:
    """Usage per client, site and day with the reconciliation and discoveries, as JSON
    (the body of GET /billing/usage)."""
    period = _valid(lambda: parse_period(first, last))

    async def work(billing: Billing, settings: Settings) -> dict[str, object]:
        progress = _progress()
        try:
            return (await billing.usage(period, client, progress=progress)).as_dict()
        finally:
            progress.close()

    print_json(_on_billing(work))


@billing_app.command("discoveries")
def discoveries(client: ClientOption = None) -> None:
    """Sites discovered under each client (their first event), as JSON."""

    async def work(billing: Billing, settings: Settings) -> dict[str, object]:
        found = await billing.store.discoveries(client)
        return {"client_id": client, "discoveries": [d.as_dict() for d in found]}

    print_json(_on_billing(work))
