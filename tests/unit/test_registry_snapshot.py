"""The registry snapshot: sealed on disk, refused when damaged, trusted for a bounded time,
emptied of what the registry took back, written when answers change and not more often.

Real files in a temporary folder, the real secret box and cache; the registry is the
scripted stand-in of ``tests/support/registry.py`` and both clocks are variables.
"""

from __future__ import annotations

import asyncio
import logging
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from evothesis.domain import BotPolicy, ClientConfig, ConsentMode, IpCollection, PrivacyLevel
from evothesis.errors import RegistryUnavailable
from evothesis.registry.cache import CachedDirectory
from evothesis.registry.secrets import SecretBox, generate_key, hash_write_key
from evothesis.registry.snapshot import SNAPSHOT_FILE_NAME, SnapshotKeeper, read_snapshot
from tests.support.registry import Clock, ScriptedSource

T = TypeVar("T")

ACME = ClientConfig(
    "client_acme",
    privacy_level=PrivacyLevel.GDPR,
    ip_collection=IpCollection.ANONYMIZED,
    honour_dnt=False,
    consent_mode=ConsentMode.REQUIRED,
    bot_policy=BotPolicy.DROP,
    ip_salt=bytes(range(32)),
    write_key_sha256=hash_write_key("wk_acme"),
)
OTHER = ClientConfig("client_other", ip_salt=b"\x01" * 32)
MAX_AGE = 3600.0
KEY = generate_key()


def run(work: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(work())


def box(*keys: str) -> SecretBox:
    return SecretBox([key.encode() for key in keys or (KEY,)])


def keeper(folder: Path, wall: Clock, **options: object) -> SnapshotKeeper:
    return SnapshotKeeper(folder, box(), max_age=MAX_AGE, wall=wall, **options)  # type: ignore[arg-type]


def write(folder: Path, wall: Clock, *answers: tuple[str, ClientConfig | None]) -> None:
    """One process's life: told ``answers`` by the registry, then stopped (which writes)."""
    kept = keeper(folder, wall)

    async def work() -> None:
        async with kept.running():
            for host, client in answers:
                kept.answered(host, client)

    run(work)


async def until(condition: Callable[[], bool]) -> None:
    """Poll until ``condition`` holds (the writer runs on its own schedule), five seconds at
    most."""
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def loaded(folder: Path, wall: Clock, key: str = KEY) -> dict[str, tuple[ClientConfig, float]]:
    kept = SnapshotKeeper(folder, box(key), max_age=MAX_AGE, wall=wall)
    return {host: (client, age) for host, client, age in kept.load()}


def test_answers_come_back_whole_with_their_age_and_the_secrets_stay_sealed(
    tmp_path: Path,
) -> None:
    wall = Clock(1_000_000.0)
    write(tmp_path, wall, ("acme.com", ACME), ("shop.acme.com", ACME), ("other.org", OTHER))
    wall.now += 90
    assert loaded(tmp_path, wall) == {
        "acme.com": (ACME, 90.0),
        "shop.acme.com": (ACME, 90.0),
        "other.org": (OTHER, 90.0),
    }
    path = tmp_path / SNAPSHOT_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    for plain in (b"acme.com", b"client_acme", ACME.ip_salt.hex().encode()):
        assert plain not in data
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_file_sealed_with_a_retired_key_still_opens_while_that_key_is_listed(
    tmp_path: Path,
) -> None:
    wall = Clock(1_000_000.0)
    write(tmp_path, wall, ("acme.com", ACME))
    kept = SnapshotKeeper(tmp_path, box(generate_key(), KEY), max_age=MAX_AGE, wall=wall)
    assert [host for host, _, _ in kept.load()] == ["acme.com"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(
            lambda data: data[:60] + bytes([data[60] ^ 0x01]) + data[61:], id="one-bit-changed"
        ),
        pytest.param(lambda data: data + b"AAAA", id="appended-to"),
        pytest.param(lambda data: b'{"format": 1, "answers": [], "removed": {}}', id="plain"),
        pytest.param(lambda data: box().seal(bytes(32)), id="another-secret-of-the-same-key"),
        pytest.param(lambda data: box().seal(b'{"format": 2}'), id="another-format"),
    ],
)
def test_a_damaged_file_is_refused_and_the_next_write_replaces_it(
    tmp_path: Path, damage: Callable[[bytes], bytes], caplog: pytest.LogCaptureFixture
) -> None:
    wall = Clock(1_000_000.0)
    write(tmp_path, wall, ("acme.com", ACME))
    path = tmp_path / SNAPSHOT_FILE_NAME
    path.write_bytes(damage(path.read_bytes()))
    caplog.set_level(logging.WARNING, logger="evothesis.registry")

    assert loaded(tmp_path, wall) == {}
    assert "refused" in caplog.text and "starting without it" in caplog.text

    write(tmp_path, wall, ("other.org", OTHER))
    assert set(loaded(tmp_path, wall)) == {"other.org"}


