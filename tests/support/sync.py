"""Running coroutines from synchronous test code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_coroutine(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``make()`` to completion from synchronous test code, on a thread of its own: the
    session's Playwright browser (acceptance tests) keeps an event loop running in the main
    thread, where ``asyncio.run`` refuses to start."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-coroutine") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
