"""The production nginx configuration at work (Debian's nginx, the project's template
rendered for loopback) in front of one collector that also serves the registry: what nginx
answers itself, what it compresses and caches, and what it refuses before the collector
sees it."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.support.nginx import Nginx
from tests.support.servers import LOCAL_ORIGIN, RunningCollector


def behind_nginx(
    collector: RunningCollector, nginx_factory: Callable[..., Nginx], **options: object
) -> Nginx:
    address = collector.url.removeprefix("http://")
    return nginx_factory([address], [address], **options)


def test_demo_site_from_disk_and_trackers_compressed_and_cached(
    collector: RunningCollector, nginx_factory: Callable[..., Nginx]
) -> None:
    nginx = behind_nginx(collector, nginx_factory)
    gzip = {"Accept-Encoding": "gzip"}
    with httpx.Client(base_url=nginx.url, headers=gzip, timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 200 and "EvothesisConfig" in page.text
        assert page.headers["content-encoding"] == "gzip"
        assert "max-age=600" in page.headers["cache-control"]

        scripts = {}
        for path in ("/tracking.js", "/js/tracking.js", "/pixel/client_test/tracking.js"):
            first, second = client.get(path), client.get(path)
            assert first.status_code == second.status_code == 200, first.text
            assert first.headers["content-encoding"] == "gzip"
            assert (first.headers["x-cache-status"], second.headers["x-cache-status"]) == (
                "MISS",
                "HIT",
            )
            assert first.content == second.content
            scripts[path] = first.text
        assert '"client_id":"client_test"' in scripts["/pixel/client_test/tracking.js"]
        assert scripts["/js/tracking.js"] == scripts["/tracking.js"]  # seed 001's path

        assert client.get("/health").json()["status"] == "healthy"
        assert client.get("/nginx-health").text == "ok\n"
        # A query string (what a page put in its URL) is not written to the access log.
        client.get("/health", params={"email": "ann@example.org"})

    # The demo page came from disk; each tracker reached the collector once.
    address = collector.url.removeprefix("http://")
    assert nginx.upstreams("GET /", 1) == ["-"]
    assert nginx.upstreams("GET /tracking.js", 2) == [address, "-"]
    assert nginx.upstreams("GET /js/tracking.js", 2) == [address, "-"]
    assert nginx.upstreams("GET /health", 2) == [address, address]
    assert not [line for line in nginx.access_log() if "ann@example.org" in line or "?" in line]


def test_a_body_over_the_collectors_limit_is_refused_by_nginx_in_its_shape(
    collector: RunningCollector, nginx_factory: Callable[..., Nginx]
) -> None:
    nginx = behind_nginx(collector, nginx_factory)
    limit = collector.settings.max_body_bytes
    headers = {"Origin": LOCAL_ORIGIN, "Content-Type": "text/plain"}
    with httpx.Client(base_url=nginx.url, headers=headers, timeout=10) as client:
        refused = client.post("/collect", content=b" " * (limit + 1))
        at_limit = client.post("/collect", content=b"{}" + b" " * (limit - 2))
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "payload_too_large"
    # The largest body the collector takes passes nginx; the collector judges it (no siteId).
    assert at_limit.status_code == 422, at_limit.text
    assert nginx.upstreams("POST /collect", 2) == ["-", collector.url.removeprefix("http://")]


def test_the_rate_limit_is_per_client_address(
    collector: RunningCollector, nginx_factory: Callable[..., Nginx]
) -> None:
    nginx = behind_nginx(collector, nginx_factory, rate="1r/s", burst=3)
    body = {"eventType": "pageview", "siteId": "localhost"}

    def post_from(address: str, times: int) -> list[httpx.Response]:
        transport = httpx.HTTPTransport(local_address=address)
        headers = {"Origin": LOCAL_ORIGIN}
        with httpx.Client(base_url=nginx.url, transport=transport, headers=headers) as client:
            return [client.post("/collect", json=body) for _ in range(times)]

    flood = post_from("127.0.0.21", 10)
    statuses = [response.status_code for response in flood]
    # The first request and the burst pass; at 1 r/s most of the rest cannot.
    assert statuses[:4] == [200] * 4, statuses
    assert statuses.count(429) >= 4, statuses
    limited = next(response for response in flood if response.status_code == 429)
    assert limited.headers["retry-after"] == "1"
    assert limited.json()["error"]["code"] == "rate_limited"
    # Another address has its own allowance.
    assert [response.status_code for response in post_from("127.0.0.22", 2)] == [200, 200]


#: What a browser needs, and nothing else, answers an address on the internet.
PUBLIC = ("/collect", "/tracking.js", "/pixel/client_test/tracking.js", "/health")
#: Operators' paths: private networks only (and their tokens there).
PRIVATE = (
    "/events/recent?limit=1000",
    "/events/count",
    "/export/status",
    "/export/config",
    "/process/status",
    "/pipeline/status",
    "/metrics",
    "/api/v1/clients",
    "/api/v1/internal/domain/localhost",
)


def test_the_internet_reaches_only_what_a_browser_needs(
    collector: RunningCollector, nginx_factory: Callable[..., Nginx]
) -> None:
    """nginx behind a balancer that forwards the client's address: a request from a public
    address gets the pixel's paths; stored data, pipeline state, metrics and the admin API
    are refused, and so is anything else (the collector's /docs included)."""
    nginx = behind_nginx(collector, nginx_factory, behind_balancer=True)
    outside = {"X-Forwarded-For": "203.0.113.50", "Origin": LOCAL_ORIGIN}
    inside = {"X-Forwarded-For": "10.1.2.3", "Origin": LOCAL_ORIGIN}
    event = {"eventType": "pageview", "siteId": "localhost"}
    with httpx.Client(base_url=nginx.url, timeout=10) as client:
        assert client.post("/collect", json=event, headers=outside).status_code == 200
        for path in PUBLIC[1:]:
            assert client.get(path, headers=outside).status_code == 200, path
        health = client.get("/health", headers=outside).json()
        assert health == {"status": "healthy"}  # the details are for operators
        config = client.get("/api/v1/config/domain/localhost", headers=outside)
        assert config.json()["client_id"] == "client_test"
        # A client's own request reaches the collector, which asks for its write key.
        asked = client.post("/client/deliveries", headers=outside)
        assert (asked.status_code, asked.json()["error"]["code"]) == (401, "write_key_required")
        for path in PRIVATE:
            refused = client.get(path, headers=outside)
            assert refused.status_code == 403, path
            assert refused.json()["error"]["code"] == "forbidden"
        for path in ("/docs", "/openapi.json", "/api/v1/gdpr/audit", "/anything"):
            missing = client.get(path, headers=outside)
            assert missing.status_code in (403, 404), path
            assert missing.json()["status"] == "error"
        # From inside the network the same paths reach the collector, which asks for its
        # operator token (a test collector is not a development one).
        assert client.get("/events/recent", headers=inside).status_code == 401
        token = {**inside, "Authorization": f"Bearer {collector.settings.operator_token}"}
        assert client.get("/events/recent", headers=token).status_code == 200
        assert client.get("/export/status", headers=token).status_code == 200
