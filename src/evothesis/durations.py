"""Durations and intervals as operators write them (``90s``, ``5m``, ``hourly``, ``off``).

Pure parsing, shared by the settings (which validate them at start-up) and anything else
that reads a duration from a person.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["INTERVAL_WORDS", "parse_duration", "parse_interval"]

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
#: Words for intervals.
INTERVAL_WORDS: Final = {"minutely": 60.0, "hourly": 3600.0, "daily": 86400.0}


def parse_duration(text: str | float) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``6h``, ``1d`` or ``250ms``."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (examples: 30s, 5m, 6h, 1d)")
    return float(match[1]) * _UNITS[(match[2] or "s").lower()]


def parse_interval(text: str) -> float | None:
    """Seconds between scheduled runs, or ``None`` for ``off`` (on demand only)."""
    word = text.strip().lower()
    if word in {"off", "none", "manual"}:
        return None
    if word in INTERVAL_WORDS:
        return INTERVAL_WORDS[word]
    seconds = parse_duration(word)
    if seconds <= 0:
        raise ValueError(f"an interval must be positive: {text!r}")
    return seconds
