"""Loopback helpers shared by the fixtures, the nginx support and the benchmarks (which
import this module without pytest's configuration)."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(
    process: subprocess.Popen[bytes], port: int, *, host: str = "127.0.0.1", timeout: float = 30
) -> None:
    """Return once ``process`` accepts TCP connections on ``host:port``.

    Raises ``RuntimeError`` when the process exits first or ``timeout`` seconds pass; it is
    not stopped here, because whoever started it also knows where its logs are.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"did not listen on {host}:{port} in {timeout:.0f} s") from None
            time.sleep(0.05)
