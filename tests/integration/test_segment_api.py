"""The Segment tracking API (/v1/*) through real HTTP and a real PostgreSQL: write keys,
gzip, answers, pages that must be the key's client's, privacy levels and user ids,
durability while PostgreSQL is down, and data-subject requests by user id that follow
alias links into the exported objects.

What the SDKs themselves make of it is in tests/acceptance/test_segment_sdks.py.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from evothesis.ingest.collector import OFF_LOOP_BODY_BYTES
from tests.support.postgres import (
    StoppablePostgres,
    register_client,
    stoppable_postgres,
    with_registry,
)
from tests.support.servers import RunningCollector, run_collector

SALT = bytes(range(32))
ADMIN_TOKEN = "segment-api-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def keyed(value: str) -> str:
    return hmac.new(SALT, value.encode(), hashlib.sha256).hexdigest()


def track(**fields: Any) -> dict[str, Any]:
    return {"userId": "user-1", "event": "Signed Up", "properties": {"plan": "pro"}, **fields}


def rows(db: psycopg.Connection[Any], columns: str = "event_type") -> list[tuple[Any, ...]]:
    return db.execute(f"SELECT {columns} FROM events_log ORDER BY id").fetchall()


@pytest.fixture
def key(database_url: str) -> str:
    """client_app: a standard client owning app.example, and its write key."""
    register_client(database_url, "client_other", "other.example")
    return register_client(database_url, "client_app", "app.example")


@pytest.fixture
def server(collector: RunningCollector, key: str) -> Iterator[httpx.Client]:
    """A server-side sender with the client's key as HTTP Basic user name, as the SDKs send it."""
    with collector.client(origin=None, auth=(key, "")) as api:
        yield api


# ------------------------------------------------------------------------------ answers


