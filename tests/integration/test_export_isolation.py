"""One tenant's bad event never holds up another's delivery: rows no export format can
render (stored before intake refused them, or by a future bug) are set aside as failed
events with their reason, and every other event of their raw object is delivered once."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import orjson
import psycopg
import pytest

from tests.support.postgres import register_client
from tests.support.s3 import S3, Buckets, processed_events, s3_environment, sql
from tests.support.servers import LOCAL_ORIGIN, RunningCollector

ADMIN = "admin-token-for-isolation-tests"
StartCollector = Callable[..., RunningCollector]


def post(collector: RunningCollector, origin: str, site: str, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with collector.client(origin=origin) as client:
        for event_id in ids:
            body = {"eventType": "pageview", "siteId": site, "eventId": event_id}
            assert client.post("/collect", json=body).status_code == 200
    return ids


def poison(database_url: str, client_id: str, site: str, timestamp: str) -> str:
    """A row as the collector stored it before it refused such times (or as a bug might):
    PostgreSQL keeps year 1 and 9999 as -infinity and infinity."""
    event_id = str(uuid.uuid4())
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events_log (event_id, event_type, site_id, client_id, visitor_id,"
            " timestamp, raw_event_data, source) VALUES (%s, 'pageview', %s, %s, 'vis_poison',"
            " %s, %s, 'browser')",
            (
                event_id,
                site,
                client_id,
                timestamp,
                orjson.dumps({"eventType": "pageview"}).decode(),
            ),
        )
    return event_id


@pytest.mark.parametrize("timestamp", ["-infinity", "infinity"])
def test_an_unrenderable_row_is_set_aside_and_every_other_event_is_delivered_once(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets, timestamp: str
) -> None:
    register_client(database_url, "client_acme", "acme.example", export_format="parquet")
    register_client(database_url, "client_globex", "globex.example", export_format="csv")
    collector = start_collector(**s3_environment(s3, buckets, EVOTHESIS_ADMIN_TOKEN=ADMIN))
    acme = post(collector, "https://acme.example", "acme.example", 5)
    bad = poison(database_url, "client_acme", "acme.example", timestamp)
    acme += post(collector, "https://acme.example", "acme.example", 5)
    globex = post(collector, "https://globex.example", "globex.example", 7)
    local = post(collector, LOCAL_ORIGIN, "localhost", 3)

    admin = {"Authorization": f"Bearer {ADMIN}"}
    with collector.client(origin=None, headers=admin) as http:
        exported = http.post("/export/run")
        assert exported.status_code == 200, exported.text
        processed = http.post("/process/run")
        assert processed.status_code == 200, processed.text  # never a 500
        assert processed.json()["process"]["failed"] == []
        status = http.get("/process/status").json()
        assert (status["unprocessed_objects"], status["failing_deliveries"]) == (0, 0)
        assert http.get("/pipeline/status").json()["status"] == "healthy"

    # Every other event exactly once, in each client's own format; the bad row nowhere.
    for client_id, ids in (("client_acme", acme), ("client_globex", globex)):
        delivered = [
            event["event_id"] for event in processed_events(s3, buckets.processed, client_id)
        ]
        assert sorted(delivered) == sorted(ids), client_id
    dev = [event["event_id"] for event in processed_events(s3, buckets.processed, "client_test")]
    assert sorted(dev) == sorted(local)

    # The bad row is found with its reason, under its client, and never quoted.
    [failed] = sql(
        database_url,
        "SELECT client_id, site_id, reason, field, message, payload FROM failed_events",
    )
    client_id, site_id, reason, field, message, payload = failed
    assert (client_id, site_id, reason, field) == (
        "client_acme",
        "acme.example",
        "unrenderable",
        None,
    )
    assert message == "'timestamp' is not an ISO-8601 time with an offset"
    assert payload["event_id"] == bad

    # Processing again (a retried delivery) records it once.
    with collector.client(origin=None, headers=admin) as http:
        assert http.post("/process/run").status_code == 200
    assert sql(database_url, "SELECT count(*) FROM failed_events")[0][0] == 1


def test_a_damaged_raw_object_fails_its_own_deliveries_with_a_recorded_error_only(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    """A raw object that cannot be read at all (not gzip): its deliveries wait with the
    error where the status shows it, nobody is paused, the next object is delivered."""
    collector = start_collector(
        **s3_environment(s3, buckets, EVOTHESIS_ADMIN_TOKEN=ADMIN, EXPORT_BATCH_SIZE=3)
    )
    first = post(collector, LOCAL_ORIGIN, "localhost", 3)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with collector.client(origin=None, headers=admin) as http:
        assert http.post("/export/run").status_code == 200
    [key] = [key for key in s3.keys(buckets.raw, "raw-events/")]
    s3.client.put_object(Bucket=buckets.raw, Key=key, Body=b"not a gzip object")
    second = post(collector, LOCAL_ORIGIN, "localhost", 3)
    with collector.client(origin=None, headers=admin) as http:
        assert http.post("/export/run").status_code == 200
        response = http.post("/process/run")
        assert response.status_code == 502, response.text  # a failure, named, never a 500
        assert "could not process the raw object" in response.json()["error"]["message"]
        status = http.get("/process/status").json()
        [client] = status["clients"]
        assert (client["failing_deliveries"], client["paused"]) == (1, False)
        assert "could not process the raw object" in client["delivery_error"]
        assert http.get("/pipeline/status").json()["status"] == "degraded"
    delivered = [e["event_id"] for e in processed_events(s3, buckets.processed, "client_test")]
    assert sorted(delivered) == sorted(second)
    assert not set(first) & set(delivered)
