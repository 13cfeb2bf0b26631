"""Durations, schedules and retry delays as operators write and as the pipeline needs them."""

from __future__ import annotations

import random
import re
from typing import Final

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.IGNORECASE)
#: The seed's schedule words, as intervals.
SCHEDULE_WORDS: Final = {"minutely": 60.0, "hourly": 3600.0, "daily": 86400.0}


def parse_duration(text: str | float) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``6h``, ``1d`` or ``250ms``."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (examples: 30s, 5m, 6h, 1d)")
    return float(match[1]) * _UNITS[(match[2] or "s").lower()]


def parse_schedule(text: str) -> float | None:
    """Seconds between scheduled exports, or ``None`` for ``off`` (on demand only)."""
    word = text.strip().lower()
    if word in {"off", "none", "manual"}:
        return None
    if word in SCHEDULE_WORDS:
        return SCHEDULE_WORDS[word]
    seconds = parse_duration(word)
    if seconds <= 0:
        raise ValueError(f"an export schedule must be positive: {text!r}")
    return seconds


def retry_delay(
    attempt: int, *, base: float = 5.0, cap: float = 900.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: spreads retries of many failing batches so
    that a store coming back is not hit by all of them at once."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)
