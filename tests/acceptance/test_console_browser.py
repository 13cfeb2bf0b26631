"""The operations console in Debian's Chromium, walked as an operator walks it: sign in,
create a client with two domains, paste its tag into a page of its site, watch the event
arrive (Install, Live events), export and deliver it (Pipeline), break and fix its
destination, answer a data-subject request, read the usage, sign out. And the ways in
that must stay shut: no session, a wrong token, a forged CSRF token, an expired session,
a client that does not exist.

Everything is real: a collector on 127.0.0.1, PostgreSQL, a moto S3 server for every
bucket (the client's own included), a page of the client's site served over HTTP under a
name of its own (``*.console.test``, mapped to loopback by the browser fixture). What each
page shows is checked against the JSON endpoints and the database, not only its text.
Full-page screenshots of every page, at 1280 px and at a phone's width, are written to
``artifacts/console/`` (ignored by git).
"""

from __future__ import annotations

import csv
import hashlib
import http.server
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, expect

from tests.support.loopback import free_port
from tests.support.s3 import S3, Buckets, client_credentials, run_services, s3_environment
from tests.support.servers import OPERATOR_TOKEN, RunningCollector

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "console"
ADMIN = "console-admin-token"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
#: The client's sites: one exact domain and one wildcard (the browser maps them to 127.0.0.1).
SHOP = "shop.console.test"
BLOG_WILDCARD = "*.blog.console.test"
BLOG_PAGE_HOST = "www.blog.console.test"


# ---- helpers ---------------------------------------------------------------------------


class SitePages:
    """A client's web site: a folder served over HTTP on 127.0.0.1."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        handler = partial(_QuietHandler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Operator:
    """A browser context signed in (or not) to one collector's console, with what the
    pages reported while it ran."""

    def __init__(self, context: BrowserContext, base: str) -> None:
        self.context = context
        self.base = base
        self.errors: list[str] = []
        self.page = context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", self._accept)

    @staticmethod
    def _accept(dialog: Dialog) -> None:
        dialog.accept()

    def open(self, path: str) -> Page:
        """A console page, once its script has built it."""
        self.page.goto(self.base + path)
        self.ready()
        return self.page

    def ready(self) -> None:
        self.page.wait_for_selector('#page[aria-busy="false"]')

    def sign_in(self, token: str, path: str = "/console/login") -> None:
        """With the keyboard only: the token field has the focus, Enter submits."""
        self.page.goto(self.base + path)
        expect(self.page.get_by_label("Token")).to_be_focused()
        self.page.keyboard.type(token)
        self.page.keyboard.press("Enter")

    def fetch(self, method: str, path: str, body: Any = None, csrf: str | None = None) -> Any:
        """A request from inside the page (with its cookies), as a script of it would."""
        return self.page.evaluate(
            """async ([method, path, body, csrf]) => {
                const headers = {'Content-Type': 'application/json'};
                if (csrf !== null) headers['X-CSRF-Token'] = csrf;
                const response = await fetch(path, {method, headers,
                    body: body === null ? undefined : JSON.stringify(body)});
                return {status: response.status, body: await response.json().catch(() => null)};
            }""",
            [method, path, body, csrf],
        )

    def csrf_token(self) -> str:
        context = json.loads(self.page.locator("#console-context").text_content() or "{}")
        return str(context["csrf_token"])

    def session_cookie(self) -> dict[str, Any] | None:
        return next((c for c in self.context.cookies() if c["name"] == "evothesis_console"), None)

    def capture(self, name: str) -> None:
        """Full-page screenshots at 1280 px and at a phone's width; on the phone the page
        must not scroll sideways (wide tables scroll inside their own region)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page = self.page
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        page.set_viewport_size(PHONE)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} is {overflow}px wider than a phone's screen"
        page.screenshot(path=str(ARTIFACTS / f"{name}-phone.png"), full_page=True)
        page.set_viewport_size(DESKTOP)


