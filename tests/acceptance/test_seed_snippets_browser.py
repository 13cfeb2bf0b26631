"""The snippets a site owner pastes, in Debian's Chromium: seed 001's script tag
(``/js/tracking.js``) and the README's ``<noscript>`` pixel, on a page of their own site.

The site is a plain static web server on 127.0.0.1 (loaded as ``localhost``, the
development client's domain); the collector is another origin, as in production. Nothing
is intercepted: the browser's own requests reach the collector.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser

from tests.support.servers import RunningCollector

pytestmark = pytest.mark.browser


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static site on 127.0.0.1, addressed as http://localhost:<port>; (base URL, folder)."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def stored(db: psycopg.Connection[Any], what: str, timeout: float = 15) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = db.execute(
            "SELECT event_type, url, client_id, raw_event_data FROM events_log ORDER BY id"
        ).fetchall()
        if rows:
            return rows
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_the_seed_script_tag_tracks_a_page(
    browser: Browser,
    collector: RunningCollector,
    db: psycopg.Connection[Any],
    site: tuple[str, Path],
) -> None:
    base, folder = site
    # Seed 001, "Pixel Deployment", with the collector's address for client-vm.evothesis.com.
    (folder / "index.html").write_text(
        "<!doctype html><title>Shop</title><h1>Shop</h1>"
        f'<script src="{collector.url}/js/tracking.js"></script>'
    )
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{base}/index.html")
        page.wait_for_function("window.evothesis !== undefined")
        assert page.evaluate("evothesis.flush()")
    finally:
        context.close()
    rows = stored(db, "the page view of the seed's snippet")
    types = [row[0] for row in rows]
    assert "pageview" in types, types
    assert {row[1] for row in rows if row[0] == "pageview"} == {f"{base}/index.html"}
    assert {row[2] for row in rows} == {"client_test"}


def test_the_noscript_pixel_counts_a_page_without_javascript(
    browser: Browser,
    collector: RunningCollector,
    db: psycopg.Connection[Any],
    site: tuple[str, Path],
) -> None:
    base, folder = site
    # The README's <noscript> snippet, as a site owner fills it in.
    (folder / "nojs.html").write_text(
        "<!doctype html><title>No JS</title><h1>Plain page</h1>"
        f'<noscript><img src="{collector.url}/collect?eventType=pageview&amp;siteId=localhost'
        f'&amp;url={base}/nojs.html&amp;eventData.source=noscript" alt="" width="1" height="1"'
        ' style="position:absolute"></noscript>'
    )
    context = browser.new_context(java_script_enabled=False)
    answers: list[tuple[int, str | None]] = []
    try:
        page = context.new_page()
        page.on(
            "response",
            lambda r: (
                answers.append((r.status, r.headers.get("content-type")))
                if "/collect" in r.url
                else None
            ),
        )
        page.goto(f"{base}/nojs.html", wait_until="load")
    finally:
        context.close()
    [(event_type, url, client_id, raw)] = stored(db, "the noscript pixel's page view")
    assert (event_type, url, client_id) == ("pageview", f"{base}/nojs.html", "client_test")
    assert raw["eventData"] == {"source": "noscript"}
    assert answers == [(200, "image/gif")]
