"""Reading a batch from the text of ``COPY … TO STDOUT`` (``export_batch_rows``): the raw
object's JSON lines and the batch's metering tallies, in one pass over bytes.

Pure and picklable, so it runs in an export worker process: one pass per event is the only
Python work the raw export does per event.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import date

#: COPY's text format writes these characters as a backslash and a letter (and a backslash
#: as two). A JSON line never holds a raw control character, so in it only backslashes are
#: doubled; the ids are undone in full.
_ESCAPES = {
    b"\\": b"\\",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
    b"b": b"\b",
    b"f": b"\f",
    b"v": b"\v",
}
_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)


class CopyFormatError(ValueError):
    """A COPY row without the expected leading fields."""


#: (client_id, site_id, UTC day, envelope) -> [events, bytes of their lines with newline]
Tallies = dict[tuple[str, str, date, bool], list[int]]


@dataclass(frozen=True, slots=True)
class BatchRows:
    """A batch read from COPY: the raw object's body (JSON Lines) and what metering and the
    ledger need of it."""

    body: bytes
    events: int
    tallies: Tallies

    def client_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for (client_id, _, _, _), (events, _) in self.tallies.items():
            counts[client_id] += events
        return dict(counts)


def _unescape(value: bytes) -> bytes:
    if b"\\" not in value:
        return value
    return _ESCAPE.sub(lambda match: _ESCAPES.get(match.group(1), match.group(1)), value)


def read_batch_rows(data: bytes) -> BatchRows:
    """COPY text rows (client, site, day, envelope, line) -> body and tallies.

    Per row only the four short leading fields are copied; the lines are joined straight
    from the COPY buffer, then their doubled backslashes undone in one pass (the leading
    fields are gone by then, and a JSON line holds no other escape).
    """
    rows = data.split(b"\n")
    if rows and rows[-1] == b"":
        rows.pop()
    view = memoryview(data)
    find = bytes.find
    raw_tallies: dict[bytes, list[int]] = {}
    lines: list[memoryview] = []
    append = lines.append
    start = 0
    for row in rows:
        # The fourth tab ends the leading fields; the line itself holds no raw tab.
        cut = find(row, b"\t", find(row, b"\t", find(row, b"\t", find(row, b"\t") + 1) + 1) + 1)
        size = len(row) - cut  # the line and its newline, as COPY wrote it
        if b"\\" in row:
            size -= row.count(b"\\\\", cut + 1)
        key = row[:cut]
        tally = raw_tallies.get(key)
        if tally is None:
            raw_tallies[key] = [1, size]
        else:
            tally[0] += 1
            tally[1] += size
        append(view[start + cut + 1 : start + len(row)])
        start += len(row) + 1
    body = b"\n".join(lines) + b"\n" if lines else b""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"\\")
    return BatchRows(body, len(lines), {_tally_key(key): t for key, t in raw_tallies.items()})


def _tally_key(key: bytes) -> tuple[str, str, date, bool]:
    fields = key.split(b"\t")
    if len(fields) != 4 or fields[3] not in (b"t", b"f"):
        raise CopyFormatError(f"unexpected leading fields in a COPY row: {key[:200]!r}")
    client, site, day, envelope = fields
    return (
        _unescape(client).decode(),
        _unescape(site).decode(),
        date.fromisoformat(day.decode()),
        envelope == b"t",
    )
