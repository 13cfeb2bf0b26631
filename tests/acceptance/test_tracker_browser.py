"""The tracker in Debian's Chromium, end to end: demo pages served by a real collector on
127.0.0.1, events stored in PostgreSQL, and exactly what arrived in events_log asserted.

Pages are loaded from http://localhost:<port>/ because the demo's siteId is
location.hostname and the collector's default site map is localhost=client_test.
Nothing is mocked: no route interception, no fake /collect.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from psycopg.rows import dict_row

from tests.support.servers import RunningCollector

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"

pytestmark = pytest.mark.browser

Row = dict[str, Any]

#: Values typed into the contact form; none of them may reach the database.
TYPED_NAME = "secret-value-XYZ"
TYPED_EMAIL = "jane.private-4821@example.org"
TYPED_MESSAGE = "confidential-message-QRS 4111 1111 1111 1111"

#: Makes every EvothesisConfig the page assigns honour Do Not Track, keeping the rest.
HONOUR_DNT_CONFIG = """
(() => {
    let config;
    Object.defineProperty(window, 'EvothesisConfig', {
        configurable: true,
        get: () => config,
        set: (value) => { config = Object.assign({}, value, {honour_dnt: true}); },
    });
})();
"""

#: A browser whose visitor asks not to be tracked (DNT and Global Privacy Control).
DNT_SIGNALS = """
Object.defineProperty(Navigator.prototype, 'doNotTrack', {configurable: true, get: () => '1'});
Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {
    configurable: true, get: () => true,
});
"""


# ---- helpers ---------------------------------------------------------------------------


def site_url(collector: RunningCollector, path: str = "/") -> str:
    """The collector's address under the host name the demo's siteId is registered for."""
    return collector.url.replace("127.0.0.1", "localhost", 1) + path


def fetch_rows(db: psycopg.Connection[Any]) -> list[Row]:
    with db.cursor(row_factory=dict_row) as cursor:
        return cursor.execute("SELECT * FROM events_log ORDER BY id").fetchall()


def wait_for_rows(
    db: psycopg.Connection[Any],
    done: Callable[[list[Row]], bool],
    what: str,
    timeout: float = 15,
) -> list[Row]:
    """Poll events_log until ``done(rows)``; fail with what did arrive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        rows = fetch_rows(db)
        if done(rows):
            return rows
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; arrived: {type_counts(rows)}")
        time.sleep(0.05)


def type_counts(rows: list[Row]) -> dict[str, int]:
    return dict(Counter(row["event_type"] for row in rows))


def inner(rows: list[Row]) -> list[Row]:
    return [row for row in rows if row["event_type"] != "batch"]


def of_type(rows: list[Row], event_type: str) -> list[Row]:
    return [row for row in rows if row["event_type"] == event_type]


def data(row: Row) -> dict[str, Any]:
    return dict(row["raw_event_data"].get("eventData") or {})


