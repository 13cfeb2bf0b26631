"""A client's privacy rules applied to one request: pure decisions over privacy functions.

Everything here runs before a row exists, so nothing unprotected reaches the write
buffer, the database, the spool or a log line.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

from evothesis.domain import (
    COLLECT_VERIFIED,
    ClientConfig,
    ConsentMode,
    Envelope,
    IpCollection,
    PrivacyLevel,
    RequestContext,
)
from evothesis.privacy import (
    ConsentDecision,
    apply_ip_policy,
    decide,
    hash_ip,
    redact_event_data,
    redact_text,
    redact_value,
    strip_identifiers,
)

__all__ = [
    "RequestPrivacy",
    "audit_ip_hash",
    "protect_envelope",
    "protect_payload",
    "protect_rejected",
    "request_privacy",
]


class RequestPrivacy(NamedTuple):
    """What the client's rules make of one request."""

    decision: ConsentDecision
    #: The IP as it may be stored (raw, anonymised, HMAC or ``None``).
    stored_ip: str | None
    #: hipaa redacts strictly (personal keys such as name or address too).
    strict: bool
    #: The ``User-Agent`` as it may be stored and parsed: PII a sender put in it (a bot's
    #: contact e-mail, a phone number) redacted like any other stored text.
    user_agent: str | None = None

    @property
    def anonymize(self) -> bool:
        return self.decision is ConsentDecision.ANONYMIZE


def request_privacy(
    client: ClientConfig, context: RequestContext, consent: object
) -> RequestPrivacy:
    """Decide the request's fate from the visitor's signals and the client's settings.

    Only ``consent is True`` counts as consent. A gdpr client without a salt stores no IP
    rather than a bare hash.
    """
    ip = context.client_ip
    if (
        client.privacy_level is PrivacyLevel.STANDARD
        and client.ip_collection is IpCollection.FULL
        and client.consent_mode is ConsentMode.NONE
        and not (client.honour_dnt and (context.dnt or context.gpc))
    ):
        # The common case, decided without the general rules (which agree: unit-tested).
        return RequestPrivacy(
            ConsentDecision.ALLOW,
            ip if ip and ip.strip() else None,
            False,
            protect_user_agent(context.user_agent, False),
        )
    decision = decide(
        dnt=context.dnt,
        gpc=context.gpc,
        consent=consent if isinstance(consent, bool) else None,
        honour_dnt=client.honours_dnt,
        consent_mode=client.consent_mode,
    )
    if decision is ConsentDecision.ANONYMIZE or (
        client.privacy_level is PrivacyLevel.GDPR and not client.ip_salt
    ):
        ip = None
    stored = apply_ip_policy(
        ip, level=client.privacy_level, ip_collection=client.ip_collection, salt=client.ip_salt
    )
    strict = client.privacy_level is PrivacyLevel.HIPAA
    return RequestPrivacy(decision, stored, strict, protect_user_agent(context.user_agent, strict))


@lru_cache(maxsize=10_000)
def protect_user_agent(user_agent: str | None, strict: bool) -> str | None:
    """A ``User-Agent`` as it may be stored. Cached: a visitor sends many requests with
    the same one, and browsers' agents pass the redactor's first, cheap test anyway."""
    if user_agent is None:
        return None
    return redact_text(user_agent, strict=strict)


def protect_payload(
    payload: dict[str, Any],
    privacy: RequestPrivacy,
    verified: frozenset[str] = COLLECT_VERIFIED,
) -> dict[str, Any]:
    """The event as it may be stored: PII redacted (except the top-level ``verified`` keys,
    which the parser has already made PII-free), identifiers gone when anonymous."""
    redacted = redact_event_data(payload, strict=privacy.strict, verified=verified)
    assert isinstance(redacted, dict)
    return strip_identifiers(redacted) if privacy.anonymize else redacted


def protect_rejected(raw: object, privacy: RequestPrivacy) -> object:
    """A rejected inner event (any JSON value) as it may be stored in ``failed_events``:
    redacted like a stored event, since it carries the same visitor's data. Every field is
    scanned: its event id or timestamp may be what failed validation, so no field is known
    to be harmless."""
    redacted = redact_value(raw, strict=privacy.strict)
    if privacy.anonymize and isinstance(redacted, dict):
        return strip_identifiers(redacted)
    return redacted


def protect_envelope(envelope: Envelope, privacy: RequestPrivacy) -> list[dict[str, Any]]:
    """``protect_payload`` of every event of a request, the inherited part done once.

    An inner payload is ``{**inherited, **own, "eventId": id}`` (see ``Envelope``), and
    protection works key by key, so protecting the parts and merging them gives the same
    result as protecting each merged payload, for a fraction of the work on batches.
    JSONB keeps no key order, so only the order of keys may differ.
    """
    verified = envelope.verified
    protected = [protect_payload(envelope.events[0].payload, privacy, verified)]
    if not envelope.inner_count:
        return protected
    shared = protect_payload(envelope.inherited, privacy, verified)
    for event, own in zip(envelope.events[1:], envelope.own, strict=True):
        payload = {**shared, **protect_payload(own, privacy, verified)}
        payload["eventId"] = event.event_id  # canonical, as the parser stored it
        protected.append(payload)
    return protected


def audit_ip_hash(client: ClientConfig, ip: str | None) -> str | None:
    """The sender's IP for the audit trail: keyed hash only, never the address."""
    if ip is None or not ip.strip() or not client.ip_salt:
        return None
    return hash_ip(ip, client.ip_salt)
