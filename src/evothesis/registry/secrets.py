"""Client secrets: the IP salt and export credentials sealed at rest, write keys as digests.

The encryption key comes from ``EVOTHESIS_SECRET_KEY`` (one or more comma-separated
Fernet keys: the first seals, all open, so keys can be rotated). Development and test
setups without one get a key file in the data folder, created once with mode 0600, so
the embedded default needs no configuration; production refuses to start without the
variable, because a key that lives next to the data protects nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from evothesis.errors import SecretKeyError

__all__ = [
    "KEY_FILE_NAME",
    "SecretBox",
    "generate_key",
    "hash_write_key",
    "load_secret_box",
    "new_notify_secret",
    "new_salt",
    "new_write_key",
    "write_key_matches",
]

KEY_FILE_NAME: Final = "secret.key"
_WRITE_KEY_PREFIX: Final = "wk_"
_SALT_BYTES: Final = 32


class SecretBox:
    """Seal and open small secrets with the configured key ring."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyError("no secret key configured")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as exc:
            raise SecretKeyError(
                "EVOTHESIS_SECRET_KEY must be Fernet keys (32 url-safe base64 bytes), "
                "comma-separated; generate one with `evothesis secret-key`"
            ) from exc

    def seal(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def open(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(bytes(token))
        except InvalidToken:
            raise SecretKeyError(
                "a stored secret cannot be decrypted: EVOTHESIS_SECRET_KEY is not the key "
                "it was sealed with (add the old key after the new one to rotate)"
            ) from None


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def load_secret_box(configured: str | None, *, data_dir: Path, allow_key_file: bool) -> SecretBox:
    """The box for ``EVOTHESIS_SECRET_KEY``, or for the data folder's key file when allowed."""
    if configured:
        return SecretBox([part.strip().encode() for part in configured.split(",") if part.strip()])
    if not allow_key_file:
        raise SecretKeyError(
            "EVOTHESIS_SECRET_KEY is required in production (it encrypts client secrets); "
            "generate one with `evothesis secret-key`"
        )
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and linked into place, so a process racing this
        # one never reads a half-written key, and exactly one key wins.
        temporary = data_dir / f".{KEY_FILE_NAME}.{os.getpid()}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(generate_key() + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return SecretBox([path.read_text().strip().encode()])


def new_salt() -> bytes:
    return secrets.token_bytes(_SALT_BYTES)


def new_write_key() -> str:
    """A write key for server-to-server senders; shown once, stored only as a digest."""
    return _WRITE_KEY_PREFIX + secrets.token_urlsafe(32)


def new_notify_secret() -> str:
    """A secret a client's webhook notices are signed with (HMAC-SHA256)."""
    return "whsec_" + secrets.token_urlsafe(32)


def hash_write_key(key: str) -> str:
    """Plain SHA-256 suffices: the key is 256 random bits, so there is nothing to guess."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def write_key_matches(key: str | None, digest: str | None) -> bool:
    if not key or not digest:
        return False
    return hmac.compare_digest(hash_write_key(key), digest)
