"""Cacheable script responses: strong ETags and ``304 Not Modified``.

Trackers are fetched on every page view of every client site, so browsers and CDNs must be
able to revalidate them cheaply; the generic and the per-client tracker share this code.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["JAVASCRIPT", "TRACKER_MAX_AGE", "etag_matches", "script_response", "strong_etag"]

#: Browsers revalidate after this many seconds; the ETag makes that a cheap 304.
TRACKER_MAX_AGE: Final = 300

JAVASCRIPT: Final = "application/javascript; charset=utf-8"

# An entity tag, optionally weak; a comma may occur inside the quotes.
_ENTITY_TAG: Final = re.compile(r'(?:W/)?"[^"]*"')


def strong_etag(body: bytes) -> str:
    """A strong validator: the same bytes always give the same tag, across processes."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """``If-None-Match`` semantics (RFC 9110 13.1.2): a list of tags or ``*``, compared
    weakly, because a proxy may have marked our strong tag as weak."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.removeprefix("W/") == etag for tag in _ENTITY_TAG.findall(if_none_match))


def script_response(
    request: Request, body: bytes, *, etag: str | None = None, max_age: int = TRACKER_MAX_AGE
) -> Response:
    """The script with its validator, or an empty 304 when the client already has it.

    Pass a precomputed ``etag`` when ``body`` is cached, to skip hashing it again.
    """
    etag = etag or strong_etag(body)
    headers = {"ETag": etag, "Cache-Control": f"public, max-age={max_age}"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=JAVASCRIPT, headers=headers)
