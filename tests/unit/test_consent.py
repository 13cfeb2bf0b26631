"""Consent, DNT and GPC decisions, and identifier stripping for anonymous events."""

from __future__ import annotations

import pytest

from evothesis.domain import DropReason
from evothesis.privacy.consent import (
    ConsentDecision,
    decide,
    header_signals,
    strip_identifiers,
)

ALLOW, ANONYMIZE = ConsentDecision.ALLOW, ConsentDecision.ANONYMIZE
NO_CONSENT, DO_NOT_TRACK = ConsentDecision.NO_CONSENT, ConsentDecision.DO_NOT_TRACK


@pytest.mark.parametrize(
    ("mode", "consent", "expected"),
    [
        ("none", None, ALLOW),
        ("none", False, ALLOW),
        ("none", True, ALLOW),
        ("required", None, NO_CONSENT),
        ("required", False, NO_CONSENT),
        ("required", True, ALLOW),
        ("anonymous_without_consent", None, ANONYMIZE),
        ("anonymous_without_consent", False, ANONYMIZE),
        ("anonymous_without_consent", True, ALLOW),
    ],
)
@pytest.mark.parametrize("honour_dnt", [True, False])
def test_consent_modes_without_signals(
    mode: str, consent: bool | None, expected: ConsentDecision, honour_dnt: bool
) -> None:
    decision = decide(
        dnt=False, gpc=False, consent=consent, honour_dnt=honour_dnt, consent_mode=mode
    )
    assert decision is expected


@pytest.mark.parametrize("mode", ["none", "required", "anonymous_without_consent"])
@pytest.mark.parametrize("consent", [None, False, True])
@pytest.mark.parametrize(("dnt", "gpc"), [(True, False), (False, True), (True, True)])
def test_honoured_signals_drop_whatever_the_consent(
    mode: str, consent: bool | None, dnt: bool, gpc: bool
) -> None:
    decision = decide(dnt=dnt, gpc=gpc, consent=consent, honour_dnt=True, consent_mode=mode)
    assert decision is DO_NOT_TRACK


@pytest.mark.parametrize(
    ("mode", "consent", "expected"),
    [
        ("none", None, ALLOW),
        ("required", True, ALLOW),
        ("required", None, NO_CONSENT),
        ("anonymous_without_consent", None, ANONYMIZE),
    ],
)
def test_signals_are_ignored_when_not_honoured(
    mode: str, consent: bool | None, expected: ConsentDecision
) -> None:
    decision = decide(dnt=True, gpc=True, consent=consent, honour_dnt=False, consent_mode=mode)
    assert decision is expected


def test_a_drop_names_its_reason_and_a_kept_event_has_none() -> None:
    assert DO_NOT_TRACK.drop_reason is DropReason.DO_NOT_TRACK
    assert NO_CONSENT.drop_reason is DropReason.NO_CONSENT
    assert ALLOW.drop_reason is None
    assert ANONYMIZE.drop_reason is None


@pytest.mark.parametrize("mode", ["", "optional", "strict"])
def test_unknown_consent_mode_is_an_error(mode: str) -> None:
    with pytest.raises(ValueError, match="consent_mode"):
        decide(dnt=False, gpc=False, consent=True, honour_dnt=False, consent_mode=mode)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, (False, False)),
        ({"DNT": "1"}, (True, False)),
        ({"dnt": "1"}, (True, False)),
        ({"Dnt": " 1 "}, (True, False)),
        ({"DNT": "0"}, (False, False)),
        ({"DNT": "yes"}, (False, False)),
        ({"DNT": ""}, (False, False)),
        ({"Sec-GPC": "1"}, (False, True)),
        ({"sec-gpc": "1"}, (False, True)),
        ({"SEC-GPC": "1"}, (False, True)),
        ({"Sec-GPC": "0"}, (False, False)),
        ({"DNT": "1", "Sec-GPC": "1"}, (True, True)),
        ({"DNT": "1, 1"}, (True, False)),
        ({"User-Agent": "x", "Accept": "*/*"}, (False, False)),
    ],
)
def test_header_signals(headers: dict[str, str], expected: tuple[bool, bool]) -> None:
    assert header_signals(headers) == expected


def test_header_signals_with_a_case_insensitive_mapping() -> None:
    from starlette.datastructures import Headers

    headers = Headers(raw=[(b"dnt", b"1"), (b"sec-gpc", b"1")])
    assert header_signals(headers) == (True, True)


def test_strip_identifiers() -> None:
    event = {
        "eventType": "batch",
        "sessionId": "sess_abc123",
        "visitorId": "vis_xyz789",
        "siteId": "example.com",
        "client_id": "client_acme_corp",
        "timestamp": "2025-07-11T12:00:00Z",
        "events": [
            {"eventType": "click", "session_id": "s", "eventData": {"element": "button1"}},
            {"eventType": "custom", "eventData": {"userId": "u-42", "USER_ID": 1, "plan": "pro"}},
        ],
        "anonymousId": "a",
        "device-id": "d",
        "ip": "1.2.3.4",
    }
    assert strip_identifiers(event) == {
        "eventType": "batch",
        "siteId": "example.com",
        "client_id": "client_acme_corp",
        "timestamp": "2025-07-11T12:00:00Z",
        "events": [
            {"eventType": "click", "eventData": {"element": "button1"}},
            {"eventType": "custom", "eventData": {"plan": "pro"}},
        ],
    }
    assert event["sessionId"] == "sess_abc123"  # the input is not mutated


def test_strip_identifiers_keeps_look_alikes() -> None:
    event = {"sessionCount": 3, "visitor_type": "new", "user_agent": "UA", "eventId": "e"}
    assert strip_identifiers(event) == event
