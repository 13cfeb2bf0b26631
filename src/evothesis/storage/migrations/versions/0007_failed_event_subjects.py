"""Failed events keep whose they are: the visitor and session of the request, so that a
data-subject request finds, exports and deletes them like the visitor's events; and each
exported batch records whose failed events its backup file holds, so that a request reads
only those files.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

Failed events written before this revision have neither; they are purged with their batch
after BUFFER_RETENTION, and their backup files hold no visitor to find.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE failed_events ADD COLUMN visitor_id text, ADD COLUMN session_id text")
    op.execute(
        "CREATE INDEX failed_events_client_visitor_idx ON failed_events (client_id, visitor_id)"
    )
    op.execute("ALTER TABLE export_batches ADD COLUMN failed_clients text[] NOT NULL DEFAULT '{}'")
    op.execute(
        "CREATE INDEX export_batches_failed_clients_idx"
        " ON export_batches USING gin (failed_clients)"
    )
    # One rendering of a failed event as a line, for the backup bucket's failed-events files
    # and for a visitor's data-subject export alike.
    op.execute(
        """
        CREATE VIEW failed_event_lines AS
        SELECT id, xid, client_id, site_id, visitor_id, reason, received_at,
               json_build_object('id', id, 'request_id', request_id, 'position', position,
                                 'client_id', client_id, 'site_id', site_id,
                                 'visitor_id', visitor_id, 'session_id', session_id,
                                 'reason', reason, 'field', field, 'message', message,
                                 'payload', payload, 'received_at', received_at)::text AS line
        FROM failed_events
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW failed_event_lines")
    op.execute("DROP INDEX export_batches_failed_clients_idx")
    op.execute("ALTER TABLE export_batches DROP COLUMN failed_clients")
    op.execute("DROP INDEX failed_events_client_visitor_idx")
    op.execute("ALTER TABLE failed_events DROP COLUMN session_id, DROP COLUMN visitor_id")
