"""Enrichment columns on events_log, the per-client bot policy, failed events.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: Columns the collector fills from the user agent, the IP and the page, in COPY order.
ENRICHED = (
    "browser",
    "browser_version",
    "os",
    "device_type",
    "is_bot",
    "country",
    "region",
    "city",
    "referrer_class",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
)


def upgrade() -> None:
    # Nullable without defaults (is_bot's constant default is metadata only): adding them is
    # instant however large the buffer is, and rows written before stay as they were.
    op.execute(
        "ALTER TABLE events_log "
        + ", ".join(
            f"ADD COLUMN {name} boolean NOT NULL DEFAULT false"
            if name == "is_bot"
            else f"ADD COLUMN {name} text"
            for name in ENRICHED
        )
    )
    op.execute(
        "ALTER TABLE clients ADD COLUMN bot_policy text NOT NULL DEFAULT 'keep'"
        " CHECK (bot_policy IN ('keep', 'drop'))"
    )
    # Inner events of a batch that failed validation: kept with their reason and their
    # (redacted) payload instead of being lost. ``xid`` ties each row to the export batch
    # whose xid range holds it, exactly like events_log rows; (request_id, position) makes
    # a retried or replayed request record its failures once.
    op.execute(
        """
        CREATE TABLE failed_events (
            id          bigserial PRIMARY KEY,
            request_id  uuid        NOT NULL,
            position    integer     NOT NULL,
            client_id   text        NOT NULL,
            site_id     text        NOT NULL,
            reason      text        NOT NULL,
            field       text,
            message     text        NOT NULL,
            payload     jsonb       NOT NULL,
            received_at timestamptz NOT NULL,
            xid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
            UNIQUE (request_id, position)
        )
        """
    )
    op.execute("CREATE INDEX failed_events_xid_idx ON failed_events (xid)")


def downgrade() -> None:
    op.execute("DROP TABLE failed_events")
    op.execute("ALTER TABLE clients DROP COLUMN bot_policy")
    op.execute("ALTER TABLE events_log " + ", ".join(f"DROP COLUMN {name}" for name in ENRICHED))
