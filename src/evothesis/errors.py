"""One exception root for everything Evothesis raises on purpose.

Each class's docstring is its default message, so the class doubles as documentation, and
its ``code`` is what an HTTP answer, a log line or a recorded failure names it by. The HTTP
layer maps these to status codes in one table (``api/errors.py``); nothing here knows about
HTTP. The tree::

    EvothesisError
    ├── BadRequest                       the sender's request cannot be used
    │   ├── MalformedBody, RequestTimeout, UnsupportedMediaType, InvalidPeriod
    │   ├── MalformedRequest, HeadersTooLarge
    │   ├── PayloadTooLarge ── BatchTooLarge
    │   └── InvalidEvent ── InvalidSetting
    ├── Refused                          /collect: the sender may not send these events
    │   ├── UnauthorizedDomain ── OriginMismatch
    │   └── WriteKeyRequired ── InvalidWriteKey
    ├── AdminUnauthorized, NotFound, Conflict, RateLimited
    ├── Forbidden ── CsrfRejected         an operator's request this caller may not make
    ├── StorageUnavailable               retry later: nothing was lost
    │   ├── RegistryUnavailable, ExportsRunning, RequestIncomplete, LockBusy
    │   └── BufferOverloaded, BufferClosed
    ├── ObjectStoreError                 a bucket could not be opened, read or written
    │   ├── BucketConfigError, BackupUnreadable
    │   └── RawFormatError
    ├── ConfigurationError               this process is not set up to do it
    │   └── SecretKeyError, ConflictingSettings
    └── SnapshotRefused                  a file on local disk that cannot be trusted
"""

from __future__ import annotations

from typing import Any, ClassVar

from evothesis.domain import Refusal, RejectReason


class EvothesisError(Exception):
    """Evothesis failed."""

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# ------------------------------------------------------------------------- bad requests


class BadRequest(EvothesisError):
    """The request could not be understood."""

    code = "bad_request"


class MalformedBody(BadRequest):
    """The request body is not valid JSON."""

    code = "malformed_json"


class RequestTimeout(BadRequest):
    """The request body did not arrive in time."""

    code = "request_timeout"


class MalformedRequest(BadRequest):
    """The request is not valid HTTP/1.1."""

    code = "malformed_request"


class HeadersTooLarge(BadRequest):
    """The request line and headers are too large, or there are too many headers."""

    code = "headers_too_large"


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
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        reason: RejectReason = RejectReason.INVALID,
    ) -> None:
        self.field = field
        #: The closed-set cause a rejected inner event is counted and stored under.
        self.reason = reason
        super().__init__(message)


class InvalidSetting(InvalidEvent):
    """A client or domain setting is not valid."""

    code = "invalid_setting"


class InvalidRange(BadRequest):
    """A replay's range is not a range of times or batches."""

    code = "invalid_range"


class InvalidPeriod(BadRequest):
    """The billing period is not valid: use from/to as YYYY-MM-DD (from <= to) or YYYY-MM."""

    code = "invalid_period"


# ----------------------------------------------------------------------------- refusals


class Refused(EvothesisError):
    """The sender may not send these events."""

    refusal: ClassVar[Refusal]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.code = cls.refusal.value  # one name for the answer, the counter and the label


class UnauthorizedDomain(Refused):
    """The site is not registered with any client."""

    refusal = Refusal.UNAUTHORIZED_DOMAIN


class OriginMismatch(UnauthorizedDomain):
    """The page sending the events does not belong to the client of their siteId."""

    refusal = Refusal.ORIGIN_MISMATCH


class WriteKeyRequired(Refused):
    """Requests without Origin or Referer must carry the client's write key (X-Write-Key)."""

    refusal = Refusal.WRITE_KEY_REQUIRED


class InvalidWriteKey(WriteKeyRequired):
    """The write key does not belong to the client of this siteId."""

    refusal = Refusal.INVALID_WRITE_KEY


# ------------------------------------------------------------------ access and resources


class AdminUnauthorized(EvothesisError):
    """Send the admin token as `Authorization: Bearer <token>`."""

    code = "unauthorized"


class Forbidden(EvothesisError):
    """This caller may not do that."""

    code = "forbidden"


class CsrfRejected(Forbidden):
    """The request carries a console session but not its CSRF token (X-CSRF-Token); reload
    the console page and try again."""

    code = "csrf_rejected"


class RateLimited(EvothesisError):
    """Too many requests; retry after the time given."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotFound(EvothesisError):
    """No such resource."""

    code = "not_found"


class Conflict(EvothesisError):
    """The resource already exists or belongs to someone else."""

    code = "conflict"


# ------------------------------------------------------------------ retry later (storage)


class StorageUnavailable(EvothesisError):
    """The event store is unavailable; retry later."""

    code = "storage_unavailable"


class RegistryUnavailable(StorageUnavailable):
    """Pixel management cannot be reached and no cached answer is available; retry later."""

    code = "registry_unavailable"


class ExportsRunning(StorageUnavailable):
    """Export runs are using the buffer and its objects; retry the request shortly."""

    code = "exports_running"


class RequestIncomplete(StorageUnavailable):
    """The data-subject request could not finish; nothing is lost, run it again."""

    code = "request_incomplete"


class LockBusy(StorageUnavailable):
    """The lock was still held by others when the wait ran out; retry shortly."""

    code = "lock_busy"


class BufferOverloaded(StorageUnavailable):
    """The write buffer is full; retry shortly."""

    code = "overloaded"


class BufferClosed(StorageUnavailable):
    """The collector is shutting down; retry against another instance."""

    code = "shutting_down"


# --------------------------------------------------------------------------- object stores


class ObjectStoreError(EvothesisError):
    """A bucket could not be opened, read or written."""

    code = "object_store_error"


class TableError(ObjectStoreError):
    """A client's table (Delta Lake or Iceberg) could not be read, written or maintained."""

    code = "table_error"


class SchemaChangeRefused(TableError):
    """Rows whose schema is not the table's plus new nullable columns."""

    code = "schema_change_refused"


class BucketConfigError(ObjectStoreError):
    """A bucket URL or option cannot name a store."""

    code = "bucket_config_error"


class BackupUnreadable(ObjectStoreError):
    """The backup bucket's metering files could not be read; a partial bill would be wrong."""

    code = "backup_unreadable"


class RawFormatError(ObjectStoreError):
    """A raw line that the exporter cannot trust, with the line it was found on.

    The line number (1-based, in the decompressed object) is what an operator needs to find
    the record. It crosses process boundaries (raised in export workers), so it pickles as
    its ``(line, reason)``.
    """

    code = "raw_format_error"

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"raw line {line}: {reason}")

    def __reduce__(self) -> tuple[type[RawFormatError], tuple[int, str]]:
        return (type(self), (self.line, self.reason))


# ---------------------------------------------------------------------------- set-up


class ConfigurationError(EvothesisError):
    """This process is not configured to do that."""

    code = "configuration_error"


class SecretKeyError(ConfigurationError):
    """The secret key is missing, malformed, or does not open a stored secret."""

    code = "secret_key_error"


class ConflictingSettings(ConfigurationError):
    """Two names of one setting are set to different values."""

    code = "conflicting_settings"


# ---------------------------------------------------------------------------- local files


class SnapshotRefused(EvothesisError):
    """The registry snapshot cannot be trusted; it is not used."""

    code = "snapshot_refused"
