"""The HTTP edge of a collector exposed without nginx: connections that never become requests
are closed, heads are bounded in time, size and count, and whatever the HTTP layer answers
by itself is the project's JSON error. Raw sockets, because no HTTP client sends half a
head; every wait has a deadline."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, suppress
from pathlib import Path
from typing import Any

import orjson
import pytest

from evothesis.config import Settings
from tests.support.loopback import free_port
from tests.support.raw_http import Answer, closed_by_peer, connect, read_answer, request
from tests.support.servers import (
    LOCAL_ORIGIN,
    RunningCollector,
    killed_on_exit,
    process_env,
    serve_in_thread,
    start_process,
    stop_process,
)

EVENT = orjson.dumps({"eventType": "pageview", "siteId": "localhost"})


def post_event(body: bytes = EVENT, extra: bytes = b"") -> bytes:
    head = request(
        "/collect",
        method="POST",
        extra=f"Origin: {LOCAL_ORIGIN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra,
    )
    return head + body


def exchange(url: str, data: bytes) -> Answer:
    with closing(connect(url)) as sock:
        sock.sendall(data)
        return read_answer(sock)


# ------------------------------------------------------------------ 7: time to send a head


@pytest.fixture
def quick(start_collector: Callable[..., RunningCollector]) -> RunningCollector:
    """A collector that gives a head half a second."""
    return start_collector(HEADER_READ_TIMEOUT=0.5)


def test_a_connection_that_sends_nothing_is_closed_silently(quick: RunningCollector) -> None:
    with closing(connect(quick.url)) as idle:
        started = time.monotonic()
        idle.settimeout(5)
        assert idle.recv(1024) == b""  # closed, with no answer to a request never made
    assert 0.4 < time.monotonic() - started < 3


@pytest.mark.parametrize(
    "partial",
    [b"POST /collect HTTP/1.1\r\nHost: 127.0.0.1\r\nOrig", b"G", b"GET /health HTTP/1.1\r\n"],
    ids=["half-a-header", "one-byte", "request-line-only"],
)
def test_a_head_that_stops_half_way_is_a_408_then_closed(
    quick: RunningCollector, partial: bytes
) -> None:
    with closing(connect(quick.url)) as slow:
        slow.sendall(partial)
        started = time.monotonic()
        answer = read_answer(slow)
        assert answer.status == 408 and answer.error_code == "request_timeout"
        assert answer.headers["connection"] == "close"
        assert closed_by_peer(slow, 5)
    assert time.monotonic() - started < 3


def test_a_trickling_head_does_not_reset_its_deadline(quick: RunningCollector) -> None:
    """Slowloris: one byte at a time, each well within any idle timeout."""
    head = request(extra=b"X-Padding: " + b"a" * 200 + b"\r\n")
    with closing(connect(quick.url)) as slow:
        started = time.monotonic()
        answer = None
        for byte in head:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            slow.settimeout(0.05)
            try:
                answer = read_answer(slow, timeout=0.05)
                break
            except TimeoutError:
                continue
        assert answer is not None, "the whole head trickled in unrefused"
        assert answer.status == 408
    assert time.monotonic() - started < 3


def test_a_head_that_arrives_in_pieces_within_the_deadline_is_served(
    quick: RunningCollector,
) -> None:
    head = request()
    with closing(connect(quick.url)) as sock:
        for start in range(0, len(head), 10):
            sock.sendall(head[start : start + 10])
            time.sleep(0.02)
        answer = read_answer(sock)
    assert answer.status == 200 and answer.json() == {"status": "healthy"}


def test_a_kept_alive_connection_has_the_deadline_from_its_next_requests_first_byte(
    quick: RunningCollector,
) -> None:
    with closing(connect(quick.url)) as sock:
        sock.sendall(request())
        assert read_answer(sock).status == 200
        time.sleep(1.0)  # idle longer than the head deadline, shorter than keep-alive
        sock.sendall(request())
        assert read_answer(sock).status == 200
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        started = time.monotonic()
        answer = read_answer(sock)
        assert answer.status == 408
        assert 0.3 < time.monotonic() - started < 3


def test_idle_connections_past_the_cap_are_closed_longest_idle_first(
    start_collector: Callable[..., RunningCollector],
) -> None:
    collector = start_collector(MAX_IDLE_CONNECTIONS=4, HEADER_READ_TIMEOUT=30)
    with ExitStack() as stack:
        idle = []
        for _ in range(7):
            idle.append(stack.enter_context(closing(connect(collector.url))))
            time.sleep(0.05)  # accepted in this order
        assert [closed_by_peer(sock, 0.5) for sock in idle] == [True] * 3 + [False] * 4
        # A request on a connection that was idle is served, and new senders still are.
        idle[-1].sendall(request())
        assert read_answer(idle[-1]).status == 200
        assert exchange(collector.url, request()).status == 200


# -------------------------------------------------------------- 8: size and count of a head


def test_a_64_mib_header_is_431_and_costs_the_server_no_memory(
    database_url: str, tmp_path: Path
) -> None:
    """The issue's example, against ``evothesis serve``: its peak RSS is compared before
    and after (the header used to be buffered whole, twice)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = process_env(
        DATABASE_URL=database_url,
        EVOTHESIS_DATA_DIR=str(tmp_path / "data"),
        EXPORT_IN_SERVE="false",
    )
    command = [sys.executable, "-m", "evothesis", "serve", "--port", str(port)]
    log = tmp_path / "serve.log"
    with killed_on_exit(start_process(command, env=env, log=log, health_url=f"{url}/health")) as (
        server
    ):
        before = peak_rss_mib(server.pid)
        huge = request(extra=b"X-Huge: " + b"a" * (64 * 1024 * 1024) + b"\r\n")
        with closing(connect(url)) as sock:
            sender = threading.Thread(target=send_ignoring_errors, args=(sock, huge))
            sender.start()
            answer = read_answer(sock)
            sender.join(timeout=30)
            assert answer.status == 431 and answer.error_code == "headers_too_large"
            assert closed_by_peer(sock, 10)
        assert peak_rss_mib(server.pid) - before < 20
        assert exchange(url, request()).status == 200
        assert stop_process(server) == 0


