"""The table layer on local folders: the declared schema and its rule for evolution, the
partition column, file layouts, and a Delta table's exactly-once appends, deletion and
compaction (Iceberg needs a catalog: tests/integration/test_export_tables.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from evothesis.domain import DeliveryTrigger
from evothesis.errors import SchemaChangeRefused
from evothesis.export.deliveries import Delivery, Share
from evothesis.export.formats import PARQUET_SCHEMA, event_columns, parse_raw_lines, typed_columns
from evothesis.export.keys import delivery_key, processed_key, table_key
from evothesis.export.tables.core import COMPACT_FILES, maintain
from evothesis.export.tables.delta import DeltaEventTable
from evothesis.export.tables.schema import TABLE_SCHEMA, added_columns, table_rows
from evothesis.objects.buckets import BucketSpec


def rows(ids: range, *, timestamp: str = "2026-12-01T23:30:00-02:00") -> pa.Table:
    lines = [
        orjson.dumps(
            {
                "id": i,
                "event_id": f"event-{i}",
                "event_type": "pageview",
                "session_id": "s",
                "visitor_id": f"visitor-{i % 3}",
                "site_id": "a.test",
                "client_id": "client-a",
                "timestamp": timestamp,
                "url": None,
                "path": None,
                "referrer": None,
                "ip_address": None,
                "user_agent": None,
                "created_at": "2026-12-02T01:30:01Z",
                "raw_event_data": {"n": i},
            }
        )
        for i in ids
    ]
    events = parse_raw_lines(b"\n".join(lines) + b"\n").events
    return table_rows(typed_columns(event_columns(events)))


def table(tmp_path: Path) -> DeltaEventTable:
    return DeltaEventTable(BucketSpec(tmp_path.as_uri()), table_key("client-a", "delta"))


def test_rows_are_the_parquet_columns_plus_the_utc_event_day() -> None:
    got = rows(range(2))
    assert got.schema == TABLE_SCHEMA
    assert TABLE_SCHEMA.names[: len(PARQUET_SCHEMA)] == PARQUET_SCHEMA.names
    # 23:30 at -02:00 is 01:30 UTC the next day.
    assert got.column("event_date").to_pylist() == [datetime(2026, 12, 2).date()] * 2


def test_file_layouts_are_a_pure_function_of_the_delivery() -> None:
    claimed = datetime(2026, 12, 2, 23, 59, tzinfo=UTC)
    assert (
        processed_key("acme", 7, claimed, "parquet")
        == "processed-events/acme/2026/12/02/batch-000000000007.parquet"
    )
    assert (
        processed_key("acme", 7, claimed, "csv", "hive")
        == "processed-events/acme/export_date=2026-12-02/batch-000000000007.csv"
    )
    assert (
        delivery_key("acme", 3, claimed.date(), "parquet", "hive")
        == "processed-events/acme/export_date=2026-12-02/delivery-000000000003.parquet"
    )
    assert table_key("acme", "delta") == "processed-events/acme/delta/events"


def test_a_delivery_keeps_its_layout_and_its_table_commit_is_named_as_its_files() -> None:
    """A delivery's id (what its table commit carries) follows its file names: by batch in
    real time, by number otherwise; its layout and format are its own, not the client's now."""
    claimed = datetime(2026, 12, 2, 23, 59, tzinfo=UTC)
    share = Share(7, claimed, "raw-events/2026/12/02/batch-000000000007.jsonl.gz", 5)
    later = Share(8, claimed + timedelta(minutes=2), "raw-events/2026/12/03/b8", 5)
    real_time = Delivery("acme", 4, DeliveryTrigger.REAL_TIME, "delta", claimed, (share,))
    daily = Delivery(
        "acme", 5, DeliveryTrigger.SCHEDULE, "csv", claimed, (share, later), layout="hive"
    )
    assert real_time.delivery_id == "exp_batch-000000000007_acme"
    assert real_time.export_id(share.day) == real_time.delivery_id
    assert daily.delivery_id == "exp_delivery-000000000005_acme"
    assert daily.export_id(later.day) == "exp_delivery-000000000005_acme_2026-12-03"
    assert [daily.file_key(day) for day in daily.days] == [
        "processed-events/acme/export_date=2026-12-02/delivery-000000000005.csv",
        "processed-events/acme/export_date=2026-12-03/delivery-000000000005.csv",
    ]


