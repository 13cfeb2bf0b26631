"""Delta Lake tables through delta-rs (the ``deltalake`` package).

Exactly once: every append carries an application transaction whose id is the delivery
identity, in the same commit as its rows. Before writing, the table is asked for that id
(``transaction_version``); a second exporter racing the first loses the commit with
"concurrent transaction" (delta-rs' conflict check compares the transaction ids of the
winning commit with ours), reloads, finds the id and stops. Concurrent appends of different
deliveries do not conflict: delta-rs rebases a blind append and commits it.

Safe concurrent commits need a store that refuses to overwrite a log entry: local folders,
GCS and Azure do; S3 does with conditional writes (``If-None-Match``), which delta-rs 1.x
uses on S3 and S3-compatible stores that implement it (AWS S3, MinIO, R2, moto), with no
DynamoDB lock.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping
from datetime import timedelta
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from evothesis.errors import TableError
from evothesis.export.tables.core import IDENTITY_KEY, Appended, AppendsInTurn, table_storage
from evothesis.export.tables.schema import PARTITION_COLUMN, added_columns
from evothesis.objects.buckets import BucketSpec

#: The version of every application transaction of ours: one id per delivery, so the
#: version only says "appended" (Delta's streaming writers count up instead).
_TXN_VERSION: Final = 1
#: Table properties set when a table is created. Removed files stay as long as the
#: client's retention says (vacuum is given it explicitly); the log keeps 30 days. A
#: checkpoint every 10 commits bounds what loading the table and looking up a delivery's
#: transaction read: every commit since the last checkpoint, one request each (at delta-rs'
#: default of 100, an append to a busy table took up to a hundred requests).
_TABLE_CONFIGURATION: Final[dict[str, str | None]] = {
    "delta.checkpointInterval": "10",
    "delta.logRetentionDuration": "interval 30 days",
}


class DeltaEventTable(AppendsInTurn):
    format = "delta"

    def __init__(self, spec: BucketSpec, key: str) -> None:
        self.location, self._options = table_storage(spec, key)
        self._table: DeltaTable | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------ writing

    def _append(
        self, rows: pa.Table, identity: str, metadata: Mapping[str, str], held_by: Collection[str]
    ) -> Appended | None:
        table = self._load() or self._create(rows.schema)
        table_id = str(table.metadata().id)
        if table_id in held_by or table.transaction_version(identity) is not None:
            return Appended(identity, False, 0, table.version(), table_id)
        merge = bool(added_columns(_arrow_schema(table), rows.schema))
        properties = CommitProperties(
            custom_metadata={IDENTITY_KEY: identity, **metadata},
            app_transactions=[Transaction(app_id=identity, version=_TXN_VERSION)],
        )
        try:
            write_deltalake(
                table,
                rows,
                mode="append",
                schema_mode="merge" if merge else None,
                commit_properties=properties,
            )
        except CommitFailedError:
            self._table = None  # another writer committed first: look again
            return None
        except (DeltaError, OSError) as exc:
            raise _error("append to", self.location, exc) from exc
        return Appended(identity, True, rows.num_rows, table.version(), table_id)

    def _create(self, schema: pa.Schema) -> DeltaTable:
        """An empty table (its own commit, so that every append is a plain append whose
        transaction id delta-rs checks against concurrent commits: an append that creates
        the table is rebased past a concurrent creation without that check). Racing
        creators are fine: ``ignore`` leaves the first one's table."""
        try:
            DeltaTable.create(
                self.location,
                schema,
                mode="ignore",
                partition_by=[PARTITION_COLUMN],
                configuration=_TABLE_CONFIGURATION,
                storage_options=self._options,
            )
        except (DeltaError, OSError) as exc:
            # A creator in another process may win the first commit, which the loser hears
            # of as a conflict ("protocol changed") rather than as "already exists".
            table = self._load()
            if table is None:
                raise _error("create", self.location, exc) from exc
            return table
        table = self._load()
        if table is None:
            raise TableError(f"the Delta table {self.location} vanished after its creation")
        return table

    def delete_subject(
        self, visitor_ids: Collection[str], user_ids: Collection[str], metadata: Mapping[str, str]
    ) -> int:
        """A Delta delete (no commit when the subject has no row). delta-rs counts the rows
        it deleted; on a table with deletion vectors (not ours, but a client may enable
        them) it may not, and the count is taken from the table before and after."""
        with self._lock:
            table = self._load()
            if table is None:
                return 0
            predicate = " OR ".join(
                f"{column} IN ({', '.join(_literal(i) for i in sorted(ids))})"
                for column, ids in (("visitor_id", visitor_ids), ("user_id", user_ids))
                if ids
            )
            if not predicate:
                return 0
            try:
                before = table.count()
                metrics = table.delete(
                    predicate,
                    commit_properties=CommitProperties(custom_metadata=dict(metadata)),
                )
                deleted = metrics.get("num_deleted_rows")
                return int(deleted) if deleted is not None else before - table.count()
            except (DeltaError, OSError) as exc:
                raise _error("delete from", self.location, exc) from exc

    # ---------------------------------------------------------------------- maintenance

    def partition_files(self, days: Collection[str] | None = None) -> dict[str, int]:
        table = self._load()
        if table is None:
            return {}
        actions = pa.table(table.get_add_actions(flatten=True))
        found = actions.column(f"partition.{PARTITION_COLUMN}").cast(pa.string())
        counts = {
            str(entry["values"]): int(entry["counts"])
            for entry in pc.value_counts(found).to_pylist()
        }
        return counts if days is None else {d: n for d, n in counts.items() if d in days}

    def compact(self, partitions: list[str]) -> None:
        with self._lock:
            table = self._load()
            if table is None:
                return
            try:
                for day in partitions:
                    table.optimize.compact(partition_filters=[(PARTITION_COLUMN, "=", day)])
            except (DeltaError, OSError) as exc:
                raise _error("compact", self.location, exc) from exc

    def checkpoint(self) -> None:
        with self._lock:
            table = self._load()
            if table is not None:
                try:
                    table.create_checkpoint()
                    table.cleanup_metadata()
                except (DeltaError, OSError) as exc:
                    raise _error("checkpoint", self.location, exc) from exc

    def vacuum(self, retention: timedelta) -> int:
        with self._lock:
            table = self._load()
            if table is None:
                return 0
            try:
                removed = table.vacuum(
                    retention_hours=int(retention.total_seconds() // 3600),
                    dry_run=False,
                    enforce_retention_duration=False,
                    full=True,
                )
            except (DeltaError, OSError) as exc:
                raise _error("vacuum", self.location, exc) from exc
            return len(removed)

    def contains(self, identity: str) -> bool:
        table = self._load()
        return table is not None and table.transaction_version(identity) is not None

    # ---------------------------------------------------------------------------- helpers

    def _load(self) -> DeltaTable | None:
        """The table at its latest version (``None`` before its first commit); the state
        read before is brought up to date rather than read again, unless that fails (a
        log that went back, as after a crash mid-commit elsewhere)."""
        if self._table is not None:
            try:
                self._table.update_incremental()
                return self._table
            except (DeltaError, OSError):
                self._table = None  # the log is not what we read before: read it afresh
        try:
            self._table = DeltaTable(self.location, storage_options=self._options)
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as exc:
            raise _error("read", self.location, exc) from exc
        return self._table


def _arrow_schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def _error(action: str, location: str, exc: BaseException) -> TableError:
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:500]
    return TableError(f"could not {action} the Delta table {location}: {text}")


def _literal(text: str) -> str:
    """``text`` as an SQL string literal of delta-rs' predicates."""
    return "'" + text.replace("'", "''") + "'"