def send_ignoring_errors(sock: Any, data: bytes) -> None:
    with suppress(OSError):  # the server may close before it has read everything
        sock.sendall(data)


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match
    return int(match.group(1)) / 1024


@pytest.fixture
def edge(start_collector: Callable[..., RunningCollector]) -> RunningCollector:
    """A collector with the default edge limits (64 KiB, 100 fields)."""
    return start_collector()


LIMIT = 64 * 1024


def padded(total: int) -> bytes:
    """A GET /health head of exactly ``total`` bytes."""
    bare = len(request(extra=b"X-Pad: \r\n"))
    return request(extra=b"X-Pad: " + b"p" * (total - bare) + b"\r\n")


def test_a_head_of_exactly_the_limit_is_served_and_one_byte_more_is_431(
    edge: RunningCollector,
) -> None:
    assert len(padded(LIMIT)) == LIMIT
    assert exchange(edge.url, padded(LIMIT)).status == 200
    answer = exchange(edge.url, padded(LIMIT + 1))
    assert answer.status == 431 and answer.error_code == "headers_too_large"


@pytest.mark.parametrize(
    "head",
    [
        request("/health?" + "q" * LIMIT),
        request(extra=b"".join(b"X-%d: %s\r\n" % (i, b"v" * 60) for i in range(1000))),
    ],
    ids=["long-url", "many-medium-headers"],
)
def test_every_part_of_the_head_counts(edge: RunningCollector, head: bytes) -> None:
    assert exchange(edge.url, head).status == 431


