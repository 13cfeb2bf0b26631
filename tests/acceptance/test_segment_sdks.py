"""Segment's and RudderStack's own SDKs, pointed at Evothesis: every message each SDK says it
sent is stored once and exported once, also when the collector is killed and restarted
while the SDK is sending batches.

The SDKs are the real packages, installed by ``scripts/install`` (the Python ones from
PyPI through the ``test`` extra, the npm ones into ``tests/sdks/node_modules``), never
downloaded here: ``segment-analytics-python`` and ``rudder-sdk-python`` run in this process,
``@segment/analytics-node`` under Node (``tests/sdks/send-node.mjs``), and
``@segment/analytics-next`` in Chromium from a page this test serves with the SDK's own
built file beside it.

What each SDK sent is the ``messageId`` it reports per call; what was stored is the
``messageId`` in ``raw_event_data``; what was exported, the same in the client's processed
files (the default format, the JSON document) after an export and a processing run.
"""

from __future__ import annotations

import http.server
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from tests.support.loopback import free_port
from tests.support.postgres import register_client, with_registry
from tests.support.servers import (
    RunningCollector,
    killed_on_exit,
    process_env,
    start_process,
    stop_process,
)

SDKS = Path(__file__).resolve().parents[1] / "sdks"
NODE_MODULES = SDKS / "node_modules"
ADMIN_TOKEN = "segment-sdk-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Each round makes every call of the spec once (track, page, screen, identify, group, alias).
CALLS_PER_ROUND = 6


def stored_ids(db: psycopg.Connection[Any], client_id: str) -> list[str]:
    return [
        row[0]
        for row in db.execute(
            "SELECT raw_event_data->>'messageId' FROM events_log WHERE client_id = %s",
            (client_id,),
        )
    ]


def exported_ids(base_url: str, data_dir: Path, client_id: str) -> list[str]:
    """Export and process everything, then the messageIds of the client's processed files."""
    with httpx.Client(base_url=base_url, headers=ADMIN, timeout=60) as api:
        assert api.post("/export/run").status_code == 200
        assert api.post("/process/run").status_code == 200
    ids = []
    for path in sorted((data_dir / "buckets" / "processed").rglob("*.json")):
        if f"/{client_id}/" not in str(path) or path.name.endswith(".manifest.json"):
            continue
        for event in json.loads(path.read_text())["events"]:
            ids.append(event["raw_event_data"]["messageId"])
    return ids


def assert_each_sent_once(sent: list[str], stored: list[str], exported: list[str]) -> None:
    assert len(sent) == len(set(sent)), "the SDK reported a messageId twice"
    for name, found in (("stored", stored), ("exported", exported)):
        repeated = [i for i, n in Counter(found).items() if n > 1]
        assert not repeated, f"{len(repeated)} messages {name} more than once"
        assert Counter(found) == Counter(sent), (
            f"sent {len(sent)}, {name} {len(found)}: "
            f"{len(set(sent) - set(found))} missing, {len(set(found) - set(sent))} unexpected"
        )


# ----------------------------------------------------------------------------- collector


