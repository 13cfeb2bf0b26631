"""The Alembic chain builds the schema operators' SQL and our named queries rely on."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from evothesis.domain import ENRICHED_COLUMNS
from evothesis.storage.migrate import head_revision, upgrade
from evothesis.storage.queries import queries
from tests.support.postgres import PostgresServer, fresh_database

EXPECTED_COLUMNS = {
    "id": ("bigint", "NO"),
    "event_id": ("uuid", "NO"),
    "event_type": ("text", "NO"),
    "session_id": ("text", "YES"),
    "visitor_id": ("text", "YES"),
    "site_id": ("text", "NO"),
    "client_id": ("text", "NO"),
    "timestamp": ("timestamp with time zone", "NO"),
    "url": ("text", "YES"),
    "path": ("text", "YES"),
    "referrer": ("text", "YES"),
    "ip_address": ("text", "YES"),
    "user_agent": ("text", "YES"),
    "raw_event_data": ("jsonb", "NO"),
    "created_at": ("timestamp with time zone", "NO"),
    "xid": ("xid8", "NO"),
    **{name: ("text", "YES") for name in ENRICHED_COLUMNS if name != "is_bot"},
    "is_bot": ("boolean", "NO"),
    "source": ("text", "YES"),
    "user_id": ("text", "YES"),
}


@pytest.fixture
def empty_database(postgres: PostgresServer) -> Iterator[str]:
    with fresh_database(postgres, template=None) as url:
        yield url


def test_upgrade_builds_events_log_with_seed_columns_and_indexes(empty_database: str) -> None:
    upgrade(empty_database)
    upgrade(empty_database)  # a second run finds nothing to do
    with psycopg.connect(empty_database) as conn:
        columns = {
            name: (kind, nullable)
            for name, kind, nullable in conn.execute(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_name = 'events_log'"
            )
        }
        indexes = {
            name: definition
            for name, definition in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events_log'"
            )
        }
        partitions = {
            table: {index[len(table) :]: definition for index, definition in found}
            for table, found in _partition_indexes(conn).items()
        }
    assert columns == EXPECTED_COLUMNS
    # The export's order is an index of the partitioned table, which each partition has.
    assert set(indexes) == {"events_log_export_order_idx"}
    assert "(xid, id)" in indexes["events_log_export_order_idx"]
    # The old table (0016), the days around the cut-over and the DEFAULT partition.
    assert {"events_log_p_legacy", "events_log_default"} < set(partitions)
    assert len(partitions) == 2 + 3
    for table, own in partitions.items():
        # Nothing else costs a stored row (0014; tests/migration/test_migrations.py names
        # the query each one serves). Event ids are unique per client, never across tenants.
        assert set(own) == {"_pkey", "_client_event_id_key", "_xid_id_idx"}, table
        assert "UNIQUE" in own["_client_event_id_key"]
        assert "(client_id, event_id)" in own["_client_event_id_key"]
        assert "(id)" in own["_pkey"]


def _partition_indexes(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[str, str]]]:
    """Each partition of events_log: its indexes' names and definitions."""
    found: dict[str, list[tuple[str, str]]] = {}
    for table, index, definition in conn.execute(
        "SELECT i.tablename, i.indexname, i.indexdef FROM pg_indexes i "
        "JOIN pg_class c ON c.relname = i.tablename AND c.relnamespace = 'public'::regnamespace "
        "JOIN pg_inherits h ON h.inhrelid = c.oid WHERE h.inhparent = 'events_log'::regclass"
    ):
        found.setdefault(table, []).append((index, definition))
    return found


def test_concurrent_upgrades_from_two_processes_both_succeed(empty_database: str) -> None:
    script = "import sys; from evothesis.storage.migrate import upgrade; upgrade(sys.argv[1])"
    runs = [
        subprocess.Popen([sys.executable, "-c", script, empty_database], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=120)
        assert run.returncode == 0, stderr.decode()
    with psycopg.connect(empty_database) as conn:
        [(version,)] = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert version == head_revision()


def test_every_named_query_is_valid_against_the_schema(database_url: str) -> None:
    statements = queries()
    with psycopg.connect(database_url) as conn:
        conn.execute(statements["create_staging"])
        for name, sql in statements.items():
            if name == "create_staging":
                continue
            if sql.startswith("LOCK "):  # not a statement PREPARE takes: run in the test's
                conn.execute(sql)  # transaction, which ends with the connection
                continue
            conn.execute(f"PREPARE check_{name} AS {sql}")


@pytest.mark.parametrize(
    ("table", "insert", "column"),
    [
        pytest.param(
            "hipaa_audit_log",
            "INSERT INTO hipaa_audit_log (recorded_at, client_id, site_id, events, collector, "
            "request_id) VALUES (now(), 'clinic', 'clinic.example', 3, 'test', gen_random_uuid())",
            "events",
            id="hipaa",
        ),
        pytest.param(
            "gdpr_audit",
            "INSERT INTO gdpr_audit (request_id, kind, step, client_id, visitor_sha256) "
            "VALUES (gen_random_uuid(), 'delete', 'requested', 'clinic', 'ab')",
            "step",
            id="gdpr",
        ),
    ],
)
def test_audit_logs_are_append_only(
    database_url: str, table: str, insert: str, column: str
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(insert)
        before = conn.execute(f"SELECT {column} FROM {table}").fetchall()
        for statement in (
            f"UPDATE {table} SET {column} = {column}",
            f"DELETE FROM {table}",
            f"TRUNCATE {table}",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
        assert conn.execute(f"SELECT {column} FROM {table}").fetchall() == before
        assert len(before) == 1


def test_a_domain_belongs_to_at_most_one_client(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for client in ("one", "two"):
            conn.execute(
                "INSERT INTO clients (client_id, name, ip_salt, write_key_sha256) "
                "VALUES (%s, %s, '\\x00', %s)",
                (client, client, f"digest-{client}"),
            )
        conn.execute("INSERT INTO client_domains (domain, client_id) VALUES ('a.example', 'one')")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO client_domains (domain, client_id) VALUES ('a.example', 'two')"
            )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE clients SET privacy_level = 'lax' WHERE client_id = 'one'")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE clients SET user_id_storage = 'raw' WHERE client_id = 'one'")
        # A write key selects its client (the Segment API names no site): never two.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "UPDATE clients SET write_key_sha256 = 'digest-one' WHERE client_id = 'two'"
            )