def test_each_call_is_stored_with_its_columns_and_answered_as_sdks_expect(
    server: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    message = track(
        anonymousId="anon-1",
        messageId="msg-1",
        context={
            "ip": "203.0.113.5",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            "page": {"url": "https://app.example/pricing", "path": "/pricing"},
            "campaign": {"source": "newsletter", "medium": "email"},
        },
    )
    answer = server.post("/v1/track", json=message)
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True and body["stored"] == 1 and body["client_id"] == "client_app"
    for path, call in (
        ("/v1/page", {"anonymousId": "anon-1", "name": "Home"}),
        ("/v1/screen", {"anonymousId": "anon-1", "name": "Settings"}),
        ("/v1/identify", {"userId": "user-1", "traits": {"plan": "pro"}}),
        ("/v1/group", {"userId": "user-1", "groupId": "acme"}),
        ("/v1/alias", {"userId": "user-1", "previousId": "anon-1"}),
    ):
        assert server.post(path, json=call).json()["success"] is True, path
    columns = "event_type, visitor_id, user_id, site_id, url, ip_address, source, browser, "
    columns += "utm_source, raw_event_data"
    stored = rows(db, columns)
    assert [row[0] for row in stored] == [
        "Signed Up",
        "pageview",
        "screenview",
        "identify",
        "group",
        "alias",
    ]
    first = stored[0]
    assert first[1:9] == (
        "anon-1",
        "user-1",
        "app.example",
        "https://app.example/pricing",
        "203.0.113.5",
        "server_key",
        "Firefox",
        "newsletter",
    )
    raw = first[9]
    assert raw["messageId"] == "msg-1" and raw["properties"] == {"plan": "pro"}
    assert "ip" not in raw["context"] and raw["type"] == "track"
    assert [row[3] for row in stored[1:]] == ["(no page)"] * 5
    links = db.execute("SELECT previous_id, user_id FROM identity_links").fetchall()
    assert links == [("anon-1", "user-1")]


def test_a_batch_stores_its_valid_messages_and_keeps_the_invalid_as_failed_events(
    server: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    batch = {
        "batch": [
            track(type="track", messageId="m-1"),
            {"type": "identify", "userId": "user-2", "messageId": "m-2", "traits": {"plan": "x"}},
            {"type": "track", "userId": "user-3", "messageId": "m-3"},
        ]
    }
    answer = server.post("/v1/batch", json=batch).json()
    assert (answer["stored"], answer["rejected"]) == (2, 1)
    assert answer["rejected_reasons"][0]["field"] == "batch[2].event"
    failed = db.execute("SELECT position, reason, user_id FROM failed_events").fetchall()
    assert failed == [(2, "missing_field", "user-3")]
    # The same batch again (an SDK's retry): each message is stored once.
    assert server.post("/v1/batch", json=batch).json()["stored"] == 2
    assert len(rows(db)) == 2
    assert len(db.execute("SELECT 1 FROM failed_events").fetchall()) == 1


def test_import_and_the_browser_sdks_one_letter_paths_are_the_same_endpoints(
    server: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    assert server.post("/v1/import", json={"batch": [track(type="track")]}).status_code == 200
    assert server.post("/v1/t", json=track(messageId="t-1")).status_code == 200
    assert server.post("/v1/p", json={"anonymousId": "a"}).status_code == 200
    assert [row[0] for row in rows(db)] == ["Signed Up", "Signed Up", "pageview"]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/track", b"{not json", 400, "malformed_json"),
        ("/v1/track", json.dumps({"userId": "u"}).encode(), 400, "invalid_event"),
        ("/v1/batch", json.dumps({"batch": "x"}).encode(), 400, "invalid_event"),
        ("/v1/nothing", b"{}", 404, "not_found"),
    ],
)
def test_malformed_requests_are_answered_with_their_reason(
    server: httpx.Client,
    db: psycopg.Connection[Any],
    path: str,
    body: bytes,
    status: int,
    code: str,
) -> None:
    answer = server.post(path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == status
    payload = answer.json()
    assert payload["success"] is False
    assert payload["code"] == payload["error"]["code"] == code
    assert payload["message"]
    assert rows(db) == []


# -------------------------------------------------------------------------- write keys


def test_the_write_key_is_required_and_must_be_an_active_clients(
    start_collector: Callable[..., RunningCollector],
    key: str,
    database_url: str,
    db: psycopg.Connection[Any],
) -> None:
    collector = start_collector(REGISTRY_CACHE_TTL=0.2)
    with collector.client(origin=None) as api:
        missing = api.post("/v1/track", json=track())
        wrong = api.post("/v1/track", json=track(), auth=("wk_wrong", ""))
        in_body = api.post("/v1/track", json=track(writeKey=key))
        two_keys = api.post("/v1/track", json=track(writeKey="wk_other"), auth=(key, ""))
        with_registry(database_url, lambda s: s.update_client("client_app", {"active": False}))
        time.sleep(0.3)  # the cached answer's TTL
        inactive = api.post("/v1/track", json=track(messageId="m-2"), auth=(key, ""))
    assert (missing.status_code, missing.json()["code"]) == (401, "write_key_required")
    assert missing.headers["www-authenticate"].startswith("Basic")
    assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_write_key")
    assert in_body.status_code == 200
    assert (two_keys.status_code, two_keys.json()["code"]) == (401, "invalid_write_key")
    assert inactive.status_code == 401
    [(raw,)] = rows(db, "raw_event_data")
    assert "writeKey" not in raw


def test_pages_must_be_the_write_keys_clients(
    collector: RunningCollector, key: str, db: psycopg.Connection[Any]
) -> None:
    foreign = {"page": {"url": "https://other.example/x"}}
    unknown = {"page": {"url": "https://nobody.example/x"}}
    with collector.client(origin=None, auth=(key, "")) as api:
        single = api.post("/v1/track", json=track(context=foreign))
        batch = api.post(
            "/v1/batch",
            json={
                "batch": [
                    track(type="track", context={"page": {"url": "https://app.example/"}}),
                    track(type="track", context=foreign),
                    track(type="track", context=unknown),
                ]
            },
        )
    with collector.client(origin="https://other.example", auth=(key, "")) as api:
        other_origin = api.post("/v1/track", json=track())
    assert (single.status_code, single.json()["code"]) == (403, "origin_mismatch")
    assert (batch.status_code, batch.json()["stored"]) == (200, 1)
    assert (other_origin.status_code, other_origin.json()["code"]) == (403, "origin_mismatch")
    reasons = db.execute("SELECT position, reason FROM failed_events ORDER BY position")
    assert reasons.fetchall() == [(1, "foreign_site"), (2, "foreign_site")]
    assert rows(db, "site_id") == [("app.example",)]


def test_registered_pages_get_cors_and_preflights_others_do_not(
    collector: RunningCollector, key: str
) -> None:
    with collector.client(origin="https://app.example") as api:
        preflight = api.options(
            "/v1/t",
            headers={
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        answer = api.post("/v1/t", json=track(), auth=(key, ""))
    with collector.client(origin="https://nobody.example") as api:
        refused = api.options("/v1/t", headers={"Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    assert refused.status_code == 403


# -------------------------------------------------------------------------------- gzip


def test_gzip_bodies_are_read_within_the_decompressed_limit(
    start_collector: Callable[..., RunningCollector], key: str, db: psycopg.Connection[Any]
) -> None:
    collector = start_collector(MAX_BODY_BYTES=4096)
    gzipped = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    with collector.client(origin=None, auth=(key, "")) as api:
        ok = api.post(
            "/v1/track", content=gzip.compress(json.dumps(track()).encode()), headers=gzipped
        )
        # Under 100 bytes on the wire, 100 kB once decompressed.
        big = track(properties={"padding": "x" * 100_000})
        bomb = api.post(
            "/v1/track", content=gzip.compress(json.dumps(big).encode()), headers=gzipped
        )
        broken = api.post("/v1/track", content=b"\x1f\x8b\x08garbage", headers=gzipped)
        brotli = api.post(
            "/v1/track",
            content=b"x",
            headers={"Content-Encoding": "br", "Content-Type": "text/plain"},
        )
    assert ok.status_code == 200
    assert (bomb.status_code, bomb.json()["code"]) == (413, "payload_too_large")
    assert (broken.status_code, broken.json()["code"]) == (400, "malformed_json")
    assert brotli.status_code == 415
    assert len(rows(db)) == 1


# ------------------------------------------------------------------------- large bodies


def test_a_large_batch_is_stored_as_its_messages_would_be_one_by_one(
    server: httpx.Client, db: psycopg.Connection[Any]
) -> None:
    """A body over OFF_LOOP_BODY_BYTES once decompressed is parsed and accepted in a worker
    process, as a /collect body is: its messages are stored, rejected and redacted as a
    small body's are."""
    noise = "call +1 415 555 0123 or mail ann.lee@example.com about card 4111 1111 1111 1111 "

    def message(n: int, message_id: str) -> dict[str, Any]:
        page = {"url": f"https://app.example/form?email=ann%40example.com&n={n}"}
        return track(
            type="track",
            messageId=message_id,
            anonymousId=f"anon-{n}",
            properties={"note": f"{n}: " + noise * 10, "n": n},
            context={"page": page, "ip": "203.0.113.5", "campaign": {"source": "news"}},
        )

    batch = {
        "batch": [*(message(n, f"big-{n}") for n in range(300)), {"type": "track", "userId": "u-9"}]
    }
    body = json.dumps(batch).encode()
    assert len(body) > 8 * OFF_LOOP_BODY_BYTES
    gzipped = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    answer = server.post("/v1/batch", content=gzip.compress(body), headers=gzipped).json()
    assert (answer["stored"], answer["rejected"]) == (300, 1)
    assert answer["rejected_reasons"][0]["field"] == "batch[300].event"
    small = json.dumps(message(7, "small-7")).encode()
    assert len(small) < OFF_LOOP_BODY_BYTES
    assert server.post("/v1/track", content=small).json()["stored"] == 1

    with db.cursor(row_factory=dict_row) as cursor:
        stored = {
            row["raw_event_data"]["messageId"]: row
            for row in cursor.execute(
                "SELECT * FROM events_log WHERE raw_event_data->>'messageId' IN "
                "('big-7', 'small-7')"
            )
        }
    large, inline = stored["big-7"], stored["small-7"]
    for row in (large, inline):
        assert "ann.lee@example.com" not in json.dumps(row["raw_event_data"])
        assert "4111" not in row["raw_event_data"]["properties"]["note"]
        assert (row["visitor_id"], row["utm_source"]) == ("anon-7", "news")
    differ = {"id", "event_id", "xid", "timestamp", "created_at", "raw_event_data"}
    assert {k: v for k, v in inline.items() if k not in differ} == {
        k: v for k, v in large.items() if k not in differ
    }
    sent_apart = {"messageId", "receivedAt", "timestamp"}
    assert {k: v for k, v in inline["raw_event_data"].items() if k not in sent_apart} == {
        k: v for k, v in large["raw_event_data"].items() if k not in sent_apart
    }
    assert db.execute("SELECT position, user_id FROM failed_events").fetchall() == [(300, "u-9")]


# ---------------------------------------------------------------- privacy and user ids


def test_gdpr_hashes_user_ids_and_ips_everywhere_and_hipaa_drops_them(
    collector: RunningCollector, database_url: str, db: psycopg.Connection[Any]
) -> None:
    eu = register_client(database_url, "client_eu", privacy_level="gdpr", ip_salt=SALT)
    clinic = register_client(database_url, "client_clinic", privacy_level="hipaa", ip_salt=SALT)
    message = track(
        anonymousId="anon-1", context={"ip": "203.0.113.5"}, traits={"email": "jane@x.example"}
    )
    for write_key in (eu, clinic):
        with collector.client(origin=None, auth=(write_key, "")) as api:
            assert api.post("/v1/track", json=message).status_code == 200
            alias = {"userId": "user-1", "previousId": "old-id", "anonymousId": "anon-1"}
            assert api.post("/v1/alias", json=alias).status_code == 200
    stored = db.execute(
        "SELECT client_id, user_id, ip_address, raw_event_data, t::text FROM events_log t "
        "ORDER BY id"
    ).fetchall()
    (_, eu_user, eu_ip, eu_raw, eu_row), (_, _, _, eu_alias, _) = stored[:2]
    assert eu_user == keyed("user-1") == eu_raw["userId"]
    assert eu_ip == keyed("203.0.113.5")
    assert eu_alias["previousId"] == keyed("old-id")
    assert "203.0.113.5" not in eu_row and "user-1" not in eu_row
    assert eu_raw["traits"]["email"] == "[REDACTED]"
    for _, user_id, ip, raw, _ in stored[2:]:
        assert (user_id, ip) == (None, None)
        assert "userId" not in raw and "previousId" not in raw
    links = db.execute("SELECT client_id, previous_id, user_id FROM identity_links").fetchall()
    assert links == [("client_eu", keyed("old-id"), keyed("user-1"))]


def test_privacy_signals_and_consent_drop_messages_like_events(
    collector: RunningCollector, database_url: str, db: psycopg.Connection[Any]
) -> None:
    key = register_client(database_url, "client_consent", consent_mode="required")
    consented = {"consent": {"categoryPreferences": {"Analytics": True}}}
    with collector.client(origin=None, auth=(key, "")) as api:
        dropped = api.post("/v1/track", json=track()).json()
        kept = api.post("/v1/track", json=track(messageId="m-2", context=consented)).json()
        dnt = api.post(
            "/v1/track", json=track(messageId="m-3", context=consented), headers={"DNT": "1"}
        )
    assert (dropped["success"], dropped["stored"], dropped["dropped"]) == (True, 0, 1)
    assert dropped["dropped_because"] == "no_consent"
    assert kept["stored"] == 1
    assert dnt.json()["dropped_because"] == "do_not_track"
    assert len(rows(db)) == 1


# ------------------------------------------------------------------------- durability


@pytest.fixture
def database() -> Iterator[StoppablePostgres]:
    with stoppable_postgres() as server:
        yield server


def test_messages_are_spooled_while_postgresql_is_down_and_refused_when_nothing_is_durable(
    database: StoppablePostgres, tmp_path: Path
) -> None:
    key = register_client(database.url, "client_app")
    collector = run_collector(database.url, SPOOL_DIR=str(tmp_path / "spool"), SPOOL_MAX_BYTES=8192)
    try:
        with collector.client(origin=None, auth=(key, "")) as api:
            assert api.post("/v1/track", json=track(messageId="warm")).status_code == 200
            database.stop()
            answers = [
                api.post("/v1/alias", json={"userId": f"u-{n}", "previousId": f"a-{n}"})
                for n in range(40)
            ]
            spooled = [a for a in answers if a.status_code == 200]
            assert spooled and all(a.json()["spooled"] for a in spooled)
            refused = next(a for a in answers if a.status_code == 503)
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["success"] is False and refused.json()["code"] == "spool_full"
            database.start()
            deadline = time.monotonic() + 30
            with psycopg.connect(database.url, autocommit=True) as db:
                while time.monotonic() < deadline:
                    stored = db.execute("SELECT count(*) FROM events_log").fetchone()
                    if stored == (len(spooled) + 1,):
                        break
                    time.sleep(0.2)
                stored = db.execute("SELECT count(*) FROM events_log WHERE event_type = 'alias'")
                assert stored.fetchone() == (len(spooled),)
                links = db.execute("SELECT count(*) FROM identity_links").fetchone()
                assert links == (len(spooled),)
    finally:
        collector.stop()


# ------------------------------------------------------------------ data subjects


def test_a_user_is_exported_and_deleted_under_every_id_alias_links_tie_to_them(
    start_collector: Callable[..., RunningCollector],
    key: str,
    db: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    collector = start_collector(EVOTHESIS_ADMIN_TOKEN=ADMIN_TOKEN, EVOTHESIS_DATA_DIR=str(data_dir))
    with collector.client(origin=None, auth=(key, "")) as api:
        # Before signing up: an anonymous visitor; then the alias; then the user, who later
        # changes id; and someone else entirely.
        api.post("/v1/page", json={"anonymousId": "anon-1", "name": "Home"})
        api.post(
            "/v1/alias", json={"anonymousId": "anon-1", "previousId": "anon-1", "userId": "user-1"}
        )
        api.post("/v1/track", json=track(userId="user-1"))
        api.post("/v1/alias", json={"userId": "user-2", "previousId": "user-1"})
        api.post("/v1/identify", json={"userId": "user-2", "traits": {"plan": "pro"}})
        api.post("/v1/track", json=track(userId="stranger", anonymousId="anon-9"))
        api.post(
            "/v1/batch",
            json={
                "batch": [
                    {"type": "track", "userId": "stranger", "event": "Other"},
                    {"type": "track", "userId": "user-2"},
                ]
            },
        )
    with collector.client(origin=None, headers=ADMIN) as admin:
        assert admin.post("/export/run").status_code == 200
        assert admin.post("/process/run").status_code == 200
        api_more = {"userId": "user-2", "event": "Still Buffered"}
        with collector.client(origin=None, auth=(key, "")) as api:
            api.post("/v1/track", json=api_more)
        exported = admin.post(
            "/api/v1/gdpr/export", json={"client_id": "client_app", "user_id": "user-2"}
        )
        assert exported.status_code == 200
        lines = [json.loads(line) for line in exported.text.splitlines()]
        types = [line["event_type"] if "event_type" in line else line["reason"] for line in lines]
        assert types == [
            "pageview",
            "alias",
            "Signed Up",
            "alias",
            "identify",
            "Still Buffered",
            "missing_field",
        ]
        assert exported.headers["x-event-count"] == "6"
        assert all("stranger" not in text for text in exported.text.splitlines())
        receipt = admin.post(
            "/api/v1/gdpr/delete", json={"client_id": "client_app", "user_id": "user-2"}
        ).json()
        assert receipt["subject"] == "user" and receipt["user_sha256"]
        assert receipt["buffer_events_deleted"] == 6
        assert receipt["events_deleted_from_objects"] == 5
        assert receipt["identity_links_deleted"] == 2
        # The delivery that held the user's events is rendered again without them.
        processed = [o for o in receipt["objects_rewritten"] if o["bucket"] == "processed"]
        assert [(o["delivery"], o["events_left"]) for o in processed] == [(1, 2)]
        both = admin.post(
            "/api/v1/gdpr/export",
            json={"client_id": "client_app", "user_id": "u", "visitor_id": "v"},
        )
        assert both.status_code == 422
    assert rows(db, "user_id") == [("stranger",), ("stranger",)]
    assert db.execute("SELECT count(*) FROM identity_links").fetchone() == (0,)
    files = "".join(
        p.read_text()
        for p in (data_dir / "buckets" / "processed").rglob("*.json")
        if not p.name.endswith(".manifest.json")
    )
    assert "stranger" in files and "user-1" not in files and "anon-1" not in files
