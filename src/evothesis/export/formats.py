"""Raw export lines in, per-client files out: parsing, grouping and encoding, with no I/O.

The raw object is the buffer's own record of a batch, written once; everything a client
receives is derived from it here. Keeping this pure lets the pipeline retry a delivery by
re-running the same functions on the same bytes and get the same rows in the same order, and
lets the encoders be tested and timed without a database or a bucket.

Speed shapes the code: a backlog of a million events goes through in batches of 10,000, so
a raw object is decoded by msgspec straight into typed ``RawEvent`` structs (one C pass that
also checks every field's type, instead of a dict per line checked key by key in Python),
``raw_event_data`` is never decoded at all but kept as its JSON text, Parquet and CSV columns
are built one ``pa.array`` at a time and timestamps are parsed by Arrow's vectorised cast
rather than a Python ``datetime`` per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evothesis.domain import ENRICHED_COLUMNS, FILE_FORMATS
from evothesis.export.parts import BadLine


class RawEvent(msgspec.Struct, kw_only=True, gc=False):
    """One raw line, decoded and typed; its fields, in order, are a client file's columns.

    The core fields have no default, so a line without one of them is refused. The enriched
    fields (``domain.ENRICHED_COLUMNS``, in that order) default to "not enriched", which is
    how raw objects written before enrichment existed read; so do ``source`` and
    ``user_id``, for raw objects written before they were recorded. ``raw_event_data`` holds the
    event's JSON text, compact: no client format needs it as Python values, and not
    building them is most of the saving. ``gc=False``: structs of strings cannot form
    cycles, so the collector never visits them.
    """

    id: int
    event_id: str
    event_type: str
    session_id: str | None
    visitor_id: str | None
    site_id: str
    client_id: str
    timestamp: str
    url: str | None
    path: str | None
    referrer: str | None
    ip_address: str | None
    user_agent: str | None
    created_at: str
    browser: str | None = None
    browser_version: str | None = None
    os: str | None = None
    device_type: str | None = None
    is_bot: bool = False
    country: str | None = None
    region: str | None = None
    city: str | None = None
    referrer_class: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    #: How the sender was authenticated (``domain.EventSource``); none in raw objects
    #: written before it was recorded.
    source: str | None = None
    #: A Segment message's user, as its client stores user ids; none for /collect events
    #: and in raw objects written before it was recorded.
    user_id: str | None = None
    raw_event_data: msgspec.Raw


#: The columns of every client file, in order: the flat ones in the raw line's order, then
#: ``raw_event_data``, the one nested value, which every tabular format puts last, as text.
EXPORT_COLUMNS: Final[tuple[str, ...]] = RawEvent.__struct_fields__
CORE_COLUMNS: Final = EXPORT_COLUMNS[:-1]

_TIMESTAMP: Final = pa.timestamp("us", tz="UTC")

#: One schema for every file, whatever the events carry: a client's files from different
#: batches can be read as one dataset without schema merging, and ``raw_event_data`` stays
#: JSON text so that a new key in an event never changes a column.
PARQUET_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("session_id", pa.string()),
        pa.field("visitor_id", pa.string()),
        pa.field("site_id", pa.string(), nullable=False),
        pa.field("client_id", pa.string(), nullable=False),
        pa.field("timestamp", _TIMESTAMP, nullable=False),
        pa.field("url", pa.string()),
        pa.field("path", pa.string()),
        pa.field("referrer", pa.string()),
        pa.field("ip_address", pa.string()),
        pa.field("user_agent", pa.string()),
        pa.field("created_at", _TIMESTAMP, nullable=False),
        *(
            pa.field(name, pa.bool_(), nullable=False)
            if name == "is_bot"
            else pa.field(name, pa.string())
            for name in ENRICHED_COLUMNS
        ),
        pa.field("source", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("raw_event_data", pa.string(), nullable=False),
    ]
)

#: The events' columns before encoding: the Parquet schema with the two times still the raw
#: line's text, which CSV writes as it is and Parquet parses.
COLUMN_SCHEMA: Final[pa.Schema] = pa.schema(
    [
        field.with_type(pa.string()) if field.type == _TIMESTAMP else field
        for field in PARQUET_SCHEMA
    ]
)

#: Where a Parquet file carries its export metadata, so the file describes itself even when
#: it is copied away from any sidecar.
PARQUET_METADATA_KEY: Final = b"evothesis.export_metadata"

_REQUIRED_TEXT: Final = ("event_id", "event_type", "site_id", "client_id")
_OPTIONAL_TEXT: Final = (
    "session_id",
    "visitor_id",
    "url",
    "path",
    "referrer",
    "ip_address",
    "user_agent",
    *(name for name in ENRICHED_COLUMNS if name != "is_bot"),
    "source",
    "user_id",
)
_TIME_COLUMNS: Final = ("timestamp", "created_at")
#: What raw objects written before enrichment existed lack: read as "not enriched".
_ENRICHED_DEFAULTS: Final = {name: False if name == "is_bot" else None for name in ENRICHED_COLUMNS}
_RAW_KEYS: Final = frozenset(EXPORT_COLUMNS) - frozenset(ENRICHED_COLUMNS) - {"source", "user_id"}


_DECODER: Final = msgspec.json.Decoder(RawEvent)
_ENCODER: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class RawLines:
    """A raw object's events, and the lines that could not be read as events."""

    events: list[RawEvent]
    bad: list[BadLine]


