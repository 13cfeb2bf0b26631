"""Object keys are a pure function of the export batch: a retried batch overwrites its own
objects instead of adding a second copy, which is half of "exactly once" (the ledger in
PostgreSQL is the other half)."""

from __future__ import annotations

from datetime import date, datetime

from evothesis.export.formats import FILE_EXTENSIONS

RAW_PREFIX = "raw-events"
PROCESSED_PREFIX = "processed-events"
METERING_PREFIX = "metering"
FAILED_EVENTS_PREFIX = "failed-events"


def batch_name(batch_id: int) -> str:
    """Zero-padded so that keys list in batch order."""
    return f"batch-{batch_id:012d}"


def _day(moment: date) -> str:
    return moment.strftime("%Y/%m/%d")


def raw_key(batch_id: int, claimed_at: datetime) -> str:
    return f"{RAW_PREFIX}/{_day(claimed_at)}/{batch_name(batch_id)}.jsonl.gz"


def metering_day_prefix(day: date) -> str:
    """The folder of one event day's metering files: a report reads exactly its days."""
    return f"{METERING_PREFIX}/{_day(day)}/"


def metering_key(batch_id: int, day: date) -> str:
    """A batch's metering file of one event day (not its claim day, unlike the other keys)."""
    return f"{metering_day_prefix(day)}{batch_name(batch_id)}.jsonl"


def failed_events_key(batch_id: int, claimed_at: datetime) -> str:
    return f"{FAILED_EVENTS_PREFIX}/{_day(claimed_at)}/{batch_name(batch_id)}.jsonl.gz"


def processed_key(
    client_id: str, batch_id: int, claimed_at: datetime, fmt: str, layout: str = "dated"
) -> str:
    """A delivery's file. ``layout`` (``domain.FileLayout``) is fixed when the delivery is
    created, so a client that changes it moves no file already delivered: ``dated`` is the
    seeds' ``YYYY/MM/DD/``, ``hive`` is ``export_date=YYYY-MM-DD/`` (the claim day, which
    engines read as a partition column; a file may hold late events of earlier days)."""
    folder = f"export_date={claimed_at:%Y-%m-%d}" if layout == "hive" else _day(claimed_at)
    return f"{PROCESSED_PREFIX}/{client_id}/{folder}/{batch_name(batch_id)}.{FILE_EXTENSIONS[fmt]}"


def table_key(client_id: str, fmt: str) -> str:
    """Where a client's table of events lives in its destination (one per table format, so
    a client that switches format starts a new table beside the old one)."""
    return f"{PROCESSED_PREFIX}/{client_id}/{fmt}/events"


def manifest_key(data_key: str) -> str:
    """The sidecar of a processed file: the seed's export metadata, next to the data."""
    return f"{data_key}.manifest.json"
