"""Deadlines for reading request bodies: one watchdog per process, not a timer per request.

``asyncio.timeout`` schedules and cancels a timer for every request, about 5 µs under
uvloop, which is a third of what storing a single event costs. The deadline only matters
for the rare sender that stalls, so requests just note when they started reading, and one
task looks for overdue reads a few times per deadline and cancels them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Final

from evothesis.errors import RequestTimeout

#: The watchdog looks at least this often, so a deadline is overshot by at most a quarter.
_CHECKS_PER_DEADLINE: Final = 4
_MAX_CHECK_INTERVAL: Final = 1.0


class ReadDeadlines:
    """Cancel body reads that outlast ``seconds``; ``RequestTimeout`` replaces the cancel."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._reads: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, seconds: float) -> AsyncIterator[ReadDeadlines]:
        """Deadlines with their watchdog running for the block's length."""
        deadlines = cls(seconds)
        watchdog = asyncio.create_task(deadlines._watch(), name="body-read-deadlines")
        try:
            yield deadlines
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    def begin(self) -> asyncio.Task[object] | None:
        """Note that the current task starts reading; pass the result to ``end``."""
        task = asyncio.current_task()
        if task is not None:
            self._reads[task] = asyncio.get_running_loop().time() + self.seconds
        return task

    def end(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self._reads.pop(task, None)

    def timed_out(self, task: asyncio.Task[object] | None) -> RequestTimeout | None:
        """For a ``CancelledError`` in ``task``: the timeout, if the watchdog caused it."""
        if task is None or task not in self._expired:
            return None
        self._expired.discard(task)
        task.uncancel()
        return RequestTimeout(f"the request body did not arrive within {self.seconds:g} s")

    async def _watch(self) -> None:
        interval = min(_MAX_CHECK_INTERVAL, self.seconds / _CHECKS_PER_DEADLINE)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for task, deadline in list(self._reads.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
