"""POST /collect against a real collector and a real PostgreSQL."""

from __future__ import annotations

import gzip
import json
import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.seed import SEED_BATCH, SEED_SINGLE

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def rows(db: psycopg.Connection[Any], where: str = "true") -> list[dict[str, Any]]:
    with db.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f"SELECT * FROM events_log WHERE {where} ORDER BY id")
        return cur.fetchall()


def count(db: psycopg.Connection[Any]) -> int:
    result = db.execute("SELECT count(*) FROM events_log").fetchone()
    assert result is not None
    return int(result[0])


def test_single_event_is_stored_with_extracted_columns(api: httpx.Client, db: Any) -> None:
    response = api.post("/collect", json=SEED_SINGLE, headers={"User-Agent": "test-agent/1"})

    assert response.status_code == 200
    body = response.json()
    # The seed's keys (seed 004's event_id with them), plus what issue #9 added: nothing
    # was rejected.
    assert set(body) == {
        "status",
        "message",
        "events_processed",
        "client_id",
        "timestamp",
        "event_id",
        "events_rejected",
        "rejected_reasons",
    }
    assert (body["events_rejected"], body["rejected_reasons"]) == (0, [])
    assert body["status"] == "success"
    assert body["message"] == "1 event(s) received and stored"
    assert body["events_processed"] == 1
    assert body["client_id"] == "client_test"
    assert TIMESTAMP.match(body["timestamp"])

    [row] = rows(db)
    assert row["event_type"] == "pageview"
    assert row["session_id"] == "sess_abc123"
    assert row["visitor_id"] == "vis_xyz789"
    assert row["site_id"] == "localhost"
    assert row["client_id"] == "client_test"
    assert row["timestamp"].isoformat() == "2025-07-11T12:00:00+00:00"
    assert row["url"] == "https://example.com/page"
    assert row["path"] == "/page"
    assert row["ip_address"] == "127.0.0.1"
    assert row["user_agent"] == "test-agent/1"
    assert isinstance(row["event_id"], uuid.UUID)
    assert row["raw_event_data"]["attribution"] == SEED_SINGLE["attribution"]
    assert row["raw_event_data"]["eventId"] == str(row["event_id"]) == body["event_id"]
    assert row["source"] == "browser"


def test_batch_of_three_stores_four_rows_with_inherited_fields(api: httpx.Client, db: Any) -> None:
    response = api.post("/collect", json=SEED_BATCH)

    assert response.status_code == 200
    assert response.json()["message"] == "4 event(s) received and stored"
    assert response.json()["events_processed"] == 4
    stored = rows(db)
    assert [r["event_type"] for r in stored] == ["batch", "click", "scroll", "form_focus"]
    for row in stored:
        assert row["session_id"] == "sess_abc123"
        assert row["visitor_id"] == "vis_xyz789"
        assert row["site_id"] == "localhost"
        assert row["client_id"] == "client_test"
        assert row["timestamp"].isoformat() == "2025-07-11T12:00:00+00:00"
    assert stored[0]["raw_event_data"]["eventCount"] == 3
    assert "events" not in stored[0]["raw_event_data"]
    assert stored[1]["raw_event_data"]["eventData"] == {"element": "button1"}
    assert len({r["event_id"] for r in stored}) == 4


