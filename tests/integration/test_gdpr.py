"""Data-subject requests end to end: events posted to a real collector, exported to a real
S3 API (moto) in every format, then exported or deleted by visitor through the admin API,
the CLI and the service itself, with every object read back and compared."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from evothesis.config import Settings
from evothesis.errors import ExportsRunning, StorageUnavailable
from evothesis.export.pipeline import ExportPipeline
from evothesis.gdpr.requests import receipt_key
from evothesis.gdpr.subjects import Subject
from evothesis.services import PoolSize, open_services
from tests.support.postgres import register_client, with_registry
from tests.support.s3 import (
    S3,
    Buckets,
    client_credentials,
    decode_file,
    run_pipeline,
    s3_environment,
    sql,
)
from tests.support.servers import RunningCollector

TOKEN = "gdpr-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Clients, their formats and sites; the visitor under request exists in two of them.
CLIENTS = {
    "shop_json": ("json", "http://shop.test", "shop.test"),
    "blog_csv": ("csv", "http://blog.test", "blog.test"),
    "docs_parquet": ("parquet", "http://docs.test", "docs.test"),
}
TARGET = "visitor-42"
#: An id that PostgreSQL and orjson may spell differently inside JSON: checked line by line.
AWKWARD_TARGET = 'vïsitor "42" \\ tab\t'
OTHERS = ("visitor-7", "visitor-420", "42")

StartCollector = Callable[..., RunningCollector]


@dataclass
class Scenario:
    collector: RunningCollector
    env: dict[str, Any]
    #: Every (client, visitor) the test posted, with the event ids of each.
    posted: dict[tuple[str, str], set[str]]


def _post(collector: RunningCollector, client_id: str, visitor: str, round_: int) -> set[str]:
    """A single event and a batch (envelope + 3) for one visitor of one client."""
    _, origin, site = CLIENTS[client_id]
    sender = {"siteId": site, "visitorId": visitor, "sessionId": f"s-{round_}"}
    single = {
        "eventType": "pageview",
        "eventId": str(uuid.uuid4()),
        **sender,
        "eventData": {"label": 'comma, "quote"\nline', "round": round_},
    }
    batch = {
        "eventType": "batch",
        "eventId": str(uuid.uuid4()),
        **sender,
        "events": [{"eventType": "click", "eventId": str(uuid.uuid4())} for _ in range(3)],
    }
    with collector.client(origin=origin) as client:
        for body in (single, batch):
            response = client.post("/collect", json=body)
            assert response.status_code == 200, response.text
    return {single["eventId"], batch["eventId"], *(e["eventId"] for e in batch["events"])}


async def _export_and_process(pipeline: ExportPipeline) -> None:
    exported = await pipeline.export()
    processed = await pipeline.process()
    assert not exported.failed_batches and not processed.failed


def build_scenario(
    database_url: str,
    start_collector: StartCollector,
    s3: S3,
    buckets: Buckets,
    *,
    destinations: dict[str, str] | None = None,
) -> Scenario:
    """Three rounds of traffic, each exported and processed into its own batch, then a
    fourth left in the buffer: the visitor is in several objects and in the buffer."""
    for client_id, (fmt, _, site) in CLIENTS.items():
        extra: dict[str, Any] = {}
        if destinations and client_id in destinations:
            extra = {
                "export_destination": destinations[client_id],
                "export_credentials": client_credentials(s3),
            }
        register_client(database_url, client_id, site, export_format=fmt, **extra)
    env = s3_environment(
        s3, buckets, EVOTHESIS_ADMIN_TOKEN=TOKEN, EXPORT_INTERVAL="off", BUFFER_RETENTION="7d"
    )
    collector = start_collector(**env)
    posted: dict[tuple[str, str], set[str]] = {}
    visitors = {
        "shop_json": (TARGET, AWKWARD_TARGET, *OTHERS),
        "blog_csv": (TARGET, *OTHERS),
        "docs_parquet": (AWKWARD_TARGET, *OTHERS),
    }
    for round_ in range(4):
        for client_id, ids in visitors.items():
            for visitor in ids:
                posted.setdefault((client_id, visitor), set()).update(
                    _post(collector, client_id, visitor, round_)
                )
        if round_ < 3:
            run_pipeline(database_url, _export_and_process, **env)
    return Scenario(collector, env, posted)


def objects(s3: S3, bucket: str) -> dict[str, bytes]:
    return {key: s3.get(bucket, key) for key in s3.keys(bucket)}


def raw_lines(data: bytes) -> list[bytes]:
    return gzip.decompress(data).splitlines()


def is_visitor(line: bytes, client_id: str, visitor: str) -> bool:
    event = orjson.loads(line)
    return bool(event["client_id"] == client_id and event["visitor_id"] == visitor)


def buffered(database_url: str, client_id: str, visitor: str) -> set[str]:
    rows = sql(
        database_url,
        "SELECT event_id::text FROM events_log WHERE client_id = %s AND visitor_id = %s",
        (client_id, visitor),
    )
    return {event_id for (event_id,) in rows}


def assert_deleted_exactly(
    s3: S3,
    buckets: Buckets,
    before: dict[str, dict[str, bytes]],
    client_id: str,
    visitor: str,
    processed_bucket: str,
) -> None:
    """The visitor is gone from every object; every other event is where it was, unchanged."""
    raw_after = objects(s3, buckets.raw)
    assert raw_after.keys() == before["raw"].keys()
    for key, data in before["raw"].items():
        kept = [line for line in raw_lines(data) if not is_visitor(line, client_id, visitor)]
        assert raw_lines(raw_after[key]) == kept, key  # byte for byte, same order
    processed_after = objects(s3, processed_bucket)
    assert processed_after.keys() == before["processed"].keys()
    for key, data in before["processed"].items():
        if key.endswith(".manifest.json"):
            continue
        if f"processed-events/{client_id}/" not in key:
            assert processed_after[key] == data, f"another client's file changed: {key}"
            continue
        old = decode_file(key, data)
        new = decode_file(key, processed_after[key])
        assert new == [e for e in old if e["visitor_id"] != visitor], key
        manifest = orjson.loads(processed_after[f"{key}.manifest.json"])
        assert manifest["export_metadata"]["event_count"] == len(new), key


def test_export_and_delete_a_visitor_over_the_admin_api(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    scenario = build_scenario(database_url, start_collector, s3, buckets)
    with scenario.collector.client(origin=None, headers=AUTH) as api:
        check_export_and_delete(database_url, s3, buckets, scenario, api)


def check_export_and_delete(
    database_url: str, s3: S3, buckets: Buckets, scenario: Scenario, api: Any
) -> None:
    # Export: every event of the visitor (objects and buffer), each once, oldest first.
    for client_id, visitor in (("shop_json", TARGET), ("docs_parquet", AWKWARD_TARGET)):
        response = api.post(
            "/api/v1/gdpr/export", json={"client_id": client_id, "visitor_id": visitor}
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/x-ndjson"
        events = [orjson.loads(line) for line in response.content.splitlines()]
        assert [e["event_id"] for e in events] != []
        assert sorted(e["event_id"] for e in events) == sorted(
            scenario.posted[(client_id, visitor)]
        )
        assert {(e["client_id"], e["visitor_id"]) for e in events} == {(client_id, visitor)}
        assert [(e["created_at"], e["id"]) for e in events] == sorted(
            (e["created_at"], e["id"]) for e in events
        )
        assert response.headers["x-event-count"] == str(len(events))
    # Some were still only in the buffer, some only in objects: both sources were used.
    assert buffered(database_url, "shop_json", TARGET)
    assert sql(database_url, "SELECT count(*) FROM export_batches")[0][0] == 3

    before = {"raw": objects(s3, buckets.raw), "processed": objects(s3, buckets.processed)}
    others_before = sql(
        database_url,
        "SELECT event_id::text, raw_event_data::text FROM events_log"
        " WHERE NOT (client_id = 'shop_json' AND visitor_id = %s) ORDER BY id",
        (TARGET,),
    )
    in_buffer = len(buffered(database_url, "shop_json", TARGET))
    response = api.post(
        "/api/v1/gdpr/delete", json={"client_id": "shop_json", "visitor_id": TARGET}
    )
    assert response.status_code == 200, response.text
    receipt = response.json()

    assert buffered(database_url, "shop_json", TARGET) == set()
    assert (
        sql(
            database_url,
            "SELECT event_id::text, raw_event_data::text FROM events_log ORDER BY id",
        )
        == others_before
    )
    assert_deleted_exactly(s3, buckets, before, "shop_json", TARGET, buckets.processed)
    # The same visitor id in another client is another person: untouched.
    assert buffered(database_url, "blog_csv", TARGET)

    # Retention keeps exported events in the buffer too: both places held them.
    removed_from_objects = sum(
        is_visitor(line, "shop_json", TARGET)
        for data in before["raw"].values()
        for line in raw_lines(data)
    )
    assert in_buffer == len(scenario.posted[("shop_json", TARGET)]) > removed_from_objects > 0
    assert receipt["kind"] == "delete"
    assert receipt["visitor_sha256"] == Subject.of_visitor(TARGET).digest
    assert TARGET not in response.text
    assert receipt["buffer_events_deleted"] == in_buffer
    assert receipt["events_deleted_from_objects"] == removed_from_objects
    assert receipt["objects_searched"] == 3
    rewritten = {(o["bucket"], o["key"]) for o in receipt["objects_rewritten"]}
    changed = {("raw", k) for k, v in before["raw"].items() if objects(s3, buckets.raw)[k] != v}
    changed |= {
        ("processed", k)
        for k, v in before["processed"].items()
        if not k.endswith(".manifest.json") and s3.get(buckets.processed, k) != v
    }
    assert rewritten == changed and len(changed) == 6
    stored_receipt = s3.get(
        buckets.backup, receipt_key("shop_json", uuid.UUID(receipt["request_id"]))
    )
    assert orjson.loads(stored_receipt) == receipt

    # The audit log: requested then completed, the visitor as a digest only.
    audit = api.get("/api/v1/gdpr/audit", params={"client_id": "shop_json"}).json()
    steps = [(a["kind"], a["step"]) for a in audit]
    assert steps[:2] == [("delete", "completed"), ("delete", "requested")]
    assert steps.count(("export", "completed")) == 1
    assert audit[0]["receipt"] == receipt
    assert all(a["visitor_sha256"] != TARGET for a in audit)

    # Afterwards: nothing left to export, and a repeated deletion finds nothing.
    again = api.post("/api/v1/gdpr/export", json={"client_id": "shop_json", "visitor_id": TARGET})
    assert again.status_code == 200 and again.content == b""
    repeat = api.post("/api/v1/gdpr/delete", json={"client_id": "shop_json", "visitor_id": TARGET})
    assert repeat.status_code == 200, repeat.text
    assert repeat.json()["objects_rewritten"] == []
    assert repeat.json()["buffer_events_deleted"] == 0

    # The remaining buffer exports and processes as usual, without the visitor.
    run_pipeline(database_url, _export_and_process, **scenario.env)
    for key, data in objects(s3, buckets.raw).items():
        assert not [line for line in raw_lines(data) if is_visitor(line, "shop_json", TARGET)], key
    for key, data in objects(s3, buckets.processed).items():
        if "processed-events/shop_json/" in key and not key.endswith(".manifest.json"):
            assert TARGET not in {e["visitor_id"] for e in decode_file(key, data)}, key


def test_requests_are_refused_clearly(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    collector = start_collector(**s3_environment(s3, buckets, EVOTHESIS_ADMIN_TOKEN=TOKEN))
    body = {"client_id": "client_test", "visitor_id": "v"}
    with collector.client(origin=None) as anonymous:
        for path in ("/api/v1/gdpr/export", "/api/v1/gdpr/delete"):
            response = anonymous.post(path, json=body)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
    with collector.client(origin=None, headers=AUTH) as api:
        unknown = api.post("/api/v1/gdpr/delete", json={"client_id": "nobody", "visitor_id": "v"})
        assert unknown.status_code == 404
        assert "nobody" in unknown.json()["error"]["message"]
        for bad in ({"client_id": "client_test"}, {**body, "visitor_id": ""}, {**body, "x": 1}):
            response = api.post("/api/v1/gdpr/export", json=bad)
            assert response.status_code == 422, bad
            assert response.json()["status"] == "error"
        # A client without any data: an empty export and an empty receipt, both audited.
        assert api.post("/api/v1/gdpr/export", json=body).content == b""
        assert api.post("/api/v1/gdpr/delete", json=body).json()["objects_searched"] == 0
        assert len(api.get("/api/v1/gdpr/audit").json()) == 4


def test_a_deletion_cut_short_by_a_failing_destination_completes_when_run_again(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    destination = s3.new_bucket("client-own")
    scenario = build_scenario(
        database_url,
        start_collector,
        s3,
        buckets,
        destinations={"blog_csv": f"s3://{destination}/exports"},
    )
    before = {"raw": objects(s3, buckets.raw), "processed": objects(s3, destination)}

    def set_destination(url: str) -> None:
        with_registry(
            database_url, lambda store: store.update_client("blog_csv", {"export_destination": url})
        )

    set_destination(f"s3://missing-{uuid.uuid4().hex[:8]}/exports")
    with scenario.collector.client(origin=None, headers=AUTH) as api:
        failed = api.post(
            "/api/v1/gdpr/delete", json={"client_id": "blog_csv", "visitor_id": TARGET}
        )
        assert failed.status_code == 503, failed.text
        assert failed.json()["error"]["code"] == "request_incomplete"
        assert "run the same request again" in failed.json()["error"]["message"]
        # Files are rewritten before their raw object: the visitor is still findable there.
        assert objects(s3, buckets.raw) == before["raw"]
        assert buffered(database_url, "blog_csv", TARGET) == set()

        set_destination(f"s3://{destination}/exports")
        done = api.post("/api/v1/gdpr/delete", json={"client_id": "blog_csv", "visitor_id": TARGET})
        assert done.status_code == 200, done.text
        steps = [a["step"] for a in api.get("/api/v1/gdpr/audit").json()]
    assert steps == ["completed", "requested", "failed", "requested"]
    assert_deleted_exactly(s3, buckets, before, "blog_csv", TARGET, destination)
    assert len(done.json()["objects_rewritten"]) == 6


def test_a_deletion_waits_for_running_exports_and_keeps_them_out(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    scenario = build_scenario(database_url, start_collector, s3, buckets)
    settings = Settings(_env_file=None, ENVIRONMENT="test", **scenario.env)
    order: list[str] = []

    async def run() -> None:
        async with open_services(
            settings, database_url=database_url, pool_size=PoolSize(1, 6)
        ) as services:
            pipeline, requests = services.pipeline, services.subjects
            async with pipeline.ledger.running():
                with pytest.raises(ExportsRunning, match="retry"):
                    await requests.delete("shop_json", TARGET, wait_s=0.3)
            assert buffered(database_url, "shop_json", TARGET), "a refused request deleted"

            async with pipeline.ledger.running():
                # Queued behind the running export; the next run queues behind the deletion.
                deletion = asyncio.create_task(requests.delete("shop_json", TARGET, wait_s=30))
                await asyncio.sleep(0.3)
                assert not deletion.done()
                order.append("export finished")
            export = asyncio.create_task(pipeline.export())
            receipt = await deletion
            order.append("deletion finished")
            await export
            order.append("next export finished")
            assert receipt["buffer_events_deleted"] > 0

    asyncio.run(run())
    assert order == ["export finished", "deletion finished", "next export finished"]
    steps = [row[0] for row in sql(database_url, "SELECT step FROM gdpr_audit ORDER BY id")]
    assert steps == ["requested", "failed", "requested", "completed"]


def test_the_cli_exports_and_deletes_a_visitor(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets, tmp_path: Any
) -> None:
    scenario = build_scenario(database_url, start_collector, s3, buckets)
    env = {
        **os.environ,
        **{k: str(v) for k, v in scenario.env.items()},
        "DATABASE_URL": database_url,
        "ENVIRONMENT": "test",
    }
    cli = [sys.executable, "-m", "evothesis", "gdpr"]
    target = ["--client", "blog_csv", "--visitor", TARGET]
    output = tmp_path / "visitor.jsonl"

    exported = subprocess.run(
        [*cli, "export", *target, "-o", str(output)], env=env, capture_output=True, timeout=120
    )
    assert exported.returncode == 0, exported.stderr.decode()
    ids = {orjson.loads(line)["event_id"] for line in output.read_bytes().splitlines()}
    assert ids == scenario.posted[("blog_csv", TARGET)]
    assert (
        f"Wrote {len(ids)} event(s) and 0 failed event(s) to {output}" in exported.stderr.decode()
    )

    refused = subprocess.run(
        [*cli, "delete", *target], env=env, capture_output=True, timeout=120, input=b"n\n"
    )
    assert refused.returncode == 1 and buffered(database_url, "blog_csv", TARGET)

    deleted = subprocess.run(
        [*cli, "delete", *target, "--yes"], env=env, capture_output=True, timeout=120
    )
    assert deleted.returncode == 0, deleted.stderr.decode()
    receipt = orjson.loads(deleted.stdout)
    # Four rounds of five events in the buffer (retention keeps them), three of them exported.
    assert receipt["buffer_events_deleted"] == len(ids) == 20
    assert receipt["events_deleted_from_objects"] == 15

    audit = subprocess.run([*cli, "audit", "--client", "blog_csv"], env=env, capture_output=True)
    assert audit.returncode == 0, audit.stderr.decode()
    assert orjson.loads(audit.stdout)[0]["step"] == "completed"

    unknown = subprocess.run(
        [*cli, "export", "--client", "nobody", "--visitor", "v"], env=env, capture_output=True
    )
    assert unknown.returncode == 1
    assert unknown.stderr.decode().strip() == "Error: no client 'nobody'"
    for ids in ([], ["--visitor", "v", "--user", "u"]):
        ambiguous = subprocess.run(
            [*cli, "export", "--client", "blog_csv", *ids], env=env, capture_output=True
        )
        assert ambiguous.returncode == 2
        assert "exactly one of --visitor and --user" in ambiguous.stderr.decode()
    # By user id: this client's events carry none, and its requests say what they searched.
    by_user = subprocess.run(
        [*cli, "export", "--client", "blog_csv", "--user", "user-1", "-o", "-"],
        env=env,
        capture_output=True,
    )
    assert (by_user.returncode, by_user.stdout) == (0, b"")


def test_export_runs_refuse_a_pool_too_small_to_hold_the_lock(
    database_url: str, tmp_path: Any
) -> None:
    """The run holds one connection for the lock and queries on another: with one
    connection it would wait on itself, so it says what to configure instead."""
    settings = Settings(_env_file=None, ENVIRONMENT="test", EVOTHESIS_DATA_DIR=str(tmp_path))

    async def run() -> None:
        async with open_services(
            settings, database_url=database_url, pool_size=PoolSize(1, 1)
        ) as services:
            with pytest.raises(StorageUnavailable, match="DATABASE_POOL_SIZE"):
                await services.pipeline.export()

    asyncio.run(run())


def _post_with_failures(
    collector: RunningCollector, client_id: str, visitor: str, round_: int
) -> None:
    """A batch whose envelope and one inner event are stored, and two inner events fail."""
    _, origin, site = CLIENTS[client_id]
    body = {
        "eventType": "batch",
        "eventId": str(uuid.uuid4()),
        "siteId": site,
        "visitorId": visitor,
        "sessionId": f"s-{round_}",
        "events": [
            {"eventType": "click", "eventId": str(uuid.uuid4())},
            {"eventType": "click", "eventData": "not an object", "round": round_},
            "not an event",
        ],
    }
    with collector.client(origin=origin) as client:
        response = client.post("/collect", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["events_rejected"] == 2


def failed_rows(database_url: str) -> list[tuple[str, str | None, int]]:
    return sql(
        database_url,
        "SELECT client_id, visitor_id, position FROM failed_events ORDER BY id",
    )


def test_failed_events_are_exported_and_deleted_with_their_visitor(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    for client_id, (fmt, _, site) in CLIENTS.items():
        register_client(database_url, client_id, site, export_format=fmt)
    env = s3_environment(
        s3, buckets, EVOTHESIS_ADMIN_TOKEN=TOKEN, EXPORT_INTERVAL="off", BUFFER_RETENTION="7d"
    )
    collector = start_collector(**env)
    # Round 0 is exported (its failures go to the backup bucket), round 1 stays buffered.
    for round_ in range(2):
        for client_id, visitor in (
            ("shop_json", TARGET),
            ("shop_json", "visitor-7"),
            ("blog_csv", TARGET),  # the same id in another client: another person
        ):
            _post_with_failures(collector, client_id, visitor, round_)
        if round_ == 0:
            run_pipeline(database_url, _export_and_process, **env)
    [failed_key] = s3.keys(buckets.backup, "failed-events/")
    failed_file = raw_lines(s3.get(buckets.backup, failed_key))
    assert len(failed_file) == 6
    others = [line for line in failed_file if not is_visitor(line, "shop_json", TARGET)]
    assert len(others) == 4

    with collector.client(origin=None, headers=AUTH) as api:
        exported = api.post(
            "/api/v1/gdpr/export", json={"client_id": "shop_json", "visitor_id": TARGET}
        )
        assert exported.status_code == 200, exported.text
        lines = [orjson.loads(line) for line in exported.content.splitlines()]
        # Two stored events per round, then two failed events per round: from the object
        # and the buffer, each once (retention keeps round 0 in both).
        assert exported.headers["x-event-count"] == "4"
        assert exported.headers["x-failed-event-count"] == "4"
        events, failed = lines[:4], lines[4:]
        assert {e["event_type"] for e in events} == {"batch", "click"}
        assert [(f["position"], f["reason"]) for f in failed] == [
            (1, "wrong_type"),
            (2, "not_an_object"),
        ] * 2
        assert {(f["client_id"], f["visitor_id"], f["session_id"]) for f in failed[:2]} == {
            ("shop_json", TARGET, "s-0")
        }
        assert failed[0]["payload"]["round"] == 0 and failed[2]["payload"]["round"] == 1

        deleted = api.post(
            "/api/v1/gdpr/delete", json={"client_id": "shop_json", "visitor_id": TARGET}
        )
        assert deleted.status_code == 200, deleted.text
        receipt = deleted.json()
        again = api.post(
            "/api/v1/gdpr/export", json={"client_id": "shop_json", "visitor_id": TARGET}
        )
        assert again.content == b"" and again.headers["x-failed-event-count"] == "0"

    assert receipt["buffer_failed_events_deleted"] == 4
    assert receipt["failed_events_deleted_from_objects"] == 2
    assert receipt["objects_searched"] == 2  # the raw object and the failed-events file
    backup_rewrites = [
        (o["key"], o["events_removed"])
        for o in receipt["objects_rewritten"]
        if o["bucket"] == "backup"
    ]
    assert backup_rewrites == [(failed_key, 2)]
    # Everyone else's failures are kept, byte for byte, in the same order.
    assert raw_lines(s3.get(buckets.backup, failed_key)) == others
    assert sorted(failed_rows(database_url)) == sorted(
        (client_id, visitor, position)
        for client_id, visitor in (("shop_json", "visitor-7"), ("blog_csv", TARGET))
        for position in (1, 2)
        for _round in range(2)
    )

    # The next export writes round 1's failures without the visitor's.
    run_pipeline(database_url, _export_and_process, **env)
    for key in s3.keys(buckets.backup, "failed-events/"):
        lines_left = raw_lines(s3.get(buckets.backup, key))
        assert not [line for line in lines_left if is_visitor(line, "shop_json", TARGET)], key
    assert len(s3.keys(buckets.backup, "failed-events/")) == 2


def test_a_deletion_reaches_every_partition_of_the_buffer(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    """The buffer is partitioned by arrival day: a visitor's events of an old day (the table
    before 0016), of a day of its own and of a day without one (the DEFAULT partition) are
    all exported and deleted, through the parent table."""
    sql(database_url, "SELECT events_log_add_partition('2030-01-01')")
    days = {
        "events_log_p_legacy": "2025-07-11 12:00+00",
        "events_log_p20300101": "2030-01-01 12:00+00",
        "events_log_default": "2031-01-01 12:00+00",
    }
    for visitor in (TARGET, OTHERS[0]):
        for at in days.values():
            sql(
                database_url,
                "INSERT INTO events_log (event_id, event_type, site_id, client_id, visitor_id,"
                " timestamp, raw_event_data, created_at) VALUES (gen_random_uuid(), 'click',"
                " 'localhost', 'client_test', %s, %s, '{}', %s)",
                (visitor, at, at),
            )
    held = sql(
        database_url,
        "SELECT tableoid::regclass::text FROM events_log WHERE visitor_id = %s",
        (TARGET,),
    )
    assert sorted(table for (table,) in held) == sorted(days)
    collector = start_collector(**s3_environment(s3, buckets, EVOTHESIS_ADMIN_TOKEN=TOKEN))
    body = {"client_id": "client_test", "visitor_id": TARGET}
    with collector.client(origin=None, headers=AUTH) as api:
        exported = api.post("/api/v1/gdpr/export", json=body)
        assert exported.status_code == 200, exported.text
        assert len(exported.content.splitlines()) == len(days)
        deleted = api.post("/api/v1/gdpr/delete", json=body)
        assert deleted.status_code == 200, deleted.text
    assert deleted.json()["buffer_events_deleted"] == len(days)
    assert buffered(database_url, "client_test", TARGET) == set()
    assert len(buffered(database_url, "client_test", OTHERS[0])) == len(days)
