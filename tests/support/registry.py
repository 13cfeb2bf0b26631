"""A scripted stand-in for the registry, and a clock a test sets, for the unit tests of the
cached registry and its snapshot; the real sources are exercised by integration tests."""

from __future__ import annotations

import asyncio

from evothesis.domain import ClientConfig
from evothesis.errors import RegistryUnavailable


class ScriptedSource:
    """Answers from a dict; can be made unreachable or slow; counts lookups per host."""

    def __init__(self, answers: dict[str, ClientConfig]) -> None:
        self.answers = answers
        self.down = False
        self.delay = 0.0
        self.lookups: list[str] = []

    async def lookup(self, host: str) -> ClientConfig | None:
        self.lookups.append(host)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise RegistryUnavailable("registry is down")
        return self.answers.get(host)

    async def lookup_write_key(self, digest: str) -> ClientConfig | None:
        """Write keys are scripted under ``"key:" + digest``."""
        return await self.lookup(f"key:{digest}")


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
