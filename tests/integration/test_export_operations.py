"""Export operations end to end on moto: per-client schedules with an injected clock,
threshold and on-demand triggers, replays, failure notices to a webhook on loopback, dead
letters and retry-now. Crashes and concurrent workers mid-delivery are in
``test_export_faults``."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from evothesis.clock import FixedClock
from evothesis.domain import ExportFormat
from evothesis.export.notices import sign
from evothesis.export.replays import ReplayRange
from evothesis.services import Services
from tests.support.postgres import register_client, with_registry
from tests.support.s3 import (
    S3,
    Buckets,
    client_credentials,
    decode_file,
    duplicates,
    insert_events,
    processed_events,
    run_services,
    s3_environment,
    sql,
    stored_events,
)
from tests.support.servers import RunningCollector
from tests.support.webhooks import webhook_receiver

#: Far ahead of the database's clock: every batch the test exports was claimed before any
#: tick the test's clock shows, as when real time passes between a claim and a tick.
T = datetime(2099, 1, 1, 10, 30, tzinfo=UTC)
SECRET = "whsec_test_secret_0123456789abcdef"


def events_of(s3: S3, bucket: str, client_id: str) -> Counter[str]:
    return Counter(e["event_id"] for e in processed_events(s3, bucket, client_id))


def data_keys(s3: S3, bucket: str, client_id: str) -> list[str]:
    return [
        key
        for key in s3.keys(bucket, f"processed-events/{client_id}/")
        if not key.endswith(".manifest.json")
    ]


def manifest(s3: S3, bucket: str, key: str) -> dict[str, Any]:
    metadata: dict[str, Any] = orjson.loads(s3.get(bucket, f"{key}.manifest.json"))
    return metadata["export_metadata"]


def client_ids(database_url: str, client_id: str) -> set[str]:
    return {i for i, owner in stored_events(database_url).items() if owner == client_id}


# ------------------------------------------------------------------------------ schedules


def test_hourly_and_daily_clients_each_get_one_file_per_period(
    database_url: str, s3: S3, buckets: Buckets
) -> None:
    register_client(database_url, "hourly_co", "h.test", export_schedule="hourly")
    register_client(
        database_url, "daily_co", "d.test", export_schedule="daily", export_format="csv"
    )
    clock = FixedClock(T)
    env = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=40)
    periods: list[dict[str, set[str]]] = []

    async def period(services: Services, at: datetime) -> dict[str, Any]:
        """Events arrive and are exported; the clock shows ``at``; the round runs."""
        before = set(stored_events(database_url))
        insert_events(database_url, 100, ("hourly_co", "daily_co"))
        periods.append({c: client_ids(database_url, c) - before for c in ("hourly_co", "daily_co")})
        clock.at = at
        return await services.pipeline.run_once()

    async def scenario(services: Services) -> list[dict[str, Any]]:
        return [
            # Everything waiting is older than the current ticks: both deliver at once.
            await period(services, T),
            # Not an hour later: nothing is due.
            await period(services, T + timedelta(minutes=15)),
            # The next hour: the hourly client gets the last two periods' events.
            await period(services, T + timedelta(minutes=30)),
            # Past midnight: the hourly client its hour, the daily client its day.
            await period(services, datetime(2099, 1, 2, 0, 0, 5, tzinfo=UTC)),
        ]

    rounds = run_services(database_url, scenario, clock=clock, **env)
    cut = [r["process"]["cut"] for r in rounds]
    assert cut == [2, 0, 1, 2], rounds
    assert all(r["process"]["failed"] == [] for r in rounds)

    hourly = data_keys(s3, buckets.processed, "hourly_co")
    daily = data_keys(s3, buckets.processed, "daily_co")
    assert [k.rsplit("/", 1)[1] for k in hourly] == [f"delivery-{n:012d}.json" for n in (1, 2, 3)]
    assert [k.rsplit("/", 1)[1] for k in daily] == [f"delivery-{n:012d}.csv" for n in (1, 2)]
    expected_hourly = [
        periods[0]["hourly_co"],
        periods[1]["hourly_co"] | periods[2]["hourly_co"],
        periods[3]["hourly_co"],
    ]
    expected_daily = [periods[0]["daily_co"], set().union(*(p["daily_co"] for p in periods[1:]))]
    for keys, expected, client in (
        (hourly, expected_hourly, "hourly_co"),
        (daily, expected_daily, "daily_co"),
    ):
        for key, ids in zip(keys, expected, strict=True):
            events = decode_file(key, s3.get(buckets.processed, key))
            assert {e["event_id"] for e in events} == ids, key
            assert duplicates([e["event_id"] for e in events]) == {}
            metadata = manifest(s3, buckets.processed, key)
            assert metadata["trigger"] == "schedule"
            assert metadata["event_count"] == len(ids)
        assert sum(events_of(s3, buckets.processed, client).values()) == len(
            client_ids(database_url, client)
        )
    # The ledger remembers the tick each delivery was cut for.
    ticks = dict(sql(database_url, "SELECT client_id, last_tick FROM export_client_state"))
    assert ticks == {
        "hourly_co": datetime(2099, 1, 2, tzinfo=UTC),
        "daily_co": datetime(2099, 1, 2, tzinfo=UTC),
    }


def test_status_shows_each_clients_schedule_and_next_delivery(
    database_url: str, s3: S3, buckets: Buckets
) -> None:
    register_client(database_url, "cron_co", "c.test", export_schedule="*/15 * * * *")
    register_client(database_url, "default_co", "x.test")
    clock = FixedClock(T)

    async def status(services: Services) -> dict[str, Any]:
        return await services.pipeline.process_status()

    env = s3_environment(s3, buckets, EXPORT_SCHEDULE="daily")
    clients = {
        c["client_id"]: c for c in run_services(database_url, status, clock=clock, **env)["clients"]
    }
    assert clients["cron_co"]["schedule"] == "*/15 * * * *"
    assert clients["cron_co"]["next_delivery_at"] == "2099-01-01T10:45:00+00:00"
    assert (clients["default_co"]["schedule"], clients["default_co"]["schedule_is_default"]) == (
        "daily",
        True,
    )
    assert clients["default_co"]["next_delivery_at"] == "2099-01-02T00:00:00+00:00"
    assert clients["client_test"]["schedule"] == "real-time"
    assert clients["client_test"]["next_delivery_at"] is None


# ------------------------------------------------------------------------------- triggers


def test_a_threshold_client_gets_its_file_before_its_schedule(
    database_url: str, s3: S3, buckets: Buckets
) -> None:
    register_client(
        database_url, "eager_co", "e.test", export_schedule="daily", export_threshold=150
    )
    clock = FixedClock(T)
    env = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=50)

    async def scenario(services: Services) -> list[int]:
        # The day's tick delivers what was waiting (it began before the tick).
        insert_events(database_url, 10, ("eager_co",))
        cuts = [(await services.pipeline.run_once())["process"]["cut"]]
        insert_events(database_url, 100, ("eager_co",))
        clock.at = T + timedelta(minutes=5)
        cuts.append((await services.pipeline.run_once())["process"]["cut"])
        insert_events(database_url, 50, ("eager_co",))
        cuts.append((await services.pipeline.run_once())["process"]["cut"])
        # Below the threshold again, before the schedule's next tick: these wait. (They
        # arrive in a round of their own: two batches exported side by side by one round
        # may both be in before its cut, in either order.)
        insert_events(database_url, 10, ("eager_co",))
        cuts.append((await services.pipeline.run_once())["process"]["cut"])
        return cuts

    assert run_services(database_url, scenario, clock=clock, **env) == [1, 0, 1, 0]
    keys = data_keys(s3, buckets.processed, "eager_co")
    triggers = [manifest(s3, buckets.processed, key)["trigger"] for key in keys]
    assert triggers == ["schedule", "threshold"]
    # Cut as soon as the batches exported held 150, before the day's tick.
    assert manifest(s3, buckets.processed, keys[1])["event_count"] == 150
    assert sum(events_of(s3, buckets.processed, "eager_co").values()) == 160
    waiting = sql(
        database_url, "SELECT sum(event_count) FROM export_shares WHERE delivery_seq IS NULL"
    )
    assert waiting == [(10,)]


def test_a_client_asks_for_its_pending_events_with_its_own_key(
    database_url: str, start_collector: Any, s3: S3, buckets: Buckets
) -> None:
    write_key = register_client(database_url, "asking_co", "a.test", export_schedule="daily")
    other_key = register_client(database_url, "other_co", "o.test")
    env = s3_environment(s3, buckets, EVOTHESIS_ADMIN_TOKEN="admin-token")
    collector: RunningCollector = start_collector(**env)
    insert_events(database_url, 30, ("asking_co", "other_co"))
    with collector.client(origin=None) as http:
        missing = http.post("/client/deliveries")
        assert (missing.status_code, missing.json()["error"]["code"]) == (401, "write_key_required")
        admin = http.post("/client/deliveries", headers={"Authorization": "Bearer admin-token"})
        assert admin.status_code == 401  # the admin token is not a client's key
        wrong = http.post("/client/deliveries", headers={"X-Write-Key": "wk_nobody"})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_write_key")
        asked = http.post("/client/deliveries", headers={"X-Write-Key": write_key})
        assert asked.status_code == 202, asked.text
        assert asked.json()["client_id"] == "asking_co"
        again = http.post("/client/deliveries", headers={"X-Write-Key": write_key})
        assert again.status_code == 429
        assert again.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(again.headers["Retry-After"]) <= 60
        # One client's limit is its own.
        assert (
            http.post("/client/deliveries", headers={"X-Write-Key": other_key}).status_code == 202
        )

    async def round_(services: Services) -> dict[str, Any]:
        return await services.pipeline.run_once()

    # Clock at the moment of the request: no schedule tick is due, the requests are.
    now = datetime.now(UTC)
    result = run_services(database_url, round_, clock=FixedClock(now), **env)
    assert result["process"]["cut"] == 2, result
    for client in ("asking_co", "other_co"):
        (key,) = data_keys(s3, buckets.processed, client)
        assert manifest(s3, buckets.processed, key)["trigger"] == "on_demand"
        assert set(events_of(s3, buckets.processed, client)) == client_ids(database_url, client)
    assert sql(database_url, "SELECT count(delivery_requested_at) FROM export_client_state") == [
        (0,)
    ]


# --------------------------------------------------------------------------------- replay


def test_a_replay_of_a_past_range_rewrites_identical_bytes(
    database_url: str, s3: S3, buckets: Buckets
) -> None:
    register_client(database_url, "replay_co", "r.test", export_format="parquet")
    env = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=30)

    async def deliver_three_times(services: Services) -> None:
        for _ in range(3):
            insert_events(database_url, 50, ("replay_co",))
            await services.pipeline.export()
            assert not (await services.pipeline.process()).failed

    run_services(database_url, deliver_three_times, **env)
    before = {k: s3.get(buckets.processed, k) for k in s3.keys(buckets.processed)}
    assert len(data_keys(s3, buckets.processed, "replay_co")) == 3
    # The client lost its files (a bucket emptied by mistake).
    for key in before:
        s3.client.delete_object(Bucket=buckets.processed, Key=key)
    second_batch = sql(
        database_url,
        "SELECT min(batch_id) FROM export_shares WHERE client_id = 'replay_co'"
        " AND delivery_seq = 2",
    )[0][0]
    other = s3.new_bucket("warehouse")

    async def replays(services: Services) -> list[dict[str, Any]]:
        made = await services.replays.create("replay_co", ReplayRange(from_batch=second_batch))
        assert made["deliveries"] == 2 and made["format"] == "parquet"
        progress: list[tuple[int, int]] = []
        done = await services.replays.run(made["replay_id"], progress=lambda *p: progress.append(p))
        assert progress == [(1, 2), (2, 2)]
        everything = await services.replays.create("replay_co", ReplayRange())
        await services.replays.run(everything["replay_id"])
        # Seeding a new warehouse, in another format.
        seeded = await services.replays.create(
            "replay_co",
            ReplayRange(),
            fmt=ExportFormat.CSV,
            destination=f"s3://{other}/seed",
        )
        await services.replays.run(seeded["replay_id"])
        return [done, *await services.replays.list(client_id="replay_co")]

    first, *listed = run_services(database_url, replays, **env)
    assert (first["state"], first["done"], first["deliveries"]) == ("finished", 2, 2)
    # Newest first: the seeding, the whole history, the range.
    assert [(r["state"], r["done"]) for r in listed] == [("finished", 3)] * 2 + [("finished", 2)]
    assert [r["format"] for r in listed] == ["csv", "parquet", "parquet"]
    after = {k: s3.get(buckets.processed, k) for k in s3.keys(buckets.processed)}
    assert after == before  # the same keys, the same bytes
    seeded = s3.keys(other)
    assert [k.rsplit("/", 1)[1] for k in seeded if not k.endswith(".json")] == [
        f"delivery-{n:012d}.csv" for n in (1, 2, 3)
    ]
    assert all(k.startswith("seed/processed-events/replay_co/") for k in seeded)
    csv_ids = Counter(
        e["event_id"]
        for k in seeded
        if k.endswith(".csv")
        for e in decode_file(k, s3.get(other, k))
    )
    assert set(csv_ids) == client_ids(database_url, "replay_co")
    assert max(csv_ids.values()) == 1


def test_the_seeds_export_run_with_a_range_replays_it(
    database_url: str, start_collector: Any, s3: S3, buckets: Buckets
) -> None:
    register_client(database_url, "seed_co", "s.test")
    env = s3_environment(s3, buckets, EVOTHESIS_ADMIN_TOKEN="admin-token")
    collector: RunningCollector = start_collector(**env)
    insert_events(database_url, 20, ("seed_co",))
    bearer = {"Authorization": "Bearer admin-token"}
    with collector.client(origin=None, headers=bearer) as http:
        assert http.post("/export/run").status_code == 200
        assert http.post("/process/run", params={"client_id": "seed_co"}).status_code == 200
        (key,) = data_keys(s3, buckets.processed, "seed_co")
        original = s3.get(buckets.processed, key)
        s3.client.delete_object(Bucket=buckets.processed, Key=key)
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        replay = http.post("/export/run", params={"since": since, "client_id": "seed_co"})
        assert replay.status_code == 200, replay.text
        (made,) = replay.json()["replays"]
        assert (made["state"], made["deliveries"], made["done"]) == ("finished", 1, 1)
        assert s3.get(buckets.processed, key) == original
        listed = http.get("/export/replays", params={"client_id": "seed_co"}).json()
        assert [r["replay_id"] for r in listed] == [made["replay_id"]]
        bad = http.post("/export/run", params={"since": since, "until": since})
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_range")


# ------------------------------------------------------------------------ failure notices


def test_a_refusing_destination_is_paused_noticed_and_retried_now(
    database_url: str, s3: S3, buckets: Buckets
) -> None:
    missing = f"refusing-{datetime.now(UTC):%H%M%S%f}"  # not created yet
    with webhook_receiver() as receiver:
        register_client(
            database_url,
            "fragile_co",
            "f.test",
            export_destination=f"s3://{missing}",
            export_credentials=client_credentials(s3),
            notify_url=receiver.url,
            notify_secret=SECRET,
        )
        receiver.statuses = [500]  # the first notice is refused once, then retried
        env = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=40)
        insert_events(database_url, 100, ("fragile_co",))

        async def fail_then_notify(services: Services) -> list[dict[str, Any]]:
            await services.pipeline.export()
            report = await services.pipeline.process()
            assert report.failed and report.failed[0]["client_id"] == "fragile_co"
            assert await services.notices.send_due() == 0  # 500: kept for a retry
            sql(database_url, "UPDATE export_notices SET next_attempt_at = now()")
            assert await services.notices.send_due() == 1
            return await services.notices.list("fragile_co")

        (paused,) = run_services(database_url, fail_then_notify, **env)
        assert (paused["kind"], paused["state"], paused["attempts"]) == (
            "destination.paused",
            "sent",
            2,
        )
        assert [a["status"] for a in paused["log"]] == [500, 200]
        assert missing in paused["data"]["error"]
        received = receiver.requests[-1]
        body = orjson.loads(received.body)
        assert (body["type"], body["client_id"], body["id"]) == (
            "destination.paused",
            "fragile_co",
            paused["notice_id"],
        )
        stamp = int(received.headers["evothesis-signature"].split(",")[0][2:])
        assert received.headers["evothesis-signature"] == sign(SECRET, stamp, received.body)
        expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + received.body, hashlib.sha256)
        assert received.headers["evothesis-signature"].endswith(expected.hexdigest())

        # A day of failures: the delivery becomes a dead letter, and the client hears.
        sql(
            database_url,
            "UPDATE export_deliveries SET first_failed_at = now() - interval '2 days'"
            " WHERE client_id = 'fragile_co'",
        )

        async def sweep_and_fix(services: Services) -> dict[str, Any]:
            noticed, dead = await services.pipeline.ledger.sweep_failures(
                notice_after_s=3600, dead_after_s=86400
            )
            assert (noticed, dead) == (1, 1)
            assert await services.notices.send_due() == 2
            dead_letters = await services.pipeline.ledger.dead_letters(None)
            assert [(d["client_id"], d["seq"]) for d in dead_letters] == [("fragile_co", 1)]
            assert missing in dead_letters[0]["last_error"]
            status = await services.pipeline.process_status()
            assert status["dead_deliveries"] == 1
            # Not retried by itself, even once the pause is over.
            sql(database_url, "UPDATE export_destination_state SET paused_until = now()")
            assert (await services.pipeline.process()).deliveries == 0
            # Fixed: retry now delivers everything, once.
            s3.client.create_bucket(Bucket=missing)
            assert await services.pipeline.ledger.retry_now("fragile_co") == 1
            report = await services.pipeline.process(client_id="fragile_co")
            assert report.failed == [] and report.events == 100
            assert await services.notices.send_due() == 1
            return await services.pipeline.process_status()

        status = run_services(database_url, sweep_and_fix, **env)
    fragile = next(c for c in status["clients"] if c["client_id"] == "fragile_co")
    assert (fragile["paused"], fragile["dead_deliveries"], fragile["delivered_events"]) == (
        False,
        0,
        100,
    )
    kinds = [orjson.loads(r.body)["type"] for r in receiver.requests]
    assert kinds == [
        "destination.paused",
        "destination.paused",
        "delivery.failing",
        "delivery.dead_lettered",
        "destination.resumed",
    ]
    ids = Counter(e["event_id"] for e in processed_events(s3, missing, "fragile_co"))
    assert set(ids) == client_ids(database_url, "fragile_co") and max(ids.values()) == 1


def test_schedules_and_webhooks_are_client_settings_of_the_admin_api(
    database_url: str, start_collector: Any
) -> None:
    collector: RunningCollector = start_collector(EVOTHESIS_ADMIN_TOKEN="admin-token")
    bearer = {"Authorization": "Bearer admin-token"}
    with collector.client(origin=None, headers=bearer) as http:
        created = http.post(
            "/api/v1/clients",
            json={"client_id": "api_co", "name": "API", "export_schedule": " 0 */6 * * * "},
        )
        assert created.status_code == 201, created.text
        assert created.json()["export_schedule"] == "0 */6 * * *"
        for change, field in (
            ({"export_schedule": "every 5 minutes"}, "export_schedule"),
            ({"notify_url": "ftp://x.test/"}, "notify_url"),
            ({"notify_url": "https://hooks.test/e"}, "notify_secret"),
        ):
            refused = http.patch("/api/v1/clients/api_co", json=change)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["field"] == field
        changed = http.patch(
            "/api/v1/clients/api_co",
            json={
                "export_schedule": "real-time",
                "export_threshold": 500,
                "notify_url": "https://hooks.test/e",
                "notify_secret": SECRET,
            },
        ).json()
        assert (changed["export_schedule"], changed["export_threshold"]) == ("real-time", 500)
        assert (changed["notify_url"], changed["has_notify_secret"]) == (
            "https://hooks.test/e",
            True,
        )
        assert SECRET not in http.get("/api/v1/clients/api_co").text
        back = http.patch("/api/v1/clients/api_co", json={"export_schedule": None}).json()
        assert back["export_schedule"] is None

    async def target(store: Any) -> Any:
        return await store.notify_target("api_co")

    found = with_registry(database_url, target)
    assert (found.url, found.secret) == ("https://hooks.test/e", SECRET)
