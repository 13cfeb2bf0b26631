"""CachedDirectory: TTLs, negative caching, one lookup per host, stale answers in outages.

The source is a scripted stand-in for the registry and time is a variable, so each rule
is checked exactly; the real sources are exercised by the integration tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from evothesis.domain import ClientConfig
from evothesis.errors import RegistryUnavailable
from evothesis.registry.cache import WRITE_KEY_ENTRY, CachedDirectory
from evothesis.registry.secrets import hash_write_key
from tests.support.registry import Clock, ScriptedSource

T = TypeVar("T")
ACME = ClientConfig("client_acme")


def make(source: ScriptedSource, clock: Clock, **options: float) -> CachedDirectory:
    settings = {"ttl": 60.0, "negative_ttl": 10.0, "stale_for": 300.0, **options}
    return CachedDirectory(source, kind="test", monotonic=clock, **settings)  # type: ignore[arg-type]


def run(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())


def test_answers_are_cached_for_the_ttl_and_keyed_by_canonical_host() -> None:
    source, clock = ScriptedSource({"acme.com": ACME}), Clock()
    directory = make(source, clock)

    async def work() -> None:
        assert await directory.resolve("acme.com") is ACME
        assert await directory.resolve("https://ACME.com:8443/page") is ACME
        clock.now += 59
        assert await directory.resolve("acme.com") is ACME
        assert source.lookups == ["acme.com"]
        clock.now += 2
        assert await directory.resolve("acme.com") is ACME
        assert source.lookups == ["acme.com", "acme.com"]

    run(work)
    status = directory.status()
    assert (status.hits, status.misses, status.lookups) == (2, 2, 2)
    assert status.hit_rate == 0.5 and status.registry_reachable is True


def test_unknown_hosts_are_cached_for_the_shorter_negative_ttl() -> None:
    source, clock = ScriptedSource({}), Clock()
    directory = make(source, clock)

    async def work() -> None:
        assert await directory.resolve("new.example") is None
        clock.now += 9
        assert await directory.resolve("new.example") is None
        assert len(source.lookups) == 1
        source.answers["new.example"] = ACME  # registered meanwhile
        clock.now += 2
        assert await directory.resolve("new.example") is ACME

    run(work)


def test_what_is_not_a_host_never_reaches_the_source() -> None:
    source = ScriptedSource({})
    directory = make(source, Clock())

    async def work() -> None:
        for junk in ("", "   ", "a b", "-bad-.com", "http://"):
            assert await directory.resolve(junk) is None

    run(work)
    assert source.lookups == []


def test_a_burst_for_a_cold_host_makes_one_lookup() -> None:
    source = ScriptedSource({"acme.com": ACME})
    source.delay = 0.05
    directory = make(source, Clock())

    async def work() -> list[ClientConfig | None]:
        return await asyncio.gather(*(directory.resolve("acme.com") for _ in range(50)))

    assert run(work) == [ACME] * 50
    assert source.lookups == ["acme.com"]


def test_a_cancelled_waiter_does_not_cancel_the_shared_lookup() -> None:
    source = ScriptedSource({"acme.com": ACME})
    source.delay = 0.05
    directory = make(source, Clock())

    async def work() -> ClientConfig | None:
        impatient = asyncio.create_task(directory.resolve("acme.com"))
        patient = asyncio.create_task(directory.resolve("acme.com"))
        await asyncio.sleep(0.01)
        impatient.cancel()
        return await patient

    assert run(work) is ACME
    assert source.lookups == ["acme.com"]


def test_expired_answers_are_served_while_the_registry_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, clock = ScriptedSource({"acme.com": ACME}), Clock()
    directory = make(source, clock, retry_interval=2.0)

    async def work() -> None:
        assert await directory.resolve("acme.com") is ACME
        source.down = True
        clock.now += 61
        assert await directory.resolve("acme.com") is ACME  # stale, after one failed try
        assert await directory.resolve("acme.com") is ACME  # within the retry interval
        assert len(source.lookups) == 2
        clock.now += 3
        assert await directory.resolve("acme.com") is ACME
        assert len(source.lookups) == 3
        with pytest.raises(RegistryUnavailable):
            await directory.resolve("other.com")  # nothing cached to fall back on
        clock.now += 300  # past the stale window
        with pytest.raises(RegistryUnavailable):
            await directory.resolve("acme.com")
        source.down = False
        assert await directory.resolve("acme.com") is ACME

    caplog.set_level(logging.INFO, logger="evothesis.registry")
    run(work)
    assert directory.status().stale_answers == 2
    assert directory.status().registry_reachable is True
    fills = [r.getMessage() for r in caplog.records if "authorized" in r.getMessage()]
    assert fills == ["Domain acme.com authorized for client client_acme"] * 2


def test_invalidate_forgets_answers_and_ignores_lookups_already_in_flight() -> None:
    source = ScriptedSource({"acme.com": ACME})
    source.delay = 0.05
    directory = make(source, Clock())

    async def work() -> None:
        pending = asyncio.create_task(directory.resolve("acme.com"))
        await asyncio.sleep(0.01)
        directory.invalidate()  # the registry changed while the old answer was on its way
        assert await pending is ACME
        assert directory.status().cache_size == 0
        source.answers.clear()
        assert await directory.resolve("acme.com") is None

    run(work)


def test_the_cache_is_bounded() -> None:
    source = ScriptedSource({})
    directory = CachedDirectory(
        source, kind="test", ttl=60, negative_ttl=60, stale_for=0, max_entries=100
    )

    async def work() -> None:
        for i in range(250):
            await directory.resolve(f"site{i}.example")

    run(work)
    assert directory.status().cache_size == 100


def test_a_seeded_answer_is_never_preferred_over_the_registry() -> None:
    moved = ClientConfig("client_moved")
    source, clock = ScriptedSource({"acme.com": moved}), Clock()
    directory = make(source, clock)
    directory.seed("acme.com", ACME, age=0.0)

    async def work() -> None:
        assert await directory.resolve("acme.com") is moved  # asked at once, though young
        source.answers.clear()
        clock.now += 61
        assert await directory.resolve("acme.com") is None  # and forgotten when it says so

    run(work)
    assert source.lookups == ["acme.com", "acme.com"]


def test_a_seeded_answer_serves_while_the_registry_is_down_for_what_is_left_of_its_window() -> None:
    source, clock = ScriptedSource({}), Clock()
    source.down = True
    directory = make(source, clock)  # ttl 60 + stale_for 300: trusted 360 s after it was given
    directory.seed("acme.com", ACME, age=200.0)
    directory.seed("old.com", ACME, age=360.0)

    async def work() -> None:
        assert await directory.resolve("acme.com") is ACME
        clock.now += 159
        assert await directory.resolve("acme.com") is ACME
        clock.now += 2
        with pytest.raises(RegistryUnavailable):
            await directory.resolve("acme.com")
        with pytest.raises(RegistryUnavailable):
            await directory.resolve("old.com")

    run(work)
    assert directory.status().stale_answers == 2


def test_seeding_does_not_replace_what_this_process_was_told() -> None:
    source, clock = ScriptedSource({"acme.com": ACME}), Clock()
    directory = make(source, clock)

    async def work() -> None:
        assert await directory.resolve("acme.com") is ACME
        directory.seed("acme.com", ClientConfig("client_old"), age=1.0)
        assert await directory.resolve("acme.com") is ACME

    run(work)
    assert source.lookups == ["acme.com"]  # still the fresh answer, from the cache


def test_write_keys_are_cached_by_digest_apart_from_hosts_and_served_stale() -> None:
    digest = hash_write_key("wk_acme")
    source, clock = ScriptedSource({f"key:{digest}": ACME}), Clock()
    directory = make(source, clock)

    async def work() -> None:
        assert await directory.resolve_write_key("wk_acme") is ACME
        assert await directory.resolve_write_key("wk_acme") is ACME
        assert await directory.resolve_write_key("wk_other") is None
        assert await directory.resolve_write_key("") is None  # never asked
        assert source.lookups == [f"key:{digest}", f"key:{hash_write_key('wk_other')}"]
        # The key itself is kept nowhere: the entry is its digest, under a name no host has.
        assert await directory.resolve(WRITE_KEY_ENTRY.format(digest)) is None
        source.down = True
        clock.now += 61
        assert await directory.resolve_write_key("wk_acme") is ACME  # stale, still served

    run(work)