@dataclass
class CollectorProcess:
    """``evothesis serve`` on a fixed port, which a test can kill and start again with the
    same spool and data folder."""

    database_url: str
    folder: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = process_env(
            DATABASE_URL=self.database_url,
            SPOOL_DIR=str(self.folder / "spool"),
            EVOTHESIS_DATA_DIR=str(self.folder / "data"),
            EVOTHESIS_ADMIN_TOKEN=ADMIN_TOKEN,
            EXPORT_IN_SERVE="false",
            EVOTHESIS_SERVE_DEMO="false",
        )
        command = [sys.executable, "-m", "evothesis", "serve", "--port", str(self.port)]
        self.process = start_process(
            command, env=env, log=self.folder / "collector.log", health_url=f"{self.url}/health"
        )

    def kill(self) -> None:
        """SIGKILL: whatever it was in the middle of stays unfinished."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process)


@pytest.fixture
def collector_process(database_url: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    collector = CollectorProcess(database_url, tmp_path, free_port())
    collector.start()
    assert collector.process is not None
    with killed_on_exit(collector.process):
        try:
            yield collector
        finally:
            collector.stop()


def restart_while_sending(
    collector: CollectorProcess, db: psycopg.Connection[Any], client_id: str, total: int
) -> None:
    """Once some of the SDK's messages are stored and others are still to come, kill the
    collector in the middle of its work and start it again on the same port."""
    deadline = time.monotonic() + 60
    while len(stored_ids(db, client_id)) < total // 4:
        assert time.monotonic() < deadline, "the SDK sent nothing"
        time.sleep(0.01)
    assert len(stored_ids(db, client_id)) < total, "the SDK finished before the restart"
    collector.kill()
    time.sleep(0.5)  # the SDK meets a closed port, and retries
    collector.start()


# --------------------------------------------------------------------------- Python SDKs

SdkClient = SegmentClient | RudderClient


def send_python_calls(client: SdkClient, rounds: int, pace: float) -> list[str]:
    """Every call of the spec, ``rounds`` times, paced; the messageIds the SDK queued."""
    sent: list[str] = []
    for i in range(rounds):
        user, anon = f"py-user-{i}", f"py-anon-{i}"
        calls: list[tuple[bool, dict[str, Any]]] = [
            client.track(user, "Order Completed", {"total": 10 + i, "currency": "EUR"}),
            client.page(anonymous_id=anon, name="Pricing", properties={"plan": "pro"}),
            client.screen(anonymous_id=anon, name="Settings"),
            client.identify(user, {"plan": "pro", "seats": i}, anonymous_id=anon),
            client.group(user, "acme", {"industry": "retail"}),
            client.alias(anon, user),
        ]
        for queued, message in calls:
            assert queued, message
            sent.append(message["messageId"])
        time.sleep(pace)
    return sent


def python_client(kind: str, write_key: str, host: str) -> SdkClient:
    errors: list[Exception] = []
    if kind == "segment":
        return SegmentClient(
            write_key,
            host=host,
            upload_size=5,
            upload_interval=0.05,
            max_retries=30,
            on_error=lambda error, batch: errors.append(error),
        )
    return RudderClient(
        write_key,
        host=host,
        upload_size=5,
        upload_interval=0.05,
        max_retries=30,
        gzip=True,
        on_error=lambda error, batch: errors.append(error),
    )


@pytest.mark.parametrize("kind", ["segment", "rudder"])
def test_python_sdk_messages_are_stored_and_exported_once_across_a_restart(
    kind: str,
    database_url: str,
    db: psycopg.Connection[Any],
    collector_process: CollectorProcess,
) -> None:
    client_id = f"client_{kind}_py"
    write_key = register_client(database_url, client_id)
    client = python_client(kind, write_key, collector_process.url)
    rounds = 40
    sent: list[str] = []
    sender = threading.Thread(
        target=lambda: sent.extend(send_python_calls(client, rounds, pace=0.05)), daemon=True
    )
    sender.start()
    restart_while_sending(collector_process, db, client_id, rounds * CALLS_PER_ROUND)
    sender.join(timeout=60)
    client.flush()
    client.join()
    assert len(sent) == rounds * CALLS_PER_ROUND
    stored = stored_ids(db, client_id)
    exported = exported_ids(collector_process.url, collector_process.folder / "data", client_id)
    assert_each_sent_once(sent, stored, exported)
    types = Counter(row[0] for row in db.execute("SELECT event_type FROM events_log"))
    assert types == {
        "Order Completed": rounds,
        "pageview": rounds,
        "screenview": rounds,
        "identify": rounds,
        "group": rounds,
        "alias": rounds,
    }
    links = db.execute("SELECT count(*) FROM identity_links WHERE client_id = %s", (client_id,))
    assert links.fetchone() == (rounds,)


# ------------------------------------------------------------------------------ Node SDK


def test_node_sdk_messages_are_stored_and_exported_once_across_a_restart(
    database_url: str, db: psycopg.Connection[Any], collector_process: CollectorProcess
) -> None:
    assert (NODE_MODULES / "@segment" / "analytics-node").is_dir(), (
        "@segment/analytics-node is not installed: run scripts/install"
    )
    write_key = register_client(database_url, "client_node")
    rounds = 40
    env = {
        "PATH": process_env()["PATH"],
        "EVOTHESIS_HOST": collector_process.url,
        "EVOTHESIS_WRITE_KEY": write_key,
        "ROUNDS": str(rounds),
        "PACE_MS": "50",
    }
    node = subprocess.Popen(
        ["node", str(SDKS / "send-node.mjs")],
        cwd=SDKS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        restart_while_sending(collector_process, db, "client_node", rounds * CALLS_PER_ROUND)
        out, err = node.communicate(timeout=120)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    assert node.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["failed"] == []
    sent = report["sent"]
    assert len(sent) == rounds * CALLS_PER_ROUND
    stored = stored_ids(db, "client_node")
    exported = exported_ids(collector_process.url, collector_process.folder / "data", "client_node")
    assert_each_sent_once(sent, stored, exported)


# --------------------------------------------------------------------------- browser SDK


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def sdk_page_server(tmp_path: Path) -> Iterator[Callable[[str, str], str]]:
    """Serves the test page with the SDK's built files beside it, on loopback; returns a
    function of (write key, collector URL) that writes the page and gives its URL."""
    bundles = NODE_MODULES / "@segment" / "analytics-next" / "dist" / "umd"
    assert bundles.is_dir(), "@segment/analytics-next is not installed: run scripts/install"
    root = tmp_path / "site"
    shutil.copytree(bundles, root / "analytics-next" / "bundles")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def page(write_key: str, collector_url: str) -> str:
        template = (SDKS / "index.html").read_text()
        api_host = collector_url.removeprefix("http://") + "/v1"
        html = template.replace("{{WRITE_KEY}}", write_key).replace("{{API_HOST}}", api_host)
        (root / "index.html").write_text(html)
        return f"http://127.0.0.1:{server.server_address[1]}/index.html"

    yield page
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()


@pytest.mark.browser
def test_browser_sdk_messages_are_stored_and_exported_once(
    database_url: str,
    db: psycopg.Connection[Any],
    start_collector: Callable[..., RunningCollector],
    sdk_page_server: Callable[[str, str], str],
    browser: Browser,
    tmp_path: Path,
) -> None:
    # The page is served from 127.0.0.1, which the development client owns in every test
    # database: its write key is the one the page carries.
    write_key = with_registry(database_url, lambda store: store.rotate_write_key("client_test"))
    data_dir = tmp_path / "data"
    collector = start_collector(EVOTHESIS_ADMIN_TOKEN=ADMIN_TOKEN, EVOTHESIS_DATA_DIR=str(data_dir))
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(sdk_page_server(write_key, collector.url))
        sent = page.evaluate(
            """async () => {
                const calls = [
                    analytics.page('Docs', 'Pricing', {plan: 'pro'}),
                    analytics.track('Clicked Buy', {total: 12.5, currency: 'EUR'}),
                    analytics.identify('browser-user-1', {plan: 'pro'}),
                    analytics.group('acme', {seats: 5}),
                    analytics.alias('browser-user-2', 'browser-user-1'),
                ]
                const contexts = await Promise.all(calls)
                return contexts.map((ctx) => ctx.event.messageId)
            }"""
        )
        deadline = time.monotonic() + 20
        while len(stored_ids(db, "client_test")) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        context.close()
    assert errors == []
    stored = stored_ids(db, "client_test")
    exported = exported_ids(collector.url, data_dir, "client_test")
    assert_each_sent_once(sent, stored, exported)
    rows = db.execute(
        "SELECT event_type, site_id, source, user_agent, browser, url, raw_event_data "
        "FROM events_log ORDER BY id"
    ).fetchall()
    assert {row[0] for row in rows} == {"pageview", "Clicked Buy", "identify", "group", "alias"}
    for _, site, source, user_agent, browser_name, url, raw in rows:
        assert (site, source) == ("127.0.0.1", "server_key")
        assert url.startswith("http://127.0.0.1:") and url.endswith("/index.html")
        assert user_agent == raw["context"]["userAgent"]
        assert browser_name is not None
        assert "writeKey" not in raw
