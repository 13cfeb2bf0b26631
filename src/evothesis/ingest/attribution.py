"""Which client does a site belong to? The seam the pixel-management registry plugs into."""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

from evothesis.domain import ClientConfig
from evothesis.registry.domains import normalize_host


class SiteDirectory(Protocol):
    """Resolves a site (the event's ``siteId`` host) to its client, or ``None``."""

    async def resolve(self, site_id: str) -> ClientConfig | None: ...

    def status(self) -> dict[str, object]: ...


@lru_cache(maxsize=4096)
def site_host(site_id: str) -> str | None:
    """The canonical host of a ``siteId`` (``Shop.Example.com:8000`` -> ``shop.example.com``),
    or ``None`` when it is not a host at all. Cached because site ids repeat on every
    request; bounded so thousands of fake ids cannot grow it without limit."""
    try:
        return normalize_host(site_id)
    except ValueError:
        return None
