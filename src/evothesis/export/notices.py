"""Notices to clients' webhooks: what happened to their deliveries, signed, retried.

A notice is made in the same transaction as what it reports (a destination paused or
working again, a delivery failing for longer than ``EXPORT_NOTICE_AFTER`` or given up, a
replay finished; see ``queries.sql``), so each happening is told exactly once, and only to
clients that have a webhook. Sending is at least once: a notice is leased, POSTed, and
retried with backoff until the receiver answers 2xx or ``MAX_ATTEMPTS`` are spent; every
attempt is logged in ``export_notice_attempts``. Receivers drop repeats by the notice's id.

The body is JSON::

    {"id": "<uuid>", "type": "destination.paused", "client_id": "acme",
     "created_at": "2026-…Z", "data": {...}}

and the ``Evothesis-Signature`` header is ``t=<unix seconds>,v1=<hex>``, where ``v1`` is
HMAC-SHA256 with the client's ``notify_secret`` over ``"<t>." + body`` (the bytes as
sent): a receiver recomputes it, compares in constant time and refuses old timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final

import asyncpg
import httpx
import orjson

from evothesis.export.timing import retry_delay
from evothesis.registry.store import NotifyTarget
from evothesis.storage.queries import query
from evothesis.storage.sessions import with_connection

__all__ = ["MAX_ATTEMPTS", "NoticeSender", "sign"]

logger = logging.getLogger("evothesis.export")

#: Attempts before a notice is given up (about a day with the backoff's cap of an hour).
MAX_ATTEMPTS: Final = 30
#: Seconds one attempt may take.
TIMEOUT_S: Final = 10.0
#: Notices sent at once per call.
BATCH: Final = 20
SIGNATURE_HEADER: Final = "Evothesis-Signature"

#: A client's webhook, or ``None`` without one.
NotifyLookup = Callable[[str], Awaitable[NotifyTarget | None]]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Evothesis-Signature`` header value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


class NoticeSender:
    """Sends due notices; any number of processes may run one (notices are leased)."""

    def __init__(self, pool: asyncpg.Pool, targets: NotifyLookup) -> None:
        self._pool = pool
        self._targets = targets
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send_due(self) -> int:
        """Send the notices that are due; how many were delivered."""
        rows = await self._run(lambda c: c.fetch(query("notice_lease"), TIMEOUT_S * 3, BATCH))
        sent = 0
        for row in rows:
            sent += await self._send(row)
        return sent

    async def _send(self, row: asyncpg.Record) -> bool:
        body = orjson.dumps(
            {
                "id": str(row["notice_id"]),
                "type": row["kind"],
                "client_id": row["client_id"],
                "created_at": row["created_at"].isoformat(),
                "data": orjson.loads(row["payload"]),
            }
        )
        attempt = row["attempts"]
        started = time.monotonic()
        status: int | None = None
        error: str | None
        gone = False
        try:
            target = await self._targets(row["client_id"])
        except Exception as exc:  # the registry's outage, a secret that will not open
            target, error = None, f"cannot read the webhook: {type(exc).__name__}: {exc}"
        else:
            gone = target is None
            error = "the client has no webhook (notify_url) any more" if gone else None
        if target is not None:
            status, error = await self._post(target, row["notice_id"], body)
        ok = status is not None and 200 <= status < 300
        give_up = not ok and (gone or attempt >= MAX_ATTEMPTS)
        if not ok:
            logger.warning(
                "Notice %s (%s) to client %s failed (attempt %d%s): %s",
                row["notice_id"],
                row["kind"],
                row["client_id"],
                attempt,
                ", given up" if give_up else "",
                error or f"HTTP {status}",
            )
        await self._run(
            lambda c: c.execute(
                query("notice_attempted"),
                row["notice_id"],
                attempt,
                ok,
                status,
                error,
                0.0 if ok else retry_delay(attempt, cap=3600.0),
                give_up,
                round(time.monotonic() - started, 3),
            )
        )
        return ok

    async def _post(
        self, target: NotifyTarget, notice_id: uuid.UUID, body: bytes
    ) -> tuple[int | None, str | None]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Evothesis-Notices/1",
            "Evothesis-Notice-Id": str(notice_id),
            SIGNATURE_HEADER: sign(target.secret, int(time.time()), body),
        }
        try:
            response = await self._client.post(target.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        if 200 <= response.status_code < 300:
            return response.status_code, None
        return response.status_code, f"HTTP {response.status_code}"

    async def list(self, client_id: str | None, limit: int = 50) -> list[dict[str, Any]]:
        """Notices, newest first, each with its delivery log."""
        rows = await self._run(lambda c: c.fetch(query("notice_list"), client_id, limit))
        return [
            {
                **{k: _json(v) for k, v in row.items() if k not in ("payload", "log")},
                "data": orjson.loads(row["payload"]),
                "log": orjson.loads(row["log"]),
            }
            for row in rows
        ]

    async def _run(self, work: Any) -> Any:
        return await with_connection(self._pool, work, what="notices")


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value
