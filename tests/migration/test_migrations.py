"""Migration behaviour beyond the schema's shape (test_schema.py): re-runs, threads, and the
staging round trip the named queries perform on the migrated tables."""

from __future__ import annotations

import threading
import traceback
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from alembic import command

from evothesis.domain import ENRICHED_COLUMNS, EVENT_COLUMNS
from evothesis.storage.migrate import alembic_config, head_revision, upgrade
from evothesis.storage.partitions import BufferPartitions
from evothesis.storage.pool import create_pool
from evothesis.storage.queries import query
from tests.support.postgres import PostgresServer, fresh_database
from tests.support.rows import event_row, insert_rows
from tests.support.sync import run_coroutine

MOMENT = datetime(2025, 7, 11, 12, tzinfo=UTC)
#: The all-time totals of /events/count, per client.
TOTALS = "SELECT client_id, exported_events FROM client_event_totals ORDER BY 1"


@pytest.fixture
def empty_database(postgres: PostgresServer) -> Iterator[str]:
    with fresh_database(postgres, template=None) as url:
        yield url


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, object]:
    """Everything a repeated upgrade must leave alone."""

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return conn.execute(sql).fetchall()

    return {
        "version": rows("SELECT version_num FROM alembic_version"),
        "tables": rows(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' ORDER BY table_name"
        ),
        "indexes": rows(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' ORDER BY indexname"
        ),
        "events": rows("SELECT id, event_id, event_type FROM events_log ORDER BY id"),
        "table_oid": rows("SELECT 'events_log'::regclass::oid"),
    }


def insert_event(
    conn: psycopg.Connection[Any],
    event_id: str,
    *,
    table: str = "events_log",
    at: datetime = MOMENT,
) -> None:
    conn.execute(
        f"INSERT INTO {table} (event_id, event_type, site_id, client_id, timestamp, "
        "raw_event_data, created_at) VALUES (%s, 'click', 'localhost', 'client_test', %s, "
        "'{}', %s)",
        (event_id, at, at),
    )


def test_upgrading_an_up_to_date_database_changes_nothing(empty_database: str) -> None:
    upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        insert_event(conn, str(uuid.uuid4()))
        before = snapshot(conn)

    upgrade(empty_database)

    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert snapshot(conn) == before
    assert before["version"] == [(head_revision(),)]
    assert len(before["events"]) == 1  # type: ignore[arg-type]


def test_two_upgrades_in_parallel_threads_both_succeed(empty_database: str) -> None:
    errors: list[str] = []

    def migrate() -> None:
        try:
            upgrade(empty_database)
        except BaseException:
            errors.append(traceback.format_exc())

    threads = [threading.Thread(target=migrate, name=f"upgrade-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "an upgrade did not finish"
    assert not errors, "\n\n".join(errors)
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head_revision(),)
        ]
        assert conn.execute("SELECT count(*) FROM events_log").fetchone() == (0,)


def test_copy_columns_are_exactly_the_columns_ingestion_writes(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        columns = [
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'events_log' ORDER BY ordinal_position"
            )
        ]
    # xid is filled in by the database (the inserting transaction): the export order.
    # The enrichment columns came after it (0004), the sender's authentication (0006) and
    # the Segment API's user (0013).
    seed = EVENT_COLUMNS[: -len(ENRICHED_COLUMNS) - 2]
    assert EVENT_COLUMNS[len(seed) :] == (*ENRICHED_COLUMNS, "source", "user_id")
    assert columns == ["id", *seed, "xid", *ENRICHED_COLUMNS, "source", "user_id"]


