"""Counting HTTP requests by path and status, and /collect latency, for ``/metrics``.

Wraps the whole application (including the bare /collect endpoint, which bypasses
FastAPI's middleware stack). The per-request cost is one dict increment and, for /collect
only, two ``time.monotonic()`` calls and a bisect: no locks, because everything runs on the
event loop thread.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Final

from evothesis.api.transport.asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "COLLECT_LATENCY_BUCKETS",
    "NO_RESPONSE_STATUS",
    "OTHER_PATH",
    "TRACKED_PATHS",
    "RequestMetrics",
]

#: Upper bounds (seconds) of the /collect latency histogram. A healthy answer takes a few
#: milliseconds (the write buffer waits 2 ms to coalesce); the upper buckets catch the
#: database slowing down long before requests time out.
COLLECT_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

#: The only ``path`` label values: a fixed set keeps the number of series bounded however
#: many distinct URLs scanners try.
TRACKED_PATHS: Final = frozenset({"/collect", "/health"})
OTHER_PATH: Final = "other"

#: Recorded when a request ended without the app sending a status (the client went away);
#: the same code nginx logs for "client closed request", so the two can be compared.
NO_RESPONSE_STATUS: Final = 499


class RequestMetrics:
    """The counts; ``wrap(app)`` is the ASGI middleware that keeps them."""

    def __init__(self) -> None:
        #: (path label, status) -> requests answered.
        self.requests: dict[tuple[str, int], int] = {}
        #: Non-cumulative counts per bucket of ``COLLECT_LATENCY_BUCKETS``, plus +Inf last.
        self.collect_buckets = [0] * (len(COLLECT_LATENCY_BUCKETS) + 1)
        self.collect_seconds = 0.0
        self.collect_count = 0

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            path = scope["path"]
            label = path if path in TRACKED_PATHS else OTHER_PATH
            status = NO_RESPONSE_STATUS

            async def send_with_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            started = time.monotonic() if label == "/collect" else 0.0
            try:
                await app(scope, receive, send_with_status)
            except BaseException:
                if status == NO_RESPONSE_STATUS:
                    status = 500  # what the server answers for an exception before a response
                raise
            finally:
                key = (label, status)
                self.requests[key] = self.requests.get(key, 0) + 1
                if label == "/collect":
                    elapsed = time.monotonic() - started
                    self.collect_buckets[bisect_left(COLLECT_LATENCY_BUCKETS, elapsed)] += 1
                    self.collect_seconds += elapsed
                    self.collect_count += 1

        return counted