def test_schema_evolution_is_additive_only() -> None:
    base = TABLE_SCHEMA
    wider = base.append(pa.field("new_column", pa.string()))
    assert added_columns(base, base) == []
    assert [f.name for f in added_columns(base, wider)] == ["new_column"]
    with pytest.raises(SchemaChangeRefused, match="lack the table's column 'url'"):
        added_columns(base, base.remove(base.get_field_index("url")))
    retyped = base.set(base.get_field_index("id"), pa.field("id", pa.string()))
    with pytest.raises(SchemaChangeRefused, match="column 'id' is int64"):
        added_columns(base, retyped)
    with pytest.raises(SchemaChangeRefused, match="must be nullable"):
        added_columns(base, base.append(pa.field("strict", pa.int32(), nullable=False)))


def test_a_delta_append_happens_once_per_identity(tmp_path: Path) -> None:
    events = table(tmp_path)
    first = events.append(rows(range(10)), "exp_1", {})
    again = events.append(rows(range(10)), "exp_1", {})
    assert (first.appended, first.rows) == (True, 10)
    assert (again.appended, again.rows) == (False, 0)
    assert DeltaTable(events.location).to_pyarrow_table().num_rows == 10


def test_a_table_known_to_hold_a_delivery_is_not_appended_to_again(tmp_path: Path) -> None:
    """The ledger's record of the tables that hold a delivery counts as much as the table's
    history (which an Iceberg table forgets as its snapshots expire); a table made anew
    holds nothing the old one did."""
    events = table(tmp_path)
    first = events.append(rows(range(4)), "exp_1", {})
    skipped = events.append(rows(range(4, 8)), "exp_2", {}, held_by={first.table_id})
    assert not skipped.appended and skipped.table_id == first.table_id
    assert DeltaTable(events.location).to_pyarrow_table().num_rows == 4
    elsewhere = DeltaEventTable(
        BucketSpec((tmp_path / "other").as_uri()), table_key("client-a", "delta")
    )
    fresh = elsewhere.append(rows(range(4, 8)), "exp_2", {}, held_by={first.table_id})
    assert fresh.appended and fresh.table_id != first.table_id


def test_racing_delta_writers_of_one_delivery_append_it_once(tmp_path: Path) -> None:
    """Writers with their own view of the table (as exporters in different processes),
    including the race to create it."""
    outcomes: list[bool] = []

    def write() -> None:
        outcomes.append(table(tmp_path).append(rows(range(5)), "exp_race", {}).appended)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False, False, False, True]
    assert DeltaTable(table(tmp_path).location).to_pyarrow_table().num_rows == 5


def test_a_new_column_is_added_and_old_rows_read_it_as_null(tmp_path: Path) -> None:
    events = table(tmp_path)
    events.append(rows(range(3)), "exp_1", {})
    newer = rows(range(3, 6))
    newer = newer.append_column(pa.field("consent", pa.string()), pa.array(["yes"] * 3))
    assert events.append(newer, "exp_2", {}).appended
    read = DeltaTable(events.location).to_pyarrow_table().sort_by("id")
    assert read.column("consent").to_pylist() == [None, None, None, "yes", "yes", "yes"]
    with pytest.raises(SchemaChangeRefused):
        events.append(rows(range(6, 9)).drop_columns(["url"]), "exp_3", {})


def test_deleting_a_visitor_leaves_no_row_of_theirs_in_the_current_version(
    tmp_path: Path,
) -> None:
    events = table(tmp_path)
    events.append(rows(range(30)), "exp_1", {})
    assert events.delete_subject(["visitor-1"], [], {"evothesis.gdpr_request": "r"}) == 10
    assert events.delete_subject(["visitor-1"], [], {}) == 0
    assert events.delete_subject(["it's 'quoted'"], ["it's 'too'"], {}) == 0
    assert events.delete_subject([], [], {}) == 0
    current = DeltaTable(events.location).to_pyarrow_table()
    assert current.num_rows == 20
    assert "visitor-1" not in set(current.column("visitor_id").to_pylist())
    # History keeps them until a vacuum after the retention.
    old = DeltaTable(events.location, version=1).to_pyarrow_table()
    assert "visitor-1" in set(old.column("visitor_id").to_pylist())


def test_maintenance_compacts_a_crowded_day_and_keeps_every_identity(tmp_path: Path) -> None:
    events = table(tmp_path)
    for n in range(COMPACT_FILES):
        events.append(rows(range(n * 2, n * 2 + 2)), f"exp_{n}", {})
    done = maintain(events, timedelta(days=7), full=True)
    assert done.partitions_compacted == 1
    assert events.partition_files() == {"2026-12-02": 1}
    assert events.partition_files(["2026-12-02", "2026-12-03"]) == {"2026-12-02": 1}
    assert events.partition_files(["2026-12-03"]) == {}
    assert DeltaTable(events.location).to_pyarrow_table().num_rows == 2 * COMPACT_FILES
    assert all(events.contains(f"exp_{n}") for n in range(COMPACT_FILES))
    assert not events.append(rows(range(2)), "exp_0", {}).appended
