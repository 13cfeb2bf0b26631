"""The HTTP edge protocol fed bytes directly, read by read, over a recording stand-in for
asyncio's transport: where a read ends is chosen here, not by the kernel, and deadlines are
passed by calling the watch's check with a later time. The sockets version of every rule
is in tests/integration/test_http_edge.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import uvicorn
from uvicorn.server import ServerState

from evothesis.api.errors import status_for
from evothesis.api.transport.edge import (
    LINGER_SECONDS,
    EdgeHttpProtocol,
    EdgeLimits,
    error_response,
)
from evothesis.errors import HeadersTooLarge, MalformedRequest, RequestTimeout

LIMITS = EdgeLimits(
    header_timeout=10.0, max_header_bytes=1024, max_headers=10, max_idle_connections=3
)


class Transport:
    """What the protocol wrote and whether it closed; the rest of asyncio's transport API
    as far as uvicorn uses it."""

    def __init__(self) -> None:
        self.written = b""
        self.eof = False
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.eof, "written after write_eof"
        self.written += data

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def answers(self) -> list[tuple[int, bytes]]:
        """Status and body of each complete answer written so far."""
        found = []
        rest = self.written
        while b"\r\n\r\n" in rest:
            head, rest = rest.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:])
            length = int(headers["content-length"])
            found.append((int(lines[0].split()[1]), rest[:length]))
            rest = rest[length:]
        return found


async def echo_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 200 with the length of the request body it read."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


Scenario = Callable[[Callable[[], tuple[EdgeHttpProtocol, Transport]]], Awaitable[None]]


def run(scenario: Scenario, limits: EdgeLimits = LIMITS) -> None:
    """Run ``scenario`` on a loop, with a factory of connected protocols of one server."""
    config = uvicorn.Config(echo_length, log_config=None)
    state = ServerState()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def connect() -> tuple[EdgeHttpProtocol, Transport]:
            protocol = EdgeHttpProtocol(config, state, {}, loop, limits=limits)
            transport = Transport()
            protocol.connection_made(transport)  # type: ignore[arg-type]
            return protocol, transport

        await scenario(connect)

    asyncio.run(main())


async def settle() -> None:
    """Let the request's task run and the one-write transport flush."""
    for _ in range(5):
        await asyncio.sleep(0)


def head(extra: bytes = b"", *, body: int = 0) -> bytes:
    return b"POST /x HTTP/1.1\r\nHost: h\r\n" + extra + b"Content-Length: %d\r\n\r\n" % body


def test_a_body_in_the_same_read_as_its_head_is_not_counted_as_head() -> None:
    async def scenario(connect: Any) -> None:
        protocol, transport = connect()
        protocol.data_received(head(body=100_000) + b"b" * 100_000)
        await settle()
        assert transport.answers() == [(200, b"100000")]
        assert not transport.closed

    run(scenario)


def test_the_next_requests_head_is_counted_from_where_the_last_one_ended() -> None:
    async def scenario(connect: Any) -> None:
        protocol, transport = connect()
        first = head(body=5000) + b"b" * 5000
        second = head(b"X-Pad: " + b"p" * 2000 + b"\r\n")
        protocol.data_received(first + second[:500])
        await settle()
        protocol.data_received(second[500:])
        await settle()
        assert [status for status, _ in transport.answers()] == [200, 431]
        assert transport.eof

    run(scenario)


def test_requests_in_one_read_are_each_bounded_by_their_own_head() -> None:
    """Two requests in one read larger than the budget: the first ends within it, the
    second's head begins within it (pipelining)."""
    first = head(body=900) + b"b" * 900

    async def scenario(connect: Any) -> None:
        protocol, transport = connect()
        protocol.data_received(first + head(b"X-Pad: " + b"p" * 200 + b"\r\n"))
        await settle()
        assert [status for status, _ in transport.answers()] == [200, 200]

        protocol, transport = connect()
        protocol.data_received(first + head(b"X-Pad: " + b"p" * 3000 + b"\r\n"))
        await settle()
        assert [status for status, _ in transport.answers()] == [431]

    run(scenario)


