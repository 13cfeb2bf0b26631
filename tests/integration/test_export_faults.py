"""The export pipeline under faults: every event exactly once in the raw bucket and in every
client's processed output, whatever happens to the exporters and to S3.

- ``evothesis export run`` / ``evothesis process run`` SIGKILLed at each stage of a batch
  or a delivery (claimed with the upload stalled before anything reached S3, mid-body,
  after S3 stored the object but before the process heard back, and while recording the
  work as done), then run again once their lease has run out: real-time deliveries of one
  batch, and scheduled ones of several (which must come back with the same keys and bytes);
- S3 unreachable (connections reset), then back;
- two exporters, then two processors, at once on a backlog of 100,000 events, in real time
  and with both cutting the same clients' scheduled deliveries at the same moment;
- inserts racing a running exporter, with transactions held open for random times so that
  later ids commit before earlier ones (and some roll back).

S3 is the session's moto server; the faults come from ``tests/fault_proxy.py`` between the
pipeline and moto. Every socket is on 127.0.0.1 and every process killed is one started here.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest

from evothesis.export.pipeline import ExportPipeline
from tests.support.fault_proxy import FaultProxy
from tests.support.s3 import (
    S3,
    Buckets,
    assert_exactly_once,
    insert_events,
    run_pipeline,
    s3_environment,
    sql,
    stored_events,
    wait_until,
)

#: Short leases, so that a killed exporter's work is taken over within the test.
LEASE = "2s"
CLIENTS = ("client-a", "client-b", "client-c")
#: Bounds for waiting on the processes and the ledger; nothing waits on a fixed sleep.
RUN_TIMEOUT = 90.0
STAGE_TIMEOUT = 30.0
#: How long inserts race the running exporter (at least).
RACE_SECONDS = 3.0


# ------------------------------------------------------------------------------- helpers


def pipeline_settings(s3: S3, buckets: Buckets, tmp_path: Path, **extra: Any) -> dict[str, str]:
    """Pipeline settings (environment names) on the moto server, or on ``S3_ENDPOINT_URL``."""
    settings = s3_environment(
        s3,
        buckets,
        EXPORT_LEASE=LEASE,
        EVOTHESIS_DATA_DIR=str(tmp_path / "data"),
        **extra,
    )
    return {name: str(value) for name, value in settings.items()}


def through_proxy(
    s3: S3, buckets: Buckets, tmp_path: Path, proxy: FaultProxy, **extra: Any
) -> dict[str, str]:
    """Settings of the fault tests: every bucket reached through the proxy, 1000-event
    batches (3000 events make three batches of three clients each)."""
    extra.setdefault("EXPORT_BATCH_SIZE", 1000)
    return pipeline_settings(s3, buckets, tmp_path, S3_ENDPOINT_URL=proxy.endpoint, **extra)


def run_in_process(database_url: str, settings: dict[str, str], *steps: str) -> list[Any]:
    """Run pipeline steps (``export``, ``process``) to completion in this process."""

    async def work(pipeline: ExportPipeline) -> list[Any]:
        return [await getattr(pipeline, step)() for step in steps]

    results: list[Any] = run_pipeline(database_url, work, **settings)
    return results


@dataclass
class Cli:
    """``python -m evothesis …`` subprocesses on the test database, with their output."""

    env: dict[str, str]
    logs: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _outputs: dict[int, Path] = field(default_factory=dict)

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        base = self.logs / f"{len(self.started) + 1:02d}-{'-'.join(args)}"
        stdout, stderr = base.with_suffix(".out"), base.with_suffix(".err")
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "evothesis", *args], env=self.env, stdout=out, stderr=err
            )
        self.started.append(process)
        self._outputs[process.pid] = base
        return process

    def stdout(self, process: subprocess.Popen[bytes]) -> str:
        return self._outputs[process.pid].with_suffix(".out").read_text(errors="replace")

    def log(self, process: subprocess.Popen[bytes]) -> str:
        """Everything the process wrote, for failure messages."""
        stderr = self._outputs[process.pid].with_suffix(".err").read_text(errors="replace")
        return f"{self.stdout(process)}\n--- stderr ---\n{stderr}"

    def finish(self, process: subprocess.Popen[bytes], timeout: float = RUN_TIMEOUT) -> int:
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(process)
            message = f"{process.args} ran over {timeout} s:\n{self.log(process)}"
            raise AssertionError(message) from None

    def run(self, *args: str, expect: int = 0) -> dict[str, Any]:
        """Run a command to its end; its JSON summary."""
        process = self.start(*args)
        code = self.finish(process)
        assert code == expect, f"{args} exited {code}, expected {expect}:\n{self.log(process)}"
        return self.summary(process)

    def summary(self, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = orjson.loads(self.stdout(process))
        except orjson.JSONDecodeError:
            raise AssertionError(f"no JSON summary:\n{self.log(process)}") from None
        return result

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL one of our own processes and reap it."""
        if process.poll() is None:
            process.kill()
        process.wait(timeout=15)

    def kill_all(self) -> None:
        for process in self.started:
            self.kill(process)


