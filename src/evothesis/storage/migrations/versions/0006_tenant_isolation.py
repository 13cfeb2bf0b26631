"""Tenant isolation: event ids unique per client, how each event was authenticated, and the
per-client choice to require the write key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

``events_log`` is a buffer of hours, so building the new unique index takes the table's
write lock for as long as that buffer takes to index; collectors answer 202 (spooled) or
wait meanwhile, and nothing is lost.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: The raw export line: every column of events_log a client receives, in this order.
LINE_COLUMNS = """
    e.id, e.event_id, e.event_type, e.session_id, e.visitor_id, e.site_id,
    e.client_id, e."timestamp", e.url, e.path, e.referrer, e.ip_address,
    e.user_agent, e.raw_event_data, e.created_at, e.browser, e.browser_version,
    e.os, e.device_type, e.is_bot, e.country, e.region, e.city,
    e.referrer_class, e.utm_source, e.utm_medium, e.utm_campaign, e.utm_term,
    e.utm_content{extra}
"""


def _export_view(extra: str) -> str:
    return f"""
        CREATE VIEW export_event_lines AS
        SELECT e.id, e.xid, e.event_type, e.client_id, e.site_id, e.visitor_id, e.created_at,
               to_json(line)::text AS line
        FROM events_log e,
        LATERAL (SELECT {LINE_COLUMNS.format(extra=extra)}) line
        """


def upgrade() -> None:
    # Two clients may pick the same id: a retry is recognised within its client only, so
    # one tenant's ids can never make another's events disappear.
    op.execute(
        "CREATE UNIQUE INDEX events_log_client_event_id_key ON events_log (client_id, event_id)"
    )
    op.execute("DROP INDEX events_log_event_id_key")
    # browser: a page of the client (Origin/Referer); server_key: the client's write key;
    # unverified: neither. Rows stored before this column existed have none.
    op.execute(
        "ALTER TABLE events_log ADD COLUMN source text "
        "CHECK (source IN ('browser', 'server_key', 'unverified'))"
    )
    op.execute("DROP VIEW export_event_lines")
    op.execute(_export_view(", e.source"))
    op.execute("ALTER TABLE clients ADD COLUMN require_write_key boolean NOT NULL DEFAULT false")


def downgrade() -> None:
    op.execute("ALTER TABLE clients DROP COLUMN require_write_key")
    op.execute("DROP VIEW export_event_lines")
    op.execute(_export_view(""))
    op.execute("ALTER TABLE events_log DROP COLUMN source")
    op.execute("CREATE UNIQUE INDEX events_log_event_id_key ON events_log (event_id)")
    op.execute("DROP INDEX events_log_client_event_id_key")
