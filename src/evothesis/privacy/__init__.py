"""Privacy rules applied to every event before it is stored: pure functions, no I/O.

Redaction of PII in payloads and URLs, IP protection per privacy level, and consent /
DNT / GPC decisions. Kept free of configuration and HTTP imports so each rule can be
tested exhaustively on its own and reused by the collector, the exporter and tools.
"""

from __future__ import annotations

from evothesis.privacy.consent import (
    ConsentDecision,
    decide,
    header_signals,
    signal_on,
    strip_identifiers,
)
from evothesis.privacy.identity import pseudonymise
from evothesis.privacy.ip import anonymize_ip, apply_ip_policy, hash_ip, normalize_ip, protect_ip
from evothesis.privacy.redact import (
    REDACTED,
    is_sensitive_key,
    redact_event_data,
    redact_text,
    redact_url,
    redact_value,
)

__all__ = [
    "REDACTED",
    "ConsentDecision",
    "anonymize_ip",
    "apply_ip_policy",
    "decide",
    "hash_ip",
    "header_signals",
    "is_sensitive_key",
    "normalize_ip",
    "protect_ip",
    "pseudonymise",
    "redact_event_data",
    "redact_text",
    "redact_url",
    "redact_value",
    "signal_on",
    "strip_identifiers",
]
