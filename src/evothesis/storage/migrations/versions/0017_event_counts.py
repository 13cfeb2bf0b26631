"""Event counts per client kept as events come and go, so that ``/events/count`` reads a
few rows instead of counting the buffer.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02

Counting what the buffer holds, and what no exported batch holds yet, scanned every event
of the buffer: with millions of events waiting (an export that lags), the count took longer
than the statement timeout. Now two statement-level triggers on ``events_log`` record what
each INSERT (or COPY) and each DELETE changed, per client, as rows appended to
``event_count_changes``: nothing is locked that another flush waits for, and a statement
adds one row per client it touched, in its own transaction (exact whatever commits or rolls
back). ``client_event_counts`` holds the changes folded so far (``fold_event_counts``); the
count is its rows plus the changes not folded yet. Retention's drop of a day's partition
fires no trigger: it records what the day held itself (``events_log_drop_partition``).

``stored`` is every event ever stored (retention and erasure do not lower it), ``buffered``
what ``events_log`` holds now. They start from what the previous revision counted, with
``events_log`` locked against writes meanwhile. The per-client totals of exported batches
(``client_event_totals``, 0010) are no longer needed and go.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


#: Retention's drop of a day's partition (0016), now telling the counts what the day held: a
#: dropped table fires no DELETE trigger. The day has ended and every row of it is exported,
#: so nothing but a data-subject deletion (whose own trigger counts it) changes it meanwhile,
#: and the drop's lock keeps even that out while the day is counted.
DROP_PARTITION = r"""
CREATE OR REPLACE FUNCTION events_log_drop_partition(name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = 'events_log'::regclass AND c.relname = name
                     AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT') THEN
        RETURN false;
    END IF;
    EXECUTE format('INSERT INTO event_count_changes (client_id, stored, buffered)'
                   ' SELECT client_id, 0, -count(*) FROM %I GROUP BY client_id', name);
    EXECUTE format('DROP TABLE %I', name);
    RETURN true;
END
$$
"""


def _previous_drop_partition() -> str:
    """0016's drop, for the downgrade (revision files are not importable by name)."""
    path = Path(__file__).with_name("0016_partitioned_buffer.py")
    spec = importlib.util.spec_from_file_location("revision_0016", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.DROP_PARTITION).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE client_event_counts (
            client_id text PRIMARY KEY,
            stored    bigint NOT NULL,
            buffered  bigint NOT NULL
        )
        """
    )
    op.execute(
        """
        CREATE TABLE event_count_changes (
            client_id text NOT NULL,
            stored    bigint NOT NULL,
            buffered  bigint NOT NULL
        )
        """
    )
    op.execute(
        """
        CREATE FUNCTION count_stored_events() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO event_count_changes (client_id, stored, buffered)
            SELECT client_id, count(*), count(*) FROM stored_events GROUP BY client_id;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION count_removed_events() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO event_count_changes (client_id, stored, buffered)
            SELECT client_id, 0, -count(*) FROM removed_events GROUP BY client_id;
            RETURN NULL;
        END
        $$
        """
    )
    # No event may come or go between the counts below and the triggers taking over.
    op.execute("LOCK TABLE events_log IN SHARE MODE")
    op.execute(
        "CREATE TRIGGER events_log_stored AFTER INSERT ON events_log"
        " REFERENCING NEW TABLE AS stored_events"
        " FOR EACH STATEMENT EXECUTE FUNCTION count_stored_events()"
    )
    op.execute(
        "CREATE TRIGGER events_log_removed AFTER DELETE ON events_log"
        " REFERENCING OLD TABLE AS removed_events"
        " FOR EACH STATEMENT EXECUTE FUNCTION count_removed_events()"
    )
    # 0010's count: exported batches' totals, plus the events no exported batch holds.
    op.execute(
        """
        WITH newest AS (
            SELECT upto_xid, upto_id FROM export_batches ORDER BY batch_id DESC LIMIT 1
        ), buffered AS (
            SELECT client_id, count(*) AS events FROM events_log GROUP BY client_id
        ), unclaimed AS (
            SELECT client_id, count(*) AS events FROM events_log
            WHERE (xid, id) > (COALESCE((SELECT upto_xid FROM newest), '0'::xid8),
                               COALESCE((SELECT upto_id FROM newest), 0))
            GROUP BY client_id
        ), claimed_pending AS (
            SELECT e.client_id, count(*) AS events
            FROM export_batches b
            JOIN events_log e ON (e.xid, e.id) > (b.after_xid, b.after_id)
                             AND (e.xid, e.id) <= (b.upto_xid, b.upto_id)
            WHERE b.state = 'pending'
            GROUP BY e.client_id
        ), clients AS (
            SELECT client_id FROM buffered UNION SELECT client_id FROM client_event_totals
        )
        INSERT INTO client_event_counts (client_id, stored, buffered)
        SELECT c.client_id,
               COALESCE(t.exported_events, 0) + COALESCE(u.events, 0) + COALESCE(p.events, 0),
               COALESCE(b.events, 0)
        FROM clients c
        LEFT JOIN buffered b USING (client_id)
        LEFT JOIN client_event_totals t USING (client_id)
        LEFT JOIN unclaimed u USING (client_id)
        LEFT JOIN claimed_pending p USING (client_id)
        """
    )
    op.execute(DROP_PARTITION)
    op.execute("DROP TRIGGER export_shares_totals ON export_shares")
    op.execute("DROP FUNCTION add_to_client_event_totals()")
    op.execute("DROP TABLE client_event_totals")


def downgrade() -> None:
    op.execute(_previous_drop_partition())
    op.execute("DROP TRIGGER events_log_stored ON events_log")
    op.execute("DROP TRIGGER events_log_removed ON events_log")
    op.execute("DROP FUNCTION count_stored_events()")
    op.execute("DROP FUNCTION count_removed_events()")
    op.execute("DROP TABLE event_count_changes")
    op.execute("DROP TABLE client_event_counts")
    # 0010's totals again, as 0012 left them: the shares of exported batches.
    op.execute(
        """
        CREATE TABLE client_event_totals (
            client_id       text PRIMARY KEY,
            exported_events bigint NOT NULL CHECK (exported_events >= 0)
        )
        """
    )
    op.execute(
        """
        CREATE FUNCTION add_to_client_event_totals() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO client_event_totals (client_id, exported_events)
            VALUES (NEW.client_id, NEW.event_count)
            ON CONFLICT (client_id) DO UPDATE
            SET exported_events = client_event_totals.exported_events
                                  + EXCLUDED.exported_events;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute("LOCK TABLE export_shares IN SHARE MODE")
    op.execute(
        "CREATE TRIGGER export_shares_totals AFTER INSERT ON export_shares"
        " FOR EACH ROW EXECUTE FUNCTION add_to_client_event_totals()"
    )
    op.execute(
        "INSERT INTO client_event_totals (client_id, exported_events)"
        " SELECT client_id, sum(event_count) FROM export_shares GROUP BY client_id"
    )
