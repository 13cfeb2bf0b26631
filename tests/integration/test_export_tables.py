"""Clients whose bucket is a table: Delta Lake and Iceberg end to end on a real S3 API (moto)
and real PostgreSQL, read back by engines that are not ours.

Every test compares with the buffer: each event of a table client exactly once in its table,
through delta-rs or pyiceberg, an Arrow dataset over the table's Parquet files and DuckDB,
after crashes mid-commit and after the commit, replays, two exporters racing, and a
data-subject deletion.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from evothesis.config import Settings
from evothesis.export.keys import table_key
from evothesis.export.pipeline import ExportPipeline
from evothesis.export.tables.schema import TABLE_SCHEMA
from evothesis.services import CLI_POOL, open_services
from tests.support.postgres import register_client
from tests.support.s3 import S3, Buckets, run_pipeline, s3_environment, sql
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
        " object_key = NULL, next_attempt_at = now() - interval '1 s'",
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_table_client_gets_every_event_once_and_a_replay_adds_nothing(
    fmt: str, database_url: str, s3: S3, buckets: Buckets, tmp_path: Path
) -> None:
    for client_id in CLIENTS:
        register_client(database_url, client_id, f"{client_id}.example", export_format=fmt)
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
    delivered = sql(database_url, "SELECT DISTINCT object_key FROM export_deliveries")
    locations = {
        c: f"s3://{buckets.processed}/{table_key(c, fmt)}" if fmt == "delta" else f"{c}.events"
        for c in CLIENTS
    }
    assert {key for (key,) in delivered} == set(locations.values())

    # A replay of every delivery (or a crash after the commits, before the ledger): the
    # table recognises each delivery and appends nothing.
    pending_again(database_url)
    run_pipeline(database_url, export_and_process, **env)
    for client_id in CLIENTS:
        assert_every_reader_counts_once(s3, buckets, database_url, fmt, client_id)


def crash_mid_commit(fmt: str, s3: S3, buckets: Buckets, database_url: str) -> None:
    """The state a crash between a commit's data and its log entry leaves: data files (and,
    for Iceberg, manifests and metadata) in the bucket that no version of the table names.
    Made with the libraries themselves: the last commit is undone at the log (Delta: its
    log entry removed) or at the catalog (Iceberg: the pointer set back)."""
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
        " next_attempt_at = now() - interval '1 s' WHERE batch_id = 2",
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
    run_pipeline(database_url, lambda p: p.export(), **env)
    config = Settings(_env_file=None, ENVIRONMENT="test", **env)

    async def one_exporter() -> int:
        async with open_services(config, database_url=database_url, pool_size=CLI_POOL) as s:
            processor = s.pipeline.processor
            delivered = 0
            while deliveries := await s.pipeline.ledger.lease_deliveries():
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
    """An hourly client's day: 30 deliveries into one partition end in few files, and a
    replay of all of them after the compaction still appends nothing."""
    register_client(database_url, "client-a", "client-a.example", export_format=fmt)
    env = settings(s3, buckets, tmp_path, EXPORT_BATCH_SIZE=10)
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
    """A client that chose the Hive-style layout gets ``export_date=YYYY-MM-DD/`` folders,
    which Arrow datasets and DuckDB read as a partition column without configuration; a
    client that did not keeps the seeds' ``YYYY/MM/DD/``."""
    destination = tmp_path / "acme-bucket"
    register_client(
        database_url,
        "client-a",
        "client-a.example",
        export_format="parquet",
        export_layout="hive",
        export_destination=destination.as_uri(),
    )
    register_client(database_url, "client-b", "client-b.example", export_format="parquet")
    env = settings(s3, buckets, tmp_path)
    insert_events(database_url, 1000)
    run_pipeline(database_url, export_and_process, **env)

    folder = destination / "processed-events" / "client-a"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet"))
    assert files and all(f.startswith("export_date=") for f in files), files
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
    dated = s3.keys(buckets.processed, "processed-events/client-b/")
    assert dated and all("export_date=" not in key for key in dated)
