"""Pseudonymous user ids: the keyed hash a client's user ids are stored as.

The same construction as a gdpr client's IP addresses (HMAC-SHA256 under the client's
salt), for the same reason: a bare hash of an e-mail address or a database id is reversed
by hashing candidates, a keyed one is not without the salt.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["pseudonymise"]


def pseudonymise(identifier: str, salt: bytes) -> str:
    """Hex HMAC-SHA256 of ``identifier`` under the client's salt; an empty salt would be a
    bare hash, so it is refused."""
    if not salt:
        raise ValueError("pseudonymising an id needs a non-empty salt (the client's salt)")
    return hmac.new(salt, identifier.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
