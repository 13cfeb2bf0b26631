"""The access log (``serve --access-log``) without what it must not keep.

Uvicorn's line holds the peer's address and the whole path with its query string: a
visitor's IP (a gdpr or hipaa client's raw IP is written nowhere) and whatever a page put in
a URL (e-mails, card numbers in a query). Lines keep the method, the path redacted strictly
(as for hipaa, IPs too: the client is not known yet) and the status; the peer's address is
left out. Installed on every app this project builds, in each worker process.
"""

from __future__ import annotations

import logging

from evothesis.privacy.redact import redact_url

#: Uvicorn's access line: (peer, method, path with query, HTTP version, status).
_UVICORN_ARGUMENTS = 5


class PrivateAccessLog(logging.Filter):
    """Rewrites uvicorn's access records before any handler formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == _UVICORN_ARGUMENTS:
            _, method, path, version, status = args
            record.msg = '"%s %s HTTP/%s" %s'
            record.args = (method, redact_url(str(path), strict=True), version, status)
        return True


def install_private_access_log() -> None:
    """Idempotent: apps built again in one process (tests, reloads) add no second filter."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, PrivateAccessLog) for f in access.filters):
        access.addFilter(PrivateAccessLog())
