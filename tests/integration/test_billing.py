"""Billing end to end: events posted to a real collector on chosen days (its clock is
injected), exported by the real pipeline to a real S3 API (moto), then read back through
GET /billing/usage and compared with exactly what was sent. Site discoveries are checked
against real PostgreSQL, including two flushes racing for the same new site."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from evothesis.app import create_app
from evothesis.clock import FixedClock
from evothesis.config import Settings
from evothesis.storage.events import EventStore
from evothesis.storage.pool import create_pool
from tests.support.loopback import free_port
from tests.support.postgres import register_client
from tests.support.rows import event_row, insert_rows
from tests.support.s3 import S3, Buckets, run_pipeline, s3_environment, sql
from tests.support.servers import collector_folders, serve_in_thread

TOKEN = "billing-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DAYS = [date(2026, 3, 30), date(2026, 3, 31), date(2026, 4, 1)]
#: (client, site, day) -> what was sent there.
Tally = dict[tuple[str, str, date], dict[str, Any]]


def noon(day: date, minutes: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC) + timedelta(minutes=minutes)


@pytest.fixture
def billed(database_url: str, s3: S3, buckets: Buckets) -> Iterator[tuple[httpx.Client, Tally]]:
    """Traffic of three clients over three days (singles, batches with rejected inner
    events, a wildcard subdomain), exported; yields an admin client and what was sent."""
    register_client(database_url, "client_a", "a.test", "*.a.test")
    register_client(database_url, "client_b", "b.test")
    env = s3_environment(s3, buckets, EVOTHESIS_ADMIN_TOKEN=TOKEN, EXPORT_BATCH_SIZE=7)
    scratch = collector_folders(env)
    clock = FixedClock(noon(DAYS[0]))
    settings = Settings(_env_file=None, ENVIRONMENT="test", **env)
    port = free_port()
    server, thread = serve_in_thread(
        create_app(settings, database_url=database_url, clock=clock), port
    )
    sent: Tally = {}

    def tally(client: str, site: str, day: date, **counts: int) -> None:
        entry = sent.setdefault((client, site, day), {"accepted": 0, "stored": 0, "rejected": {}})
        entry["accepted"] += counts.get("accepted", 0)
        entry["stored"] += counts.get("stored", 0)
        for reason in ("wrong_type", "not_an_object"):
            if counts.get(reason):
                entry["rejected"][reason] = entry["rejected"].get(reason, 0) + counts[reason]

    def post(origin: str, body: dict[str, Any]) -> None:
        response = httpx.post(
            f"http://127.0.0.1:{port}/collect", json=body, headers={"Origin": origin}
        )
        assert response.status_code == 200, response.text

    try:
        for n, day in enumerate(DAYS):
            for minute in range(n + 1):
                clock.at = noon(day, minute)
                post("http://a.test", {"eventType": "pageview", "siteId": "a.test"})
                tally("client_a", "a.test", day, accepted=1, stored=1)
                post(
                    "http://shop.a.test",
                    {
                        "eventType": "batch",
                        "siteId": "shop.a.test",
                        "events": [
                            {"eventType": "click", "eventData": {"n": minute}},
                            {"eventType": "click", "eventData": ["not", "an", "object"]},
                            "not an event",
                            {"eventType": "scroll", "eventData": {"depth": 25}},
                        ],
                    },
                )
                tally(
                    "client_a",
                    "shop.a.test",
                    day,
                    accepted=2,
                    stored=3,
                    wrong_type=1,
                    not_an_object=1,
                )
            if day != DAYS[1]:  # client_b is quiet on the middle day
                for _ in range(3):
                    post("http://b.test", {"eventType": "custom", "siteId": "b.test"})
                tally("client_b", "b.test", day, accepted=3, stored=3)
        exported = run_pipeline(database_url, lambda pipeline: pipeline.export(), **env)
        assert exported.failed_batches == []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=30) as api:
            yield api, sent
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)


def rows_of(body: dict[str, Any]) -> Tally:
    found: Tally = {}
    for client in body["clients"]:
        for row in client["days"]:
            assert row["bytes"] > 0
            found[(client["client_id"], row["site_id"], date.fromisoformat(row["day"]))] = {
                "accepted": row["accepted_events"],
                "stored": row["stored_events"],
                "rejected": row["rejected"],
            }
    return found


def test_usage_equals_what_was_sent_per_client_site_and_day(
    billed: tuple[httpx.Client, Tally], database_url: str
) -> None:
    api, sent = billed
    response = api.get("/billing/usage", params={"from": "2026-03-30", "to": "2026-04-01"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert rows_of(body) == sent
    assert body["reconciliation"]["reconciled"] is True, body["reconciliation"]
    assert body["reconciliation"]["batches_checked"] >= 2
    for client in body["clients"]:
        totals = client["totals"]
        assert totals["accepted_events"] == sum(
            v["accepted"] for (c, _, _), v in sent.items() if c == client["client_id"]
        )
        assert totals["bytes"] == sum(row["bytes"] for row in client["days"])
    # Stored events are exactly the buffer's rows; accepted ones exclude the envelopes.
    stored = dict(sql(database_url, "SELECT client_id, count(*) FROM events_log GROUP BY 1"))
    assert {c["client_id"]: c["totals"]["stored_events"] for c in body["clients"]} == stored
    assert body["totals"]["accepted_events"] == sum(v["accepted"] for v in sent.values())
    assert [(d["client_id"], d["site_id"], d["first_seen"][:10]) for d in body["discoveries"]] == [
        ("client_a", "a.test", "2026-03-30"),
        ("client_a", "shop.a.test", "2026-03-30"),
        ("client_b", "b.test", "2026-03-30"),
    ]

    # One day, one client: only that day's rows, and no discovery (first seen earlier).
    one = api.get(
        "/billing/usage", params={"from": "2026-03-31", "to": "2026-03-31", "client_id": "client_a"}
    ).json()
    assert rows_of(one) == {k: v for k, v in sent.items() if k[0] == "client_a" and k[2] == DAYS[1]}
    assert one["discoveries"] == []
    assert one["reconciliation"]["reconciled"] is True, one["reconciliation"]


def test_a_tampered_or_missing_metering_file_breaks_the_reconciliation(
    billed: tuple[httpx.Client, Tally], s3: S3, buckets: Buckets
) -> None:
    api, _ = billed
    params = {"from": "2026-03-30", "to": "2026-04-01"}
    keys = s3.keys(buckets.backup, "metering/")
    assert {tuple(key.split("/")[1:4]) for key in keys} == {
        ("2026", "03", "30"),
        ("2026", "03", "31"),
        ("2026", "04", "01"),
    }

    first = keys[0]
    lines = [orjson.loads(line) for line in s3.get(buckets.backup, first).splitlines()]
    lines[0]["stored_events"] += 1
    s3.client.put_object(
        Bucket=buckets.backup, Key=first, Body=b"".join(orjson.dumps(r) + b"\n" for r in lines)
    )
    tampered = api.get("/billing/usage", params=params).json()["reconciliation"]
    assert tampered["reconciled"] is False
    assert [(m["batch_id"], m["client_id"]) for m in tampered["mismatches"]] == [
        (lines[0]["batch_id"], lines[0]["client_id"])
    ]
    assert tampered["missing_files"] == []

    last = keys[-1]
    s3.client.delete_object(Bucket=buckets.backup, Key=last)
    missing = api.get("/billing/usage", params=params).json()["reconciliation"]
    batch = int(last.rsplit("batch-", 1)[1].split(".")[0])
    assert {"batch_id": batch, "day": "2026-04-01"} in missing["missing_files"]


def test_billing_needs_the_admin_token_and_valid_parameters(
    billed: tuple[httpx.Client, Tally],
) -> None:
    api, _ = billed
    base = str(api.base_url)
    for path in ("/billing/usage?from=2026-03-30&to=2026-03-31", "/billing/discoveries"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = httpx.get(base + path, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
    for params, status, text in [
        ({"from": "2026-03-xx", "to": "2026-03-31"}, 400, "from must be a date as YYYY-MM-DD"),
        ({"from": "2026-04-01", "to": "2026-03-31"}, 400, "is after to"),
        ({"from": "2025-01-01", "to": "2026-03-31"}, 400, "at most 366"),
        ({"to": "2026-03-31"}, 422, "from"),
    ]:
        response = api.get("/billing/usage", params=params)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert text in error["message"]
        assert error["code"] in ("invalid_period", "invalid_request")


def test_discoveries_are_listed_per_client(billed: tuple[httpx.Client, Tally]) -> None:
    api, _ = billed
    body = api.get("/billing/discoveries", params={"client_id": "client_a"}).json()
    assert [(d["site_id"], d["first_seen"]) for d in body["discoveries"]] == [
        ("a.test", "2026-03-30T12:00:00+00:00"),
        ("shop.a.test", "2026-03-30T12:00:00+00:00"),
    ]
    everyone = api.get("/billing/discoveries").json()["discoveries"]
    assert Counter(d["client_id"] for d in everyone) == {"client_a": 2, "client_b": 1}


# ------------------------------------------------------------------------- discoveries


def discoveries(database_url: str) -> list[tuple[Any, ...]]:
    return sql(
        database_url,
        "SELECT client_id, site_id, first_seen, recorded_at FROM site_discoveries ORDER BY 1, 2",
    )


def test_a_site_is_discovered_once_however_often_it_sends(database_url: str) -> None:
    day = noon(DAYS[0])
    insert_rows(database_url, [event_row("acme", "acme.test", day + timedelta(minutes=5))])
    [(_, _, first_seen, recorded_at)] = discoveries(database_url)
    # Later events, from this process and from a fresh one (another collector), change
    # nothing; an earlier one (a spool replayed late) moves first_seen back.
    insert_rows(
        database_url,
        [event_row("acme", "acme.test", day + timedelta(hours=1)) for _ in range(3)],
        [event_row("acme", "acme.test", day + timedelta(days=1))],
    )
    assert discoveries(database_url) == [("acme", "acme.test", first_seen, recorded_at)]
    insert_rows(database_url, [event_row("acme", "acme.test", day)])
    assert discoveries(database_url) == [("acme", "acme.test", day, recorded_at)]
    assert sql(database_url, "SELECT count(*) FROM events_log") == [(6,)]


def test_concurrent_flushes_record_one_discovery_with_the_earliest_event(
    database_url: str,
) -> None:
    """Four stores (four collectors) flush the same new sites at once, in different
    orders: one row per site, first seen at the earliest event of all flushes."""
    day = noon(DAYS[0])
    sites = [f"s{n}.race.test" for n in range(5)]

    async def run() -> None:
        pool = await create_pool(database_url, min_size=4, max_size=4)
        try:
            stores = [EventStore(pool) for _ in range(4)]
            flushes = [
                [
                    event_row("race", site, day + timedelta(seconds=10 * n + i))
                    for i, site in enumerate(sites[n:] + sites[:n])
                ]
                for n in range(4)
            ]
            for _ in range(3):  # repeated rounds: known sites are not written again
                await asyncio.gather(*(s.insert(f) for s, f in zip(stores, flushes, strict=True)))
                flushes = [[event_row("race", r.site_id, r.created_at) for r in f] for f in flushes]
        finally:
            await pool.close()

    asyncio.run(run())
    found = {site: first for _, site, first, _ in discoveries(database_url)}
    expected = {
        site: min(day + timedelta(seconds=10 * n + (sites.index(site) - n) % 5) for n in range(4))
        for site in sites
    }
    assert found == expected
    assert sql(database_url, "SELECT count(*) FROM events_log") == [(60,)]


def test_every_site_of_a_client_is_discovered_under_the_site_id_it_was_stored_with(
    database_url: str,
) -> None:
    insert_rows(
        database_url,
        [
            event_row("acme", "acme.test", noon(DAYS[0])),
            event_row("acme", "blog.acme.test", noon(DAYS[1])),
            event_row("other", "acme.test", noon(DAYS[2])),
        ],
    )
    assert [(c, s, f) for c, s, f, _ in discoveries(database_url)] == [
        ("acme", "acme.test", noon(DAYS[0])),
        ("acme", "blog.acme.test", noon(DAYS[1])),
        ("other", "acme.test", noon(DAYS[2])),
    ]
