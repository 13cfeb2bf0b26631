"""`evothesis clients|domains|secret-key|pixel-management` as an operator runs them: real
subprocesses against a real PostgreSQL, checking output, exit codes and error lines."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from cryptography.fernet import Fernet

from tests.support.cli import evothesis, shell_env
from tests.support.loopback import free_port
from tests.support.postgres import TEST_SECRET_KEY
from tests.support.servers import killed_on_exit, start_process, stop_process

PYTHON = sys.executable
ADMIN_TOKEN = "cli-admin-token"


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The environment of an operator's shell: the test database, the suite's secret key
    (test databases hold the development client sealed with it), nothing else."""
    return shell_env(
        ENVIRONMENT="test",
        EVOTHESIS_DATA_DIR=str(tmp_path / "data"),
        EVOTHESIS_SECRET_KEY=TEST_SECRET_KEY,
        DATABASE_URL=database_url,
    )


def succeeded(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = evothesis(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result


def assert_one_error_line(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == f"Error: {message}\n"
    assert result.stdout == ""


def sha256(write_key: str) -> str:
    return hashlib.sha256(write_key.encode()).hexdigest()


def client_row(db: psycopg.Connection[Any], client_id: str) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT privacy_level, active, write_key_sha256 FROM clients WHERE client_id = %s",
        (client_id,),
    ).fetchone()


def test_add_prints_the_record_and_the_write_key_once(
    env: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    result = succeeded(
        "clients", "add", "acme", "--name", "Acme Corp", "--privacy-level", "gdpr",
        "--ip-collection", "anonymized", "--ignore-dnt", "--consent", "required",
        "--bots", "drop", "--domain", "Acme.example", "-d", "*.acme.example",
        "--export-destination", "s3://acme-events", "--export-format", "csv",
        "--export-layout", "hive", "--table-retention-days", "30",
        env=env,
    )  # fmt: skip

    printed = orjson.loads(result.stdout)
    write_key = printed.pop("write_key")
    assert {k: v for k, v in printed.items() if not k.endswith("_at")} == {
        "client_id": "acme",
        "name": "Acme Corp",
        "privacy_level": "gdpr",
        "ip_collection": "anonymized",
        "honour_dnt": False,
        "consent_mode": "required",
        "bot_policy": "drop",
        "require_write_key": False,
        "user_id_storage": None,
        "export_destination": "s3://acme-events",
        "export_format": "csv",
        "export_layout": "hive",
        "table_retention_days": 30,
        "has_export_credentials": False,
        "export_schedule": None,
        "export_threshold": None,
        "notify_url": None,
        "has_notify_secret": False,
        "active": True,
        "domains": ["*.acme.example", "acme.example"],
    }
    assert "Keep this write key now" in result.stderr
    assert client_row(db, "acme") == ("gdpr", True, sha256(write_key))
    shown = orjson.loads(succeeded("clients", "show", "acme", env=env).stdout)
    assert shown == printed
    assert write_key not in succeeded("clients", "list", env=env).stdout


def test_list_is_an_aligned_table(env: dict[str, str]) -> None:
    succeeded("clients", "add", "acme", "--name", "Acme", "-d", "acme.example", env=env)
    succeeded("clients", "add", "b2", "--name", "B", "--privacy-level", "hipaa", env=env)
    succeeded("clients", "deactivate", "b2", env=env)

    lines = succeeded("clients", "list", env=env).stdout.splitlines()

    assert lines[0].split() == ["CLIENT", "ID", "NAME", "LEVEL", "ACTIVE", "DOMAINS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["acme"].split() == ["acme", "Acme", "standard", "yes", "acme.example"]
    assert rows["b2"].split() == ["b2", "B", "hipaa", "no", "-"]
    assert "client_test" in rows  # test databases come with the development client
    columns = {line.index(name) for line in lines for name in ("standard", "hipaa") if name in line}
    assert columns == {lines[0].index("LEVEL")}


def test_deactivate_activate_and_rotate_write_key(
    env: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    added = orjson.loads(succeeded("clients", "add", "acme", "--name", "Acme", env=env).stdout)
    digest = sha256(added["write_key"])

    off = succeeded("clients", "deactivate", "acme", env=env)
    assert off.stdout == "Client acme deactivated.\n"
    assert client_row(db, "acme") == ("standard", False, digest)
    on = succeeded("clients", "activate", "acme", env=env)
    assert on.stdout == "Client acme activated.\n"
    assert client_row(db, "acme") == ("standard", True, digest)

    rotated = succeeded("clients", "rotate-write-key", "acme", env=env)
    new_key = rotated.stdout.strip()
    assert new_key.startswith("wk_") and new_key != added["write_key"]
    assert "Keep this write key now" in rotated.stderr
    assert client_row(db, "acme") == ("standard", True, sha256(new_key))


def test_domains_add_and_remove(env: dict[str, str], db: psycopg.Connection[Any]) -> None:
    succeeded("clients", "add", "acme", "--name", "Acme", env=env)

    added = succeeded("domains", "add", "acme", "HTTPS://Shop.Acme.Example/", env=env)
    owned = db.execute("SELECT domain FROM client_domains WHERE client_id = 'acme'").fetchall()
    removed = succeeded("domains", "remove", "acme", "shop.acme.example", env=env)

    assert added.stdout == "Domain shop.acme.example added to client acme.\n"
    assert owned == [("shop.acme.example",)]
    assert removed.stdout == "Domain shop.acme.example removed from client acme.\n"
    assert db.execute(
        "SELECT count(*) FROM client_domains WHERE client_id = 'acme'"
    ).fetchone() == (0,)


def test_errors_are_one_line_and_exit_1(env: dict[str, str], db: psycopg.Connection[Any]) -> None:
    succeeded("clients", "add", "owner", "--name", "Owner", "-d", "shared.example", env=env)

    assert_one_error_line(
        evothesis("clients", "show", "ghost", env=env), "client 'ghost' does not exist"
    )
    assert_one_error_line(
        evothesis("clients", "deactivate", "ghost", env=env), "client 'ghost' does not exist"
    )
    assert_one_error_line(
        evothesis("domains", "add", "ghost", "x.example", env=env), "client 'ghost' does not exist"
    )
    assert_one_error_line(
        evothesis("clients", "add", "owner", "--name", "Again", env=env),
        "client 'owner' already exists",
    )
    assert_one_error_line(
        evothesis("clients", "add", "late", "--name", "Late", "-d", "shared.example", env=env),
        "domain 'shared.example' already belongs to client 'owner'",
    )
    assert client_row(db, "late") is None, "a conflicting domain must create nothing"
    assert_one_error_line(
        evothesis("domains", "remove", "owner", "other.example", env=env),
        "domain 'other.example' is not registered for client 'owner'",
    )
    invalid = evothesis("domains", "add", "owner", "*.com", env=env)
    assert invalid.returncode == 1
    assert invalid.stderr.startswith("Error: invalid domain pattern '*.com'")
    assert invalid.stderr.count("\n") == 1
    bad_id = evothesis("clients", "add", "Bad Id", "--name", "X", env=env)
    assert bad_id.returncode == 1
    assert bad_id.stderr.startswith("Error: invalid client_id 'Bad Id'")


@pytest.mark.parametrize(
    "args",
    [
        ("clients", "add", "acme", "--name", "Acme", "--privacy-level", "loose"),
        ("clients", "add", "acme", "--name", "Acme", "--export-format", "xml"),
        ("clients", "add", "acme"),
        ("clients", "show"),
        ("domains", "add", "acme"),
    ],
)
def test_usage_errors_exit_2_and_change_nothing(
    env: dict[str, str], db: psycopg.Connection[Any], args: tuple[str, ...]
) -> None:
    result = evothesis(*args, env=env)
    assert result.returncode == 2
    assert "Usage:" in result.stderr
    assert "Traceback" not in result.stderr
    assert client_row(db, "acme") is None


def test_an_unreachable_database_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    env["DATABASE_URL"] = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    result = evothesis("clients", "list", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot use the database: ConnectionRefusedError")
    assert result.stderr.count("\n") == 1


def test_production_without_a_secret_key_stops_before_touching_the_database(
    tmp_path: Path, env: dict[str, str]
) -> None:
    env.update(ENVIRONMENT="production", DATABASE_URL="postgresql://nobody@127.0.0.1:1/x")
    del env["EVOTHESIS_SECRET_KEY"]
    result = evothesis("clients", "list", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: EVOTHESIS_SECRET_KEY is required in production")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "data").exists()


def test_a_wrong_secret_key_is_named(env: dict[str, str]) -> None:
    succeeded("clients", "add", "acme", "--name", "Acme", env=env)
    env["EVOTHESIS_SECRET_KEY"] = Fernet.generate_key().decode()
    result = evothesis("clients", "deactivate", "acme", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: a stored secret cannot be decrypted")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "command",
    [
        ("clients",),
        ("clients", "add"),
        ("clients", "list"),
        ("clients", "show"),
        ("clients", "deactivate"),
        ("clients", "activate"),
        ("clients", "rotate-write-key"),
        ("domains", "add"),
        ("domains", "remove"),
        ("pixel-management",),
        ("secret-key",),
    ],
)
def test_help_explains_the_command_and_the_environment(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    result = evothesis(*command, "--help", env=shell_env())
    assert result.returncode == 0
    for variable in ("DATABASE_URL", "EVOTHESIS_SECRET_KEY", "EVOTHESIS_ADMIN_TOKEN"):
        assert variable in result.stdout
    assert "Usage:" in result.stdout


def test_secret_key_prints_a_fresh_fernet_key() -> None:
    keys = [succeeded("secret-key", env=shell_env()).stdout for _ in range(2)]
    for key in keys:
        assert key.endswith("\n") and key.count("\n") == 1
        sealed = Fernet(key.strip().encode()).encrypt(b"salt")
        assert Fernet(key.strip().encode()).decrypt(sealed) == b"salt"
    assert keys[0] != keys[1]


def test_pixel_management_serves_what_the_cli_registered_and_stops_on_sigterm(
    tmp_path: Path, env: dict[str, str]
) -> None:
    succeeded("clients", "add", "acme", "--name", "Acme", "-d", "acme.example", env=env)
    port = free_port()
    log = tmp_path / "pixel-management.log"
    env["EVOTHESIS_ADMIN_TOKEN"] = ADMIN_TOKEN
    base = f"http://127.0.0.1:{port}"
    command = [PYTHON, "-m", "evothesis", "pixel-management", "--port", str(port)]
    process = start_process(command, env=env, log=log, health_url=f"{base}/health")
    with killed_on_exit(process):
        with httpx.Client(base_url=base, timeout=10) as api:
            config = api.get("/api/v1/config/domain/www.acme.example")
            exact = api.get("/api/v1/config/domain/acme.example")
            tracker = api.get("/pixel/acme/tracking.js")
            created = api.post(
                "/api/v1/clients",
                json={"client_id": "beta", "name": "Beta", "domains": ["beta.example"]},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
        assert stop_process(process) == 0

    assert config.status_code == 404  # exact domain only, no wildcard registered
    assert exact.json()["client_id"] == "acme"
    assert tracker.status_code == 200 and '"client_id":"acme"' in tracker.text
    assert created.status_code == 201
    assert "beta.example" in succeeded("clients", "list", env=env).stdout
    assert "pixel management on http://127.0.0.1:" in log.read_text()
