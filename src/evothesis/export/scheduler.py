"""The export schedule: a round every interval, or sooner when the backlog reaches a batch
or a client's delivery is due (its schedule ticked, its threshold was reached, it asked);
between rounds, notices go out to clients' webhooks.

It runs inside ``evothesis serve`` (one per process; exporters coordinate in PostgreSQL) or
alone as ``evothesis worker``. A failing round is logged and the next one tries again: the
ledger keeps what failed, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from evothesis.errors import StorageUnavailable
from evothesis.export.notices import NoticeSender
from evothesis.export.pipeline import ExportPipeline
from evothesis.export.replays import Replays

logger = logging.getLogger("evothesis.export")

#: How often the backlog is checked against the threshold between scheduled rounds.
POLL_SECONDS = 5.0


@dataclass
class SchedulerState:
    """What /pipeline/status shows about the schedule."""

    running: bool = False
    rounds: int = 0
    last_round_at: str | None = None
    last_round: dict[str, Any] | None = None
    last_error: str | None = None
    triggers: dict[str, int] = field(
        default_factory=lambda: {"schedule": 0, "threshold": 0, "delivery": 0}
    )
    #: Set to run a round at the next poll (an on-demand request in this process).
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def as_dict(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "rounds": self.rounds,
            "last_round_at": self.last_round_at,
            "last_round": self.last_round,
            "last_error": self.last_error,
            "triggers": dict(self.triggers),
        }


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
    poll_s = min(poll_s, interval_s)
    state.running = True
    last: float | None = None
    try:
        while True:
            trigger = None
            if last is None or time.monotonic() - last >= interval_s:
                trigger = "schedule"
            elif state.wake.is_set():
                trigger = "delivery"
            else:
                try:
                    trigger = await _early(pipeline)
                except StorageUnavailable as exc:
                    state.last_error = exc.message
            if trigger is not None:
                state.wake.clear()
                await _round(pipeline, replays, state, trigger)
                last = time.monotonic()
            try:
                await notices.send_due()
            except StorageUnavailable as exc:
                state.last_error = exc.message
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.wake.wait(), poll_s)
    finally:
        state.running = False


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
    pipeline: ExportPipeline, replays: Replays, state: SchedulerState, trigger: str
) -> None:
    state.triggers[trigger] += 1
    try:
        result = await pipeline.run_once()
        result["replays"] = await replays.run_due(deadline_s=pipeline.settings.lease_s / 2)
    except StorageUnavailable as exc:
        state.last_error = exc.message
        logger.warning("Export round skipped: %s", exc.message)
        return
    except Exception as exc:  # a bug must not stop every later export
        state.last_error = f"{type(exc).__name__}: {exc}"
        logger.exception("Export round failed")
        return
    state.rounds += 1
    state.last_round = {"trigger": trigger, **result}
    state.last_round_at = datetime.now(UTC).isoformat()
    failures = result["export"]["failed_batches"] or result["process"]["failed"]
    state.last_error = None if not failures else "some batches or deliveries failed"
