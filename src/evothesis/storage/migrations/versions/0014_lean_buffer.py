"""A leaner buffer: events_log keeps only the indexes a query needs.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02

Every index costs each stored row CPU and WAL (``python -m benchmarks.rows``: of 22.6 µs and
846 WAL bytes per row with all five, ``(created_at, id)`` took 4.0 µs and 74 bytes and
``(client_id, "timestamp")`` 5.8 µs and 113 bytes). No query of the collector, the export
or the operators reads either: retention and the export's claims go by ``(xid, id)``, the
newest events by ``id``, and a client's rows (data-subject requests, filters by client)
are found through ``(client_id, event_id)``, which deduplication needs anyway. What stays:

- ``events_log_pkey`` (``id``): the newest events, ``ORDER BY id DESC`` (``/events/recent``,
  the console's live events);
- ``events_log_client_event_id_key`` (``client_id, event_id``, unique): a retried event id is
  not stored again; a client's rows by ``client_id``;
- ``events_log_export_order_idx`` (``xid, id``): the export's claims, a batch's rows, the
  backlog, counts and retention's deletes.
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS events_log_created_at_idx")
    op.execute("DROP INDEX IF EXISTS events_log_client_timestamp_idx")


def downgrade() -> None:
    op.execute("CREATE INDEX events_log_created_at_idx ON events_log (created_at, id)")
    op.execute(
        'CREATE INDEX events_log_client_timestamp_idx ON events_log (client_id, "timestamp")'
    )
