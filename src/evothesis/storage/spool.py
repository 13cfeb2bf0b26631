"""The disk spool: where accepted events wait, durably, while PostgreSQL is unreachable.

A flush that cannot reach the database is appended here as one record and fsync'ed before
its requests are answered (202), so "accepted" still means "on disk". A replayer drains the
spool into PostgreSQL once it answers again; event ids make a replay idempotent, so a crash
mid-replay only means some records are applied twice, which the database absorbs.

Layout: ``SPOOL_DIR/<owner>/segment-<n>.spool``, one folder per collector process, held
with an exclusive ``flock`` while the process lives. A folder whose lock is free belongs to
a process that died; any live process adopts and drains it. The record format, and how a
segment is read back around damage, is ``spool_format``'s.

Damage costs only the damaged bytes: every intact record of a segment is replayed, and
each damaged range (a torn tail, flipped bytes anywhere in a record, garbage between
records) is moved to ``SPOOL_DIR/quarantine/`` as a file of its own, counted and logged
without its content, never half-applied. ``evothesis spool`` inspects the quarantine and
replays what can still be recovered from it.

Folders are created 0700 and files 0600 whatever the umask: the spool holds events as
collected, personal data included.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import socket
import threading
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from evothesis.domain import AuditRecord, EventRow, FailedEvent
from evothesis.errors import StorageUnavailable
from evothesis.storage.spool_format import (
    Damage,
    DamagedRange,
    DecodedSegment,
    SpoolRecord,
    decode_segment,
    encode_record,
)

__all__ = [
    "QUARANTINE",
    "Backlog",
    "Quarantine",
    "QuarantinedFile",
    "Spool",
    "SpoolFull",
    "SpoolStatus",
    "backlog",
]

logger = logging.getLogger("evothesis.spool")

#: A segment is closed and a new one started past this size, so drained data is freed
#: segment by segment instead of waiting for one ever-growing file.
SEGMENT_BYTES: Final = 8 * 1024 * 1024
QUARANTINE: Final = "quarantine"
FOLDER_MODE: Final = 0o700
FILE_MODE: Final = 0o600


class SpoolFull(StorageUnavailable):
    """The database is unreachable and the disk spool is full; retry later."""

    code = "spool_full"


# ------------------------------------------------------------------------------ files


def _private_folder(path: Path) -> None:
    """Create ``path`` (if needed) readable by its owner only, whatever the umask."""
    path.mkdir(mode=FOLDER_MODE, exist_ok=True)
    os.chmod(path, FOLDER_MODE)


def _private_root(root: Path) -> None:
    """``SPOOL_DIR``, owner-only when this process owns it. One that an operator made for
    another user (group-writable for the collector's group, say) is left as it is: what
    the collector creates inside is owner-only all the same."""
    root.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    try:
        os.chmod(root, FOLDER_MODE)
    except PermissionError:
        logger.warning("Spool folder %s belongs to another user; its mode is left alone", root)


def _private_file(path: Path) -> int:
    """A new file at ``path``, readable by its owner only, open for writing."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    os.fchmod(descriptor, FILE_MODE)
    return descriptor


def _sync_folder(path: Path) -> None:
    """Make the names created in ``path`` survive a crash."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("segment-*.spool"))


def _owner_folders(root: Path) -> list[Path]:
    """The collectors' folders under ``root``: this process's, live ones', dead ones'."""
    return sorted(
        path
        for path in root.iterdir()
        if path.is_dir() and path.name != QUARANTINE and not path.name.startswith(".")
    )


def _lock(path: Path) -> int | None:
    """An exclusive flock on ``path``, or ``None`` when another process holds it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits in a spool folder for replay, read without taking part in it."""

    folders: int
    segments: int
    bytes: int


def backlog(root: Path) -> Backlog:
    """The segments waiting under ``root``, whichever collector wrote them (none when no
    collector has made the folder yet)."""
    folders = _owner_folders(root) if root.is_dir() else []
    segments = [path for folder in folders for path in _segments(folder)]
    return Backlog(
        folders=len(folders),
        segments=len(segments),
        bytes=sum(path.stat().st_size for path in segments),
    )


# ------------------------------------------------------------------------- quarantine

#: ``<owner>.<segment-n>.<offset>-<end>.<reason>.bad``: where the bytes were and why they
#: are here (an owner may hold dots: host names do).
_NAME: Final = re.compile(
    r"(?P<owner>.+)\.(?P<segment>segment-\d+)\.(?P<offset>\d+)-(?P<end>\d+)"
    rf"\.(?P<reason>{'|'.join(re.escape(reason) for reason in Damage)})\.bad"
)
#: ``<owner>-<segment-n>.spool-<offset>.bad``: a segment's whole tail from its first bad
#: record on, as versions before per-record resynchronisation quarantined it.
_LEGACY_NAME: Final = re.compile(
    r"(?P<owner>.+)-(?P<segment>segment-\d+)\.spool-(?P<offset>\d+)\.bad"
)


@dataclass(frozen=True, slots=True)
class QuarantinedFile:
    """One file of the quarantine and what its name says of its origin."""

    path: Path
    size: int
    #: The spool folder and segment file the bytes came from, and where in that segment.
    owner: str | None
    segment: str | None
    offset: int | None
    #: ``None`` when the name does not tell (quarantined by an earlier version).
    reason: Damage | None

    @property
    def origin(self) -> str:
        if self.owner is None or self.segment is None:
            return "unknown"
        return f"{self.owner}/{self.segment}@{self.offset}"

    def read(self) -> DecodedSegment:
        """The records that can be recovered from the file, and what stays damaged."""
        return decode_segment(self.path.read_bytes())


class Quarantine:
    """``SPOOL_DIR/quarantine/``: each damaged range of a segment as a file of its own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, segment: Path, damage: DamagedRange, data: bytes) -> Path | None:
        """Keep ``data`` (the damaged bytes of ``segment``) durably under a name that says
        where they were and why; ``None`` when an earlier pass over the same segment (a
        replay interrupted before the segment was deleted) already did."""
        name = (
            f"{segment.parent.name}.{segment.stem}.{damage.offset}-{damage.end}.{damage.reason}.bad"
        )
        target = self.folder / name
        if target.exists():
            return None
        _private_folder(self.folder)
        partial = self.folder / f".{name}.partial"
        partial.unlink(missing_ok=True)
        with os.fdopen(_private_file(partial), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        partial.rename(target)
        _sync_folder(self.folder)
        return target

    def files(self) -> list[QuarantinedFile]:
        """Every quarantined file, in name order (by spool folder, then segment)."""
        if not self.folder.is_dir():
            return []
        return [_describe(path) for path in sorted(self.folder.glob("*.bad"))]

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        _sync_folder(self.folder)


def _describe(path: Path) -> QuarantinedFile:
    size = path.stat().st_size
    for pattern in (_NAME, _LEGACY_NAME):
        match = pattern.fullmatch(path.name)
        if match is not None:
            reason = match.groupdict().get("reason")
            return QuarantinedFile(
                path,
                size,
                owner=match["owner"],
                segment=f"{match['segment']}.spool",
                offset=int(match["offset"]),
                reason=Damage(reason) if reason is not None else None,
            )
    return QuarantinedFile(path, size, owner=None, segment=None, offset=None, reason=None)


# ------------------------------------------------------------------------------ spool


@dataclass(frozen=True, slots=True)
class SpoolStatus:
    """What ``/health`` and ``/metrics`` show of the spool."""

    full: bool
    segments: int
    bytes: int
    max_bytes: int
    #: Damaged ranges this process moved to the quarantine.
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
        _private_root(root)
        self.quarantine = Quarantine(root / QUARANTINE)
        owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Locked under a hidden name first, then renamed into view, so no other process
        # can take the new folder for a dead one's in between.
        hidden = root / f".{owner}"
        hidden.mkdir(mode=FOLDER_MODE)
        os.chmod(hidden, FOLDER_MODE)
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
        os.close(_private_file(self._active))
        _sync_folder(self.folder)  # the new name itself must survive a crash

    # -------------------------------------------------------------- reading

    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self._all_segments())

    def _all_segments(self) -> list[Path]:
        return [path for folder in _owner_folders(self.root) for path in _segments(folder)]

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
        for folder in _owner_folders(self.root):
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

    def read(self, segment: Path) -> list[SpoolRecord]:
        """The segment's intact records, in order; its damaged ranges are quarantined (and
        fsync'ed there before the segment can be deleted), counted and logged.

        Blocking: call it from a worker thread.
        """
        data = segment.read_bytes()
        decoded = decode_segment(data)
        for damage in decoded.damaged:
            target = self.quarantine.put(segment, damage, data[damage.offset : damage.end])
            if target is None:
                continue  # set aside by an interrupted pass over this segment: counted then
            self.quarantined += 1
            # Where and why, never what: the bytes may hold personal data.
            logger.error(
                "Spool segment %s: %d bytes at byte %d are %s; moved to %s (the segment's "
                "%d intact records are replayed)",
                segment,
                damage.length,
                damage.offset,
                damage.reason,
                target,
                len(decoded.records),
            )
        return [intact.record for intact in decoded.records]

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
