"""HTTP/1.1 by hand over sockets, for tests that send what no HTTP client would: half a
head, a header of megabytes, bytes that are not HTTP. Every read has a deadline."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import orjson


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        parsed: dict[str, object] = orjson.loads(self.body)
        return parsed

    @property
    def error_code(self) -> object:
        """The code of the project's error shape, checked to be that shape."""
        assert self.headers["content-type"] == "application/json", self.headers
        body = self.json()
        assert body["status"] == "error", body
        error = body["error"]
        assert isinstance(error, dict) and error["message"], body
        return error["code"]


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def connect(url: str, timeout: float = 10) -> socket.socket:
    return socket.create_connection(address(url), timeout=timeout)


def read_answer(sock: socket.socket, timeout: float = 10) -> Answer:
    """One answer with a Content-Length; fails if it does not come within ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return Answer(int(lines[0].split(" ")[1]), headers, body[:length])


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes the connection within ``timeout`` (reading, and dropping,
    whatever it still sends)."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def request(path: str = "/health", *, method: str = "GET", extra: bytes = b"") -> bytes:
    """A small well-formed request head, with ``extra`` header lines."""
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + extra + b"\r\n"
