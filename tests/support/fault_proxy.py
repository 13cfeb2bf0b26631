"""A small HTTP/1.1 fault proxy on 127.0.0.1 for the export fault tests.

It sits between the pipeline and the moto S3 server and, request by request, either forwards
or injects one fault, so a test can freeze an exporter at a chosen stage of an upload:

``forward``   request and response are relayed unchanged;
``stall``     the request is swallowed: nothing reaches S3, the client waits for an answer;
``partial``   the headers and half of the body reach S3, then the proxy stalls;
``withhold``  the whole request reaches S3 (which stores the object) but its response is
              read and dropped, so the client never learns that the upload succeeded;
``reset``     the connection is reset as soon as a request arrives (S3 unreachable).

Faults apply to the requests whose method is in ``methods`` (all methods when ``None``); the
others are forwarded, so processing can read raw objects while its writes are stalled. A
stalled connection keeps reading and discarding what the client sends, and closes the
upstream connection once the client is gone (a killed client), so S3 sees a truncated
upload exactly as it would from a crashed process.

Only Content-Length bodies and chunked bodies are understood; responses are relayed as bytes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Literal

Mode = Literal["forward", "stall", "partial", "withhold", "reset"]
_LOOPBACK = "127.0.0.1"
_CHUNK = 65536


class _ClientGone(Exception):
    """The client closed (or reset) its connection."""


class _Connection:
    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.buffer = b""
        #: Set before a ``withhold`` request is forwarded: responses from now on are dropped.
        self.withhold = False


class FaultProxy:
    """Start with ``start()`` (or ``with``); ``endpoint`` is what the pipeline connects to."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = (_LOOPBACK, upstream_port)
        self._mode: Mode = "forward"
        self._methods: frozenset[str] | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._counts: Counter[str] = Counter()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((_LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]

    @property
    def endpoint(self) -> str:
        return f"http://{_LOOPBACK}:{self.port}"

    # ------------------------------------------------------------------------- control

    def set_mode(self, mode: Mode, methods: Iterable[str] | None = ("PUT",)) -> None:
        """Apply ``mode`` to every later request of ``methods`` (``None``: all methods)."""
        with self._lock:
            self._mode = mode
            self._methods = None if methods is None else frozenset(m.upper() for m in methods)

    def count(self, what: str) -> int:
        """How often something happened: ``requests`` (seen), and requests ``forward``ed,
        ``stall``ed, sent ``partial``ly, forwarded to ``withhold`` their answer (each counted
        once the fault has taken effect), ``withheld`` (connections whose answer was
        dropped), ``reset``."""
        with self._lock:
            return self._counts[what]

    def start(self) -> FaultProxy:
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        """Close every socket and wait (bounded) for the relay threads."""
        self._stopped.set()
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            _close(sock)
        _close(self._listener)
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------ plumbing

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._stopped.is_set():
                return False
            self._sockets.add(sock)
            return True

    def _bump(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    def _action(self, method: str) -> Mode:
        with self._lock:
            if self._methods is None or method in self._methods:
                return self._mode
            return "forward"

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            if not self._track(client):
                _close(client)
                return
            self._spawn(self._serve, _Connection(client))

    def _serve(self, conn: _Connection) -> None:
        """Relay the client's requests one by one (HTTP/1.1, no pipelining by obstore)."""
        try:
            while not self._stopped.is_set():
                head = self._read_head(conn)
                if head is None:
                    return
                method = head.split(b" ", 1)[0].decode("latin-1").upper()
                body = self._read_body(conn, head)
                self._bump("requests")
                action = self._action(method)
                if action == "reset":
                    self._bump(action)
                    _reset(conn.client)
                    return
                if action == "stall":
                    self._bump(action)
                    self._drain(conn)
                    return
                upstream = self._upstream_for(conn)
                if upstream is None:
                    return
                if action == "partial":
                    upstream.sendall(head + body[: len(body) // 2])
                    self._bump(action)
                    self._drain(conn)
                    return
                conn.withhold = action == "withhold"
                upstream.sendall(head + body)
                self._bump(action)
        except (_ClientGone, OSError):
            return
        finally:
            for sock in (conn.client, conn.upstream):
                if sock is not None:
                    self._forget(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        _close(sock)

    def _upstream_for(self, conn: _Connection) -> socket.socket | None:
        if conn.upstream is None:
            upstream = socket.create_connection(self._upstream, timeout=5)
            upstream.settimeout(None)
            if not self._track(upstream):
                _close(upstream)
                return None
            conn.upstream = upstream
            self._spawn(self._relay_responses, conn, upstream)
        return conn.upstream

    def _relay_responses(self, conn: _Connection, upstream: socket.socket) -> None:
        withheld = False
        try:
            while data := upstream.recv(_CHUNK):
                if conn.withhold:
                    if not withheld:
                        withheld = True
                        self._bump("withheld")
                    continue
                conn.client.sendall(data)
        except OSError:
            pass
        finally:
            # Upstream closed: so does the client's connection (unless an answer is being
            # withheld, where the client must keep waiting until it is killed or times out).
            if not conn.withhold:
                self._forget(conn.client)

    def _drain(self, conn: _Connection) -> None:
        """Swallow whatever the client still sends until it goes away or the proxy stops."""
        try:
            while conn.client.recv(_CHUNK):
                pass
        except OSError:
            pass

    def _recv(self, conn: _Connection) -> None:
        data = conn.client.recv(_CHUNK)
        if not data:
            raise _ClientGone
        conn.buffer += data

    def _read_head(self, conn: _Connection) -> bytes | None:
        """The request line and headers (with the blank line), or ``None`` at a clean end."""
        while b"\r\n\r\n" not in conn.buffer:
            try:
                self._recv(conn)
            except _ClientGone:
                return None
        end = conn.buffer.index(b"\r\n\r\n") + 4
        head, conn.buffer = conn.buffer[:end], conn.buffer[end:]
        return head

    def _read_body(self, conn: _Connection, head: bytes) -> bytes:
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            return self._read_chunked(conn)
        return self._take(conn, int(headers.get(b"content-length", b"0")))

    def _take(self, conn: _Connection, size: int) -> bytes:
        while len(conn.buffer) < size:
            self._recv(conn)
        data, conn.buffer = conn.buffer[:size], conn.buffer[size:]
        return data

    def _read_line(self, conn: _Connection) -> bytes:
        while b"\r\n" not in conn.buffer:
            self._recv(conn)
        return self._take(conn, conn.buffer.index(b"\r\n") + 2)

    def _read_chunked(self, conn: _Connection) -> bytes:
        """A chunked body, kept in its chunked encoding (it is forwarded as such)."""
        body = b""
        while True:
            size_line = self._read_line(conn)
            body += size_line
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while (line := self._read_line(conn)) != b"\r\n":  # trailers
                    body += line
                return body + line
            body += self._take(conn, size + 2)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a host refusing the connection would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
