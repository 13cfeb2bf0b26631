"""Pixel management over HTTP, for collectors that do not own the registry database."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from evothesis.domain import (
    BotPolicy,
    ClientConfig,
    ConsentMode,
    IpCollection,
    PrivacyLevel,
    UserIdStorage,
)
from evothesis.errors import RegistryUnavailable

__all__ = [
    "INTERNAL_DOMAIN_PATH",
    "INTERNAL_WRITE_KEY_PATH",
    "HttpRegistrySource",
    "client_config_from_json",
    "client_config_json",
]

#: The service-token endpoint that returns a domain's client with its secrets.
INTERNAL_DOMAIN_PATH = "/api/v1/internal/domain/"
#: The service-token endpoint that returns the client of a write key's SHA-256 digest.
INTERNAL_WRITE_KEY_PATH = "/api/v1/internal/write-key/"


def client_config_json(config: ClientConfig) -> dict[str, object]:
    """A client's settings and secrets as JSON: the internal endpoint's body, and each
    answer of the registry snapshot (``registry.snapshot``); one form, one reader."""
    return {
        "client_id": config.client_id,
        "privacy_level": config.privacy_level,
        "ip_collection": config.ip_collection,
        "honour_dnt": config.honour_dnt,
        "consent_mode": config.consent_mode,
        "bot_policy": config.bot_policy,
        "require_write_key": config.require_write_key,
        "ip_salt": config.ip_salt.hex(),
        "write_key_sha256": config.write_key_sha256,
        "user_id_storage": config.user_id_storage,
    }


def client_config_from_json(data: dict[str, Any]) -> ClientConfig:
    """Read ``client_config_json``'s form; a malformed answer is an outage, not a 403."""
    try:
        return ClientConfig(
            client_id=str(data["client_id"]),
            privacy_level=PrivacyLevel(data["privacy_level"]),
            ip_collection=IpCollection(data["ip_collection"]),
            honour_dnt=bool(data["honour_dnt"]),
            consent_mode=ConsentMode(data["consent_mode"]),
            bot_policy=BotPolicy(data.get("bot_policy", BotPolicy.KEEP)),
            require_write_key=bool(data.get("require_write_key", False)),
            ip_salt=bytes.fromhex(data["ip_salt"]),
            write_key_sha256=data.get("write_key_sha256"),
            user_id_storage=(
                None
                if data.get("user_id_storage") is None
                else UserIdStorage(data["user_id_storage"])
            ),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryUnavailable(f"pixel management sent an unexpected answer: {exc!r}") from None


class HttpRegistrySource:
    """``RegistrySource`` over ``GET {base}/api/v1/internal/domain/{host}`` and
    ``…/internal/write-key/{sha256}``."""

    def __init__(self, base_url: str, *, token: str | None, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )

    async def lookup(self, host: str) -> ClientConfig | None:
        return await self._get(INTERNAL_DOMAIN_PATH + quote(host, safe=""))

    async def lookup_write_key(self, digest: str) -> ClientConfig | None:
        return await self._get(INTERNAL_WRITE_KEY_PATH + quote(digest, safe=""))

    async def _get(self, path: str) -> ClientConfig | None:
        try:
            response = await self._client.get(path)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                f"pixel management at {self.base_url} unreachable: {type(exc).__name__}"
            ) from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryUnavailable(
                f"pixel management at {self.base_url} answered {response.status_code}"
                + (" (check PIXEL_MANAGEMENT_TOKEN)" if response.status_code == 401 else "")
            )
        try:
            data = response.json()
        except ValueError:
            raise RegistryUnavailable("pixel management sent invalid JSON") from None
        return client_config_from_json(data)

    async def close(self) -> None:
        await self._client.aclose()
