"""Reading a batch from COPY text rows (export/rows.py): the raw object's body is exactly
the JSON lines, and the tallies count every event and byte once."""

from __future__ import annotations

from datetime import date

import pytest

from evothesis.export.rows import CopyFormatError, read_batch_rows


def copy_field(value: bytes) -> bytes:
    """How PostgreSQL's COPY text format writes a value."""
    for raw, escaped in ((b"\\", b"\\\\"), (b"\n", b"\\n"), (b"\t", b"\\t"), (b"\r", b"\\r")):
        value = value.replace(raw, escaped)
    return value


def copy_rows(*rows: tuple[bytes, bytes, bytes, bytes, bytes]) -> bytes:
    return b"".join(b"\t".join(copy_field(field) for field in row) + b"\n" for row in rows)


LINES = [
    b'{"id":1,"client_id":"shop","raw_event_data":{"q":"say \\"hi\\""}}',
    b'{"id":2,"client_id":"shop","raw_event_data":{"path":"C:\\\\temp\\\\x"}}',
    b'{"id":3,"client_id":"blog","raw_event_data":{}}',
    b'{"id":4,"client_id":"shop","raw_event_data":{"n":"line\\nbreak\\ttab"}}',
]


def test_the_body_is_the_json_lines_byte_for_byte() -> None:
    data = copy_rows(
        (b"shop", b"shop.test", b"2026-12-01", b"f", LINES[0]),
        (b"shop", b"shop.test", b"2026-12-01", b"t", LINES[1]),
        (b"blog", b"blog.test", b"2026-12-02", b"f", LINES[2]),
        (b"shop", b"shop.test", b"2026-12-01", b"f", LINES[3]),
    )
    assert b"\\\\" in data  # the JSON's backslashes really were doubled by COPY
    read = read_batch_rows(data)
    assert read.body == b"".join(line + b"\n" for line in LINES)
    assert read.events == 4
    assert read.tallies == {
        ("shop", "shop.test", date(2026, 12, 1), False): [2, len(LINES[0]) + len(LINES[3]) + 2],
        ("shop", "shop.test", date(2026, 12, 1), True): [1, len(LINES[1]) + 1],
        ("blog", "blog.test", date(2026, 12, 2), False): [1, len(LINES[2]) + 1],
    }
    assert sum(size for _, size in read.tallies.values()) == len(read.body)
    assert read.client_counts() == {"shop": 3, "blog": 1}


def test_escaped_ids_are_read_back() -> None:
    read = read_batch_rows(copy_rows((b"odd\\id", b"tab\tsite", b"2026-12-01", b"f", b"{}")))
    assert list(read.tallies) == [("odd\\id", "tab\tsite", date(2026, 12, 1), False)]
    assert read.body == b"{}\n"


def test_an_empty_batch_has_an_empty_body() -> None:
    read = read_batch_rows(b"")
    assert (read.body, read.events, read.tallies) == (b"", 0, {})


def test_rows_that_are_not_the_export_query_are_refused() -> None:
    with pytest.raises(CopyFormatError):
        read_batch_rows(b"shop\tshop.test\t2026-12-01\tmaybe\t{}\n")


@pytest.mark.parametrize(
    "data",
    [
        b"shop\tshop.test\t2026-12-01\n{}\tmore\tfields\tlater\n",  # three fields, then a row
        b"{}\n",
        b"shop\tshop.test\t2026-12-01\tf\t{}\nshort\n",
    ],
)
def test_a_row_without_its_leading_fields_is_refused_not_joined_to_the_next(data: bytes) -> None:
    with pytest.raises(CopyFormatError, match="leading fields"):
        read_batch_rows(data)


def test_a_last_row_without_its_newline_is_read() -> None:
    read = read_batch_rows(copy_rows((b"shop", b"shop.test", b"2026-12-01", b"f", b"{}"))[:-1])
    assert (read.body, read.events) == (b"{}\n", 1)