def test_ids_and_created_at_are_filled_in_by_the_database(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events_log (event_id, event_type, site_id, client_id, timestamp, "
            "raw_event_data) VALUES (%s, 'click', 'localhost', 'client_test', %s, '{}'), "
            "(%s, 'click', 'localhost', 'client_test', %s, '{}')",
            (str(uuid.uuid4()), MOMENT, str(uuid.uuid4()), MOMENT),
        )
        rows = conn.execute("SELECT id, created_at FROM events_log ORDER BY id").fetchall()
    [(first, first_created), (second, second_created)] = rows
    assert second == first + 1
    assert first_created is not None and second_created is not None


def test_the_unique_index_refuses_a_second_row_with_the_same_event_id(database_url: str) -> None:
    event_id = str(uuid.uuid4())
    with psycopg.connect(database_url, autocommit=True) as conn:
        insert_event(conn, event_id)
        with pytest.raises(psycopg.errors.UniqueViolation):
            insert_event(conn, event_id.upper())


def test_staged_rows_move_once_per_event_id_and_are_counted_per_site(database_url: str) -> None:
    known = str(uuid.uuid4())
    fresh = [str(uuid.uuid4()) for _ in range(3)]
    with psycopg.connect(database_url) as conn:
        insert_event(conn, known)
        conn.commit()
        conn.execute(query("create_staging"))
        for event_id in [known, *fresh]:
            insert_event(conn, event_id, table="events_staging")
        conn.execute(
            "UPDATE events_staging SET site_id = 'shop.example' WHERE event_id = %s", (fresh[0],)
        )
        moved = sorted(conn.execute(query("move_staged_events")).fetchall())
        conn.commit()

        assert moved == [("client_test", "localhost", 2), ("client_test", "shop.example", 1)]
        assert conn.execute("SELECT count(*) FROM events_staging").fetchone() == (0,)
        stored = {str(r[0]) for r in conn.execute("SELECT event_id FROM events_log")}
        assert stored == {known, *fresh}


def test_the_staging_table_is_private_to_its_connection(database_url: str) -> None:
    with psycopg.connect(database_url) as first, psycopg.connect(database_url) as second:
        first.execute(query("create_staging"))
        first.execute(query("create_staging"))  # IF NOT EXISTS: safe on every flush
        insert_event(first, str(uuid.uuid4()), table="events_staging")
        with pytest.raises(psycopg.errors.UndefinedTable):
            second.execute("SELECT count(*) FROM events_staging")


def test_json_recorded_before_the_document_keeps_meaning_json_lines(empty_database: str) -> None:
    """0009: ``json`` was JSON Lines until the seed's document took the name. Deliveries and
    clients recorded before keep JSON Lines (``jsonl``): a retried delivery writes the same
    ``.jsonl`` key and bytes, a client's consumers get what they got."""
    upgrade(empty_database, "0008")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO clients (client_id, name, ip_salt, write_key_sha256, export_format)"
            " VALUES ('old_json', 'Old', '\\x00', 'key-json', 'json'),"
            " ('old_csv', 'Old', '\\x00', 'key-csv', 'csv')"
        )
        conn.execute(
            "INSERT INTO export_batches (batch_id, after_xid, after_id, upto_xid, upto_id,"
            " event_count, first_created_at, last_created_at)"
            " VALUES (1, '0', 0, '10', 5, 5, now(), now())"
        )
        conn.execute(
            "INSERT INTO export_deliveries (batch_id, client_id, event_count, format)"
            " VALUES (1, 'old_json', 3, 'json'), (1, 'old_csv', 2, 'csv')"
        )
    upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        clients = conn.execute("SELECT client_id, export_format FROM clients ORDER BY 1")
        assert clients.fetchall() == [("old_csv", "csv"), ("old_json", "jsonl")]
        deliveries = conn.execute("SELECT client_id, format FROM export_deliveries ORDER BY 1")
        assert deliveries.fetchall() == [("old_csv", "csv"), ("old_json", "jsonl")]
        # Both names are accepted from now on; a client created now gets the document.
        conn.execute(
            "INSERT INTO clients (client_id, name, ip_salt, write_key_sha256)"
            " VALUES ('new', 'N', '\\x00', 'key-new')"
        )
        assert conn.execute(
            "SELECT export_format FROM clients WHERE client_id = 'new'"
        ).fetchone() == ("json",)
        conn.execute("UPDATE clients SET export_format = 'jsonl' WHERE client_id = 'new'")
        conn.execute("UPDATE clients SET export_format = 'json' WHERE client_id = 'new'")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE clients SET export_format = 'xml' WHERE client_id = 'new'")


