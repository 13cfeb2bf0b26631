"""Raw JSON Lines -> per-client json / csv / parquet files, read back with independent readers.

Every round trip starts from raw bytes shaped like PostgreSQL's json output and ends with a
reader that is not ours (orjson, the csv module, pyarrow.parquet), so a wrong key order,
quoting rule or timestamp conversion shows up as a mismatch against the input events.
"""

from __future__ import annotations

import csv
import io
import pickle
import random
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evothesis.domain import (
    ENRICHED_COLUMNS,
    EVENT_COLUMNS,
    FILE_FORMATS,
    JSON_FORMATS,
    TABLE_FORMATS,
    ExportFormat,
)
from evothesis.errors import ObjectStoreError, RawFormatError
from evothesis.export.formats import (
    CORE_COLUMNS,
    EXPORT_COLUMNS,
    PARQUET_SCHEMA,
    RawEvent,
    RawLines,
    encode_events,
    event_columns,
    export_metadata,
    group_by_client,
    parse_raw_lines,
    split_by_client,
)

#: The raw line's key order, as the buffer's export query prints it.
RAW_KEYS = (
    "id",
    "event_id",
    "event_type",
    "session_id",
    "visitor_id",
    "site_id",
    "client_id",
    "timestamp",
    "url",
    "path",
    "referrer",
    "ip_address",
    "user_agent",
    "raw_event_data",
    "created_at",
    *ENRICHED_COLUMNS,
    "source",
    "user_id",
)
#: The keys of raw objects written before enrichment existed.
SEED_RAW_KEYS = RAW_KEYS[: -len(ENRICHED_COLUMNS) - 2]
#: The keys of raw objects written before the sender's authentication was recorded.
ENRICHED_RAW_KEYS = RAW_KEYS[:-2]
#: The keys of raw objects written before user ids were recorded.
SOURCED_RAW_KEYS = RAW_KEYS[:-1]
METADATA_KEY = b"evothesis.export_metadata"
OPTIONAL_TEXT = (
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


def make_event(number: int, **changes: Any) -> dict[str, Any]:
    """One raw event with realistic values; keys in the raw line's order."""
    event = {
        "id": number,
        "event_id": f"00000000-0000-4000-8000-{number:012d}",
        "event_type": "pageview",
        "session_id": f"s-{number}",
        "visitor_id": f"v-{number}",
        "site_id": "site-1",
        "client_id": "client-a",
        "timestamp": f"2026-11-25T10:00:{number % 60:02d}.123456+00:00",
        "url": f"https://example.com/post-{number}",
        "path": f"/post-{number}",
        "referrer": "https://www.google.com/",
        "ip_address": "203.0.113.0",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "raw_event_data": {
            "event_type": "pageview",
            "seq": number,
            "screen": {"w": 1920, "h": 1080, "dpr": 1.5},
            "tags": ["a", "b"],
            "consent": True,
            "nothing": None,
        },
        "created_at": f"2026-11-25T10:00:{number % 60:02d}.5+00:00",
        "browser": "Firefox",
        "browser_version": "125.0",
        "os": "Linux",
        "device_type": "desktop",
        "is_bot": number % 2 == 0,
        "country": "DE",
        "region": None,
        "city": None,
        "referrer_class": "search",
        "utm_source": "news, letter",
        "utm_medium": "email",
        "utm_campaign": None,
        "utm_term": None,
        "utm_content": None,
        "source": "browser",
        "user_id": None,
    }
    unknown = set(changes) - set(event)
    assert not unknown, unknown
    event.update(changes)
    return event


def tricky_events() -> list[dict[str, Any]]:
    """Values that break naive CSV writers and timestamp parsers, plus nulls everywhere."""
    return [
        make_event(
            1,
            url="https://example.com/?a=1,2&b=3",
            referrer='say "hi", then leave',
            user_agent="line one\nline two\r\nline three\rend",
            path="/über/日本語/🎉",
            session_id="",
            raw_event_data={
                "title": 'Ein "Blog", \u2013 Beitrag\nzweite Zeile',
                "nested": {"deep": {"list": [1, 2.5, None, "ü"]}},
                "emoji": "🎉",
            },
            timestamp="2026-11-25T10:00:00+00:00",
        ),
        make_event(
            2,
            session_id=None,
            visitor_id=None,
            url=None,
            path=None,
            referrer=None,
            ip_address=None,
            user_agent=None,
            raw_event_data={},
            timestamp="2026-11-25T10:00:00.1Z",
            created_at="2026-11-25T15:30:00.654321+05:30",
        ),
        make_event(3, client_id="client-b", timestamp="2026-11-25T08:00:00.12345-02:00"),
        make_event(4, user_agent=",", referrer='"', url="\r", path=" padded "),
    ]


def raw_bytes(events: list[dict[str, Any]], *, trailing_newline: bool = True) -> bytes:
    body = b"\n".join(orjson.dumps({key: event[key] for key in RAW_KEYS}) for event in events)
    return body + b"\n" if trailing_newline and events else body


def decoded(events: list[dict[str, Any]]) -> list[RawEvent]:
    """The events as the encoders receive them: through a raw object."""
    return well_formed(raw_bytes(events))


def well_formed(data: bytes) -> list[RawEvent]:
    """The events of a raw object that holds no bad line."""
    parsed = parse_raw_lines(data)
    assert parsed.bad == []
    return parsed.events


def as_dict(event: RawEvent) -> dict[str, Any]:
    return {
        **msgspec.structs.asdict(event),
        "raw_event_data": orjson.loads(bytes(event.raw_event_data)),
    }


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def stdlib_csv(events: list[dict[str, Any]]) -> bytes:
    """The reference the encoder must match byte for byte."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(EXPORT_COLUMNS)
    for event in events:
        row = [_csv_text(event[key]) for key in CORE_COLUMNS]
        writer.writerow([*row, orjson.dumps(event["raw_event_data"]).decode()])
    return buffer.getvalue().encode("utf-8")


def _csv_text(value: object) -> object:
    """Booleans are written as JSON spells them."""
    return ("true" if value else "false") if isinstance(value, bool) else value


def read_parquet(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


# --- constants ---------------------------------------------------------------------------


def test_columns_and_schema_line_up() -> None:
    assert RAW_KEYS[:13] + RAW_KEYS[14:] == CORE_COLUMNS
    assert PARQUET_SCHEMA.field("is_bot").type == pa.bool_()
    assert EXPORT_COLUMNS[:-1] == CORE_COLUMNS
    assert EXPORT_COLUMNS[-1] == "raw_event_data"
    assert tuple(PARQUET_SCHEMA.names) == EXPORT_COLUMNS
    assert set(FILE_FORMATS) == {"json", "jsonl", "csv", "parquet"}
    assert set(FILE_FORMATS) | set(TABLE_FORMATS) == set(ExportFormat)
    assert not set(FILE_FORMATS) & set(TABLE_FORMATS)
    assert set(FILE_FORMATS) > JSON_FORMATS
    nullable = {field.name for field in PARQUET_SCHEMA if field.nullable}
    assert nullable == set(OPTIONAL_TEXT)
    assert PARQUET_SCHEMA.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert PARQUET_SCHEMA.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert PARQUET_SCHEMA.field("id").type == pa.int64()
    assert PARQUET_SCHEMA.field("raw_event_data").type == pa.string()


# --- parsing -----------------------------------------------------------------------------


def test_raw_objects_from_before_enrichment_read_as_not_enriched() -> None:
    event = make_event(1)
    body = orjson.dumps({key: event[key] for key in SEED_RAW_KEYS}) + b"\n"
    [parsed] = well_formed(body)
    assert parsed.is_bot is False
    assert all(getattr(parsed, name) is None for name in ENRICHED_COLUMNS if name != "is_bot")
    assert as_dict(parsed)["raw_event_data"] == event["raw_event_data"]


def test_is_bot_must_be_a_boolean() -> None:
    [bad] = parse_raw_lines(raw_bytes([make_event(1, is_bot="yes")])).bad
    assert "is_bot" in bad.reason


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_parse_raw_lines_returns_the_events(trailing_newline: bool) -> None:
    events = tricky_events()
    parsed = well_formed(raw_bytes(events, trailing_newline=trailing_newline))
    assert [as_dict(event) for event in parsed] == events


def test_parse_raw_lines_of_nothing_is_no_events() -> None:
    assert parse_raw_lines(b"") == RawLines([], [])


def test_parse_raw_lines_ignores_extra_keys_and_accepts_crlf() -> None:
    line = orjson.dumps({**make_event(1), "xid": "12345"})
    parsed = well_formed(line + b"\r\n" + orjson.dumps(make_event(2)) + b"\r\n")
    assert [event.id for event in parsed] == [1, 2]
    assert encode_events(parsed[:1], "jsonl") == encode_events(decoded([make_event(1)]), "jsonl")


def _line_with(number: int, **changes: Any) -> bytes:
    return orjson.dumps(make_event(number, **changes))


def _without(key: str) -> bytes:
    event = make_event(2)
    del event[key]
    return orjson.dumps(event)


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        (b'{"id": 2, "event_id": ', "not valid JSON"),
        (b"not json at all", "not valid JSON"),
        (b"[1, 2, 3]", "got an array"),
        (b'"a string"', "got a string"),
        (_without("client_id"), "missing key 'client_id'"),
        (_without("raw_event_data"), "missing key 'raw_event_data'"),
        (b"", "empty line"),
        (b"  \r", "empty line"),
        (_line_with(2) + _line_with(2), "not valid JSON"),
        (_line_with(2, id="2"), "'id' must be an integer"),
        (_line_with(2, id=True), "'id' must be an integer"),
        (_line_with(2, client_id=None), "'client_id' must be a string"),
        (_line_with(2, url=17), "'url' must be a string or null"),
        (_line_with(2, raw_event_data=[1]), "'raw_event_data' must be an object"),
        (_line_with(2, timestamp="2026-11-25T10:00:00"), "'timestamp' is not an ISO-8601"),
        (_line_with(2, created_at="yesterday"), "'created_at' is not an ISO-8601"),
    ],
)
def test_a_bad_line_is_set_aside_with_its_reason_and_the_rest_is_read(
    bad_line: bytes, fragment: str
) -> None:
    data = b"\n".join([orjson.dumps(make_event(1)), bad_line, orjson.dumps(make_event(3))])
    parsed = parse_raw_lines(data + b"\n")
    assert [event.id for event in parsed.events] == [1, 3]
    [bad] = parsed.bad
    assert (bad.number, bad.line) == (2, bad_line)
    assert fragment in bad.reason
    # Whose it is, when the line can say: kept as that client's failed event.
    decodable = bad_line.strip() and bad_line[:1] == b"{" and fragment != "not valid JSON"
    if decodable and b'"client_id":"client-a"' in bad_line:
        assert (bad.client_id, bad.site_id, bad.visitor_id) == ("client-a", "site-1", "v-2")


def test_reasons_never_quote_a_value() -> None:
    line = _line_with(2, timestamp="judy@example.com", url=17)
    [bad] = parse_raw_lines(line + b"\n").bad
    assert "judy" not in bad.reason and "17" not in bad.reason


def test_raw_event_data_is_compacted_as_written() -> None:
    """PostgreSQL prints jsonb with a space after every separator; files carry compact
    JSON, with strings and numbers exactly as they were (no re-rendering of 1.50 or 1e3)."""
    spaced = b'{"a": 1.50, "b": [1, 2, {"c": null}], "s": "x, y: z", "n": 1e3}'
    line = orjson.dumps(make_event(1, raw_event_data={})).replace(
        b'"raw_event_data":{}', (b'"raw_event_data": ' + spaced)
    )
    compact = '{"a":1.50,"b":[1,2,{"c":null}],"s":"x, y: z","n":1e3}'
    [event] = well_formed(line + b"\n")
    assert bytes(event.raw_event_data) == compact.encode()
    assert orjson.loads(encode_events([event], "jsonl"))["raw_event_data"] == orjson.loads(spaced)
    [document_event] = orjson.loads(encode_events([event], "json", metadata={}))["events"]
    assert document_event["raw_event_data"] == orjson.loads(spaced)
    assert read_csv(encode_events([event], "csv"))[1][-1] == compact
    assert read_parquet(encode_events([event], "parquet"))["raw_event_data"][0].as_py() == compact


def test_bad_lines_on_the_first_line_and_after_many_and_between_good_ones() -> None:
    [bad] = parse_raw_lines(b"[]\n").bad
    assert (bad.number, bad.reason) == (1, "expected a JSON object, got an array")
    good = b"".join(orjson.dumps(make_event(n)) + b"\n" for n in range(1, 1001))
    infinite = _line_with(1002, timestamp="infinity", client_id="client-b") + b"\n"
    parsed = parse_raw_lines(good + b"{oops\n" + infinite + orjson.dumps(make_event(1003)))
    assert [event.id for event in parsed.events] == [*range(1, 1001), 1003]
    assert [(bad.number, bad.client_id) for bad in parsed.bad] == [(1001, None), (1002, "client-b")]
    assert parsed.bad[0].reason.startswith("not valid JSON")
    assert parsed.bad[1].reason == "'timestamp' is not an ISO-8601 time with an offset"


def test_a_client_file_has_every_stored_column_with_the_json_text_last() -> None:
    stored = tuple(name for name in EVENT_COLUMNS if name != "raw_event_data")
    assert ("id", *stored, "raw_event_data") == EXPORT_COLUMNS
    assert EXPORT_COLUMNS[-len(ENRICHED_COLUMNS) - 3 : -3] == ENRICHED_COLUMNS


def test_raw_objects_from_before_the_source_was_recorded_read_without_one() -> None:
    event = make_event(1)
    body = orjson.dumps({key: event[key] for key in ENRICHED_RAW_KEYS}) + b"\n"
    [parsed] = well_formed(body)
    assert parsed.source is None
    assert parsed.browser == "Firefox"


def test_raw_objects_from_before_user_ids_were_recorded_read_without_one() -> None:
    event = make_event(1)
    body = orjson.dumps({key: event[key] for key in SOURCED_RAW_KEYS}) + b"\n"
    [parsed] = well_formed(body)
    assert parsed.user_id is None
    assert parsed.source == "browser"


def test_raw_format_error_is_an_object_store_error_that_pickles() -> None:
    error = RawFormatError(7, "missing key 'client_id'")
    assert isinstance(error, ObjectStoreError)
    assert error.message == "raw line 7: missing key 'client_id'"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.line, copy.reason, str(copy)) == (7, error.reason, str(error))


# --- grouping ----------------------------------------------------------------------------


def test_split_by_client_cuts_the_same_rows_as_group_by_client() -> None:
    """Columns cut from one table of the object equal columns built per client, and every
    format encodes the same bytes from either."""
    clients = ["c", "a", "c", "b", "a", "c", "c"]
    events = decoded([make_event(n, client_id=client) for n, client in enumerate(clients, 1)])
    groups = group_by_client(events)
    split = split_by_client(events)
    assert list(split) == list(groups) == ["c", "a", "b"]
    for client_id, group in groups.items():
        assert split[client_id].events == group
        assert split[client_id].columns.equals(event_columns(group))
        for fmt in FILE_FORMATS:
            mine, theirs = (encode_events(e, fmt, metadata={}) for e in (split[client_id], group))
            assert mine == theirs, fmt
    without = split_by_client(events, columns=False)
    assert {client: part.columns for client, part in without.items()} == dict.fromkeys(groups)
    assert encode_events(without["a"], "csv") == encode_events(groups["a"], "csv")


def test_group_by_client_keeps_both_orders() -> None:
    clients = ["c", "a", "c", "b", "a", "c"]
    events = [make_event(n, client_id=client) for n, client in enumerate(clients, 1)]
    groups = group_by_client(iter(decoded(events)))
    assert list(groups) == ["c", "a", "b"]
    assert {client: [e.id for e in group] for client, group in groups.items()} == {
        "c": [1, 3, 6],
        "a": [2, 5],
        "b": [4],
    }
    assert group_by_client([]) == {}


# --- json (the seed's document) and jsonl ------------------------------------------------


def test_json_is_the_seed_document_with_its_metadata_and_the_events() -> None:
    """Seed 004: ``{"export_metadata": {…}, "events": […]}``, one JSON value; each event
    the same object a JSON Lines line holds, in the same order."""
    events = tricky_events()
    parsed = well_formed(raw_bytes(events))
    metadata = export_metadata(
        export_id="exp_1",
        export_time="2026-12-03T10:00:00+00:00",
        events=parsed,
        fmt="json",
        batch_id=1,
        client_id="client-a",
    )
    document = orjson.loads(encode_events(parsed, "json", metadata=metadata))
    assert list(document) == ["export_metadata", "events"]
    assert document["export_metadata"] == metadata
    for key in ("export_id", "export_time", "event_count", "time_range"):  # the seed's keys
        assert key in document["export_metadata"]
    assert document["export_metadata"]["event_count"] == len(document["events"]) == len(events)
    assert document["events"] == events
    assert all(list(event) == list(EXPORT_COLUMNS) for event in document["events"])
    lines = encode_events(parsed, "jsonl").splitlines()
    assert document["events"] == [orjson.loads(line) for line in lines]


def test_the_json_document_needs_its_metadata() -> None:
    with pytest.raises(ValueError, match="export_metadata"):
        encode_events(decoded([make_event(1)]), "json")


def test_an_empty_json_document_has_no_events() -> None:
    metadata = {"event_count": 0}
    assert orjson.loads(encode_events([], "json", metadata=metadata)) == {
        "export_metadata": metadata,
        "events": [],
    }


def test_jsonl_round_trip() -> None:
    events = tricky_events()
    data = encode_events(well_formed(raw_bytes(events)), "jsonl")
    assert data.endswith(b"\n")
    lines = data.split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == len(events)
    for line, event in zip(lines, events, strict=True):
        decoded = orjson.loads(line)
        assert list(decoded) == list(EXPORT_COLUMNS)
        assert decoded == event
        # Compact: exactly orjson's own rendering, no spaces after separators.
        assert line == orjson.dumps({key: event[key] for key in EXPORT_COLUMNS})
    # Timestamps stay the raw line's text.
    assert orjson.loads(lines[1])["timestamp"] == "2026-11-25T10:00:00.1Z"


# --- csv ---------------------------------------------------------------------------------


def test_csv_round_trip() -> None:
    events = tricky_events()
    data = encode_events(well_formed(raw_bytes(events)), "csv")
    assert not data.startswith(b"\xef\xbb\xbf")
    assert data.endswith(b"\r\n")
    header, *rows = read_csv(data)
    assert header == list(EXPORT_COLUMNS)
    assert len(rows) == len(events)
    for row, event in zip(rows, events, strict=True):
        record = dict(zip(EXPORT_COLUMNS, row, strict=True))
        assert record["id"] == str(event["id"])
        for key in CORE_COLUMNS[1:]:
            expected = _csv_text(event[key])
            assert record[key] == ("" if expected is None else expected), key
        assert orjson.loads(record["raw_event_data"]) == event["raw_event_data"]
        assert record["raw_event_data"] == orjson.dumps(event["raw_event_data"]).decode()
    assert rows[0][CORE_COLUMNS.index("user_agent")] == "line one\nline two\r\nline three\rend"
    assert rows[0][CORE_COLUMNS.index("path")] == "/über/日本語/🎉"


def test_csv_quotes_only_what_rfc_4180_requires() -> None:
    event = make_event(
        5,
        url="https://x.test/?a=1,2",
        referrer='say "hi"',
        user_agent="two\r\nlines",
        path="/plain path/ü",
        session_id=None,
        raw_event_data={"k": "v"},
        timestamp="2026-11-25T10:00:00+00:00",
        created_at="2026-11-25T10:00:01+00:00",
    )
    data = encode_events(decoded([event]), "csv")
    expected = (
        ",".join(EXPORT_COLUMNS) + "\r\n"
        "5,00000000-0000-4000-8000-000000000005,pageview,,v-5,site-1,client-a,"
        '2026-11-25T10:00:00+00:00,"https://x.test/?a=1,2",/plain path/ü,"say ""hi""",'
        '203.0.113.0,"two\r\nlines",2026-11-25T10:00:01+00:00,'
        'Firefox,125.0,Linux,desktop,false,DE,,,search,"news, letter",email,,,,browser,,'
        '"{""k"":""v""}"\r\n'
    )
    assert data == expected.encode("utf-8")


