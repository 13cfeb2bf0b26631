"""render_metrics and RequestMetrics on stand-in sources: exact lines, and a strict parse.

Every source of a metric (collector outcomes, write buffer, spool, registry cache, request
counter) is a typed snapshot that an app has or lacks, as it does while a feature is not
configured or in the pixel-management service, which collects nothing.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from evothesis import __version__
from evothesis.api.routes.metrics import (
    MetricSources,
    escape_label_value,
    read_spool_status,
    render_metrics,
)
from evothesis.api.transport.asgi import ASGIApp
from evothesis.api.transport.request_metrics import COLLECT_LATENCY_BUCKETS, RequestMetrics
from evothesis.domain import DropReason, Refusal, RejectReason
from evothesis.ingest.outcomes import Outcomes
from evothesis.registry.cache import CacheStatus
from evothesis.storage.pool import PoolStats
from evothesis.storage.spool import Spool, SpoolStatus
from evothesis.storage.write_buffer import BufferStats
from tests.support.prometheus_text import FormatError, parse, value

BUFFER = BufferStats(
    pending_rows=7,
    flushed_batches=3,
    flushed_rows=120,
    flush_seconds_total=0.125,
    failed_flushes=1,
    spooled_batches=2,
    spooled_rows=40,
)
SPOOL = SpoolStatus(
    full=False, segments=1, bytes=4096, max_bytes=1 << 30, quarantined=1, replayed_rows=15
)


def registry(reachable: bool | None = True) -> CacheStatus:
    return CacheStatus(
        source="database",
        registry_reachable=reachable,
        cache_size=4,
        hits=90,
        misses=10,
        lookups=6,
        stale_answers=0,
        last_error=None,
    )


def full_sources() -> MetricSources:
    outcomes = Outcomes()
    outcomes.refused[Refusal.UNAUTHORIZED_DOMAIN] = 5
    outcomes.refused[Refusal.ORIGIN_MISMATCH] = 2
    outcomes.dropped[DropReason.DO_NOT_TRACK] = 9
    outcomes.rejected[RejectReason.TOO_LONG] = 3
    outcomes.anonymized = 4
    return MetricSources(
        outcomes=outcomes,
        buffer=BUFFER,
        spool_enabled=True,
        spool=SPOOL,
        registry=registry(),
        pool=PoolStats(size=8, max_size=30, in_use=5, waiting=2, waits=11, wait_seconds=0.75),
    )


def lines(text: str) -> set[str]:
    return set(text.splitlines())


def test_every_source_is_rendered_with_exact_lines() -> None:
    text = render_metrics(full_sources())
    parse(text)
    expected = {
        "# HELP evothesis_build_info Version of the running collector; always 1.",
        "# TYPE evothesis_build_info gauge",
        f'evothesis_build_info{{version="{__version__}"}} 1',
        "# TYPE evothesis_collect_refused_requests_total counter",
        'evothesis_collect_refused_requests_total{reason="unauthorized_domain"} 5',
        'evothesis_collect_refused_requests_total{reason="origin_mismatch"} 2',
        'evothesis_collect_refused_requests_total{reason="write_key_required"} 0',
        'evothesis_collect_refused_requests_total{reason="invalid_write_key"} 0',
        "# TYPE evothesis_events_dropped_total counter",
        'evothesis_events_dropped_total{reason="do_not_track"} 9',
        'evothesis_events_dropped_total{reason="no_consent"} 0',
        'evothesis_events_dropped_total{reason="bot_headless"} 0',
        'evothesis_events_rejected_total{reason="too_long"} 3',
        "evothesis_events_anonymized_total 4",
        "# TYPE evothesis_write_buffer_pending_events gauge",
        "evothesis_write_buffer_pending_events 7",
        "evothesis_write_buffer_flushes_total 3",
        "evothesis_write_buffer_flushed_events_total 120",
        "evothesis_write_buffer_flush_seconds_total 0.125",
        "evothesis_write_buffer_failed_flushes_total 1",
        "evothesis_write_buffer_spooled_batches_total 2",
        "evothesis_write_buffer_spooled_events_total 40",
        "evothesis_spool_enabled 1",
        "evothesis_spool_segments 1",
        "evothesis_spool_full 0",
        "evothesis_spool_bytes 4096",
        f"evothesis_spool_max_bytes {1 << 30}",
        "evothesis_spool_quarantined 1",
        "# TYPE evothesis_spool_replayed_events_total counter",
        "evothesis_spool_replayed_events_total 15",
        "evothesis_registry_cache_hits_total 90",
        "evothesis_registry_cache_misses_total 10",
        "evothesis_registry_cache_lookups_total 6",
        "evothesis_registry_cache_stale_answers_total 0",
        "# TYPE evothesis_registry_cache_entries gauge",
        "evothesis_registry_cache_entries 4",
        "evothesis_registry_reachable 1",
        "# TYPE evothesis_db_pool_connections gauge",
        "evothesis_db_pool_connections 8",
        "evothesis_db_pool_max_connections 30",
        "evothesis_db_pool_connections_in_use 5",
        "# TYPE evothesis_db_pool_waiting gauge",
        "evothesis_db_pool_waiting 2",
        "# TYPE evothesis_db_pool_waits_total counter",
        "evothesis_db_pool_waits_total 11",
        "evothesis_db_pool_wait_seconds_total 0.75",
    }
    assert expected <= lines(text), sorted(expected - lines(text))
    # Refusals are requests, drops and anonymizations are events: never in one metric.
    assert "anonymized" not in "".join(
        line for line in lines(text) if "refused_requests_total{" in line
    )


def test_every_refusal_and_drop_reason_is_reported_from_the_start() -> None:
    families = parse(render_metrics(MetricSources(outcomes=Outcomes())))
    for refusal in Refusal:
        assert value(families, "evothesis_collect_refused_requests_total", reason=refusal) == 0
    for reason in DropReason:
        assert value(families, "evothesis_events_dropped_total", reason=reason) == 0
    assert not families["evothesis_events_rejected_total"].samples


def test_every_family_has_help_and_type_and_counters_end_in_total() -> None:
    families = parse(render_metrics(full_sources()))
    for family in families.values():
        assert family.help, family.name
        assert family.type in {"counter", "gauge", "histogram"}, family.name
        assert family.name.startswith("evothesis_")


def test_missing_sources_are_left_out_not_reported_as_zero() -> None:
    """An app without a collector (pixel management) still renders a valid exposition."""
    text = render_metrics(MetricSources())
    families = parse(text)
    assert set(families) == {"evothesis_build_info", "evothesis_spool_enabled"}
    assert "evothesis_spool_enabled 0" in lines(text)


def test_a_collector_without_a_spool_says_so() -> None:
    sources = MetricSources(outcomes=Outcomes(), buffer=BUFFER, registry=registry())
    text = render_metrics(sources)
    families = parse(text)
    assert "evothesis_spool_enabled 0" in lines(text)
    assert "evothesis_spool_bytes" not in families
    assert value(families, "evothesis_write_buffer_flushed_events_total") == 120


def test_an_unreadable_spool_leaves_its_numbers_out_but_not_the_scrape(tmp_path: Path) -> None:
    """The endpoint reads the status in a thread; a spool folder that cannot be read (here:
    removed under the collector) leaves the spool's numbers out instead of failing."""
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    try:
        assert read_spool_status(spool) == SpoolStatus(False, 0, 0, 1 << 20, 0, 0)
        shutil.rmtree(tmp_path / "spool")
        assert read_spool_status(spool) is None
    finally:
        spool.close()
    assert read_spool_status(None) is None
    families = parse(render_metrics(MetricSources(spool_enabled=True, spool=None)))
    assert value(families, "evothesis_spool_enabled") == 1
    assert "evothesis_spool_bytes" not in families


