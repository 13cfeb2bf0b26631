"""Reading a client's table back with engines that are not ours: delta-rs, pyiceberg, Arrow
datasets over the table's current Parquet files, and DuckDB's core through Arrow (its delta
and iceberg extensions are downloads, which tests never make)."""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from deltalake import DeltaTable
from pyiceberg.catalog import load_catalog
from pyiceberg.table import Table

from evothesis.export.keys import table_key
from tests.support.s3 import ACCESS_KEY, REGION, S3, SECRET_KEY

READERS = ("native", "arrow_dataset", "duckdb")


def delta_table(s3: S3, bucket: str, client_id: str, version: int | None = None) -> DeltaTable:
    options = {
        "endpoint": s3.endpoint,
        "region": REGION,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "allow_http": "true",
    }
    uri = f"s3://{bucket}/{table_key(client_id, 'delta')}"
    return DeltaTable(uri, version=version, storage_options=options)


def iceberg_table(s3: S3, database_url: str, client_id: str) -> Table:
    catalog = load_catalog(
        "evothesis",
        type="sql",
        uri=database_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        **{
            "s3.endpoint": s3.endpoint,
            "s3.region": REGION,
            "s3.access-key-id": ACCESS_KEY,
            "s3.secret-access-key": SECRET_KEY,
        },
    )
    return catalog.load_table((client_id, "events"))


def _s3_filesystem(s3: S3) -> pafs.S3FileSystem:
    host = s3.endpoint.split("://", 1)[1]
    return pafs.S3FileSystem(
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region=REGION,
        endpoint_override=host,
        scheme="http",
    )


def _without_scheme(uri: str) -> str:
    return uri.split("://", 1)[1]


def dataset(s3: S3, fmt: str, bucket: str, client_id: str, database_url: str) -> ds.Dataset:
    """An Arrow dataset over exactly the Parquet files of the table's current version, as
    the table's log or manifests list them. Delta keeps the partition column in the paths
    only (``event_date=YYYY-MM-DD/``, read as Hive partitioning); Iceberg in the files too."""
    if fmt == "delta":
        files = delta_table(s3, bucket, client_id).file_uris()
        return ds.dataset(
            [_without_scheme(f) for f in files],
            format="parquet",
            filesystem=_s3_filesystem(s3),
            partitioning=ds.partitioning(
                pa.schema([pa.field("event_date", pa.date32())]), flavor="hive"
            ),
            partition_base_dir=f"{bucket}/{table_key(client_id, fmt)}",
        )
    table = iceberg_table(s3, database_url, client_id)
    files = table.inspect.files().column("file_path").to_pylist() if table.snapshots() else []
    return ds.dataset(
        [_without_scheme(f) for f in files], format="parquet", filesystem=_s3_filesystem(s3)
    )


def read_table(
    s3: S3, fmt: str, bucket: str, client_id: str, database_url: str, reader: str
) -> pa.Table:
    """The table's current rows through one reader: ``native`` (deltalake / pyiceberg),
    ``arrow_dataset`` or ``duckdb``."""
    if reader == "native":
        if fmt == "delta":
            return delta_table(s3, bucket, client_id).to_pyarrow_table()
        return iceberg_table(s3, database_url, client_id).scan().to_arrow()
    data = dataset(s3, fmt, bucket, client_id, database_url)
    if reader == "arrow_dataset":
        return data.to_table()
    connection = duckdb.connect()
    connection.register("events", data)
    result: pa.Table = connection.sql("SELECT * FROM events").to_arrow_table()
    return result


def event_ids(table: pa.Table) -> list[Any]:
    return table.column("event_id").to_pylist()
