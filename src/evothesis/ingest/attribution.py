"""Which client does a site belong to? The seam the pixel-management registry plugs into."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from evothesis.domain import ClientConfig


class SiteDirectory(Protocol):
    """Resolves a site (the event's ``siteId`` host) to its client, or ``None``."""

    async def resolve(self, site_id: str) -> ClientConfig | None: ...

    def status(self) -> dict[str, object]: ...


class StaticSites:
    """A fixed domain -> client map from ``EVOTHESIS_SITES`` (``localhost=client_test``)."""

    def __init__(self, sites: Mapping[str, str]) -> None:
        self._clients = {domain: ClientConfig(client_id) for domain, client_id in sites.items()}

    async def resolve(self, site_id: str) -> ClientConfig | None:
        return self._clients.get(site_host(site_id))

    def status(self) -> dict[str, object]:
        return {"source": "static", "sites": len(self._clients)}


def site_host(site_id: str) -> str:
    """``siteId`` values arrive as ``example.com``, ``localhost:8000`` or even full URLs."""
    host = site_id.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0]
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
