"""Consent and browser privacy signals (DNT, GPC): whether and how an event may be kept.

Pure decisions on values the collector already has; the collector acts on the result.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from evothesis.domain import ConsentMode, DropReason, parse_choice

__all__ = [
    "IDENTIFIER_KEYS",
    "ConsentDecision",
    "decide",
    "header_signals",
    "signal_on",
    "strip_identifiers",
]

#: Keys (lowercased, separators removed) that tie events to a person or a device. The
#: tenant's ``client_id`` is deliberately absent: it is ours, not the visitor's.
IDENTIFIER_KEYS: Final = frozenset(
    {
        "visitorid",
        "sessionid",
        "userid",
        "uid",
        "anonymousid",
        "previousid",
        "distinctid",
        "deviceid",
        "fingerprint",
        "ip",
        "ipaddress",
    }
)

_MAX_DEPTH: Final = 64


class ConsentDecision(enum.Enum):
    """What to do with an event, and for a drop, why: the reason is decided here, once."""

    ALLOW = "allow"
    ANONYMIZE = "anonymize"
    #: An honoured DNT or GPC signal.
    DO_NOT_TRACK = "do_not_track"
    #: The client requires consent and the event does not carry it.
    NO_CONSENT = "no_consent"

    @property
    def drop_reason(self) -> DropReason | None:
        """Why the event is dropped, or ``None`` when it is kept."""
        return _DROP_REASONS.get(self)


_DROP_REASONS: Final = {
    ConsentDecision.DO_NOT_TRACK: DropReason.DO_NOT_TRACK,
    ConsentDecision.NO_CONSENT: DropReason.NO_CONSENT,
}


def decide(
    *, dnt: bool, gpc: bool, consent: bool | None, honour_dnt: bool, consent_mode: str
) -> ConsentDecision:
    """Decide an event's fate from the visitor's signals and the client's settings.

    An honoured DNT/GPC signal is an explicit "do not track me" and wins even over a
    consent flag, which may be stale or set by a banner default. Only ``consent is True``
    counts as consent: ``None`` (unknown) is treated like a refusal.
    """
    mode = parse_choice(ConsentMode, consent_mode, setting="consent_mode")
    if honour_dnt and (dnt or gpc):
        return ConsentDecision.DO_NOT_TRACK
    if mode is ConsentMode.NONE or consent is True:
        return ConsentDecision.ALLOW
    if mode is ConsentMode.REQUIRED:
        return ConsentDecision.NO_CONSENT
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
