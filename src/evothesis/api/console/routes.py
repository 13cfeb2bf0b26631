"""The operations console at ``/console/``: sign-in and sign-out, the pages, their assets.

Signing in turns a token into a session cookie (``HttpOnly``, ``SameSite=Strict``,
``Secure`` outside development) that lasts ``CONSOLE_SESSION_TTL``; the pages' scripts
then call the operators' JSON endpoints with it (``api.tokens`` accepts the session in
place of the token it was opened with, and a CSRF token with every change). These routes
do nothing else: no rule of the platform is decided here.

Outside development the console is closed until a token is configured; in development
without one it is open to this machine only, as the operators' endpoints are.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from evothesis.api.client_models import ClientChanges, ClientCreate
from evothesis.api.console.pages import (
    Page,
    Signed,
    closed_page,
    login_page,
    message_page,
    shell,
)
from evothesis.api.console.sessions import Opener, Session
from evothesis.api.deps import Runtime, RuntimeDep
from evothesis.api.tokens import (
    SESSION_COOKIE,
    console_session,
    local_console,
    session_keys,
)
from evothesis.config import Settings
from evothesis.errors import NotFound

__all__ = ["include_console", "noscript_pixel", "safe_next"]

#: The sign-in form's CSRF cookie (double submit: the form carries the same value).
LOGIN_COOKIE: Final = "evothesis_console_login"
LOGIN_PATH: Final = "/console/login"
HOME: Final = "/console/clients"
#: The sign-in form is small; anything bigger is not one.
MAX_FORM_BYTES: Final = 8192

#: Every console document: nothing but our own scripts and styles, no framing, nothing
#: cached (pages carry the CSRF token), no referrer to other sites.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_OPENED_WITH: Final = {
    Opener.ADMIN_TOKEN: "the admin token",
    Opener.OPERATOR_TOKEN: "the operator token (read-only)",
    Opener.DEVELOPMENT: "this machine (development)",
}

router = APIRouter(prefix="/console", include_in_schema=False)


def _html(body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


def _secure(settings: Settings) -> bool:
    return not settings.is_development


def _closed_reason(settings: Settings, request: Request) -> str | None:
    """Why the console does not open for this request, or ``None`` when it does."""
    if settings.admin_token or settings.operator_token:
        return None
    if not settings.is_development:
        return (
            "Set EVOTHESIS_ADMIN_TOKEN (or EVOTHESIS_OPERATOR_TOKEN, to read only) to open "
            "the console; outside development it is closed without one."
        )
    if not local_console(settings, request):
        return (
            "Without EVOTHESIS_ADMIN_TOKEN a development console answers this machine only, "
            "under a loopback name such as localhost or 127.0.0.1."
        )
    return None


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console page of this site, never another site."""
    if not value or not value.startswith("/console/") or value.startswith(LOGIN_PATH):
        return HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or "\\" in value:
        return HOME
    return value