@pytest.mark.parametrize("pieces", [1, 7, 3000])
def test_a_head_over_budget_is_refused_however_it_is_cut(pieces: int) -> None:
    async def scenario(connect: Any) -> None:
        protocol, transport = connect()
        data = head(b"X-Pad: " + b"p" * 3000 + b"\r\n")
        size = -(-len(data) // pieces)
        for start in range(0, len(data), size):
            protocol.data_received(data[start : start + size])
        await settle()
        [(status, body)] = transport.answers()
        assert status == 431
        assert orjson.loads(body)["error"]["code"] == "headers_too_large"
        assert transport.eof and not transport.closed  # lingering: reads and drops the rest
        protocol.data_received(b"more that is never parsed")

    run(scenario)


def test_a_head_of_exactly_the_budget_is_served() -> None:
    async def scenario(connect: Any) -> None:
        protocol, transport = connect()
        bare = len(head(b"X-Pad: \r\n"))
        protocol.data_received(head(b"X-Pad: " + b"p" * (1024 - bare) + b"\r\n"))
        await settle()
        assert transport.answers() == [(200, b"0")]

    run(scenario)


def test_too_many_fields_are_refused() -> None:
    async def scenario(connect: Any) -> None:
        protocol, transport = connect()
        protocol.data_received(head(b"".join(b"X-%d: v\r\n" % i for i in range(9))))
        await settle()
        [(status, body)] = transport.answers()
        assert status == 431
        assert "at most 10 header fields; this one has 11" in body.decode()

    run(scenario)


def test_deadlines_close_or_refuse_and_lingering_ends() -> None:
    async def scenario(connect: Any) -> None:
        silent, silent_transport = connect()
        partial, partial_transport = connect()
        partial.data_received(b"GET / HTTP/1.1\r\nHo")
        now = asyncio.get_running_loop().time()
        for protocol in (silent, partial):
            protocol.expire(now + LIMITS.header_timeout - 1)
        assert not silent_transport.closed and partial_transport.written == b""
        for protocol in (silent, partial):
            protocol.expire(now + LIMITS.header_timeout + 0.1)
        assert silent_transport.closed and silent_transport.written == b""
        await settle()
        [(status, body)] = partial_transport.answers()
        assert status == 408 and b"within 10 s" in body
        assert not partial_transport.closed
        partial.expire(now + LIMITS.header_timeout + LINGER_SECONDS + 1)
        assert partial_transport.closed

    run(scenario)


def test_a_served_head_has_no_deadline_until_the_next_requests_first_byte() -> None:
    async def scenario(connect: Any) -> None:
        protocol, transport = connect()
        protocol.data_received(head())
        await settle()
        later = asyncio.get_running_loop().time() + 1000
        protocol.expire(later)  # idle after an answer: uvicorn's keep-alive timeout applies
        assert not transport.closed
        protocol.data_received(b"GET")
        protocol.expire(later)
        assert not transport.closed
        protocol.expire(later + LIMITS.header_timeout + 1)
        await settle()
        assert [status for status, _ in transport.answers()] == [200, 408]

    run(scenario)


def test_past_the_idle_cap_the_longest_idle_connection_is_closed() -> None:
    async def scenario(connect: Any) -> None:
        connections = [connect() for _ in range(3)]  # the cap: 3
        busy, busy_transport = connections[0]
        busy.data_received(head(body=10))  # in a request: not idle, not closed for the cap
        connections += [connect() for _ in range(2)]
        assert [t.closed for _, t in connections] == [False, True, False, False, False]
        busy.data_received(b"b" * 10)
        await settle()
        assert busy_transport.answers() == [(200, b"10")]
        # Answered and kept alive, it is idle again, the newest: the oldest idle one goes.
        assert [t.closed for _, t in connections] == [False, True, True, False, False]
        connections.append(connect())
        assert [t.closed for _, t in connections] == [False, True, True, True, False, False]

    run(scenario)


def test_what_is_not_http_is_a_json_400() -> None:
    async def scenario(connect: Any) -> None:
        protocol, transport = connect()
        protocol.data_received(b"\x16\x03\x01 hello\r\n\r\n")
        await settle()
        [(status, body)] = transport.answers()
        assert status == 400
        error = orjson.loads(body)["error"]
        assert error["code"] == "malformed_request"
        assert error["message"].startswith("invalid HTTP request: ")

    run(scenario)


@pytest.mark.parametrize(
    ("error", "status", "phrase"),
    [
        (MalformedRequest("invalid HTTP request: Invalid method"), 400, b"Bad Request"),
        (RequestTimeout("slow"), 408, b"Request Timeout"),
        (HeadersTooLarge("big"), 431, b"Request Header Fields Too Large"),
    ],
)
def test_error_answers_are_whole_json_answers_that_close(
    error: Any, status: int, phrase: bytes
) -> None:
    assert status_for(error) == status
    data = error_response(error, [(b"date", b"Mon, 01 Jun 2026 12:00:00 GMT")])
    head, body = data.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 %d %s" % (status, phrase)
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers == {
        b"date": b"Mon, 01 Jun 2026 12:00:00 GMT",
        b"content-type": b"application/json",
        b"content-length": str(len(body)).encode(),
        b"connection": b"close",
    }
    assert orjson.loads(body) == {
        "status": "error",
        "error": {"code": error.code, "message": error.message},
    }