def parse_raw_lines(data: bytes) -> RawLines:
    """Decompressed JSON Lines -> events, with ``raw_event_data`` compacted, and the lines
    that are not well-typed events. An empty trailing line is fine.

    Every line is checked here, once, so that the encoders can assume well-typed events.
    One bad line must never hold up the rest of the object (it holds other clients' events
    too): it is set aside with its reason, and everything else is delivered. Keys beyond
    the expected ones are tolerated (and not exported), so a producer can add a column
    before the exporter knows about it.

    The typed decode of the whole object is the fast path; only an object where something
    is wrong is read again line by line, to find which lines and why.
    """
    try:
        events = _DECODER.decode_lines(data)
    except msgspec.DecodeError:
        return _line_by_line(data)
    # msgspec skips blank lines: fewer events than lines means one is there.
    if len(events) != data.count(b"\n") + (not data.endswith(b"\n")) - (not data):
        return _line_by_line(data)
    for event in events:
        if not _compact(event):
            return _line_by_line(data)
    for column in _TIME_COLUMNS:
        if not _times_parse(_values(events, column)):
            return _line_by_line(data)
    return RawLines(events, [])


def _compact(event: RawEvent) -> bool:
    """Compact ``raw_event_data`` in place; ``False`` when it is not a JSON object."""
    text = msgspec.json.format(event.raw_event_data, indent=-1)
    if text[:1] != b"{":
        return False
    event.raw_event_data = msgspec.Raw(text)
    return True


def _line_by_line(data: bytes) -> RawLines:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    events: list[RawEvent] = []
    numbers: list[int] = []
    bad: list[BadLine] = []
    for number, line in enumerate(lines, 1):
        decoded: object = None
        try:
            decoded = orjson.loads(line)
            reason = _check_line(decoded)
            if reason is None:
                event = _DECODER.decode(line)
                if _compact(event):
                    events.append(event)
                    numbers.append(number)
                    continue
                reason = "'raw_event_data' must be an object"
        except orjson.JSONDecodeError as exc:
            reason = "empty line" if not line.strip() else f"not valid JSON ({exc.msg})"
        except msgspec.DecodeError as exc:
            reason = f"not a well-typed event ({str(exc).splitlines()[0]})"
        bad.append(_bad_line(number, line, reason, decoded))
    for column in _TIME_COLUMNS:
        if _times_parse(_values(events, column)):
            continue
        reason = f"{column!r} is not an ISO-8601 time with an offset"
        kept_numbers, kept = [], []
        for number, event in zip(numbers, events, strict=True):
            if _times_parse([getattr(event, column)]):
                kept_numbers.append(number)
                kept.append(event)
            else:
                line = lines[number - 1]
                bad.append(_bad_line(number, line, reason, orjson.loads(line)))
        numbers, events = kept_numbers, kept
    bad.sort(key=lambda line: line.number)
    return RawLines(events, bad)


