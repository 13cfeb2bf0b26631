"""The disk spool: where accepted events wait, durably, while PostgreSQL is unreachable.

A flush that cannot reach the database is appended here as one record and fsync'ed before
its requests are answered (202), so "accepted" still means "on disk". A replayer drains the
spool into PostgreSQL once it answers again; event ids make a replay idempotent, so a crash
mid-replay only means some records are applied twice, which the database absorbs.

Layout: ``SPOOL_DIR/<owner>/segment-<n>.spool``, one folder per collector process, held
with an exclusive ``flock`` while the process lives. A folder whose lock is free belongs to
a process that died; any live process adopts and drains it. Records are::

    magic "EVS1" | payload length (u32 LE) | CRC-32 of payload (u32 LE) | payload

with an orjson payload of the flush's rows, audit records and failed events. A record
that is torn (the process died mid-write, before anything was acknowledged) or corrupt is
moved to ``SPOOL_DIR/quarantine/`` and reported, never half-applied.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import struct
import threading
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import orjson

from evothesis.domain import AuditRecord, EventRow, FailedEvent
from evothesis.errors import StorageUnavailable

__all__ = ["Spool", "SpoolFull", "SpoolRecord", "decode_records", "encode_record"]

logger = logging.getLogger("evothesis.spool")

MAGIC: Final = b"EVS1"
HEADER: Final = struct.Struct("<4sII")
#: A segment is closed and a new one started past this size, so drained data is freed
#: segment by segment instead of waiting for one ever-growing file.
SEGMENT_BYTES: Final = 8 * 1024 * 1024
QUARANTINE: Final = "quarantine"
_ROW_TIMES: Final = (6, 13)  # EventRow.timestamp, EventRow.created_at
_AUDIT_TIMES: Final = (0,)  # AuditRecord.recorded_at
_FAILED_TIMES: Final = (8,)  # FailedEvent.received_at


class SpoolFull(StorageUnavailable):
    """The database is unreachable and the disk spool is full; retry later."""

    code = "spool_full"


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One spooled flush."""

    rows: list[EventRow]
    audits: list[AuditRecord]
    failed: list[FailedEvent]


class CorruptRecord(ValueError):
    """A record whose header, length or checksum does not hold."""


# ------------------------------------------------------------------------------ codec


def encode_record(
    rows: Sequence[EventRow], audits: Sequence[AuditRecord], failed: Sequence[FailedEvent] = ()
) -> bytes:
    payload = orjson.dumps(
        {
            "rows": [list(r) for r in rows],
            "audits": [list(a) for a in audits],
            "failed": [list(f) for f in failed],
        }
    )
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _revive(values: list[Any], times: tuple[int, ...]) -> list[Any]:
    for index in times:
        values[index] = datetime.fromisoformat(values[index])
    return values


def decode_payload(payload: bytes) -> SpoolRecord:
    document = orjson.loads(payload)
    return SpoolRecord(
        rows=[EventRow(*_revive(values, _ROW_TIMES)) for values in document["rows"]],
        audits=[AuditRecord(*_revive(values, _AUDIT_TIMES)) for values in document["audits"]],
        # Records spooled before failed events existed have none.
        failed=[
            FailedEvent(*_revive(values, _FAILED_TIMES)) for values in document.get("failed", ())
        ],
    )


def decode_records(data: bytes) -> Iterator[tuple[int, SpoolRecord]]:
    """``(offset, record)`` for each record of a segment, in order.

    Raises ``CorruptRecord`` carrying the offset of the first record that does not hold;
    everything before it was yielded intact.
    """
    offset = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            raise CorruptRecord(offset, "torn header")
        magic, length, checksum = HEADER.unpack_from(data, offset)
        if magic != MAGIC:
            raise CorruptRecord(offset, "bad magic")
        start = offset + HEADER.size
        payload = data[start : start + length]
        if len(payload) < length:
            raise CorruptRecord(offset, "torn payload")
        if zlib.crc32(payload) != checksum:
            raise CorruptRecord(offset, "checksum mismatch")
        try:
            record = decode_payload(payload)
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptRecord(offset, f"undecodable payload: {exc}") from None
        yield offset, record
        offset = start + length


# ------------------------------------------------------------------------------ files


def _segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("segment-*.spool"))


