"""Usage billing for operators (``EVOTHESIS_ADMIN_TOKEN``): usage of a period per client,
site and day from the metering files, reconciled with the export ledger, and the sites
discovered under each client. Shapes are documented in docs/billing.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from evothesis.api.deps import BillingDep
from evothesis.api.responses import JSONResponse
from evothesis.api.tokens import require_admin
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
