"""The access log keeps the method, a redacted path and the status, never the peer."""

from __future__ import annotations

import logging

from evothesis.api.transport.access_log import PrivateAccessLog


def access_record(path: str) -> logging.LogRecord:
    """A record as uvicorn's HTTP protocols make it."""
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("203.0.113.77:51234", "GET", path, "1.1", 404),
        None,
    )


def test_the_peer_and_pii_in_the_path_are_left_out() -> None:
    record = access_record(
        "/api/v1/config/domain/olga.needle@example.com?card=4111-1111-1111-1111&ip=10.1.2.3&n=7"
    )
    assert PrivateAccessLog().filter(record)
    line = record.getMessage()
    assert (
        line
        == '"GET /api/v1/config/domain/[REDACTED]?card=[REDACTED]&ip=[REDACTED]&n=7 HTTP/1.1" 404'
    )


def test_an_innocent_path_is_kept_as_it_was() -> None:
    record = access_record("/events/recent?limit=5")
    PrivateAccessLog().filter(record)
    assert record.getMessage() == '"GET /events/recent?limit=5 HTTP/1.1" 404'


def test_other_records_pass_unchanged() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s", ("x",), None)
    PrivateAccessLog().filter(record)
    assert record.getMessage() == "x"
