"""Site discoveries (billing) and the append-only audit log of data-subject requests.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The first event of each (client, site): written in the transaction that stores that
    # event, so a discovery exists exactly when its site has stored events, and only once.
    op.execute(
        """
        CREATE TABLE site_discoveries (
            client_id   text        NOT NULL,
            site_id     text        NOT NULL,
            first_seen  timestamptz NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (client_id, site_id)
        )
        """
    )
    op.execute("CREATE INDEX site_discoveries_first_seen_idx ON site_discoveries (first_seen)")
    # One row per step of a data-subject request (requested, completed, failed). The visitor
    # is kept only as a SHA-256 digest: the log proves a deletion without keeping the id it
    # deleted. Rows can be added, never changed or removed.
    op.execute(
        """
        CREATE TABLE gdpr_audit (
            id             bigserial   PRIMARY KEY,
            request_id     uuid        NOT NULL,
            kind           text        NOT NULL CHECK (kind IN ('export', 'delete')),
            step           text        NOT NULL
                           CHECK (step IN ('requested', 'completed', 'failed')),
            client_id      text        NOT NULL,
            visitor_sha256 text        NOT NULL,
            recorded_at    timestamptz NOT NULL DEFAULT now(),
            receipt        jsonb       NOT NULL DEFAULT '{}'::jsonb
        )
        """
    )
    op.execute("CREATE INDEX gdpr_audit_client_idx ON gdpr_audit (client_id, recorded_at)")
    # Like hipaa_audit_log (0002), but with a function that names whichever table it guards.
    op.execute(
        """
        CREATE FUNCTION refuse_change_to_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER gdpr_audit_no_change BEFORE UPDATE OR DELETE ON gdpr_audit"
        " FOR EACH ROW EXECUTE FUNCTION refuse_change_to_append_only()"
    )
    op.execute(
        "CREATE TRIGGER gdpr_audit_no_truncate BEFORE TRUNCATE ON gdpr_audit"
        " FOR EACH STATEMENT EXECUTE FUNCTION refuse_change_to_append_only()"
    )
    # An event as the JSON line of the raw export. One definition serves the raw export and
    # data-subject requests, so what a visitor receives is exactly what was exported. to_json
    # of a row costs PostgreSQL about two thirds of json_build_object over the same columns
    # (which looks up every argument's type on every call) and writes compact JSON. A view
    # is inlined by the planner: the export still reads the (xid, id) index. A migration that
    # adds a column to events_log must recreate it.
    op.execute(
        """
        CREATE VIEW export_event_lines AS
        SELECT e.id, e.xid, e.event_type, e.client_id, e.site_id, e.visitor_id, e.created_at,
               to_json(line)::text AS line
        FROM events_log e,
        LATERAL (
            SELECT e.id, e.event_id, e.event_type, e.session_id, e.visitor_id, e.site_id,
                   e.client_id, e."timestamp", e.url, e.path, e.referrer, e.ip_address,
                   e.user_agent, e.raw_event_data, e.created_at, e.browser, e.browser_version,
                   e.os, e.device_type, e.is_bot, e.country, e.region, e.city,
                   e.referrer_class, e.utm_source, e.utm_medium, e.utm_campaign, e.utm_term,
                   e.utm_content
        ) line
        """
    )
    # No visitor index on events_log: it would tax every insert for a rare request, and the
    # buffer holds only BUFFER_RETENTION's worth of events, so a scan stays short.


def downgrade() -> None:
    op.execute("DROP VIEW export_event_lines")
    op.execute("DROP TABLE gdpr_audit")
    op.execute("DROP FUNCTION refuse_change_to_append_only()")
    op.execute("DROP TABLE site_discoveries")
