"""Bearer-token guards for the admin API and the collectors' internal endpoint.

Two tokens, because they protect different things: the admin token changes clients, the
service token only reads their secrets. An unset token closes its API instead of opening
it: forgetting a variable must never publish every client's salt.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from evothesis.api.deps import SettingsDep
from evothesis.errors import AdminUnauthorized

__all__ = ["admin_bearer", "check_bearer", "require_admin", "require_service"]

admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="EVOTHESIS_ADMIN_TOKEN, for the client administration API.",
)
_service_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ServiceToken",
    description="PIXEL_MANAGEMENT_TOKEN, for collectors reading client secrets.",
)


def check_bearer(
    credentials: HTTPAuthorizationCredentials | None,
    expected: str | None,
    *,
    variable: str,
    closed: str,
) -> None:
    """Raise ``AdminUnauthorized`` unless ``credentials`` carry exactly ``expected``.

    ``closed`` is the message when ``variable`` is not configured at all, so an operator
    learns which setting is missing rather than guessing at a wrong token.
    """
    if not expected:
        raise AdminUnauthorized(closed)
    if credentials is None:
        raise AdminUnauthorized(f"send {variable} as `Authorization: Bearer <token>`")
    # Bytes, because compare_digest refuses non-ASCII str and a header may carry anything.
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise AdminUnauthorized(f"the bearer token is not {variable}")


async def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    check_bearer(
        credentials,
        settings.admin_token,
        variable="EVOTHESIS_ADMIN_TOKEN",
        closed="the admin API is closed until EVOTHESIS_ADMIN_TOKEN is set",
    )


async def require_service(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_service_bearer)],
) -> None:
    check_bearer(
        credentials,
        settings.pixel_management_token,
        variable="PIXEL_MANAGEMENT_TOKEN",
        closed="the internal API is closed until PIXEL_MANAGEMENT_TOKEN is set",
    )