@pytest.fixture
def console(
    start_collector: Callable[..., RunningCollector], s3: S3, buckets: Buckets
) -> RunningCollector:
    """A collector outside development, both tokens set, every bucket on moto."""
    return start_collector(**s3_environment(s3, buckets), EVOTHESIS_ADMIN_TOKEN=ADMIN)


@pytest.fixture
def new_operator(browser: Browser) -> Iterator[Callable[[RunningCollector], Operator]]:
    opened: list[Operator] = []

    def new(collector: RunningCollector) -> Operator:
        context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=collector.url)
        operator = Operator(context, collector.url)
        opened.append(operator)
        return operator

    yield new
    for operator in opened:
        operator.context.close()
    for operator in opened:
        assert operator.errors == [], f"exceptions reached the console: {operator.errors}"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SitePages]:
    folder = tmp_path / "site"
    folder.mkdir()
    pages = SitePages(folder)
    yield pages
    pages.stop()


@pytest.fixture
def visitor(browser: Browser) -> Iterator[BrowserContext]:
    """A visitor of the client's sites: a browser of their own, not the operator's (whose
    console page then stays the one in front, rendered at full speed)."""
    context = browser.new_context()
    yield context
    context.close()


def admin_api(collector: RunningCollector) -> httpx.Client:
    return httpx.Client(
        base_url=collector.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN}"}
    )


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def empty_bucket(s3: S3, bucket: str) -> None:
    for key in s3.keys(bucket):
        s3.client.delete_object(Bucket=bucket, Key=key)
    s3.client.delete_bucket(Bucket=bucket)


# ---- the walk --------------------------------------------------------------------------


