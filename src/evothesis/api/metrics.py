"""GET /metrics in the Prometheus text format, and the ASGI middleware counting requests.

Why hand-rendered: the format is a few lines of text, and the collector's counters already
live on the objects that do the work (collector, write buffer, spool, registry cache).
A client library would duplicate them into its own registry and add a dependency to the
hot path; here a scrape reads them in place, on the event loop, with no locks.

Everything is read at request time from ``app.state`` with ``getattr`` defaults, because
parts of the state are optional (no spool configured, a test ``SiteDirectory`` without
``status()``). A metric whose source is missing is left out rather than reported as a
misleading zero.

No metric carries a client or site label: /metrics is for operators, must not reveal which
tenants send what, and must keep a bounded number of series whatever senders put in their
requests.

Counters are per process. With ``serve --workers N`` each worker answers for itself, so
scrape each worker (or run one worker per container), as with any multi-process server.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any, Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from evothesis import __version__
from evothesis.api.asgi import ASGIApp, Message, Receive, Scope, Send
from evothesis.enrich.bots import BOT_KINDS

__all__ = [
    "COLLECT_LATENCY_BUCKETS",
    "CONTENT_TYPE",
    "RequestMetrics",
    "escape_label_value",
    "read_spool_status",
    "render_metrics",
    "router",
]


#: The text exposition format, version 0.0.4, which every Prometheus-compatible scraper reads.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

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

#: Refusal reasons known today; reported as 0 from the start so ``rate()`` and alerts work
#: before the first refusal. Other reasons appear as they are counted.
KNOWN_REFUSALS: Final = (
    "unauthorized_domain",
    "origin_mismatch",
    "write_key_required",
    "invalid_write_key",
)
KNOWN_DROPS: Final = (
    "do_not_track",
    "no_consent",
    *(f"bot_{kind}" for kind in BOT_KINDS),
)
#: ``Collector.outcomes`` keys that count events, not requests (see ``_outcome_families``).
DROPPED_PREFIX: Final = "dropped_"
REJECTED_PREFIX: Final = "rejected_"
ANONYMIZED: Final = "anonymized"

#: Default of ``render_metrics(spool_status=...)``: read the spool's status inline.
_READ_NOW: Final = object()


# ----------------------------------------------------------------------------- rendering


class _Family:
    """One metric family: its HELP and TYPE lines and its samples."""

    __slots__ = ("help", "kind", "name", "samples")

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.samples: list[tuple[str, Mapping[str, str], float | int]] = []

    def add(self, value: float | int, suffix: str = "", **labels: str) -> _Family:
        self.samples.append((suffix, labels, value))
        return self

    def render(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {_escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")
        for suffix, labels, value in self.samples:
            out.append(f"{self.name}{suffix}{_labels(labels)} {_number(value)}")


def render_metrics(state: Any, *, spool_status: object = _READ_NOW) -> str:
    """The whole exposition for one collector process, read from ``app.state``.

    Pure apart from reading ``state``: nothing awaited, so a scrape cannot block on the
    database it is meant to watch. ``Spool.status()`` touches the disk, so the endpoint
    reads it in a thread first (``read_spool_status``) and passes it as ``spool_status``;
    by default it is read here, which suits tests and small spools.
    """
    if spool_status is _READ_NOW:
        spool_status = read_spool_status(state)
    families: list[_Family] = [
        _Family("evothesis_build_info", "gauge", "Version of the running collector; always 1.").add(
            1, version=__version__
        )
    ]
    families += _outcome_families(getattr(getattr(state, "collector", None), "outcomes", None))
    families += _buffer_families(getattr(state, "buffer", None))
    families += _spool_families(getattr(state, "spool", None), spool_status)
    families += _registry_families(getattr(state, "sites", None))
    http = getattr(state, "http_metrics", None)
    if isinstance(http, RequestMetrics):
        families += http.families()
    out: list[str] = []
    for family in families:
        family.render(out)
    out.append("")
    return "\n".join(out)


def read_spool_status(state: Any) -> Mapping[str, object] | None:
    """``state.spool.status()``, or ``None`` without a spool or when its folder cannot be
    read (the scrape still answers, without the spool's numbers)."""
    status_of = getattr(getattr(state, "spool", None), "status", None)
    if not callable(status_of):
        return None
    try:
        status = status_of()
    except OSError:
        return None
    return status if isinstance(status, Mapping) else None


def _outcome_families(outcomes: Mapping[str, int] | None) -> list[_Family]:
    """Split ``Collector.outcomes`` by what each key counts.

    Refusals (401/403) count requests: the collector refuses a request as a whole. Drops
    (``dropped_*``: DNT/GPC, missing consent or a bot the client drops, answered 200 but
    not stored), rejections (``rejected_*``: inner events that failed validation, kept in
    ``failed_events``) and ``anonymized`` count events. Mixing them in one metric would add
    requests to events.
    """
    if outcomes is None:
        return []
    refused = _Family(
        "evothesis_collect_refused_requests_total",
        "counter",
        "Requests to /collect refused by attribution or sender checks, by reason.",
    )
    dropped = _Family(
        "evothesis_events_dropped_total",
        "counter",
        "Events acknowledged but not stored because of the visitor's privacy signal, "
        "missing consent or the client's bot policy, by reason.",
    )
    rejected = _Family(
        "evothesis_events_rejected_total",
        "counter",
        "Inner events of batches that failed validation, stored as failed events, by reason.",
    )
    anonymized = _Family(
        "evothesis_events_anonymized_total",
        "counter",
        "Events stored without identifiers because of the visitor's privacy choices.",
    ).add(outcomes.get(ANONYMIZED, 0))
    counts = dict(outcomes)
    for reason in KNOWN_REFUSALS:
        counts.setdefault(reason, 0)
    for reason in KNOWN_DROPS:
        counts.setdefault(DROPPED_PREFIX + reason, 0)
    for key in sorted(counts):
        if key == ANONYMIZED:
            continue
        if key.startswith(DROPPED_PREFIX):
            dropped.add(counts[key], reason=key.removeprefix(DROPPED_PREFIX))
        elif key.startswith(REJECTED_PREFIX):
            rejected.add(counts[key], reason=key.removeprefix(REJECTED_PREFIX))
        else:
            refused.add(counts[key], reason=key)
    return [refused, dropped, rejected, anonymized]


#: (attribute of the write buffer, metric name, type, help) in exposition order.
_BUFFER_METRICS: Final = (
    (
        "pending_rows",
        "evothesis_write_buffer_pending_events",
        "gauge",
        "Events accepted by requests that wait for their flush.",
    ),
    (
        "flushed_batches",
        "evothesis_write_buffer_flushes_total",
        "counter",
        "Flushes committed to PostgreSQL.",
    ),
    (
        "flushed_rows",
        "evothesis_write_buffer_flushed_events_total",
        "counter",
        "Events committed to PostgreSQL by the write buffer.",
    ),
    (
        "flush_seconds_total",
        "evothesis_write_buffer_flush_seconds_total",
        "counter",
        "Seconds spent in successful flushes to PostgreSQL.",
    ),
    (
        "failed_flushes",
        "evothesis_write_buffer_failed_flushes_total",
        "counter",
        "Flushes PostgreSQL did not commit.",
    ),
    (
        "spooled_batches",
        "evothesis_write_buffer_spooled_batches_total",
        "counter",
        "Flushes written to the disk spool because PostgreSQL was unavailable.",
    ),
    (
        "spooled_rows",
        "evothesis_write_buffer_spooled_events_total",
        "counter",
        "Events written to the disk spool because PostgreSQL was unavailable.",
    ),
)


def _buffer_families(buffer: object | None) -> list[_Family]:
    families = []
    for attribute, name, kind, help_text in _BUFFER_METRICS:
        value = _numeric(getattr(buffer, attribute, None))
        if value is not None:
            families.append(_Family(name, kind, help_text).add(value))
    return families


#: (key of ``Spool.status()``, metric name, type, help) in exposition order.
_SPOOL_METRICS: Final = (
    ("records", "evothesis_spool_records", "gauge", "Records in the disk spool awaiting replay."),
    (
        "segments",
        "evothesis_spool_segments",
        "gauge",
        "Segment files in the disk spool awaiting replay.",
    ),
    ("bytes", "evothesis_spool_bytes", "gauge", "Bytes the disk spool occupies."),
    (
        "full",
        "evothesis_spool_full",
        "gauge",
        "1 while the disk spool is full: with PostgreSQL down, /collect answers 503.",
    ),
    (
        "max_bytes",
        "evothesis_spool_max_bytes",
        "gauge",
        "Size at which the disk spool refuses more records (and /collect answers 503).",
    ),
    (
        "quarantined",
        "evothesis_spool_quarantined",
        "gauge",
        "Spool entries set aside because they could not be read or replayed; "
        "an operator must look at them.",
    ),
    (
        "replayed_rows",
        "evothesis_spool_replayed_events_total",
        "counter",
        "Events replayed from the disk spool into PostgreSQL.",
    ),
)


def _spool_families(spool: object | None, status: object) -> list[_Family]:
    """``evothesis_spool_enabled`` always; the rest when a spool is configured."""
    families = [
        _Family(
            "evothesis_spool_enabled",
            "gauge",
            "1 when a disk spool keeps accepted events while PostgreSQL is down.",
        ).add(1 if spool is not None else 0)
    ]
    if not isinstance(status, Mapping):
        return families
    for key, name, kind, help_text in _SPOOL_METRICS:
        value = _numeric(status.get(key))
        if value is not None:
            families.append(_Family(name, kind, help_text).add(value))
    return families


#: (key of ``CachedDirectory.status()``, metric name, type, help) in exposition order.
_REGISTRY_METRICS: Final = (
    (
        "hits",
        "evothesis_registry_cache_hits_total",
        "counter",
        "Domain lookups answered from the registry cache.",
    ),
    (
        "misses",
        "evothesis_registry_cache_misses_total",
        "counter",
        "Domain lookups the registry cache could not answer fresh.",
    ),
    (
        "lookups",
        "evothesis_registry_cache_lookups_total",
        "counter",
        "Queries the registry cache sent to the registry (database or pixel management).",
    ),
    (
        "stale_answers",
        "evothesis_registry_cache_stale_answers_total",
        "counter",
        "Expired answers served because the registry was unreachable.",
    ),
    (
        "cache_size",
        "evothesis_registry_cache_entries",
        "gauge",
        "Hosts (known and unknown) the registry cache remembers.",
    ),
    (
        "registry_reachable",
        "evothesis_registry_reachable",
        "gauge",
        "1 when the last registry query succeeded, 0 when it failed; absent before the first.",
    ),
)


def _registry_families(sites: object | None) -> list[_Family]:
    status_of = getattr(sites, "status", None)
    status = status_of() if callable(status_of) else None
    if not isinstance(status, Mapping):
        return []
    families = []
    for key, name, kind, help_text in _REGISTRY_METRICS:
        value = _numeric(status.get(key))
        if value is not None:
            families.append(_Family(name, kind, help_text).add(value))
    return families


def _numeric(value: object) -> float | int | None:
    """Numbers and booleans as sample values; anything else (None, text) means absent."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    return None


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    pairs = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels.items())
    return "{" + pairs + "}"


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed escaped, as the text format requires."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


# ---------------------------------------------------------------------------- middleware


class RequestMetrics:
    """ASGI middleware counting HTTP requests by path and status, and /collect latency.

    Wraps the whole application (including the bare /collect endpoint, which bypasses
    FastAPI's middleware stack) and registers itself as ``state.http_metrics`` so that
    ``render_metrics`` finds it. The per-request cost is one dict increment and, for
    /collect only, two ``time.monotonic()`` calls and a bisect: no locks, because
    everything runs on the event loop thread.
    """

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        #: (path label, status) -> requests answered.
        self.requests: dict[tuple[str, int], int] = {}
        #: Non-cumulative counts per bucket of ``COLLECT_LATENCY_BUCKETS``, plus +Inf last.
        self.collect_buckets = [0] * (len(COLLECT_LATENCY_BUCKETS) + 1)
        self.collect_seconds = 0.0
        self.collect_count = 0
        state.http_metrics = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
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
            await self.app(scope, receive, send_with_status)
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

    def families(self) -> Iterable[_Family]:
        """The request counter and the /collect latency histogram, as of now."""
        requests = _Family(
            "evothesis_http_requests_total",
            "counter",
            "HTTP requests answered, by path (/collect, /health or other) and status.",
        )
        for (path, status), count in sorted(self.requests.items()):
            requests.add(count, path=path, status=str(status))
        latency = _Family(
            "evothesis_http_request_duration_seconds",
            "histogram",
            "Time from receiving a /collect request to finishing its answer.",
        )
        cumulative = 0
        for bound, count in zip(COLLECT_LATENCY_BUCKETS, self.collect_buckets, strict=False):
            cumulative += count
            latency.add(cumulative, "_bucket", path="/collect", le=_number(float(bound)))
        latency.add(self.collect_count, "_bucket", path="/collect", le="+Inf")
        latency.add(self.collect_seconds, "_sum", path="/collect")
        latency.add(self.collect_count, "_count", path="/collect")
        return (requests, latency)


# -------------------------------------------------------------------------------- router

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of this collector process",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def prometheus_metrics(request: Request) -> Response:
    """Counters and gauges for scrapers; no client or site appears in any label."""
    state = request.app.state
    spool_status = await asyncio.to_thread(read_spool_status, state)
    return Response(render_metrics(state, spool_status=spool_status), media_type=CONTENT_TYPE)
