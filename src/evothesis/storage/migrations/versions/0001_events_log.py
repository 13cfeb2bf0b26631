"""events_log: the short-term buffer every accepted event lands in.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Column names are the seed's, so operators' existing SQL keeps working.
    op.execute(
        """
        CREATE TABLE events_log (
            id             bigserial PRIMARY KEY,
            event_id       uuid        NOT NULL,
            event_type     text        NOT NULL,
            session_id     text,
            visitor_id     text,
            site_id        text        NOT NULL,
            client_id      text        NOT NULL,
            "timestamp"    timestamptz NOT NULL,
            url            text,
            path           text,
            referrer       text,
            ip_address     text,
            user_agent     text,
            raw_event_data jsonb       NOT NULL,
            created_at     timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # A retried event id is skipped by ON CONFLICT against this index.
    op.execute("CREATE UNIQUE INDEX events_log_event_id_key ON events_log (event_id)")
    # Time-ordered export scans and per-client queries.
    op.execute("CREATE INDEX events_log_created_at_idx ON events_log (created_at, id)")
    op.execute(
        'CREATE INDEX events_log_client_timestamp_idx ON events_log (client_id, "timestamp")'
    )


def downgrade() -> None:
    op.execute("DROP TABLE events_log")