def test_event_totals_start_from_the_ledger_and_follow_every_new_delivery(
    empty_database: str,
) -> None:
    """0010: the all-time totals of /events/count survive retention: they are the deliveries
    of exported batches, summed per client when the table is created, then added to as each
    delivery is created (once: a repeated insert of one delivery adds nothing)."""
    upgrade(empty_database, "0009")
    batch = (
        "INSERT INTO export_batches (batch_id, after_xid, after_id, upto_xid, upto_id,"
        " event_count, first_created_at, last_created_at)"
        " VALUES (%s, '0', 0, '10', 5, 5, now(), now())"
    )
    delivery = (
        "INSERT INTO export_deliveries (batch_id, client_id, event_count, format)"
        " VALUES (%s, %s, %s, 'csv') ON CONFLICT (batch_id, client_id) DO NOTHING"
    )
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for batch_id in (1, 2):
            conn.execute(batch, (batch_id,))
        for row in ((1, "a", 3), (1, "b", 2), (2, "a", 4)):
            conn.execute(delivery, row)
    upgrade(empty_database, "0010")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert conn.execute(TOTALS).fetchall() == [("a", 7), ("b", 2)]
        conn.execute(batch, (3,))
        for row in ((3, "b", 5), (3, "c", 1), (3, "c", 1), (2, "a", 4)):
            conn.execute(delivery, row)
        assert conn.execute(TOTALS).fetchall() == [("a", 7), ("b", 7), ("c", 1)]


def test_deliveries_of_one_batch_become_real_time_deliveries_and_totals_follow_shares(
    empty_database: str,
) -> None:
    """0012: each (batch, client) delivery becomes that client's share of the batch and a
    real-time delivery of it, numbered per client, its file where it was; the all-time
    totals are carried over as they were (nothing counted twice) and follow the shares from
    then on (once: a repeated insert of one share adds nothing)."""
    upgrade(empty_database, "0011")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for batch_id in (1, 2):
            conn.execute(
                "INSERT INTO export_batches (batch_id, after_xid, after_id, upto_xid, upto_id,"
                " event_count, first_created_at, last_created_at, state, claimed_at)"
                " VALUES (%s, '0', 0, '10', 5, 5, now(), now(), 'exported',"
                " '2026-12-01T10:00:00Z')",
                (batch_id,),
            )
        conn.execute(
            "INSERT INTO export_deliveries (batch_id, client_id, event_count, format, state,"
            " delivered_at, object_key, object_bytes) VALUES"
            " (1, 'a', 3, 'jsonl', 'delivered', now(), 'processed-events/a/k1.jsonl', 30),"
            " (2, 'a', 4, 'csv', 'pending', NULL, NULL, NULL),"
            " (1, 'b', 2, 'json', 'pending', NULL, NULL, NULL)"
        )
    upgrade(empty_database, "0016")  # 0017 counts events another way
    with psycopg.connect(empty_database, autocommit=True) as conn:
        deliveries = conn.execute(
            "SELECT client_id, seq, trigger, format, first_batch, last_batch, event_count,"
            " state, files -> 0 ->> 'key', files -> 0 ->> 'day'"
            " FROM export_deliveries ORDER BY 1, 2"
        ).fetchall()
        assert deliveries == [
            ("a", 1, "real_time", "jsonl", 1, 1, 3, "delivered", "processed-events/a/k1.jsonl",
             "2026-12-01"),
            ("a", 2, "real_time", "csv", 2, 2, 4, "pending", None, None),
            ("b", 1, "real_time", "json", 1, 1, 2, "pending", None, None),
        ]  # fmt: skip
        shares = "SELECT batch_id, client_id, event_count, delivery_seq FROM export_shares"
        assert sorted(conn.execute(shares).fetchall()) == [
            (1, "a", 3, 1),
            (1, "b", 2, 1),
            (2, "a", 4, 2),
        ]
        assert conn.execute(TOTALS).fetchall() == [("a", 7), ("b", 2)]
        share = (
            "INSERT INTO export_shares (batch_id, client_id, event_count) VALUES (%s, %s, %s)"
            " ON CONFLICT (batch_id, client_id) DO NOTHING"
        )
        for row in ((2, "b", 5), (2, "c", 1), (2, "c", 1), (1, "a", 3)):
            conn.execute(share, row)
        assert conn.execute(TOTALS).fetchall() == [("a", 7), ("b", 7), ("c", 1)]


