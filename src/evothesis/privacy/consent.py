"""Consent and browser privacy signals (DNT, GPC): whether and how an event may be kept.

Pure decisions on values the collector already has; the collector acts on the result.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

__all__ = [
    "CONSENT_MODES",
    "IDENTIFIER_KEYS",
    "ConsentDecision",
    "decide",
    "header_signals",
    "signal_on",
    "strip_identifiers",
]

CONSENT_MODES: Final = frozenset({"none", "required", "anonymous_without_consent"})

#: Keys (lowercased, separators removed) that tie events to a person or a device. The
#: tenant's ``client_id`` is deliberately absent: it is ours, not the visitor's.
IDENTIFIER_KEYS: Final = frozenset(
    {
        "visitorid",
        "sessionid",
        "userid",
        "uid",
        "anonymousid",
        "distinctid",
        "deviceid",
        "fingerprint",
        "ip",
        "ipaddress",
    }
)

_MAX_DEPTH: Final = 64


class ConsentDecision(enum.Enum):
    """What to do with an event."""

    ALLOW = "allow"
    DROP = "drop"
    ANONYMIZE = "anonymize"


def decide(
    *, dnt: bool, gpc: bool, consent: bool | None, honour_dnt: bool, consent_mode: str
) -> ConsentDecision:
    """Decide an event's fate from the visitor's signals and the client's settings.

    An honoured DNT/GPC signal is an explicit "do not track me" and wins even over a
    consent flag, which may be stale or set by a banner default. Only ``consent is True``
    counts as consent: ``None`` (unknown) is treated like a refusal.
    """
    mode = str(consent_mode).lower()
    if mode not in CONSENT_MODES:
        expected = ", ".join(sorted(CONSENT_MODES))
        raise ValueError(f"unknown consent_mode {consent_mode!r}; expected one of: {expected}")
    if honour_dnt and (dnt or gpc):
        return ConsentDecision.DROP
    if mode == "none" or consent is True:
        return ConsentDecision.ALLOW
    if mode == "required":
        return ConsentDecision.DROP
    return ConsentDecision.ANONYMIZE


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts as well as Starlette headers."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


def signal_on(value: str | None) -> bool:
    """Whether a DNT / Sec-GPC header value turns the signal on (only ``1`` does)."""
    return value is not None and value.split(",", 1)[0].strip() == "1"


def header_signals(headers: Mapping[str, str]) -> tuple[bool, bool]:
    """``(dnt, gpc)`` from the ``DNT: 1`` and ``Sec-GPC: 1`` request headers.

    Only the value ``1`` turns a signal on (``DNT: 0`` explicitly allows tracking).
    """
    return signal_on(_header(headers, "dnt")), signal_on(_header(headers, "sec-gpc"))


def _is_identifier(key: object) -> bool:
    if not isinstance(key, str):
        return False
    return "".join(c for c in key.lower() if c.isalnum()) in IDENTIFIER_KEYS


def _strip(value: object, depth: int) -> object:
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: _strip(v, depth + 1) for k, v in value.items() if not _is_identifier(k)}
    if isinstance(value, list):
        return [_strip(item, depth + 1) for item in value]
    return value


def strip_identifiers(event: dict[str, object]) -> dict[str, object]:
    """A copy of ``event`` without visitor/session/user/device identifiers, at any depth.

    Identifiers are removed from nested data too (batched inner events, a custom event's
    ``userId``), because anonymous means not linkable, wherever the link hides. The input
    is not mutated. The stored IP is the collector's to drop (see ``apply_ip_policy``).
    """
    return {k: _strip(v, 1) for k, v in event.items() if not _is_identifier(k)}