def load_tracker(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("window.evothesis !== undefined && !!window.evothesis.getStats")


def tracked(page: Page) -> int:
    """Events the tracker has accepted so far on this page (queued or sent)."""
    return int(page.evaluate("(s => s.events_queued + s.events_sent)(evothesis.getStats())"))


def wait_tracked(page: Page, count: int, timeout: float = 5000) -> None:
    page.wait_for_function(
        "n => (s => s.events_queued + s.events_sent >= n)(evothesis.getStats())",
        arg=count,
        timeout=timeout,
    )


def flush(page: Page) -> bool:
    """evothesis.flush(): true once nothing is left unsent (the collector answered 2xx)."""
    return bool(page.evaluate("evothesis.flush()"))


def select_quote(page: Page) -> int:
    """Select the demo's #quote paragraph the way a drag would; returns its length."""
    return int(
        page.evaluate(
            """() => {
            const range = document.createRange();
            range.selectNodeContents(document.getElementById('quote'));
            const selection = window.getSelection();
            selection.removeAllRanges();
            selection.addRange(range);
            return String(selection).length;
        }"""
        )
    )


def scroll_to(page: Page, fraction: float) -> None:
    """Scroll to ``fraction`` of the page and return once the tracker has measured it: it
    checks at most 200 ms after a scroll event, so wait for 250 ms without scroll events
    (a page timer, so it runs after the tracker's even when the machine is slow)."""
    page.evaluate(
        """f => new Promise(resolve => {
            const target = Math.round(
                (document.documentElement.scrollHeight - innerHeight) * f);
            let timer = 0;
            const quiet = () => {
                clearTimeout(timer);
                timer = setTimeout(() => {
                    removeEventListener('scroll', quiet);
                    resolve();
                }, 250);
            };
            addEventListener('scroll', quiet, {passive: true});
            // Already there (no scroll event will come), or never scrolled: stop waiting.
            if (Math.abs(scrollY - target) < 1) quiet();
            setTimeout(() => { if (!timer) quiet(); }, 2000);
            window.scrollTo(0, target);
        })""",
        fraction,
    )


def assert_batches_match_their_events(rows: list[Row]) -> None:
    """Each request stores one envelope row plus its inner events, all with the same
    created_at (the request's arrival): the envelope's eventCount must match them."""
    requests: dict[Any, list[Row]] = {}
    for row in rows:
        requests.setdefault(row["created_at"], []).append(row)
    for group in requests.values():
        [envelope] = of_type(group, "batch")
        events = inner(group)
        assert envelope["raw_event_data"]["eventCount"] == len(events) > 0
        assert "events" not in envelope["raw_event_data"]
        assert {e["session_id"] for e in events} == {envelope["session_id"]}
        assert {e["visitor_id"] for e in events} == {envelope["visitor_id"]}


# ---- fixtures --------------------------------------------------------------------------


class Watched:
    """A page plus what the browser reported while it ran."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.errors: list[str] = []
        self.console: list[str] = []
        self.requests: list[str] = []
        self.page = self.watch(context.new_page())

    def watch(self, page: Page) -> Page:
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda message: self.console.append(message.text))
        page.on("request", lambda request: self.requests.append(request.url))
        return page

    def collect_requests(self) -> list[str]:
        return [url for url in self.requests if urlsplit(url).path == "/collect"]

    def check(self) -> None:
        assert self.errors == [], f"exceptions reached the page: {self.errors}"
        hosts = {urlsplit(url).hostname for url in self.requests if url.startswith("http")}
        assert hosts <= {"localhost"}, f"traffic left the collector's host: {hosts}"


@pytest.fixture
def new_watched(browser: Browser) -> Iterator[Callable[..., Watched]]:
    """Factory for isolated browser contexts (own storage), each checked at teardown."""
    opened: list[Watched] = []

    def new(*init_scripts: str) -> Watched:
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        for script in init_scripts:
            context.add_init_script(script)
        watched = Watched(context)
        opened.append(watched)
        return watched

    yield new
    for watched in opened:
        watched.context.close()
    for watched in opened:
        watched.check()


@pytest.fixture
def watched(new_watched: Callable[..., Watched]) -> Watched:
    return new_watched()


# ---- tests -----------------------------------------------------------------------------


def test_a_visit_arrives_complete_attributed_and_batched(
    collector: RunningCollector, db: psycopg.Connection[Any], watched: Watched
) -> None:
    page = watched.page
    load_tracker(page, site_url(collector, "/"))
    wait_tracked(page, 1)  # the page view

    page.click("#evo-flush")  # inside data-evothesis-ignore: flushes, is not recorded
    page.click("h1")
    wait_tracked(page, 2)

    page.mouse.move(500, 400)
    page.mouse.wheel(0, 20000)  # to the bottom: 25, 50, 75 and 100 percent at once
    wait_tracked(page, 6)
    scroll_to(page, 0.4)
    scroll_to(page, 1.0)  # milestones are recorded once per page
    scroll_to(page, 0.0)

    selected = select_quote(page)
    wait_tracked(page, 7)  # text_selection, once the selection has settled
    page.keyboard.press("Control+C")
    wait_tracked(page, 8)

    page.click("#spa-pricing")  # history.pushState: page_exit + a virtual page view
    page.wait_for_url("**/index.html?view=pricing")
    wait_tracked(page, 11)
    page.evaluate("evothesis.track('signup_started', {plan: 'pro', seats: 3})")
    assert tracked(page) == 12
    assert flush(page) is True

    page.goto("about:blank")  # leaves the page: page_exit goes out with sendBeacon
    rows = wait_for_rows(
        db,
        lambda rows: (
            len(of_type(rows, "page_exit")) >= 2 and len(of_type(rows, "visibility_change")) >= 1
        ),
        "the beaconed page_exit and visibility_change",
    )

    events = inner(rows)
    assert Counter(row["event_type"] for row in events) == {
        "pageview": 2,
        "click": 2,
        "scroll": 4,
        "text_selection": 1,
        "copy": 1,
        "page_exit": 2,
        "signup_started": 1,
        "visibility_change": 1,
    }
    assert sorted(data(row)["depth"] for row in of_type(rows, "scroll")) == [25, 50, 75, 100]

    first, second = of_type(rows, "pageview")
    assert (first["path"], urlsplit(first["url"]).query) == ("/", "")
    assert (second["path"], urlsplit(second["url"]).query) == ("/index.html", "view=pricing")
    assert second["referrer"] == first["url"]
    assert data(second)["title"] == "Evothesis demo — Pricing"

    heading, tab = of_type(rows, "click")
    assert data(heading) == {"tag": "h1", "element": "h1", "text": "Own your analytics"}
    assert data(tab)["id"] == "spa-pricing"
    assert data(tab)["href"].endswith("/index.html?view=pricing")

    assert data(of_type(rows, "text_selection")[0]) == {"length": selected}
    assert data(of_type(rows, "copy")[0]) == {"length": selected}
    assert data(of_type(rows, "signup_started")[0]) == {"plan": "pro", "seats": 3}
    assert data(of_type(rows, "visibility_change")[0]) == {"state": "hidden"}
    left_spa, left_page = of_type(rows, "page_exit")
    assert data(left_spa)["reason"] == "navigation"
    assert data(left_spa)["maxScrollDepth"] == 100
    assert left_spa["path"] == "/"
    # Leaving a document fires pagehide before the visibilitychange to hidden.
    assert data(left_page)["reason"] == "unload"
    assert data(left_page)["maxScrollDepth"] == 0
    assert urlsplit(left_page["url"]).query == "view=pricing"

    # Attribution comes from the collector's site map; identity from first-party storage.
    assert {row["client_id"] for row in rows} == {"client_test"}
    assert {row["site_id"] for row in rows} == {"localhost"}
    [visitor] = {row["visitor_id"] for row in rows}
    [session] = {row["session_id"] for row in rows}
    assert visitor.startswith("vis_") and session.startswith("sess_")
    assert len({row["event_id"] for row in rows}) == len(rows)
    assert {str(row["ip_address"]) for row in rows} == {"127.0.0.1"}
    assert all("Chrome" in row["user_agent"] for row in rows)

    # At least: the #evo-flush button's, one or more for the rest (size, timer or explicit
    # flush decide), and one beacon each for pagehide and visibilitychange on leaving.
    assert len(of_type(rows, "batch")) >= 4
    assert_batches_match_their_events(rows)

    # Selections and copies are lengths only.
    quote = "never the text itself"
    assert not any(quote in json.dumps(row["raw_event_data"]) for row in rows)
    assert any("Analytics pixel loaded for client: client_test" in m for m in watched.console)


def test_form_events_carry_field_names_never_values(
    collector: RunningCollector, db: psycopg.Connection[Any], watched: Watched
) -> None:
    page = watched.page
    load_tracker(page, site_url(collector, "/contact.html"))

    page.focus("#name")  # keyboard-style focus: form_focus, no click
    page.keyboard.type(TYPED_NAME)
    page.click("#email")  # click-to-focus: click + form_focus
    page.keyboard.type(TYPED_EMAIL)
    page.keyboard.press("Tab")  # on to the message
    page.keyboard.type(TYPED_MESSAGE)
    page.click("#send")  # click + form_submit
    page.wait_for_function("document.getElementById('form-status').textContent !== ''")
    wait_tracked(page, 7)
    assert flush(page) is True

    rows = wait_for_rows(db, lambda rows: len(inner(rows)) >= 7, "the form events")
    events = inner(rows)
    assert Counter(row["event_type"] for row in events) == {
        "pageview": 1,
        "click": 2,
        "form_focus": 3,
        "form_submit": 1,
    }
    assert [data(row) for row in of_type(rows, "form_focus")] == [
        {"formId": "contact-form", "field": "name", "fieldType": "text"},
        {"formId": "contact-form", "field": "email", "fieldType": "email"},
        {"formId": "contact-form", "field": "message", "fieldType": "textarea"},
    ]
    [submit] = of_type(rows, "form_submit")
    assert data(submit) == {
        "formId": "contact-form",
        "fields": [
            {"name": "name", "type": "text"},
            {"name": "email", "type": "email"},
            {"name": "message", "type": "textarea"},
        ],
    }
    email_click, send_click = of_type(rows, "click")
    assert "text" not in data(email_click)  # an input's click carries no value
    assert data(send_click)["text"] == "Send message"
    assert {row["client_id"] for row in rows} == {"client_test"}
    assert_batches_match_their_events(rows)

    # Whole rows as text: every column, raw_event_data included.
    with db.cursor() as cursor:
        dump = " ".join(
            text for (text,) in cursor.execute("SELECT events_log::text FROM events_log")
        )
    assert str(submit["event_id"]) in dump  # the dump really holds the rows
    # Markers are long enough never to occur by chance inside ids, hashes or timestamps.
    for secret in (
        TYPED_NAME,
        "value-XYZ",
        TYPED_EMAIL,
        "jane.private",
        "example.org",
        TYPED_MESSAGE,
        "confidential",
        "4111 1111",
        "4111%201111",
    ):
        assert secret.lower() not in dump.lower(), f"{secret!r} reached the database"
    # Nor do they wait in the browser's storage.
    storage = page.evaluate("JSON.stringify(Object.assign({}, localStorage)) + document.cookie")
    for secret in ("value-XYZ", "jane.private", "confidential", "4111 1111"):
        assert secret not in storage, f"{secret!r} was kept in the browser"


def test_do_not_track_visitors_cause_no_rows_when_honoured(
    collector: RunningCollector, db: psycopg.Connection[Any], new_watched: Callable[..., Watched]
) -> None:
    silent = new_watched(HONOUR_DNT_CONFIG, DNT_SIGNALS)
    page = silent.page
    load_tracker(page, site_url(collector, "/"))
    assert page.evaluate("[navigator.doNotTrack, navigator.globalPrivacyControl]") == ["1", True]
    assert page.evaluate("EvothesisConfig") == {
        "client_id": "client_test",
        "endpoint": "/collect",
        "batch_size": 10,
        "flush_interval": 2000,
        "honour_dnt": True,
    }
    page.click("h1")
    page.mouse.move(500, 400)
    page.mouse.wheel(0, 20000)
    page.click("#spa-faq")
    page.evaluate("evothesis.track('should_not_arrive', {n: 1})")
    select_quote(page)
    page.wait_for_timeout(2200)  # longer than the demo's flush_interval (2 s)
    assert flush(page) is True
    stats = page.evaluate("evothesis.getStats()")
    assert stats["events_sent"] == stats["events_queued"] == 0
    # Silenced, the tracker installs no listeners; only the explicit track() was refused.
    assert stats["events_dropped"] == 1
    # No storage at all: no visitor id, no session, no outbox.
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    load_tracker(page, site_url(collector, "/contact.html"))
    page.click("#name")
    page.keyboard.type(TYPED_NAME)
    page.click("#send")
    assert flush(page) is True
    page.goto("about:blank")  # pagehide: the moment a beacon would go out
    page.wait_for_timeout(300)
    assert silent.collect_requests() == []
    time.sleep(0.5)
    assert fetch_rows(db) == []

    # Control: the same configuration without the visitor's signals is tracked, so the
    # silence above comes from DNT/GPC and not from a broken page.
    control = new_watched(HONOUR_DNT_CONFIG).page
    load_tracker(control, site_url(collector, "/"))
    assert flush(control) is True
    rows = wait_for_rows(db, lambda rows: len(of_type(rows, "pageview")) == 1, "the control")
    assert type_counts(rows) == {"batch": 1, "pageview": 1}
    visitor = control.evaluate("localStorage.getItem('evo_vid')")
    assert {row["visitor_id"] for row in rows} == {visitor}


def test_events_from_a_collector_outage_arrive_exactly_once(
    start_collector: Callable[..., RunningCollector],
    db: psycopg.Connection[Any],
    watched: Watched,
) -> None:
    page = watched.page
    first = start_collector()
    load_tracker(page, site_url(first, "/"))
    assert flush(page) is True
    wait_for_rows(db, lambda rows: len(of_type(rows, "pageview")) == 1, "the first page view")

    first.stop()
    page.click("h1")
    page.mouse.move(500, 400)
    page.mouse.wheel(0, 20000)
    wait_tracked(page, 6)
    assert flush(page) is False  # connection refused: the batch stays
    for n in range(3):
        page.evaluate(f"evothesis.track('during_outage', {{n: {n}}})")
    assert flush(page) is False
    stats = page.evaluate("evothesis.getStats()")
    assert (stats["batches_pending"], stats["events_queued"], stats["events_sent"]) == (2, 8, 1)

    stored = page.evaluate("JSON.parse(localStorage.getItem('evo_outbox'))")
    outage = [event for envelope in stored for event in envelope["events"]]
    assert Counter(event["eventType"] for event in outage) == {
        "click": 1,
        "scroll": 4,
        "during_outage": 3,
    }
    assert len(fetch_rows(db)) == 2  # only what arrived before the outage
    # Back to the top, so the reload's scroll restoration records no new milestones.
    scroll_to(page, 0.0)

    port = urlsplit(first.url).port
    second = start_collector(port=port)
    assert second.url == first.url
    # The visitor comes back: the new page view sends what the last one could not.
    page.reload()
    page.wait_for_function("window.evothesis !== undefined && !!window.evothesis.getStats")
    deadline = time.monotonic() + 20
    while not flush(page):
        assert time.monotonic() < deadline, "the stored batches were never accepted"
        page.wait_for_timeout(200)
    assert page.evaluate("localStorage.getItem('evo_outbox')") is None

    outage_ids = {event["eventId"] for event in outage}
    rows = wait_for_rows(
        db,
        lambda rows: (
            outage_ids <= {str(row["event_id"]) for row in rows} and len(inner(rows)) >= 12
        ),
        "the events from the outage",
    )
    arrived = [row for row in rows if str(row["event_id"]) in outage_ids]
    assert len(arrived) == len(outage) == 8  # exactly once each
    assert Counter(row["event_type"] for row in arrived) == {
        "click": 1,
        "scroll": 4,
        "during_outage": 3,
    }
    assert sorted(data(row)["n"] for row in of_type(arrived, "during_outage")) == [0, 1, 2]
    assert sorted(data(row)["depth"] for row in of_type(arrived, "scroll")) == [25, 50, 75, 100]
    assert len({row["event_id"] for row in rows}) == len(rows)
    # The page left during the outage reported its exit too, after the reload, and the
    # reloaded page its own view: nothing else arrived, nothing twice.
    assert type_counts(rows) == {
        "batch": 6,  # one before the outage, two during it, two on unload, one after
        "pageview": 2,
        "click": 1,
        "scroll": 4,
        "during_outage": 3,
        "page_exit": 1,
        "visibility_change": 1,
    }
    [unload_exit] = of_type(rows, "page_exit")
    assert data(unload_exit)["reason"] == "unload"
    assert {row["session_id"] for row in rows} == {rows[0]["session_id"]}
    assert_batches_match_their_events(rows)


def test_screenshot_of_the_demo_after_interaction(
    collector: RunningCollector, db: psycopg.Connection[Any], watched: Watched
) -> None:
    page = watched.page
    load_tracker(page, site_url(collector, "/"))
    page.click("#spa-faq")
    select_quote(page)
    wait_tracked(page, 5)  # pageview, click, page_exit, pageview, text_selection
    assert flush(page) is True
    # The demo's stats panel refreshes every 500 ms.
    page.wait_for_function(
        "document.getElementById('evo-stats').textContent.includes('\"events_sent\": 5')"
    )
    wait_for_rows(db, lambda rows: len(inner(rows)) == 5, "the screenshot page's events")

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "demo.png"
    screenshot.unlink(missing_ok=True)
    page.screenshot(path=str(screenshot))
    content = screenshot.read_bytes()
    assert content.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(content) > 10_000


def test_tracker_size_is_within_budget() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "tracker-size")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gzipped" in result.stdout
