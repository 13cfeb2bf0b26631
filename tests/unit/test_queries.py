"""queries.sql: named statements split from one file operators can read."""

from __future__ import annotations

from importlib import resources

import pytest

from evothesis.storage.queries import parse_queries, queries, query

PACKAGED_NAMES = [
    "create_staging",
    "move_staged_events",
    "window_retries",
    "insert_audit",
    "insert_failed_event",
    "count_events",
    "fold_event_counts",
    "event_counts_try_lock",
    "recent_events",
    "recent_failed_events",
    "ping",
    "registry_lookup",
    "registry_write_key_lookup",
    "client_insert",
    "client_update",
    "client_set_write_key",
    "client_by_write_key",
    "client_get",
    "client_lock",
    "client_list",
    "domain_insert",
    "domain_delete",
    "export_claim_lock",
    "export_cursor",
    "export_claim",
    "export_lease_batch",
    "export_batch_rows",
    "export_batch_failed_lines",
    "export_mark_exported",
    "export_add_shares",
    "export_pending_clients",
    "export_client_state_ensure",
    "export_client_state_lock",
    "export_cut_shares",
    "export_next_seq",
    "export_insert_deliveries",
    "export_assign_shares",
    "export_client_cut",
    "export_request_delivery",
    "export_batch_failed",
    "export_lease_deliveries",
    "export_renew_deliveries",
    "export_mark_delivered",
    "export_table_state",
    "export_table_try_lock",
    "export_table_unlock",
    "export_table_maintained",
    "export_table_commits",
    "export_table_committed",
    "export_delivery_failed",
    "export_destination_failed",
    "export_delivery_shares",
    "export_deliveries_by_seq",
    "export_failing_deliveries",
    "export_dead_letter",
    "export_retry_now",
    "export_dead_letters",
    "export_delivered_clients",
    "export_purge",
    "buffer_partitions_expired",
    "buffer_lock",
    "buffer_partition_drop",
    "buffer_partition_add",
    "export_backlog",
    "export_batch_summary",
    "export_failed_batches",
    "export_last_batch",
    "export_delivery_summary",
    "export_client_schedules",
    "export_unprocessed_objects",
    "export_destination_states",
    "scheduler_started",
    "scheduler_heartbeat",
    "scheduler_round_started",
    "scheduler_round_ended",
    "scheduler_stopped",
    "scheduler_states",
    "export_shared_lock",
    "export_shared_unlock",
    "gdpr_exclusive_lock",
    "gdpr_exclusive_unlock",
    "set_local_lock_timeout",
    "gdpr_client_exists",
    "gdpr_client_batches",
    "gdpr_failed_batches",
    "gdpr_identity_links",
    "gdpr_client_replays",
    "gdpr_buffer_lines",
    "gdpr_buffer_failed_lines",
    "gdpr_delete_buffer",
    "gdpr_audit_insert",
    "gdpr_audit_list",
    "record_site_discoveries",
    "billing_discoveries",
    "billing_ledger_batches",
    "replay_select",
    "replay_insert",
    "replay_lease",
    "replay_progress",
    "replay_finished",
    "replay_failed",
    "replay_list",
    "replay_retry_now",
    "notice_lease",
    "notice_attempted",
    "notice_list",
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("-- ping --\nSELECT 1\n", {"ping": "SELECT 1"}, id="one-query"),
        pytest.param(
            "-- a --\nSELECT 1\n\n-- b_two --\nSELECT 2\nFROM t\n",
            {"a": "SELECT 1", "b_two": "SELECT 2\nFROM t"},
            id="two-queries-multiline",
        ),
        pytest.param(
            "-- a --\n-- what a does\n-- and why\nSELECT 1\n",
            {"a": "SELECT 1"},
            id="comment-lines-under-header-dropped",
        ),
        pytest.param(
            "-- a --\n\n\n   SELECT 1   \n\n\n-- b --\nSELECT 2",
            {"a": "SELECT 1", "b": "SELECT 2"},
            id="surrounding-blank-lines-stripped",
        ),
        pytest.param(
            "-- a --\nSELECT 1 -- trailing comment stays\n",
            {"a": "SELECT 1 -- trailing comment stays"},
            id="inline-comment-kept",
        ),
        pytest.param(
            "-- a --\nSELECT '--'\n", {"a": "SELECT '--'"}, id="dashes-inside-a-line-kept"
        ),
        pytest.param(
            "a preamble that is not a query\n-- a --\nSELECT 1",
            {"a": "SELECT 1"},
            id="text-before-first-header-ignored",
        ),
        pytest.param("-- a --\n", {"a": ""}, id="empty-body"),
        pytest.param("", {}, id="empty-file"),
        pytest.param("SELECT 1\n", {}, id="no-headers"),
    ],
)
def test_sections_are_split_by_name_headers(text: str, expected: dict[str, str]) -> None:
    assert parse_queries(text) == expected


def test_names_keep_the_order_of_the_file() -> None:
    text = "-- zeta --\nSELECT 1\n-- alpha --\nSELECT 2\n-- mid --\nSELECT 3\n"
    assert list(parse_queries(text)) == ["zeta", "alpha", "mid"]


@pytest.mark.parametrize(
    "header",
    ["--ping--", "-- ping --  ", " -- ping --", "-- Ping --", "-- ping"],
)
def test_lines_that_only_resemble_a_header_are_not_headers(header: str) -> None:
    assert parse_queries(f"{header}\nSELECT 1\n") == {}


def test_a_name_defined_twice_is_an_error_naming_it() -> None:
    text = "-- ping --\nSELECT 1\n-- other --\nSELECT 2\n-- ping --\nSELECT 3\n"
    with pytest.raises(ValueError, match="'ping'"):
        parse_queries(text)


def test_the_packaged_file_holds_exactly_the_queries_the_collector_uses() -> None:
    assert list(queries()) == PACKAGED_NAMES


@pytest.mark.parametrize("name", PACKAGED_NAMES)
def test_every_packaged_query_is_a_bare_statement(name: str) -> None:
    sql = query(name)
    assert sql
    assert sql == sql.strip()
    assert not sql.endswith(";")
    assert not any(line.startswith("--") for line in sql.splitlines())


def test_the_packaged_file_parses_the_same_as_its_text() -> None:
    text = resources.files("evothesis.storage").joinpath("queries.sql").read_text()
    assert parse_queries(text) == queries()


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("create_staging", "CREATE TEMP TABLE IF NOT EXISTS events_staging"),
        ("create_staging", "ON COMMIT DELETE ROWS"),
        ("move_staged_events", "ON CONFLICT DO NOTHING"),
        ("recent_events", "LIMIT $1"),
        ("ping", "SELECT 1"),
    ],
)
def test_packaged_queries_keep_their_essential_clauses(name: str, fragment: str) -> None:
    assert fragment in query(name)


def test_an_unknown_query_name_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        query("drop_everything")