def test_event_counts_start_from_the_previous_count_and_follow_every_insert_and_delete(
    empty_database: str,
) -> None:
    """0017: /events/count's numbers start as the previous revision counted them (exported
    batches' totals plus what no exported batch holds; what the buffer holds), then follow
    each statement that stores or removes events, once committed (a retried event id, a
    rolled-back statement add nothing); folding the changes changes no count."""
    upgrade(empty_database, "0015")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for _ in range(5):
            insert_event(conn, str(uuid.uuid4()))
        conn.execute(
            "INSERT INTO export_batches (batch_id, after_xid, after_id, upto_xid, upto_id,"
            " event_count, first_created_at, last_created_at, state, claimed_at)"
            " SELECT 1, '0', 0, max(xid), 3, 3, now(), now(), 'exported', now()"
            " FROM events_log WHERE id <= 3"
        )
        conn.execute(
            "INSERT INTO export_shares (batch_id, client_id, event_count)"
            " VALUES (1, 'client_test', 3)"
        )
        conn.execute("DELETE FROM events_log WHERE id <= 3")  # retention
    upgrade(empty_database)
    counts = query("count_events")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert conn.execute(counts).fetchall() == [("client_test", 2, 5)]
        event_id = str(uuid.uuid4())
        insert_event(conn, event_id)
        conn.execute(query("create_staging"))
        with conn.transaction():
            for again in (event_id, str(uuid.uuid4())):
                insert_event(conn, again, table="events_staging")
            conn.execute(query("move_staged_events"))
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            insert_event(conn, str(uuid.uuid4()))
            insert_event(conn, event_id)
        assert conn.execute(counts).fetchall() == [("client_test", 4, 7)]
        conn.execute("DELETE FROM events_log WHERE id = (SELECT min(id) FROM events_log)")
        with conn.transaction():
            conn.execute(query("fold_event_counts"))
        assert conn.execute(counts).fetchall() == [("client_test", 3, 7)]
        assert conn.execute("SELECT count(*) FROM event_count_changes").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM events_log").fetchone() == (3,)


#: The query that needs each index every partition of events_log keeps (0014, 0016), by
#: the index's name after its partition's, by name in queries.sql, and the arguments that
#: make it plannable.
INDEX_USERS: dict[str, tuple[str, tuple[object, ...]]] = {
    "_pkey": ("recent_events", (10, None, None, None)),
    "_client_event_id_key": ("gdpr_delete_buffer", ("client_test", ["v"], ["u"])),
    "_xid_id_idx": ("export_backlog", ("0", 0, 1000)),
}


def test_the_buffer_keeps_only_the_indexes_a_query_uses_and_loses_none_of_its_rows(
    empty_database: str,
) -> None:
    """0014 drops (created_at, id) and (client_id, timestamp), and 0016 partitions the table,
    while events keep arriving: no row is lost or refused, and each index left is the one
    its query is planned with, in every partition."""
    upgrade(empty_database, "0013")
    stored: list[str] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def keep_inserting() -> None:
        with psycopg.connect(empty_database, autocommit=True) as conn:
            while not stop.is_set():
                event_id = str(uuid.uuid4())
                try:
                    insert_event(conn, event_id)
                except BaseException as exc:
                    failures.append(exc)
                    return
                stored.append(event_id)

    writer = threading.Thread(target=keep_inserting, name="writer")
    writer.start()
    try:
        upgrade(empty_database)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not failures and len(stored) > 0
    with psycopg.connect(empty_database, autocommit=True) as conn:
        indexes = {
            name for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes "
                "WHERE tablename = 'events_log_p_legacy'"
            )
        }  # fmt: skip
        assert indexes == {f"events_log_p_legacy{suffix}" for suffix in INDEX_USERS}
        rows = conn.execute("SELECT event_id::text FROM events_log").fetchall()
        assert sorted(r[0] for r in rows) == sorted(stored)
        # A planner that may not scan a table shows which index serves each query.
        conn.execute("SET enable_seqscan = off")
        for suffix, (name, args) in INDEX_USERS.items():
            text = "\n".join(line for (line,) in explain(conn, name, args))
            for partition in ("events_log_p_legacy", "events_log_default"):
                assert f"{partition}{suffix}" in text, (name, text)


