"""Usage billing for operators (``EVOTHESIS_ADMIN_TOKEN``): usage of a period per client,
site and day from the metering files, reconciled with the export ledger, the sites
discovered under each client, and a month's invoice lines (JSON or the CSV that
``evothesis billing report`` writes). Shapes are documented in docs/billing.md."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from evothesis.api.deps import BillingDep, SettingsDep
from evothesis.api.responses import JSONResponse
from evothesis.api.tokens import require_admin
from evothesis.billing.invoice import invoice_csv
from evothesis.billing.period import parse_period

router = APIRouter(prefix="/billing", tags=["billing"], dependencies=[Depends(require_admin)])

ClientFilter = Annotated[
    str | None, Query(max_length=200, description="One client; omitted: every client.")
]


@router.get("/usage", summary="Usage per client, site and day, reconciled with the ledger")
async def usage(
    billing: BillingDep,
    first: Annotated[str, Query(alias="from", description="First day, YYYY-MM-DD (UTC).")],
    last: Annotated[str, Query(alias="to", description="Last day, YYYY-MM-DD, included.")],
    client_id: ClientFilter = None,
) -> Response:
    period = parse_period(first, last)
    report = await billing.usage(period, client_id or None)
    return JSONResponse(report.as_dict())


@router.get("/discoveries", summary="Sites discovered under each client (first event)")
async def discoveries(billing: BillingDep, client_id: ClientFilter = None) -> Response:
    found = await billing.store.discoveries(client_id or None)
    return JSONResponse({"client_id": client_id, "discoveries": [d.as_dict() for d in found]})


Month = Annotated[str, Query(max_length=7, description="The month, YYYY-MM (UTC).")]


@router.get("/invoice", summary="A month's invoice lines per client, at the configured rate")
async def invoice(
    billing: BillingDep, settings: SettingsDep, month: Month, client_id: ClientFilter = None
) -> Response:
    """The lines ``evothesis billing report`` prints, priced at
    ``BILLING_RATE_PER_1000_EVENTS``, with the reconciliation of the usage they come from."""
    lines, report = await billing.invoice(
        month, settings.billing_rate_per_1000_events, client_id or None
    )
    total = sum((line.amount_usd for line in lines), Decimal(0))
    return JSONResponse(
        {
            "month": month,
            "client_id": client_id or None,
            "rate_per_1000": str(settings.billing_rate_per_1000_events),
            "lines": [line.as_dict() for line in lines],
            "total_usd": f"{total:.2f}",
            "reconciliation": report.as_dict()["reconciliation"],
        }
    )


@router.get("/invoice.csv", summary="A month's invoice as CSV (as `evothesis billing report`)")
async def invoice_file(
    billing: BillingDep, settings: SettingsDep, month: Month, client_id: ClientFilter = None
) -> Response:
    lines, _ = await billing.invoice(
        month, settings.billing_rate_per_1000_events, client_id or None
    )
    return Response(
        invoice_csv(lines),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="invoice-{month}.csv"'},
    )