def _lock(path: Path) -> int | None:
    """An exclusive flock on ``path``, or ``None`` when another process holds it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


@dataclass(frozen=True, slots=True)
class SpoolStatus:
    """What ``/health`` and ``/metrics`` show of the spool."""

    full: bool
    segments: int
    bytes: int
    max_bytes: int
    quarantined: int
    replayed_rows: int

    def as_dict(self) -> dict[str, int | bool]:
        return asdict(self)


class Spool:
    """This process's spool folder, plus adoption of folders left by dead processes."""

    def __init__(self, root: Path, *, max_bytes: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        root.mkdir(parents=True, exist_ok=True)
        owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Locked under a hidden name first, then renamed into view, so no other process
        # can take the new folder for a dead one's in between.
        hidden = root / f".{owner}"
        hidden.mkdir()
        descriptor = _lock(hidden / "lock")
        assert descriptor is not None  # a fresh folder nobody else knows
        self.folder = root / owner
        hidden.rename(self.folder)
        self._lock_fd = descriptor
        self._mutex = threading.Lock()
        self._active: Path | None = None
        self._active_size = 0
        self._next_segment = 0
        self._adopted: dict[Path, int] = {}
        self.quarantined = 0
        self.replayed_rows = 0
        #: The last append was refused for lack of room (cleared once room is made).
        self.full = False

    # -------------------------------------------------------------- writing (a thread)

    def append(
        self,
        rows: Sequence[EventRow],
        audits: Sequence[AuditRecord],
        failed: Sequence[FailedEvent] = (),
    ) -> None:
        """Append one flush and fsync it; raise ``SpoolFull`` past ``max_bytes``.

        Blocking: call it from a worker thread (``asyncio.to_thread``).
        """
        record = encode_record(rows, audits, failed)
        with self._mutex:
            if self.size_bytes() + len(record) > self.max_bytes:
                self.full = True
                raise SpoolFull(
                    f"the database is unreachable and the disk spool is full "
                    f"({self.max_bytes} bytes)"
                )
            if self._active is None or self._active_size >= self._segment_bytes:
                self._start_segment()
            assert self._active is not None
            with self._active.open("ab") as handle:
                handle.write(record)
                handle.flush()
                os.fsync(handle.fileno())
            self._active_size += len(record)
            self.full = False

    def _start_segment(self) -> None:
        self._next_segment += 1
        self._active = self.folder / f"segment-{self._next_segment:012d}.spool"
        self._active_size = 0
        descriptor = os.open(self.folder, os.O_RDONLY)
        try:
            self._active.touch()
            os.fsync(descriptor)  # the new name itself must survive a crash
        finally:
            os.close(descriptor)

    # -------------------------------------------------------------- reading

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self._all_segments())

    def _all_segments(self) -> list[Path]:
        return [path for folder in self._folders() for path in _segments(folder)]

    def _folders(self) -> list[Path]:
        return sorted(
            path
            for path in self.root.iterdir()
            if path.is_dir() and path.name != QUARANTINE and not path.name.startswith(".")
        )

    def has_backlog(self) -> bool:
        return bool(self._all_segments())

    def status(self) -> SpoolStatus:
        """Reads the folder: call it from a thread on the event loop's behalf."""
        segments = self._all_segments()
        return SpoolStatus(
            full=self.full,
            segments=len(segments),
            bytes=sum(path.stat().st_size for path in segments),
            max_bytes=self.max_bytes,
            quarantined=self.quarantined,
            replayed_rows=self.replayed_rows,
        )

    def claim_backlog(self) -> list[Path]:
        """Segments ready to replay: this process's closed ones (the active one is closed
        first) and every segment of folders whose owner died. An adopted folder's lock is
        held until ``release_adopted``, so two survivors never replay the same folder."""
        ready: list[Path] = []
        with self._mutex:
            if self._active is not None and self._active_size:
                self._active = None  # the next append starts a new segment
            ready += _segments(self.folder)
        for folder in self._folders():
            if folder == self.folder or folder in self._adopted:
                ready += _segments(folder) if folder in self._adopted else []
                continue
            descriptor = _lock(folder / "lock")
            if descriptor is None:
                continue  # a live process: it replays its own
            segments = _segments(folder)
            if not segments:  # a process that died with nothing spooled
                shutil.rmtree(folder, ignore_errors=True)
                os.close(descriptor)
                continue
            self._adopted[folder] = descriptor
            ready += segments
        return ready

    def release_adopted(self) -> None:
        """Let go of adopted folders after a replay pass (drained ones are already gone)."""
        for descriptor in self._adopted.values():
            os.close(descriptor)
        self._adopted.clear()

    def read(self, segment: Path) -> Iterator[SpoolRecord]:
        """The segment's intact records; a corrupt tail is quarantined and reported."""
        data = segment.read_bytes()
        try:
            for _, record in decode_records(data):
                yield record
        except CorruptRecord as exc:
            offset, reason = exc.args
            self._quarantine(segment, data[offset:], offset, reason)

    def _quarantine(self, segment: Path, data: bytes, offset: int, reason: str) -> None:
        folder = self.root / QUARANTINE
        folder.mkdir(exist_ok=True)
        target = folder / f"{segment.parent.name}-{segment.name}-{offset}.bad"
        target.write_bytes(data)
        self.quarantined += 1
        logger.error(
            "Spool record in %s at byte %d is %s; %d bytes moved to %s",
            segment,
            offset,
            reason,
            len(data),
            target,
        )

    def done(self, segment: Path) -> None:
        """The segment is fully replayed: delete it (and its folder when it was adopted)."""
        segment.unlink(missing_ok=True)
        self.full = False
        folder = segment.parent
        if folder in self._adopted and not _segments(folder):
            shutil.rmtree(folder, ignore_errors=True)
            os.close(self._adopted.pop(folder))

    def close(self) -> None:
        """Release the folder; an empty one is removed, a full one waits for adoption."""
        self.release_adopted()
        with self._mutex:
            if not _segments(self.folder):
                shutil.rmtree(self.folder, ignore_errors=True)
            os.close(self._lock_fd)
