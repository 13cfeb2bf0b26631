"""The seed documents' operator queries, as written: a view for the one that names a column
PostgreSQL does not have.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Seed 003 checks insert activity with ``SELECT schemaname, tablename, n_tup_ins, … FROM
pg_stat_user_tables WHERE tablename = 'events_log'``; the catalog view calls that column
``relname``. ``seed_compat.pg_stat_user_tables`` is the catalog view plus ``tablename``.
Only sessions that search ``seed_compat`` before ``pg_catalog`` see it: psql inside the
compose stack's postgres container does (``deploy/postgres/psqlrc``), the collector never
does. The seed's other queries (``events_log`` by ``client_id`` and ``created_at``) need
nothing: those are the table's own column names.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA seed_compat")
    op.execute(
        "CREATE VIEW seed_compat.pg_stat_user_tables AS"
        " SELECT s.*, s.relname AS tablename FROM pg_catalog.pg_stat_user_tables s"
    )


def downgrade() -> None:
    op.execute("DROP VIEW seed_compat.pg_stat_user_tables")
    op.execute("DROP SCHEMA seed_compat")
