"""The export's worker processes: work really leaves the process, errors come back, a lost
worker is replaced, and nothing outlives an exporter killed with SIGKILL."""

from __future__ import annotations

import asyncio
import operator
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from evothesis.objects.cpu import run_in_worker

#: Starts the pool, prints a worker's pid, then waits to be killed.
_EXPORTER = """
import asyncio, os, time
from evothesis.objects.cpu import run_in_worker
print(asyncio.run(run_in_worker(os.getpid)), flush=True)
time.sleep(120)
"""


def test_work_runs_in_another_process_and_errors_come_back() -> None:
    async def scenario() -> None:
        assert await run_in_worker(operator.add, 2, 3) == 5
        assert await run_in_worker(os.getpid) != os.getpid()
        with pytest.raises(ZeroDivisionError):
            await run_in_worker(operator.truediv, 1, 0)

    asyncio.run(scenario())


def test_a_killed_worker_is_replaced_and_the_call_still_answers() -> None:
    async def scenario() -> None:
        victim = await run_in_worker(os.getpid)
        os.kill(victim, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(victim)], timeout=10)
        survivor = await run_in_worker(os.getpid)
        assert survivor != victim
        assert await run_in_worker(operator.mul, 6, 7) == 42

    asyncio.run(scenario())


def test_workers_exit_when_the_exporter_is_killed() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _EXPORTER], stdout=subprocess.PIPE, text=True
    ) as exporter:
        try:
            assert exporter.stdout is not None
            worker = int(exporter.stdout.readline())
            descendants = psutil.Process(exporter.pid).children(recursive=True)
            assert worker in {child.pid for child in descendants}
        finally:
            exporter.kill()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(child.is_running() for child in descendants):
        time.sleep(0.2)
    left = [child.pid for child in descendants if child.is_running()]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []
