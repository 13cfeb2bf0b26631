"""An event sent as query parameters: ``GET /collect?eventType=pageview&siteId=…``.

The classic image pixel, for pages without JavaScript (a ``<noscript>`` image) and for
e-mails. The parameters become the JSON object a POST would carry, so the event goes
through the same parsing, authorization, privacy and limits as any other: nothing here
decides anything about it.

Parameters named like an event's core fields are those fields; ``eventData.<name>`` and
every other parameter (cache busters, campaign tags) go into ``eventData`` as strings. A
batch, or an object-valued field, cannot be spelled as parameters: POST it instead.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import orjson

from evothesis.errors import InvalidEvent, MalformedBody, PayloadTooLarge

#: The fields a parameter sets directly; everything else is event data.
EVENT_FIELDS = frozenset(
    {
        "eventType",
        "eventId",
        "sessionId",
        "visitorId",
        "siteId",
        "timestamp",
        "url",
        "path",
        "referrer",
    }
)
#: Fields whose values are objects or lists: no parameter can hold them.
_STRUCTURED_FIELDS = frozenset({"eventData", "attribution", "events"})
_DATA_PREFIX = "eventData."
#: More parameters than any pixel sends; bounds the parsing work a query can ask for.
MAX_PARAMETERS = 100


def event_from_query(query: bytes, *, max_bytes: int) -> bytes:
    """The JSON body the query string stands for. Raises ``PayloadTooLarge`` past
    ``max_bytes`` or ``MAX_PARAMETERS``, ``MalformedBody`` for bytes that are not UTF-8,
    and ``InvalidEvent`` (naming the parameter) for one given twice or one that cannot be
    a parameter."""
    if len(query) > max_bytes:
        raise PayloadTooLarge(f"query string exceeds {max_bytes} bytes")
    try:
        pairs = parse_qsl(
            query.decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_PARAMETERS,
        )
    except UnicodeDecodeError:  # raw bytes, or percent-escapes that are not UTF-8
        raise MalformedBody("query string is not percent-encoded UTF-8") from None
    except ValueError:
        raise PayloadTooLarge(f"more than {MAX_PARAMETERS} query parameters") from None
    event: dict[str, object] = {}
    data: dict[str, object] = {}
    for name, value in pairs:
        if name in _STRUCTURED_FIELDS:
            raise InvalidEvent(
                f"{name} cannot be sent as a query parameter; POST the event as JSON",
                field=name,
            )
        if name in EVENT_FIELDS:
            _put(event, name, value, field=name)
        else:
            key = name.removeprefix(_DATA_PREFIX)
            _put(data, key, value, field=f"eventData.{key}")
    if data:
        event["eventData"] = data
    return orjson.dumps(event)


def _put(target: dict[str, object], key: str, value: str, *, field: str) -> None:
    if key in target:
        raise InvalidEvent(f"query parameter {field} is given more than once", field=field)
    target[key] = value
