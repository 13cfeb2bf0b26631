"""All-time event totals per client, which retention never lowers.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

``/events/count`` is the seeds' "total event count for monitoring and billing", but the
buffer it used to count is emptied by retention. The total is what every exported batch
held (the ledger's deliveries, summed per client here as they are created) plus what the
buffer holds that no exported batch does yet. Nothing is added to the collector's write
path: a delivery row is created once per (batch, client), in the transaction that records
its batch as exported, and this table follows it through a trigger, whichever version of
the exporter inserts it.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE client_event_totals (
            client_id       text PRIMARY KEY,
            exported_events bigint NOT NULL CHECK (exported_events >= 0)
        )
        """
    )
    op.execute(
        """
        CREATE FUNCTION add_to_client_event_totals() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO client_event_totals (client_id, exported_events)
            VALUES (NEW.client_id, NEW.event_count)
            ON CONFLICT (client_id) DO UPDATE
            SET exported_events = client_event_totals.exported_events
                                  + EXCLUDED.exported_events;
            RETURN NULL;
        END
        $$
        """
    )
    # The trigger's lock waits for deliveries being inserted, and holds new ones back until
    # this commits: the sum below and the trigger count every delivery exactly once.
    op.execute(
        "CREATE TRIGGER export_deliveries_totals AFTER INSERT ON export_deliveries"
        " FOR EACH ROW EXECUTE FUNCTION add_to_client_event_totals()"
    )
    op.execute(
        "INSERT INTO client_event_totals (client_id, exported_events)"
        " SELECT client_id, sum(event_count) FROM export_deliveries GROUP BY client_id"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER export_deliveries_totals ON export_deliveries")
    op.execute("DROP FUNCTION add_to_client_event_totals()")
    op.execute("DROP TABLE client_event_totals")