def _signed(runtime: Runtime, session: Session) -> Signed:
    until = datetime.fromtimestamp(session.expires, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Signed(_OPENED_WITH[session.opener], until, session_keys(runtime).csrf_token(session))


def _to_login(request: Request, reason: str | None) -> RedirectResponse:
    target = f"{LOGIN_PATH}?next={quote(request.url.path, safe='/')}"
    if reason:
        target += f"&reason={reason}"
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


# ----------------------------------------------------------------------------- signing in


@router.get("/login")
async def login_form(request: Request, runtime: RuntimeDep) -> Response:
    settings = runtime.settings
    closed = _closed_reason(settings, request)
    if closed:
        return _html(closed_page(closed), 403)
    notice = {
        "ended": "Your session has ended (it expired, or its token changed): sign in again.",
        "signed-out": "You have signed out.",
    }.get(request.query_params.get("reason", ""))
    return _login(
        request, runtime, next_path=safe_next(request.query_params.get("next")), notice=notice
    )


def _login(
    request: Request,
    runtime: Runtime,
    *,
    next_path: str,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    nonce = secrets.token_urlsafe(16)
    page = login_page(
        login_nonce=nonce,
        next_path=next_path,
        development=not (runtime.settings.admin_token or runtime.settings.operator_token),
        notice=notice,
        error=error,
    )
    response = _html(page, status_code)
    response.set_cookie(
        LOGIN_COOKIE,
        nonce,
        max_age=3600,
        path=LOGIN_PATH,
        secure=_secure(runtime.settings),
        httponly=True,
        samesite="strict",
    )
    return response


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded sign-in form, at most ``MAX_FORM_BYTES``; one value per name."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    return {name: values[0] for name, values in fields.items()}


def _token_opener(settings: Settings, token: str) -> Opener | None:
    given = token.encode()
    for opener, expected in (
        (Opener.ADMIN_TOKEN, settings.admin_token),
        (Opener.OPERATOR_TOKEN, settings.operator_token),
    ):
        if expected and hmac.compare_digest(given, expected.encode()):
            return opener
    return None


@router.post("/login")
async def login(request: Request, runtime: RuntimeDep) -> Response:
    settings = runtime.settings
    closed = _closed_reason(settings, request)
    if closed:
        return _html(closed_page(closed), 403)
    form = await _form(request)
    next_path = safe_next(form.get("next"))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    given = form.get("csrf", "")
    if not expected or not hmac.compare_digest(expected.encode(), given.encode()):
        return _login(
            request,
            runtime,
            next_path=next_path,
            error="The sign-in form had expired or did not come from this console; try again.",
            status_code=403,
        )
    if settings.admin_token or settings.operator_token:
        opener = _token_opener(settings, form.get("token", ""))
        if opener is None:
            return _login(
                request,
                runtime,
                next_path=next_path,
                error="That token is neither EVOTHESIS_ADMIN_TOKEN nor EVOTHESIS_OPERATOR_TOKEN.",
                status_code=401,
            )
    else:
        opener = Opener.DEVELOPMENT
    keys = session_keys(runtime)
    session = keys.new(
        opener, now=runtime.clock.now().timestamp(), lifetime_s=settings.console_session_s
    )
    response = RedirectResponse(next_path, status_code=303)
    # No Max-Age: the browser forgets the cookie when it closes, and the server refuses it
    # once the session it holds has expired (and then says so).
    response.set_cookie(
        SESSION_COOKIE,
        keys.seal(session),
        path="/",
        secure=_secure(settings),
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH)
    return response


@router.post("/logout")
async def logout(request: Request, runtime: RuntimeDep) -> Response:
    """Ends the session in this browser (the cookie is dropped); the form carries the
    CSRF token, so no other site can sign an operator out."""
    session = console_session(request, runtime)
    if session is not None:
        form = await _form(request)
        if not session_keys(runtime).csrf_matches(session, form.get("csrf")):
            page = message_page(
                "Not signed out",
                "The sign-out form did not come from this console; reload the page and try again.",
                _signed(runtime, session),
            )
            return _html(page, 403)
    response = RedirectResponse(f"{LOGIN_PATH}?reason=signed-out", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=_secure(runtime.settings), httponly=True, samesite="strict"
    )
    return response


# ---------------------------------------------------------------------------------- pages


def noscript_pixel(app: FastAPI) -> dict[str, Any] | None:
    """The no-JavaScript pixel (``GET /collect``) and its query parameters, when this
    collector documents one in its OpenAPI schema; ``None`` otherwise."""
    paths = app.openapi().get("paths", {})
    operation = paths.get("/collect", {}).get("get")
    if not isinstance(operation, dict):
        return None
    names = [
        parameter.get("name")
        for parameter in operation.get("parameters", [])
        if isinstance(parameter, dict) and parameter.get("in") == "query"
    ]
    return {"path": "/collect", "query": [name for name in names if isinstance(name, str)]}


def _context(
    request: Request, runtime: Runtime, session: Session, page: Page, client_id: str | None
) -> dict[str, Any]:
    settings = runtime.settings
    today = runtime.clock.now().astimezone(UTC).date()
    context: dict[str, Any] = {
        "page": page.value,
        "client_id": client_id,
        "access": session.access.value,
        "may_run": session.access.runs,
        "may_administer": session.access.administers,
        "csrf_token": session_keys(runtime).csrf_token(session),
        "today": today.isoformat(),
        "collector_url": settings.collector_url,
        "noscript_pixel": noscript_pixel(request.app),
    }
    if page in (Page.CLIENTS, Page.CLIENT):
        # The forms are built from the admin API's own request models.
        context["client_schemas"] = {
            "create": ClientCreate.model_json_schema(),
            "change": ClientChanges.model_json_schema(),
        }
    return context


async def _page(
    request: Request, runtime: Runtime, page: Page, client_id: str | None = None
) -> Response:
    closed = _closed_reason(runtime.settings, request)
    if closed:
        return _html(closed_page(closed), 403)
    session = console_session(request, runtime)
    if session is None:
        return _to_login(request, "ended" if request.cookies.get(SESSION_COOKIE) else None)
    registry = runtime.services.registry
    if client_id is not None and registry is not None:
        try:
            await registry.get_client(client_id)
        except NotFound as exc:
            page_html = message_page(
                "No such client",
                exc.message,
                _signed(runtime, session),
                link=(Page.CLIENTS.path(), "All clients"),
            )
            return _html(page_html, 404)
    context = _context(request, runtime, session, page, client_id)
    return _html(shell(page, _signed(runtime, session), context, client_id))


@router.get("")
async def console_root() -> Response:
    return RedirectResponse("/console/", status_code=308)


@router.get("/")
async def console_home() -> Response:
    return RedirectResponse(HOME, status_code=303)


@router.get("/clients")
async def clients_page(request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, Page.CLIENTS)


@router.get("/clients/{client_id}")
async def client_page(client_id: str, request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, Page.CLIENT, client_id)


@router.get("/clients/{client_id}/domains")
async def domains_page(client_id: str, request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, Page.DOMAINS, client_id)


@router.get("/clients/{client_id}/install")
async def install_page(client_id: str, request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, Page.INSTALL, client_id)


@router.get("/live")
async def live_page(request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, Page.LIVE)


@router.get("/pipeline")
async def pipeline_page(request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, Page.PIPELINE)


@router.get("/usage")
async def usage_page(request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, Page.USAGE)


@router.get("/requests")
async def requests_page(request: Request, runtime: RuntimeDep) -> Response:
    return await _page(request, runtime, Page.REQUESTS)


@router.get("/{rest:path}")
async def unknown_page(rest: str, request: Request, runtime: RuntimeDep) -> Response:
    """Any other console path: a page that says so (after sign-in, like every page)."""
    closed = _closed_reason(runtime.settings, request)
    if closed:
        return _html(closed_page(closed), 403)
    session = console_session(request, runtime)
    if session is None:
        return _to_login(request, "ended" if request.cookies.get(SESSION_COOKIE) else None)
    page_html = message_page(
        "Not found",
        f"The console has no page at {request.url.path}.",
        _signed(runtime, session),
        link=(HOME, "Clients"),
    )
    return _html(page_html, 404)


def include_console(app: FastAPI) -> None:
    """Serve the console on ``app`` (before any catch-all mount such as the demo site)."""
    folder = resources.files("evothesis").joinpath("static/console")
    app.mount("/console/assets", StaticFiles(directory=str(folder)), name="console-assets")
    app.include_router(router)
