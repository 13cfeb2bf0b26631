"""Clients whose bucket is a table: Delta Lake and Iceberg end to end on a real S3 API (moto)
and real PostgreSQL, read back by engines that are not ours.

Every test compares with the buffer: each event of a table client exactly once in its table,
through delta-rs or pyiceberg, an Arrow dataset over the table's Parquet files and DuckDB,
after crashes mid-commit and after the commit, replays and backfills (after the table's
history forgot the deliveries, too), two exporters racing, and a data-subject deletion. A
delivery (one batch in real time, several on a schedule) is one commit.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from evothesis.config import Settings
from evothesis.domain import ExportFormat
from evothesis.errors import BadRequest
from evothesis.export.keys import table_key
from evothesis.export.pipeline import ExportPipeline
from evothesis.export.replays import ReplayRange
from evothesis.export.tables.schema import TABLE_SCHEMA
from evothesis.services import CLI_POOL, Services, open_services
from tests.support.postgres import register_client
from tests.support.s3 import (
    S3,
    Buckets,
    decode_file,
    run_pipeline,
    run_services,
    s3_environment,
    sql,
)
from tests.support.sync import run_coroutine
from tests.support.tables import (
    READERS,
    delta_table,
    event_ids,
    iceberg_table,
    read_table,
)

FORMATS = ("delta", "iceberg")
CLIENTS = ("client-a", "client-b")
VISITOR = "visitor-7"


def insert_events(database_url: str, count: int, clients: tuple[str, ...] = CLIENTS) -> None:
    """``count`` events over ``clients`` and 89 visitors, spread over three event days."""
    sql(
        database_url,
        """
        INSERT INTO events_log (event_id, event_type, session_id, visitor_id, site_id,
                                client_id, "timestamp", url, path, referrer, user_agent,
                                raw_event_data)
        SELECT gen_random_uuid(), 'pageview', 'session-' || mod(g, 97),
               'visitor-' || mod(g, 89), c.client_id || '.example', c.client_id,
               now() - make_interval(days => mod(g, 3), secs => g),
               'https://' || c.client_id || '.example/page/' || g, '/page/' || g,
               NULL, 'table-test', jsonb_build_object('n', g)
        FROM generate_series(1, %(count)s) AS g,
             LATERAL (SELECT (%(clients)s::text[])[1 + mod(g, %(k)s)] AS client_id) AS c
        """,
        {"count": count, "clients": list(clients), "k": len(clients)},
    )


def buffered(database_url: str, client_id: str) -> Counter[str]:
    rows = sql(
        database_url, "SELECT event_id::text FROM events_log WHERE client_id = %s", (client_id,)
    )
    return Counter(event_id for (event_id,) in rows)


def settings(s3: S3, buckets: Buckets, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        # A delivery per batch, as it is exported, unless a client has its own schedule.
        "EXPORT_SCHEDULE": "real-time",
        "EXPORT_LEASE": "2s",
        "EXPORT_BATCH_SIZE": 400,
        "BUFFER_RETENTION": "7d",
        "EVOTHESIS_DATA_DIR": str(tmp_path / "data"),
    }
    return s3_environment(s3, buckets, **(values | extra))


async def export_and_process(pipeline: ExportPipeline) -> None:
    exported = await pipeline.export()
    processed = await pipeline.process()
    assert not exported.failed_batches and not processed.failed, processed


def assert_every_reader_counts_once(
    s3: S3, buckets: Buckets, database_url: str, fmt: str, client_id: str
) -> None:
    expected = buffered(database_url, client_id)
    for reader in READERS:
        table = read_table(s3, fmt, buckets.processed, client_id, database_url, reader)
        assert Counter(event_ids(table)) == expected, f"{fmt} through {reader}"


def pending_again(database_url: str) -> None:
    """Every delivery back to pending and due, as after a crash before the ledger heard of
    them (or an operator's replay)."""
    sql(
        database_url,
        "UPDATE export_deliveries SET state = 'pending', delivered_at = NULL,"
        " files = NULL, next_attempt_at = now() - interval '1 s'",
    )


async def replay_everything(services: Services, client_id: str, **target: Any) -> None:
    """Every delivered delivery of the client written again (``target``: format,
    destination), to the end."""
    made = await services.replays.create(client_id, ReplayRange(), **target)
    done = await services.replays.run(made["replay_id"])
    assert done is not None and (done["state"], done["done"]) == ("finished", made["deliveries"])


def forget_history(fmt: str, s3: S3, database_url: str, client_id: str) -> None:
    """An Iceberg table whose snapshots expired (as vacuum expires them after the client's
    retention): only the current one, and its delivery id, is left in its history."""
    if fmt == "iceberg":
        table = iceberg_table(s3, database_url, client_id)
        table.maintenance.expire_snapshots().older_than(datetime.now(UTC)).commit()
        assert len(iceberg_table(s3, database_url, client_id).snapshots()) == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_table_client_gets_every_event_once_and_a_replay_adds_nothing(
    fmt: str, database_url: str, s3: S3, buckets: Buckets, tmp_path: Path
) -> None:
    """client-a is delivered in real time (a commit per batch), client-b on a schedule (one
    commit for its deliveries' several batches)."""
    register_client(database_url, "client-a", "client-a.example", export_format=fmt)
    register_client(
        database_url, "client-b", "client-b.example", export_format=fmt, export_schedule="hourly"
    )
    env = settings(s3, buckets, tmp_path)
    insert_events(database_url, 1000)
    run_pipeline(database_url, export_and_process, **env)
    insert_events(database_url, 600)
    run_pipeline(database_url, export_and_process, **env)
    for client_id in CLIENTS:
        assert_every_reader_counts_once(s3, buckets, database_url, fmt, client_id)

    # The declared schema, with UTC instants and a Hive-style partition per event day.
    rows = read_table(s3, fmt, buckets.processed, "client-a", database_url, "native")
    for field in TABLE_SCHEMA:
        assert rows.schema.field(field.name).type in (field.type, pa.large_string()), field
    keys = s3.keys(buckets.processed, f"{table_key('client-a', fmt)}/")
    days = {part for key in keys for part in key.split("/") if part.startswith("event_date=")}
    assert len(days) == 3, days
    assert not [k for k in s3.keys(buckets.processed) if k.endswith(".parquet.manifest.json")]
    spans = sql(
        database_url,
        "SELECT client_id, count(*), max(last_batch - first_batch) FROM export_deliveries"
        " GROUP BY client_id ORDER BY client_id",
    )
    assert [(c, n) for c, n, _ in spans] == [("client-a", 5), ("client-b", 2)]
    assert spans[0][2] == 0 and spans[1][2] > 0, spans
    delivered = sql(
        database_url,
        "SELECT DISTINCT f ->> 'key' FROM export_deliveries, jsonb_array_elements(files) f",
    )
    locations = {
        c: f"s3://{buckets.processed}/{table_key(c, fmt)}" if fmt == "delta" else f"{c}.events"
        for c in CLIENTS
    }
    assert {key for (key,) in delivered} == set(locations.values())

    # Every delivery again (as after a crash after the commits, before the ledger heard):
    # the table recognises each delivery and appends nothing.
    pending_again(database_url)
    run_pipeline(database_url, export_and_process, **env)
    for client_id in CLIENTS:
        assert_every_reader_counts_once(s3, buckets, database_url, fmt, client_id)

    # A replay of everything, also once the table's history no longer names the deliveries
    # (Iceberg's expired snapshots): the ledger's record of the tables that hold them.
    for client_id in CLIENTS:
        forget_history(fmt, s3, database_url, client_id)

    async def replay(services: Services) -> None:
        for client_id in CLIENTS:
            await replay_everything(services, client_id)

    run_services(database_url, replay, **env)
    for client_id in CLIENTS:
        assert_every_reader_counts_once(s3, buckets, database_url, fmt, client_id)


def crash_mid_commit(fmt: str, s3: S3, buckets: Buckets, database_url: str) -> None:
    """The state a crash between a commit's data and its log entry leaves: data files (and,
    for Iceberg, manifests and metadata) in the bucket that no version of the table names.
    Made with the libraries themselves: the last commit is undone at the log (Delta: its
    log entry removed) or at the catalog (Iceberg: the pointer set back). A crash before
    the commit ended also left the ledger without its record of the commit."""
    sql(
        database_url,
        "DELETE FROM export_table_commits WHERE identity = 'exp_batch-000000000002_client-a'",
    )
    if fmt == "delta":
        table = delta_table(s3, buckets.processed, "client-a")
        log = f"{table_key('client-a', 'delta')}/_delta_log/{table.version():020d}.json"
        s3.client.delete_object(Bucket=buckets.processed, Key=log)
    else:
        sql(
            database_url,
            "UPDATE iceberg_tables SET metadata_location = previous_metadata_location"
            " WHERE table_namespace = 'client-a'",
        )


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_crash_mid_commit_is_retried_into_exactly_one_append(
    fmt: str, database_url: str, s3: S3, buckets: Buckets, tmp_path: Path
) -> None:
    register_client(database_url, "client-a", "client-a.example", export_format=fmt)
    env = settings(s3, buckets, tmp_path, EXPORT_BATCH_SIZE=10_000)
    insert_events(database_url, 300, ("client-a",))
    run_pipeline(database_url, export_and_process, **env)
    insert_events(database_url, 200, ("client-a",))
    run_pipeline(database_url, export_and_process, **env)
    crash_mid_commit(fmt, s3, buckets, database_url)
    first = read_table(s3, fmt, buckets.processed, "client-a", database_url, "native")
    assert first.num_rows == 300  # the second delivery's rows are written but not committed
    sql(
        database_url,
        "UPDATE export_deliveries SET state = 'pending', delivered_at = NULL,"
        " next_attempt_at = now() - interval '1 s' WHERE first_batch = 2",
    )
    run_pipeline(database_url, export_and_process, **env)
    assert_every_reader_counts_once(s3, buckets, database_url, fmt, "client-a")


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_exporters_racing_on_the_same_deliveries_append_each_once(
    fmt: str, database_url: str, s3: S3, buckets: Buckets, tmp_path: Path
) -> None:
    """Two processes' processors handed the same deliveries at once (a lease taken over
    while its holder is still writing): each delivery's rows are in the table once."""
    for client_id in CLIENTS:
        register_client(database_url, client_id, f"{client_id}.example", export_format=fmt)
    env = settings(s3, buckets, tmp_path)
    insert_events(database_url, 1200)

    async def export_and_cut(pipeline: ExportPipeline) -> None:
        await pipeline.export()
        assert await pipeline.cut_due() == 6  # real time: a delivery per batch and client

    run_pipeline(database_url, export_and_cut, **env)
    config = Settings(_env_file=None, ENVIRONMENT="test", **env)

    async def one_exporter() -> int:
        async with open_services(config, database_url=database_url, pool_size=CLI_POOL) as s:
            processor = s.pipeline.processor
            delivered = 0
            ledger = s.pipeline.ledger
            while deliveries := await ledger.lease_deliveries(group_events=10_000):
                results = await processor.process(deliveries)
                assert all(r.error is None for r in results), results
                delivered += len(results)
                # Hand the same deliveries to the other exporter too.
                sql(database_url, "UPDATE export_deliveries SET lease_until = NULL")
            return delivered

    async def race() -> list[int]:
        return list(await asyncio.gather(one_exporter(), one_exporter()))

    run_coroutine(race)
    for client_id in CLIENTS:
        assert_every_reader_counts_once(s3, buckets, database_url, fmt, client_id)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_data_subject_deletion_goes_through_the_table(
    fmt: str, database_url: str, s3: S3, buckets: Buckets, tmp_path: Path
) -> None:
    register_client(
        database_url, "client-a", "client-a.example", export_format=fmt, table_retention_days=0
    )
    env = settings(s3, buckets, tmp_path)
    insert_events(database_url, 900, ("client-a",))
    run_pipeline(database_url, export_and_process, **env)
    before = read_table(s3, fmt, buckets.processed, "client-a", database_url, "native")
    visitor_rows = before.filter(pa.compute.equal(before.column("visitor_id"), VISITOR))
    assert visitor_rows.num_rows > 0
    version_before = (
        delta_table(s3, buckets.processed, "client-a").version() if fmt == "delta" else None
    )

    async def delete() -> dict[str, Any]:
        config = Settings(_env_file=None, ENVIRONMENT="test", **env)
        async with open_services(config, database_url=database_url, pool_size=CLI_POOL) as s:
            receipt: dict[str, Any] = await s.subjects.delete("client-a", VISITOR)
            return receipt

    receipt = run_coroutine(delete)
    assert receipt["events_deleted_from_tables"] == visitor_rows.num_rows
    assert [t["format"] for t in receipt["tables"]] == [fmt]
    assert not [o for o in receipt["objects_rewritten"] if o["bucket"] == "processed"]
    for reader in READERS:
        after = read_table(s3, fmt, buckets.processed, "client-a", database_url, reader)
        assert VISITOR not in set(after.column("visitor_id").to_pylist()), reader
        assert after.num_rows == before.num_rows - visitor_rows.num_rows, reader
    assert_every_reader_counts_once(s3, buckets, database_url, fmt, "client-a")

    # History: the version before the deletion still has the visitor until vacuum removes
    # its files, after the client's retention (0 days here).
    if fmt == "delta":
        old = delta_table(s3, buckets.processed, "client-a", version=version_before)
        assert VISITOR in set(old.to_pyarrow_table().column("visitor_id").to_pylist())
        removed = delta_table(s3, buckets.processed, "client-a").vacuum(
            retention_hours=0, dry_run=False, enforce_retention_duration=False
        )
        assert removed
        with pytest.raises(Exception, match=r"(?i)not found|no such|does not exist"):
            old.to_pyarrow_table()
    else:
        table = iceberg_table(s3, database_url, "client-a")
        assert len(table.snapshots()) >= 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_many_small_deliveries_are_compacted_and_still_recognised(
    fmt: str, database_url: str, s3: S3, buckets: Buckets, tmp_path: Path
) -> None:
    """An hourly client's day: 25 deliveries into one partition (one more than compaction
    waits for) end in few files, and all of them again after the compaction append
    nothing."""
    register_client(database_url, "client-a", "client-a.example", export_format=fmt)
    env = settings(s3, buckets, tmp_path, EXPORT_BATCH_SIZE=12)
    sql(
        database_url,
        """
        INSERT INTO events_log (event_id, event_type, visitor_id, site_id, client_id,
                                "timestamp", raw_event_data)
        SELECT gen_random_uuid(), 'pageview', 'visitor-' || g, 'client-a.example', 'client-a',
               date_trunc('day', now()) + make_interval(secs => g), '{}'
        FROM generate_series(1, 300) g
        """,
    )
    run_pipeline(database_url, export_and_process, **env)
    files = read_files_per_day(s3, buckets, database_url, fmt)
    assert sum(files.values()) < 24, files
    assert_every_reader_counts_once(s3, buckets, database_url, fmt, "client-a")
    pending_again(database_url)
    run_pipeline(database_url, export_and_process, **env)
    assert_every_reader_counts_once(s3, buckets, database_url, fmt, "client-a")


def read_files_per_day(s3: S3, buckets: Buckets, database_url: str, fmt: str) -> Counter[str]:
    if fmt == "delta":
        files = delta_table(s3, buckets.processed, "client-a").file_uris()
    else:
        table = iceberg_table(s3, database_url, "client-a")
        files = table.inspect.files().column("file_path").to_pylist()
    return Counter(part for f in files for part in f.split("/") if part.startswith("event_date="))


def test_hive_layout_files_are_read_as_a_partitioned_dataset(
    database_url: str, s3: S3, buckets: Buckets, tmp_path: Path
) -> None:
    """A client that chose the Hive-style layout gets ``export_date=YYYY-MM-DD/`` folders
    (scheduled deliveries' files as real-time ones'), which Arrow datasets and DuckDB read as
    a partition column without configuration; a client that did not keeps the seeds'
    ``YYYY/MM/DD/``, and a delivery keeps the layout it was cut with."""
    destination = tmp_path / "acme-bucket"
    register_client(
        database_url,
        "client-a",
        "client-a.example",
        export_format="parquet",
        export_layout="hive",
        export_schedule="hourly",
        export_destination=destination.as_uri(),
    )
    register_client(database_url, "client-b", "client-b.example", export_format="parquet")
    register_client(
        database_url, "client-c", "client-c.example", export_format="csv", export_layout="hive"
    )
    env = settings(s3, buckets, tmp_path)
    insert_events(database_url, 1500, ("client-a", "client-b", "client-c"))
    run_pipeline(database_url, export_and_process, **env)

    folder = destination / "processed-events" / "client-a"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet"))
    day = f"export_date={datetime.now(UTC):%Y-%m-%d}"
    assert files == [f"{day}/delivery-000000000001.parquet"], files
    assert (folder / f"{files[0]}.manifest.json").exists()
    data = ds.dataset(
        [str(folder / f) for f in files],
        format="parquet",
        partitioning="hive",
        partition_base_dir=str(folder),
    )
    table = data.to_table()
    assert Counter(table.column("event_id").to_pylist()) == buffered(database_url, "client-a")
    assert "export_date" in table.column_names
    connection = duckdb.connect()
    count, distinct, days = connection.execute(
        "SELECT count(*), count(DISTINCT event_id), count(DISTINCT export_date)"
        " FROM read_parquet(?, hive_partitioning = true)",
        [f"{folder}/**/*.parquet"],
    ).fetchone()
    assert count == distinct == sum(buffered(database_url, "client-a").values())
    assert days == 1
    real_time = s3.keys(buckets.processed, "processed-events/client-c/")
    assert real_time and all(
        k.startswith(f"processed-events/client-c/{day}/batch-") for k in real_time
    )
    dated = s3.keys(buckets.processed, "processed-events/client-b/")
    assert dated and all("export_date=" not in key for key in dated)

    # The client goes back to dated folders: what was cut before keeps its files where they
    # are (a replay writes them there again), what is cut after goes to the new folders.
    sql(database_url, "UPDATE clients SET export_layout = 'dated' WHERE client_id = 'client-c'")
    insert_events(database_url, 300, ("client-c",))
    run_pipeline(database_url, export_and_process, **env)
    run_services(database_url, lambda services: replay_everything(services, "client-c"), **env)
    keys = s3.keys(buckets.processed, "processed-events/client-c/")
    assert [k for k in keys if "export_date=" in k] == real_time
    assert len(keys) > len(real_time)


def test_a_replay_backfills_a_table_once_and_a_deletion_reaches_it(
    database_url: str, s3: S3, buckets: Buckets, tmp_path: Path
) -> None:
    """A client delivered Parquet files moves to a Delta table: a replay of its history in
    ``delta`` fills the table with every past delivery once (a second adds nothing); a
    data-subject deletion then renders the files again and deletes through the table. An
    Iceberg replay elsewhere is refused: the client's Iceberg table is one, in the catalog."""
    register_client(database_url, "client-a", "client-a.example", export_format="parquet")
    env = settings(s3, buckets, tmp_path)
    insert_events(database_url, 900, ("client-a",))
    run_pipeline(database_url, export_and_process, **env)

    async def backfill(services: Services) -> None:
        for _ in range(2):
            await replay_everything(services, "client-a", fmt=ExportFormat.DELTA)
        with pytest.raises(BadRequest, match="Iceberg"):
            await services.replays.create(
                "client-a", ReplayRange(), fmt=ExportFormat.ICEBERG, destination="s3://elsewhere"
            )

    run_services(database_url, backfill, **env)
    assert_every_reader_counts_once(s3, buckets, database_url, "delta", "client-a")
    before = read_table(s3, "delta", buckets.processed, "client-a", database_url, "native")
    visitor_rows = sum(1 for v in before.column("visitor_id").to_pylist() if v == VISITOR)
    assert visitor_rows

    async def delete(services: Services) -> dict[str, Any]:
        receipt: dict[str, Any] = await services.subjects.delete("client-a", VISITOR)
        return receipt

    receipt = run_services(database_url, delete, **env)
    assert [(t["format"], t["events_removed"]) for t in receipt["tables"]] == [
        ("delta", visitor_rows)
    ]
    rendered = [o["key"] for o in receipt["objects_rewritten"] if o["bucket"] == "processed"]
    assert rendered and all(key.endswith(".parquet") for key in rendered)
    files = [
        key
        for key in s3.keys(buckets.processed, "processed-events/client-a/")
        if key.endswith(".parquet") and "/delta/" not in key
    ]
    in_files = Counter(
        e["event_id"] for key in files for e in decode_file(key, s3.get(buckets.processed, key))
    )
    assert in_files == buffered(database_url, "client-a")
    assert_every_reader_counts_once(s3, buckets, database_url, "delta", "client-a")
    assert not sql(database_url, "SELECT 1 FROM events_log WHERE visitor_id = %s", (VISITOR,))
