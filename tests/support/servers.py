"""Real collector servers on 127.0.0.1: in a thread of the test process, or as processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from evothesis.app import create_app
from evothesis.config import Settings
from evothesis.server import uvicorn_config
from tests.support.loopback import free_port

#: Every test database starts with the development client (``client_test`` for localhost
#: and 127.0.0.1), as the embedded default registers it.
LOCAL_ORIGIN = "http://localhost"
#: The read-only token test collectors have (``run_collector``) and their clients send: a
#: test collector is not a development one, so reading its state needs a token.
OPERATOR_TOKEN = "test-operator-token"
#: What a test sends to read a collector's state (``/health``'s details, status, counts).
OPERATOR_HEADERS = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


@dataclass
class RunningCollector:
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread
    #: Folders made for this collector (``collector_folders``), removed when it stops.
    scratch: tuple[Path, ...] = ()

    def client(
        self, *, origin: str | None = LOCAL_ORIGIN, operator: bool = True, **kwargs: Any
    ) -> httpx.Client:
        """An HTTP client that posts as a page of ``origin`` (``None``: as a server) and, with
        ``operator``, reads as an operator (the collector's operator token, if it has one)."""
        headers = {"Origin": origin} if origin else {}
        if operator and self.settings.operator_token:
            headers["Authorization"] = f"Bearer {self.settings.operator_token}"
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(base_url=self.url, timeout=10, headers=headers, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        for folder in self.scratch:
            shutil.rmtree(folder, ignore_errors=True)


def collector_folders(settings: dict[str, Any]) -> tuple[Path, ...]:
    """Give a test collector its own spool and data folders (unless the test chose them)
    and no export scheduler unless asked: exports only where a test wants them, and nothing
    in the working tree. Returns the folders it made, for the collector to remove."""
    made = []
    for name, prefix in (
        ("SPOOL_DIR", "evothesis-spool-"),
        ("EVOTHESIS_DATA_DIR", "evothesis-data-"),
    ):
        if name not in settings:
            made.append(Path(tempfile.mkdtemp(prefix=prefix)))
            settings[name] = str(made[-1])
    settings.setdefault("EXPORT_IN_SERVE", False)
    return tuple(made)


def serve_in_thread(
    app: Any, port: int, settings: Settings | None = None
) -> tuple[uvicorn.Server, threading.Thread]:
    """A real uvicorn server for ``app`` on 127.0.0.1 in a thread, once it has started;
    the HTTP edge's limits come from ``settings`` (the defaults when not given)."""
    config = uvicorn_config(
        app, host="127.0.0.1", port=port, settings=settings or Settings(_env_file=None)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not start")
        time.sleep(0.02)
    return server, thread


def process_env(**values: str) -> dict[str, str]:
    """The environment of a server process a test starts: ``PATH``, ``HOME``, the suite's
    secret key, the operator token, ``ENVIRONMENT=test`` and ``values``, nothing of the
    operator's settings; and ``PYTHONPATH`` when set, so that a worktree tested with
    another checkout's virtualenv runs its own code in the process too (the editable
    install points at the other one)."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "EVOTHESIS_SECRET_KEY": os.environ["EVOTHESIS_SECRET_KEY"],
        "EVOTHESIS_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "ENVIRONMENT": "test",
    }
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return {**env, **values}


def start_process(
    command: list[str], *, env: dict[str, str], log: Path, health_url: str, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """Start a server process logging to ``log``; return once ``health_url`` answers 200."""
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"{health_url} not healthy in {timeout} s:\n{log.read_text()}")
        try:
            if httpx.get(health_url, timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes]) -> int:
    """Stop a server the way an operator or an orchestrator does (SIGTERM) and return its
    exit code; one still running after 30 s is killed and the wait raises."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()


@contextmanager
def killed_on_exit(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """A server process that a failing test must not leave running."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def run_collector(database_url: str, port: int | None = None, **overrides: Any) -> RunningCollector:
    """Start a real uvicorn server for ``create_app`` in a thread, wait until it answers."""
    scratch = collector_folders(overrides)
    overrides.setdefault("EVOTHESIS_OPERATOR_TOKEN", OPERATOR_TOKEN)
    overrides.setdefault("ENVIRONMENT", "test")
    settings = Settings(_env_file=None, **overrides)
    port = port or free_port()
    server, thread = serve_in_thread(
        create_app(settings, database_url=database_url), port, settings
    )
    return RunningCollector(f"http://127.0.0.1:{port}", settings, server, thread, scratch)