def test_an_operator_runs_the_platform_from_the_console(
    browser: Browser,
    start_collector: Callable[..., RunningCollector],
    new_operator: Callable[[RunningCollector], Operator],
    site: SitePages,
    visitor: BrowserContext,
    s3: S3,
    buckets: Buckets,
    db: psycopg.Connection[Any],
    database_url: str,
) -> None:
    # With its raw export schedule (hourly: its first round at start-up, the rest on
    # demand); the client delivers daily, so nothing is delivered but on demand either.
    console = start_collector(
        **s3_environment(s3, buckets),
        EVOTHESIS_ADMIN_TOKEN=ADMIN,
        EXPORT_IN_SERVE=True,
        EXPORT_INTERVAL="1h",
    )
    operator = new_operator(console)
    page = operator.page
    destination = s3.new_bucket("acme")

    # No session: any page sends to sign-in, and back after it.
    page.goto(console.url + "/console/pipeline")
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/pipeline$"))
    expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
    operator.capture("login")
    page.keyboard.type(ADMIN)
    page.keyboard.press("Enter")
    expect(page).to_have_url(console.url + "/console/pipeline")
    operator.ready()
    cookie = operator.session_cookie()
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Strict", True)

    # Clients: create one with two domains and its own destination, from the generic form.
    operator.open("/console/clients")
    expect(page.get_by_role("link", name="client_test")).to_be_visible()
    operator.capture("clients")
    page.get_by_label("Client id").fill("client_acme")
    page.get_by_label("Name", exact=True).fill("Acme Corp")
    page.get_by_label("Privacy level").select_option("gdpr")
    page.get_by_label("Export destination").fill(f"s3://{destination}")
    page.get_by_label("Export format").select_option("csv")
    page.get_by_label("Delivery schedule").fill("daily")
    page.get_by_label("Export credentials").fill(
        "\n".join(f"{key}={value}" for key, value in client_credentials(s3).items())
    )
    page.get_by_label("Domains").fill(f"{SHOP}\n{BLOG_WILDCARD}")
    page.get_by_role("button", name="Create client").click()
    write_key = page.get_by_label("Write key", exact=True).input_value()
    assert write_key.startswith("wk_")
    stored = db.execute(
        "SELECT write_key_sha256, privacy_level, export_format, export_destination, "
        "export_schedule FROM clients WHERE client_id = 'client_acme'"
    ).fetchone()
    assert stored == (
        hashlib.sha256(write_key.encode()).hexdigest(),
        "gdpr",
        "csv",
        f"s3://{destination}",
        "daily",
    )
    created = page.get_by_role("row", name=re.compile("client_acme"))
    expect(created).to_contain_text("gdpr")
    expect(created).to_contain_text("daily")
    # The development client delivers in real time (its own schedule).
    expect(page.get_by_role("row", name=re.compile("client_test"))).to_contain_text("real-time")
    operator.capture("clients-created")

    # Settings: change one, and test the destination (a real write and delete on moto).
    # (The delivery threshold and the webhook are settings like the others; the webhook's
    # address refuses connections, so its notices fail quietly.)
    operator.open("/console/clients/client_acme")
    page.get_by_label("Name", exact=True).fill("Acme Corporation")
    page.get_by_label("Delivery threshold").fill("5000")
    page.get_by_label("Notification webhook").fill("http://127.0.0.1:9/evothesis")
    page.get_by_label("Notification secret").fill("whsec_console_walk_secret")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status").first).to_contain_text(
        "Saved: name, export_threshold, notify_url, notify_secret."
    )
    expect(page.locator("dd", has_text="127.0.0.1:9")).to_have_text(
        "http://127.0.0.1:9/evothesis (signed)"
    )
    with admin_api(console) as api:
        saved = api.get("/api/v1/clients/client_acme").json()
    assert (saved["name"], saved["export_threshold"], saved["has_notify_secret"]) == (
        "Acme Corporation",
        5000,
        True,
    )
    assert "notify_secret" not in saved
    page.get_by_role("button", name="Test destination").click()
    expect(page.locator(".probe")).to_contain_text(f"s3://{destination}")
    expect(page.locator(".probe")).to_contain_text("The destination works")
    assert s3.keys(destination) == []  # written and deleted again
    operator.capture("client")

    # Domains: the wildcard rules beside the input; add one, refuse a bad one, remove one.
    operator.open("/console/clients/client_acme/domains")
    expect(page.get_by_role("row", name=re.compile(re.escape(BLOG_WILDCARD)))).to_contain_text(
        "every subdomain of blog.console.test"
    )
    page.get_by_label("Domain", exact=True).fill("*.com")
    page.get_by_role("button", name="Add domain").click()
    expect(page.get_by_role("alert")).to_contain_text("not a top-level domain")
    page.get_by_label("Domain", exact=True).fill("https://Old.Console.Test:8443/x")
    page.get_by_role("button", name="Add domain").click()
    expect(page.get_by_role("cell", name="old.console.test")).to_be_visible()
    page.get_by_role("button", name="Remove old.console.test").click()
    expect(page.get_by_role("cell", name="old.console.test")).to_have_count(0)
    expect(page.get_by_role("row")).to_have_count(3)  # the header and the two domains
    operator.capture("domains")

    # Install: copy the tag into a page of the client's site; the check turns green.
    operator.open("/console/clients/client_acme/install")
    expect(page.locator(".first-event")).to_contain_text("Waiting for the first event from")
    operator.capture("install-waiting")
    page.get_by_role("button", name="Copy script tag").click()
    expect(page.get_by_role("status").first).to_contain_text("Script tag copied")
    tag = page.evaluate("navigator.clipboard.readText()")
    assert tag == f'<script src="{console.url}/pixel/client_acme/tracking.js" async></script>'
    # Seed 001's tag, the generic tracker at the seeds' path.
    generic = page.get_by_label("Seed 001's tag (generic tracker)").input_value()
    assert generic == f'<script src="{console.url}/js/tracking.js"></script>'
    # This collector has the image pixel (GET /collect in its schema): its snippet too.
    assert page.get_by_label("No-JavaScript pixel").input_value() == (
        f'<noscript><img src="{console.url}/collect?eventType=pageview&amp;siteId={SHOP}" '
        'width="1" height="1" alt=""></noscript>'
    )
    (site.folder / "index.html").write_text(
        f"<!doctype html><html><head><title>Acme blog</title>{tag}</head>"
        "<body><h1>The Acme blog</h1></body></html>"
    )
    visitor_page = visitor.new_page()
    visitor_page.goto(site.url(BLOG_PAGE_HOST))
    expect(page.locator(".first-event")).to_contain_text(
        f"arrived from {BLOG_PAGE_HOST}", timeout=20_000
    )
    operator.capture("install-received")
    # The generic tag and the pixel, pasted into a page of the exact domain: a browser
    # without JavaScript sends the pixel's page view, one with JavaScript the tracker's.
    pixel = page.get_by_label("No-JavaScript pixel").input_value()
    (site.folder / "shop.html").write_text(
        f"<!doctype html><title>Shop</title>{generic}<body>{pixel}"
    )
    shop_views = {"client_id": "client_acme", "site_id": SHOP, "event_type": "pageview"}
    without_js = browser.new_context(java_script_enabled=False)
    try:
        without_js.new_page().goto(site.url(SHOP, "/shop.html"))
        with admin_api(console) as api:
            wait_until(
                lambda: len(api.get("/events/recent", params=shop_views).json()) == 1,
                "the pixel's page view",
            )
    finally:
        without_js.close()
    # (The generic tracker sends its first batch after 5 s: it arrives during Live events.)
    shop_page = visitor.new_page()
    shop_page.goto(site.url(SHOP, "/shop.html"))

    # Live events: the stored row, exactly as /events/recent answers it (the IP hashed).
    with admin_api(console) as api:
        [event] = api.get(
            "/events/recent",
            params={
                "client_id": "client_acme",
                "site_id": BLOG_PAGE_HOST,
                "event_type": "pageview",
            },
        ).json()
    assert (event["event_type"], event["site_id"], event["source"]) == (
        "pageview",
        BLOG_PAGE_HOST,
        "browser",
    )
    assert event["ip_address"] not in (None, "127.0.0.1")  # gdpr: a keyed hash
    operator.open("/console/live")
    page.get_by_label("Client").select_option("client_acme")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"client_id=client_acme"))
    row = page.locator(f'tr[data-event-id="{event["event_id"]}"]')
    expect(row).to_contain_text(BLOG_PAGE_HOST)
    row.get_by_text("Stored row").click()
    assert json.loads(row.locator("pre").text_content() or "") == event
    operator.capture("live")
    with admin_api(console) as api:
        wait_until(
            lambda: len(api.get("/events/recent", params=shop_views).json()) == 2,
            "the generic tracker's page view",
        )
    shop_page.close()

    # Pipeline: export and deliver it; the client's own bucket gets its CSV file.
    operator.open("/console/pipeline")
    page.get_by_role("button", name="Export now").click()
    expect(page.get_by_role("status").first).to_contain_text("exported in 1 batch(es)")
    page.get_by_role("button", name="Process now").click()
    expect(page.get_by_role("status").first).to_contain_text("delivered in")
    deliveries = page.get_by_role("region", name="Deliveries per client")
    acme_row = deliveries.get_by_role("row", name=re.compile("client_acme"))
    expect(acme_row).to_contain_text("Up to date")
    expect(acme_row).to_contain_text("daily")
    with admin_api(console) as api:
        [acme] = [
            c
            for c in api.get("/process/status").json()["clients"]
            if c["client_id"] == "client_acme"
        ]
    assert acme["next_delivery_at"].endswith("T00:00:00+00:00")  # the next midnight, UTC
    [data_file] = [key for key in s3.keys(destination) if key.endswith(".csv")]
    assert data_file.startswith("processed-events/client_acme/")
    assert data_file.endswith("/delivery-000000000001.csv")  # a manual delivery, numbered
    # The export schedule as the database records it: this collector runs it.
    with admin_api(console) as api:
        scheduler = api.get("/pipeline/status").json()["scheduler"]
    [runner] = scheduler["runners"]
    schedule = page.get_by_role("region", name="Running schedulers")
    expect(schedule.locator(f'tr[data-key="{runner["runner"]}"]')).to_contain_text("collector")
    expect(schedule).to_contain_text("60 min")
    expect(page.locator("dd", has_text="runner(s)")).to_contain_text("Running 1 runner(s)")
    expect(page.locator("dd", has_text="on schedule")).to_contain_text(
        f"by {runner['runner']} (collector)"
    )
    operator.capture("pipeline")

    # Its destination goes away: the next delivery fails, the client is paused with the
    # store's error, word for word as /process/status has it.
    empty_bucket(s3, destination)
    visitor_page.reload()
    with admin_api(console) as api:
        views = {"site_id": BLOG_PAGE_HOST, "event_type": "pageview"}
        wait_until(
            lambda: len(api.get("/events/recent", params=views).json()) == 2,
            "the second page view",
        )
    operator.open("/console/pipeline")
    page.get_by_role("button", name="Export now").click()
    expect(page.get_by_role("status").first).to_contain_text("exported in 1 batch(es)")
    page.get_by_role("button", name="Process now").click()
    expect(page.get_by_role("alert")).to_contain_text("Processing failed")
    with admin_api(console) as api:
        process = api.get("/process/status").json()
    # Paused for seconds after a first failure: by now it may be "failing" rather than
    # "paused"; either way its delivery waits, with the store's error.
    [acme] = [c for c in process["clients"] if c["client_id"] == "client_acme"]
    assert acme["failing_deliveries"] == 1 and destination in acme["last_error"]
    card = page.locator('li[data-client="client_acme"]')
    expect(card).to_contain_text(re.compile(r"Paused until|1 delivery\(ies\) failing"))
    expect(card.locator("pre")).to_have_text(acme["last_error"])
    operator.capture("pipeline-paused")
    operator.open("/console/clients")
    troubled = page.get_by_role("row", name=re.compile("client_acme"))
    expect(troubled).to_contain_text(re.compile(r"Paused|1 delivery\(ies\) failing"))
    expect(troubled).to_contain_text(f"could not write s3://{destination}/")
    operator.open("/console/clients/client_acme")
    page.get_by_role("button", name="Test destination").click()
    expect(page.locator(".probe .store-error")).to_contain_text(destination)
    operator.capture("client-destination-failing")

    # Failing for longer than EXPORT_DEAD_LETTER_AFTER: the scheduler's sweep (run here with
    # a limit of zero) gives the delivery up, and the page lists it with its error.
    dead = run_services(
        database_url,
        lambda services: services.pipeline.ledger.sweep_failures(notice_after_s=0, dead_after_s=0),
    )
    assert dead == (1, 1)
    operator.open("/console/pipeline")
    letters = page.get_by_role("region", name="Dead letters")
    letter = letters.get_by_role("row", name=re.compile("client_acme"))
    expect(letter).to_contain_text("#2")  # its second delivery
    expect(letter).to_contain_text(f"could not write s3://{destination}/")
    operator.capture("pipeline-dead-letter")

    # Fixed: retry now delivers what waited, at once.
    s3.client.create_bucket(Bucket=destination)
    letter.get_by_role("button", name="Retry client_acme now").click()
    expect(page.get_by_role("status").first).to_contain_text("1 delivery(ies) and 0 replay(s)")
    expect(page.get_by_text("No client is paused or failing")).to_be_visible()
    expect(letters).to_contain_text("No dead letters.")
    assert [key for key in s3.keys(destination) if key.endswith("/delivery-000000000002.csv")]

    # Data-subject request: the visitor's events, downloaded, and the receipt logged.
    visitor = event["visitor_id"]
    operator.open("/console/requests")
    page.get_by_label("Client").select_option("client_acme")
    page.get_by_label("Visitor id").fill(visitor)
    with page.expect_download() as download:
        page.get_by_role("button", name="Export events (download)").click()
    exported = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    stored_ids = {
        str(r[0])
        for r in db.execute(
            "SELECT event_id FROM events_log WHERE client_id = 'client_acme' AND visitor_id = %s",
            (visitor,),
        )
    }
    assert {line["event_id"] for line in exported} == stored_ids
    assert len(stored_ids) >= 4  # two page views, each with its batch envelope
    expect(page.get_by_role("status").first).to_contain_text(f"Exported {len(stored_ids)} event(s)")
    expect(page.get_by_role("region", name="Audit log, newest first")).to_contain_text("export")
    operator.capture("requests")
    # And deleted, after the browser's confirmation (accepted here), with its receipt.
    page.get_by_role("button", name="Delete events…").click()
    expect(page.get_by_role("status").first).to_contain_text("Deleted.")
    receipt = json.loads(page.locator(".receipt pre").text_content() or "")
    assert receipt["client_id"] == "client_acme" and receipt["kind"] == "delete"
    left = db.execute(
        "SELECT count(*) FROM events_log WHERE client_id = 'client_acme' AND visitor_id = %s",
        (visitor,),
    ).fetchone()
    assert left == (0,)
    operator.capture("requests-deleted")

    # Usage: the page's numbers are the billing API's, and so is the CSV.
    operator.open("/console/usage")
    today = db.execute("SELECT (now() AT TIME ZONE 'UTC')::date::text").fetchone()[0]
    with admin_api(console) as api:
        usage = api.get("/billing/usage", params={"from": today, "to": today}).json()
    [acme] = [c for c in usage["clients"] if c["client_id"] == "client_acme"]
    accepted = acme["totals"]["accepted_events"]
    assert accepted >= 2  # both page views (and whatever else the visitor's page sent)
    table = page.get_by_role("region", name="Accepted events per day and client")
    expect(table.get_by_role("row", name=re.compile(today))).to_contain_text(str(accepted))
    expect(page.locator("svg.chart")).to_be_visible()
    expect(page.get_by_text("Reconciled").first).to_be_visible()
    with page.expect_download() as download:
        page.get_by_role("link", name=re.compile(r"Download invoice-")).click()
    lines = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert {line["client_id"]: line["accepted_events"] for line in lines}["client_acme"] == str(
        accepted
    )
    operator.capture("usage")

    # Signing out ends it.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_contain_text("You have signed out")
    assert operator.session_cookie() is None
    page.goto(console.url + "/console/clients")
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/clients$"))


