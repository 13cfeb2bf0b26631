"""Object keys are a pure function of the export batch or of the delivery: a retried batch
or delivery overwrites its own objects instead of adding a second copy, which is half of
"exactly once" (the ledger in PostgreSQL is the other half)."""

from __future__ import annotations

from datetime import date, datetime

from evothesis.domain import FILE_FORMATS

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


def _folder(day: date, layout: str) -> str:
    """A processed file's folder under its client's: ``layout`` (``domain.FileLayout``) is
    fixed when the delivery is cut, so a client that changes it moves no file already
    delivered. ``dated`` is the seeds' ``YYYY/MM/DD``, ``hive`` is ``export_date=YYYY-MM-DD``
    (the claim day, which engines read as a partition column; a file may hold late events
    of earlier days)."""
    return f"export_date={day:%Y-%m-%d}" if layout == "hive" else _day(day)


def processed_key(
    client_id: str, batch_id: int, claimed_at: datetime, fmt: str, layout: str = "dated"
) -> str:
    """A real-time delivery's file, named after its batch."""
    folder = _folder(claimed_at, layout)
    return f"{PROCESSED_PREFIX}/{client_id}/{folder}/{batch_name(batch_id)}.{_extension(fmt)}"


def table_key(client_id: str, fmt: str) -> str:
    """Where a client's table of events lives in its destination (one per table format, so
    a client that switches format starts a new table beside the old one)."""
    return f"{PROCESSED_PREFIX}/{client_id}/{fmt}/events"


def delivery_name(seq: int) -> str:
    """Zero-padded so that a client's files list in delivery order."""
    return f"delivery-{seq:012d}"


def delivery_key(client_id: str, seq: int, day: date, fmt: str, layout: str = "dated") -> str:
    """A delivery's file of one claim day (``export.deliveries``)."""
    folder = _folder(day, layout)
    return f"{PROCESSED_PREFIX}/{client_id}/{folder}/{delivery_name(seq)}.{_extension(fmt)}"


def manifest_key(data_key: str) -> str:
    """The sidecar of a processed file: the seed's export metadata, next to the data."""
    return f"{data_key}.manifest.json"


def _extension(fmt: str) -> str:
    """A file format is its own extension; a table format has no file of its own."""
    if fmt not in FILE_FORMATS:
        raise ValueError(f"{fmt!r} is not a file format; expected one of {FILE_FORMATS}")
    return fmt
