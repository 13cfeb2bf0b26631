"""Rendering deliveries from raw objects (export/render.py): each file in its delivery's own
format, the seed's JSON document a document and JSON Lines lines, whether a delivery is one
batch's share (rendered whole from its object) or several (gathered, then rendered per day);
and so also after a data-subject deletion, which renders a delivery again from its objects
without the visitor."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from evothesis.domain import DeliveryTrigger
from evothesis.export.deliveries import Delivery, Share
from evothesis.export.render import Want, render_day, split_object
from evothesis.gdpr.lines import remove_from_object

CLAIMED = datetime(2026, 12, 3, 10, tzinfo=UTC)


def full_line(id_: int, visitor: str) -> bytes:
    """A raw line with every column a client file carries."""
    return orjson.dumps(
        {
            "id": id_,
            "event_id": f"00000000-0000-4000-8000-{id_:012d}",
            "event_type": "pageview",
            "session_id": "s",
            "visitor_id": visitor,
            "site_id": "shop.test",
            "client_id": "shop",
            "timestamp": f"2026-12-03T10:00:{id_:02d}+00:00",
            "url": None,
            "path": None,
            "referrer": None,
            "ip_address": None,
            "user_agent": None,
            "raw_event_data": {"n": id_},
            "created_at": f"2026-12-03T10:00:{id_:02d}+00:00",
        }
    )


def raw_object(first_id: int, visitors: str) -> bytes:
    lines = (full_line(n, v) + b"\n" for n, v in enumerate(visitors, first_id))
    return gzip.compress(b"".join(lines))


def delivery(fmt: str, batches: int) -> Delivery:
    shares = tuple(
        Share(batch_id, CLAIMED, f"raw-events/b{batch_id}", 3) for batch_id in range(1, batches + 1)
    )
    trigger = DeliveryTrigger.REAL_TIME if batches == 1 else DeliveryTrigger.SCHEDULE
    return Delivery("shop", 7, trigger, fmt, CLAIMED, shares)


def events_of(fmt: str, data: bytes) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A file's events, and the metadata it embeds (the document's; none for lines)."""
    if fmt == "json":
        document = orjson.loads(data)
        assert list(document) == ["export_metadata", "events"]
        return document["events"], document["export_metadata"]
    return [orjson.loads(line) for line in data.splitlines()], None


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_a_real_time_delivery_is_rendered_whole_in_its_own_format(fmt: str) -> None:
    one = delivery(fmt, 1)
    raw = raw_object(1, "xyx")
    (file,) = split_object(raw, [Want(one, fmt, whole=True)]).parts
    assert not isinstance(file, bytes)
    events, embedded = events_of(fmt, file.data)
    assert [(e["id"], e["visitor_id"]) for e in events] == [(1, "x"), (2, "y"), (3, "x")]
    manifest = orjson.loads(file.manifest)["export_metadata"]
    assert (manifest["event_count"], manifest["format"], manifest["batch_id"]) == (3, fmt, 1)
    if fmt == "json":
        assert embedded == manifest  # the document carries its manifest's metadata
    # A pure function of the delivery and the object: the same bytes every time.
    assert split_object(raw, [Want(one, fmt, whole=True)]).parts == [file]


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_a_delivery_of_several_batches_is_one_file_of_the_day_in_its_own_format(
    fmt: str,
) -> None:
    several = delivery(fmt, 2)
    lines = b"".join(
        part
        for raw in (raw_object(1, "xyx"), raw_object(4, "zz"))
        for part in split_object(raw, [Want(several, fmt, whole=False)]).parts
        if isinstance(part, bytes)
    )
    file = render_day(lines, several, CLAIMED.date(), fmt)
    events, embedded = events_of(fmt, file.data)
    assert [e["id"] for e in events] == [1, 2, 3, 4, 5]
    manifest = orjson.loads(file.manifest)["export_metadata"]
    assert (manifest["event_count"], manifest["delivery"], manifest["trigger"]) == (
        5,
        7,
        "schedule",
    )
    assert (manifest["batch_id"], manifest["batch_ids"]) == (None, [1, 2])
    if fmt == "json":
        assert embedded == manifest


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_a_deletion_renders_a_json_delivery_again_in_its_own_format(fmt: str) -> None:
    """A data-subject deletion rewrites the raw object without the visitor and renders the
    delivery from it: the seed's document stays a document (its metadata counting what is
    left), JSON Lines stay lines."""
    removed, kept = remove_from_object(raw_object(1, "xyx"), "shop", "x")
    assert removed == 2 and kept is not None
    (file,) = split_object(kept, [Want(delivery(fmt, 1), fmt, whole=True)]).parts
    assert not isinstance(file, bytes)
    events, embedded = events_of(fmt, file.data)
    assert [(e["id"], e["visitor_id"]) for e in events] == [(2, "y")]
    assert orjson.loads(file.manifest)["export_metadata"]["event_count"] == 1
    if fmt == "json":
        assert embedded is not None and embedded["event_count"] == 1