@pytest.mark.parametrize(("reachable", "line"), [(True, "1"), (False, "0"), (None, None)])
def test_registry_reachability_is_absent_until_known(reachable: bool | None, line: str) -> None:
    text = render_metrics(MetricSources(registry=registry(reachable)))
    parse(text)
    reported = [x for x in lines(text) if x.startswith("evothesis_registry_reachable ")]
    assert reported == ([f"evothesis_registry_reachable {line}"] if line else [])


def test_escape_label_value() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert escape_label_value("plain") == "plain"


def test_float_values_are_rendered_the_way_scrapers_read_them() -> None:
    text = render_metrics(MetricSources(buffer=BUFFER._replace(flush_seconds_total=math.inf)))
    assert "evothesis_write_buffer_flush_seconds_total +Inf" in lines(text)
    text = render_metrics(MetricSources(buffer=BUFFER._replace(flush_seconds_total=math.nan)))
    assert "evothesis_write_buffer_flush_seconds_total NaN" in lines(text)


# ---------------------------------------------------------------------------- middleware


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _silent_app(scope: Any, receive: Any, send: Any) -> None:
    """Ends without answering, as when the client has gone away."""


async def _failing_app(scope: Any, receive: Any, send: Any) -> None:
    raise RuntimeError("boom")


