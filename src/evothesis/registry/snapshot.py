"""The registry snapshot: the last answers a collector was given, kept on its local disk.

A collector starting while the registry is unreachable (PostgreSQL down for the registry
in this database, pixel management down for a remote one) has nothing cached and would
refuse every event. The snapshot keeps the positive answers (host → client, with its IP
salt and write-key digest) in ``EVOTHESIS_DATA_DIR/registry-snapshot``, so that a
restarted collector still attributes the sites it knew, and spools their events:

* **Sealed** with the box that seals client secrets at rest (Fernet: AES-CBC with an
  HMAC), so the secrets on disk are as protected as in the database, and a file that was
  tampered with, truncated or sealed with another key is refused, never trusted.
* **Trusted for** ``max_age`` seconds after the registry last confirmed an answer, by the
  wall clock (the cache's TTL plus ``REGISTRY_STALE_TTL``: the window in which a running
  collector serves the same answer stale). An answer dated in the future is not trusted.
* **Read at start-up** into the cache as stale-only answers (``CachedDirectory.seed``):
  the registry is asked first; the snapshot only answers while it cannot.
* **Written** off the event loop, atomically (temporary file, fsync, rename; mode 0600),
  when answers changed (at most every ``min_interval``) and, to keep confirmation times
  recent, every ``refresh_interval`` while lookups confirm them; never per lookup. A fresh
  "no active client" (client deactivated, domain removed) takes the host out, and the
  removal is kept in the file as long as the answer it overrides would have been trusted.
* **Shared** by the processes of one data folder (``serve --workers N``): a write merges,
  under a file lock, what the file holds with what this process knows; for each host the
  most recent word wins, answer or removal.

A change to the registry made through this process (``forgotten``) empties the snapshot
at the next write: any answer may be outdated, and hosts still in use come back with their
next lookup.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

import orjson

from evothesis.domain import ClientConfig
from evothesis.errors import RegistryUnavailable, SecretKeyError, SnapshotRefused
from evothesis.registry.http import client_config_from_json, client_config_json
from evothesis.registry.secrets import SecretBox

__all__ = [
    "SNAPSHOT_FILE_NAME",
    "SnapshotAnswer",
    "SnapshotContents",
    "SnapshotKeeper",
    "open_snapshot",
    "read_snapshot",
    "seal_snapshot",
]

logger = logging.getLogger("evothesis.registry")

V = TypeVar("V")

SNAPSHOT_FILE_NAME: Final = "registry-snapshot"
#: Version of the sealed document; another version is refused like a damaged file.
FORMAT: Final = 1
#: Answers and removals kept at most (the cache's own bound): a flood of made-up subdomains
#: of a wildcard client must not grow the file without end. The oldest go first.
MAX_ENTRIES: Final = 100_000
#: Changed answers are written at most this often (seconds)...
MIN_INTERVAL: Final = 5.0
#: ...and answers that lookups merely confirmed, this often, so their dates stay recent.
REFRESH_INTERVAL: Final = 300.0
#: How often the writer checks whether a write is due (seconds).
TICK: Final = 1.0


@dataclass(frozen=True, slots=True)
class SnapshotAnswer:
    """A host's client as the registry gave it, and when (wall clock, epoch seconds)."""

    client: ClientConfig
    confirmed_at: float


@dataclass(slots=True)
class SnapshotContents:
    """What a snapshot file holds: answers, and when hosts stopped having a client."""

    answers: dict[str, SnapshotAnswer] = field(default_factory=dict)
    removed: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------ the file


def seal_snapshot(contents: SnapshotContents, box: SecretBox) -> bytes:
    document = {
        "format": FORMAT,
        "answers": [
            {
                "host": host,
                "confirmed_at": answer.confirmed_at,
                "client": client_config_json(answer.client),
            }
            for host, answer in contents.answers.items()
        ],
        "removed": contents.removed,
    }
    return box.seal(orjson.dumps(document))