# ---- the ways in that stay shut ---------------------------------------------------------

PAGES = (
    "/console/clients",
    "/console/clients/client_test",
    "/console/clients/client_test/domains",
    "/console/clients/client_test/install",
    "/console/live",
    "/console/pipeline",
    "/console/usage",
    "/console/requests",
)


def test_without_a_session_every_page_sends_to_sign_in_and_back(
    console: RunningCollector, new_operator: Callable[[RunningCollector], Operator]
) -> None:
    operator = new_operator(console)
    page = operator.page
    for path in PAGES:
        page.goto(console.url + path)
        expect(page).to_have_url(f"{console.url}/console/login?next={path}")
    operator.sign_in(ADMIN, f"/console/login?next={PAGES[1]}")
    expect(page).to_have_url(console.url + PAGES[1])
    operator.ready()
    expect(page.get_by_role("heading", name="client_test")).to_be_visible()


def test_a_wrong_token_opens_nothing(
    console: RunningCollector, new_operator: Callable[[RunningCollector], Operator]
) -> None:
    operator = new_operator(console)
    page = operator.page
    operator.sign_in("not-the-token")
    expect(page.get_by_role("alert")).to_have_text(
        "That token is neither EVOTHESIS_ADMIN_TOKEN nor EVOTHESIS_OPERATOR_TOKEN."
    )
    expect(page.get_by_label("Token")).to_have_attribute("aria-invalid", "true")
    operator.capture("login-wrong-token")
    assert operator.session_cookie() is None
    assert operator.fetch("GET", "/api/v1/clients")["status"] == 401
    page.goto(console.url + "/console/clients")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))


