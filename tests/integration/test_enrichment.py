"""Enrichment and failed events end to end: real collector, PostgreSQL and S3 API (moto)."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from psycopg.rows import dict_row

from evothesis.domain import ENRICHED_COLUMNS
from evothesis.export.pipeline import ExportPipeline
from tests.support.geo import LONDON_IP, write_city_database
from tests.support.postgres import register_client
from tests.support.prometheus_text import parse, value
from tests.support.s3 import (
    S3,
    Buckets,
    processed_events,
    raw_events,
    run_pipeline,
    s3_environment,
)
from tests.support.servers import RunningCollector

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
LANDING = "https://localhost/landing?utm_source=newsletter&utm_medium=email&utm_campaign=may"


@pytest.fixture(scope="module")
def city_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_city_database(tmp_path_factory.mktemp("geo") / "city.mmdb")


@pytest.fixture
def env(s3: S3, buckets: Buckets, city_database: Path) -> dict[str, Any]:
    return s3_environment(s3, buckets, GEOIP_DATABASE=str(city_database))


def stored(db: psycopg.Connection[Any], table: str = "events_log") -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT * FROM {table} ORDER BY id")
        return cur.fetchall()


async def export_and_process(pipeline: ExportPipeline) -> None:
    await pipeline.export()
    await pipeline.process()


def failed_exports(s3: S3, bucket: str) -> dict[str, list[dict[str, Any]]]:
    return {
        key: [orjson.loads(line) for line in gzip.decompress(s3.get(bucket, key)).splitlines()]
        for key in s3.keys(bucket, "failed-events/")
    }


def post(
    collector: RunningCollector,
    document: dict[str, Any],
    *,
    origin: str = "http://localhost",
    user_agent: str = IPHONE,
    ip: str = LONDON_IP,
) -> httpx.Response:
    with collector.client(origin=origin) as client:
        return client.post(
            "/collect",
            json=document,
            headers={"User-Agent": user_agent, "X-Forwarded-For": ip},
        )


def batch(site: str, *inner: object, **fields: Any) -> dict[str, Any]:
    return {
        "eventType": "batch",
        "sessionId": "sess_1",
        "visitorId": "vis_1",
        "siteId": site,
        "url": LANDING,
        "referrer": "https://www.google.com/",
        "events": list(inner),
        **fields,
    }


def test_events_are_enriched_in_columns_and_in_every_export(
    start_collector: Any, db: Any, database_url: str, s3: S3, buckets: Buckets, env: Any
) -> None:
    collector = start_collector(**env)
    response = post(collector, batch("localhost", {"eventType": "click"}))
    assert response.status_code == 200, response.text
    rows = stored(db)
    assert len(rows) == 2
    for row in rows:
        assert (row["browser"], row["browser_version"], row["os"], row["device_type"]) == (
            "Mobile Safari",
            "17.4",
            "iOS",
            "mobile",
        )
        assert row["is_bot"] is False
        assert (row["country"], row["region"], row["city"]) == ("GB", "ENG", "London")
        # UTM from the URL (the sender sent none), email beats the search referrer.
        assert (row["referrer_class"], row["utm_source"], row["utm_medium"]) == (
            "email",
            "newsletter",
            "email",
        )
        assert row["utm_campaign"] == "may"

    run_pipeline(database_url, export_and_process, **env)
    by_id = {str(row["event_id"]): row for row in rows}
    [exported_raw, exported_processed] = [
        raw_events(s3, buckets.raw),
        processed_events(s3, buckets.processed, "client_test"),
    ]
    for exported in (exported_raw, exported_processed):
        assert {e["event_id"] for e in exported} == set(by_id)
        for event in exported:
            row = by_id[event["event_id"]]
            assert {name: event[name] for name in ENRICHED_COLUMNS} == {
                name: row[name] for name in ENRICHED_COLUMNS
            }


def test_a_gdpr_client_stores_and_exports_the_country_but_no_ip_and_no_city(
    start_collector: Any, db: Any, database_url: str, s3: S3, buckets: Buckets, env: Any
) -> None:
    register_client(database_url, "client_eu", "eu.test", privacy_level="gdpr", export_format="csv")
    collector = start_collector(**env)
    response = post(collector, batch("eu.test", {"eventType": "click"}), origin="http://eu.test")
    assert response.status_code == 200, response.text

    rows = stored(db)
    assert len(rows) == 2
    for row in rows:
        assert (row["country"], row["region"], row["city"]) == ("GB", None, None)
        assert row["ip_address"] != LONDON_IP
    run_pipeline(database_url, export_and_process, **env)
    exported = [*raw_events(s3, buckets.raw), *processed_events(s3, buckets.processed, "client_eu")]
    assert len(exported) == 4
    for event in exported:
        assert event["country"] == "GB"
        assert event["city"] in (None, "")  # csv writes null as an empty field
        assert event["region"] in (None, "")
        assert LONDON_IP not in orjson.dumps(event).decode()
        assert "London" not in orjson.dumps(event).decode()


def test_a_batch_stores_its_valid_events_and_records_the_invalid_ones(
    start_collector: Any, db: Any, database_url: str, s3: S3, buckets: Buckets, env: Any
) -> None:
    collector = start_collector(**env)
    document = batch(
        "localhost",
        {"eventType": "click", "eventData": {"n": 1}, "eventId": str(uuid.uuid4())},
        {"eventType": "click", "eventData": ["not", "an", "object"], "note": "jane@example.com"},
        "not an event",
        {"eventType": "scroll", "eventData": {"depth": 25}, "eventId": str(uuid.uuid4())},
        {"eventType": "click", "sessionId": 42},
        eventId="0190a6f1-0000-7000-8000-000000000001",
    )
    response = post(collector, document)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["events_processed"] == 3
    assert body["events_rejected"] == 3
    assert [(r["index"], r["reason"], r["field"]) for r in body["rejected_reasons"]] == [
        (1, "wrong_type", "events[1].eventData"),
        (2, "not_an_object", "events[2]"),
        (4, "wrong_type", "events[4].sessionId"),
    ]
    assert {"status", "message", "events_processed", "client_id", "timestamp"} <= set(body)

    assert [r["event_type"] for r in stored(db)] == ["batch", "click", "scroll"]
    failed = stored(db, "failed_events")
    assert [(f["position"], f["reason"]) for f in failed] == [
        (1, "wrong_type"),
        (2, "not_an_object"),
        (4, "wrong_type"),
    ]
    assert failed[0]["payload"]["note"] == "[REDACTED]"  # privacy applies to failures too
    assert failed[1]["payload"] == "not an event"
    assert {f["client_id"] for f in failed} == {"client_test"}

    # A retry of the same request (the same event ids) stores and records nothing twice.
    assert post(collector, document).status_code == 200
    assert len(stored(db, "failed_events")) == 3
    assert len(stored(db)) == 3

    run_pipeline(database_url, export_and_process, **env)
    assert sorted(e["event_type"] for e in raw_events(s3, buckets.raw)) == [
        "batch",
        "click",
        "scroll",
    ]
    [(key, lines)] = failed_exports(s3, buckets.backup).items()
    assert key.startswith("failed-events/") and key.endswith(".jsonl.gz")
    assert [(line["position"], line["reason"]) for line in lines] == [
        (1, "wrong_type"),
        (2, "not_an_object"),
        (4, "wrong_type"),
    ]
    assert lines[0]["payload"]["note"] == "[REDACTED]"

    # Exported once: a second round has nothing new, and the file is not repeated.
    run_pipeline(database_url, export_and_process, **env)
    assert list(failed_exports(s3, buckets.backup)) == [key]

    with collector.client() as client:
        metrics = parse(client.get("/metrics").text)
    # Counted per request received: the retry's three count too.
    assert value(metrics, "evothesis_events_rejected_total", reason="wrong_type") == 4
    assert value(metrics, "evothesis_events_rejected_total", reason="not_an_object") == 2


def test_an_invalid_envelope_is_still_refused_whole(start_collector: Any, db: Any) -> None:
    collector = start_collector()
    response = post(collector, {**batch("localhost", {"eventType": "click"}), "sessionId": 1})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "sessionId"
    assert stored(db) == [] and stored(db, "failed_events") == []


def test_long_strings_are_truncated_and_other_limits_reject_the_event(
    start_collector: Any, db: Any
) -> None:
    collector = start_collector(EVENT_MAX_STRING_LENGTH=64, EVENT_MAX_PROPERTIES=5)
    response = post(
        collector,
        batch(
            "localhost",
            {"eventType": "custom", "eventData": {"text": "x" * 100}},
            {"eventType": "custom", "eventData": {str(n): n for n in range(10)}},
        ),
    )
    assert response.json()["events_rejected"] == 1
    text = stored(db)[1]["raw_event_data"]["eventData"]["text"]
    assert len(text) == 64 and text.endswith("…[truncated]")
    [failed] = stored(db, "failed_events")
    assert failed["reason"] == "too_many_properties"


def test_bots_are_kept_and_flagged_or_dropped_and_counted_per_client(
    start_collector: Any, db: Any, database_url: str
) -> None:
    register_client(database_url, "client_nobots", "nobots.test", bot_policy="drop")
    collector = start_collector()
    kept = post(collector, batch("localhost", {"eventType": "click"}), user_agent=GOOGLEBOT)
    assert kept.json()["events_processed"] == 2
    dropped = post(
        collector,
        batch("nobots.test", {"eventType": "click"}),
        origin="http://nobots.test",
        user_agent="curl/8.5.0",
    )
    assert dropped.status_code == 200
    assert (dropped.json()["events_processed"], dropped.json()["events_dropped"]) == (0, 2)
    assert "bots" in dropped.json()["message"]

    rows = stored(db)
    assert {r["client_id"] for r in rows} == {"client_test"}
    assert all(r["is_bot"] and r["device_type"] == "bot" for r in rows)
    with collector.client() as client:
        metrics = parse(client.get("/metrics").text)
    assert value(metrics, "evothesis_events_dropped_total", reason="bot_http_client") == 2


def test_enrichment_off_leaves_the_columns_empty(start_collector: Any, db: Any) -> None:
    collector = start_collector(ENRICHMENT="off")
    assert post(collector, batch("localhost", {"eventType": "click"})).status_code == 200
    for row in stored(db):
        assert row["is_bot"] is False
        assert all(row[name] is None for name in ENRICHED_COLUMNS if name != "is_bot")
