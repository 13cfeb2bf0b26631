"""GET /metrics in the Prometheus text format.

Why hand-rendered: the format is a few lines of text, and the collector's counters already
live on the objects that do the work (collector outcomes, write buffer, spool, registry
cache, request counter, connection pool). A client library would duplicate them into its
own registry and add a dependency to the hot path; here a scrape reads their typed
snapshots in place, on the event loop, with no locks.

A source that an app does not have (no spool configured, a pixel-management app without a
collector) is left out rather than reported as a misleading zero.

No metric carries a client or site label: /metrics is for operators, must not reveal which
tenants send what, and must keep a bounded number of series whatever senders put in their
requests. Every reason label comes from a closed set (``DropReason``, ``Refusal``,
``RejectReason``).

Counters are per process. With ``serve --workers N`` each worker answers for itself, so
scrape each worker (or run one worker per container), as with any multi-process server.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from fastapi import APIRouter, Depends
from starlette.responses import Response

from evothesis import __version__
from evothesis.api.deps import RuntimeDep
from evothesis.api.tokens import require_reader
from evothesis.api.transport.request_metrics import COLLECT_LATENCY_BUCKETS, RequestMetrics
from evothesis.domain import DropReason, Refusal
from evothesis.ingest.outcomes import Outcomes
from evothesis.registry.cache import CacheStatus
from evothesis.storage.pool import PoolStats
from evothesis.storage.spool import Spool, SpoolStatus
from evothesis.storage.write_buffer import BufferStats

__all__ = [
    "CONTENT_TYPE",
    "MetricSources",
    "escape_label_value",
    "read_spool_status",
    "render_metrics",
    "router",
]


#: The text exposition format, version 0.0.4, which every Prometheus-compatible scraper reads.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class MetricSources:
    """Snapshots of everything a scrape reports; ``None`` where the app has no such part."""

    outcomes: Outcomes | None = None
    buffer: BufferStats | None = None
    #: Whether a disk spool is configured (reported even when its status is unreadable).
    spool_enabled: bool = False
    spool: SpoolStatus | None = None
    registry: CacheStatus | None = None
    http: RequestMetrics | None = None
    pool: PoolStats | None = None


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


def render_metrics(sources: MetricSources) -> str:
    """The whole exposition for one process. Pure: nothing awaited, so a scrape cannot
    block on the database it is meant to watch."""
    families: list[_Family] = [
        _Family("evothesis_build_info", "gauge", "Version of the running collector; always 1.").add(
            1, version=__version__
        )
    ]
    if sources.outcomes is not None:
        families += _outcome_families(sources.outcomes)
    if sources.buffer is not None:
        families += _buffer_families(sources.buffer)
    families += _spool_families(sources.spool_enabled, sources.spool)
    if sources.registry is not None:
        families += _registry_families(sources.registry)
    if sources.http is not None:
        families += _http_families(sources.http)
    if sources.pool is not None:
        families += _pool_families(sources.pool)
    out: list[str] = []
    for family in families:
        family.render(out)
    out.append("")
    return "\n".join(out)


def read_spool_status(spool: Spool | None) -> SpoolStatus | None:
    """``spool.status()``, or ``None`` without a spool or when its folder cannot be read
    (the answer still comes, without the spool's numbers). Touches the disk: call it in a
    thread."""
    if spool is None:
        return None
    try:
        return spool.status()
    except OSError:
        return None


def _outcome_families(outcomes: Outcomes) -> list[_Family]:
    """Refusals count requests (the collector refuses a request as a whole); drops,
    rejections and anonymised events count events. Every refusal and drop reason is
    reported from the start (as 0), so ``rate()`` and alerts work before the first one."""
    refused = _Family(
        "evothesis_collect_refused_requests_total",
        "counter",
        "Requests to /collect refused by attribution or sender checks, by reason.",
    )
    for refusal in sorted(Refusal):
        refused.add(outcomes.refused[refusal], reason=refusal)
    dropped = _Family(
        "evothesis_events_dropped_total",
        "counter",
        "Events acknowledged but not stored because of the visitor's privacy signal, "
        "missing consent or the client's bot policy, by reason.",
    )
    for reason in sorted(DropReason):
        dropped.add(outcomes.dropped[reason], reason=reason)
    rejected = _Family(
        "evothesis_events_rejected_total",
        "counter",
        "Inner events of batches that failed validation, stored as failed events, by reason.",
    )
    for reject_reason, count in sorted(outcomes.rejected.items()):
        rejected.add(count, reason=reject_reason)
    anonymized = _Family(
        "evothesis_events_anonymized_total",
        "counter",
        "Events stored without identifiers because of the visitor's privacy choices.",
    ).add(outcomes.anonymized)
    return [refused, dropped, rejected, anonymized]


#: (field of ``BufferStats``, metric name, type, help) in exposition order.
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


def _buffer_families(stats: BufferStats) -> list[_Family]:
    return [
        _Family(name, kind, help_text).add(getattr(stats, field))
        for field, name, kind, help_text in _BUFFER_METRICS
    ]


#: (field of ``SpoolStatus``, metric name, type, help) in exposition order.
_SPOOL_METRICS: Final = (
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


def _spool_families(enabled: bool, status: SpoolStatus | None) -> list[_Family]:
    """``evothesis_spool_enabled`` always; the rest when the spool's status was read."""
    families = [
        _Family(
            "evothesis_spool_enabled",
            "gauge",
            "1 when a disk spool keeps accepted events while PostgreSQL is down.",
        ).add(1 if enabled else 0)
    ]
    if status is None:
        return families
    for field, name, kind, help_text in _SPOOL_METRICS:
        families.append(_Family(name, kind, help_text).add(int(getattr(status, field))))
    return families


#: (field of ``CacheStatus``, metric name, type, help) in exposition order.
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
)


