"""Who may call what: bearer tokens and console sessions for operators, the admin API and
collectors.

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

The operations console (``/console/``) calls these same endpoints with a session cookie
instead of a bearer token (``api.console.sessions``): the session stands for the token it
was opened with, and every request that changes something must also carry the session's
CSRF token in ``X-CSRF-Token``, which a page of another site cannot read. A bearer token,
never sent by a browser on its own, needs no CSRF token.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated, Final

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from evothesis.api.console.sessions import Opener, Session, SessionKeys
from evothesis.api.deps import Runtime, RuntimeDep, SettingsDep
from evothesis.api.transport.client_ip import client_ip
from evothesis.config import Settings
from evothesis.domain import Access
from evothesis.errors import AdminUnauthorized, CsrfRejected, EvothesisError, Forbidden

__all__ = [
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Bearer",
    "caller_access",
    "check_bearer",
    "console_session",
    "local_console",
    "require_admin",
    "require_operator",
    "require_reader",
    "require_service",
    "session_keys",
]

#: The console's session cookie, and the header its pages send the CSRF token in.
SESSION_COOKIE: Final = "evothesis_console"
CSRF_HEADER: Final = "X-CSRF-Token"
#: Methods that change nothing (RFC 9110), so need no CSRF token.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: What the development default derives its console sessions' key from (secret box).
_DEVELOPMENT_PURPOSE: Final = b"evothesis console development sessions"

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


def _refusal(
    credentials: HTTPAuthorizationCredentials | None,
    expected: str | None,
    *,
    variable: str,
    closed: str,
) -> AdminUnauthorized:
    """Why ``credentials`` are not ``expected``; ``closed`` is the message when ``variable``
    is not configured at all, so an operator learns which setting is missing rather than
    guessing at a wrong token."""
    if not expected:
        return AdminUnauthorized(closed)
    if credentials is None:
        return AdminUnauthorized(f"send {variable} as `Authorization: Bearer <token>`")
    return AdminUnauthorized(f"the bearer token is not {variable}")


def check_bearer(
    credentials: HTTPAuthorizationCredentials | None,
    expected: str | None,
    *,
    variable: str,
    closed: str,
) -> None:
    """Raise ``AdminUnauthorized`` unless ``credentials`` carry exactly ``expected``."""
    if not _matches(credentials, expected):
        raise _refusal(credentials, expected, variable=variable, closed=closed)


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


def _loopback_host(request: Request) -> bool:
    """Whether the page was asked for by a loopback name (``localhost:8000``,
    ``127.0.0.1``, ``[::1]``): a site whose name merely resolves to 127.0.0.1 (DNS
    rebinding) reaches a local server from the visitor's machine, but under its own name."""
    host = request.headers.get("host", "")
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_console(settings: Settings, request: Request) -> bool:
    """Whether the console is open without a token to this request: the development
    default's rule, and a page asked for under a loopback name."""
    return _local_development(settings, request) and _loopback_host(request)


def session_keys(runtime: Runtime) -> SessionKeys:
    """This process's console keys: from the tokens, and in development without any, from
    the secret key (EVOTHESIS_SECRET_KEY or the data folder's key file)."""
    settings = runtime.settings
    development = None
    if settings.is_development and not settings.admin_token and not settings.operator_token:
        box = runtime.services.box
        development = box.derive(_DEVELOPMENT_PURPOSE) if box is not None else None
    return SessionKeys(
        admin_token=settings.admin_token,
        operator_token=settings.operator_token,
        development_secret=development,
    )


def console_session(request: Request, runtime: Runtime) -> Session | None:
    """The request's valid console session, if it has one: signed by this process's key
    for its opener, unexpired, and (for a development session) still on this machine."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    session = session_keys(runtime).open(cookie, now=runtime.clock.now().timestamp())
    if session is None:
        return None
    if session.opener is Opener.DEVELOPMENT and not local_console(runtime.settings, request):
        return None
    return session


def caller_access(
    request: Request, runtime: Runtime, credentials: HTTPAuthorizationCredentials | None
) -> Access | None:
    """What the caller may do, by the first proof it brings: a bearer token, a console
    session (with its CSRF token when the request changes something), or the development
    default's loopback rule. A request with a session is judged by that session alone."""
    settings = runtime.settings
    if _matches(credentials, settings.admin_token):
        return Access.ADMIN
    if _matches(credentials, settings.operator_token):
        return Access.OPERATOR
    session = console_session(request, runtime)
    if session is not None:
        if request.method not in SAFE_METHODS and not session_keys(runtime).csrf_matches(
            session, request.headers.get(CSRF_HEADER)
        ):
            raise CsrfRejected()
        return session.access
    if _local_development(settings, request):
        return Access.LOCAL
    return None


def _admin_refusal(
    access: Access | None,
    credentials: HTTPAuthorizationCredentials | None,
    settings: Settings,
    *,
    closed: str,
) -> EvothesisError:
    """Why a caller may not run or administer. A console session that only reads gets a
    403: it is signed in, and a 401 would tell its page to sign in again."""
    if access is Access.OPERATOR:
        if _matches(credentials, settings.operator_token):
            return AdminUnauthorized(
                "EVOTHESIS_OPERATOR_TOKEN only reads; this needs EVOTHESIS_ADMIN_TOKEN"
            )
        return Forbidden(
            "this console session was opened with EVOTHESIS_OPERATOR_TOKEN, which only "
            "reads; sign in with EVOTHESIS_ADMIN_TOKEN to change anything"
        )
    return _refusal(
        credentials, settings.admin_token, variable="EVOTHESIS_ADMIN_TOKEN", closed=closed
    )


async def require_reader(request: Request, runtime: RuntimeDep, credentials: Bearer) -> None:
    """Reading stored events, counts, pipeline state or metrics."""
    if caller_access(request, runtime, credentials) is not None:
        return
    settings = runtime.settings
    if not settings.admin_token and not settings.operator_token:
        raise AdminUnauthorized(
            "reading stored data needs EVOTHESIS_OPERATOR_TOKEN or EVOTHESIS_ADMIN_TOKEN "
            "(only a development process answers without one, on its own machine)"
        )
    raise AdminUnauthorized(
        "send EVOTHESIS_OPERATOR_TOKEN or EVOTHESIS_ADMIN_TOKEN as `Authorization: Bearer …`"
    )


async def require_operator(request: Request, runtime: RuntimeDep, credentials: Bearer) -> None:
    """Triggering export and processing runs."""
    access = caller_access(request, runtime, credentials)
    if access is not None and access.runs:
        return
    raise _admin_refusal(
        access,
        credentials,
        runtime.settings,
        closed="export runs need EVOTHESIS_ADMIN_TOKEN (only a development process runs "
        "them without it, for a caller on its own machine)",
    )


async def require_admin(request: Request, runtime: RuntimeDep, credentials: Bearer) -> None:
    """Changing clients, data-subject requests, billing."""
    access = caller_access(request, runtime, credentials)
    if access is not None and access.administers:
        return
    raise _admin_refusal(
        access,
        credentials,
        runtime.settings,
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
