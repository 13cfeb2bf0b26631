"""The export schedule's state in the database, where every collector can read it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

``/pipeline/status`` reported the scheduler of the process that answered: under compose the
worker service exports and the collector said the scheduler was not running. Each process
that runs the schedule (``evothesis worker``, or ``serve`` with ``EXPORT_IN_SERVE``) keeps a
row here: who it is, its interval, its last round and when the next is due, and a heartbeat
that tells a running scheduler from one that died.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE export_schedulers (
            runner           text PRIMARY KEY,
            role             text NOT NULL CHECK (role IN ('collector', 'worker')),
            interval_s       double precision NOT NULL CHECK (interval_s > 0),
            started_at       timestamptz NOT NULL DEFAULT now(),
            heartbeat_at     timestamptz NOT NULL DEFAULT now(),
            stopped_at       timestamptz,
            rounds           integer NOT NULL DEFAULT 0,
            triggers         jsonb NOT NULL DEFAULT '{}'::jsonb,
            round_started_at timestamptz,
            last_round_at    timestamptz,
            last_round       jsonb,
            last_error       text,
            next_due_at      timestamptz
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE export_schedulers")
