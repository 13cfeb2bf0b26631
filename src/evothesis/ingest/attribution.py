"""Which client does a site (or a write key) belong to? The seam the pixel-management
registry plugs into."""

from __future__ import annotations

from typing import Protocol

from evothesis.domain import ClientConfig


class SiteDirectory(Protocol):
    """Resolves a site (the event's ``siteId`` host, an Origin or a URL) to its client, or
    ``None`` when nobody owns it; ``registry.cache.CachedDirectory`` is the real one."""

    async def resolve(self, site_id: str) -> ClientConfig | None: ...

    async def resolve_write_key(self, key: str) -> ClientConfig | None:
        """The client a write key belongs to (the Segment API's attribution), or ``None``."""
        ...