def test_a_file_sealed_with_another_key_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wall = Clock(1_000_000.0)
    write(tmp_path, wall, ("acme.com", ACME))
    caplog.set_level(logging.WARNING, logger="evothesis.registry")
    assert loaded(tmp_path, wall, key=generate_key()) == {}
    assert "sealed with another key" in caplog.text


def test_no_file_is_no_answers(tmp_path: Path) -> None:
    assert loaded(tmp_path / "never-written", Clock()) == {}


def test_answers_are_trusted_for_max_age_after_the_registry_gave_them_and_not_from_the_future(
    tmp_path: Path,
) -> None:
    wall = Clock(1_000_000.0)
    write(tmp_path, wall, ("acme.com", ACME))
    wall.now += MAX_AGE - 1
    assert set(loaded(tmp_path, wall)) == {"acme.com"}
    wall.now += 1
    assert loaded(tmp_path, wall) == {}
    wall.now = 1_000_000.0 - 5  # the clock went back: a date ahead of it is not believed
    assert loaded(tmp_path, wall) == {}


def test_an_expired_answer_is_dropped_from_the_file_at_the_next_write(tmp_path: Path) -> None:
    wall = Clock(1_000_000.0)
    write(tmp_path, wall, ("old.com", ACME))
    wall.now += MAX_AGE
    write(tmp_path, wall, ("acme.com", ACME))
    assert set(read_snapshot(tmp_path / SNAPSHOT_FILE_NAME, box()).answers) == {"acme.com"}


def test_a_client_the_registry_no_longer_knows_is_gone_after_the_next_write(
    tmp_path: Path,
) -> None:
    """Through the cache, as in a collector: a fresh "no active client" (deactivated client,
    removed domain) takes the host out of the snapshot, so a restart cannot bring it back."""
    wall, monotonic = Clock(1_000_000.0), Clock()
    source = ScriptedSource({"acme.com": ACME, "other.org": OTHER})

    async def life(down: bool) -> list[ClientConfig | str | None]:
        kept = keeper(tmp_path, wall)
        directory = CachedDirectory(
            source,
            kind="test",
            ttl=60,
            negative_ttl=10,
            stale_for=300,
            monotonic=monotonic,
            listener=kept,
        )
        for host, client, age in kept.load():
            directory.seed(host, client, age=age)
        source.down = down
        answers: list[ClientConfig | str | None] = []
        async with kept.running():
            for host in ("acme.com", "other.org"):
                try:
                    answers.append(await directory.resolve(host))
                except RegistryUnavailable:
                    answers.append("unavailable")
            if not down:
                del source.answers["acme.com"]  # the client is deactivated
                monotonic.now += 61
                answers.append(await directory.resolve("acme.com"))
        return answers

    assert run(lambda: life(down=False)) == [ACME, OTHER, None]
    assert set(loaded(tmp_path, wall)) == {"other.org"}
    wall.now += 30
    assert run(lambda: life(down=True)) == ["unavailable", OTHER]