def explain(conn: psycopg.Connection[Any], name: str, args: tuple[object, ...]) -> list[Any]:
    """The plan of a named query with these arguments."""
    return named(conn, name, args, prefix="EXPLAIN ")


def named(
    conn: psycopg.Connection[Any], name: str, args: tuple[object, ...], *, prefix: str = ""
) -> list[Any]:
    """The rows of a named query (its ``$n`` placeholders bound to ``args``)."""
    sql = query(name)
    for n in range(len(args), 0, -1):
        sql = sql.replace(f"${n}", f"%(p{n})s")
    return conn.execute(
        f"{prefix}{sql}", {f"p{n + 1}": value for n, value in enumerate(args)}
    ).fetchall()


def claim(conn: psycopg.Connection[Any], limit: int) -> tuple[str, int, str, int]:
    """The export's next batch of at most ``limit`` events, as ``ExportLedger.claim`` takes
    it: its (xid, id) range."""
    cursor = conn.execute(query("export_cursor")).fetchone()
    after = (cursor[1], cursor[2]) if cursor else ("0", 0)
    batch_id = cursor[0] + 1 if cursor else 1
    [row] = named(conn, "export_claim", (limit, *after, batch_id, "test", 60))
    return row[2], row[3], row[4], row[5]


def batch_events(conn: psycopg.Connection[Any], batch: tuple[str, int, str, int]) -> list[str]:
    """The event ids of a batch, as the export reads them."""
    lines = named(conn, "export_batch_rows", (*batch, 1_000_000))  # at most: every row
    return [orjson.loads(line)["event_id"] for *_, line in lines]


def test_partitioning_a_live_buffer_keeps_its_rows_exports_and_deduplication(
    empty_database: str,
) -> None:
    """0016 on a buffer holding rows, one batch of them claimed: the rows stay (in the old
    table, now the partition of everything before the cut-over), the next claim takes exactly
    the rest with the new rows, a retry of an old event is recognised on either side of the
    cut-over, and the old table is dropped whole once its rows are exported."""
    upgrade(empty_database, "0015")
    old = [str(uuid.uuid4()) for _ in range(10)]
    with psycopg.connect(empty_database, autocommit=True) as conn:
        for event_id in old:
            insert_event(conn, event_id, at=datetime.now(UTC))
        first = claim(conn, 6)
    upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        where: dict[str, str] = dict(
            conn.execute("SELECT event_id::text, tableoid::regclass::text FROM events_log")
        )
        assert where == dict.fromkeys(old, "events_log_p_legacy")
        [(cut_over,)] = conn.execute(
            "SELECT substring(pg_get_expr(relpartbound, oid) FROM 'TO \\(''([^'']+)''\\)')"
            "::timestamptz FROM pg_class WHERE relname = 'events_log_p_legacy'"
        ).fetchall()
    # Retries of old events: today (the old table's own index), and just after the
    # cut-over (the day before it is checked); and new events.
    retries = [
        event_row("client_test", "localhost", datetime.now(UTC))._replace(event_id=old[0]),
        event_row("client_test", "localhost", cut_over)._replace(event_id=old[1]),
    ]
    new = [event_row("client_test", "localhost", cut_over) for _ in range(3)]
    insert_rows(empty_database, retries[:1], [retries[1], *new])
    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM events_log").fetchone() == (13,)
        # Ids go on from the old table's sequence.
        [(lowest_new, highest_old)] = conn.execute(
            "SELECT min(id) FILTER (WHERE tableoid <> 'events_log_p_legacy'::regclass),"
            " max(id) FILTER (WHERE tableoid = 'events_log_p_legacy'::regclass) FROM events_log"
        ).fetchall()
        assert lowest_new > highest_old
        second = claim(conn, 100)
        exported = batch_events(conn, first) + batch_events(conn, second)
        assert sorted(exported) == sorted(old + [row.event_id for row in new])
        conn.execute(
            "UPDATE export_batches SET state = 'exported', exported_at = now() - interval '1 day'"
        )

    def upkeep(days: int) -> list[str]:
        async def run() -> list[str]:
            pool = await create_pool(empty_database, min_size=1, max_size=1)
            try:
                now = datetime.now(UTC) + timedelta(days=days)
                return (await BufferPartitions(pool).maintain(3600, now)).dropped
            finally:
                await pool.close()

        return run_coroutine(run)

    assert "events_log_p_legacy" not in upkeep(0)  # its day, and the next, have not ended
    assert "events_log_p_legacy" in upkeep(4)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM events_log").fetchone() == (0,)
        insert_event(conn, str(uuid.uuid4()))  # the sequence outlived the old table


