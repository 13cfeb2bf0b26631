"""request_privacy: a client's settings and a visitor's signals, combined per request."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import orjson
import pytest

from evothesis.domain import ClientConfig, RequestContext
from evothesis.ingest.envelope import parse_envelope
from evothesis.ingest.privacy import (
    audit_ip_hash,
    protect_envelope,
    protect_payload,
    protect_rejected,
    request_privacy,
)
from evothesis.privacy import ConsentDecision, apply_ip_policy, decide, hash_ip
from tests.support.seed import SEED_BATCH

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SALT = b"s" * 32
IPS = ["203.0.113.9", "2001:db8::1", None, "  "]


def client(**settings: object) -> ClientConfig:
    return ClientConfig("client_x", ip_salt=SALT, **settings)  # type: ignore[arg-type]


GRID = list(
    itertools.product(
        ["standard", "gdpr", "hipaa"],
        ["full", "anonymized", "none"],
        [True, False],
        ["none", "required", "anonymous_without_consent"],
        [False, True],
        [False, True],
        [None, True, False, "yes"],
        IPS,
    )
)


@pytest.mark.parametrize(
    ("level", "ip_collection", "honour_dnt", "consent_mode", "dnt", "gpc", "consent", "ip"), GRID
)
def test_every_combination_follows_the_general_rules(
    level: str,
    ip_collection: str,
    honour_dnt: bool,
    consent_mode: str,
    dnt: bool,
    gpc: bool,
    consent: object,
    ip: str | None,
) -> None:
    config = client(
        privacy_level=level,
        ip_collection=ip_collection,
        honour_dnt=honour_dnt,
        consent_mode=consent_mode,
    )
    context = RequestContext(ip, "ua", NOW, dnt=dnt, gpc=gpc)
    expected_decision = decide(
        dnt=dnt,
        gpc=gpc,
        consent=consent if isinstance(consent, bool) else None,
        honour_dnt=honour_dnt or level != "standard",
        consent_mode=consent_mode,
    )
    kept_ip = None if expected_decision is ConsentDecision.ANONYMIZE else ip
    expected_ip = apply_ip_policy(kept_ip, level=level, ip_collection=ip_collection, salt=SALT)

    privacy = request_privacy(config, context, consent)

    assert privacy.decision is expected_decision
    assert privacy.stored_ip == expected_ip
    assert privacy.strict is (level == "hipaa")
    if level == "gdpr" and ip and ip.strip() and ip_collection == "full":
        assert privacy.stored_ip in (None, hash_ip(ip, SALT))


def test_gdpr_without_a_salt_stores_no_ip_rather_than_a_bare_hash() -> None:
    config = ClientConfig("client_x", privacy_level="gdpr", ip_salt=b"")
    privacy = request_privacy(config, RequestContext("203.0.113.9", None, NOW), None)
    assert privacy.stored_ip is None
    assert audit_ip_hash(config, "203.0.113.9") is None


def test_protect_payload_redacts_and_strips_identifiers_when_anonymous() -> None:
    payload = {
        "eventType": "click",
        "eventId": "0192f4c3-8a2b-7c3d-9e4f-0123456789ab",
        "timestamp": "2026-01-01T00:00:00Z",
        "visitorId": "vis_1",
        "eventData": {"email": "ann@example.org", "userId": "u1"},
    }
    config = client(consent_mode="anonymous_without_consent")
    anonymous = request_privacy(config, RequestContext("203.0.113.9", None, NOW), None)
    assert anonymous.anonymize and anonymous.stored_ip is None
    assert protect_payload(payload, anonymous) == {
        "eventType": "click",
        "eventId": "0192f4c3-8a2b-7c3d-9e4f-0123456789ab",
        "timestamp": "2026-01-01T00:00:00Z",
        "eventData": {"email": "[REDACTED]"},
    }
    consented = request_privacy(config, RequestContext("203.0.113.9", None, NOW), True)
    assert protect_payload(payload, consented)["visitorId"] == "vis_1"
    assert payload["eventData"] == {"email": "ann@example.org", "userId": "u1"}  # not mutated


@pytest.mark.parametrize("level", ["standard", "gdpr", "hipaa"])
@pytest.mark.parametrize("anonymous", [False, True])
def test_a_rejected_event_is_redacted_in_every_field_even_those_valid_events_skip(
    level: str, anonymous: bool
) -> None:
    """The event id and timestamp of a stored event were validated into harmless shapes;
    a rejected event's may be exactly what failed, so they are scanned like the rest."""
    rejected = {
        "eventType": "click",
        "eventId": "ann@example.org",
        "timestamp": "078-05-1120",
        "visitorId": "vis_1",
        "eventData": {"note": "call (415) 555-2671"},
    }
    mode = "anonymous_without_consent" if anonymous else "none"
    privacy = request_privacy(
        client(privacy_level=level, consent_mode=mode),
        RequestContext("203.0.113.9", None, NOW),
        None,
    )
    protected = protect_rejected(rejected, privacy)
    assert isinstance(protected, dict)
    assert protected["eventId"] == protected["timestamp"] == "[REDACTED]"
    assert protected["eventData"] == {"note": "call [REDACTED]"}
    assert ("visitorId" in protected) is not anonymous
    assert protect_rejected(["ann@example.org"], privacy) == ["[REDACTED]"]


BATCHES = [
    SEED_BATCH,
    {**SEED_BATCH, "url": "https://localhost/p?email=ann@example.org", "visitorId": "a@b.co"},
    {
        **SEED_BATCH,
        "events": [
            {"eventType": "click", "url": "https://localhost/own?token=x", "sessionId": "s2"},
            {"eventType": "scroll", "eventData": {"password": "pw", "n": 1}},
        ],
    },
    {k: v for k, v in SEED_BATCH.items() if k != "timestamp"},
]


@pytest.mark.parametrize("body", BATCHES)
@pytest.mark.parametrize(
    "settings",
    [{}, {"privacy_level": "hipaa"}, {"consent_mode": "anonymous_without_consent"}],
)
def test_a_batch_is_protected_exactly_like_its_events_one_by_one(
    body: dict[str, object], settings: dict[str, object]
) -> None:
    envelope = parse_envelope(orjson.dumps(body), max_batch_events=500, now=NOW)
    privacy = request_privacy(client(**settings), RequestContext("203.0.113.9", "ua", NOW), None)
    one_by_one = [protect_payload(event.payload, privacy) for event in envelope.events]
    assert protect_envelope(envelope, privacy) == one_by_one