def test_a_head_over_the_limit_in_small_pieces_is_431(edge: RunningCollector) -> None:
    head = padded(LIMIT * 2)
    with closing(connect(edge.url)) as sock:
        answer = None
        for start in range(0, len(head), 1000):
            try:
                sock.sendall(head[start : start + 1000])
            except OSError:
                break
        answer = read_answer(sock)
    assert answer.status == 431


def test_more_than_100_header_fields_are_431(edge: RunningCollector) -> None:
    def fields(count: int) -> bytes:  # Host is one of them
        return request(extra=b"".join(b"X-%d: v\r\n" % i for i in range(count - 1)))

    assert exchange(edge.url, fields(100)).status == 200
    answer = exchange(edge.url, fields(101))
    assert answer.status == 431 and answer.error_code == "headers_too_large"
    assert "100 header fields" in str(answer.json()["error"])


def test_a_body_in_the_same_packet_as_its_head_is_not_counted_as_head(
    edge: RunningCollector,
) -> None:
    """A 600 KB body sent with its head in one write reaches the server in reads far larger
    than the head's budget: only the head counts."""
    body = orjson.dumps(
        {"eventType": "pageview", "siteId": "localhost", "eventData": {"v": "x" * 600_000}}
    )
    answer = exchange(edge.url, post_event(body))
    assert answer.status == 200, answer.body


def test_pipelined_requests_are_each_answered(edge: RunningCollector) -> None:
    with closing(connect(edge.url)) as sock:
        sock.sendall(post_event() + request() + post_event())
        assert [read_answer(sock).status for _ in range(3)] == [200, 200, 200]


# ------------------------------------------------------ 9: what the HTTP layer answers itself


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET /health HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),  # TLS hello
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ],
    ids=["not-a-method", "junk-after-version", "space-in-name", "two-lengths", "tls", "h2"],
)
def test_what_is_not_http_gets_a_json_400_and_the_connection_closes(
    edge: RunningCollector, data: bytes
) -> None:
    with closing(connect(edge.url)) as sock:
        sock.sendall(data)
        answer = read_answer(sock)
        assert answer.status == 400, answer
        assert answer.error_code == "malformed_request"
        assert "invalid HTTP request" in str(answer.json()["error"])
        assert closed_by_peer(sock, 5)


def test_a_broken_chunked_body_is_a_json_400(edge: RunningCollector) -> None:
    """The request is already being served when its body turns out not to be HTTP."""
    head = request(
        "/collect",
        method="POST",
        extra=f"Origin: {LOCAL_ORIGIN}\r\nTransfer-Encoding: chunked\r\n".encode(),
    )
    answer = exchange(edge.url, head + b"5\r\nabcde\r\nZZZ\r\n")
    assert answer.status == 400 and answer.error_code == "malformed_request"
    with edge.client() as api:
        assert api.get("/events/count").json()["count"] == 0


def test_an_upgrade_is_answered_as_plain_http_and_the_connection_closes(
    edge: RunningCollector,
) -> None:
    upgrade = request(extra=b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    with closing(connect(edge.url)) as sock:
        sock.sendall(upgrade + b"\x81\x80 not http")
        answer = read_answer(sock)
        assert answer.status == 200 and answer.json() == {"status": "healthy"}
        assert closed_by_peer(sock, 5)


@pytest.fixture
def failing_app() -> Iterator[str]:
    """An application that fails before answering, on the server wiring of ``server.py``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/silent":
            return  # returns without answering
        raise RuntimeError("a bug")

    port = free_port()
    server, thread = serve_in_thread(app, port, Settings(_env_file=None))
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


@pytest.mark.parametrize("path", ["/raises", "/silent"])
def test_an_application_that_fails_before_answering_is_a_json_500(
    failing_app: str, path: str
) -> None:
    answer = exchange(failing_app, request(path))
    assert answer.status == 500 and answer.error_code == "internal_error"
