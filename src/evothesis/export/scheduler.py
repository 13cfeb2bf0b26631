"""The export schedule: a round every interval, or sooner when the backlog reaches a batch.

It runs inside ``evothesis serve`` (one per process; exporters coordinate in PostgreSQL) or
alone as ``evothesis worker``. A failing round is logged and the next one tries again: the
ledger keeps what failed, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from evothesis.errors import StorageUnavailable
from evothesis.export.pipeline import ExportPipeline

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
    triggers: dict[str, int] = field(default_factory=lambda: {"schedule": 0, "threshold": 0})

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
    poll_s: float = POLL_SECONDS,
) -> None:
    """Run rounds forever (until cancelled); the first one starts at once, so a backlog
    left by a previous run is exported on start-up."""
    threshold = pipeline.settings.batch_size
    poll_s = min(poll_s, interval_s)
    state.running = True
    last: float | None = None
    try:
        while True:
            trigger = None
            if last is None or time.monotonic() - last >= interval_s:
                trigger = "schedule"
            else:
                try:
                    backlog, _ = await pipeline.ledger.backlog(threshold)
                except StorageUnavailable as exc:
                    state.last_error = exc.message
                    backlog = 0
                if backlog >= threshold:
                    trigger = "threshold"
            if trigger is not None:
                await _round(pipeline, state, trigger)
                last = time.monotonic()
            await asyncio.sleep(poll_s)
    finally:
        state.running = False


async def _round(pipeline: ExportPipeline, state: SchedulerState, trigger: str) -> None:
    state.triggers[trigger] += 1
    try:
        result = await pipeline.run_once()
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
