"""Console sessions: signed, expiring cookies and their CSRF tokens, kept nowhere on the
server (pure: no I/O, no framework).

A session is opened with a token (or, in development without one, by a caller on this
machine) and signed with a key derived from what opened it, so:

* every process and worker sharing ``EVOTHESIS_ADMIN_TOKEN`` accepts the sessions any of
  them opened (a collector and pixel management behind one nginx, ``--workers N``);
* changing a token ends every session it opened, at once, everywhere;
* a session opened with the operator token can never pass for an admin one: the opener is
  part of what is signed, and each opener has its own key.

The CSRF token is an HMAC of the session's random nonce under the same key: a page that
shows it proves it was served to the holder of the session, and a forged or stale token
(of another session, or of a changed key) does not match.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from evothesis.domain import Access

__all__ = ["Opener", "Session", "SessionKeys"]

#: Domain separation: these keys sign console sessions and nothing else.
_PURPOSE: Final = b"evothesis console session v1"
_NONCE: Final = re.compile(r"[A-Za-z0-9_-]{22}")
#: Longer cookies are refused before any parsing.
_MAX_COOKIE: Final = 200


class Opener(StrEnum):
    """What a session was opened with: decides its key and what it may do."""

    ADMIN_TOKEN = "admin"
    OPERATOR_TOKEN = "operator"
    #: A caller on this machine, in development with no token configured.
    DEVELOPMENT = "development"

    @property
    def access(self) -> Access:
        """The development default's console manages everything, as its CLI does: it is
        the newcomer's first look at the platform, and answers this machine only."""
        return Access.OPERATOR if self is Opener.OPERATOR_TOKEN else Access.ADMIN


@dataclass(frozen=True, slots=True)
class Session:
    opener: Opener
    #: Unix time (seconds) after which the session is refused.
    expires: int
    nonce: str

    @property
    def access(self) -> Access:
        return self.opener.access


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _derive_key(secret: bytes) -> bytes:
    return hmac.new(secret, _PURPOSE, hashlib.sha256).digest()


class SessionKeys:
    """The signing keys of this process, one per opener; ``None`` where that way of opening
    a session is not available (its token is unset, or this is not development)."""

    def __init__(
        self,
        *,
        admin_token: str | None,
        operator_token: str | None,
        development_secret: bytes | None,
    ) -> None:
        self._keys: dict[Opener, bytes] = {}
        if admin_token:
            self._keys[Opener.ADMIN_TOKEN] = _derive_key(admin_token.encode())
        if operator_token:
            self._keys[Opener.OPERATOR_TOKEN] = _derive_key(operator_token.encode())
        if development_secret:
            self._keys[Opener.DEVELOPMENT] = _derive_key(development_secret)

    def new(self, opener: Opener, *, now: float, lifetime_s: float) -> Session:
        if opener not in self._keys:
            raise ValueError(f"no key to open a {opener} session with")
        return Session(opener, int(now + lifetime_s), secrets.token_urlsafe(16))

    def seal(self, session: Session) -> str:
        """The cookie value: ``opener.expires.nonce.signature``."""
        body = f"{session.opener}.{session.expires}.{session.nonce}"
        return f"{body}.{self._sign(session.opener, b'session|' + body.encode())}"

    def open(self, cookie: str, *, now: float) -> Session | None:
        """The session ``cookie`` holds, or ``None`` when it is malformed, not signed by
        this process's key for its opener, or expired."""
        if len(cookie) > _MAX_COOKIE:
            return None
        parts = cookie.split(".")
        if len(parts) != 4:
            return None
        opener_text, expires_text, nonce, signature = parts
        try:
            opener = Opener(opener_text)
        except ValueError:
            return None
        if opener not in self._keys or not expires_text.isdigit() or not _NONCE.fullmatch(nonce):
            return None
        body = f"{opener_text}.{expires_text}.{nonce}"
        expected = self._sign(opener, b"session|" + body.encode())
        if not hmac.compare_digest(expected.encode(), signature.encode("ascii", "replace")):
            return None
        session = Session(opener, int(expires_text), nonce)
        return session if now < session.expires else None

    def csrf_token(self, session: Session) -> str:
        return self._sign(session.opener, b"csrf|" + session.nonce.encode())

    def csrf_matches(self, session: Session, token: str | None) -> bool:
        if not token or session.opener not in self._keys:
            return False
        expected = self.csrf_token(session)
        return hmac.compare_digest(expected.encode(), token.encode("ascii", "replace"))

    def _sign(self, opener: Opener, message: bytes) -> str:
        return _b64(hmac.new(self._keys[opener], message, hashlib.sha256).digest())
