"""What every client table offers, whatever its format, and the maintenance rule they share.

Tables are driven synchronously (delta-rs and pyiceberg are blocking libraries), in the
export's table worker processes (``objects.cpu.run_in_table_worker``), so one client's slow
bucket holds only its own deliveries. Calls on one table object are serialised by its lock;
workers writing the same table at once are kept apart by the table's own optimistic commits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

from evothesis.errors import TableError
from evothesis.export.keys import table_key
from evothesis.objects.buckets import BucketSpec

if TYPE_CHECKING:  # the exporter's own process never loads pyarrow; its workers do
    import pyarrow as pa

#: Files of one ``event_date`` partition that trigger its compaction into one file: a
#: client delivered hourly compacts each day once, a client delivered every minute every
#: 24 minutes, a daily client about once a month (its files are big already).
COMPACT_FILES: Final = 24
#: How often a table is checkpointed and vacuumed (per exporting process): removed files
#: older than the client's retention go, and the log is summarised for fast loading.
MAINTENANCE_INTERVAL_S: Final = 24 * 3600.0
#: The least a vacuum keeps, whatever the client's retention: a file younger than this may be
#: an append still on its way to its commit, which a vacuum must not take from under it.
MIN_VACUUM_RETENTION: Final = timedelta(hours=1)
#: Commits lost to a concurrent writer before an append gives up (it is retried later).
COMMIT_ATTEMPTS: Final = 8
#: The key every commit of ours carries the delivery identity under (Delta commit info,
#: Iceberg snapshot summary); also the export metadata's keys, prefixed the same way.
IDENTITY_KEY: Final = "evothesis.delivery"
#: The table of events in each client's namespace (Iceberg).
TABLE_NAME: Final = "events"

T = TypeVar("T")


def table_storage(spec: BucketSpec, key: str) -> tuple[str, dict[str, str]]:
    """The URI of ``key`` in a bucket and the storage options to reach it: obstore's option
    names are object_store's, which delta-rs takes as they are."""
    if spec.is_local:
        return str(spec.local_path / key), {}
    options = dict(spec.options)
    if options.get("endpoint", "").startswith("http://"):
        options["allow_http"] = "true"
    return f"{spec.url.rstrip('/')}/{key}", options


@dataclass(frozen=True, slots=True)
class TableRef:
    """Which table: a client's, in a format, in a destination (picklable, for workers)."""

    fmt: str
    spec: BucketSpec
    client_id: str
    iceberg_catalog: str

    @property
    def location(self) -> str:
        """How readers name the table: its URI (Delta), its catalog identifier (Iceberg)."""
        if self.fmt == "iceberg":
            return f"{self.client_id}.{TABLE_NAME}"
        return self.uri

    @property
    def uri(self) -> str:
        """Where the table's files are: one table's, whatever its format."""
        return table_storage(self.spec, table_key(self.client_id, self.fmt))[0]


@dataclass(frozen=True, slots=True)
class Appended:
    """What an append did: ``appended`` is false when the table already held the delivery
    (a retry, a replay, or another exporter that got there first)."""

    identity: str
    appended: bool
    rows: int
    #: The table's version (Delta) or current snapshot id (Iceberg) after the call.
    version: int
    #: The id the table gave itself when it was made (a Delta table's metadata id, an
    #: Iceberg table's uuid): a table made anew under the same name has another.
    table_id: str
    #: Whether a partition now needs compacting (set by the export's worker, which looks).
    crowded: bool = False


@dataclass(frozen=True, slots=True)
class Maintained:
    """What one maintenance pass did."""

    partitions_compacted: int
    files_removed: int


class EventTable(Protocol):
    """One client's table of events, in one format."""

    #: ``domain.ExportFormat`` value: ``delta`` or ``iceberg``.
    format: str
    #: Where the table is, as its readers name it (URI, or catalog identifier for Iceberg).
    location: str

    def append(
        self,
        rows: pa.Table,
        identity: str,
        metadata: Mapping[str, str],
        held_by: Collection[str] = frozenset(),
    ) -> Appended:
        """Append ``rows`` (``schema.table_rows``) under ``identity`` exactly once: not when
        the table's history has a commit with ``identity``, nor when the table's id is in
        ``held_by`` (the tables known to hold it, whatever their history still says)."""

    def contains(self, identity: str) -> bool:
        """Whether a commit with ``identity`` is in the table's history."""

    def delete_subject(
        self, visitor_ids: Collection[str], user_ids: Collection[str], metadata: Mapping[str, str]
    ) -> int:
        """Delete every row whose visitor id is in ``visitor_ids`` or user id in ``user_ids``
        (a data subject, ``gdpr.subjects``) from the current version; how many there were."""

    def partition_files(self, days: Collection[str] | None = None) -> dict[str, int]:
        """Data files per ``event_date`` partition (``YYYY-MM-DD``) of the current version:
        every partition's, or only those of ``days`` (which an append touched: cheaper)."""

    def compact(self, partitions: list[str]) -> None:
        """Rewrite each partition's files as one (rows and their order kept)."""

    def checkpoint(self) -> None:
        """Summarise the log so readers load the table without replaying every commit."""

    def vacuum(self, retention: timedelta) -> int:
        """Remove data files no version younger than ``retention`` needs; how many."""


def crowded(table: EventTable, days: Collection[str] | None = None) -> list[str]:
    """The partitions (of ``days`` only, when given) that gathered ``COMPACT_FILES`` files."""
    files = table.partition_files(days)
    return sorted(day for day, n in files.items() if n >= COMPACT_FILES)


def maintain(table: EventTable, retention: timedelta, *, full: bool) -> Maintained:
    """Compact partitions that gathered ``COMPACT_FILES`` files; when ``full`` (once per
    ``MAINTENANCE_INTERVAL_S`` per table, as the export ledger keeps it) also checkpoint and
    vacuum, keeping removed files for ``retention`` (at least ``MIN_VACUUM_RETENTION``).

    One maintainer at a time per table (the caller holds the table's lock in the ledger):
    delta-rs lets two concurrent compactions of the same files both commit, which would
    duplicate their rows."""
    days = crowded(table)
    if days:
        table.compact(days)
    removed = 0
    if full:
        table.checkpoint()
        removed = table.vacuum(max(retention, MIN_VACUUM_RETENTION))
    return Maintained(len(days), removed)


def retrying(what: str, attempt: Callable[[], T | None]) -> T:
    """``attempt`` until it returns a value: ``None`` means it lost a commit race and must
    look at the table again (which may now hold what it was about to write)."""
    for _ in range(COMMIT_ATTEMPTS):
        result = attempt()
        if result is not None:
            return result
    raise TableError(f"{what}: lost {COMMIT_ATTEMPTS} commit races in a row; retried later")


class AppendsInTurn:
    """What both table formats do around an append: one at a time in a process
    (``_lock``), attempted again while it loses commit races to other writers (``_append``
    answers ``None``)."""

    location: str
    _lock: threading.Lock

    def append(
        self,
        rows: pa.Table,
        identity: str,
        metadata: Mapping[str, str],
        held_by: Collection[str] = frozenset(),
    ) -> Appended:
        with self._lock:
            return retrying(
                f"appending to {self.location}",
                lambda: self._append(rows, identity, metadata, held_by),
            )

    def _append(
        self, rows: pa.Table, identity: str, metadata: Mapping[str, str], held_by: Collection[str]
    ) -> Appended | None:
        raise NotImplementedError
