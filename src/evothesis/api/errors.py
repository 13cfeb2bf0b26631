"""The one table from error class to HTTP status, and the seed's error body shape.

Every error answer looks like ``{"status": "error", "error": {"code", "message"}}``.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from evothesis.api.responses import JSONResponse
from evothesis.errors import (
    AdminUnauthorized,
    BadRequest,
    ConfigurationError,
    Conflict,
    EvothesisError,
    HeadersTooLarge,
    InvalidEvent,
    NotFound,
    ObjectStoreError,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    StorageUnavailable,
    UnauthorizedDomain,
    UnsupportedMediaType,
    WriteKeyRequired,
)

logger = logging.getLogger("evothesis.api")

#: Every intended failure's status, most specific class first; the first match wins. A
#: store that refused or sent damaged bytes is a bad gateway (502); this process not being
#: set up for the request (a missing secret key) is a 503 until an operator fixes it.
STATUS_TABLE: tuple[tuple[type[EvothesisError], int], ...] = (
    (PayloadTooLarge, 413),
    (HeadersTooLarge, 431),
    (UnsupportedMediaType, 415),
    (RequestTimeout, 408),
    (InvalidEvent, 422),
    (BadRequest, 400),
    (UnauthorizedDomain, 403),
    (WriteKeyRequired, 401),
    (AdminUnauthorized, 401),
    (NotFound, 404),
    (Conflict, 409),
    (RateLimited, 429),
    (StorageUnavailable, 503),
    (ObjectStoreError, 502),
    (ConfigurationError, 503),
)

#: Seconds a client should wait before retrying a 503.
RETRY_AFTER_SECONDS = 1


def status_for(error: EvothesisError) -> int:
    for cls, status in STATUS_TABLE:
        if isinstance(error, cls):
            return status
    return 500  # the root itself: raised on purpose, but with no status of its own


def error_body(code: str, message: str, **extra: object) -> dict[str, object]:
    return {"status": "error", "error": {"code": code, "message": message, **extra}}


def internal_error_body() -> dict[str, object]:
    """The answer to a failure nobody intended: the details go to the log, not the sender."""
    return error_body("internal_error", "internal error; it has been logged")


def error_payload(error: EvothesisError) -> tuple[int, dict[str, object], dict[str, str]]:
    """Status, JSON body and headers for an error; shared by FastAPI and the bare /collect."""
    status = status_for(error)
    extra: dict[str, object] = {}
    if isinstance(error, InvalidEvent) and error.field:
        extra["field"] = error.field
    # Only a passing outage is worth a retry soon; a missing setting is not.
    retry = isinstance(error, StorageUnavailable)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if retry else {}
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(math.ceil(error.retry_after_s))
    if isinstance(error, AdminUnauthorized):
        headers["WWW-Authenticate"] = "Bearer"  # RFC 9110: a 401 names its scheme
    return status, error_body(error.code, error.message, **extra), headers


def error_response(error: EvothesisError) -> JSONResponse:
    status, body, headers = error_payload(error)
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Make framework errors (404, 405, query validation) speak the same JSON shape."""

    async def on_evothesis_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EvothesisError)
        return error_response(exc)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [
            f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        ]
        return JSONResponse(
            error_body("invalid_request", "; ".join(problems) or "invalid request"),
            status_code=422,
        )

    async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("Unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(internal_error_body(), status_code=500)

    app.add_exception_handler(EvothesisError, on_evothesis_error)
    app.add_exception_handler(Exception, on_unexpected_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