def test_a_forged_csrf_token_changes_nothing(
    console: RunningCollector,
    new_operator: Callable[[RunningCollector], Operator],
    db: psycopg.Connection[Any],
) -> None:
    operator = new_operator(console)
    page = operator.page
    operator.sign_in(ADMIN)
    operator.ready()
    body = {"client_id": "client_forged", "name": "Forged"}
    for csrf in (None, "forged", operator.csrf_token()[:-2] + "xx"):
        answer = operator.fetch("POST", "/api/v1/clients", body, csrf)
        assert answer["status"] == 403, csrf
        assert answer["body"]["error"]["code"] == "csrf_rejected"
    for run in ("/export/run", "/process/retry"):
        assert operator.fetch("POST", run, None, "forged")["status"] == 403, run
    assert db.execute(
        "SELECT count(*) FROM clients WHERE client_id = 'client_forged'"
    ).fetchone() == (0,)

    # A page whose token was tampered with: its form says why nothing was saved.
    operator.open("/console/clients/client_test")
    page.evaluate(
        """() => import('/console/assets/api.js').then(m => { m.context.csrf_token = 'forged'; })"""
    )
    page.get_by_label("Name", exact=True).fill("Renamed by a forger")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("alert")).to_contain_text("CSRF token")
    name = db.execute("SELECT name FROM clients WHERE client_id = 'client_test'").fetchone()
    assert name != ("Renamed by a forger",)

    # Signing out needs it too; the real one works.
    form_token = page.locator('form[action="/console/logout"] input[name="csrf"]')
    form_token.evaluate("input => { input.value = 'forged'; }")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("alert")).to_contain_text("did not come from this console")
    assert operator.session_cookie() is not None
    operator.open("/console/clients")
    assert operator.fetch("POST", "/api/v1/clients", body, operator.csrf_token())["status"] == 201


