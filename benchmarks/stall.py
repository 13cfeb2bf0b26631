"""Event-loop stalls: how long tiny requests wait while the collector takes in 1 MiB bodies.

    .venv/bin/python -m benchmarks.stall [--duration 10] [--senders 1] [--compare REF]

Starts ``evothesis serve`` (on the embedded default in a temporary data folder, or on
``DATABASE_URL`` when it is set; no export scheduler) and, for each scenario, keeps
``--senders`` clients posting bodies close to the 1 MiB limit back to back while two
probes measure, from outside, what everyone else experiences meanwhile:

* ``preflight``: ``OPTIONS /collect`` from a registered page, answered on the event loop
  alone (no database, no thread): its latency is the loop's responsiveness;
* ``event``: a tiny ``POST /collect`` of one event, the hot path, database included.

Scenarios: ``idle`` (the probes alone, the reference), ``batch500`` (a batch of 500
realistic events with data, about 1 MB) and ``single`` (one event whose ``eventData`` holds
255 strings of 4,000 characters with the digits, e-mails and phone numbers that send text
through the PII rules, about 1 MB). The worst stall a big body causes is roughly the
probe's maximum latency minus its idle median.

``--compare REF`` also measures an earlier revision (a git worktree of REF, run with this
environment's packages) in the same run, before this tree, like ``benchmarks.run``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from benchmarks.run import ROOT, checkout, start, stop, wait_http
from tests.support.loopback import free_port

ORIGIN = "http://localhost"
WORDS = ("cart", "checkout", "product", "shipping", "order", "total", "size", "colour")


def text(rnd: random.Random, length: int) -> str:
    """Form-like text: mostly words, some numbers, e-mails and phone numbers."""
    words: list[str] = []
    size = 0
    while size < length:
        roll = rnd.random()
        if roll < 0.04:
            word = f"customer{rnd.randint(1, 9999)}@example.com"
        elif roll < 0.10:
            word = str(rnd.randint(1, 10**6))
        elif roll < 0.12:
            word = f"+1 415 555 {rnd.randint(1000, 9999)}"
        else:
            word = rnd.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:length]


def batch_body(rnd: random.Random) -> bytes:
    """500 events (the batch limit) of about 2 KB each: what a busy page flushes at once."""
    events = [
        {
            "eventType": rnd.choice(("click", "form_focus", "scroll", "custom")),
            "timestamp": f"2025-07-11T12:{index // 60 % 60:02d}:{index % 60:02d}Z",
            "url": f"https://localhost/products/{index}?ref=list&page={index % 7}",
            "eventData": {
                "element": f"button#buy-{index}",
                "selector": "main > section.products > article:nth-child(3) > a.btn",
                "label": text(rnd, 900),
                "position": {"x": index * 7, "y": index * 3, "viewport": [1280, 720]},
                "items": [text(rnd, 200), index, True],
                "details": {"note": text(rnd, 300), "price": 19.99, "currency": "EUR"},
            },
        }
        for index in range(500)
    ]
    return orjson.dumps(
        {
            "eventType": "batch",
            "siteId": "localhost",
            "sessionId": "sess_stall",
            "visitorId": "vis_stall",
            "url": "https://localhost/products",
            "events": events,
        }
    )


def single_body(rnd: random.Random) -> bytes:
    """One event with a large ``eventData``: 255 values at the 4,096-character limit."""
    data = {f"field_{index}": text(rnd, 4000) for index in range(255)}
    return orjson.dumps(
        {
            "eventType": "form_submit",
            "siteId": "localhost",
            "url": "https://localhost/contact",
            "eventData": data,
        }
    )


TINY_EVENT = orjson.dumps(
    {"eventType": "pageview", "siteId": "localhost", "url": "https://localhost/probe"}
)


@dataclass
class Probe:
    """Latencies of one kind of tiny request, sent one at a time on a kept-alive connection."""

    name: str
    method: str
    body: bytes | None
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    def run(self, host: str, port: int, stop_at: threading.Event, pause: float) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        headers = {"Origin": ORIGIN, "Content-Type": "application/json"}
        if self.method == "OPTIONS":
            headers["Access-Control-Request-Method"] = "POST"
        while not stop_at.is_set():
            started = time.perf_counter()
            try:
                connection.request(self.method, "/collect", body=self.body, headers=headers)
                response = connection.getresponse()
                response.read()
                ok = response.status in (200, 202, 204)
            except OSError:
                connection.close()
                ok = False
            elapsed = time.perf_counter() - started
            if ok:
                self.latencies.append(elapsed)
            else:
                self.failures += 1
            stop_at.wait(pause)
        connection.close()


@dataclass
class Sender:
    """Posts one big body after another; counts the answers."""

    body: bytes
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def run(self, host: str, port: int, stop_at: threading.Event) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        headers = {"Origin": ORIGIN, "Content-Type": "application/json"}
        while not stop_at.is_set():
            started = time.perf_counter()
            try:
                connection.request("POST", "/collect", body=self.body, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
            except OSError:
                connection.close()
                status = 0
            self.latencies.append(time.perf_counter() - started)
            self.statuses[status] = self.statuses.get(status, 0) + 1


def measure(
    base: str, body: bytes | None, senders: int, duration: float, pause: float
) -> dict[str, object]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    stop_at = threading.Event()
    probes = [Probe("preflight", "OPTIONS", None), Probe("event", "POST", TINY_EVENT)]
    loaders = [] if body is None else [Sender(body) for _ in range(senders)]
    threads = [
        threading.Thread(target=p.run, args=(host, int(port), stop_at, pause)) for p in probes
    ] + [threading.Thread(target=s.run, args=(host, int(port), stop_at)) for s in loaders]
    for thread in threads:
        thread.start()
    time.sleep(duration)
    stop_at.set()
    for thread in threads:
        thread.join(timeout=120)
    result: dict[str, object] = {}
    for probe in probes:
        ms = sorted(1000 * t for t in probe.latencies)
        result[probe.name] = {
            "n": len(ms),
            "failures": probe.failures,
            "p50": statistics.median(ms),
            "p99": ms[int(0.99 * (len(ms) - 1))],
            "max": ms[-1],
        }
    big = sorted(1000 * t for s in loaders for t in s.latencies)
    statuses: dict[int, int] = {}
    for sender in loaders:
        for status, count in sender.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    result["big"] = {
        "n": len(big),
        "statuses": statuses,
        "p50": statistics.median(big) if big else 0.0,
    }
    return result


def start_collector(
    name: str, env: dict[str, str], work: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = start(
        [sys.executable, "-m", "evothesis", "serve", "--port", str(port)],
        env,
        work / f"collector-{name}.log",
    )
    return process, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per scenario")
    parser.add_argument("--senders", type=int, default=1, help="clients posting big bodies")
    parser.add_argument(
        "--pause", type=float, default=0.005, help="seconds between a probe's requests"
    )
    parser.add_argument("--compare", metavar="REF", help="also measure this git revision")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="evothesis-stall-"))
    env = dict(os.environ)
    env["EXPORT_IN_SERVE"] = "false"
    env["EVOTHESIS_DATA_DIR"] = str(work / "this")
    variants = [("this", env)]
    if args.compare:
        source = checkout(args.compare, work)
        ref_env = {**env, "PYTHONPATH": str(source), "EVOTHESIS_DATA_DIR": str(work / "ref")}
        variants.insert(0, (args.compare, ref_env))
    rnd = random.Random(20260601)
    scenarios = [("idle", None), ("batch500", batch_body(rnd)), ("single", single_body(rnd))]
    for name, body in scenarios[1:]:
        assert body is not None
        print(f"{name}: {len(body):,} bytes", flush=True)
    rows: list[tuple[str, str, dict[str, object]]] = []
    for variant, variant_env in variants:
        process, base = start_collector(variant, variant_env, work)
        try:
            wait_http(f"{base}/health")
            # Caches (the registry's answer for the page, the worker processes, the parsers'
            # caches) fill on first use; a first request is slow on its own account.
            for _, body in scenarios:
                measure(base, body, 1, 1.0, args.pause)
            for name, body in scenarios:
                result = measure(base, body, args.senders, args.duration, args.pause)
                rows.append((variant, name, result))
                print(f"  {variant:>8} {name:<9} {line(result)}", flush=True)
        finally:
            stop(process)
    print(
        f"\n{args.duration:g} s per scenario, {args.senders} sender(s) of big bodies; "
        "probe latencies in ms (p50 / p99 / max)"
    )
    for variant, name, result in rows:
        print(f"{variant:>8} {name:<9} {line(result)}")
    if args.compare:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "ref-tree")],
            check=False,
        )
    print(f"server logs in {work}")


def line(result: dict[str, object]) -> str:
    parts = []
    for name in ("preflight", "event"):
        r = result[name]
        assert isinstance(r, dict)
        parts.append(f"{name} {r['p50']:6.2f} / {r['p99']:7.2f} / {r['max']:7.2f}")
    big = result["big"]
    assert isinstance(big, dict)
    if big["n"]:
        parts.append(f"big bodies {big['n']} (p50 {big['p50']:.0f} ms, {big['statuses']})")
    return "   ".join(parts)


if __name__ == "__main__":
    main()
