"""The README's run command path: `evothesis serve` on the embedded default, as a subprocess."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from tests.support.cli import EVOTHESIS, clean_env
from tests.support.loopback import free_port
from tests.support.seed import SEED_BATCH, SEED_SINGLE
from tests.support.servers import stop_process


def request(url: str, body: object | None = None) -> tuple[int, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Origin": "http://localhost"}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def wait_healthy(base: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early with {process.returncode}")
        try:
            if request(f"{base}/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("collector did not become healthy")


def serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [EVOTHESIS, "serve", "--port", str(port)],
            env=clean_env(data_dir, secret_key=False),
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(proc)
    return found


def test_help_lists_commands_and_environment() -> None:
    top = subprocess.run([EVOTHESIS, "--help"], capture_output=True, text=True, check=True)
    assert "serve" in top.stdout and "migrate" in top.stdout
    assert "DATABASE_URL" in top.stdout
    sub = subprocess.run([EVOTHESIS, "serve", "--help"], capture_output=True, text=True, check=True)
    for word in ("--host", "--port", "--workers", "EVOTHESIS_DATA_DIR"):
        assert word in sub.stdout


def test_invalid_setting_stops_with_its_name(tmp_path: Path) -> None:
    env = {**clean_env(tmp_path, secret_key=False), "DATABASE_POOL_SIZE": "abc"}
    result = subprocess.run(
        [EVOTHESIS, "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "DATABASE_POOL_SIZE" in result.stderr


def test_embedded_default_end_to_end_and_data_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log = tmp_path / "serve.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = serve(data_dir, port, log)
    try:
        wait_healthy(base, process)
        status, body = request(f"{base}/collect", SEED_SINGLE)
        assert (status, body["events_processed"], body["client_id"]) == (200, 1, "client_test")
        status, body = request(f"{base}/collect", SEED_BATCH)
        assert (status, body["events_processed"]) == (200, 4)
        assert request(f"{base}/events/count")[1]["count"] == 5
        assert stop_process(process) == 0
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    assert "Processing batch with 3 individual events for client client_test" in output
    assert "Bulk inserted 4 events for client client_test from site localhost" in output
    deadline = time.monotonic() + 15
    while postgres_processes(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert postgres_processes(data_dir) == [], "embedded PostgreSQL outlived the collector"

    again = serve(data_dir, port, log)
    try:
        wait_healthy(base, again)
        assert request(f"{base}/events/count")[1]["count"] == 5
    finally:
        assert stop_process(again) == 0


def exported_lines(folder: Path, pattern: str) -> list[dict[str, object]]:
    """The events (or records) of the files matching ``pattern``: JSON Lines, gzip or not,
    or the events of the seed's JSON documents (their manifests skipped)."""
    lines: list[dict[str, object]] = []
    for path in sorted(folder.rglob(pattern)):
        if path.name.endswith(".manifest.json"):
            continue
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        if path.suffix == ".json":
            lines.extend(json.loads(data)["events"])
            continue
        lines.extend(json.loads(line) for line in data.splitlines())
    return lines


def test_export_and_process_from_the_cli_while_serve_runs(tmp_path: Path) -> None:
    """The README's export path on the embedded default: events in, `evothesis export run`
    and `process run` with progress and a summary, files in the local buckets."""
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**clean_env(data_dir, secret_key=False), "EXPORT_INTERVAL": "off"}
    with (tmp_path / "serve.log").open("ab") as output:
        process = subprocess.Popen(
            [EVOTHESIS, "serve", "--port", str(port)], env=env, stdout=output, stderr=output
        )
    try:
        wait_healthy(base, process)
        assert request(f"{base}/collect", SEED_SINGLE)[0] == 200
        assert request(f"{base}/collect", SEED_BATCH)[0] == 200
        run = subprocess.run(
            [EVOTHESIS, "export", "run"], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert (summary["batches"], summary["events"], summary["failed_batches"]) == (1, 5, [])
        assert "raw export: 5/5 events (100%)" in run.stderr
        run = subprocess.run(
            [EVOTHESIS, "process", "run"], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["events"] == 5
        status = subprocess.run(
            [EVOTHESIS, "export", "status"], env=env, capture_output=True, text=True, timeout=120
        )
        assert json.loads(status.stdout)["exported_events"] == 5
    finally:
        assert stop_process(process) == 0
    buckets = data_dir / "buckets"
    raw = exported_lines(buckets / "raw", "*.jsonl.gz")
    processed = exported_lines(buckets / "processed" / "processed-events" / "client_test", "*.json")
    assert len(raw) == 5 and len({event["event_id"] for event in raw}) == 5
    assert sorted(e["event_id"] for e in processed) == sorted(e["event_id"] for e in raw)
    metering = exported_lines(buckets / "backup", "*.jsonl")
    assert sum(int(str(record["events"])) for record in metering) == 5
    # Events, keys and the spool are the owner's alone (EVOTHESIS_UMASK, default 077). As
    # root the embedded PostgreSQL runs as its own user, who may pass through the data
    # folder (execute) but not list it.
    passable = 0o011 if os.geteuid() == 0 else 0
    assert data_dir.stat().st_mode & 0o077 == passable
    exposed = [
        (str(path.relative_to(data_dir)), oct(path.stat().st_mode & 0o777))
        for path in data_dir.rglob("*")
        if path.stat().st_mode & 0o077 and not path.is_symlink()
    ]
    assert exposed == []


def test_serve_exports_on_its_schedule(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**clean_env(data_dir, secret_key=False), "EXPORT_INTERVAL": "1s"}
    with (tmp_path / "serve.log").open("ab") as output:
        process = subprocess.Popen(
            [EVOTHESIS, "serve", "--port", str(port)], env=env, stdout=output, stderr=output
        )
    try:
        wait_healthy(base, process)
        assert request(f"{base}/collect", SEED_BATCH)[0] == 200
        folder = data_dir / "buckets" / "processed" / "processed-events" / "client_test"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(exported_lines(folder, "*.json")) < 4:
            time.sleep(0.2)
        assert len(exported_lines(folder, "*.json")) == 4
    finally:
        assert stop_process(process) == 0
    assert (
        "Successfully uploaded 4 events to raw S3: raw-events/"
        in (tmp_path / "serve.log").read_text()
    )
