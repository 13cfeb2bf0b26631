"""Soak run: a steady request rate for minutes, RSS sampled over time, nothing lost.

    .venv/bin/python -m benchmarks.soak [--minutes 10] [--rate 400] [--events 5]

Starts ``evothesis serve`` on the embedded default in a temporary data folder and posts
batches of ``--events`` events at ``--rate`` requests/s from a paced loader on loopback
(several threads, each with its own schedule). The export runs inside serve, as by default,
so its worker processes are measured too. It records each process's resident memory at idle
(before the load) and every ``--sample`` seconds; at the end it compares the events
acknowledged (200/202) with the rows in ``events_log``. Memory that keeps growing, or a
single lost event, is a failure (exit 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from benchmarks.processes import rss_mib, stored_rows
from benchmarks.run import save_results, start, stop, wait_http
from evothesis.embedded import start_embedded_postgres
from tests.support.loopback import free_port

THREADS = 8


def rss_by_process(pid: int) -> dict[str, float]:
    """Resident MiB of each Python process in the collector's tree, by its role."""
    return {_role(member): mib for member, mib in rss_mib(pid, "VmRSS").items()}


def _role(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"gone {pid}"
    if b"resource_tracker" in command:
        return "resource tracker"
    return f"export worker {pid}" if b"spawn_main" in command else "collector"


def _rss_text(rss: dict[str, float]) -> str:
    return ", ".join(f"{role} {mib:.0f}" for role, mib in sorted(rss.items()))


class Loader:
    """Paced posting: each thread sends at rate/THREADS requests/s on its own clock."""

    def __init__(self, base: str, rate: float, events: int) -> None:
        self.base = base
        self.interval = THREADS / rate
        self.events = events
        self.acknowledged = 0
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(THREADS)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        headers = {"Origin": "http://localhost"}
        next_at = time.monotonic()
        with httpx.Client(base_url=self.base, timeout=10, headers=headers) as api:
            while not self._stop.is_set():
                body = {
                    "eventType": "batch",
                    "eventId": str(uuid.uuid4()),
                    "siteId": "localhost",
                    "url": "https://localhost/soak?page=1",
                    "events": [
                        {"eventType": "click", "eventId": str(uuid.uuid4()), "eventData": {"n": i}}
                        for i in range(self.events)
                    ],
                }
                started = time.monotonic()
                try:
                    status = api.post("/collect", json=body).status_code
                except httpx.TransportError:
                    status = 0
                elapsed = time.monotonic() - started
                with self._lock:
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    self.latencies.append(elapsed)
                    if status in (200, 202):
                        self.acknowledged += self.events + 1
                next_at += self.interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    self._stop.wait(pause)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=400, help="requests per second")
    parser.add_argument("--events", type=int, default=5, help="inner events per batch")
    parser.add_argument("--sample", type=float, default=30, help="seconds between RSS samples")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="evothesis-soak-"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["EVOTHESIS_DATA_DIR"] = str(work / "data")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    collector = start(
        [sys.executable, "-m", "evothesis", "serve", "--port", str(port)], env, work / "serve.log"
    )
    samples: list[tuple[float, dict[str, float]]] = []
    loader = Loader(base, args.rate, args.events)
    try:
        wait_http(f"{base}/health")
        database = start_embedded_postgres(work / "data")
        time.sleep(10)  # start-up work (geo table, registry snapshot) settles first
        idle = rss_by_process(collector.pid)
        print(f"  idle RSS (MiB): {_rss_text(idle)}", flush=True)
        loader.start()
        began = time.monotonic()
        end = began + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(args.sample, max(0.0, end - time.monotonic())))
            elapsed = time.monotonic() - began
            samples.append((elapsed, rss_by_process(collector.pid)))
            print(
                f"  t={elapsed:6.0f} s  RSS (MiB) {_rss_text(samples[-1][1])}  "
                f"acknowledged {loader.acknowledged} events",
                flush=True,
            )
        loader.stop()
        time.sleep(1)
        in_database = stored_rows(database)
    finally:
        loader.stop()
        stop(collector)

    duration = args.minutes * 60
    latencies = sorted(loader.latencies)
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0
    half = len(samples) // 2
    total = [sum(rss.values()) for _, rss in samples]
    early = statistics.median(total[:half]) if half else 0.0
    late = statistics.median(total[half:]) if samples else 0.0
    peak = {role: max(rss.get(role, 0.0) for _, rss in samples) for role in samples[-1][1]}
    print(
        f"\n{args.minutes:g} min at {args.rate:g} req/s x {args.events + 1} events: "
        f"{loader.acknowledged / duration:.0f} events/s acknowledged, p99 {p99:.1f} ms, "
        f"statuses {loader.statuses}"
    )
    print(f"RSS per process (MiB) at idle: {_rss_text(idle)}")
    print(f"RSS per process (MiB), peak under load: {_rss_text(peak)}")
    print(f"RSS per process (MiB) at the end: {_rss_text(samples[-1][1])}")
    print(f"RSS of them all, median first half {early:.1f} MiB, second half {late:.1f} MiB")
    print(f"acknowledged {loader.acknowledged}, in events_log {in_database}")
    out = save_results(
        "soak",
        {
            "args": vars(args),
            "idle_rss_mib": idle,
            "rss_samples": samples,
            "statuses": loader.statuses,
            "acknowledged": loader.acknowledged,
            "stored": in_database,
            "p99_ms": p99,
        },
    )
    print(f"details: {out} (server log in {work})")
    lost = loader.acknowledged - in_database
    growing = late > early * 1.25 + 20
    if lost > 0 or growing:
        print(f"FAILED: lost {lost} events" if lost > 0 else "FAILED: memory keeps growing")
        sys.exit(1)


if __name__ == "__main__":
    main()