def _registry_families(status: CacheStatus) -> list[_Family]:
    families = [
        _Family(name, kind, help_text).add(getattr(status, field))
        for field, name, kind, help_text in _REGISTRY_METRICS
    ]
    if status.registry_reachable is not None:  # unknown before the first lookup
        families.append(
            _Family(
                "evothesis_registry_reachable",
                "gauge",
                "1 when the last registry query succeeded, 0 when it failed; "
                "absent before the first.",
            ).add(int(status.registry_reachable))
        )
    return families


def _http_families(http: RequestMetrics) -> list[_Family]:
    """The request counter and the /collect latency histogram, as of now."""
    requests = _Family(
        "evothesis_http_requests_total",
        "counter",
        "HTTP requests answered, by path (/collect, /health or other) and status.",
    )
    for (path, status), count in sorted(http.requests.items()):
        requests.add(count, path=path, status=str(status))
    latency = _Family(
        "evothesis_http_request_duration_seconds",
        "histogram",
        "Time from receiving a /collect request to finishing its answer.",
    )
    cumulative = 0
    for bound, count in zip(COLLECT_LATENCY_BUCKETS, http.collect_buckets, strict=False):
        cumulative += count
        latency.add(cumulative, "_bucket", path="/collect", le=_number(float(bound)))
    latency.add(http.collect_count, "_bucket", path="/collect", le="+Inf")
    latency.add(http.collect_seconds, "_sum", path="/collect")
    latency.add(http.collect_count, "_count", path="/collect")
    return [requests, latency]


#: (field of ``PoolStats``, metric name, type, help) in exposition order.
_POOL_METRICS: Final = (
    ("size", "evothesis_db_pool_connections", "gauge", "Open PostgreSQL connections."),
    (
        "max_size",
        "evothesis_db_pool_max_connections",
        "gauge",
        "Connections the pool opens at most (DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW).",
    ),
    (
        "in_use",
        "evothesis_db_pool_connections_in_use",
        "gauge",
        "Connections handed out (flushes, exports, status reads) and not yet given back.",
    ),
    (
        "waiting",
        "evothesis_db_pool_waiting",
        "gauge",
        "Callers waiting for a connection now, because every one is in use.",
    ),
    (
        "waits",
        "evothesis_db_pool_waits_total",
        "counter",
        "Acquires that found every connection in use and waited.",
    ),
    (
        "wait_seconds",
        "evothesis_db_pool_wait_seconds_total",
        "counter",
        "Seconds spent waiting for a connection, in all.",
    ),
)


def _pool_families(stats: PoolStats) -> list[_Family]:
    return [
        _Family(name, kind, help_text).add(getattr(stats, field))
        for field, name, kind, help_text in _POOL_METRICS
    ]


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


# -------------------------------------------------------------------------------- router

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of this collector process",
    dependencies=[Depends(require_reader)],
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def prometheus_metrics(runtime: RuntimeDep) -> Response:
    """Counters and gauges for scrapers; no client or site appears in any label."""
    pool = runtime.services.pool.stats()
    sources = MetricSources(http=runtime.http_metrics, pool=pool)
    if runtime.has_ingestion:
        ingestion = runtime.ingestion
        sources = MetricSources(
            outcomes=ingestion.collector.outcomes,
            buffer=ingestion.buffer.stats(),
            spool_enabled=ingestion.spool is not None,
            spool=await asyncio.to_thread(read_spool_status, ingestion.spool),
            registry=ingestion.sites.status(),
            http=runtime.http_metrics,
            pool=pool,
        )
    return Response(render_metrics(sources), media_type=CONTENT_TYPE)