def test_text_plain_body_as_sent_by_send_beacon(api: httpx.Client, db: Any) -> None:
    response = api.post(
        "/collect",
        content=json.dumps(SEED_BATCH),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert response.status_code == 200
    assert count(db) == 4


def test_cors_preflight_and_cors_on_answers_for_registered_origins(api: httpx.Client) -> None:
    preflight = api.options(
        "/collect",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "content-type"

    posted = api.post("/collect", json=SEED_SINGLE, headers={"Origin": "http://localhost:3000"})
    assert posted.headers["access-control-allow-origin"] == "http://localhost:3000"
    refused = api.post("/collect", content=b"{", headers={"Origin": "http://localhost:3000"})
    assert refused.headers["access-control-allow-origin"] == "http://localhost:3000"


def _big_batch(n: int) -> dict[str, Any]:
    return {**SEED_BATCH, "events": [{"eventType": "click"}] * n}


BAD_INPUT = [
    pytest.param(b"{not json", "application/json", 400, "malformed_json", id="malformed-json"),
    pytest.param(b"", "application/json", 400, "malformed_json", id="empty-body"),
    pytest.param(
        b'{"eventType":"x","siteId":"localhost","n":NaN}', None, 400, "malformed_json", id="nan"
    ),
    pytest.param(
        b'{"eventType":"x","siteId":"local\xffhost"}',
        None,
        400,
        "malformed_json",
        id="invalid-utf8",
    ),
    pytest.param(b"[1, 2]", None, 422, "invalid_event", id="not-an-object"),
    pytest.param(b'{"siteId":"localhost"}', None, 422, "invalid_event", id="missing-eventType"),
    pytest.param(
        b'{"eventType":5,"siteId":"localhost"}', None, 422, "invalid_event", id="eventType-number"
    ),
    pytest.param(
        b'{"eventType":"x","siteId":"localhost","sessionId":["a"]}',
        None,
        422,
        "invalid_event",
        id="sessionId-list",
    ),
    pytest.param(
        b'{"eventType":"x","siteId":"localhost","eventData":"s"}',
        None,
        422,
        "invalid_event",
        id="eventData-string",
    ),
    pytest.param(
        b'{"eventType":"x","siteId":"localhost","eventId":"nope"}',
        None,
        422,
        "invalid_event",
        id="eventId-not-uuid",
    ),
    pytest.param(
        b'{"eventType":"x","siteId":"localhost","timestamp":"yesterday"}',
        None,
        422,
        "invalid_event",
        id="bad-timestamp",
    ),
    pytest.param(
        b'{"eventType":"x","siteId":"localhost","timestamp":1720699200}',
        None,
        422,
        "invalid_event",
        id="numeric-timestamp",
    ),
    pytest.param(
        b'{"eventType":"batch","siteId":"localhost","events":{}}',
        None,
        422,
        "invalid_event",
        id="events-not-list",
    ),
    pytest.param(
        b'{"eventType":"x","siteId":"localhost","eventData":{"k":"a\\u0000b"}}',
        None,
        422,
        "invalid_event",
        id="nul-character",
    ),
    pytest.param(b'{"eventType":"x"}', None, 422, "invalid_event", id="missing-siteId"),
    pytest.param(
        b'{"eventType":"x","siteId":"evil.example"}',
        None,
        403,
        "unauthorized_domain",
        id="unknown-domain",
    ),
    pytest.param(
        b"eventType=x",
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
        id="form-content-type",
    ),
    pytest.param(
        json.dumps(_big_batch(501)).encode(), None, 413, "batch_too_large", id="501-events"
    ),
    pytest.param(
        json.dumps({**SEED_SINGLE, "eventData": {"blob": "x" * (1024 * 1024)}}).encode(),
        None,
        413,
        "payload_too_large",
        id="body-over-1MiB",
    ),
]


@pytest.mark.parametrize(("body", "content_type", "status", "code"), BAD_INPUT)
def test_bad_input_gets_a_clear_json_error_and_stores_nothing(
    api: httpx.Client, db: Any, body: bytes, content_type: str | None, status: int, code: str
) -> None:
    response = api.post(
        "/collect", content=body, headers={"Content-Type": content_type or "application/json"}
    )
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["status"] == "error"
    assert payload["error"]["code"] == code
    assert payload["error"]["message"]
    assert count(db) == 0


def test_wrong_type_error_names_the_field(api: httpx.Client) -> None:
    body = {**SEED_BATCH, "timestamp": "soon"}
    error = api.post("/collect", json=body).json()["error"]
    assert error["field"] == "timestamp"
    assert "ISO-8601" in error["message"]
    assert "soon" not in error["message"]  # what a sender wrote is never echoed


# Issue #9: an invalid inner event no longer fails its whole batch (these were 422s).
INVALID_INNER = [
    pytest.param({"a": 1}, "missing_field", "events[0].eventType", id="inner-missing-eventType"),
    pytest.param(
        {"eventType": "batch", "events": []}, "nested_batch", "events[0].eventType", id="nested"
    ),
    pytest.param(
        {"eventType": "click", "timestamp": "soon"}, "invalid", "events[0].timestamp", id="time"
    ),
]


@pytest.mark.parametrize(("inner", "reason", "field"), INVALID_INNER)
def test_an_invalid_inner_event_is_a_failed_event_and_the_batch_is_stored(
    api: httpx.Client, db: Any, inner: dict[str, Any], reason: str, field: str
) -> None:
    body = {**SEED_BATCH, "events": [inner, {"eventType": "click"}]}
    response = api.post("/collect", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["events_processed"], answer["events_rejected"]) == (2, 1)
    [described] = answer["rejected_reasons"]
    assert (described["index"], described["reason"], described["field"]) == (0, reason, field)
    assert [r["event_type"] for r in rows(db)] == ["batch", "click"]
    failed = db.execute("SELECT position, reason, field FROM failed_events").fetchall()
    assert failed == [(0, reason, field)]


def test_500_events_is_the_largest_batch_accepted(api: httpx.Client, db: Any) -> None:
    assert api.post("/collect", json=_big_batch(500)).status_code == 200
    assert count(db) == 501


def test_gzip_bodies_are_refused_not_inflated(api: httpx.Client, db: Any) -> None:
    body = gzip.compress(json.dumps(SEED_SINGLE).encode())
    response = api.post("/collect", content=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 415
    assert count(db) == 0


def test_retried_request_with_client_event_ids_is_stored_once(api: httpx.Client, db: Any) -> None:
    batch = {
        **SEED_BATCH,
        "eventId": str(uuid.uuid4()),
        "events": [{**e, "eventId": str(uuid.uuid4())} for e in SEED_BATCH["events"]],
    }
    first = api.post("/collect", json=batch)
    second = api.post("/collect", json=batch)
    assert first.status_code == second.status_code == 200
    assert second.json()["events_processed"] == 4
    stored = rows(db)
    assert len(stored) == 4
    assert {str(r["event_id"]) for r in stored} == {batch["eventId"]} | {
        e["eventId"] for e in batch["events"]
    }


def test_same_event_id_twice_in_one_request_is_stored_once(api: httpx.Client, db: Any) -> None:
    same = str(uuid.uuid4())
    batch = {**SEED_BATCH, "events": [{"eventType": "click", "eventId": same}] * 3}
    assert api.post("/collect", json=batch).status_code == 200
    assert count(db) == 2


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2025-07-11T12:00:00Z", "2025-07-11T12:00:00+00:00"),
        ("2025-07-11T12:00:00.123Z", "2025-07-11T12:00:00.123000+00:00"),
        ("2025-07-11T12:00:00.123456Z", "2025-07-11T12:00:00.123456+00:00"),
        ("2025-07-11T12:00:00", "2025-07-11T12:00:00+00:00"),
        ("2025-07-11T14:00:00+02:00", "2025-07-11T12:00:00+00:00"),
        ("2025-07-11T07:30:00.5-04:30", "2025-07-11T12:00:00.500000+00:00"),
        ("2025-07-11 12:00:00", "2025-07-11T12:00:00+00:00"),
        ("2025-07-11", "2025-07-11T00:00:00+00:00"),
    ],
)
def test_timestamp_formats(api: httpx.Client, db: Any, sent: str, stored: str) -> None:
    response = api.post("/collect", json={**SEED_SINGLE, "timestamp": sent})
    assert response.status_code == 200, response.text
    [row] = rows(db)
    assert row["timestamp"].astimezone(UTC).isoformat() == stored


def test_missing_timestamp_means_server_time(api: httpx.Client, db: Any) -> None:
    event = {k: v for k, v in SEED_SINGLE.items() if k != "timestamp"}
    assert api.post("/collect", json=event).status_code == 200
    [row] = rows(db)
    assert abs((row["timestamp"] - row["created_at"]).total_seconds()) < 1


def test_concurrent_requests_are_coalesced_into_fewer_flushes(
    api: httpx.Client, db: Any, collector: Any
) -> None:
    def send(i: int) -> int:
        with collector.client() as client:
            event = {**SEED_BATCH, "sessionId": f"sess_{i}"}
            return client.post("/collect", json=event).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(send, range(200)))
    assert statuses == [200] * 200
    assert count(db) == 800
    health = api.get("/health").json()
    assert health["write_buffer"]["events_flushed"] == 800
    assert health["write_buffer"]["flushes"] < 200


def test_seed_log_lines(api: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="evothesis"):
        api.post("/collect", json={**SEED_BATCH, "siteId": "LOCALHOST"})
    # A flush is logged as one record holding one seed line per request and per site.
    messages = [line for r in caplog.records for line in r.getMessage().splitlines()]
    assert "Processing batch with 3 individual events for client client_test" in messages
    assert "Bulk inserted 4 events for client client_test from site localhost" in messages


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD"])
def test_other_methods_on_collect_are_405_with_json(api: httpx.Client, method: str) -> None:
    response = api.request(method, "/collect")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST, OPTIONS"
    if method != "HEAD":
        assert response.json()["error"]["code"] == "method_not_allowed"