def _check_line(decoded: object) -> str | None:
    if type(decoded) is not dict:
        return f"expected a JSON object, got {_json_kind(decoded)}"
    if "is_bot" not in decoded:
        decoded.update(_ENRICHED_DEFAULTS)
    decoded.setdefault("source", None)
    decoded.setdefault("user_id", None)
    return _check_event(decoded)


def _bad_line(number: int, line: bytes, reason: str, decoded: object) -> BadLine:
    """The line's owner, as far as it says: a failed event is kept under its client."""
    if type(decoded) is not dict:
        return BadLine(number, reason, line)

    def text(key: str) -> str | None:
        value = decoded.get(key)
        return value if isinstance(value, str) else None

    return BadLine(
        number,
        reason,
        line,
        text("client_id"),
        text("site_id"),
        text("event_id"),
        text("visitor_id"),
        text("session_id"),
        text("user_id"),
    )


def group_by_client(events: Iterable[RawEvent]) -> dict[str, list[RawEvent]]:
    """client_id -> its events, order preserved, clients in first-seen order.

    Both orders are kept so that a batch always splits the same way, which makes a retried
    delivery carry exactly the rows, in the same order, of the file it replaces.
    """
    groups: dict[str, list[RawEvent]] = {}
    for event in events:
        client_id = event.client_id
        group = groups.get(client_id)
        if group is None:
            groups[client_id] = group = []
        group.append(event)
    return groups


@dataclass(frozen=True, slots=True)
class ClientEvents:
    """One client's events of a raw object, as structs (for JSON Lines) and as Arrow columns
    (for CSV and Parquet; ``None`` when no file of the object needed them), the same rows in
    the same order."""

    events: list[RawEvent]
    columns: pa.Table | None


def split_by_client(events: list[RawEvent], *, columns: bool = True) -> dict[str, ClientEvents]:
    """``group_by_client`` with each client's columns cut from one table of all the events
    (unless ``columns`` is false: JSON Lines is written from the structs alone).

    Building the columns once for the whole object, in the order the structs were decoded
    (which is their order in memory), costs a third of building them client by client, where
    each column walks structs scattered across the object; Arrow then regroups the rows in C.
    """
    groups = group_by_client(events)
    if not columns:
        return {client_id: ClientEvents(group, None) for client_id, group in groups.items()}
    table = event_columns(events)
    codes = pc.dictionary_encode(table.column("client_id")).combine_chunks()
    # Dictionary codes follow first appearance, like the groups; a stable sort keeps each
    # client's rows in the object's order.
    assert codes.dictionary.to_pylist() == list(groups), "Arrow grouped clients differently"
    ordered = table.take(pc.sort_indices(codes.indices))
    split: dict[str, ClientEvents] = {}
    offset = 0
    for client_id, group in groups.items():
        split[client_id] = ClientEvents(group, ordered.slice(offset, len(group)))
        offset += len(group)
    return split


def event_columns(events: Sequence[RawEvent]) -> pa.Table:
    """The events as ``COLUMN_SCHEMA`` columns: one pass over the structs per column."""
    arrays: list[pa.Array] = []
    for field in COLUMN_SCHEMA:
        name = field.name
        if name == "raw_event_data":
            # The compact JSON text as it is: msgspec checked its UTF-8 when it decoded it.
            texts = [bytes(event.raw_event_data) for event in events]
            arrays.append(pa.array(texts, pa.binary()).view(pa.string()))
        else:
            arrays.append(pa.array(_values(events, name), field.type))
    return pa.Table.from_arrays(arrays, schema=COLUMN_SCHEMA)