@pytest.fixture
def proxy(s3: S3) -> Iterator[FaultProxy]:
    port = urlsplit(s3.endpoint).port
    assert port is not None
    with FaultProxy(port) as running:
        yield running


@pytest.fixture
def cli_factory(database_url: str, tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Cli]]:
    """Cli objects for given pipeline settings; every process they started is killed (if
    still running) and reaped after the test."""
    made: list[Cli] = []

    def make(settings: dict[str, str]) -> Cli:
        env = {
            **os.environ,
            **settings,
            "DATABASE_URL": database_url,
            "ENVIRONMENT": "test",
        }
        cli = Cli(env, tmp_path)
        made.append(cli)
        return cli

    yield make
    for cli in made:
        cli.kill_all()


def leased_batches(database_url: str, pid: int) -> list[int]:
    """Pending batches leased to process ``pid`` (whether or not the lease has run out
    yet: nobody else runs while the test looks, and leases are short)."""
    rows = sql(
        database_url,
        "SELECT batch_id FROM export_batches WHERE state = 'pending'"
        " AND lease_owner LIKE %s ORDER BY batch_id",
        (f"%:{pid}",),
    )
    return [row[0] for row in rows]


def leased_deliveries(database_url: str, pid: int) -> list[tuple[str, int]]:
    """Pending deliveries (client, number) leased to process ``pid``, as ``leased_batches``."""
    rows = sql(
        database_url,
        "SELECT client_id, seq FROM export_deliveries WHERE state = 'pending'"
        " AND lease_owner LIKE %s ORDER BY client_id, seq",
        (f"%:{pid}",),
    )
    return [(row[0], row[1]) for row in rows]


def delivery_of(key: str, database_url: str) -> tuple[str, int]:
    """The delivery (client, number) a processed file belongs to, by its name: a real-time
    delivery's by its batch, any other's by its number."""
    client = key.split("/")[1]
    match = re.search(r"(batch|delivery)-(\d+)", key)
    assert match, key
    if match[1] == "delivery":
        return client, int(match[2])
    rows = sql(
        database_url,
        "SELECT delivery_seq FROM export_shares WHERE client_id = %s AND batch_id = %s",
        (client, int(match[2])),
    )
    return client, rows[0][0]


def wait_for_leases_to_expire(database_url: str) -> None:
    """The dead process's leases run out (EXPORT_LEASE); until then its work is not due."""
    wait_until(
        lambda: (
            not sql(
                database_url,
                "SELECT 1 FROM export_batches WHERE state = 'pending' AND lease_until >= now()"
                " UNION ALL"
                " SELECT 1 FROM export_deliveries WHERE state = 'pending' AND lease_until >= now()",
            )
        ),
        10,
        "the killed process's leases to expire",
    )


def batch_of(key: str) -> int:
    match = re.search(r"batch-(\d+)", key)
    assert match, key
    return int(match[1])


#: What the proxy counts once a request is frozen at each of its stages.
STAGE_MARKER = {"stall": "stall", "partial": "partial", "withhold": "withheld"}


def wait_while_running(
    cli: Cli, process: subprocess.Popen[bytes], condition: Callable[[], Any], what: str
) -> Any:
    def check() -> Any:
        assert process.poll() is None, f"exited early ({process.returncode}):\n{cli.log(process)}"
        return condition()

    return wait_until(check, STAGE_TIMEOUT, what)


@contextmanager
def frozen_at(stage: str, proxy: FaultProxy, database_url: str, table: str) -> Iterator[None]:
    """Freeze the next process at ``stage``: one of the proxy's faults on S3 writes, or
    ``recording``, where a SHARE lock held on ``table`` lets the process read but blocks the
    write that records its work as done once the objects are in S3 (a batch's shares,
    written in the transaction that marks the batch exported; the destinations' state,
    written by the statement that marks deliveries delivered): it dies before that commits."""
    if stage != "recording":
        proxy.set_mode(stage, methods=["PUT"])  # type: ignore[arg-type]
        try:
            yield
        finally:
            proxy.set_mode("forward")
        return
    with psycopg.connect(database_url) as lock:
        lock.execute(f"LOCK TABLE {table} IN SHARE MODE")
        yield  # leaving commits: the lock goes


