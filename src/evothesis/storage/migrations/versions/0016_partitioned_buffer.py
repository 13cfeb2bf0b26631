"""events_log partitioned by arrival day: retention drops whole days instead of deleting rows.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

Deleting exported rows one batch at a time cost WAL for every row and left dead tuples for
VACUUM to write again (``python -m benchmarks.rows`` measures both); dropping a partition
costs neither. ``events_log`` becomes a table partitioned by ``created_at`` (the collector's
arrival time, UTC): one partition per UTC day (``events_log_pYYYYMMDD``, added ahead of time
by ``events_log_add_partition``), a DEFAULT partition for rows of days that have no
partition (``events_log_default``: spool replays of days already dropped, a clock far
ahead), and the table as it was, renamed ``events_log_p_legacy``, as the partition of
everything before the cut-over day.

Indexes, as 0014 left them, per partition: the primary key on ``id`` (the sequence keeps
ids unique across partitions; a primary key of the parent would have to include
``created_at``), the unique ``(client_id, event_id)`` that deduplicates within a partition,
and ``(xid, id)``, a partitioned index of the parent (the export reads it through a Merge
Append of the partitions' index scans). The first two are each partition's own: a unique
index of the parent would have to include ``created_at``, which a retry does not share.
Retries that straddle two days are recognised by ``EventStore.insert`` (``window_retries``).

The cut-over runs in the migration's one transaction, holding ``events_log`` exclusively,
and builds no index (the old table's are reused). It reads the buffer twice: once for its
newest arrival, and once as ATTACH checks that every row lies before the cut-over (a CHECK
constraint added first would cost that same scan in the same transaction, so there is
none). The cut-over is the first UTC midnight at least an hour away, so that no row a
collector writes while the migration waits for its lock falls after it, and after the
newest row; the old table keeps taking the rows of today until then.

Downgrading copies every buffered row back into one table (the first copy of an event id
wins if two days hold it).
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

#: How many days ahead of the cut-over day get a partition now (the export's maintenance
#: keeps adding them: ``storage.partitions``).
DAYS_AHEAD = 2

#: A day's partition with the indexes every partition has; ``NULL`` when it exists already.
ADD_PARTITION = r"""
CREATE FUNCTION events_log_add_partition(day date) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    name text := 'events_log_p' || to_char(day, 'YYYYMMDD');
    lower_bound timestamptz := day::timestamp AT TIME ZONE 'UTC';
    upper_bound timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    -- Built apart and attached: ATTACH takes a lighter lock on events_log than CREATE TABLE
    -- ... PARTITION OF, so ingestion goes on; the CHECK spares ATTACH its scan.
    EXECUTE format('CREATE TABLE %I (LIKE events_log INCLUDING ALL)', name);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (created_at >= %L AND created_at < %L)',
                   name, name || '_day', lower_bound, upper_bound);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (id)', name, name || '_pkey');
    EXECUTE format('CREATE UNIQUE INDEX %I ON %I (client_id, event_id)',
                   name || '_client_event_id_key', name);
    EXECUTE format('ALTER TABLE events_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   name, lower_bound, upper_bound);
    RETURN name;
END
$$
"""

#: Retention's drop of one partition of events_log (never the DEFAULT one, nor any other
#: table); whether it was one.
DROP_PARTITION = r"""
CREATE FUNCTION events_log_drop_partition(name text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = 'events_log'::regclass AND c.relname = name
                     AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT') THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %I', name);
    RETURN true;
END
$$
"""

LEGACY = "events_log_p_legacy"


def _definitions() -> tuple[str, str]:
    """The export view's and the identity trigger's definitions, which name ``events_log``:
    recreated on the new table as they are (no copy of them to drift from 0013's)."""
    bind = op.get_bind()
    view = bind.execute(text("SELECT pg_get_viewdef('export_event_lines'::regclass)")).scalar()
    trigger = bind.execute(
        text(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE tgname = 'events_log_identity_links' AND tgrelid = 'events_log'::regclass"
        )
    ).scalar()
    assert isinstance(view, str) and isinstance(trigger, str)
    return f"CREATE VIEW export_event_lines AS {view}", trigger


def _seed_statistics_view(partitioned: bool) -> str:
    """Seed 003's ``pg_stat_user_tables … WHERE tablename = 'events_log'`` (0008): with
    ``events_log`` partitioned, its one row sums the partitions' counters (the parent has
    none of its own)."""
    if not partitioned:
        return (
            "CREATE VIEW seed_compat.pg_stat_user_tables AS"
            " SELECT s.*, s.relname AS tablename FROM pg_catalog.pg_stat_user_tables s"
        )
    columns = op.get_bind().execute(
        text(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'pg_catalog' AND table_name = 'pg_stat_user_tables' "
            "ORDER BY ordinal_position"
        )
    )
    rolled = []
    for name, kind in columns:
        if name == "relid":
            rolled.append("'public.events_log'::regclass::oid")
        elif name == "schemaname":
            rolled.append("'public'::name")
        elif name == "relname":
            rolled.append("'events_log'::name")
        elif kind.startswith("timestamp"):
            rolled.append(f"max(s.{name})")
        else:
            rolled.append(f"sum(s.{name})::{kind}")
    buffer = (
        "s.relid IN (SELECT inhrelid FROM pg_inherits "
        "WHERE inhparent = 'public.events_log'::regclass)"
    )
    return (
        "CREATE VIEW seed_compat.pg_stat_user_tables AS"
        " SELECT s.*, s.relname AS tablename FROM pg_catalog.pg_stat_user_tables s"
        f" WHERE NOT ({buffer}) AND s.relid <> 'public.events_log'::regclass"
        f" UNION ALL SELECT {', '.join(rolled)}, 'events_log'::name"
        f" FROM pg_catalog.pg_stat_user_tables s WHERE {buffer}"
    )


def upgrade() -> None:
    op.execute("LOCK TABLE events_log IN ACCESS EXCLUSIVE MODE")
    view, trigger = _definitions()
    op.execute("DROP VIEW export_event_lines")
    op.execute("DROP VIEW seed_compat.pg_stat_user_tables")
    op.execute("DROP TRIGGER events_log_identity_links ON events_log")
    op.execute(f"ALTER TABLE events_log RENAME TO {LEGACY}")
    op.execute(f"ALTER TABLE {LEGACY} RENAME CONSTRAINT events_log_pkey TO {LEGACY}_pkey")
    op.execute(f"ALTER INDEX events_log_client_event_id_key RENAME TO {LEGACY}_client_event_id_key")
    op.execute(f"ALTER INDEX events_log_export_order_idx RENAME TO {LEGACY}_xid_id_idx")
    op.execute(
        f"CREATE TABLE events_log (LIKE {LEGACY} INCLUDING ALL EXCLUDING INDEXES)"
        " PARTITION BY RANGE (created_at)"
    )
    # The ids' sequence outlives the old table: it numbers every partition's rows.
    op.execute("ALTER SEQUENCE events_log_id_seq OWNED BY events_log.id")
    op.execute("CREATE INDEX events_log_export_order_idx ON events_log (xid, id)")
    # The first UTC midnight at least an hour away and after every stored row (a clock
    # ahead, or a database downgraded and upgraded again).
    cut_over = (
        "(greatest(date_trunc('day', now() AT TIME ZONE 'UTC' + interval '1 hour'),"
        f" (SELECT date_trunc('day', max(created_at) AT TIME ZONE 'UTC') FROM {LEGACY}))"
        " + interval '1 day') AT TIME ZONE 'UTC'"
    )
    bound = op.get_bind().execute(text(f"SELECT ({cut_over})::text")).scalar()
    op.execute(
        f"ALTER TABLE events_log ATTACH PARTITION {LEGACY} "
        f"FOR VALUES FROM (MINVALUE) TO ('{bound}')"
    )
    op.execute("CREATE TABLE events_log_default PARTITION OF events_log DEFAULT")
    op.execute(
        "ALTER TABLE events_log_default ADD CONSTRAINT events_log_default_pkey PRIMARY KEY (id)"
    )
    op.execute(
        "CREATE UNIQUE INDEX events_log_default_client_event_id_key "
        "ON events_log_default (client_id, event_id)"
    )
    op.execute(ADD_PARTITION)
    op.execute(DROP_PARTITION)
    op.execute(
        "SELECT events_log_add_partition(("
        f"'{bound}'::timestamptz AT TIME ZONE 'UTC')::date + ahead)"
        f" FROM generate_series(0, {DAYS_AHEAD}) ahead"
    )
    op.execute(view)
    op.execute(trigger)
    op.execute(_seed_statistics_view(partitioned=True))


def downgrade() -> None:
    op.execute("LOCK TABLE events_log IN ACCESS EXCLUSIVE MODE")
    view, trigger = _definitions()
    op.execute("DROP VIEW export_event_lines")
    op.execute("DROP VIEW seed_compat.pg_stat_user_tables")
    op.execute("DROP TRIGGER events_log_identity_links ON events_log")
    op.execute("CREATE TABLE events_log_flat (LIKE events_log INCLUDING ALL EXCLUDING INDEXES)")
    op.execute("ALTER TABLE events_log_flat ADD CONSTRAINT events_log_flat_pkey PRIMARY KEY (id)")
    op.execute(
        "CREATE UNIQUE INDEX events_log_flat_client_event_id_key "
        "ON events_log_flat (client_id, event_id)"
    )
    op.execute(
        "INSERT INTO events_log_flat SELECT * FROM events_log ORDER BY id ON CONFLICT DO NOTHING"
    )
    op.execute("CREATE INDEX events_log_flat_xid_id_idx ON events_log_flat (xid, id)")
    op.execute("ALTER SEQUENCE events_log_id_seq OWNED BY events_log_flat.id")
    op.execute("DROP TABLE events_log")
    op.execute("DROP FUNCTION events_log_add_partition(date)")
    op.execute("DROP FUNCTION events_log_drop_partition(text)")
    op.execute("ALTER TABLE events_log_flat RENAME TO events_log")
    op.execute("ALTER TABLE events_log RENAME CONSTRAINT events_log_flat_pkey TO events_log_pkey")
    op.execute(
        "ALTER INDEX events_log_flat_client_event_id_key RENAME TO events_log_client_event_id_key"
    )
    op.execute("ALTER INDEX events_log_flat_xid_id_idx RENAME TO events_log_export_order_idx")
    op.execute(view)
    op.execute(trigger)
    op.execute(_seed_statistics_view(partitioned=False))