def encode_events(
    events: Sequence[RawEvent] | ClientEvents,
    fmt: str,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """One client's file body in its chosen format; the caller compresses and names it.

    ``json`` is seed 004's document, ``{"export_metadata": …, "events": […]}``: the metadata
    (required) and every event as an object with the keys in ``EXPORT_COLUMNS`` order and
    ``raw_event_data`` nested; ``jsonl`` is the same objects as JSON Lines, one per line;
    ``csv`` is RFC 4180 (minimal quoting, CRLF, UTF-8 without BOM, header row) with
    ``raw_event_data`` as compact JSON text and null as an empty field; ``parquet`` uses
    ``PARQUET_SCHEMA`` with zstd and real UTC timestamps. Timestamps stay the raw line's
    text in the JSON formats and csv, so those files carry exactly what PostgreSQL stored.
    ``metadata`` is embedded in the JSON document and in Parquet, the formats with a place
    for it; for the others the caller keeps it alongside. Zero events still give a valid
    file, so an empty export is never a special case downstream. Given ``ClientEvents``,
    the columns already built are used.
    """
    _check_format(fmt)
    if isinstance(events, ClientEvents):
        structs, columns = events.events, events.columns
    else:
        structs, columns = list(events), None
    if fmt == "jsonl":
        return _ENCODER.encode_lines(structs)
    if fmt == "json":
        if metadata is None:
            raise ValueError("the json export document needs its export_metadata")
        # Built from parts so that the events are encoded by msgspec in one C pass, as for
        # JSON Lines; the metadata is small.
        return b"".join(
            (
                b'{"export_metadata":',
                orjson.dumps(dict(metadata)),
                b',"events":',
                _ENCODER.encode(structs),
                b"}",
            )
        )
    if columns is None:
        columns = event_columns(structs)
    if fmt == "csv":
        return _encode_csv(columns)
    return _encode_parquet(columns, metadata)


def export_metadata(
    *,
    export_id: str,
    export_time: str,
    events: Sequence[RawEvent] | ClientEvents,
    fmt: str,
    batch_id: int | None,
    client_id: str,
) -> dict[str, Any]:
    """The seed's export metadata, extended with what a consumer needs to read the file.

    ``time_range`` holds the events' own ``timestamp`` text for the earliest and the latest
    instant (so it matches the file's rows exactly), chosen by comparing instants: offsets
    and fraction lengths differ, so string order would be wrong. Both ends are null when
    there are no events, keeping the document's shape fixed.
    """
    _check_format(fmt)
    if isinstance(events, ClientEvents):
        events = events.events
    return {
        "export_id": export_id,
        "export_time": export_time,
        "event_count": len(events),
        "time_range": _time_range(events),
        "format": fmt,
        "batch_id": batch_id,
        "client_id": client_id,
        "columns": list(EXPORT_COLUMNS),
    }


def _check_format(fmt: str) -> None:
    if fmt not in FILE_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {FILE_FORMATS}")


def _json_kind(value: object) -> str:
    """Name a decoded value in JSON's terms, which is what the producer wrote."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _check_event(event: dict[str, Any]) -> str | None:
    """The first thing wrong with one decoded line, or None; plain loops keep it cheap."""
    if not event.keys() >= _RAW_KEYS:
        missing = [key for key in EXPORT_COLUMNS if key not in event]
        return f"missing key {missing[0]!r}" + (
            f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        )
    value = event["id"]
    if type(value) is not int:
        return f"'id' must be an integer, got {_json_kind(value)}"
    for key in _REQUIRED_TEXT:
        if type(event[key]) is not str:
            return f"{key!r} must be a string, got {_json_kind(event[key])}"
    for key in _OPTIONAL_TEXT:
        value = event[key]
        if value is not None and type(value) is not str:
            return f"{key!r} must be a string or null, got {_json_kind(value)}"
    if type(event["is_bot"]) is not bool:
        return f"'is_bot' must be a boolean, got {_json_kind(event['is_bot'])}"
    for key in _TIME_COLUMNS:
        if type(event[key]) is not str:
            return f"{key!r} must be an ISO-8601 string, got {_json_kind(event[key])}"
    if type(event["raw_event_data"]) is not dict:
        return f"'raw_event_data' must be an object, got {_json_kind(event['raw_event_data'])}"
    return None


def _times_parse(values: list[str]) -> bool:
    """Whether every value is an ISO-8601 time with an offset (one C call per column)."""
    try:
        _parse_times(values)
    except pa.ArrowInvalid:
        return False
    return True


def _parse_times(values: list[str]) -> pa.TimestampArray:
    """ISO-8601 text with an offset -> UTC microseconds, in C.

    Arrow's string -> timestamp[us, UTC] cast accepts 0 to 6 fraction digits, ``Z`` and any
    ``+hh:mm`` / ``+hh`` offset (converting to UTC). It rejects text without an offset rather
    than guess a zone, and values it cannot hold (``infinity``, BC dates), which PostgreSQL
    could print but the collector never writes.
    """
    return pa.array(values, pa.string()).cast(_TIMESTAMP)


def _time_range(events: Sequence[RawEvent]) -> dict[str, str | None]:
    if not events:
        return {"start": None, "end": None}
    texts = _values(events, "timestamp")
    times = _parse_times(texts)
    extremes = pc.min_max(times)
    start = pc.index(times, extremes["min"]).as_py()
    end = pc.index(times, extremes["max"]).as_py()
    return {"start": texts[start], "end": texts[end]}


def _encode_csv(columns: pa.Table) -> bytes:
    """RFC 4180 built column-wise in Arrow, about twice as fast as the csv module per row.

    The output is byte-for-byte what the csv module's writer with QUOTE_MINIMAL and a CRLF
    line terminator writes (the tests hold it to that): a field is quoted only when it holds a
    comma, a quote, CR or LF, and its quotes are doubled. Null is an empty field, which
    RFC 4180 cannot tell apart from an empty string.
    """
    header = ",".join(EXPORT_COLUMNS).encode("ascii") + b"\r\n"
    if not columns.num_rows:
        return header
    fields: list[pa.Array] = []
    for field, column in zip(COLUMN_SCHEMA, columns.combine_chunks().columns, strict=True):
        array = column.chunk(0)
        if field.type == pa.string():
            fields.append(_csv_field(array))
        else:  # id and is_bot: digits and true/false never need quotes
            fields.append(array.cast(pa.string()))
    rows = pc.binary_join_element_wise(*fields, ",")
    whole = pa.ListArray.from_arrays(pa.array([0, len(rows)], pa.int32()), rows)
    body = pc.binary_join(whole, "\r\n")[0].as_buffer()
    return b"".join([header, memoryview(body), b"\r\n"])


def _csv_field(column: pa.StringArray) -> pa.StringArray:
    """Quote (doubling quotes) only where a value would otherwise break the record."""
    needs_quotes = pc.match_substring_regex(column, '[,"\r\n]')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(column, '"', '""'), '"', "")
    return pc.if_else(needs_quotes, quoted, column).fill_null("")


def _values(events: Sequence[RawEvent], name: str) -> list[Any]:
    return list(map(attrgetter(name), events))


def typed_columns(columns: pa.Table, metadata: Mapping[str, Any] | None = None) -> pa.Table:
    """``COLUMN_SCHEMA`` columns as ``PARQUET_SCHEMA`` rows: the times parsed to UTC
    instants (what Parquet files and the tables hold), ``metadata`` on the schema."""
    arrays = [
        column.cast(_TIMESTAMP) if field.type == _TIMESTAMP else column
        for field, column in zip(PARQUET_SCHEMA, columns.columns, strict=True)
    ]
    schema = PARQUET_SCHEMA
    if metadata is not None:
        schema = schema.with_metadata({PARQUET_METADATA_KEY: orjson.dumps(dict(metadata))})
    return pa.Table.from_arrays(arrays, schema=schema)


def _encode_parquet(columns: pa.Table, metadata: Mapping[str, Any] | None) -> bytes:
    """The columns with their times parsed to UTC instants.

    A null in a required column needs no check here: the Parquet writer refuses it with an
    ``ArrowInvalid`` (a ValueError) that names the column.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(typed_columns(columns, metadata), sink, compression="zstd")
    data: bytes = sink.getvalue().to_pybytes()
    return data