def blocked_on(database_url: str, table: str) -> bool:
    rows = sql(
        database_url,
        "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
        (table,),
    )
    return bool(rows[0][0])


def frozen_marker(stage: str, proxy: FaultProxy, database_url: str, table: str) -> bool:
    if stage == "recording":
        return blocked_on(database_url, table)
    return proxy.count(STAGE_MARKER[stage]) >= 1


def wait_for_the_dead(database_url: str) -> None:
    """The killed process's server sessions end (a session blocked on a lock notices only
    when the lock is released; its transaction is then rolled back)."""
    wait_until(
        lambda: (
            not sql(
                database_url,
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'",
            )
        ),
        15,
        "the killed process's database sessions to end",
    )


# ------------------------------------------------------------- 1. SIGKILL at each stage


@pytest.mark.parametrize("stage", ["stall", "partial", "withhold", "recording"])
def test_exporter_killed_mid_batch_is_taken_over_exactly_once(
    stage: str,
    s3: S3,
    buckets: Buckets,
    proxy: FaultProxy,
    database_url: str,
    tmp_path: Path,
    cli_factory: Callable[[dict[str, str]], Cli],
) -> None:
    """Killed after claiming, with the upload ``stall``ed before anything reached S3, with
    half of the body sent (``partial``), after S3 stored the objects but before the exporter
    heard back (``withhold``), or while ``recording`` the batch as exported: the ledger still
    says pending, and the batch is exported (once) after its lease has run out."""
    insert_events(database_url, 3000, CLIENTS)
    cli = cli_factory(through_proxy(s3, buckets, tmp_path, proxy))
    with frozen_at(stage, proxy, database_url, "export_shares"):
        exporter = cli.start("export", "run")
        uploaded = stage in ("withhold", "recording")

        def frozen() -> list[int] | None:
            if not frozen_marker(stage, proxy, database_url, "export_shares"):
                return None
            if uploaded and not s3.keys(buckets.raw, "raw-events/"):
                return None
            return leased_batches(database_url, exporter.pid) or None

        wait_while_running(cli, exporter, frozen, f"the exporter frozen at {stage}")
        exported = sql(database_url, "SELECT count(*) FROM export_batches WHERE state = 'exported'")
        assert exported == [(0,)], "no batch can have been recorded with every upload frozen"
        stored_raw = s3.keys(buckets.raw, "raw-events/")
        leased = leased_batches(database_url, exporter.pid)
        if stage == "stall":
            assert stored_raw == [], "a stalled upload reached S3"
        if uploaded:
            # The dangerous window: the object is in S3, the ledger still says pending.
            assert {batch_of(key) for key in stored_raw} <= set(leased), (stored_raw, leased)

        cli.kill(exporter)
        assert exporter.returncode == -9
    wait_for_the_dead(database_url)
    wait_for_leases_to_expire(database_url)

    report = cli.run("export", "run")
    assert report["failed_batches"] == []
    cli.run("process", "run")

    attempts = dict(sql(database_url, "SELECT batch_id, attempts FROM export_batches"))
    assert all(attempts[batch] >= 2 for batch in leased), attempts  # taken over, not skipped
    assert_exactly_once(s3, buckets, database_url)


