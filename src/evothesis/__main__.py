"""Allow ``python -m evothesis``, handy where the console script is not on PATH."""

from __future__ import annotations

from evothesis.cli import main

main()