def _call(app: ASGIApp, path: str, kind: str = "http") -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    asyncio.run(app({"type": kind, "path": path}, receive, send))


def test_requests_are_counted_by_fixed_path_set_and_status() -> None:
    metrics = RequestMetrics()
    app = metrics.wrap(_ok_app)
    for path in ("/collect", "/collect", "/health", "/missing", "/wp-admin/x.php", "/metrics"):
        _call(app, path)
    text = render_metrics(MetricSources(http=metrics))
    families = parse(text)
    requests = "evothesis_http_requests_total"
    assert value(families, requests, path="/collect", status="200") == 2
    assert value(families, requests, path="/health", status="200") == 1
    assert value(families, requests, path="other", status="404") == 1
    assert value(families, requests, path="other", status="200") == 2
    assert len(families[requests].samples) == 4
    histogram = "evothesis_http_request_duration_seconds"
    assert families[histogram].type == "histogram"
    assert value(families, f"{histogram}_count", path="/collect") == 2
    assert value(families, f"{histogram}_bucket", path="/collect", le="+Inf") == 2
    # Quick in-process calls land in the first bucket.
    first = str(COLLECT_LATENCY_BUCKETS[0])
    assert value(families, f"{histogram}_bucket", path="/collect", le=first) == 2
    assert value(families, f"{histogram}_sum", path="/collect") < COLLECT_LATENCY_BUCKETS[0] * 2


def test_histogram_buckets_are_cumulative_with_exact_lines() -> None:
    metrics = RequestMetrics()
    metrics.collect_buckets[1] = 3  # 5 ms < t <= 10 ms
    metrics.collect_buckets[-1] = 1  # slower than the last bound
    metrics.collect_count = 4
    metrics.collect_seconds = 3.5
    text = render_metrics(MetricSources(http=metrics))
    parse(text)
    name = "evothesis_http_request_duration_seconds"
    assert {
        f'{name}_bucket{{path="/collect",le="0.005"}} 0',
        f'{name}_bucket{{path="/collect",le="0.01"}} 3',
        f'{name}_bucket{{path="/collect",le="2.5"}} 3',
        f'{name}_bucket{{path="/collect",le="+Inf"}} 4',
        f'{name}_sum{{path="/collect"}} 3.5',
        f'{name}_count{{path="/collect"}} 4',
    } <= lines(text)


def test_requests_without_an_answer_or_with_an_exception() -> None:
    metrics = RequestMetrics()
    _call(metrics.wrap(_silent_app), "/collect")
    families = parse(render_metrics(MetricSources(http=metrics)))
    assert value(families, "evothesis_http_requests_total", path="/collect", status="499") == 1
    metrics = RequestMetrics()
    with pytest.raises(RuntimeError):
        _call(metrics.wrap(_failing_app), "/health")
    families = parse(render_metrics(MetricSources(http=metrics)))
    assert value(families, "evothesis_http_requests_total", path="/health", status="500") == 1


def test_lifespan_and_websocket_scopes_pass_through_uncounted() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    metrics = RequestMetrics()
    _call(metrics.wrap(app), "/collect", kind="websocket")
    assert seen == ["websocket"]
    assert metrics.requests == {}


# ------------------------------------------------------------------- the test's own parser


@pytest.mark.parametrize(
    "bad",
    [
        "no_newline 1",
        "9starts_with_digit 1\n",
        'm{le="1" 2\n',
        'm{a="x",a="y"} 1\n',
        'm{a="\\q"} 1\n',
        "m one\n",
        "# TYPE c_total counter\nc_total -1\n",
        "# TYPE c counter\nc 1\n",
        "# TYPE m gauge\nm 1\n# TYPE n gauge\nn 1\nm 2\n",
        '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\n',
    ],
)
def test_parser_rejects_what_a_scraper_would(bad: str) -> None:
    with pytest.raises(FormatError):
        parse(bad)
