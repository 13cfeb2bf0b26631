"""The console's actions from a shell: `evothesis clients update|test-destination`,
`evothesis process retry` and `evothesis events recent|failed`, as subprocesses against a real
PostgreSQL (the console's API side is tests/integration/test_operator_actions.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from tests.support.cli import evothesis
from tests.support.servers import RunningCollector, process_env


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """An operator's shell on the test database; its buckets are folders under tmp_path."""
    return process_env(DATABASE_URL=database_url, EVOTHESIS_DATA_DIR=str(tmp_path / "data"))


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return evothesis(*args, env=env)


def succeeded(*args: str, env: dict[str, str]) -> Any:
    result = run(*args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return orjson.loads(result.stdout) if result.stdout.startswith(("{", "[")) else result.stdout


def failed(*args: str, env: dict[str, str], code: int = 1) -> str:
    result = run(*args, env=env)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stderr


def test_clients_update_changes_what_is_given_as_the_admin_api_does(
    env: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    succeeded("clients", "add", "acme", "--name", "Acme", "-d", "acme.example", env=env)
    changed = succeeded(
        "clients", "update", "acme", "--name", "Acme Corp", "--privacy-level", "hipaa",
        "--ignore-dnt", "--export-destination", "s3://acme-events", "--export-format", "parquet",
        "--export-credential", "access_key_id=AK", "--export-credential", "secret_access_key=S",
        env=env,
    )  # fmt: skip
    assert {key: changed[key] for key in ("name", "privacy_level", "honour_dnt")} == {
        "name": "Acme Corp",
        "privacy_level": "hipaa",
        "honour_dnt": False,
    }
    assert (changed["export_format"], changed["has_export_credentials"]) == ("parquet", True)
    assert "AK" not in str(changed)

    cleared = succeeded(
        "clients",
        "update",
        "acme",
        "--export-destination",
        "",
        "--clear-export-credentials",
        env=env,
    )
    assert (cleared["export_destination"], cleared["has_export_credentials"]) == (None, False)
    assert cleared["name"] == "Acme Corp"  # what was not given stays

    scheduled = succeeded(
        "clients", "update", "acme", "--export-schedule", "daily", "--export-threshold", "500",
        env=env,
    )  # fmt: skip
    assert (scheduled["export_schedule"], scheduled["export_threshold"]) == ("daily", 500)
    back = succeeded("clients", "update", "acme", "--default-schedule", "--no-threshold", env=env)
    assert (back["export_schedule"], back["export_threshold"]) == (None, None)

    salt = "ab" * 16
    succeeded("clients", "update", "acme", "--ip-salt", salt, env=env)
    sealed = db.execute("SELECT ip_salt FROM clients WHERE client_id = 'acme'").fetchone()
    assert sealed is not None and salt not in bytes(sealed[0]).hex()  # sealed at rest

    assert "ip_salt: Value error, ip_salt must be at least 16 bytes" in failed(
        "clients", "update", "acme", "--ip-salt", "abcd", env=env
    )
    assert "name: String should have at most 200 characters" in failed(
        "clients", "update", "acme", "--name", "x" * 201, env=env
    )
    assert failed("clients", "update", "nobody", "--name", "N", env=env) == (
        "Error: client 'nobody' does not exist\n"
    )
    assert "at least one setting" in failed("clients", "update", "acme", env=env, code=2)
    assert "is not KEY=VALUE" in failed(
        "clients", "update", "acme", "--export-credential", "novalue", env=env, code=2
    )


def test_clients_test_destination_writes_and_deletes_or_exits_with_the_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "acme-exports"
    succeeded(
        "clients", "add", "acme", "--name", "Acme", "--export-destination", folder.as_uri(), env=env
    )
    result = succeeded("clients", "test-destination", "acme", env=env)
    assert result["destination"]["url"] == folder.as_uri()
    assert result["key"].startswith("evothesis-destination-test-")
    assert list(folder.iterdir()) == []  # written and deleted again

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    succeeded(
        "clients", "update", "acme", "--export-destination", (blocker / "x").as_uri(), env=env
    )
    error = failed("clients", "test-destination", "acme", env=env)
    assert error.startswith(f"Error: cannot open bucket {(blocker / 'x').as_uri()}: ")
    assert failed("clients", "test-destination", "nobody", env=env) == (
        "Error: client 'nobody' does not exist\n"
    )


def test_process_retry_delivers_a_paused_clients_files_once_its_destination_works(
    env: dict[str, str], tmp_path: Path, start_collector: Callable[..., RunningCollector]
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the client's folder should be")
    succeeded(
        "clients", "add", "late", "--name", "Late", "-d", "late.example",
        "--export-destination", blocked.as_uri(), env=env,
    )  # fmt: skip
    collector = start_collector()
    with collector.client(origin="https://late.example") as client:
        sent = {"eventType": "pageview", "siteId": "late.example", "visitorId": "v"}
        assert client.post("/collect", json=sent).status_code == 200

    assert succeeded("export", "run", env=env)["events"] == 1
    assert "client late" in failed("process", "run", env=env)
    # (Its first pause lasts seconds only: it may be over by the time this runs.)
    clients = orjson.loads(run("process", "status", env=env).stdout)["clients"]
    [late] = [c for c in clients if c["client_id"] == "late"]
    assert (late["failing_deliveries"], late["consecutive_failures"]) == (1, 1)
    assert "client late" in failed("process", "retry", "--client", "late", env=env)

    blocked.unlink()
    retried = succeeded("process", "retry", "--client", "late", env=env)
    assert (retried["retried_deliveries"], retried["process"]["files"]) == (1, 1)
    # One file in the default format (seed 004's JSON document), with its manifest: the
    # manual run's delivery 1 (the client is on the default, hourly, schedule).
    delivered = sorted(p.name for p in blocked.rglob("*") if p.is_file())
    assert delivered == ["delivery-000000000001.json", "delivery-000000000001.json.manifest.json"]
    again = succeeded("process", "retry", "--client", "late", env=env)
    assert (again["retried_deliveries"], again["process"]["deliveries"]) == (0, 0)


def test_events_recent_and_failed_show_what_is_stored(
    env: dict[str, str], start_collector: Callable[..., RunningCollector]
) -> None:
    collector = start_collector()
    batch = {
        "eventType": "batch",
        "siteId": "localhost",
        "visitorId": "vis_cli",
        "events": [{"eventType": "click"}, {"eventType": "scroll", "eventData": [1]}],
    }
    with collector.client() as client:
        assert client.post("/collect", json=batch).status_code == 200

    recent = succeeded("events", "recent", "--client", "client_test", "--type", "click", env=env)
    assert [(e["event_type"], e["visitor_id"]) for e in recent] == [("click", "vis_cli")]
    assert succeeded("events", "recent", "--site", "LOCALHOST:8000", "--limit", "1", env=env)
    assert succeeded("events", "recent", "--client", "nobody", env=env) == []
    [failure] = succeeded("events", "failed", env=env)
    assert (failure["reason"], failure["payload"]) == (
        "wrong_type",
        {"eventType": "scroll", "eventData": [1]},
    )
    assert "is not a host" in failed("events", "recent", "--site", "not a host", env=env, code=2)
