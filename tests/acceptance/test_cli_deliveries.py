"""`evothesis clients update`, `process …` and `export replay(s)` as an operator runs them:
real subprocesses on a real PostgreSQL, with the embedded default's local-folder buckets."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from tests.support.cli import clean_env, evothesis
from tests.support.postgres import register_client
from tests.support.s3 import insert_events


def cli_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """``clean_env`` on the test database, keeping PYTHONPATH: a worktree tested with
    another checkout's virtualenv runs its own code."""
    env = clean_env(tmp_path / "data", DATABASE_URL=database_url, ENVIRONMENT="test")
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def run_json(*args: str, env: dict[str, str]) -> tuple[object, str]:
    result = evothesis(*args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return orjson.loads(result.stdout), result.stderr


def test_schedules_replays_and_retries_from_a_shell(tmp_path: Path, database_url: str) -> None:
    env = cli_env(tmp_path, database_url)
    register_client(database_url, "shell_co", "shell.test")

    refused = evothesis("clients", "update", "shell_co", "--export-schedule", "often", env=env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: not a delivery schedule: 'often'")

    updated, warning = run_json(
        "clients",
        "update",
        "shell_co",
        "--export-schedule",
        "0 */6 * * *",
        "--export-threshold",
        "500",
        "--notify-url",
        "https://hooks.shell.test/e",
        env=env,
    )
    assert isinstance(updated, dict)
    assert (updated["export_schedule"], updated["export_threshold"]) == ("0 */6 * * *", 500)
    assert updated["notify_secret"].startswith("whsec_")  # shown this once
    assert "Keep this notify secret now" in warning
    shown, _ = run_json("clients", "show", "shell_co", env=env)
    assert isinstance(shown, dict)
    assert shown["has_notify_secret"] is True and "notify_secret" not in shown

    status, _ = run_json("process", "status", env=env)
    assert isinstance(status, dict)
    shell = next(c for c in status["clients"] if c["client_id"] == "shell_co")
    assert (shell["schedule"], shell["threshold"]) == ("0 */6 * * *", 500)
    assert shell["next_delivery_at"].endswith(":00:00+00:00")

    insert_events(database_url, 120, ("shell_co",))
    run_json("export", "run", env=env)
    processed, _ = run_json("process", "run", "--client", "shell_co", env=env)
    assert isinstance(processed, dict)
    assert (processed["cut"], processed["deliveries"], processed["events"]) == (1, 1, 120)
    folder = tmp_path / "data" / "buckets" / "processed" / "processed-events" / "shell_co"
    (file,) = list(folder.rglob("delivery-*[0-9].json"))  # the seed's document
    original = file.read_bytes()
    file.unlink()

    replayed, progress = run_json("export", "replay", "--client", "shell_co", env=env)
    assert isinstance(replayed, dict)
    assert (replayed["state"], replayed["done"], replayed["deliveries"]) == ("finished", 1, 1)
    assert "replay 1: 1/1 deliveries" in progress
    assert file.read_bytes() == original
    listed, _ = run_json("export", "replays", "--client", "shell_co", env=env)
    assert isinstance(listed, list) and [r["replay_id"] for r in listed] == [1]

    letters, _ = run_json("process", "dead-letters", env=env)
    assert letters == []
    retried, _ = run_json("process", "retry", "--client", "shell_co", env=env)
    assert isinstance(retried, dict)
    assert (retried["retried_deliveries"], retried["process"]["deliveries"]) == (0, 0)
    # The client has a webhook: the finished replay waits to be told by the scheduler.
    notices, _ = run_json("process", "notices", env=env)
    assert isinstance(notices, list)
    assert [(n["kind"], n["state"], n["data"]["replay"]) for n in notices] == [
        ("replay.finished", "pending", 1)
    ]
