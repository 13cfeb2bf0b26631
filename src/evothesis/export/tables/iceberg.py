"""Apache Iceberg tables through pyiceberg, registered in a catalog the client's engines can
use: a SQL catalog in PostgreSQL (ours by default, or the client's) or a REST catalog.

Exactly once: every append's snapshot carries the delivery identity in its summary, and the
catalog commits a new snapshot only on top of the one the writer read (pyiceberg's own
retry-and-rebase is switched off per table: ``commit.retry.num-retries`` is 0). A writer
that loses the race reloads the table, looks for the identity among its snapshots, and
appends only when it is not there. Snapshots, and so the identities, are kept for the
client's retention; a delivery is retried within its lease (minutes), far inside it.

pyiceberg has no data-file compaction of its own: a crowded partition is compacted by
overwriting it with its own rows (one snapshot that removes its files and adds one), with
the same optimistic commit. Expiring snapshots leaves files behind in pyiceberg, so vacuum
also removes every file under the table's ``data/`` folder that no kept snapshot references
and that is older than the retention (files of crashed writes included).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, Final
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import BooleanExpression, EqualTo, In, Or
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform

from evothesis.errors import TableError
from evothesis.export.tables.core import (
    IDENTITY_KEY,
    TABLE_NAME,
    Appended,
    AppendsInTurn,
    retrying,
)
from evothesis.export.tables.schema import PARTITION_COLUMN, TABLE_SCHEMA, added_columns
from evothesis.objects.buckets import BucketSpec

#: Properties of every table we create.
_TABLE_PROPERTIES: Final = {
    # Our own loop retries after looking for the identity; pyiceberg's would rebase the
    # append blindly and could add a delivery twice.
    "commit.retry.num-retries": "0",
    "write.parquet.compression-codec": "zstd",
}
#: What storage errors of pyarrow and pyiceberg look like.
_FAILURES: Final = (OSError, ValueError, RuntimeError)


def file_io_properties(spec: BucketSpec) -> dict[str, str]:
    """pyiceberg FileIO properties for a bucket's credentials (obstore's names in)."""
    options = spec.options
    names = {
        "s3": {
            "endpoint": "s3.endpoint",
            "region": "s3.region",
            "access_key_id": "s3.access-key-id",
            "secret_access_key": "s3.secret-access-key",
            "session_token": "s3.session-token",
        },
        "az": {
            "account_name": "adls.account-name",
            "account_key": "adls.account-key",
            "sas_key": "adls.sas-token",
        },
    }
    scheme = urlsplit(spec.url).scheme
    mapping = names.get("az" if scheme in ("az", "azure", "abfs", "abfss") else scheme, {})
    properties = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
    properties.update({mapping[k]: v for k, v in options.items() if k in mapping})
    return properties


def catalog_properties(catalog_uri: str) -> dict[str, str]:
    """A SQL catalog for a PostgreSQL URL (its two tables are created by our migrations in
    our database, by pyiceberg in a client's), a REST catalog for an HTTP(S) URL."""
    scheme = urlsplit(catalog_uri).scheme
    if scheme in ("http", "https"):
        return {"type": "rest", "uri": catalog_uri}
    if scheme in ("postgres", "postgresql", "postgresql+psycopg2"):
        rest = catalog_uri.split("://", 1)[1]
        return {"type": "sql", "uri": f"postgresql+psycopg2://{rest}"}
    raise TableError(
        f"unsupported Iceberg catalog URL scheme {scheme!r}: use postgresql:// or http(s)://"
    )


class IcebergEventTable(AppendsInTurn):
    format = "iceberg"

    def __init__(self, catalog_uri: str, spec: BucketSpec, key: str, client_id: str) -> None:
        base = str(spec.local_path / key) if spec.is_local else f"{spec.url.rstrip('/')}/{key}"
        self._location = base if not spec.is_local else f"file://{base}"
        self._namespace = client_id
        self.location = f"{client_id}.{TABLE_NAME}"
        self._catalog_properties = {
            **catalog_properties(catalog_uri),
            **file_io_properties(spec),
            "init_catalog_tables": "true",
        }
        self._catalog: Catalog | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------ writing

    def _append(
        self, rows: pa.Table, identity: str, metadata: Mapping[str, str], held_by: Collection[str]
    ) -> Appended | None:
        table = self._table()
        table_id = str(table.metadata.table_uuid)
        if table_id in held_by or _has_identity(table, identity):
            return Appended(identity, False, 0, _snapshot_id(table), table_id)
        try:
            with table.transaction() as transaction:
                added = added_columns(table.schema().as_arrow(), rows.schema)
                if added:
                    with transaction.update_schema() as update:
                        update.union_by_name(pa.schema(added))
                transaction.append(rows, snapshot_properties={IDENTITY_KEY: identity, **metadata})
        except CommitFailedException:
            return None
        except _FAILURES as exc:
            raise _error("append to", self.location, exc) from exc
        # The transaction's commit brought ``table`` up to the new metadata.
        return Appended(identity, True, rows.num_rows, _snapshot_id(table), table_id)

    def delete_subject(
        self, visitor_ids: Collection[str], user_ids: Collection[str], metadata: Mapping[str, str]
    ) -> int:
        terms: list[BooleanExpression] = [
            In(term=column, literals=set(ids))
            for column, ids in (("visitor_id", visitor_ids), ("user_id", user_ids))
            if ids
        ]
        if not terms:
            return 0
        where = terms[0] if len(terms) == 1 else Or(*terms)
        with self._lock:
            return retrying(f"deleting from {self.location}", lambda: self._delete(where, metadata))

    def _delete(self, where: BooleanExpression, metadata: Mapping[str, str]) -> int | None:
        table = self._table()
        try:
            found: int = table.scan(row_filter=where, selected_fields=("id",)).to_arrow().num_rows
            if found:
                table.delete(where, snapshot_properties=dict(metadata))
        except CommitFailedException:
            return None
        except _FAILURES as exc:
            raise _error("delete from", self.location, exc) from exc
        return found

    # ---------------------------------------------------------------------- maintenance

    def partition_files(self, days: Collection[str] | None = None) -> dict[str, int]:
        """Every partition's from the table's file listing; only ``days``' from the files a
        scan of those days plans, which reads only the manifests that may hold them (the
        listing reads every manifest, one more per append)."""
        table = self._table()
        if table.current_snapshot() is None:
            return {}
        if days is not None:
            if not days:
                return {}
            tasks = table.scan(
                row_filter=In(term=PARTITION_COLUMN, literals=set(days))
            ).plan_files()
            epoch = date(1970, 1, 1)
            planned = Counter(
                (epoch + timedelta(days=task.file.partition[0])).isoformat() for task in tasks
            )
            return dict(planned)
        files = table.inspect.files()
        found = pc.struct_field(files.column("partition"), PARTITION_COLUMN).cast(pa.string())
        return {
            str(entry["values"]): int(entry["counts"])
            for entry in pc.value_counts(found).to_pylist()
        }

    def compact(self, partitions: list[str]) -> None:
        with self._lock:
            for day in partitions:
                retrying(f"compacting {self.location}", partial(self._compact, day))

    def _compact(self, day: str) -> bool | None:
        table = self._table()
        where = EqualTo(term=PARTITION_COLUMN, value=day)
        try:
            rows = table.scan(row_filter=where).to_arrow()
            table.overwrite(
                rows, overwrite_filter=where, snapshot_properties={"evothesis.operation": "compact"}
            )
        except CommitFailedException:
            return None
        except _FAILURES as exc:
            raise _error("compact", self.location, exc) from exc
        return True

    def checkpoint(self) -> None:
        """Nothing to do: every Iceberg commit already writes the whole table metadata."""

    def vacuum(self, retention: timedelta) -> int:
        with self._lock:
            table = self._table()
            cutoff = datetime.now(UTC) - retention
            try:
                if table.current_snapshot() is not None:
                    table.maintenance.expire_snapshots().older_than(cutoff).commit()
                    table = table.refresh()
                return _remove_unreferenced(table, cutoff)
            except CommitFailedException:
                return 0  # someone committed meanwhile: the next pass expires them
            except _FAILURES as exc:
                raise _error("vacuum", self.location, exc) from exc

    def contains(self, identity: str) -> bool:
        with self._lock:
            return _has_identity(self._table(), identity)

    # ---------------------------------------------------------------------------- helpers

    def _table(self) -> Table:
        """The table as the catalog has it now, created (with its namespace) if missing."""
        try:
            if self._catalog is None:
                self._catalog = load_catalog("evothesis", **self._catalog_properties)
            catalog = self._catalog
            identifier = (self._namespace, TABLE_NAME)
            try:
                return catalog.load_table(identifier)
            except NoSuchTableError:
                pass
            try:
                catalog.create_namespace_if_not_exists(self._namespace)
            except Exception:
                # Another writer created it between the check and the insert: the SQL
                # catalog reports that as its driver's unique violation.
                if not catalog.namespace_exists(self._namespace):
                    raise
            try:
                return catalog.create_table(
                    identifier,
                    schema=_iceberg_schema(),
                    location=self._location,
                    partition_spec=_partition_spec(),
                    properties=_TABLE_PROPERTIES,
                )
            except TableAlreadyExistsError:
                return catalog.load_table(identifier)
        except TableError:
            raise
        except Exception as exc:  # the catalog's driver and HTTP errors are many
            raise _error("open", self.location, exc) from exc


def _iceberg_schema() -> Schema:
    schema: Schema = Catalog._convert_schema_if_needed(TABLE_SCHEMA)
    return schema


def _partition_spec() -> PartitionSpec:
    source = _iceberg_schema().find_field(PARTITION_COLUMN).field_id
    return PartitionSpec(
        PartitionField(
            source_id=source, field_id=1000, transform=IdentityTransform(), name=PARTITION_COLUMN
        )
    )


def _has_identity(table: Table, identity: str) -> bool:
    return any(s.summary and s.summary.get(IDENTITY_KEY) == identity for s in table.snapshots())


def _snapshot_id(table: Table) -> int:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else 0


def _remove_unreferenced(table: Table, cutoff: datetime) -> int:
    """Delete data files under the table's ``data/`` folder that no snapshot references and
    that were last written before ``cutoff``."""
    referenced: set[str] = set()
    if table.current_snapshot() is not None:
        referenced = {_path(p) for p in table.inspect.all_files().column("file_path").to_pylist()}
    filesystem, root = _filesystem(table, f"{table.location().rstrip('/')}/data")
    try:
        found = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
    except FileNotFoundError:
        return 0
    stale = [
        info.path
        for info in found
        if info.type == pafs.FileType.File
        and _path(info.path) not in referenced
        and info.mtime is not None
        and info.mtime.replace(tzinfo=info.mtime.tzinfo or UTC) < cutoff
    ]
    for path in stale:
        filesystem.delete_file(path)
    return len(stale)


def _filesystem(table: Table, location: str) -> tuple[pafs.FileSystem, str]:
    io: Any = table.io
    scheme, netloc, path = io.parse_location(location)
    return io.fs_by_scheme(scheme, netloc), path


def _path(uri: str) -> str:
    """A file's URI or path, as the filesystem lists it (``bucket/key`` or ``/folder``)."""
    parts = urlsplit(uri)
    return f"{parts.netloc}{parts.path}" if parts.scheme not in ("", "file") else parts.path


def _error(action: str, location: str, exc: BaseException) -> TableError:
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:500]
    return TableError(f"could not {action} the Iceberg table {location}: {text}")
