"""The browser tracker as the collector serves it: minified, with a client's settings baked in.

``static/tracking.js`` is kept readable (it is documentation as much as code); browsers get
it minified. Minifying costs milliseconds, so the minified base is computed once per process
and each response only prepends one line of configuration::

    window.__EVOTHESIS_EMBEDDED__ = {"client_id":"client_acme_corp",...};

That line ends up inside an HTML page whenever someone inlines the tracker in a
``<script>`` element, so the JSON is escaped so that no value can close the element
(``</script>``), open a comment (``<!--``) or break a JavaScript string (U+2028/U+2029).

Nothing here does I/O except reading the packaged file once.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from functools import cache
from importlib import resources

import orjson
import rjsmin

__all__ = [
    "EMBEDDED_GLOBAL",
    "GZIP_BUDGET_BYTES",
    "embedded_config_line",
    "render_tracker",
    "tracker_size_report",
    "tracker_source",
]

#: Name of the global the tracker reads its server-side configuration from (and deletes).
EMBEDDED_GLOBAL = "window.__EVOTHESIS_EMBEDDED__"

#: The tracker must stay below this many bytes once minified and gzipped; it is on the
#: critical path of every page of every client site.
GZIP_BUDGET_BYTES = 10 * 1024

# `<`, `>` and `&` only ever occur inside JSON strings, where a \u escape means the same
# thing, so escaping them keeps the JSON identical while making `</script>` and `<!--`
# impossible. U+2028/U+2029 are line terminators in older JavaScript string literals.
_SCRIPT_SAFE = str.maketrans(
    {
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


@cache
def tracker_source() -> str:
    """The readable tracker source, read from the package once per process."""
    return resources.files("evothesis").joinpath("static/tracking.js").read_text(encoding="utf-8")


@cache
def _minified() -> bytes:
    """The minified tracker, computed once: every response shares it."""
    minified: str = rjsmin.jsmin(tracker_source())
    return minified.encode("utf-8")


def embedded_config_line(config: Mapping[str, object]) -> str:
    """The JavaScript statement that hands ``config`` to the tracker, safe inside ``<script>``.

    Keys are sorted so the same configuration always yields the same bytes (stable ETags).
    Raises ``TypeError`` when a value is not JSON-serialisable.
    """
    payload = orjson.dumps(dict(config), option=orjson.OPT_SORT_KEYS).decode("utf-8")
    return f"{EMBEDDED_GLOBAL} = {payload.translate(_SCRIPT_SAFE)};\n"


def render_tracker(config: Mapping[str, object] | None, *, minified: bool = True) -> bytes:
    """The tracker as served to browsers, with ``config`` embedded ahead of it.

    ``config`` carries what the server knows better than the page: ``client_id``,
    ``privacy_mode``, ``honour_dnt``, ``consent_required``, optionally ``endpoint``,
    ``site_id`` and ``custom_fields``. With ``None`` the tracker relies on the page's
    ``window.EvothesisConfig`` alone. ``minified=False`` serves the commented source, for
    debugging.
    """
    body = _minified() if minified else tracker_source().encode("utf-8")
    if config is None:
        return body
    return embedded_config_line(config).encode("utf-8") + body


def tracker_size_report() -> dict[str, int]:
    """Byte sizes of the tracker: raw source, minified, and minified + gzip (level 9).

    The gzipped size is what a visitor downloads; it is checked against
    ``GZIP_BUDGET_BYTES`` by ``scripts/tracker-size`` and the unit tests.
    """
    minified = _minified()
    return {
        "raw": len(tracker_source().encode("utf-8")),
        "minified": len(minified),
        "gzipped": len(gzip.compress(minified, compresslevel=9, mtime=0)),
    }
