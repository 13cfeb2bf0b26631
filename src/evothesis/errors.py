"""One exception root for everything Evothesis raises on purpose.

Each class's docstring is its default message, so the class doubles as documentation. The
HTTP layer maps these to status codes in one table (``api/errors.py``); nothing here knows
about HTTP.
"""

from __future__ import annotations


class EvothesisError(Exception):
    """Evothesis failed."""

    code = "internal_error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class BadRequest(EvothesisError):
    """The request could not be understood."""

    code = "bad_request"


class MalformedBody(BadRequest):
    """The request body is not valid JSON."""

    code = "malformed_json"


class RequestTimeout(BadRequest):
    """The request body did not arrive in time."""

    code = "request_timeout"


class UnsupportedMediaType(BadRequest):
    """Send the body as application/json or text/plain."""

    code = "unsupported_media_type"


class PayloadTooLarge(BadRequest):
    """The request body is too large."""

    code = "payload_too_large"


class BatchTooLarge(PayloadTooLarge):
    """The batch holds too many events."""

    code = "batch_too_large"


class InvalidEvent(BadRequest):
    """An event does not have the expected shape."""

    code = "invalid_event"

    def __init__(
        self, message: str | None = None, *, field: str | None = None, reason: str = "invalid"
    ) -> None:
        self.field = field
        #: A short, closed-set cause (``wrong_type``, ``too_long``, ``missing_field``…): the
        #: label a rejected inner event is counted and stored under.
        self.reason = reason
        super().__init__(message)


class InvalidSetting(InvalidEvent):
    """A client or domain setting is not valid."""

    code = "invalid_setting"


class UnauthorizedDomain(EvothesisError):
    """The site is not registered with any client."""

    code = "unauthorized_domain"


class StorageUnavailable(EvothesisError):
    """The event store is unavailable; retry later."""

    code = "storage_unavailable"


class OriginMismatch(UnauthorizedDomain):
    """The page sending the events does not belong to the client of their siteId."""

    code = "origin_mismatch"


class WriteKeyRequired(EvothesisError):
    """Requests without Origin or Referer must carry the client's write key (X-Write-Key)."""

    code = "write_key_required"


class InvalidWriteKey(WriteKeyRequired):
    """The write key does not belong to the client of this siteId."""

    code = "invalid_write_key"


class AdminUnauthorized(EvothesisError):
    """Send the admin token as `Authorization: Bearer <token>`."""

    code = "unauthorized"


class NotFound(EvothesisError):
    """No such resource."""

    code = "not_found"


class Conflict(EvothesisError):
    """The resource already exists or belongs to someone else."""

    code = "conflict"


class RegistryUnavailable(StorageUnavailable):
    """Pixel management cannot be reached and no cached answer is available; retry later."""

    code = "registry_unavailable"


class ExportsRunning(StorageUnavailable):
    """Export runs are using the buffer and its objects; retry the request shortly."""

    code = "exports_running"


class RequestIncomplete(StorageUnavailable):
    """The data-subject request could not finish; nothing is lost, run it again."""

    code = "request_incomplete"


class InvalidPeriod(BadRequest):
    """The billing period is not valid: use from/to as YYYY-MM-DD (from <= to) or YYYY-MM."""

    code = "invalid_period"
