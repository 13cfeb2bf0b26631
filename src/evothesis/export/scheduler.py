"""The export schedule: a round every interval, or sooner when the backlog reaches a batch
or a client's delivery is due (its schedule ticked, its threshold was reached, it asked);
between rounds, notices go out to clients' webhooks.

It runs inside ``evothesis serve`` (one per process; exporters coordinate in PostgreSQL) or
alone as ``evothesis worker``. A failing round is logged and the next one tries again: the
ledger keeps what failed, so nothing is skipped.

Every process that runs it records it in the database (``export_schedulers``: who runs it,
its interval, its last round, when the next is due, a heartbeat), so that
``/pipeline/status`` of any collector describes the schedule wherever it runs: under
compose the worker service exports and the collectors only answer. The record is kept on a
best-effort basis: while the database is down the schedule goes on (its rounds fail and
are retried anyway), and the record catches up when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from evothesis.domain import SchedulerRole
from evothesis.errors import StorageUnavailable
from evothesis.export.ledger import ExportLedger
from evothesis.export.notices import NoticeSender
from evothesis.export.pipeline import ExportPipeline
from evothesis.export.replays import Replays

logger = logging.getLogger("evothesis.export")

#: How often the backlog is checked against the threshold between scheduled rounds.
POLL_SECONDS: Final = 5.0
#: How often a running scheduler tells the database it is alive, rounds or not.
HEARTBEAT_SECONDS: Final = 10.0
#: A scheduler not heard from for this long is taken for dead (killed, its host gone).
SILENT_AFTER_SECONDS: Final = 3 * HEARTBEAT_SECONDS
#: How long a stopping scheduler tries to record that it stopped.
_STOP_RECORD_SECONDS: Final = 5.0


def runner_name(ledger: ExportLedger) -> str:
    """Who runs a schedule: the exporter's host and process, and a token (two schedules in
    one process, as tests run them, are two runners)."""
    return f"{ledger.owner}/{secrets.token_hex(3)}"


@dataclass
class SchedulerState:
    """This process's schedule as it runs (the database records the same for the others)."""

    runner: str
    role: SchedulerRole
    running: bool = False
    rounds: int = 0
    last_round_at: str | None = None
    last_round: dict[str, Any] | None = None
    last_error: str | None = None
    triggers: dict[str, int] = field(
        default_factory=lambda: {"schedule": 0, "threshold": 0, "delivery": 0}
    )


async def run_scheduler(
    pipeline: ExportPipeline,
    state: SchedulerState,
    *,
    interval_s: float,
    notices: NoticeSender,
    replays: Replays,
    poll_s: float = POLL_SECONDS,
) -> None:
    """Run rounds forever (until cancelled); the first one starts at once, so a backlog
    left by a previous run is exported on start-up."""
    ledger = pipeline.ledger
    poll_s = min(poll_s, interval_s)
    state.running = True
    await _record(ledger.scheduler_started(state.runner, state.role, interval_s))
    heartbeat = asyncio.create_task(_heartbeats(ledger, state.runner), name="export-heartbeat")
    last: float | None = None
    try:
        while True:
            trigger = None
            if last is None or time.monotonic() - last >= interval_s:
                trigger = "schedule"
            else:
                try:
                    trigger = await _early(pipeline)
                except StorageUnavailable as exc:
                    state.last_error = exc.message
            if trigger is not None:
                await _round(pipeline, replays, state, trigger, interval_s)
                last = time.monotonic()
            try:
                await notices.send_due()
            except StorageUnavailable as exc:
                state.last_error = exc.message
            await asyncio.sleep(poll_s)
    finally:
        state.running = False
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STOP_RECORD_SECONDS):
                await _record(ledger.scheduler_stopped(state.runner))


async def _early(pipeline: ExportPipeline) -> str | None:
    """A round before the interval is up: when a batch's worth of events is waiting, or a
    client's delivery is due."""
    threshold = pipeline.settings.batch_size
    backlog, _ = await pipeline.ledger.backlog(threshold)
    if backlog >= threshold:
        return "threshold"
    if await pipeline.deliveries_due():
        return "delivery"
    return None


async def _round(
    pipeline: ExportPipeline,
    replays: Replays,
    state: SchedulerState,
    trigger: str,
    interval_s: float,
) -> None:
    state.triggers[trigger] += 1
    await _record(pipeline.ledger.scheduler_round_started(state.runner, trigger))
    report: dict[str, Any] | None = None
    try:
        result = await pipeline.run_once()
        result["replays"] = await replays.run_due(deadline_s=pipeline.settings.lease_s / 2)
    except StorageUnavailable as exc:
        state.last_error = exc.message
        logger.warning("Export round skipped: %s", exc.message)
    except Exception as exc:  # a bug must not stop every later export
        state.last_error = f"{type(exc).__name__}: {exc}"
        logger.exception("Export round failed")
    else:
        state.rounds += 1
        state.last_round = report = {"trigger": trigger, **result}
        state.last_round_at = datetime.now(UTC).isoformat()
        failures = result["export"]["failed_batches"] or result["process"]["failed"]
        state.last_error = None if not failures else "some batches or deliveries failed"
    await _record(
        pipeline.ledger.scheduler_round_ended(state.runner, report, state.last_error, interval_s)
    )


async def _heartbeats(ledger: ExportLedger, runner: str) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        await _record(ledger.scheduler_heartbeat(runner))


async def _record(write: Awaitable[None]) -> None:
    """A write to the schedule's record; the database being down is no reason to stop."""
    try:
        await write
    except StorageUnavailable as exc:
        logger.debug("Export schedule not recorded: %s", exc.message)


async def schedule_status(ledger: ExportLedger) -> dict[str, Any]:
    """The export schedule as the database records it, whichever processes run it.

    ``running``: some scheduler has not stopped and was heard from within
    ``SILENT_AFTER_SECONDS``; ``runners`` lists those. ``last_round*`` and ``ran_by`` are
    of the newest round of any scheduler, running or not; ``next_due_at`` is the soonest
    round a running scheduler will start on its interval (``EXPORT_INTERVAL``; sooner if
    the backlog reaches ``EXPORT_BATCH_SIZE`` or a client's delivery is due). Each client's
    next delivery is in ``/process/status``.
    """
    rows = await ledger.schedulers(SILENT_AFTER_SECONDS)
    running = [row for row in rows if row["running"]]
    latest = max(
        (row for row in rows if row["last_round_at"] is not None),
        key=lambda row: row["last_round_at"],
        default=None,
    )
    due = [row["next_due_at"] for row in running if row["next_due_at"] is not None]
    errors = [row["last_error"] for row in running if row["last_error"]]
    return {
        "running": bool(running),
        "last_round_at": _iso(latest["last_round_at"]) if latest else None,
        "last_round": latest["last_round"] if latest else None,
        "ran_by": {"runner": latest["runner"], "role": latest["role"]} if latest else None,
        "last_error": errors[0] if errors else None,
        "next_due_at": _iso(min(due)) if due else None,
        "runners": [
            {
                "runner": row["runner"],
                "role": row["role"],
                "interval_seconds": row["interval_s"],
                "started_at": _iso(row["started_at"]),
                "heartbeat_at": _iso(row["heartbeat_at"]),
                "rounds": row["rounds"],
                "triggers": row["triggers"],
                "round_started_at": _iso(row["round_started_at"]),
                "last_round_at": _iso(row["last_round_at"]),
                "last_error": row["last_error"],
                "next_due_at": _iso(row["next_due_at"]),
            }
            for row in running
        ],
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
