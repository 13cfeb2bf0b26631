"""The pixel in a real browser: Debian's Chromium driven by Playwright, against the real
collector and PostgreSQL. What arrives in events_log is what is asserted."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.support.servers import RunningCollector

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], f"the tracker let exceptions reach the page: {errors}"


def localhost(collector: RunningCollector, path: str) -> str:
    return collector.url.replace("127.0.0.1", "localhost") + path


def wait_for_rows(db: Any, where: str, expected: int, timeout: float = 15) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = db.execute(
            f"SELECT event_type, client_id, site_id, visitor_id, session_id, raw_event_data "
            f"FROM events_log WHERE {where} ORDER BY id"
        ).fetchall()
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_demo_page_events_arrive_attributed_in_batches(
    collector: RunningCollector, db: Any, page: Page
) -> None:
    logs: list[str] = []
    page.on("console", lambda message: logs.append(message.text))
    page.goto(localhost(collector, "/index.html"))
    page.wait_for_function("window.evothesis !== undefined")
    page.click("#evo-flush")
    page.evaluate("evothesis.track('demo_custom', {plan: 'pro', seats: 3})")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.evaluate("evothesis.flush()")

    rows = wait_for_rows(db, "event_type = 'demo_custom'", 1)
    assert rows, "custom event never reached the database"
    all_rows = wait_for_rows(db, "true", 3)
    types = [r[0] for r in all_rows]
    assert "pageview" in types and "batch" in types
    assert {r[1] for r in all_rows} == {"client_test"}
    assert {r[2] for r in all_rows} == {"localhost"}
    assert len({r[3] for r in all_rows}) == 1, "one visitor id per browser"
    assert len({r[4] for r in all_rows}) == 1, "one session id per visit"
    [custom] = [r for r in all_rows if r[0] == "demo_custom"]
    assert custom[5]["eventData"]["plan"] == "pro"
    assert any("Analytics pixel loaded for client: client_test" in line for line in logs)

    # Every inner event row belongs to an envelope that counted it.
    envelopes = sum(r[5]["eventCount"] for r in all_rows if r[0] == "batch")
    assert envelopes == len(all_rows) - types.count("batch")


def test_form_values_never_leave_the_browser(
    collector: RunningCollector, db: Any, page: Page
) -> None:
    page.goto(localhost(collector, "/contact.html"))
    page.wait_for_function("window.evothesis !== undefined")
    page.fill("#name", "secret-value-XYZ")
    page.fill("#email", "someone.private@example.org")
    page.fill("#message", "my confidential message 4111 1111 1111 1111")
    page.click("#send")
    page.evaluate("evothesis.flush()")

    rows = wait_for_rows(db, "event_type = 'form_submit'", 1)
    assert rows, "form_submit never arrived"
    assert wait_for_rows(db, "event_type = 'form_focus'", 1)
    everything = db.execute("SELECT string_agg(events_log::text, ' ') FROM events_log").fetchone()
    text = everything[0]
    for secret in ("secret-value-XYZ", "someone.private@example.org", "confidential", "4111"):
        assert secret not in text
    fields = {f["name"] for f in rows[0][5]["eventData"]["fields"]}
    assert {"name", "email", "message"} <= fields


def test_events_survive_a_collector_outage(
    start_collector: Callable[..., RunningCollector], db: Any, page: Page
) -> None:
    first = start_collector()
    page.goto(localhost(first, "/index.html"))
    page.wait_for_function("window.evothesis !== undefined")
    page.evaluate("evothesis.flush()")
    assert wait_for_rows(db, "event_type = 'pageview'", 1)

    first.stop()
    for n in range(3):
        page.evaluate(f"evothesis.track('during_outage', {{n: {n}}})")
    page.evaluate("evothesis.flush()")
    time.sleep(0.5)
    start_collector(port=int(first.url.rsplit(":", 1)[1]))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if page.evaluate("evothesis.flush()"):
            break
        time.sleep(0.5)
    rows = wait_for_rows(db, "event_type = 'during_outage'", 3)
    assert sorted(r[5]["eventData"]["n"] for r in rows) == [0, 1, 2], "lost or duplicated"


def test_clicks_scroll_selection_spa_navigation_and_page_exit(
    collector: RunningCollector, db: Any, page: Page
) -> None:
    page.goto(localhost(collector, "/index.html"))
    page.wait_for_function("window.evothesis !== undefined")
    page.click("#spa-pricing")
    page.click("#spa-faq")
    for fraction in (0.3, 0.6, 0.8, 1.0, 0.2, 1.0):
        page.evaluate(
            f"window.scrollTo(0, (document.body.scrollHeight - innerHeight) * {fraction})"
        )
        page.wait_for_timeout(150)
    page.evaluate(
        """() => {
        const range = document.createRange();
        range.selectNodeContents(document.getElementById('quote'));
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        document.dispatchEvent(new Event('selectionchange'));
    }"""
    )
    page.wait_for_timeout(900)  # the tracker debounces selection
    page.evaluate("evothesis.flush()")
    # Leaving the page sends page_exit with sendBeacon on pagehide.
    page.goto(localhost(collector, "/products.html"))
    page.wait_for_function("window.evothesis !== undefined")
    page.evaluate("evothesis.flush()")

    wait_for_rows(db, "event_type = 'page_exit'", 1)
    rows = wait_for_rows(db, "event_type <> 'batch'", 8)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event_type, *_, raw in rows:
        by_type.setdefault(event_type, []).append(raw)
    paths = sorted(e.get("path", "") for e in by_type["pageview"])
    assert paths == ["/index.html", "/index.html", "/index.html", "/products.html"], paths
    depths = sorted(e["eventData"]["depth"] for e in by_type["scroll"])
    assert depths == [25, 50, 75, 100], "each milestone once per page"
    [selection] = by_type["text_selection"]
    assert selection["eventData"]["length"] > 20
    assert "never the text itself" not in str(rows)
    assert by_type["page_exit"][0]["eventData"]["timeOnPage"] >= 0


def test_do_not_track_browser_sends_nothing_when_the_client_honours_it(
    collector: RunningCollector, db: Any, browser: Browser
) -> None:
    context = browser.new_context()
    context.add_init_script(
        """
        Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'});
        Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});
        let config;
        Object.defineProperty(window, 'EvothesisConfig', {
            configurable: true,
            get: () => config,
            set: (value) => { config = Object.assign({}, value, {honour_dnt: true}); },
        });
        """
    )
    page = context.new_page()
    page.goto(localhost(collector, "/index.html"))
    page.wait_for_function("window.evothesis !== undefined")
    page.evaluate("evothesis.track('should_not_arrive', {})")
    page.evaluate("evothesis.flush()")
    page.goto(localhost(collector, "/contact.html"))
    page.wait_for_timeout(1500)
    context.close()
    assert wait_for_rows(db, "true", 1, timeout=2) == []


def track_while_the_table_is_offline(
    collector: RunningCollector, db: Any, page: Page, event_type: str, *, wait_ms: int
) -> int:
    """Record a page view, take ``events_log`` away (every flush now fails), track four
    events and flush, put the table back; returns the tracker's pending batches from
    while it was away."""
    page.goto(localhost(collector, "/index.html"))
    page.wait_for_function("window.evothesis !== undefined")
    page.evaluate("evothesis.flush()")
    assert wait_for_rows(db, "event_type = 'pageview'", 1)
    db.execute("ALTER TABLE events_log RENAME TO events_log_offline")
    for n in range(4):
        page.evaluate(f"evothesis.track('{event_type}', {{n: {n}}})")
    page.evaluate("evothesis.flush()")
    page.wait_for_timeout(wait_ms)
    pending = int(page.evaluate("evothesis.getStats().batches_pending"))
    db.execute("ALTER TABLE events_log_offline RENAME TO events_log")
    return pending


def assert_tracked_once(db: Any, event_type: str) -> None:
    rows = wait_for_rows(db, f"event_type = '{event_type}'", 4)
    assert sorted(r[5]["eventData"]["n"] for r in rows) == [0, 1, 2, 3], "lost or duplicated"


def test_collector_answering_503_for_a_while_loses_nothing(
    start_collector: Callable[..., RunningCollector], db: Any, page: Page
) -> None:
    # Without a spool, a failing database is a 503: the tracker's retries are what count.
    collector = start_collector(SPOOL_MAX_BYTES=0)
    # /collect answers 503 with Retry-After, and the tracker keeps the batches.
    assert track_while_the_table_is_offline(collector, db, page, "during_503", wait_ms=1500) >= 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not page.evaluate("evothesis.flush()"):
        time.sleep(0.5)
    assert_tracked_once(db, "during_503")


def test_with_the_spool_a_database_outage_is_invisible_to_the_page(
    collector: RunningCollector, db: Any, page: Page
) -> None:
    # 202: accepted into the spool, nothing left pending in the page.
    assert (
        track_while_the_table_is_offline(collector, db, page, "while_spooling", wait_ms=1000) == 0
    )
    assert_tracked_once(db, "while_spooling")  # replayed from disk