def test_processes_sharing_a_folder_merge_and_the_latest_word_on_a_host_wins(
    tmp_path: Path,
) -> None:
    """Two workers of one ``serve --workers 2``: each keeps what the other wrote, and a
    removal one of them learned beats the older answer the other still holds."""
    wall = Clock(1_000_000.0)
    first, second = keeper(tmp_path, wall), keeper(tmp_path, wall)

    async def work() -> None:
        async with first.running(), second.running():
            first.answered("acme.com", ACME)
            second.answered("acme.com", ACME)
            second.answered("other.org", OTHER)
            wall.now += 10
            first.answered("acme.com", None)  # the registry took it back since

    run(work)
    assert set(loaded(tmp_path, wall)) == {"other.org"}

    async def again() -> None:  # and the older answer does not come back with a later write
        async with second.running():
            second.answered("new.net", OTHER)

    run(again)
    assert set(loaded(tmp_path, wall)) == {"other.org", "new.net"}


def test_a_host_registered_again_is_not_taken_out_by_an_older_removal(tmp_path: Path) -> None:
    wall = Clock(1_000_000.0)
    first, second = keeper(tmp_path, wall), keeper(tmp_path, wall)

    async def work() -> None:
        async with first.running():
            first.answered("acme.com", ACME)
            wall.now += 10
            first.answered("acme.com", None)  # deactivated...
            wall.now += 10
            async with second.running():
                second.answered("acme.com", OTHER)  # ...and given to another client since
            # second wrote first; first's older removal must not undo its answer

    run(work)
    assert loaded(tmp_path, wall) == {"acme.com": (OTHER, 0.0)}


def test_a_change_to_the_registry_in_this_process_empties_the_snapshot(tmp_path: Path) -> None:
    wall = Clock(1_000_000.0)
    write(tmp_path, wall, ("acme.com", ACME), ("other.org", OTHER))
    kept = keeper(tmp_path, wall)

    async def work() -> None:
        async with kept.running():
            kept.forgotten()  # e.g. a client deactivated through this process's admin API
            kept.answered("other.org", OTHER)  # asked again since

    run(work)
    assert set(loaded(tmp_path, wall)) == {"other.org"}


def test_changes_are_written_at_most_every_min_interval_confirmations_every_refresh(
    tmp_path: Path,
) -> None:
    wall, monotonic = Clock(1_000_000.0), Clock()
    kept = keeper(
        tmp_path, wall, monotonic=monotonic, min_interval=5.0, refresh_interval=300.0, tick=0.005
    )
    path = tmp_path / SNAPSHOT_FILE_NAME

    def on_file() -> dict[str, float]:
        try:
            answers = read_snapshot(path, box()).answers
        except FileNotFoundError:
            return {}
        return {host: answer.confirmed_at for host, answer in answers.items()}

    async def settles() -> None:
        await asyncio.sleep(0.1)  # twenty ticks

    async def work() -> None:
        async with kept.running():
            for i in range(50):
                kept.answered(f"site{i}.com", ACME)
            await until(lambda: len(on_file()) == 50)  # the first change goes out at once

            wall.now += 1
            kept.answered("late.com", ACME)
            await settles()
            assert "late.com" not in on_file()  # within min_interval of the last write
            monotonic.now += 5
            await until(lambda: "late.com" in on_file())

            wall.now += 1
            kept.answered("site0.com", ACME)  # the same answer again: a confirmation
            monotonic.now += 10
            await settles()
            assert on_file()["site0.com"] == 1_000_000.0
            monotonic.now += 300
            await until(lambda: on_file()["site0.com"] == 1_000_002.0)

            kept.answered("site1.com", OTHER)  # a different client: a change
            monotonic.now += 5
            await until(lambda: on_file()["site1.com"] == 1_000_002.0)

    run(work)


def test_a_write_that_fails_is_logged_and_retried_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wall, monotonic = Clock(1_000_000.0), Clock()
    folder = tmp_path / "data"
    folder.write_text("a file where the data folder should be")
    kept = keeper(folder, wall, monotonic=monotonic, tick=0.005)
    caplog.set_level(logging.WARNING, logger="evothesis.registry")

    async def work() -> None:
        async with kept.running():
            kept.answered("acme.com", ACME)
            await until(lambda: "Cannot write the registry snapshot" in caplog.text)
            folder.unlink()
            monotonic.now += 300  # the retry is due
            await until((folder / SNAPSHOT_FILE_NAME).exists)

    run(work)
    assert set(loaded(folder, wall)) == {"acme.com"}