def open_snapshot(token: bytes, box: SecretBox) -> SnapshotContents:
    """The contents of a sealed snapshot; ``SnapshotRefused`` unless it is whole, unaltered
    and sealed with one of the configured keys."""
    try:
        # Base64 decoding ignores what follows the padding, and the seal covers the token
        # only: a file with anything more is not the file that was written.
        whole = base64.urlsafe_b64encode(base64.urlsafe_b64decode(token)) == token
        plaintext = box.open(token) if whole else None
    except (SecretKeyError, binascii.Error):
        plaintext = None
    if plaintext is None:
        raise SnapshotRefused(
            "it does not open with EVOTHESIS_SECRET_KEY: altered, truncated, or sealed with "
            "another key"
        )
    try:
        # Sealed by us, yet maybe not a snapshot: another secret sealed with the same key.
        document = orjson.loads(plaintext)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise SnapshotRefused("it is not a registry snapshot of this version")
        answers = {
            str(item["host"]): SnapshotAnswer(
                client_config_from_json(item["client"]), float(item["confirmed_at"])
            )
            for item in document["answers"]
        }
        removed = {str(host): float(at) for host, at in document["removed"].items()}
    except (KeyError, TypeError, ValueError, AttributeError, RegistryUnavailable) as exc:
        raise SnapshotRefused(f"its contents are not a registry snapshot: {exc!r}") from None
    return SnapshotContents(answers, removed)


def read_snapshot(path: Path, box: SecretBox) -> SnapshotContents:
    """Open the snapshot at ``path``; ``FileNotFoundError`` when there is none."""
    return open_snapshot(path.read_bytes(), box)


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole:
    a temporary file, fsync'ed, renamed over it, the folder fsync'ed; readable by the owner
    only, as the secrets in it are."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # a leftover temporary file keeps its old mode
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the snapshot's lock file: one read-merge-write at a time per data folder."""
    descriptor = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------- the keeper


