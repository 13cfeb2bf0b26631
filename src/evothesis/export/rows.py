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

    One walk over the buffer by offsets: per row only the four short leading fields are
    copied, and each line (with its newline) is a view into the COPY buffer, joined once at
    the end and its doubled backslashes undone in one pass (the leading fields are gone by
    then, and a JSON line holds no other escape). Splitting the buffer into rows first would
    copy every byte once more, which on a backlog costs more than the walk.
    """
    if data and not data.endswith(b"\n"):
        data += b"\n"
    find = data.find
    view = memoryview(data)
    raw_tallies: dict[bytes, list[int]] = {}
    lines: list[memoryview] = []
    append = lines.append
    start = 0
    end = len(data)
    while start < end:
        newline = find(b"\n", start)
        # The fourth tab ends the leading fields; the line itself holds no raw tab.
        cut = find(b"\t", find(b"\t", find(b"\t", find(b"\t", start) + 1) + 1) + 1)
        if not start < cut < newline:
            raise CopyFormatError(
                f"a COPY row without its leading fields: {data[start:newline][:200]!r}"
            )
        size = newline - cut  # the line and its newline, as COPY wrote it
        if find(b"\\", cut, newline) >= 0:
            size -= data.count(b"\\\\", cut + 1, newline)
        key = data[start:cut]
        tally = raw_tallies.get(key)
        if tally is None:
            raw_tallies[key] = [1, size]
        else:
            tally[0] += 1
            tally[1] += size
        append(view[cut + 1 : newline + 1])
        start = newline + 1
    body = b"".join(lines)
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
