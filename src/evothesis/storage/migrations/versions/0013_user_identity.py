"""User identity for the Segment tracking API (/v1/*): a user id on events and failed events,
the per-client choice of how a user id is stored, write keys that select their client, and
the alias links data-subject requests follow.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

* ``events_log.user_id`` and ``failed_events.user_id``: the message's ``userId`` as the
  client's ``user_id_storage`` stores it (as sent, a keyed hash, or nothing). Both export
  line views carry it. No index on ``events_log``, as for visitors: the buffer holds hours,
  and a data-subject request's scan of it stays short.
* ``clients.user_id_storage``: ``kept``, ``hashed`` or ``dropped``; NULL follows the
  privacy level (standard keeps, gdpr hashes, hipaa drops).
* A unique index on ``clients.write_key_sha256``: a /v1 request names no site, its write
  key alone selects the client. It replaces 0012's plain index on the same column (the
  on-demand delivery endpoint's lookup uses it just as well).
* ``identity_links``: every stored ``alias`` message (previous id → user id, and the
  anonymous visitor that sent it), filled by a trigger in the transaction that stores the
  alias event, so the disk spool's replay records links exactly as a flush does. Unlike the
  events it is not purged with the buffer: it is what lets a data-subject request, long
  after export, find every id a person was known by. A deletion removes the person's links.
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

#: The raw export line: every column of events_log a client receives, in this order.
LINE_COLUMNS = """
    e.id, e.event_id, e.event_type, e.session_id, e.visitor_id, e.site_id,
    e.client_id, e."timestamp", e.url, e.path, e.referrer, e.ip_address,
    e.user_agent, e.raw_event_data, e.created_at, e.browser, e.browser_version,
    e.os, e.device_type, e.is_bot, e.country, e.region, e.city,
    e.referrer_class, e.utm_source, e.utm_medium, e.utm_campaign, e.utm_term,
    e.utm_content, e.source{extra}
"""


def _export_view(extra: str) -> str:
    return f"""
        CREATE VIEW export_event_lines AS
        SELECT e.id, e.xid, e.event_type, e.client_id, e.site_id, e.visitor_id,
               e.created_at{extra},
               to_json(line)::text AS line
        FROM events_log e,
        LATERAL (SELECT {LINE_COLUMNS.format(extra=extra)}) line
        """


def _failed_view(extra: str) -> str:
    user = ", 'user_id', user_id" if extra else ""
    return f"""
        CREATE VIEW failed_event_lines AS
        SELECT id, xid, client_id, site_id, visitor_id{extra}, reason, received_at,
               json_build_object('id', id, 'request_id', request_id, 'position', position,
                                 'client_id', client_id, 'site_id', site_id,
                                 'visitor_id', visitor_id, 'session_id', session_id{user},
                                 'reason', reason, 'field', field, 'message', message,
                                 'payload', payload, 'received_at', received_at)::text AS line
        FROM failed_events
        """


def upgrade() -> None:
    op.execute("ALTER TABLE events_log ADD COLUMN user_id text")
    op.execute("ALTER TABLE failed_events ADD COLUMN user_id text")
    op.execute("DROP VIEW export_event_lines")
    op.execute(_export_view(", e.user_id"))
    op.execute("DROP VIEW failed_event_lines")
    op.execute(_failed_view(", user_id"))
    op.execute(
        "ALTER TABLE clients ADD COLUMN user_id_storage text "
        "CHECK (user_id_storage IN ('kept', 'hashed', 'dropped'))"
    )
    op.execute("DROP INDEX clients_write_key_idx")
    op.execute("CREATE UNIQUE INDEX clients_write_key_sha256_key ON clients (write_key_sha256)")
    op.execute(
        """
        CREATE TABLE identity_links (
            client_id    text        NOT NULL,
            event_id     uuid        NOT NULL,
            previous_id  text        NOT NULL,
            user_id      text        NOT NULL,
            anonymous_id text,
            linked_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (client_id, event_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX identity_links_previous_idx ON identity_links (client_id, previous_id)"
    )
    op.execute("CREATE INDEX identity_links_user_idx ON identity_links (client_id, user_id)")
    op.execute(
        "CREATE INDEX identity_links_anonymous_idx ON identity_links (client_id, anonymous_id)"
    )
    # Only rows the /v1 endpoints store carry a user id, so an /collect event that calls
    # itself "alias" links nothing; the WHEN clause keeps every other row off the trigger
    # queue, and COPY keeps its multi-row inserts (AFTER triggers allow them).
    op.execute(
        """
        CREATE FUNCTION record_identity_link() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.raw_event_data ->> 'type' = 'alias'
               AND jsonb_typeof(NEW.raw_event_data -> 'previousId') = 'string' THEN
                INSERT INTO identity_links (client_id, event_id, previous_id, user_id,
                                            anonymous_id)
                VALUES (NEW.client_id, NEW.event_id, NEW.raw_event_data ->> 'previousId',
                        NEW.user_id, NEW.visitor_id)
                ON CONFLICT DO NOTHING;
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER events_log_identity_links AFTER INSERT ON events_log FOR EACH ROW"
        " WHEN (NEW.event_type = 'alias' AND NEW.user_id IS NOT NULL)"
        " EXECUTE FUNCTION record_identity_link()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER events_log_identity_links ON events_log")
    op.execute("DROP FUNCTION record_identity_link()")
    op.execute("DROP TABLE identity_links")
    op.execute("DROP INDEX clients_write_key_sha256_key")
    op.execute("CREATE INDEX clients_write_key_idx ON clients (write_key_sha256)")
    op.execute("ALTER TABLE clients DROP COLUMN user_id_storage")
    op.execute("DROP VIEW failed_event_lines")
    op.execute(_failed_view(""))
    op.execute("DROP VIEW export_event_lines")
    op.execute(_export_view(""))
    op.execute("ALTER TABLE failed_events DROP COLUMN user_id")
    op.execute("ALTER TABLE events_log DROP COLUMN user_id")
