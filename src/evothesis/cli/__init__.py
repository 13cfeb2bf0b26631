"""The ``evothesis`` command line: ``main`` builds it from one module per command group,
with the helpers they share in ``common``."""

from evothesis.cli.main import app, main

__all__ = ["app", "main"]