@pytest.mark.parametrize(
    ("stage", "fmt", "schedule"),
    [
        ("stall", "json", "real-time"),
        ("partial", "csv", "real-time"),
        ("withhold", "parquet", "real-time"),
        ("recording", "jsonl", "real-time"),
        ("stall", "csv", "hourly"),
        ("partial", "parquet", "hourly"),
        ("withhold", "json", "hourly"),
        ("recording", "jsonl", "hourly"),
    ],
)
def test_processor_killed_mid_delivery_is_taken_over_exactly_once(
    stage: str,
    fmt: str,
    schedule: str,
    s3: S3,
    buckets: Buckets,
    proxy: FaultProxy,
    database_url: str,
    tmp_path: Path,
    cli_factory: Callable[[dict[str, str]], Cli],
) -> None:
    """The same stages for the writes of ``process run`` (its reads of raw objects go
    through untouched); ``withhold`` and ``recording`` leave a client's file in S3 while
    its delivery is still pending. Real time: a delivery per batch and client; hourly: one
    delivery per client holding its three batches, one file. The delivery taken over writes
    the same keys with the same bytes."""
    insert_events(database_url, 3000, CLIENTS)
    settings = through_proxy(
        s3, buckets, tmp_path, proxy, EXPORT_FORMAT=fmt, EXPORT_SCHEDULE=schedule
    )
    (exported,) = run_in_process(database_url, settings, "export")
    assert exported.events == 3000 and not exported.failed_batches
    cli = cli_factory(settings)
    deliveries = 9 if schedule == "real-time" else 3

    with frozen_at(stage, proxy, database_url, "export_destination_state"):
        processor = cli.start("process", "run")
        uploaded = stage in ("withhold", "recording")

        def frozen() -> list[tuple[str, int]] | None:
            if not frozen_marker(stage, proxy, database_url, "export_destination_state"):
                return None
            if uploaded and not s3.keys(buckets.processed, "processed-events/"):
                return None
            return leased_deliveries(database_url, processor.pid) or None

        wait_while_running(cli, processor, frozen, f"the processor frozen at {stage}")
        delivered = sql(
            database_url, "SELECT count(*) FROM export_deliveries WHERE state = 'delivered'"
        )
        assert delivered == [(0,)], "no delivery can have been recorded with every write frozen"
        stored = {key: s3.get(buckets.processed, key) for key in s3.keys(buckets.processed)}
        leased = leased_deliveries(database_url, processor.pid)
        if stage == "stall":
            assert stored == {}, "a stalled upload reached S3"
        if uploaded:
            written = {delivery_of(key, database_url) for key in stored}
            assert written and written <= set(leased), (stored.keys(), leased)

        cli.kill(processor)
        assert processor.returncode == -9
    wait_for_the_dead(database_url)
    wait_for_leases_to_expire(database_url)

    report = cli.run("process", "run")
    assert report["failed"] == []
    # Each delivery is one file. On a slow machine a lease (2 s here) may run out while the
    # work is held up and the delivery be written again (same keys, same bytes): the
    # report may count more, never fewer.
    assert report["deliveries"] == report["files"] >= deliveries
    files = sql(database_url, "SELECT jsonb_array_length(files) FROM export_deliveries")
    assert files == [(1,)] * deliveries

    attempts = dict(
        ((client, seq), n)
        for client, seq, n in sql(
            database_url, "SELECT client_id, seq, attempts FROM export_deliveries"
        )
    )
    assert len(attempts) == deliveries
    assert all(attempts[delivery] >= 2 for delivery in leased), attempts
    for key, data in stored.items():
        assert s3.get(buckets.processed, key) == data, f"{key} changed when taken over"
    assert_exactly_once(s3, buckets, database_url)


# --------------------------------------------------------- 2. S3 unreachable, then back


def test_s3_unreachable_then_back_loses_nothing(
    s3: S3,
    buckets: Buckets,
    proxy: FaultProxy,
    database_url: str,
    tmp_path: Path,
    cli_factory: Callable[[dict[str, str]], Cli],
) -> None:
    insert_events(database_url, 3000, CLIENTS)
    cli = cli_factory(through_proxy(s3, buckets, tmp_path, proxy))

    # Raw export while every connection to S3 is reset.
    proxy.set_mode("reset", methods=None)
    report = cli.run("export", "run", expect=1)
    assert report["failed_batches"] and report["batches"] == 0
    assert proxy.count("reset") > 0
    failed = sql(
        database_url,
        "SELECT batch_id, last_error, lease_owner, next_attempt_at > now() FROM export_batches"
        " WHERE state = 'pending' ORDER BY batch_id",
    )
    assert failed, "the failed batches are in the ledger"
    for batch_id, error, owner, backing_off in failed:
        assert error and "could not write" in error, (batch_id, error)
        assert owner is None and backing_off
    assert sql(database_url, "SELECT count(*) FROM export_batches WHERE state = 'exported'") == [
        (0,)
    ]
    assert s3.keys(buckets.raw) == []
    assert len(stored_events(database_url)) == 3000

    # S3 is back. Skip the retry backoff (5 s and more) rather than wait for it.
    proxy.set_mode("forward")
    sql(database_url, "UPDATE export_batches SET next_attempt_at = now() WHERE state = 'pending'")
    report = cli.run("export", "run")
    assert report["failed_batches"] == [] and report["events"] == 3000

    # Processing while S3 is unreachable again: its reads and writes fail.
    proxy.set_mode("reset", methods=None)
    report = cli.run("process", "run", expect=1)
    assert report["failed"] and report["files"] == 0
    errors = sql(
        database_url,
        "SELECT count(*), count(last_error) FROM export_deliveries WHERE state = 'pending'",
    )
    assert errors == [(3, 3)], errors  # one delivery per client, of its three batches
    assert s3.keys(buckets.processed) == []

    # Back again; skip the deliveries' backoff and any client pause likewise.
    proxy.set_mode("forward")
    sql(
        database_url,
        "UPDATE export_deliveries SET next_attempt_at = now() WHERE state = 'pending'",
    )
    sql(database_url, "UPDATE export_destination_state SET paused_until = NULL")
    report = cli.run("process", "run")
    assert report["failed"] == [] and report["files"] == 3
    assert_exactly_once(s3, buckets, database_url)


