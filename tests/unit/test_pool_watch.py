"""The connection pool's bookkeeping (storage/pool.py ``PoolWatch``): who waited, how long,
and the saturation line the seeds' operators grep for, at most every 30 seconds."""

from __future__ import annotations

import logging

import pytest

from evothesis.storage.pool import SATURATION_LOG_SECONDS, PoolWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def saturation_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "pool saturated" in r.getMessage()]


def test_acquires_below_the_limit_never_wait(caplog: pytest.LogCaptureFixture) -> None:
    watch = PoolWatch(2, clock=Clock())
    for _ in range(2):
        watch.acquired(watch.acquiring())
    assert (watch.in_use, watch.waiting, watch.waits) == (2, 0, 0)
    watch.released()
    watch.acquired(watch.acquiring())
    assert (watch.in_use, watch.waits, watch.wait_seconds) == (2, 0, 0.0)
    assert saturation_lines(caplog) == []


def test_a_wait_is_counted_timed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    watch = PoolWatch(1, clock=clock)
    watch.acquired(watch.acquiring())
    started = watch.acquiring()  # every connection is in use: this one waits
    assert started is not None and watch.waiting == 1
    clock.now += 0.25
    watch.released()
    with caplog.at_level(logging.WARNING, logger="evothesis.storage"):
        watch.acquired(started)
    assert (watch.in_use, watch.waiting, watch.waits, watch.wait_seconds) == (1, 0, 1, 0.25)
    [line] = saturation_lines(caplog)
    assert "all 1 connections in use, 1 request(s) waited" in line
    assert "DATABASE_POOL_SIZE" in line


def test_saturation_is_logged_at_most_every_30_seconds_with_what_happened_since(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    watch = PoolWatch(1, clock=clock)
    watch.acquired(watch.acquiring())
    with caplog.at_level(logging.WARNING, logger="evothesis.storage"):
        for _ in range(5):  # four waits after the first: within the quiet period
            started = watch.acquiring()
            clock.now += 0.1
            watch.released()
            watch.acquired(started)
        assert len(saturation_lines(caplog)) == 1
        clock.now += SATURATION_LOG_SECONDS
        started = watch.acquiring()
        watch.gave_up(started)  # a timed-out wait counts as one too
    first, second = saturation_lines(caplog)
    assert "1 request(s) waited" in first
    assert "5 request(s) waited for one in the last" in second
    assert watch.waits == 6 and watch.waiting == 0 and watch.in_use == 1


def test_a_commands_fixed_pool_counts_waits_without_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    watch = PoolWatch(1, log_saturation=False, clock=clock)
    watch.acquired(watch.acquiring())
    with caplog.at_level(logging.WARNING, logger="evothesis.storage"):
        started = watch.acquiring()
        clock.now += 1
        watch.gave_up(started)
    assert (watch.waits, watch.wait_seconds) == (1, 1.0)
    assert saturation_lines(caplog) == []
