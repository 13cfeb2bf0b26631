"""The collector's view of the registry: cached so authorization costs no round trip.

Every request names a site (and usually an Origin), or for the Segment API a write key; the
answer for a host or a key changes only when an operator edits the registry, so it is
cached (a write key under its SHA-256 digest, never the key itself):

* answers for ``ttl`` seconds, unknown hosts (404s) for the shorter ``negative_ttl``, so
  a newly registered site starts collecting within seconds;
* one lookup in flight per host: a burst of requests for a cold host waits on one query;
* while the registry is unreachable, an expired answer is served for up to ``stale_for``
  seconds more (retried every ``retry_interval``), so a registry restart does not stop
  collection; with nothing cached the request gets a 503 and the pixel retries;
* a listener (the registry snapshot, ``registry.snapshot``) hears every answer the registry
  gives and every invalidation, and what an earlier process was told comes back through
  ``seed`` as stale-only answers, so a collector restarted during an outage keeps
  attributing the sites it knew.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

from evothesis.domain import ClientConfig
from evothesis.errors import RegistryUnavailable
from evothesis.registry.domains import site_host
from evothesis.registry.secrets import hash_write_key

__all__ = [
    "WRITE_KEY_ENTRY",
    "AnswerListener",
    "CacheStatus",
    "CachedDirectory",
    "RegistrySource",
]

logger = logging.getLogger("evothesis.registry")

#: Hosts remembered at most; beyond it the oldest entries go (garbage site ids in a flood
#: of bad requests must not grow memory without bound).
MAX_ENTRIES: Final = 100_000

#: How a write key's answer is remembered (in the cache and the snapshot): by its digest,
#: under a name no host can have (hosts hold no spaces).
WRITE_KEY_ENTRY: Final = "write key sha256 {}"


class RegistrySource(Protocol):
    """Where answers come from: the database in-process, or pixel management over HTTP."""

    async def lookup(self, host: str) -> ClientConfig | None:
        """The active client owning ``host``; raises ``RegistryUnavailable`` on outages."""
        ...

    async def lookup_write_key(self, digest: str) -> ClientConfig | None:
        """The active client whose write key has the SHA-256 ``digest``; likewise."""
        ...


class AnswerListener(Protocol):
    """Hears what the registry said, to keep it beyond this process (``registry.snapshot``).

    Called on the event loop, once per lookup that reached the registry (never on a cache
    hit or a stale answer), so it must not block.
    """

    def answered(self, host: str, client: ClientConfig | None) -> None:
        """The registry answered for ``host`` just now (``None``: no active client)."""
        ...

    def forgotten(self) -> None:
        """Every answer so far may be outdated (the registry changed in this process)."""
        ...


@dataclass(frozen=True, slots=True)
class CacheStatus:
    """What /health and /metrics report about attribution."""

    source: str
    registry_reachable: bool | None
    cache_size: int
    hits: int
    misses: int
    lookups: int
    stale_answers: int
    last_error: str | None

    @property
    def hit_rate(self) -> float | None:
        asked = self.hits + self.misses
        return round(self.hits / asked, 4) if asked else None

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "registry_reachable": self.registry_reachable,
            "cache_size": self.cache_size,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hit_rate,
            "lookups": self.lookups,
            "stale_answers": self.stale_answers,
            "last_error": self.last_error,
        }


@dataclass(frozen=True, slots=True)
class _Entry:
    client: ClientConfig | None
    expires: float
    stale_until: float


class CachedDirectory:
    """A ``SiteDirectory`` over a ``RegistrySource``, with TTLs, single flight and stale
    answers; ``status()`` is what /health reports."""

    def __init__(
        self,
        source: RegistrySource,
        *,
        kind: str,
        ttl: float,
        negative_ttl: float,
        stale_for: float,
        retry_interval: float = 2.0,
        max_entries: int = MAX_ENTRIES,
        monotonic: Callable[[], float] = time.monotonic,
        listener: AnswerListener | None = None,
    ) -> None:
        self._source = source
        self._listener = listener
        self._kind = kind
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._stale_for = stale_for
        self._retry_interval = retry_interval
        self._max_entries = max_entries
        self._now = monotonic
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[ClientConfig | None]] = {}
        self._generation = 0
        self.hits = 0
        self.misses = 0
        self.lookups = 0
        self.stale_answers = 0
        self.reachable: bool | None = None
        self.last_error: str | None = None

    async def resolve(self, site_id: str) -> ClientConfig | None:
        """The client of a site id, Origin or URL; ``None`` when unknown or not a host."""
        host = site_host(site_id)
        if host is None:
            return None
        entry = self._entries.get(host)
        if entry is not None and entry.expires > self._now():
            self.hits += 1
            return entry.client
        return await self._miss(host, entry, self._source.lookup, host)

    async def resolve_write_key(self, key: str) -> ClientConfig | None:
        """The client a write key belongs to; ``None`` when it is nobody's (or empty)."""
        if not key:
            return None
        digest = hash_write_key(key)
        name = WRITE_KEY_ENTRY.format(digest)
        entry = self._entries.get(name)
        if entry is not None and entry.expires > self._now():
            self.hits += 1
            return entry.client
        return await self._miss(name, entry, self._source.lookup_write_key, digest)

    async def _miss(
        self,
        name: str,
        entry: _Entry | None,
        lookup: Callable[[str], Awaitable[ClientConfig | None]],
        argument: str,
    ) -> ClientConfig | None:
        """Ask the registry (``lookup(argument)``), one lookup in flight per entry name."""
        self.misses += 1
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.create_task(
                self._fill(name, entry, lookup(argument)), name=f"registry-lookup:{name}"
            )
            self._inflight[name] = task
            task.add_done_callback(lambda _: self._inflight.pop(name, None))
        # Shielded: one caller giving up (client disconnect) must not cancel the lookup
        # the other waiters share.
        return await asyncio.shield(task)

    def invalidate(self) -> None:
        """Forget every answer (the in-process admin API changed the registry)."""
        self._generation += 1
        self._entries.clear()
        if self._listener is not None:
            self._listener.forgotten()

    def seed(self, host: str, client: ClientConfig, *, age: float) -> None:
        """Remember an answer the registry gave an earlier process ``age`` seconds ago, as a
        fallback only: it is expired from the start, so the first request for ``host``
        still asks the registry, and it is served only while the registry is unreachable,
        until ``ttl + stale_for`` after it was given (as if this process had been told)."""
        now = self._now()
        stale_until = now - age + self._ttl + self._stale_for
        if stale_until > now and host not in self._entries:
            self._store(host, _Entry(client, now, stale_until))

    def status(self) -> CacheStatus:
        return CacheStatus(
            source=self._kind,
            registry_reachable=self.reachable,
            cache_size=len(self._entries),
            hits=self.hits,
            misses=self.misses,
            lookups=self.lookups,
            stale_answers=self.stale_answers,
            last_error=self.last_error,
        )

    async def _fill(
        self,
        host: str,
        previous: _Entry | None,
        lookup: Awaitable[ClientConfig | None],
    ) -> ClientConfig | None:
        generation = self._generation
        self.lookups += 1
        described = _described(host)
        try:
            client = await lookup
        except RegistryUnavailable as exc:
            self.reachable = False
            self.last_error = exc.message
            now = self._now()
            if previous is None or previous.stale_until <= now:
                # The detail (an internal URL, a token problem) is for operators: logs and
                # /health. Senders learn only that they should retry.
                logger.warning("Registry unreachable for %s: %s", described, exc.message)
                raise RegistryUnavailable(
                    "client attribution is temporarily unavailable; retry later"
                ) from None
            self.stale_answers += 1
            logger.warning(
                "Registry unreachable (%s); serving the cached answer for %s",
                exc.message,
                described,
            )
            retry_at = now + self._retry_interval
            self._store(host, _Entry(previous.client, retry_at, previous.stale_until))
            return previous.client
        self.reachable = True
        self.last_error = None
        now = self._now()
        ttl = self._ttl if client is not None else self._negative_ttl
        if generation == self._generation:
            self._store(host, _Entry(client, now + ttl, now + ttl + self._stale_for))
            if self._listener is not None:
                self._listener.answered(host, client)
        if client is not None:
            logger.info("%s authorized for client %s", described, client.client_id)
        return client

    def _store(self, host: str, entry: _Entry) -> None:
        self._entries.pop(host, None)
        self._entries[host] = entry
        while len(self._entries) > self._max_entries:
            del self._entries[next(iter(self._entries))]


def _described(name: str) -> str:
    """How logs name a cache entry: the domain, or the start of a write key's digest."""
    prefix = WRITE_KEY_ENTRY.format("")
    if name.startswith(prefix):
        return f"Write key sha256:{name[len(prefix) : len(prefix) + 12]}"
    return f"Domain {name}"
