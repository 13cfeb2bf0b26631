"""Pixel-management registry (clients, their domains) and the append-only HIPAA audit log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Secrets (the IP salt, export credentials) are stored encrypted by the application
    # (Fernet, key from EVOTHESIS_SECRET_KEY); the write key only as a SHA-256 digest.
    op.execute(
        r"""
        CREATE TABLE clients (
            client_id          text PRIMARY KEY
                               CHECK (client_id ~ '^[a-z0-9][a-z0-9_-]{1,62}$'),
            name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
            privacy_level      text NOT NULL DEFAULT 'standard'
                               CHECK (privacy_level IN ('standard', 'gdpr', 'hipaa')),
            ip_collection      text NOT NULL DEFAULT 'full'
                               CHECK (ip_collection IN ('full', 'anonymized', 'none')),
            honour_dnt         boolean NOT NULL DEFAULT true,
            consent_mode       text NOT NULL DEFAULT 'none'
                               CHECK (consent_mode IN ('none', 'required',
                                                       'anonymous_without_consent')),
            ip_salt            bytea NOT NULL,
            write_key_sha256   text NOT NULL,
            export_destination text,
            export_format      text NOT NULL DEFAULT 'json'
                               CHECK (export_format IN ('json', 'csv', 'parquet')),
            export_credentials bytea,
            active             boolean NOT NULL DEFAULT true,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # The primary key makes "a domain belongs to at most one client" a database fact.
    op.execute(
        """
        CREATE TABLE client_domains (
            domain     text PRIMARY KEY,
            client_id  text NOT NULL REFERENCES clients (client_id),
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX client_domains_client_id_idx ON client_domains (client_id)")
    op.execute(
        """
        CREATE TABLE hipaa_audit_log (
            id          bigserial PRIMARY KEY,
            recorded_at timestamptz NOT NULL,
            client_id   text NOT NULL,
            site_id     text NOT NULL,
            visitor_id  text,
            events      integer NOT NULL CHECK (events > 0),
            ip_hash     text,
            origin      text,
            collector   text NOT NULL,
            -- the request's first event id: retries and spool replays are audited once
            request_id  uuid NOT NULL UNIQUE
        )
        """
    )
    op.execute(
        "CREATE INDEX hipaa_audit_log_client_idx ON hipaa_audit_log (client_id, recorded_at)"
    )
    # Append-only: the audit trail must survive a compromised or careless operator session.
    op.execute(
        """
        CREATE FUNCTION hipaa_audit_log_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'hipaa_audit_log is append-only (% refused)', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER hipaa_audit_log_no_change
            BEFORE UPDATE OR DELETE ON hipaa_audit_log
            FOR EACH ROW EXECUTE FUNCTION hipaa_audit_log_append_only()
        """
    )
    op.execute(
        """
        CREATE TRIGGER hipaa_audit_log_no_truncate
            BEFORE TRUNCATE ON hipaa_audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION hipaa_audit_log_append_only()
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE hipaa_audit_log")
    op.execute("DROP FUNCTION hipaa_audit_log_append_only()")
    op.execute("DROP TABLE client_domains")
    op.execute("DROP TABLE clients")