def test_an_expired_session_sends_to_sign_in(
    start_collector: Callable[..., RunningCollector],
    new_operator: Callable[[RunningCollector], Operator],
) -> None:
    collector = start_collector(EVOTHESIS_ADMIN_TOKEN=ADMIN, CONSOLE_SESSION_TTL="3s")
    operator = new_operator(collector)
    page = operator.page
    operator.sign_in(ADMIN, "/console/login?next=/console/pipeline")
    operator.ready()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    time.sleep(3.5)
    # The open page's next call finds the session gone and returns to sign-in.
    page.get_by_role("button", name="Refresh").click()
    expect(page).to_have_url(
        f"{collector.url}/console/login?next=%2Fconsole%2Fpipeline&reason=ended"
    )
    expect(page.get_by_role("status")).to_contain_text("Your session has ended")
    operator.capture("login-session-ended")
    assert operator.fetch("GET", "/pipeline/status")["status"] == 401
    page.goto(collector.url + "/console/live")
    expect(page).to_have_url(f"{collector.url}/console/login?next=/console/live&reason=ended")
    page.keyboard.type(ADMIN)
    page.keyboard.press("Enter")
    expect(page).to_have_url(collector.url + "/console/live")


def test_a_client_that_does_not_exist_is_a_page_that_says_so(
    console: RunningCollector, new_operator: Callable[[RunningCollector], Operator]
) -> None:
    operator = new_operator(console)
    page = operator.page
    operator.sign_in(ADMIN)
    operator.ready()
    for suffix in ("", "/domains", "/install"):
        response = page.goto(f"{console.url}/console/clients/no_such_client{suffix}")
        assert response is not None and response.status == 404
        expect(page.get_by_role("heading", name="No such client")).to_be_visible()
        expect(page.get_by_role("alert")).to_have_text("client 'no_such_client' does not exist")
    operator.capture("client-not-found")
    page.get_by_role("link", name="All clients").click()
    expect(page).to_have_url(console.url + "/console/clients")


