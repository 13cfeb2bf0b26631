"""Retry delays: how long a failed batch or a failing destination waits before the next try."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, *, base: float = 5.0, cap: float = 900.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: spreads retries of many failing batches so
    that a store coming back is not hit by all of them at once."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)
