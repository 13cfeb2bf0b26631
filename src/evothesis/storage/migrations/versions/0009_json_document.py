"""The ``json`` export format becomes seed 004's document; JSON Lines is ``jsonl``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

Until now ``json`` meant JSON Lines (``.jsonl`` files). Everything recorded under the old
meaning is renamed to ``jsonl`` so that it keeps meaning what it did:

* deliveries: a delivery's key and bytes are a pure function of the delivery and its
  format. A pending one (perhaps written half before a crash) is retried as JSON Lines at
  the same ``.jsonl`` key, overwriting what was written; a delivered one is re-rendered as
  JSON Lines when a data-subject deletion rewrites it. Exactly once holds across the
  upgrade.
* clients: a client registered with ``json`` has been receiving JSON Lines, and whatever
  reads its bucket expects them; it keeps them. Switching to the document is the client's
  choice (``PATCH /api/v1/clients/{id}`` ``{"export_format": "json"}``).

``EXPORT_FORMAT`` (for events of clients not in the registry) is a setting, not data: its
``json`` is the document from now on.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_FORMATS = "('json', 'jsonl', 'csv', 'parquet')"
_OLD_FORMATS = "('json', 'csv', 'parquet')"


def upgrade() -> None:
    op.execute("ALTER TABLE clients DROP CONSTRAINT clients_export_format_check")
    op.execute(
        f"ALTER TABLE clients ADD CONSTRAINT clients_export_format_check"
        f" CHECK (export_format IN {_FORMATS})"
    )
    op.execute("ALTER TABLE export_deliveries DROP CONSTRAINT export_deliveries_format_check")
    op.execute(
        f"ALTER TABLE export_deliveries ADD CONSTRAINT export_deliveries_format_check"
        f" CHECK (format IN {_FORMATS})"
    )
    op.execute("UPDATE export_deliveries SET format = 'jsonl' WHERE format = 'json'")
    op.execute("UPDATE clients SET export_format = 'jsonl' WHERE export_format = 'json'")


def downgrade() -> None:
    # The document has no older name: its deliveries and clients go back to JSON Lines,
    # the only JSON the older version writes (a delivered document stays as it is).
    op.execute("UPDATE clients SET export_format = 'json' WHERE export_format = 'jsonl'")
    op.execute("UPDATE export_deliveries SET format = 'json' WHERE format = 'jsonl'")
    op.execute("ALTER TABLE export_deliveries DROP CONSTRAINT export_deliveries_format_check")
    op.execute(
        f"ALTER TABLE export_deliveries ADD CONSTRAINT export_deliveries_format_check"
        f" CHECK (format IN {_OLD_FORMATS})"
    )
    op.execute("ALTER TABLE clients DROP CONSTRAINT clients_export_format_check")
    op.execute(
        f"ALTER TABLE clients ADD CONSTRAINT clients_export_format_check"
        f" CHECK (export_format IN {_OLD_FORMATS})"
    )
