"""Finding and removing one visitor's lines in a raw object (gdpr/lines.py)."""

from __future__ import annotations

import gzip

import orjson
import pytest

from evothesis.errors import RawFormatError
from evothesis.gdpr.lines import (
    FoundEvent,
    find_in_object,
    merge_events,
    remove_from_object,
    split_visitor,
)


def line(id_: int, client: str, visitor: str | None, **extra: object) -> bytes:
    """A raw line spelled the way PostgreSQL's json_build_object writes it (" : ")."""
    fields = {"id": id_, "client_id": client, "visitor_id": visitor, "created_at": f"t{id_:03}"}
    fields.update(extra)
    return (
        b"{"
        + b", ".join(orjson.dumps(k) + b" : " + orjson.dumps(v) for k, v in fields.items())
        + b"}"
    )


OBJECT_LINES = [
    line(1, "shop", "v-1"),
    line(2, "shop", "v-10"),  # a longer id that starts with the requested one
    line(3, "blog", "v-1"),  # same visitor id, another client: another person
    line(4, "shop", None, note='mentions "v-1" in the data'),
    line(5, "shop", "v-1", note="second"),
]
OBJECT = b"".join(item + b"\n" for item in OBJECT_LINES)


def test_only_the_clients_visitor_is_taken_and_the_rest_is_kept_byte_for_byte() -> None:
    split = split_visitor(OBJECT, "shop", "v-1")
    assert split.matched == [OBJECT_LINES[0], OBJECT_LINES[4]]
    assert split.kept == b"".join(item + b"\n" for item in OBJECT_LINES[1:4])


def test_an_object_without_the_visitor_comes_back_as_it_was() -> None:
    for visitor in ("v-2", "v-"):
        split = split_visitor(OBJECT, "shop", visitor)
        assert split.matched == []
        assert split.kept is OBJECT


@pytest.mark.parametrize(
    "visitor",
    ['quote " inside', "back\\slash", "tab\tand newline\n", "ünïcode 日本", "\u2028"],
)
def test_ids_json_may_spell_differently_are_still_found(visitor: str) -> None:
    data = line(1, "shop", visitor) + b"\n" + line(2, "shop", "other") + b"\n"
    split = split_visitor(data, "shop", visitor)
    assert split.matched == [line(1, "shop", visitor)]
    assert split.kept == line(2, "shop", "other") + b"\n"


def test_a_missing_final_newline_is_tolerated() -> None:
    split = split_visitor(OBJECT.rstrip(b"\n"), "shop", "v-10")
    assert split.matched == [OBJECT_LINES[1]]
    assert split.kept.count(b"\n") == 4


def test_a_damaged_line_that_may_be_the_visitors_stops_the_request() -> None:
    damaged = OBJECT + b'{"client_id" : "shop", "visitor_id" : "v-1", \n'
    with pytest.raises(RawFormatError, match="raw line 6"):
        split_visitor(damaged, "shop", "v-1")
    # A damaged line that cannot be the visitor's is none of this request's business.
    assert split_visitor(OBJECT + b"{broken\n", "shop", "v-1").matched


def test_rewriting_an_object_without_the_visitor_leaves_it_alone() -> None:
    raw = gzip.compress(OBJECT)
    assert remove_from_object(raw, "shop", "nobody") == (0, None)
    removed, kept = remove_from_object(raw, "shop", "v-1")
    assert removed == 2
    assert kept is not None
    assert gzip.decompress(kept) == split_visitor(OBJECT, "shop", "v-1").kept
    # Same input, same bytes: a repeated rewrite is idempotent.
    assert remove_from_object(raw, "shop", "v-1") == (2, kept)


def test_the_export_holds_each_event_once_oldest_first() -> None:
    found = find_in_object(gzip.compress(OBJECT), "shop", "v-1")
    assert [event.id for event in found] == [1, 5]
    buffered = [FoundEvent("t005", 5, OBJECT_LINES[4]), FoundEvent("t000", 9, b'{"late":1}')]
    merged = merge_events(buffered, found)
    assert merged.splitlines() == [b'{"late":1}', OBJECT_LINES[0], OBJECT_LINES[4]]
    assert merge_events() == b""