class SnapshotKeeper:
    """Keeps a ``CachedDirectory``'s answers in the snapshot file (its ``AnswerListener``),
    and reads them back at start-up (``load``)."""

    def __init__(
        self,
        folder: Path,
        box: SecretBox,
        *,
        max_age: float,
        min_interval: float = MIN_INTERVAL,
        refresh_interval: float = REFRESH_INTERVAL,
        tick: float = TICK,
        max_entries: int = MAX_ENTRIES,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = folder / SNAPSHOT_FILE_NAME
        self._box = box
        self._max_age = max_age
        self._min_interval = min_interval
        self._refresh_interval = refresh_interval
        self._tick = tick
        self._max_entries = max_entries
        self._wall = wall
        self._monotonic = monotonic
        #: What the registry told this process, and the removals it learned, by host.
        self._answers: dict[str, SnapshotAnswer] = {}
        self._removed: dict[str, float] = {}
        #: Hosts with an answer in the file as last read or written: only their removal
        #: needs recording (an unknown host never asked about needs none).
        self._on_file: frozenset[str] = frozenset()
        #: The next write replaces the file instead of merging with it.
        self._reset = False
        self._due: float | None = None
        self._last_write = -math.inf

    # ------------------------------------------------------------------ start-up

    def load(self) -> list[tuple[str, ClientConfig, float]]:
        """``(host, client, age in seconds)`` of each answer the file holds that is still
        trusted; nothing when there is no file or it cannot be trusted (logged). Blocking:
        call it off the event loop."""
        try:
            contents = read_snapshot(self.path, self._box)
        except FileNotFoundError:
            logger.info("No registry snapshot at %s yet", self.path)
            return []
        except (SnapshotRefused, OSError) as exc:
            logger.warning("Registry snapshot %s refused (%s); starting without it", self.path, exc)
            return []
        self._on_file = frozenset(contents.answers)
        now = self._wall()
        kept = [
            (host, answer.client, now - answer.confirmed_at)
            for host, answer in contents.answers.items()
            if self._trusted(answer.confirmed_at, now)
        ]
        logger.info(
            "Registry snapshot: %d of %d answers from %s kept for registry outages",
            len(kept),
            len(contents.answers),
            self.path,
        )
        return kept

    # ------------------------------------------------------------------ AnswerListener

    def answered(self, host: str, client: ClientConfig | None) -> None:
        now = self._wall()
        if client is None:
            if self._answers.pop(host, None) is not None or host in self._on_file:
                self._removed.pop(host, None)
                self._removed[host] = now
                self._changed()
            return
        previous = self._answers.pop(host, None)
        self._answers[host] = SnapshotAnswer(client, now)
        self._removed.pop(host, None)
        if previous is None or previous.client != client:
            self._changed()
        elif self._due is None:
            self._due = self._last_write + self._refresh_interval

    def forgotten(self) -> None:
        self._answers.clear()
        self._removed.clear()
        self._reset = True
        self._changed()

    # ------------------------------------------------------------------ writing

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Write when due while the block runs, and whatever is pending when it ends."""
        stop = asyncio.Event()
        task = asyncio.create_task(self._run(stop), name="registry-snapshot")
        try:
            yield
        finally:
            stop.set()
            await task

    async def _run(self, stop: asyncio.Event) -> None:
        stopping = False
        while not stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._tick)
            stopping = stop.is_set()
            if self._due is not None and (stopping or self._due <= self._monotonic()):
                await self._write()

    async def _write(self) -> None:
        self._prune(self._wall())
        answers, removed, reset = dict(self._answers), dict(self._removed), self._reset
        self._due, self._reset = None, False
        # Counted from the moment the answers were taken: a change heard while the file is
        # being written waits min_interval from here, not from whenever the thread's
        # result reaches a busy event loop.
        self._last_write = self._monotonic()
        try:
            self._on_file = await asyncio.to_thread(self._merge_and_write, answers, removed, reset)
        except OSError as exc:
            logger.warning("Cannot write the registry snapshot %s: %s", self.path, exc)
            self._reset = self._reset or reset
            self._due = self._monotonic() + self._refresh_interval

    def _merge_and_write(
        self, answers: dict[str, SnapshotAnswer], removed: dict[str, float], reset: bool
    ) -> frozenset[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path):
            merged = SnapshotContents() if reset else self._read_for_merge()
            for host, at in removed.items():
                answer = merged.answers.get(host)
                if answer is not None and answer.confirmed_at > at:
                    continue  # registered again since, as another process heard
                merged.answers.pop(host, None)
                merged.removed[host] = max(at, merged.removed.get(host, -math.inf))
            for host, answer in answers.items():
                known = merged.answers.get(host)
                gone = merged.removed.get(host, -math.inf)
                newest = known.confirmed_at if known is not None else -math.inf
                if answer.confirmed_at >= max(newest, gone):
                    merged.answers[host] = answer
                    merged.removed.pop(host, None)
            contents = self._bounded(merged, self._wall())
            _replace(self.path, seal_snapshot(contents, self._box))
        return frozenset(contents.answers)

    def _read_for_merge(self) -> SnapshotContents:
        try:
            return read_snapshot(self.path, self._box)
        except FileNotFoundError:
            return SnapshotContents()
        except SnapshotRefused as exc:
            logger.warning("Replacing the registry snapshot %s (%s)", self.path, exc.message)
            return SnapshotContents()

    # ------------------------------------------------------------------ bookkeeping

    def _changed(self) -> None:
        due = self._last_write + self._min_interval
        self._due = due if self._due is None else min(self._due, due)

    def _trusted(self, confirmed_at: float, now: float) -> bool:
        return 0 <= now - confirmed_at < self._max_age

    def _prune(self, now: float) -> None:
        """Forget what is too old to be trusted, and the oldest past the bound."""
        for host in [h for h, a in self._answers.items() if not self._trusted(a.confirmed_at, now)]:
            del self._answers[host]
        for host in [h for h, at in self._removed.items() if not self._trusted(at, now)]:
            del self._removed[host]
        _trim(self._answers, self._max_entries)
        _trim(self._removed, self._max_entries)

    def _bounded(self, contents: SnapshotContents, now: float) -> SnapshotContents:
        answers = sorted(
            (item for item in contents.answers.items() if self._trusted(item[1].confirmed_at, now)),
            key=lambda item: item[1].confirmed_at,
        )
        removed = sorted(
            (item for item in contents.removed.items() if self._trusted(item[1], now)),
            key=lambda item: item[1],
        )
        return SnapshotContents(
            dict(answers[-self._max_entries :]), dict(removed[-self._max_entries :])
        )


def _trim(table: dict[str, V], limit: int) -> None:
    """Drop the entries inserted first (the least recently confirmed) past ``limit``."""
    while len(table) > limit:
        del table[next(iter(table))]
