"""CPU-bound work in worker processes: exports, and the collector's large bodies.

Splitting a raw object, encoding a client's Parquet, CSV or JSON file, and parsing and
redacting a /collect body near the size limit are Python work that holds the GIL: in
threads it runs on one core however many there are, and in the ``serve`` process it
competes with the collector's event loop. Worker processes give it every core, and they
pause the cyclic garbage collector during a task: a task builds tens of thousands of
short-lived dicts, which otherwise trigger collections that cost more than the parsing.
They run at a lower priority (``WORKER_NICENESS``): when every core is busy, the kernel
gives the event loop a core first, so requests are answered while the work goes on.

Table commits (delta-rs, pyiceberg) run in a second pool of their own: they wait on the
network, not the CPU, so more of them run at once, and delta-rs holds the GIL through some
of its I/O, which in the exporter's own process would stall its event loop (and a collector
sharing it) for as long as a request to the client's bucket takes.

Each pool serves the whole process (every pipeline in it), started on first use with the
``spawn`` method, because forking a process that runs an event loop and database
connections is unsafe. A worker exits when its parent dies, even by SIGKILL, so a killed
exporter leaves nothing behind.

Work whose libraries the parent never needs (pyarrow, delta-rs, pyiceberg: a hundred
megabytes resident) is handed over ``ByName``: the worker imports it, the parent (a
collector's process, when it hosts the export) does not.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: One worker per core: the tasks are pure CPU.
WORKERS = max(1, os.cpu_count() or 1)
#: Table commits at once: each is a few requests to a bucket.
TABLE_WORKERS = 4
#: Added to a worker's nice value: background work yields the CPU to serving requests.
WORKER_NICENESS = 10
#: How often a worker checks that its parent is still alive.
_PARENT_CHECK_S = 1.0

_pools: dict[str, ProcessPoolExecutor] = {}
_pool_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class ByName(Generic[T]):
    """A function named by its module and name, imported only where it is called: giving it
    to ``run_in_worker`` loads its module (and the libraries that module needs) into the
    worker, never into the process that gives it."""

    module: str
    name: str

    def __call__(self, *args: Any) -> T:
        function: Callable[..., T] = getattr(importlib.import_module(self.module), self.name)
        return function(*args)


async def run_in_worker(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a worker process; both must be picklable.

    A pool broken by a worker that died (killed, out of memory) is replaced and the call
    tried once more, so one lost worker does not fail every later export.
    """
    return await _run("cpu", WORKERS, function, args)


async def run_in_table_worker(function: Callable[..., T], *args: Any) -> T:
    """``run_in_worker`` in the pool of table commits."""
    return await _run("tables", TABLE_WORKERS, function, args)


async def _run(name: str, size: int, function: Callable[..., T], args: tuple[Any, ...]) -> T:
    loop = asyncio.get_running_loop()
    for attempt in range(2):
        pool = _executor(name, size)
        try:
            return await loop.run_in_executor(pool, _run_without_gc, function, args)
        except BrokenProcessPool:
            _discard(name, pool)
            if attempt:
                raise
    raise AssertionError("unreachable")


def _executor(name: str, size: int) -> ProcessPoolExecutor:
    with _pool_lock:
        pool = _pools.get(name)
        if pool is None:
            pool = _pools[name] = ProcessPoolExecutor(
                size,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(),),
            )
        return pool


def _discard(name: str, pool: ProcessPoolExecutor) -> None:
    with _pool_lock:
        if _pools.get(name) is pool:
            del _pools[name]
    pool.shutdown(wait=False, cancel_futures=True)


def _start_worker(parent: int) -> None:
    os.nice(WORKER_NICENESS)
    # What was imported to get here lives as long as the worker: keep collections off it.
    gc.freeze()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_CHECK_S)
    os._exit(0)


def _run_without_gc(function: Callable[..., T], args: tuple[Any, ...]) -> T:
    gc.disable()
    try:
        return function(*args)
    finally:
        gc.enable()
