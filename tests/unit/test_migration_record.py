"""What lets ``serve`` start while PostgreSQL is down: the data folder's record of having
migrated that database to this version, and telling "nobody answers" from "refused"."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from evothesis.storage.migrate import (
    MIGRATED_FILE_NAME,
    head_revision,
    migrated_before,
    record_migration,
)
from evothesis.storage.pool import database_unreachable

URL = "postgresql://evothesis:s3cret@db.internal:5432/evothesis?sslmode=require"


def test_a_recorded_database_is_recognised_whatever_its_password(tmp_path: Path) -> None:
    assert not migrated_before(URL, tmp_path)
    record_migration(URL, tmp_path)
    assert migrated_before(URL, tmp_path)
    assert migrated_before(URL.replace("s3cret", "rotated"), tmp_path)
    assert b"s3cret" not in (tmp_path / MIGRATED_FILE_NAME).read_bytes()


@pytest.mark.parametrize(
    "other",
    [
        URL.replace("/evothesis?", "/other?"),
        URL.replace("db.internal", "db2.internal"),
        URL.replace(":5432", ":5433"),
        URL.replace("evothesis:s3cret@", "admin:s3cret@"),
    ],
)
def test_another_database_is_not_recognised(tmp_path: Path, other: str) -> None:
    record_migration(URL, tmp_path)
    assert not migrated_before(other, tmp_path)


def test_a_record_of_an_older_version_or_an_unreadable_one_says_no(tmp_path: Path) -> None:
    record_migration(URL, tmp_path)
    record = tmp_path / MIGRATED_FILE_NAME
    record.write_bytes(record.read_bytes().replace(head_revision().encode(), b"0001"))
    assert not migrated_before(URL, tmp_path)
    record.write_bytes(b"{not json")
    assert not migrated_before(URL, tmp_path)


def _raised_from(cause: BaseException) -> BaseException:
    """``cause`` wrapped the way SQLAlchemy and Alembic wrap the driver's errors."""
    try:
        try:
            raise cause
        except BaseException as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (FileNotFoundError(2, "No such file or directory"), True),
        (TimeoutError(), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.TooManyConnectionsError("sorry, too many clients already"), True),
        (asyncpg.InvalidPasswordError("password authentication failed"), False),
        (asyncpg.InvalidCatalogNameError('database "nope" does not exist'), False),
        (ValueError("DATABASE_URL is not a URL"), False),
    ],
)
def test_nobody_answering_is_told_from_a_refusal(error: BaseException, unreachable: bool) -> None:
    assert database_unreachable(error) is unreachable
    assert database_unreachable(_raised_from(error)) is unreachable
