"""Export ledger: numbered export batches over a commit-ordered cursor, per-client deliveries.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Ids come from a sequence and commit out of order, so "everything above the last exported
    # id" skips rows. The inserting transaction's id is the export order instead: once every
    # transaction older than a snapshot's xmin has ended, the rows with xid below it are final,
    # and a batch is the range of (xid, id) between two cursor positions. Claiming a batch
    # writes one ledger row, never the events themselves.
    op.execute("ALTER TABLE events_log ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id()")
    op.execute("CREATE INDEX events_log_export_order_idx ON events_log (xid, id)")
    op.execute(
        """
        CREATE TABLE export_batches (
            batch_id         bigint PRIMARY KEY,
            claimed_at       timestamptz NOT NULL DEFAULT now(),
            -- the batch is the events with (after_xid, after_id) < (xid, id) <= (upto_xid, upto_id)
            after_xid        xid8   NOT NULL,
            after_id         bigint NOT NULL,
            upto_xid         xid8   NOT NULL,
            upto_id          bigint NOT NULL,
            event_count      integer NOT NULL CHECK (event_count >= 0),
            first_created_at timestamptz NOT NULL,
            last_created_at  timestamptz NOT NULL,
            state            text NOT NULL DEFAULT 'pending'
                             CHECK (state IN ('pending', 'exported')),
            lease_owner      text,
            lease_until      timestamptz,
            attempts         integer NOT NULL DEFAULT 0,
            last_error       text,
            next_attempt_at  timestamptz NOT NULL DEFAULT now(),
            exported_at      timestamptz,
            raw_key          text,
            raw_bytes        bigint,
            purged_at        timestamptz
        )
        """
    )
    op.execute(
        "CREATE INDEX export_batches_pending_idx ON export_batches (next_attempt_at, batch_id)"
        " WHERE state = 'pending'"
    )
    op.execute(
        "CREATE INDEX export_batches_purge_idx ON export_batches (exported_at)"
        " WHERE state = 'exported' AND purged_at IS NULL"
    )
    # One row per (raw batch, client): the client's processed file for that batch.
    op.execute(
        """
        CREATE TABLE export_deliveries (
            batch_id        bigint NOT NULL REFERENCES export_batches (batch_id),
            client_id       text   NOT NULL,
            event_count     integer NOT NULL CHECK (event_count > 0),
            format          text NOT NULL CHECK (format IN ('json', 'csv', 'parquet')),
            state           text NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'delivered')),
            lease_owner     text,
            lease_until     timestamptz,
            attempts        integer NOT NULL DEFAULT 0,
            last_error      text,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            delivered_at    timestamptz,
            object_key      text,
            object_bytes    bigint,
            PRIMARY KEY (batch_id, client_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX export_deliveries_pending_idx"
        " ON export_deliveries (next_attempt_at, batch_id) WHERE state = 'pending'"
    )
    # A destination that keeps failing pauses only its own client.
    op.execute(
        """
        CREATE TABLE export_destination_state (
            client_id            text PRIMARY KEY,
            consecutive_failures integer NOT NULL DEFAULT 0,
            paused_until         timestamptz,
            last_error           text,
            last_failure_at      timestamptz,
            last_success_at      timestamptz
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE export_destination_state")
    op.execute("DROP TABLE export_deliveries")
    op.execute("DROP TABLE export_batches")
    op.execute("DROP INDEX events_log_export_order_idx")
    op.execute("ALTER TABLE events_log DROP COLUMN xid")
