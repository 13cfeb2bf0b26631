"""Side by side with the seed's reference design, under the same wrk load, alternating.

    .venv/bin/python -m benchmarks.seed [--runs 3] [--duration 10] [--connections 50]
                                        [--workers 1]

Runs ``evothesis serve`` on the embedded default (``--workers`` processes; ingestion alone,
as ``benchmarks.run``) and the seed's reference design (``../shared/perf/run-seed-ref``:
FastAPI, sync SQLAlchemy ``bulk_insert_mappings``, one uvicorn worker, its own durable
PostgreSQL 15), then sends both the seed's own load: ``../shared/perf/post.lua`` posting
``bodies/single_400.json`` (one pageview) and ``bodies/batch20_4k.json`` (a batch of 20),
round by round, the order flipping every round. Stored rows are counted in each database
before and after every run; a run that stores fewer rows than wrk saw acknowledged fails
the benchmark. The figure to quote is the median of the per-round ratios of stored events
per second, with p99 latency beside it.

A third system in the same rounds, ``bare``, is the bare ASGI app of ``benchmarks.run``
under uvicorn (reads the body, answers 204, stores nothing): what one Python process
serves on this machine under this load when it does no work at all, the ceiling of both
collectors, reported as a ratio against the seed design as well (its "events" are its
requests times the rows the seed stores per request).

It also reports each collector process's resident memory at idle (before the first run)
and its peak under the load (``VmHWM``). The seed's virtualenv is kept in
``~/.cache/evothesis/seed-ref-venv`` (built from PyPI on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.processes import rss_mib, settled_rows
from benchmarks.run import ROOT, save_results, start, start_baseline, stop, wait_http
from evothesis.embedded import start_embedded_postgres
from tests.support.loopback import free_port, wait_listening

PERF = ROOT.parent / "shared" / "perf"
SEED_VENV = Path.home() / ".cache" / "evothesis" / "seed-ref-venv"
#: The seed's load bodies and the rows each request stores (a batch stores its envelope).
BODIES = {"single": ("single_400.json", 1), "batch20": ("batch20_4k.json", 21)}
OURS, SEED, BARE = "evothesis", "seed", "bare"


@dataclass
class Run:
    system: str
    scenario: str
    events_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    acknowledged: int
    #: Rows counted in the system's database; ``None`` for the bare app, which has none.
    stored: int | None


@dataclass
class System:
    name: str
    base: str
    database_url: str | None
    pid: int


def post(base: str, body: str, args: argparse.Namespace, result: Path) -> dict[str, float]:
    env = {**os.environ, "BODY_FILE": str(PERF / "bodies" / body), "RESULT_FILE": str(result)}
    subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{args.connections}",
            f"-d{args.duration}s",
            "-s",
            str(PERF / "post.lua"),
            f"{base}/collect",
        ],
        env=env,
        capture_output=True,
        timeout=args.duration + 60,
        check=True,
    )
    return {k: float(v) for k, v in json.loads(result.read_text()).items()}


def measure(system: System, scenario: str, args: argparse.Namespace, work: Path) -> Run:
    body, rows_per_request = BODIES[scenario]
    url = system.database_url
    before = settled_rows(url) if url else 0
    r = post(system.base, body, args, work / f"wrk-{system.name}-{scenario}.json")
    stored = settled_rows(url) - before if url else None
    seconds = r["duration_us"] / 1e6
    ok = int(r["requests"] - r["non2xx"])
    run = Run(
        system=system.name,
        scenario=scenario,
        events_per_s=ok * rows_per_request / seconds,
        requests_per_s=r["requests"] / seconds,
        p50_ms=r["lat_p50_us"] / 1000,
        p99_ms=r["lat_p99_us"] / 1000,
        non_2xx=int(r["non2xx"]),
        socket_errors=int(r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]),
        acknowledged=ok * rows_per_request,
        stored=stored,
    )
    print(
        f"  {system.name:<9} {scenario:<8} {run.events_per_s:9.0f} events/s "
        f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:7.2f} ms  non-2xx {run.non_2xx}  "
        f"stored {stored}",
        flush=True,
    )
    return run


def seed_ref(work: Path) -> tuple[subprocess.Popen[bytes], System]:
    """The seed's collector on a free port, its virtualenv shared between runs."""
    SEED_VENV.parent.mkdir(parents=True, exist_ok=True)
    if not (SEED_VENV / "bin" / "uvicorn").exists():
        print("building the seed's virtualenv (PyPI, once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(SEED_VENV)], check=True)
        subprocess.run(
            [
                str(SEED_VENV / "bin" / "pip"),
                "install",
                "-q",
                "-r",
                str(PERF / "seed_ref" / "requirements.txt"),
            ],
            check=True,
        )
    folder = work / "seed"
    folder.mkdir()
    work.chmod(0o755)  # the seed's PostgreSQL runs as its own user, and must reach its folder
    (folder / "venv").symlink_to(SEED_VENV)
    port = free_port()
    process = start(
        [str(PERF / "run-seed-ref"), str(port), str(folder)], {**os.environ}, work / "seed.log"
    )
    wait_listening(process, port, timeout=300)
    url = f"postgresql://postgres@127.0.0.1:{port + 1}/analytics"
    return process, System(SEED, f"http://127.0.0.1:{port}", url, process.pid)


def ours(work: Path, workers: int) -> tuple[subprocess.Popen[bytes], System]:
    data = work / "evothesis"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(EVOTHESIS_DATA_DIR=str(data), EXPORT_IN_SERVE="false")
    port = free_port()
    command = [sys.executable, "-m", "evothesis", "serve", "--port", str(port)]
    process = start([*command, "--workers", str(workers)], env, work / "evothesis.log")
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/health")
    return process, System(OURS, base, start_embedded_postgres(data), process.pid)


def ratio(runs: list[Run], system: str, scenario: str) -> tuple[float, list[float]]:
    """The median of ``system``'s per-round ratios to the seed design, and the rounds'."""
    pairs = zip(
        (r for r in runs if r.system == system and r.scenario == scenario),
        (r for r in runs if r.system == SEED and r.scenario == scenario),
        strict=True,
    )
    rounds = [a.events_per_s / b.events_per_s for a, b in pairs]
    return statistics.median(rounds), rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="our collector's processes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evothesis-seed-"))
    runs: list[Run] = []
    processes = []
    try:
        seed_process, seed = seed_ref(work)
        processes.append(seed_process)
        our_process, mine = ours(work, args.workers)
        processes.append(our_process)
        bare_process, port = start_baseline(dict(os.environ), work / "bare.log")
        processes.append(bare_process)
        bare = System(BARE, f"http://127.0.0.1:{port}", None, bare_process.pid)
        systems = [mine, seed, bare]
        time.sleep(5)  # start-up work (geo table, registry snapshot) settles first
        idle = {s.name: rss_mib(s.pid, "VmRSS") for s in (mine, seed)}
        for index in range(args.runs):
            for scenario in BODIES:
                for system in systems if index % 2 == 0 else systems[::-1]:
                    runs.append(measure(system, scenario, args, work))
        peak = {s.name: rss_mib(s.pid, "VmHWM") for s in (mine, seed)}
    finally:
        for process in processes:
            stop(process)
    report(runs, idle, peak, args, work)


