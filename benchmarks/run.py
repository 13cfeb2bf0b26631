"""Collector benchmark: wrk load on loopback, events counted in PostgreSQL afterwards.

    .venv/bin/python -m benchmarks.run [--runs 3] [--duration 10] [--connections 50]
                                       [--workers 1 [2 ...]] [--nginx]
                                       [--compare REF | --compare-env N=V]
                                       [--backlog ROWS]

Starts ``evothesis serve`` on the embedded default in a temporary data folder (INFO logging
on, as a user would run it, but without the export scheduler: this measures ingestion), a
bare-ASGI baseline, then for
each scenario (a single event and a batch of 20 to /collect, and a /v1/batch of 20 Segment
messages, authenticated with ``client_test``'s write key as SDKs send it) runs wrk
``--runs`` times and reports the median. After every run the rows
in ``events_log`` are counted through the database and compared with what wrk saw
acknowledged: a benchmark that loses events is a failure, not a number.

``--compare REF`` also measures an earlier revision of the collector (a git worktree of
REF, run with this environment's packages) in the same run, interleaved with this tree run
by run, so a change is judged by a ratio measured on the same machine seconds apart, e.g.
``--compare 3d66408`` for the collector before authorization and privacy enforcement.
``--compare-env NAME=VALUE`` does the same with this tree run a second time with one more
environment variable, e.g. ``--compare-env ENRICHMENT=off`` for the cost of enrichment.

``--backlog ROWS`` also measures this tree with ROWS unexported events already in its
buffer (filled in SQL before the load, a million per statement with progress, not
measured; refused at once when the disk cannot hold them), interleaved with the empty one,
so the ratio says what a lagging export costs ingestion; afterwards the export (raw and
processed, to local folders, as serve runs it) drains both buffers, showing its progress,
and their rates are compared, with each other and with the usual rate: a buffer of a tenth
as many events of the backlog's kind, drained alike. Stored events are counted by primary
key range, so a buffer of any size costs only the rows a run stored.

``--workers 1 2`` measures one collector per worker count (``serve --workers N``), likewise
interleaved, and reports the scaling ratio of the last count over the first per round.
``--nginx`` puts a real nginx (Debian's, the project's template rendered for loopback, as
the tests run it) in front of each collector, and wrk goes through it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg

from benchmarks.export import FILL
from benchmarks.processes import process_tree
from evothesis.embedded import start_embedded_postgres
from evothesis.storage.migrate import upgrade
from tests.support.loopback import free_port, wait_listening
from tests.support.nginx import loopback_values, start_nginx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent
RESULT = re.compile(r"RESULT (.*)")
#: The variant whose buffer holds ``--backlog`` unexported events.
BACKLOG = "@backlog"
#: A buffer of the backlog's kind of events only, a tenth as many: the export's usual rate.
REFERENCE = "@reference"


@dataclass
class Run:
    scenario: str
    requests_per_s: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    stored: int
    acknowledged_events: int


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up within {timeout} s")


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return dict(json.load(response))


@dataclass(frozen=True)
class Stored:
    """A collector's stored events, counted straight from its database rather than through
    the collector: the rows after ``floor``, its newest id before the load (a range of the
    primary key, so a buffer of any size costs only the rows the load stored)."""

    url: str
    floor: int

    @classmethod
    def of(cls, data_dir: Path) -> Stored:
        url = start_embedded_postgres(data_dir)
        return cls(url, fetch_int(url, "SELECT COALESCE(max(id), 0) FROM events_log"))

    def count(self) -> int:
        return fetch_int(self.url, "SELECT count(*) FROM events_log WHERE id > $1", self.floor)


def fetch_int(url: str, sql: str, *args: object) -> int:
    async def fetch() -> int:
        connection = await asyncpg.connect(url)
        try:
            return int(await connection.fetchval(sql, *args, timeout=None))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def settled_events(stored: Stored, timeout: float = 30) -> int:
    """The stored count once requests still in flight when wrk stopped have landed (two
    reads 0.5 s apart agree), so they count in the run that sent them, not the next one."""
    deadline = time.monotonic() + timeout
    count = stored.count()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        again = stored.count()
        if again == count:
            break
        count = again
    return count


@dataclass(frozen=True)
class Scenario:
    """What wrk sends: ``events`` per request to /collect (its batch envelope is stored
    too) or, with ``segment``, to /v1/batch (20 Segment messages store 20 rows)."""

    name: str
    events: int
    segment: bool = False

    @property
    def stored_per_request(self) -> int:
        if self.segment:
            return self.events
        return self.events + 1 if self.events else 1


SCENARIOS = (Scenario("single", 0), Scenario("batch20", 20), Scenario("v1batch20", 20, True))


def wrk(
    base: str, scenario: Scenario, duration: int, connections: int, authorization: str = ""
) -> dict[str, float]:
    env = {**os.environ, "EVENTS": str(scenario.events)}
    if scenario.segment:
        env.update(API="segment", AUTHORIZATION=authorization)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-s", str(HERE / "collect.lua"), base],
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    match = RESULT.search(out)
    if not match:
        raise SystemExit(f"wrk printed no RESULT line:\n{out}")
    return {k: float(v) for k, v in (pair.split("=") for pair in match.group(1).split())}


def peak_rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    return total / 1024


def measure(
    name: str,
    base: str,
    scenario: Scenario,
    args: argparse.Namespace,
    stored: Stored | None,
    runs: int = 0,
    authorization: str = "",
) -> list[Run]:
    results = []
    for index in range(runs or args.runs):
        before = settled_events(stored) if stored else 0
        r = wrk(base, scenario, args.duration, args.connections, authorization)
        duration = r["duration_s"]
        requests = int(r["requests"])
        ok = requests - int(r["errors_status"])
        per_request = scenario.stored_per_request
        new = settled_events(stored) - before if stored else 0
        run = Run(
            scenario=name,
            requests_per_s=requests / duration,
            events_per_s=ok * per_request / duration,
            p50_ms=r["p50_ms"],
            p99_ms=r["p99_ms"],
            non_2xx=int(r["errors_status"]),
            socket_errors=int(
                r["errors_connect"] + r["errors_read"] + r["errors_write"] + r["errors_timeout"]
            ),
            stored=new,
            acknowledged_events=ok * per_request,
        )
        results.append(run)
        print(
            f"  {name} run {index + 1}: {run.requests_per_s:8.0f} req/s "
            f"{run.events_per_s:9.0f} events/s  p50 {run.p50_ms:6.2f} ms  "
            f"p99 {run.p99_ms:6.2f} ms  non-2xx {run.non_2xx}  stored {new}",
            flush=True,
        )
    return results


def save_results(kind: str, document: dict[str, object]) -> Path:
    """``document`` as ``benchmarks/results/<kind>-<time>.json``, where every benchmark keeps
    the details behind the lines it prints."""
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(document, indent=2))
    return path


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def start_baseline(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The bare ASGI app (``baseline_app``) under uvicorn, one process, on a free port,
    listening: what any Python collector's rate on this machine is bounded by."""
    port = free_port()
    process = start(
        [
            str(VENV_BIN / "uvicorn"),
            "baseline_app:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--app-dir",
            str(HERE),
        ],
        env,
        log,
    )
    try:
        wait_listening(process, port)
    except RuntimeError as exc:
        stop(process)
        raise SystemExit(f"baseline {exc}") from None
    return process, port


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="collector worker processes"
    )
    parser.add_argument("--nginx", action="store_true", help="send the load through nginx")
    parser.add_argument("--compare", metavar="REF", help="also measure this git revision")
    parser.add_argument(
        "--compare-env",
        metavar="NAME=VALUE",
        help="also measure this tree with one more environment variable (e.g. ENRICHMENT=off)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        metavar="ROWS",
        help="also measure this tree with ROWS unexported events in its buffer, then drain\n"
        "both buffers through the export",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="evothesis-bench-"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["EVOTHESIS_DATA_DIR"] = str(work / "data")
    # Ingestion alone: the export scheduler inside serve would drain what wrk sends while
    # wrk sends it, on the same two cores (benchmarks/export.py measures export).
    env["EXPORT_IN_SERVE"] = "false"
    results: list[Run] = []

    baseline, port = start_baseline(env, work / "baseline.log")
    try:
        print("baseline (bare ASGI, 204):", flush=True)
        results += measure("baseline", f"http://127.0.0.1:{port}", SCENARIOS[0], args, None)
    finally:
        stop(baseline)

    scaling = len(args.workers) > 1
    variants = [
        (f"/w{n}" if scaling else "", {**env, "EVOTHESIS_DATA_DIR": str(work / f"w{n}")}, n)
        for n in args.workers
    ]
    if args.compare:
        source = checkout(args.compare, work)
        ref_env = {**env, "PYTHONPATH": str(source), "EVOTHESIS_DATA_DIR": str(work / "ref")}
        variants.insert(0, (f"@{args.compare}", ref_env, args.workers[0]))
    elif args.compare_env:
        name, _, value = args.compare_env.partition("=")
        ref_env = {**env, name: value, "EVOTHESIS_DATA_DIR": str(work / "ref")}
        variants.insert(0, (f"@{args.compare_env}", ref_env, args.workers[0]))
    if args.backlog:
        backlog_env = {**env, "EVOTHESIS_DATA_DIR": str(work / "backlog")}
        variants.insert(0, (BACKLOG, backlog_env, args.workers[0]))
        fill_backlog(work / "backlog", args.backlog)
    collectors = [
        (suffix, *start_collector(suffix, variant_env, workers, work))
        for suffix, variant_env, workers in variants
    ]
    try:
        for _, _, base in collectors:
            wait_http(f"{base}/health")
        counted = {
            suffix: Stored.of(Path(variant_env["EVOTHESIS_DATA_DIR"]))
            for suffix, variant_env, _ in variants
        }
        keys = {
            suffix: basic_auth(write_key(variant_env))
            for suffix, variant_env, _ in variants
            if not (args.compare and suffix == f"@{args.compare}")
        }
        with ExitStack() as proxies:
            targets = [
                (suffix, proxies.enter_context(nginx_in_front(base, work / f"nginx{n}")))
                if args.nginx
                else (suffix, base)
                for n, (suffix, _, base) in enumerate(collectors)
            ]
            # Interleaved: run i of every variant back to back, so drift in machine speed
            # (other tenants, thermal) hits both sides of a comparison alike; the order
            # flips every round, because the database a run has just filled is still
            # checkpointing and vacuuming while the next variant is measured.
            # An earlier revision (--compare) may not speak the Segment API: /v1 runs on this
            # tree's collectors only.
            for index in range(args.runs):
                for scenario in SCENARIOS:
                    for suffix, base in targets if index % 2 == 0 else targets[::-1]:
                        if scenario.segment and suffix not in keys:
                            continue
                        print(f"collector{suffix}, {scenario.name}, round {index + 1}:", flush=True)
                        results += measure(
                            scenario.name + suffix,
                            base,
                            scenario,
                            args,
                            counted[suffix],
                            runs=1,
                            authorization=keys.get(suffix, ""),
                        )
        head = collectors[-1][1]
        rss = peak_rss_mib(process_tree(head.pid))
    finally:
        for _, process, _ in collectors:
            stop(process)
    # The backlog's buffer, then this tree's (the first worker count's): what the load left.
    drains = [
        drain(suffix, Path(variant_env["EVOTHESIS_DATA_DIR"]), env)
        for suffix, variant_env, _ in variants
        if args.backlog and suffix in (BACKLOG, "", f"/w{args.workers[0]}")
    ]
    if args.backlog:
        # The usual rate: a buffer of the same generated events, a tenth as many, drained
        # alike (the load's own events are smaller, and cheaper to export, than these).
        fill_backlog(work / "reference", reference_rows(args.backlog))
        drains.append(drain(REFERENCE, work / "reference", env))
    report(results, rss, args, work, drains)


def reference_rows(backlog: int) -> int:
    return max(backlog // 10, 100_000)


@dataclass
class Drain:
    variant: str
    events: int
    seconds: float
    export_s: float
    process_s: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


#: Rows filled per statement (each a transaction): progress between them, and the
#: statement's own work (its triggers' counts, WAL) stays bounded.
FILL_STEP = 1_000_000
#: Disk a buffered event costs through the benchmark, roughly: its row and index entries,
#: WAL, and its raw and processed files once drained (2.6 KB measured at 1M events).
BYTES_PER_EVENT = 3_000


def fill_backlog(data_dir: Path, rows: int) -> None:
    """The backlog variant's database, migrated and holding ``rows`` unexported events
    before its collector starts (which then uses the server this starts). Refused at once
    when the disk cannot hold them (with the load and the drain that follow)."""
    free = shutil.disk_usage(data_dir.parent).free
    need = (rows + reference_rows(rows)) * BYTES_PER_EVENT
    if need > free:
        raise SystemExit(
            f"{rows:,} events need about {need / 1e9:.0f} GB of disk in {data_dir.parent};"
            f" {free / 1e9:.0f} GB free"
        )
    url = start_embedded_postgres(data_dir)
    upgrade(url)
    print(f"filling a buffer with {rows:,} events (set-up, not measured)...", flush=True)

    async def fill() -> None:
        connection = await asyncpg.connect(url)
        started = time.monotonic()
        try:
            for done in range(0, rows, FILL_STEP):
                step = min(FILL_STEP, rows - done)
                await connection.execute(FILL, step, 20, done, timeout=None)
                print(
                    f"  {done + step:,} events filled in {time.monotonic() - started:.0f} s",
                    flush=True,
                )
            await connection.execute("VACUUM ANALYZE events_log", timeout=None)
            print(f"  vacuumed in {time.monotonic() - started:.0f} s", flush=True)
        finally:
            await connection.close()

    asyncio.run(fill())


def drain(variant: str, data_dir: Path, env: dict[str, str]) -> Drain:
    """A stopped collector's buffer exported as an operator would (``evothesis export run``
    then ``process run``, the embedded default's local folders; their progress lines go to
    stderr, their logs only from WARNING up). The seconds are the runs' own (their
    reports'), without the commands' start-up; every event exported is processed, or the
    benchmark fails."""
    print(f"draining the buffer of collector{variant}...", flush=True)
    reports = [
        json.loads(
            subprocess.run(
                [sys.executable, "-m", "evothesis", step, "run"],
                env={**env, "EVOTHESIS_DATA_DIR": str(data_dir), "LOG_LEVEL": "WARNING"},
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            ).stdout
        )
        for step in ("export", "process")
    ]
    exported, processed = reports
    if exported["events"] != processed["events"]:
        raise SystemExit(f"collector{variant}: exported {exported}, processed {processed}")
    return Drain(
        variant,
        exported["events"],
        exported["seconds"] + processed["seconds"],
        exported["seconds"],
        processed["seconds"],
    )


@contextmanager
def nginx_in_front(base: str, folder: Path) -> Iterator[str]:
    """nginx on a free port proxying to the collector at ``base`` (which also serves the
    registry); yields nginx's URL and stops it afterwards."""
    upstream = base.removeprefix("http://")
    nginx = start_nginx(folder, loopback_values(folder, free_port(), [upstream], [upstream]))
    try:
        yield nginx.url
    finally:
        nginx.stop()


def start_collector(
    suffix: str, env: dict[str, str], workers: int, work: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """``evothesis serve`` on the embedded default in its own data folder."""
    port = free_port()
    command = [sys.executable, "-m", "evothesis", "serve", "--port", str(port)]
    log = work / f"collector{suffix.replace('@', '-').replace('/', '-')}.log"
    process = start([*command, "--workers", str(workers)], env, log)
    return process, f"http://127.0.0.1:{port}"


def write_key(env: dict[str, str]) -> str:
    """A fresh write key of the embedded default's ``client_test`` (the CLI works on the
    data folder's database while serve runs), for the /v1 scenario."""
    out = subprocess.run(
        [sys.executable, "-m", "evothesis", "clients", "rotate-write-key", "client_test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return out.split()[0]


def basic_auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def checkout(ref: str, work: Path) -> Path:
    """A detached worktree of ``ref``; its ``src`` goes first on PYTHONPATH."""
    tree = work / "ref-tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref],
        check=True,
        capture_output=True,
    )
    return tree / "src"


def ratio_text(
    results: list[Run], summary: dict[str, dict[str, float]], ours: str, theirs: str
) -> str:
    """Events/s of scenario ``ours`` over ``theirs``. Rounds ran back to back, so each
    round's ratio cancels the machine's drift; the median of those is the figure to quote."""
    rounds = [
        a.events_per_s / b.events_per_s
        for a, b in zip(
            (r for r in results if r.scenario == ours),
            (r for r in results if r.scenario == theirs),
            strict=True,
        )
    ]
    return (
        f"{statistics.median(rounds):.3f}x events/s (median of per-round ratios "
        f"{', '.join(f'{r:.2f}' for r in rounds)}; ratio of medians "
        f"{summary[ours]['events_per_s'] / summary[theirs]['events_per_s']:.3f})"
    )


def report(
    results: list[Run], rss: float, args: argparse.Namespace, work: Path, drains: list[Drain]
) -> None:
    # Requests still in flight when wrk stops are stored but not counted by wrk, so up to
    # one request per connection may be stored beyond what wrk saw acknowledged.
    slack = args.connections * max(s.stored_per_request for s in SCENARIOS)
    lost = [
        r
        for r in results
        if r.scenario != "baseline"
        and not r.acknowledged_events <= r.stored <= r.acknowledged_events + slack
    ]
    summary: dict[str, dict[str, float]] = {}
    for scenario in dict.fromkeys(r.scenario for r in results):
        runs = [r for r in results if r.scenario == scenario]
        summary[scenario] = {
            key: statistics.median(getattr(r, key) for r in runs)
            for key in ("requests_per_s", "events_per_s", "p50_ms", "p99_ms", "non_2xx")
        }
    base_rps = summary["baseline"]["requests_per_s"]
    print(
        f"\nmedian of {args.runs} runs, {args.duration} s each, {args.connections} connections,"
        f" {'/'.join(map(str, args.workers))} collector worker(s)"
        f"{', through nginx' if args.nginx else ''}"
    )
    print(
        f"{'scenario':<14} {'req/s':>9} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'non-2xx':>8} {'vs baseline':>12}"
    )
    for scenario, s in summary.items():
        print(
            f"{scenario:<14} {s['requests_per_s']:>9.0f} {s['events_per_s']:>10.0f}"
            f" {s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['non_2xx']:>8.0f}"
            f" {s['requests_per_s'] / base_rps:>11.2f}x"
        )
    for scenario in summary:
        name, _, ref = scenario.partition("@")
        if scenario.endswith(BACKLOG) and name in summary:
            print(
                f"{name}: with {args.backlog:,} events waiting vs an empty buffer: "
                f"{ratio_text(results, summary, scenario, name)}"
            )
        elif ref and name in summary:
            print(f"{name}: this tree vs {ref}: {ratio_text(results, summary, name, scenario)}")
    if len(args.workers) > 1:
        first, last = args.workers[0], args.workers[-1]
        for name in (s.name for s in SCENARIOS):
            ours, theirs = f"{name}/w{last}", f"{name}/w{first}"
            print(
                f"{name}: {last} vs {first} worker(s): {ratio_text(results, summary, ours, theirs)}"
            )
    for suffix in dict.fromkeys(r.scenario.partition("batch20")[2] for r in results):
        ours, theirs = f"v1batch20{suffix}", f"batch20{suffix}"
        if ours in summary and theirs in summary:
            print(
                f"/v1/batch of 20 vs /collect batch of 20{suffix and f' ({suffix})'}: "
                f"{ratio_text(results, summary, ours, theirs)}"
            )
    for d in drains:
        print(
            f"export drained collector{d.variant}'s buffer: {d.events:,} events in "
            f"{d.seconds:.1f} s, {d.events_per_s:,.0f} events/s (raw export {d.export_s:.1f} s,"
            f" processing {d.process_s:.1f} s)"
        )
    if drains:
        backlog, load_only, reference = drains
        print(
            f"drain rate, backlog vs {reference.events:,} events of the same kind (the usual"
            f" rate): {backlog.events_per_s / reference.events_per_s:.2f}x; vs after the load"
            f" alone (smaller events): {backlog.events_per_s / load_only.events_per_s:.2f}x"
        )
    print(f"collector peak RSS: {rss:.1f} MiB")
    print(
        "every acknowledged event was stored, none twice" if not lost else f"LOST EVENTS in {lost}"
    )
    path = save_results(
        "collect",
        {
            "runs": [asdict(r) for r in results],
            "summary": summary,
            "peak_rss_mib": rss,
            "drains": [{**asdict(d), "events_per_s": d.events_per_s} for d in drains],
            "args": vars(args),
        },
    )
    print(f"details: {path} (server logs in {work})")
    if args.compare:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "ref-tree")],
            check=False,
        )
    if lost:
        sys.exit(1)


if __name__ == "__main__":
    main()
