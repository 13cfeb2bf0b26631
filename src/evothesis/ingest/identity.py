"""User ids as the client stores them: kept, pseudonymised with its salt, or dropped.

A Segment message's ``userId`` (and an alias's ``previousId``, which names the same person
by another id) is the client's own identifier of one of its customers. What is stored is
the client's ``user_id_storage`` under its privacy level (``UserIdStorage.for_level``):

* ``kept``: as sent, unless the id is itself personal data by the redaction rules (an
  e-mail address, a phone number…): then its keyed hash, as with ``hashed``, so the same
  user still links up and the bucket still holds no e-mail address;
* ``hashed``: HMAC-SHA256 under the client's salt (without a salt: dropped, as a gdpr
  client without one stores no IP);
* ``dropped``: not stored.

Applied before the privacy steps, which then leave these keys alone (their values are
PII-free by construction); a rejected message's ids are treated the same way.
"""

from __future__ import annotations

from typing import Any, Final

from evothesis.domain import ClientConfig, UserIdStorage
from evothesis.privacy import pseudonymise, redact_text

__all__ = ["USER_ID_KEYS", "store_user_ids", "stored_user_id"]

#: The top-level keys of a message that hold a user's id.
USER_ID_KEYS: Final = ("userId", "previousId")


def stored_user_id(user_id: str, client: ClientConfig) -> str | None:
    """What ``user_id`` is stored as for ``client`` (``None``: not at all)."""
    storage = client.stores_user_ids_as
    if storage is UserIdStorage.DROPPED:
        return None
    if storage is UserIdStorage.KEPT and redact_text(user_id, strict=False) == user_id:
        return user_id
    return pseudonymise(user_id, client.ip_salt) if client.ip_salt else None


def store_user_ids(payload: dict[str, Any], client: ClientConfig) -> dict[str, Any]:
    """``payload`` with its user ids as ``client`` stores them (a copy when any changes).

    Ids the parser has not checked (a rejected message's) may be of any type: a number is
    taken as its text, anything else is not an id and is not kept."""
    changed: dict[str, Any] = {}
    for key in USER_ID_KEYS:
        if key not in payload:
            continue
        value = payload[key]
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        stored = stored_user_id(value, client) if isinstance(value, str) else None
        if stored != payload[key]:
            changed[key] = stored
    if not changed:
        return payload
    dropped = {key for key, value in changed.items() if value is None}
    result = {key: value for key, value in payload.items() if key not in dropped}
    result.update((key, value) for key, value in changed.items() if value is not None)
    return result