def test_downgrading_gathers_every_partition_into_one_table(empty_database: str) -> None:
    upgrade(empty_database)
    kept, later_copy, far = (str(uuid.uuid4()) for _ in range(3))
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("SELECT events_log_add_partition('2030-01-01'), "
                     "events_log_add_partition('2030-01-05')")  # fmt: skip
        insert_event(conn, kept)
        insert_event(conn, later_copy, at=datetime(2030, 1, 1, 12, tzinfo=UTC))
        # Four days later: outside the deduplication window, so a second row (0016).
        insert_event(conn, later_copy, at=datetime(2030, 1, 5, 12, tzinfo=UTC))
        insert_event(conn, far, at=datetime(2031, 1, 1, tzinfo=UTC))  # DEFAULT partition
    command.downgrade(alembic_config(empty_database), "0015")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        [(kind,)] = conn.execute(
            "SELECT relkind::text FROM pg_class WHERE relname = 'events_log'"
        ).fetchall()
        assert kind == "r"
        rows = conn.execute("SELECT event_id::text, created_at FROM events_log ORDER BY id")
        # The first copy of an id wins.
        assert [(e, t.year) for e, t in rows] == [(kept, 2025), (later_copy, 2030), (far, 2031)]
        indexes = {
            name for (name,) in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'events_log'"
            )
        }  # fmt: skip
        assert indexes == {
            "events_log_pkey", "events_log_client_event_id_key", "events_log_export_order_idx"
        }  # fmt: skip
        assert conn.execute("SELECT count(*) FROM export_event_lines").fetchone() == (3,)
    upgrade(empty_database)


#: The export's reads of the buffer and the newest events, with arguments that plan them
#: as they run: a batch of 1,000 after the start, and the recent events of the console.
PARTITION_READERS: dict[str, tuple[object, ...]] = {
    "export_claim": (1000, "0", 0, 1, "test", 60),
    "export_batch_rows": ("0", 0, "100000", 1000, 1000),
    "export_backlog": ("0", 0, 1000),
    "recent_events": (50, None, None, None),
}


@pytest.mark.parametrize("name", PARTITION_READERS)
def test_reads_in_commit_or_id_order_merge_the_partitions_indexes(
    database_url: str, name: str
) -> None:
    """Across days of rows, the export's (xid, id) ranges and the newest events by id read
    each partition's index in order (a Merge Append), never a whole partition."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for day in range(1, 4):
            conn.execute("SELECT events_log_add_partition(%s::date)", (f"2030-01-0{day}",))
            conn.execute(
                "INSERT INTO events_log (event_id, event_type, site_id, client_id, timestamp,"
                " raw_event_data, created_at) SELECT gen_random_uuid(), 'click', 'localhost',"
                " 'client_test', t, '{}', t FROM (SELECT %s::timestamptz"
                " + make_interval(secs => g) AS t FROM generate_series(1, 20000) g) s",
                (f"2030-01-0{day}",),
            )
        conn.execute("ANALYZE events_log")
        plan = "\n".join(line for (line,) in explain(conn, name, PARTITION_READERS[name]))
    assert "Merge Append" in plan, plan
    assert "Seq Scan on events_log_p2030" not in plan, plan
    for day in range(1, 4):
        assert f"on events_log_p2030010{day}" in plan, plan