def test_csv_matches_the_csv_module_byte_for_byte() -> None:
    events = tricky_events()
    assert encode_events(decoded(events), "csv") == stdlib_csv(events)


_ALPHABET = ',"\r\n a\u00e9\u65e5\U0001f389x'


def _random_text(rng: random.Random) -> str | None:
    if rng.random() < 0.2:
        return None
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(9)))


def test_csv_matches_the_csv_module_for_random_text() -> None:
    """Seeded, so a failure reproduces; every field mixes the characters that need quoting."""
    rng = random.Random(4180)
    for _ in range(200):
        events = []
        for number in range(1, rng.randrange(1, 6) + 1):
            changes = {key: _random_text(rng) for key in OPTIONAL_TEXT}
            blob = _random_text(rng) or ""
            events.append(make_event(number, raw_event_data={blob: [blob]}, **changes))
        data = encode_events(decoded(events), "csv")
        assert data == stdlib_csv(events)
        assert len(read_csv(data)) == len(events) + 1


# --- parquet -----------------------------------------------------------------------------


def test_parquet_round_trip() -> None:
    events = tricky_events()
    data = encode_events(well_formed(raw_bytes(events)), "parquet")
    table = read_parquet(data)
    assert table.schema.equals(PARQUET_SCHEMA)
    assert table.num_rows == len(events)
    for row, event in zip(table.to_pylist(), events, strict=True):
        assert list(row) == list(EXPORT_COLUMNS)
        for key in CORE_COLUMNS:
            if key in ("timestamp", "created_at"):
                assert row[key] == instant(event[key]), key
            else:
                assert row[key] == event[key], key
        assert orjson.loads(row["raw_event_data"]) == event["raw_event_data"]
        assert row["raw_event_data"] == orjson.dumps(event["raw_event_data"]).decode()
    columns = pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0)
    assert {columns.column(i).compression for i in range(columns.num_columns)} == {"ZSTD"}


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-11-25T10:00:00+00:00", datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)),
        ("2026-11-25T10:00:00.1+00:00", datetime(2026, 11, 25, 10, 0, 0, 100000, tzinfo=UTC)),
        ("2026-11-25T10:00:00.12+00:00", datetime(2026, 11, 25, 10, 0, 0, 120000, tzinfo=UTC)),
        ("2026-11-25T10:00:00.123+00:00", datetime(2026, 11, 25, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2026-11-25T10:00:00.1234+00:00", datetime(2026, 11, 25, 10, 0, 0, 123400, tzinfo=UTC)),
        ("2026-11-25T10:00:00.12345+00:00", datetime(2026, 11, 25, 10, 0, 0, 123450, tzinfo=UTC)),
        ("2026-11-25T10:00:00.123456+00:00", datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-25T10:00:00.000001Z", datetime(2026, 11, 25, 10, 0, 0, 1, tzinfo=UTC)),
        ("2026-11-25T15:30:00.5+05:30", datetime(2026, 11, 25, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-25T08:00:00-02:00", datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)),
        ("2026-11-26T00:30:00+01:00", datetime(2026, 11, 25, 23, 30, 0, tzinfo=UTC)),
    ],
)
def test_parquet_timestamps_are_utc_instants(text: str, utc: datetime) -> None:
    event = make_event(1, timestamp=text, created_at=text)
    row = read_parquet(encode_events(well_formed(raw_bytes([event])), "parquet")).to_pylist()
    assert row[0]["timestamp"] == utc
    assert row[0]["timestamp"].utcoffset().total_seconds() == 0
    assert row[0]["created_at"] == utc


def test_parquet_schema_is_the_same_whatever_the_events_hold() -> None:
    first = [make_event(1, raw_event_data={"a": 1, "b": {"c": [1, 2]}})]
    second = [
        make_event(
            2,
            raw_event_data={"totally": ["different", {"shape": None}], "n": 1.5},
            **dict.fromkeys(OPTIONAL_TEXT),
        ),
        make_event(3, raw_event_data={}, **dict.fromkeys(OPTIONAL_TEXT)),
    ]
    schemas = [
        read_parquet(encode_events(decoded(batch), "parquet")).schema for batch in (first, second)
    ]
    for schema in schemas:
        assert schema.equals(PARQUET_SCHEMA)
    # All-null optional columns are still strings, not Arrow's null type.
    assert schemas[1].field("url").type == pa.string()
    assert schemas[0].equals(schemas[1])


def test_parquet_carries_the_export_metadata() -> None:
    events = decoded(tricky_events())
    metadata = export_metadata(
        export_id="exp-1",
        export_time="2026-11-25T11:00:00Z",
        events=events,
        fmt="parquet",
        batch_id=42,
        client_id="client-a",
    )
    data = encode_events(events, "parquet", metadata=metadata)
    stored = pq.read_metadata(pa.BufferReader(data)).metadata
    assert orjson.loads(stored[METADATA_KEY]) == metadata
    assert read_parquet(data).schema.equals(PARQUET_SCHEMA)
    plain = pq.read_metadata(pa.BufferReader(encode_events(events, "parquet"))).metadata
    assert METADATA_KEY not in (plain or {})


def test_parquet_rejects_a_missing_required_value() -> None:
    """Parsing refuses it first; a struct made in code still cannot reach a file."""
    fields = {**make_event(1, event_type=None), "raw_event_data": msgspec.Raw(b"{}")}
    with pytest.raises(ValueError, match="event_type"):
        encode_events([RawEvent(**fields)], "parquet")


# --- empty input -------------------------------------------------------------------------


def test_empty_jsonl_is_empty() -> None:
    assert encode_events([], "jsonl") == b""


def test_empty_csv_is_the_header_only() -> None:
    data = encode_events([], "csv")
    assert data == (",".join(EXPORT_COLUMNS) + "\r\n").encode("ascii")
    assert read_csv(data) == [list(EXPORT_COLUMNS)]


def test_empty_parquet_is_a_valid_empty_table() -> None:
    metadata = {"event_count": 0}
    data = encode_events([], "parquet", metadata=metadata)
    table = read_parquet(data)
    assert table.num_rows == 0
    assert table.schema.equals(PARQUET_SCHEMA)
    assert orjson.loads(pq.read_metadata(pa.BufferReader(data)).metadata[METADATA_KEY]) == metadata


# --- export metadata and formats ---------------------------------------------------------


def test_export_metadata_document() -> None:
    events = decoded([make_event(1), make_event(2)])
    metadata = export_metadata(
        export_id="exp-9",
        export_time="2026-11-25T11:00:00+00:00",
        events=events,
        fmt="csv",
        batch_id=7,
        client_id="client-a",
    )
    assert list(metadata) == [
        "export_id",
        "export_time",
        "event_count",
        "time_range",
        "format",
        "batch_id",
        "client_id",
        "columns",
    ]
    assert metadata["export_id"] == "exp-9"
    assert metadata["export_time"] == "2026-11-25T11:00:00+00:00"
    assert metadata["event_count"] == 2
    assert (metadata["format"], metadata["batch_id"], metadata["client_id"]) == (
        "csv",
        7,
        "client-a",
    )
    assert metadata["columns"] == list(EXPORT_COLUMNS)
    assert orjson.loads(orjson.dumps(metadata)) == metadata


def test_time_range_compares_instants_not_strings() -> None:
    texts = [
        "2026-11-25T10:00:00.5+00:00",
        "2026-11-25T10:00:00.123456+00:00",
        "2026-11-25T15:00:00+05:30",  # 09:30 UTC: the earliest, though the largest string
        "2026-11-25T10:00:00.75Z",
        "2026-11-25T08:00:00.9-02:00",  # 10:00:00.9 UTC: the latest, though a small string
        "2026-11-25T10:00:00+00:00",
    ]
    events = decoded([make_event(n, timestamp=text) for n, text in enumerate(texts, 1)])
    metadata = export_metadata(
        export_id="e", export_time="t", events=events, fmt="json", batch_id=1, client_id="c"
    )
    assert metadata["time_range"] == {
        "start": "2026-11-25T15:00:00+05:30",
        "end": "2026-11-25T08:00:00.9-02:00",
    }
    instants = [instant(text) for text in texts]
    assert instant(metadata["time_range"]["start"]) == min(instants)
    assert instant(metadata["time_range"]["end"]) == max(instants)


def test_time_range_of_no_events_is_null() -> None:
    metadata = export_metadata(
        export_id="e", export_time="t", events=[], fmt="parquet", batch_id=1, client_id="c"
    )
    assert metadata["event_count"] == 0
    assert metadata["time_range"] == {"start": None, "end": None}


@pytest.mark.parametrize("fmt", ["xml", "ndjson", "JSON", "", "parquet "])
def test_unknown_format_is_refused(fmt: str) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        encode_events(decoded([make_event(1)]), fmt)
    with pytest.raises(ValueError, match="unknown export format"):
        encode_events([], fmt)
    with pytest.raises(ValueError, match="unknown export format"):
        export_metadata(
            export_id="e", export_time="t", events=[], fmt=fmt, batch_id=1, client_id="c"
        )


def test_a_batch_splits_into_per_client_files() -> None:
    events = tricky_events()
    groups = group_by_client(well_formed(raw_bytes(events)))
    assert list(groups) == ["client-a", "client-b"]
    for client_id, group in groups.items():
        table = read_parquet(encode_events(group, "parquet"))
        assert set(table.column("client_id").to_pylist()) == {client_id}
        assert table.column("id").to_pylist() == [
            event["id"] for event in events if event["client_id"] == client_id
        ]
