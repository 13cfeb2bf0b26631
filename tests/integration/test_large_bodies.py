"""Bodies over OFF_LOOP_BODY_BYTES are parsed, redacted and turned into rows in a worker
process: stored exactly as a small body's events are, refused with the same errors, and
without holding up the requests of everyone else meanwhile."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from evothesis.ingest.collector import OFF_LOOP_BODY_BYTES
from tests.support.loopback import free_port
from tests.support.servers import (
    LOCAL_ORIGIN,
    OPERATOR_HEADERS,
    killed_on_exit,
    process_env,
    start_process,
    stop_process,
)

#: Text that sends every string through the PII rules (digits, e-mails, phone numbers).
NOISY = "call +1 415 555 0123 or mail ann.lee@example.com about order 4111 1111 1111 1111 "


def event(index: int, noise: int = 10) -> dict[str, Any]:
    return {
        "eventType": "form_submit",
        "eventData": {"note": f"{index}: " + NOISY * noise, "email": "bob@example.com", "n": index},
        "url": f"https://localhost/form?email=ann%40example.com&step={index}",
    }


def batch(events: list[Any]) -> dict[str, Any]:
    return {
        "eventType": "batch",
        "siteId": "localhost",
        "sessionId": "s1",
        "timestamp": "2025-07-11T12:00:00Z",
        "events": events,
    }


def stored(api: httpx.Client, count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = api.get("/events/recent", params={"limit": count}).json()
    return rows


def test_a_large_batch_is_stored_as_its_events_would_be_one_by_one(api: httpx.Client) -> None:
    events = [event(index) for index in range(300)]
    big = batch([*events, "not an event"])
    assert len(orjson.dumps(big)) > 8 * OFF_LOOP_BODY_BYTES
    answer = api.post("/collect", json=big)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["events_processed"], body["events_rejected"]) == (301, 1)
    assert body["rejected_reasons"][0]["reason"] == "not_an_object"
    large = {row["raw_event_data"]["eventData"]["n"]: row for row in stored(api, 301)[:-1]}

    small = batch([event(7)])
    assert len(orjson.dumps(small)) < OFF_LOOP_BODY_BYTES
    assert api.post("/collect", json=small).status_code == 200
    inline = stored(api, 1)[0]
    for row in (inline, large[7]):
        assert "@example.com" not in orjson.dumps(row).decode()
        assert "4111" not in row["raw_event_data"]["eventData"]["note"]
    ignored = {"id", "event_id", "received_at", "created_at", "raw_event_data"}
    assert {k: v for k, v in inline.items() if k not in ignored} == {
        k: v for k, v in large[7].items() if k not in ignored
    }
    shape = {k: v for k, v in inline["raw_event_data"].items() if k != "eventId"}
    assert shape == {k: v for k, v in large[7]["raw_event_data"].items() if k != "eventId"}


def padding(size: int) -> dict[str, str]:
    return {f"pad{index}": "x" * 4000 for index in range(size // 4000 + 1)}


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (
            orjson.dumps(
                {
                    "eventType": "pageview",
                    "siteId": "not a host",
                    "eventData": padding(OFF_LOOP_BODY_BYTES),
                }
            ),
            422,
            "invalid_event",
            "siteId",
        ),
        (
            orjson.dumps(
                {
                    "eventType": "pageview",
                    "siteId": "localhost",
                    "eventData": padding(OFF_LOOP_BODY_BYTES),
                }
            )[:-1],
            400,
            "malformed_json",
            None,
        ),
        (
            orjson.dumps(
                {**batch([{"eventType": "a"}] * 501), "eventData": padding(OFF_LOOP_BODY_BYTES)}
            ),
            413,
            "batch_too_large",
            None,
        ),
    ],
    ids=["invalid-field", "malformed", "too-many-events"],
)
def test_a_large_body_is_refused_as_a_small_one_would_be(
    api: httpx.Client, body: bytes, status: int, code: str, field: str | None
) -> None:
    assert len(body) > OFF_LOOP_BODY_BYTES
    answer = api.post("/collect", content=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert (error["code"], error.get("field")) == (code, field)
    assert api.get("/events/count").json()["count"] == 0


def test_a_large_body_nested_too_deep_to_redact_is_refused(api: httpx.Client) -> None:
    deep: Any = "x"
    for _ in range(39):  # within the parser's limit, past nothing else
        deep = {"d": deep}
    body = {"eventType": "pageview", "siteId": "localhost", "eventData": {"deep": deep}}
    body["eventData"] |= padding(OFF_LOOP_BODY_BYTES)
    assert api.post("/collect", json=body).status_code == 200
    for _ in range(30):
        deep = {"d": deep}
    body["eventData"]["deep"] = deep
    answer = api.post("/collect", json=body)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "invalid_event"


def test_while_large_bodies_are_processed_other_requests_are_answered(
    database_url: str, tmp_path: Path
) -> None:
    """Against ``evothesis serve``: CORS preflights (answered on the event loop alone) sent
    while 1 MB bodies are processed wait far less than one such body takes. With the work
    on the loop, some preflight waited for a whole body."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = process_env(
        DATABASE_URL=database_url,
        EVOTHESIS_DATA_DIR=str(tmp_path / "data"),
        EXPORT_IN_SERVE="false",
    )
    command = [sys.executable, "-m", "evothesis", "serve", "--port", str(port)]
    log = tmp_path / "serve.log"
    body = orjson.dumps(batch([event(index, noise=25) for index in range(450)]))
    assert 900_000 < len(body) < 1024 * 1024
    headers = {"Origin": LOCAL_ORIGIN, "Content-Type": "application/json"}
    with (
        killed_on_exit(start_process(command, env=env, log=log, health_url=f"{url}/health")) as (
            server
        ),
        httpx.Client(base_url=url, headers=headers, timeout=60) as client,
    ):
        assert client.post("/collect", content=body).status_code == 200  # workers started
        took: list[float] = []
        waited: list[float] = []

        def post_bodies() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=60) as sender:
                for _ in range(4):
                    started = time.monotonic()
                    assert sender.post("/collect", content=body).status_code == 200
                    took.append(time.monotonic() - started)

        sender = threading.Thread(target=post_bodies)
        sender.start()
        while sender.is_alive():
            started = time.monotonic()
            preflight = client.options(
                "/collect", headers={"Access-Control-Request-Method": "POST"}
            )
            waited.append(time.monotonic() - started)
            assert preflight.status_code == 204
            time.sleep(0.005)
        sender.join()
        assert len(took) == 4 and len(waited) > 20
        assert max(waited) < statistics.median(took) / 4, (max(waited), took)
        count = client.get("/events/count", headers=OPERATOR_HEADERS).json()["count"]
        assert count == 5 * 451
        assert stop_process(server) == 0