# ------------------------------------------------------- 3. two exporters on a backlog


#: The advisory lock that serialises claims (``export_claim_lock``), as pg_locks shows it.
CLAIM_LOCK = 7461707468657369
CLAIM_WAITERS = (
    "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    f" AND classid::bigint = {CLAIM_LOCK >> 32} AND objid::bigint = {CLAIM_LOCK & 0xFFFFFFFF}"
)
DELIVERY_WAITERS = (
    "SELECT count(DISTINCT pid) FROM pg_locks"
    " WHERE relation = 'export_deliveries'::regclass AND NOT granted"
)


def start_together(
    cli: Cli, database_url: str, args: tuple[str, ...], gate: str, waiters: str
) -> list[subprocess.Popen[bytes]]:
    """Two processes of ``args`` released at the same moment: the test holds the lock
    ``gate`` takes until both are queued behind it, so neither can finish the backlog
    before the other has started (their start-up times vary by more than the work takes)."""
    with psycopg.connect(database_url) as conn:
        conn.execute(gate)
        processes = [cli.start(*args), cli.start(*args)]
        for process in processes:
            assert process.poll() is None, cli.log(process)
        wait_until(
            lambda: sql(database_url, waiters)[0][0] >= 2,
            STAGE_TIMEOUT,
            f"both {' '.join(args)} to wait on the lock",
        )
        conn.commit()  # releases the lock: both go
    return processes


@pytest.mark.parametrize("schedule", ["real-time", "hourly"])
def test_two_exporters_share_a_large_backlog_exactly_once(
    schedule: str,
    s3: S3,
    buckets: Buckets,
    database_url: str,
    tmp_path: Path,
    cli_factory: Callable[[dict[str, str]], Cli],
) -> None:
    """Two exporters, then two processors at once. In real time they share 100 deliveries
    (20 batches x 5 clients); hourly, both cut deliveries of the same clients at the same
    moment, and each client's events still go into exactly one delivery."""
    clients = tuple(f"client-{n}" for n in range(5))
    insert_events(database_url, 100_000, clients)
    cli = cli_factory(
        pipeline_settings(s3, buckets, tmp_path, EXPORT_BATCH_SIZE=5000, EXPORT_SCHEDULE=schedule)
    )

    exporters = start_together(
        cli,
        database_url,
        ("export", "run"),
        f"SELECT pg_advisory_xact_lock({CLAIM_LOCK})",
        CLAIM_WAITERS,
    )
    codes = [cli.finish(process) for process in exporters]
    assert codes == [0, 0], [cli.log(process) for process in exporters]
    reports = [cli.summary(process) for process in exporters]
    # Both were queued for the claim lock before the first claim, so both claimed batches.
    assert all(report["batches"] > 0 for report in reports), reports
    # A batch taken over after its lease ran out is uploaded twice (same key, same bytes):
    # the reports may add up to more than the backlog, never to less.
    assert sum(report["events"] for report in reports) >= 100_000, reports
    batches = sql(
        database_url,
        "SELECT count(*), sum(event_count), bool_and(state = 'exported') FROM export_batches",
    )
    assert batches == [(20, 100_000, True)]

    processors = start_together(
        cli,
        database_url,
        ("process", "run"),
        "LOCK TABLE export_deliveries IN ACCESS EXCLUSIVE MODE",
        DELIVERY_WAITERS,
    )
    codes = [cli.finish(process) for process in processors]
    assert codes == [0, 0], [cli.log(process) for process in processors]
    reports = [cli.summary(process) for process in processors]
    deliveries = 20 * len(clients) if schedule == "real-time" else len(clients)
    # Each share was cut into a delivery by one of them, once.
    assert sum(report["cut"] for report in reports) == deliveries, reports
    assert sql(database_url, "SELECT count(*) FROM export_deliveries") == [(deliveries,)]
    if schedule == "real-time":
        # Each holds at most PARALLEL_OBJECTS of the 20 batches at once, so both got some.
        assert all(report["files"] > 0 for report in reports), reports
    # A delivery taken over after its lease ran out is written twice (same keys, same
    # bytes): the reports may add up to more, never to less.
    assert sum(report["files"] for report in reports) >= deliveries, reports

    assert_exactly_once(s3, buckets, database_url)


