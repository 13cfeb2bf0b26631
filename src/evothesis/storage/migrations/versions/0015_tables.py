"""Clients' tables: the delta and iceberg formats, the file layout a client chooses
(``dated`` or Hive-style ``hive``), the retention of a table's removed files, when each
table was last maintained, which tables hold which delivery, and the SQL catalog pyiceberg
keeps Iceberg tables in when the catalog is our own database.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02

A delivery keeps the layout it was cut with, as it keeps its format, so a client that
changes either moves no file already delivered. Deliveries' formats have no CHECK (0012:
``domain.ExportFormat`` is the closed set); clients' have one, widened here.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_FORMATS = "('json', 'jsonl', 'csv', 'parquet', 'delta', 'iceberg')"
_OLD_FORMATS = "('json', 'jsonl', 'csv', 'parquet')"


def upgrade() -> None:
    op.execute("ALTER TABLE clients DROP CONSTRAINT clients_export_format_check")
    op.execute(
        f"ALTER TABLE clients ADD CONSTRAINT clients_export_format_check"
        f" CHECK (export_format IN {_FORMATS})"
    )
    op.execute(
        "ALTER TABLE clients"
        " ADD COLUMN export_layout text NOT NULL DEFAULT 'dated'"
        "  CHECK (export_layout IN ('dated', 'hive')),"
        " ADD COLUMN table_retention_days integer"
        "  CHECK (table_retention_days BETWEEN 0 AND 3650)"
    )
    op.execute(
        "ALTER TABLE export_deliveries ADD COLUMN layout text NOT NULL DEFAULT 'dated'"
        " CHECK (layout IN ('dated', 'hive'))"
    )
    # When each table (by its location) was last checkpointed and vacuumed (once a day at
    # most).
    op.execute(
        """
        CREATE TABLE export_table_maintenance (
            location      text PRIMARY KEY,
            maintained_at timestamptz NOT NULL
        )
        """
    )
    # Which tables (by the id the table gives itself: a Delta table's metadata id, an
    # Iceberg table's uuid) hold a delivery's commit, recorded after it: the table's own
    # history says so too, but an Iceberg table forgets it when its snapshots expire, and a
    # replay of an old delivery must still be recognised. A table made anew (another id)
    # holds nothing yet, so a replay fills it.
    op.execute(
        """
        CREATE TABLE export_table_commits (
            identity     text NOT NULL,
            table_id     text NOT NULL,
            committed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (identity, table_id)
        )
        """
    )
    # pyiceberg's SQL catalog (its "v1" schema): the catalog's state is ours to migrate,
    # so it is created here rather than by the library at run time.
    op.execute(
        """
        CREATE TABLE iceberg_tables (
            catalog_name               varchar(255) NOT NULL,
            table_namespace            varchar(255) NOT NULL,
            table_name                 varchar(255) NOT NULL,
            metadata_location          varchar(1000),
            previous_metadata_location varchar(1000),
            iceberg_type               varchar(5),
            PRIMARY KEY (catalog_name, table_namespace, table_name)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE iceberg_namespace_properties (
            catalog_name   varchar(255) NOT NULL,
            namespace      varchar(255) NOT NULL,
            property_key   varchar(255) NOT NULL,
            property_value varchar(1000) NOT NULL,
            PRIMARY KEY (catalog_name, namespace, property_key)
        )
        """
    )


def downgrade() -> None:
    # The older version writes no tables: clients and deliveries in a table format go to
    # Parquet, the same rows as files (what a table already holds stays in it), and replays
    # to a table are finished.
    op.execute("DROP TABLE iceberg_namespace_properties")
    op.execute("DROP TABLE iceberg_tables")
    op.execute("DROP TABLE export_table_commits")
    op.execute("DROP TABLE export_table_maintenance")
    op.execute("ALTER TABLE export_deliveries DROP COLUMN layout")
    op.execute(
        "UPDATE export_deliveries SET format = 'parquet' WHERE format IN ('delta', 'iceberg')"
    )
    op.execute(
        "UPDATE export_replays SET state = 'finished', finished_at = now()"
        " WHERE format IN ('delta', 'iceberg') AND state = 'running'"
    )
    op.execute(
        "UPDATE clients SET export_format = 'parquet' WHERE export_format IN ('delta', 'iceberg')"
    )
    op.execute("ALTER TABLE clients DROP COLUMN table_retention_days, DROP COLUMN export_layout")
    op.execute("ALTER TABLE clients DROP CONSTRAINT clients_export_format_check")
    op.execute(
        f"ALTER TABLE clients ADD CONSTRAINT clients_export_format_check"
        f" CHECK (export_format IN {_OLD_FORMATS})"
    )