def test_the_operator_token_reads_and_changes_nothing(
    console: RunningCollector, new_operator: Callable[[RunningCollector], Operator]
) -> None:
    operator = new_operator(console)
    page = operator.page
    operator.sign_in(OPERATOR_TOKEN, "/console/login?next=/console/pipeline")
    operator.ready()
    expect(page.get_by_text("Signed in with the operator token (read-only)")).to_be_visible()
    expect(page.get_by_role("heading", name="Deliveries per client")).to_be_visible()
    expect(page.get_by_role("heading", name="Dead letters")).to_be_visible()
    expect(page.get_by_role("button", name="Export now")).to_have_count(0)
    expect(page.get_by_role("button", name="Retry all now")).to_have_count(0)
    # No scheduler runs beside this collector: the page says exports wait for a run.
    expect(page.get_by_text("exports run only on demand")).to_be_visible()
    csrf = operator.csrf_token()
    for run in ("/export/run", "/process/retry?client_id=client_test"):
        answer = operator.fetch("POST", run, None, csrf)
        assert (answer["status"], answer["body"]["error"]["code"]) == (403, "forbidden"), run
    answer = operator.fetch("POST", "/api/v1/clients", {"client_id": "x_y", "name": "x"}, csrf)
    assert answer["status"] == 403
    operator.open("/console/clients")
    expect(page.get_by_text("needs the admin token")).to_be_visible()
    operator.open("/console/live")
    expect(page.get_by_role("heading", name="Newest events")).to_be_visible()


