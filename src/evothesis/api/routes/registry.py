"""Pixel management over HTTP: public client config, per-client trackers, the collectors'
internal lookup and the client administration API.

Routes stay thin: they authenticate, call ``RegistryStore`` (``RegistryDep``) and
shape the answer. Three audiences, three routers, so each carries its own guard:

* public (browsers, sites): settings a page may see, never a secret;
* internal (collectors, ``PIXEL_MANAGEMENT_TOKEN``): the salt and write-key digest a
  collector needs to apply a client's privacy rules;
* admin (operators, ``EVOTHESIS_ADMIN_TOKEN``): create and change clients and domains.

The store tells whoever caches its answers about every successful change
(``RegistryStore.on_change``), so a hosting collector drops its cached lookups at once
instead of waiting for their TTL.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from evothesis.api.client_models import ClientChanges, ClientCreate, DomainAdd
from evothesis.api.conditional import script_response
from evothesis.api.deps import PipelineDep, RegistryDep, SettingsDep
from evothesis.api.responses import JSONResponse
from evothesis.api.tokens import require_admin, require_service
from evothesis.errors import NotFound
from evothesis.registry.http import client_config_json
from evothesis.registry.store import ClientRecord, RegistryStore
from evothesis.tracker import render_tracker

__all__ = [
    "admin_router",
    "include_pixel_management",
    "internal_router",
    "public_router",
]


def _record(record: ClientRecord, *, status_code: int = 200, **extra: Any) -> JSONResponse:
    return JSONResponse({**record.as_dict(), **extra}, status_code=status_code)


def _no_client_for(domain: str) -> NotFound:
    return NotFound(f"no active client owns the domain {domain!r}")


# ------------------------------------------------------------------------------- public

public_router = APIRouter(tags=["pixel management"])


@public_router.get("/api/v1/config/domain/{domain}", summary="Public settings of a domain's client")
async def domain_config(domain: str, registry: RegistryDep) -> Response:
    """What a page on ``domain`` may know about its client; 404 when no active client owns it."""
    config = await registry.lookup(domain)
    if config is None:
        raise _no_client_for(domain)
    return JSONResponse(config.public_config())


@public_router.get("/pixel/{client_id}/tracking.js", summary="The tracker for one client")
async def client_tracker(
    client_id: str, request: Request, registry: RegistryDep, settings: SettingsDep
) -> Response:
    """The tracker with the client's public settings baked in, so a site needs one tag."""
    config = await registry.config_for_client(client_id)
    if config is None:
        raise NotFound(f"no active client {client_id!r}")
    embedded = config.public_config()
    if settings.collector_url:
        embedded["endpoint"] = settings.collector_url.rstrip("/") + "/collect"
    return script_response(request, render_tracker(embedded))


# ----------------------------------------------------------------------------- internal

internal_router = APIRouter(
    prefix="/api/v1/internal", tags=["internal"], dependencies=[Depends(require_service)]
)


@internal_router.get("/domain/{domain}", summary="A domain's client with its secrets")
async def internal_domain(domain: str, registry: RegistryDep) -> Response:
    """For collectors: the settings and secrets needed to accept events for ``domain``."""
    config = await registry.lookup(domain)
    if config is None:
        raise _no_client_for(domain)
    return JSONResponse(client_config_json(config))


@internal_router.get("/write-key/{digest}", summary="A write key's client with its secrets")
async def internal_write_key(digest: str, registry: RegistryDep) -> Response:
    """For collectors of the Segment API: the client whose write key has this SHA-256
    digest (the key itself never travels), with the settings and secrets to accept its
    events."""
    config = await registry.lookup_write_key(digest)
    if config is None:
        raise NotFound("no active client has that write key")
    return JSONResponse(client_config_json(config))


# -------------------------------------------------------------------------------- admin

admin_router = APIRouter(
    prefix="/api/v1/clients", tags=["clients"], dependencies=[Depends(require_admin)]
)


@admin_router.post("", status_code=201, summary="Create a client (returns its write key once)")
async def create_client(body: ClientCreate, registry: RegistryDep) -> Response:
    """Nothing is created when the id or a domain is invalid or taken (one transaction)."""
    record, write_key = await registry.create_client(body.client_id, body.spec(), body.domains)
    response = _record(record, status_code=201, write_key=write_key)
    response.headers["Location"] = f"/api/v1/clients/{record.client_id}"
    return response


@admin_router.get("", summary="All clients")
async def list_clients(registry: RegistryDep) -> Response:
    return JSONResponse([record.as_dict() for record in await registry.list_clients()])


@admin_router.get("/{client_id}", summary="One client")
async def get_client(client_id: str, registry: RegistryDep) -> Response:
    return _record(await registry.get_client(client_id))


@admin_router.patch("/{client_id}", summary="Change some settings of a client")
async def update_client(client_id: str, body: ClientChanges, registry: RegistryDep) -> Response:
    changes = body.changes()
    if not changes:
        return _record(await registry.get_client(client_id))
    record = await registry.update_client(client_id, changes)
    return _record(record)


async def _set_active(client_id: str, active: bool, registry: RegistryStore) -> Response:
    record = await registry.update_client(client_id, {"active": active})
    return _record(record)


@admin_router.post("/{client_id}/deactivate", summary="Stop accepting events for a client")
async def deactivate_client(client_id: str, registry: RegistryDep) -> Response:
    return await _set_active(client_id, False, registry)


@admin_router.post("/{client_id}/activate", summary="Accept events for a client again")
async def activate_client(client_id: str, registry: RegistryDep) -> Response:
    return await _set_active(client_id, True, registry)


@admin_router.post("/{client_id}/write-key", summary="Replace a client's write key")
async def rotate_write_key(client_id: str, registry: RegistryDep) -> Response:
    """The old key stops working at once; the new one is shown in this answer only."""
    write_key = await registry.rotate_write_key(client_id)
    return JSONResponse({"client_id": client_id, "write_key": write_key})


@admin_router.post(
    "/{client_id}/destination/test",
    summary="Write and delete a small file where the client's exports go",
)
async def test_destination(
    client_id: str, registry: RegistryDep, pipeline: PipelineDep
) -> Response:
    """A probe of the destination as processing would use it (the client's own bucket and
    credentials, or the operator's processed bucket): 200 when the write and the delete
    both worked, 502 with the store's error word for word when not."""
    await registry.get_client(client_id)  # 404 for an unknown client
    return JSONResponse({"status": "success", **await pipeline.test_destination(client_id)})


@admin_router.post("/{client_id}/domains", status_code=201, summary="Give a client a domain")
async def add_domain(client_id: str, body: DomainAdd, registry: RegistryDep) -> Response:
    domain = await registry.add_domain(client_id, body.domain)
    return JSONResponse({"client_id": client_id, "domain": domain}, status_code=201)


@admin_router.delete("/{client_id}/domains/{domain}", status_code=204, summary="Take a domain away")
async def remove_domain(client_id: str, domain: str, registry: RegistryDep) -> Response:
    await registry.remove_domain(client_id, domain)
    return Response(status_code=204)


def include_pixel_management(app: FastAPI) -> None:
    """Add every pixel-management route to ``app``.

    The app's ``Runtime`` must hold services with a registry by the time requests arrive,
    and the app should have ``install_error_handlers`` so errors keep the JSON shape.
    """
    app.include_router(public_router)
    app.include_router(internal_router)
    app.include_router(admin_router)
