"""GET /metrics on a real collector: the counters move with real traffic.

Every number is read through the strict text-format parser, before and after the
traffic, so the test checks what a Prometheus scrape would see rather than internals.
"""

from __future__ import annotations

import httpx

from evothesis.api.routes.metrics import CONTENT_TYPE
from tests.support.postgres import register_client
from tests.support.prometheus_text import Family, parse, value
from tests.support.servers import RunningCollector

EVENT = {"eventType": "pageview", "siteId": "localhost", "url": "https://localhost/a"}


def scrape(api: httpx.Client) -> dict[str, Family]:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    return parse(response.text)


def test_metrics_is_a_valid_exposition(collector: RunningCollector) -> None:
    with collector.client() as api:
        families = scrape(api)
    for name in (
        "evothesis_build_info",
        "evothesis_collect_refused_requests_total",
        "evothesis_events_dropped_total",
        "evothesis_write_buffer_pending_events",
        "evothesis_write_buffer_flushed_events_total",
        "evothesis_registry_cache_hits_total",
        "evothesis_http_requests_total",
        "evothesis_http_request_duration_seconds",
        # From the write buffer's and the spool's own counters: the names must line up.
        "evothesis_write_buffer_spooled_events_total",
        "evothesis_write_buffer_failed_flushes_total",
        "evothesis_write_buffer_flush_seconds_total",
        "evothesis_spool_segments",
        "evothesis_spool_bytes",
        "evothesis_spool_max_bytes",
        "evothesis_spool_full",
        "evothesis_spool_replayed_events_total",
        # The connection pool (the seeds' "monitor connection pool").
        "evothesis_db_pool_connections",
        "evothesis_db_pool_max_connections",
        "evothesis_db_pool_connections_in_use",
        "evothesis_db_pool_waiting",
        "evothesis_db_pool_waits_total",
        "evothesis_db_pool_wait_seconds_total",
    ):
        assert name in families, name
        assert families[name].help, name
    assert value(families, "evothesis_spool_enabled") == 1
    assert value(families, "evothesis_db_pool_max_connections") == collector.settings.pool_max_size
    assert value(families, "evothesis_db_pool_connections") >= 1
    assert value(families, "evothesis_spool_full") == 0


def test_counters_move_with_accepted_refused_and_dropped_events(
    collector: RunningCollector, database_url: str
) -> None:
    register_client(database_url, "client_acme", "acme.com")
    with collector.client() as api, collector.client(origin=None) as server_side:
        before = scrape(api)
        for path in ("/a", "/b", "/c"):
            assert api.post("/collect", json={**EVENT, "path": path}).status_code == 200
        batch = {**EVENT, "eventType": "batch", "events": [{"eventType": "click"}] * 2}
        assert api.post("/collect", json=batch).status_code == 200  # 3 rows
        unknown = api.post("/collect", json={**EVENT, "siteId": "nobody.example"})
        assert unknown.status_code == 403
        foreign = api.post("/collect", json={**EVENT, "siteId": "acme.com"})
        assert foreign.json()["error"]["code"] == "origin_mismatch"
        keyless = server_side.post("/collect", json=EVENT)  # stored as unverified
        assert keyless.status_code == 200
        wrong_key = server_side.post("/collect", json=EVENT, headers={"X-Write-Key": "wk_no"})
        assert wrong_key.json()["error"]["code"] == "invalid_write_key"
        dnt = api.post("/collect", json=EVENT, headers={"DNT": "1"})
        assert dnt.json()["events_dropped"] == 1
        assert api.post("/collect", content=b"{").status_code == 400
        assert api.get("/health").status_code == 200
        after = scrape(api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("evothesis_write_buffer_flushed_events_total") == 7
    assert moved("evothesis_write_buffer_flushes_total") >= 1
    assert moved("evothesis_write_buffer_flush_seconds_total") > 0
    assert value(after, "evothesis_write_buffer_pending_events") == 0
    refused = "evothesis_collect_refused_requests_total"
    assert moved(refused, reason="unauthorized_domain") == 1
    assert moved(refused, reason="origin_mismatch") == 1
    assert moved(refused, reason="write_key_required") == 0
    assert moved(refused, reason="invalid_write_key") == 1
    assert moved("evothesis_events_dropped_total", reason="do_not_track") == 1

    requests = "evothesis_http_requests_total"
    assert value(after, requests, path="/collect", status="200") == 6
    assert value(after, requests, path="/collect", status="403") == 2
    assert value(after, requests, path="/collect", status="401") == 1
    assert value(after, requests, path="/collect", status="400") == 1
    assert value(after, requests, path="/health", status="200") == 1
    assert value(after, requests, path="other", status="200") >= 1  # the first scrape
    latency = "evothesis_http_request_duration_seconds"
    assert moved(f"{latency}_count", path="/collect") == 10
    assert moved(f"{latency}_sum", path="/collect") > 0

    assert moved("evothesis_registry_cache_hits_total") > 0
    assert moved("evothesis_registry_cache_lookups_total") >= 2  # nobody.example, acme.com
    assert value(after, "evothesis_registry_reachable") == 1


def test_metrics_name_no_client_or_site(collector: RunningCollector, database_url: str) -> None:
    """Operators' metrics must not reveal which tenants send what."""
    register_client(database_url, "client_acme", "acme.com")
    with collector.client(origin="https://acme.com") as acme:
        assert acme.post("/collect", json={**EVENT, "siteId": "acme.com"}).status_code == 200
        text = acme.get("/metrics").text
    assert "client_acme" not in text
    assert "acme.com" not in text
    assert "localhost" not in text