# ------------------------------------------------- 4. inserts racing a running exporter


@dataclass
class Inserter:
    """Threads inserting events in transactions held open for random times (some rolled
    back), recording what committed and when."""

    database_url: str
    seed: int
    committed: dict[str, str] = field(default_factory=dict)
    #: (commit order, smallest id) of every committed transaction.
    commits: list[tuple[int, int]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, threads: int) -> None:
        for n in range(threads):
            thread = threading.Thread(target=self._run, args=(self.seed + n,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(self.database_url) as conn:
                while not self._stop.is_set():
                    size = rng.randint(1, 4)
                    events = {str(uuid.uuid4()): rng.choice(CLIENTS) for _ in range(size)}
                    ids = []
                    for event_id, client in events.items():
                        row = conn.execute(
                            """
                            INSERT INTO events_log (event_id, event_type, site_id, client_id,
                                                    "timestamp", raw_event_data)
                            VALUES (%s, 'click', %s, %s, now(), %s::jsonb)
                            RETURNING id
                            """,
                            (event_id, f"{client}.example", client, '{"race": true}'),
                        ).fetchone()
                        assert row is not None
                        ids.append(row[0])
                        time.sleep(rng.uniform(0, 0.05))
                    time.sleep(rng.uniform(0, 0.25))  # the transaction stays open
                    if rng.random() < 0.1:
                        conn.rollback()
                        continue
                    conn.commit()
                    with self._lock:
                        self.committed.update(events)
                        self.commits.append((len(self.commits), min(ids)))
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)


def test_inserts_racing_the_export_with_out_of_order_commits(
    s3: S3, buckets: Buckets, database_url: str, tmp_path: Path
) -> None:
    settings = pipeline_settings(s3, buckets, tmp_path, EXPORT_BATCH_SIZE=50)
    stop = threading.Event()
    rounds: list[int] = []
    exporter_errors: list[BaseException] = []

    async def loop(pipeline: ExportPipeline) -> None:
        while not stop.is_set():
            exported = await pipeline.export()
            assert not exported.failed_batches, exported
            processed = await pipeline.process()
            assert not processed.failed, processed
            rounds.append(exported.batches)
            await asyncio.sleep(0.05)

    def export_loop() -> None:
        try:
            run_pipeline(database_url, loop, **settings)
        except BaseException as exc:  # reported by the test
            exporter_errors.append(exc)

    inserter = Inserter(database_url, seed=20261125)
    exporter = threading.Thread(target=export_loop, daemon=True)
    exporter.start()
    try:
        inserter.start(threads=4)
        started = time.monotonic()

        def raced_enough() -> bool:
            assert not exporter_errors and exporter.is_alive(), exporter_errors
            assert not inserter.errors, inserter.errors
            # A few seconds, and batches exported (and processed) while inserts go on.
            exported = sql(
                database_url, "SELECT count(*) FROM export_batches WHERE state = 'exported'"
            )[0][0]
            return time.monotonic() - started >= RACE_SECONDS and exported >= 5

        wait_until(raced_enough, 30, "batches exported while inserting")
    finally:
        try:
            inserter.stop()
        finally:
            stop.set()
            exporter.join(timeout=60)
    assert not exporter.is_alive(), "the export loop did not stop"
    assert not inserter.running(), "an inserting thread did not stop"
    assert not inserter.errors, inserter.errors
    assert not exporter_errors, exporter_errors

    # The race happened: ids committed out of order, and batches were cut while inserting.
    ordered = [first_id for _, first_id in sorted(inserter.commits)]
    assert any(later < earlier for earlier, later in itertools.pairwise(ordered))
    assert len(rounds) >= 3, rounds

    exported, processed = run_in_process(database_url, settings, "export", "process")
    assert not exported.failed_batches and not processed.failed
    assert_exactly_once(s3, buckets, database_url, expected=inserter.committed)
