"""Delivery schedules: when a client's processed files are written (pure, no I/O).

A schedule is ``real-time`` (a delivery per raw batch, as soon as the batch is exported),
``hourly`` (at minute 0, UTC), ``daily`` (at 00:00 UTC) or a five-field cron expression in
UTC (``*/15 * * * *``). The words are cron expressions with names; a schedule's *ticks* are
the moments its expression matches, and a scheduled delivery is cut at a tick for what the
raw export had claimed before it.

Cron expressions are read by cronsim, which implements Debian cron's semantics
(including ``L``, ``W``, ``#`` and the day-of-month/day-of-week OR rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from cronsim import CronSim, CronSimError

__all__ = ["REAL_TIME", "DeliverySchedule", "parse_schedule"]

REAL_TIME: Final = "real-time"
#: The seed's words (seed 004, "Export Scheduling") and the cron expressions they mean.
NAMED: Final = {"hourly": "0 * * * *", "daily": "0 0 * * *"}
_REAL_TIME_SPELLINGS: Final = frozenset({"real-time", "realtime", "real_time"})


@dataclass(frozen=True, slots=True)
class DeliverySchedule:
    """A parsed schedule; ``text`` is its canonical spelling, as stored and shown."""

    text: str
    #: The cron expression of a scheduled client; ``None`` for real time.
    cron: str | None

    @property
    def real_time(self) -> bool:
        return self.cron is None

    def next_tick(self, after: datetime) -> datetime | None:
        """The first tick strictly after ``after``; ``None`` for real time (no ticks)."""
        if self.cron is None:
            return None
        return next(CronSim(self.cron, after.astimezone(UTC)))

    def last_tick(self, at: datetime) -> datetime | None:
        """The latest tick at or before ``at``; ``None`` for real time."""
        if self.cron is None:
            return None
        # Reverse iteration yields ticks strictly before its start, and ticks fall on whole
        # minutes: start one second after ``at`` (cut to the second) to include ``at``.
        start = at.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        return next(CronSim(self.cron, start, reverse=True))


def parse_schedule(text: str) -> DeliverySchedule:
    """``real-time``, ``hourly``, ``daily`` or a five-field cron expression (UTC); a
    ``ValueError`` names what is wrong."""
    spelled = " ".join(str(text).split()).lower()
    if spelled in _REAL_TIME_SPELLINGS:
        return DeliverySchedule(REAL_TIME, None)
    if spelled in NAMED:
        return DeliverySchedule(spelled, NAMED[spelled])
    if not spelled:
        raise ValueError("a delivery schedule is required (real-time, hourly, daily or cron)")
    if len(spelled.split(" ")) != 5:
        raise ValueError(
            f"not a delivery schedule: {text!r} (use real-time, hourly, daily or a "
            "five-field cron expression such as '*/15 * * * *', in UTC)"
        )
    try:
        ticks = CronSim(spelled, datetime(2000, 1, 1, tzinfo=UTC))
        next(ticks)
    except (CronSimError, StopIteration) as exc:
        raise ValueError(f"not a valid cron expression: {text!r} ({exc})") from None
    return DeliverySchedule(spelled, spelled)