#: Controls without an accessible name, and text below WCAG AA contrast (4.5:1; 3:1 for
#: large text), on the page as it is shown.
AUDIT = """() => {
    const visible = (el) => {
        const box = el.getBoundingClientRect();
        const style = getComputedStyle(el);
        return box.width > 0 && box.height > 0 && style.visibility !== 'hidden';
    };
    const unnamed = [];
    for (const el of document.querySelectorAll('input, select, textarea, button, a[href]')) {
        if (el.type === 'hidden' || !visible(el)) continue;
        const named = (el.labels && el.labels.length)
            || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
            || (['BUTTON', 'A'].includes(el.tagName) && el.textContent.trim());
        if (!named) unnamed.push(el.outerHTML.slice(0, 80));
    }
    const channel = (v) => {
        v /= 255;
        return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    };
    const parse = (text) => text.match(/[\\d.]+/g).map(Number);
    const luminance = ([r, g, b]) =>
        0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
    const background = (el) => {
        for (let node = el; node; node = node.parentElement) {
            const [r, g, b, a = 1] = parse(getComputedStyle(node).backgroundColor);
            if (a > 0.5) return [r, g, b];
        }
        return [255, 255, 255];
    };
    const faint = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const el = node.parentElement;
        if (!node.textContent.trim() || !el || !visible(el)) continue;
        if (el.closest('svg, option, .skip-link')) continue;
        const style = getComputedStyle(el);
        const [fore, back] = [luminance(parse(style.color)), luminance(background(el))];
        const ratio = (Math.max(fore, back) + 0.05) / (Math.min(fore, back) + 0.05);
        const size = parseFloat(style.fontSize);
        const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
        if (ratio < (large ? 3 : 4.5)) {
            faint.push(`${ratio.toFixed(2)}: ${node.textContent.trim().slice(0, 40)}`);
        }
    }
    return {unnamed, faint};
}"""


def test_every_page_is_labelled_legible_and_usable_by_keyboard(
    console: RunningCollector, new_operator: Callable[[RunningCollector], Operator]
) -> None:
    operator = new_operator(console)
    page = operator.page
    page.goto(console.url + "/console/login")
    assert page.evaluate(AUDIT) == {"unnamed": [], "faint": []}
    operator.sign_in(ADMIN)
    operator.ready()
    for path in PAGES:
        operator.open(path)
        assert page.evaluate(AUDIT) == {"unnamed": [], "faint": []}, path
        # The first Tab reaches the skip link, which takes the focus past the navigation.
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main", path
        # The next Tab lands inside the page's own content, and the focus is drawn.
        page.keyboard.press("Tab")
        assert page.evaluate("document.getElementById('main').contains(document.activeElement)")
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("none", ""), path