def report(
    runs: list[Run],
    idle: dict[str, dict[int, float]],
    peak: dict[str, dict[int, float]],
    args: argparse.Namespace,
    work: Path,
) -> None:
    print(
        f"\nmedian of {args.runs} alternating rounds, {args.duration} s each, "
        f"{args.connections} connections, our collector with {args.workers} worker(s)"
    )
    print(f"{'system':<10} {'scenario':<9} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for system in (OURS, SEED, BARE):
        for scenario in BODIES:
            mine = [r for r in runs if r.system == system and r.scenario == scenario]
            print(
                f"{system:<10} {scenario:<9}"
                f" {statistics.median(r.events_per_s for r in mine):>10.0f}"
                f" {statistics.median(r.p50_ms for r in mine):>8.2f}"
                f" {statistics.median(r.p99_ms for r in mine):>8.2f}"
            )
    for system in (OURS, BARE):
        for scenario in BODIES:
            median, rounds = ratio(runs, system, scenario)
            print(
                f"{scenario}: {system} vs seed {median:.2f}x events/s "
                f"(per round {', '.join(f'{r:.2f}' for r in rounds)})"
            )
    for system in (OURS, SEED):
        print(
            f"{system} RSS per process (MiB): idle "
            f"{', '.join(f'{v:.0f}' for v in idle[system].values())}; peak under load "
            f"{', '.join(f'{v:.0f}' for v in peak[system].values())}"
        )
    lost = [r for r in runs if r.stored is not None and r.stored < r.acknowledged]
    print("every acknowledged event was stored" if not lost else f"LOST EVENTS in {lost}")
    path = save_results(
        "seed",
        {
            "runs": [asdict(r) for r in runs],
            "idle_rss_mib": idle,
            "peak_rss_mib": peak,
            "args": vars(args),
        },
    )
    print(f"details: {path} (logs in {work})")
    if lost:
        sys.exit(1)


if __name__ == "__main__":
    main()
