"""What the benchmarks read of the systems they measure: rows stored in a database, and the
resident memory of each process."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg


def stored_rows(url: str) -> int:
    async def count() -> int:
        connection = await asyncpg.connect(url)
        try:
            return int(await connection.fetchval("SELECT count(*) FROM events_log"))
        finally:
            await connection.close()

    return asyncio.run(count())


def settled_rows(url: str, timeout: float = 30) -> int:
    """The count once requests in flight when wrk stopped have landed (two reads agree)."""
    deadline = time.monotonic() + timeout
    count = stored_rows(url)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        again = stored_rows(url)
        if again == count:
            break
        count = again
    return count


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid]
    if children.exists():
        for child in children.read_text().split():
            found += process_tree(int(child))
    return found


def rss_mib(pid: int, field: str) -> dict[int, float]:
    """``field`` (VmRSS now, VmHWM peak) of each Python process in ``pid``'s tree (the
    collector's, not its shell's or database's), in MiB."""
    found = {}
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
            command = Path(f"/proc/{member}/cmdline").read_bytes()
        except OSError:
            continue
        if b"python" not in command and b"uvicorn" not in command:
            continue
        for line in status.splitlines():
            if line.startswith(f"{field}:"):
                found[member] = int(line.split()[1]) / 1024
    return found
