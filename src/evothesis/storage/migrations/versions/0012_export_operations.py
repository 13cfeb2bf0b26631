"""Export operations: per-client delivery schedules, triggers, replays and notices.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04

Until now a delivery was one client's share of one raw batch. A delivery is now the unit a
client's schedule decides: one client's shares of one or more raw batches, numbered per
client (``seq``), cut once and never changed, so its files' keys and bytes are a pure
function of it (``export.deliveries``). The old rows become real-time deliveries of one
batch each, their files where they were (``batch-<n>`` keys).

The all-time event totals (``client_event_totals``, 0010) followed the old deliveries, one
row per (batch, client) created with the batch's export; that row is now the share, so
the totals follow the shares (created in the same transaction as before). The old
deliveries' events are already counted: the trigger moves to the shares after they are
filled from them, so nothing is counted twice.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Client settings: schedule (NULL: EXPORT_SCHEDULE), threshold, notification webhook.
    op.execute(
        """
        ALTER TABLE clients
            ADD COLUMN export_schedule text,
            ADD COLUMN export_threshold integer CHECK (export_threshold > 0),
            ADD COLUMN notify_url text,
            ADD COLUMN notify_secret bytea
        """
    )
    # The on-demand endpoint finds a client by its write key's digest.
    op.execute("CREATE INDEX clients_write_key_idx ON clients (write_key_sha256)")

    op.execute("ALTER TABLE export_deliveries RENAME TO export_deliveries_0003")
    # A delivery: what one client is sent at once. Immutable once cut except for its state.
    # No CHECK on format: formats are a closed set in Python (domain.ExportFormat), which
    # grows without a migration.
    op.execute(
        """
        CREATE TABLE export_deliveries (
            client_id        text    NOT NULL,
            seq              bigint  NOT NULL CHECK (seq > 0),
            trigger          text    NOT NULL CHECK (trigger IN
                             ('real_time', 'schedule', 'manual', 'threshold', 'on_demand')),
            format           text    NOT NULL,
            cut_at           timestamptz NOT NULL DEFAULT now(),
            first_batch      bigint  NOT NULL,
            last_batch       bigint  NOT NULL,
            event_count      integer NOT NULL CHECK (event_count > 0),
            state            text    NOT NULL DEFAULT 'pending'
                             CHECK (state IN ('pending', 'delivered', 'dead')),
            lease_owner      text,
            lease_until      timestamptz,
            attempts         integer NOT NULL DEFAULT 0,
            last_error       text,
            next_attempt_at  timestamptz NOT NULL DEFAULT now(),
            first_failed_at  timestamptz,
            failure_noticed  boolean NOT NULL DEFAULT false,
            delivered_at     timestamptz,
            files            jsonb,
            PRIMARY KEY (client_id, seq)
        )
        """
    )
    op.execute(
        "CREATE INDEX export_deliveries_due_idx ON export_deliveries (first_batch, client_id)"
        " WHERE state = 'pending'"
    )
    # A share: one client's events in one raw batch, and the delivery that carries them
    # (NULL until one is cut). Each share is in at most one delivery: exactly once.
    op.execute(
        """
        CREATE TABLE export_shares (
            batch_id     bigint  NOT NULL REFERENCES export_batches (batch_id),
            client_id    text    NOT NULL,
            event_count  integer NOT NULL CHECK (event_count > 0),
            delivery_seq bigint,
            PRIMARY KEY (batch_id, client_id),
            FOREIGN KEY (client_id, delivery_seq) REFERENCES export_deliveries (client_id, seq)
        )
        """
    )
    op.execute(
        "CREATE INDEX export_shares_pending_idx ON export_shares (client_id, batch_id)"
        " WHERE delivery_seq IS NULL"
    )
    op.execute("CREATE INDEX export_shares_delivery_idx ON export_shares (client_id, delivery_seq)")
    op.execute(
        """
        INSERT INTO export_deliveries (client_id, seq, trigger, format, cut_at, first_batch,
                                       last_batch, event_count, state, attempts, last_error,
                                       next_attempt_at, first_failed_at, delivered_at, files)
        SELECT d.client_id, row_number() OVER (PARTITION BY d.client_id ORDER BY d.batch_id),
               'real_time', d.format, b.claimed_at, d.batch_id, d.batch_id, d.event_count,
               d.state, d.attempts, d.last_error, d.next_attempt_at,
               CASE WHEN d.last_error IS NOT NULL THEN d.next_attempt_at END, d.delivered_at,
               CASE WHEN d.object_key IS NOT NULL THEN jsonb_build_array(jsonb_build_object(
                   'key', d.object_key, 'bytes', d.object_bytes, 'events', d.event_count,
                   'day', to_char(b.claimed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'))) END
        FROM export_deliveries_0003 d JOIN export_batches b USING (batch_id)
        """
    )
    op.execute(
        """
        INSERT INTO export_shares (batch_id, client_id, event_count, delivery_seq)
        SELECT d.batch_id, d.client_id, d.event_count,
               row_number() OVER (PARTITION BY d.client_id ORDER BY d.batch_id)
        FROM export_deliveries_0003 d
        """
    )
    op.execute("DROP TABLE export_deliveries_0003")  # its totals trigger goes with it
    op.execute(
        "CREATE TRIGGER export_shares_totals AFTER INSERT ON export_shares"
        " FOR EACH ROW EXECUTE FUNCTION add_to_client_event_totals()"
    )

    # Per client: the schedule tick its last scheduled delivery was cut for, an on-demand
    # request waiting, and when the last one was accepted (the endpoint's rate limit).
    op.execute(
        """
        CREATE TABLE export_client_state (
            client_id             text PRIMARY KEY,
            last_tick             timestamptz,
            delivery_requested_at timestamptz,
            last_request_at       timestamptz
        )
        """
    )
    # A replay: the client's delivered deliveries it selected when it was made (``seqs``),
    # rendered again in ``format`` to ``destination`` (NULL: the client's own); ``done``
    # counts those written, in order, so a replay cut short goes on where it stopped.
    op.execute(
        """
        CREATE TABLE export_replays (
            replay_id       bigserial PRIMARY KEY,
            client_id       text   NOT NULL,
            format          text   NOT NULL,
            destination     text,
            since           timestamptz,
            until           timestamptz,
            from_batch      bigint,
            to_batch        bigint,
            seqs            bigint[] NOT NULL,
            done            integer NOT NULL DEFAULT 0,
            state           text   NOT NULL DEFAULT 'running'
                            CHECK (state IN ('running', 'finished')),
            created_at      timestamptz NOT NULL DEFAULT now(),
            finished_at     timestamptz,
            lease_owner     text,
            lease_until     timestamptz,
            attempts        integer NOT NULL DEFAULT 0,
            last_error      text,
            next_attempt_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX export_replays_running_idx ON export_replays (next_attempt_at)"
        " WHERE state = 'running'"
    )
    # Notices for clients' webhooks, made in the transaction of what they report, and each
    # attempt to send one.
    op.execute(
        """
        CREATE TABLE export_notices (
            notice_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            client_id       text NOT NULL,
            kind            text NOT NULL,
            payload         jsonb NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            state           text NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'sent', 'failed')),
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            lease_until     timestamptz,
            sent_at         timestamptz,
            last_status     integer,
            last_error      text
        )
        """
    )
    op.execute(
        "CREATE INDEX export_notices_due_idx ON export_notices (next_attempt_at)"
        " WHERE state = 'pending'"
    )
    op.execute("CREATE INDEX export_notices_client_idx ON export_notices (client_id, created_at)")
    op.execute(
        """
        CREATE TABLE export_notice_attempts (
            notice_id    uuid NOT NULL REFERENCES export_notices (notice_id),
            attempt      integer NOT NULL,
            attempted_at timestamptz NOT NULL DEFAULT now(),
            status       integer,
            error        text,
            seconds      double precision NOT NULL,
            PRIMARY KEY (notice_id, attempt)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE export_notice_attempts")
    op.execute("DROP TABLE export_notices")
    op.execute("DROP TABLE export_replays")
    op.execute("DROP TABLE export_client_state")
    op.execute(
        """
        CREATE TABLE export_deliveries_0003 (
            batch_id        bigint NOT NULL REFERENCES export_batches (batch_id),
            client_id       text   NOT NULL,
            event_count     integer NOT NULL CHECK (event_count > 0),
            format          text NOT NULL CONSTRAINT export_deliveries_format_check
                            CHECK (format IN ('json', 'jsonl', 'csv', 'parquet')),
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
    # Back to one row per share; a multi-batch delivery's files cannot be expressed, so a
    # share's row is delivered when its delivery was, without a key of its own. A share in
    # no delivery yet takes its client's format (``EXPORT_FORMAT``'s default for a client
    # not registered). The totals already count every share, so the trigger comes back only
    # once the rows are in.
    op.execute("DROP TRIGGER export_shares_totals ON export_shares")
    op.execute(
        """
        INSERT INTO export_deliveries_0003 (batch_id, client_id, event_count, format, state,
                                            attempts, last_error, next_attempt_at,
                                            delivered_at, object_key, object_bytes)
        SELECT s.batch_id, s.client_id, s.event_count,
               COALESCE(d.format, c.export_format, 'json'),
               CASE WHEN d.state = 'delivered' THEN 'delivered' ELSE 'pending' END,
               COALESCE(d.attempts, 0), d.last_error, COALESCE(d.next_attempt_at, now()),
               d.delivered_at,
               CASE WHEN d.first_batch = d.last_batch THEN d.files -> 0 ->> 'key' END,
               CASE WHEN d.first_batch = d.last_batch THEN (d.files -> 0 ->> 'bytes')::bigint END
        FROM export_shares s
        LEFT JOIN export_deliveries d ON d.client_id = s.client_id AND d.seq = s.delivery_seq
        LEFT JOIN clients c ON c.client_id = s.client_id
        """
    )
    op.execute("DROP TABLE export_shares")
    op.execute("DROP TABLE export_deliveries")
    op.execute("ALTER TABLE export_deliveries_0003 RENAME TO export_deliveries")
    op.execute(
        "CREATE INDEX export_deliveries_pending_idx"
        " ON export_deliveries (next_attempt_at, batch_id) WHERE state = 'pending'"
    )
    op.execute(
        "CREATE TRIGGER export_deliveries_totals AFTER INSERT ON export_deliveries"
        " FOR EACH ROW EXECUTE FUNCTION add_to_client_event_totals()"
    )
    op.execute("DROP INDEX clients_write_key_idx")
    op.execute(
        """
        ALTER TABLE clients
            DROP COLUMN export_schedule,
            DROP COLUMN export_threshold,
            DROP COLUMN notify_url,
            DROP COLUMN notify_secret
        """
    )
