"""If-None-Match matching for the trackers' strong ETags (RFC 9110 13.1.2)."""

from __future__ import annotations

import pytest

from evothesis.api.conditional import etag_matches, strong_etag

ETAG = strong_etag(b"tracker body")


def test_strong_etag_is_a_quoted_digest_of_the_bytes() -> None:
    assert ETAG.startswith('"') and ETAG.endswith('"') and len(ETAG) == 34
    assert strong_etag(b"tracker body") == ETAG
    assert strong_etag(b"tracker body!") != ETAG


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (ETAG, True),
        (f"W/{ETAG}", True),
        (f'"old", {ETAG}', True),
        (f'"a,b", W/{ETAG}', True),
        ("*", True),
        (" * ", True),
        ('"old"', False),
        (ETAG.strip('"'), False),
        (f'"{ETAG}"', False),
        ("", False),
        (None, False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert etag_matches(header, ETAG) is matches
