"""Who may call what: bearer-token guards for operators, the admin API and collectors.

Three tokens, because they protect different things:

* ``EVOTHESIS_ADMIN_TOKEN`` changes clients and triggers runs (and reads, too);
* ``EVOTHESIS_OPERATOR_TOKEN`` only reads: stored events, counts, pipeline state and
  metrics, what a dashboard or a scraper needs;
* ``PIXEL_MANAGEMENT_TOKEN`` lets collectors read clients' secrets.

An unset token closes what it guards instead of opening it: forgetting a variable must
never publish every tenant's events or every client's salt. The one exception is the
embedded development default: a development process with neither operator token set
answers reads and runs without a token, and only to a peer on its own machine (loopback),
as the seed's ``curl http://localhost:8000/...`` examples expect.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from evothesis.api.deps import SettingsDep
from evothesis.api.transport.client_ip import client_ip
from evothesis.config import Settings
from evothesis.errors import AdminUnauthorized

__all__ = [
    "Bearer",
    "check_bearer",
    "is_reader",
    "require_admin",
    "require_operator",
    "require_reader",
    "require_service",
]

_admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="EVOTHESIS_ADMIN_TOKEN (or, for reading, EVOTHESIS_OPERATOR_TOKEN).",
)
_service_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ServiceToken",
    description="PIXEL_MANAGEMENT_TOKEN, for collectors reading client secrets.",
)

#: The bearer credentials of a request, if it sent any.
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)]


def _matches(credentials: HTTPAuthorizationCredentials | None, expected: str | None) -> bool:
    if not expected or credentials is None:
        return False
    # Bytes, because compare_digest refuses non-ASCII str and a header may carry anything.
    return hmac.compare_digest(credentials.credentials.encode(), expected.encode())


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
    if not _matches(credentials, expected):
        raise AdminUnauthorized(f"the bearer token is not {variable}")


def _local_development(settings: Settings, request: Request) -> bool:
    """The embedded default's open door: development, no operator token configured, and a
    caller on this machine. The caller is who a trusted proxy says it forwarded for, so an
    nginx on the same machine does not make every outsider local."""
    if not settings.is_development or settings.admin_token or settings.operator_token:
        return False
    peer = request.client.host if request.client else None
    caller = client_ip(peer, request.headers, settings.trusted_proxies)
    try:
        return caller is not None and ipaddress.ip_address(caller).is_loopback
    except ValueError:
        return False


def is_reader(
    settings: Settings, request: Request, credentials: HTTPAuthorizationCredentials | None
) -> bool:
    """Whether the request may read stored data and pipeline state."""
    return (
        _matches(credentials, settings.admin_token)
        or _matches(credentials, settings.operator_token)
        or _local_development(settings, request)
    )


async def require_reader(request: Request, settings: SettingsDep, credentials: Bearer) -> None:
    """Reading stored events, counts, pipeline state or metrics."""
    if is_reader(settings, request, credentials):
        return
    if not settings.admin_token and not settings.operator_token:
        raise AdminUnauthorized(
            "reading stored data needs EVOTHESIS_OPERATOR_TOKEN or EVOTHESIS_ADMIN_TOKEN "
            "(only a development process answers without one, on its own machine)"
        )
    raise AdminUnauthorized(
        "send EVOTHESIS_OPERATOR_TOKEN or EVOTHESIS_ADMIN_TOKEN as `Authorization: Bearer …`"
    )


async def require_operator(request: Request, settings: SettingsDep, credentials: Bearer) -> None:
    """Triggering export and processing runs."""
    if _local_development(settings, request):
        return
    check_bearer(
        credentials,
        settings.admin_token,
        variable="EVOTHESIS_ADMIN_TOKEN",
        closed="export runs need EVOTHESIS_ADMIN_TOKEN (only a development process runs "
        "them without it, for a caller on its own machine)",
    )


async def require_admin(settings: SettingsDep, credentials: Bearer) -> None:
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
