"""Loopback helpers shared by the fixtures, the nginx support and the benchmarks (which
import this module without pytest's configuration)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
