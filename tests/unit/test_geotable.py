"""The compact geo table: what geoip2fast answers, from one file built once per cache folder,
checked at every open and rebuilt when damaged or out of date.

geoip2fast itself, loaded the way the collector used to load it, is the reference."""

from __future__ import annotations

import gzip
import ipaddress
import logging
import pickle
import random
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import pytest
from geoip2fast import GeoIP2Fast

from evothesis.enrich.geotable import FILE_NAME, FORMAT_VERSION, is_country_code, open_country_table

DATA_FILE = "geoip2fast-ipv6.dat.gz"
LARGEST = (1 << 128) - 1
V4_END = 1 << 32


@pytest.fixture(scope="module")
def reference() -> GeoIP2Fast:
    return GeoIP2Fast(geoip2fast_data_file=DATA_FILE, verbose=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder where this module built the table (not the run's shared one)."""
    folder = tmp_path_factory.mktemp("geo-cache")
    open_country_table(folder)
    return folder


@pytest.fixture(scope="module")
def good_file(built: Path) -> bytes:
    return (built / FILE_NAME).read_bytes()


def answer(reference: GeoIP2Fast, address: str) -> str | None:
    """What the collector took from geoip2fast for ``address``: an ISO code or nothing."""
    code = reference.lookup(address).country_code
    return code if is_country_code(code) else None


def text(number: int) -> str:
    return str(ipaddress.ip_address(number))


def around(first: int, last: int) -> list[int]:
    """A range's boundaries and their neighbours, within the address space."""
    points = {first - 1, first, first + 1, last - 1, last, last + 1}
    return [point for point in points if 0 <= point <= LARGEST]


def networks() -> list[tuple[int, int, int]]:
    """Every network of geoip2fast's data file, read here as its loader reads it: first
    address, last address, and where the next one starts."""
    with gzip.open(files("geoip2fast") / DATA_FILE, "rb") as file:
        _version, _info, _count, database = pickle.load(file)
    _index, _names, starts, _ids, prefixes = database
    firsts = [first for chunk in starts for first in chunk]
    lengths = [length for chunk in prefixes for length in chunk]
    lasts = [
        first + (1 << ((32 if first < V4_END else 128) - length)) - 1
        for first, length in zip(firsts, lengths, strict=True)
    ]
    return list(zip(firsts, lasts, [*firsts[1:], LARGEST + 1], strict=True))


def sample() -> list[str]:
    """Random IPv4 and IPv6 addresses (global unicast and anywhere), IPv4 numbers written as
    IPv6, the edges of the two families, and the boundaries ±1 of thousands of networks:
    picked at random, and every one followed by a gap of fewer than 256 addresses."""
    rng = random.Random(25)
    v4 = [rng.getrandbits(32) for _ in range(20_000)]
    global_v6 = [(1 << 125) | rng.getrandbits(125) for _ in range(20_000)]  # 2000::/3
    anywhere = [rng.getrandbits(128) for _ in range(5_000)]
    edges = [*around(0, V4_END - 1), *around(V4_END, V4_END), 0xFFFF << 32, LARGEST]
    every = networks()
    narrow_gaps = [network for network in every if 1 < network[2] - network[1] <= 256]
    picked = rng.sample(every, 3_000) + narrow_gaps
    assert len(narrow_gaps) > 500
    boundaries = [
        point
        for first, last, following in picked
        for point in around(first, last) + around(following, following)
    ]
    addresses = [text(number) for number in [*v4, *global_v6, *anywhere, *edges, *boundaries]]
    written_as_v6 = [str(ipaddress.IPv6Address(rng.getrandbits(32))) for _ in range(2_000)]
    return addresses + written_as_v6 + ["::", "::1", "::ffff:8.8.8.8", "not-an-address", ""]


def test_the_table_answers_exactly_what_geoip2fast_answers(
    built: Path, reference: GeoIP2Fast
) -> None:
    table = open_country_table(built)
    addresses = sample()
    answers = [
        (address, table.country(address), answer(reference, address)) for address in addresses
    ]
    differing = [(address, ours, theirs) for address, ours, theirs in answers if ours != theirs]
    assert not differing[:20], f"{len(differing)} of {len(addresses)} differ"
    answered = {ours for _, ours, _ in answers}
    assert {"US", "DE", "CN", "BR", None} <= answered  # the comparison is not vacuous


def test_an_existing_table_is_mapped_as_it_is(
    built: Path, good_file: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    before = (built / FILE_NAME).stat()
    caplog.set_level(logging.INFO, logger="evothesis.enrich")
    table = open_country_table(built)
    assert table.origin == str(built / FILE_NAME)
    assert (built / FILE_NAME).stat().st_ino == before.st_ino
    assert not caplog.records
    assert sorted(path.name for path in built.iterdir()) == [FILE_NAME, f"{FILE_NAME}.lock"]
    assert len(good_file) < 8_000_000  # compact: geoip2fast's lists take 48 MB per process


def truncated(data: bytearray) -> bytearray:
    return data[: len(data) // 2]


def one_byte_flipped(data: bytearray) -> bytearray:
    data[len(data) // 2] ^= 0x01
    return data


def another_format(data: bytearray) -> bytearray:
    struct.pack_into("=I", data, 8, FORMAT_VERSION + 1)  # after the 8-byte magic
    return data


def not_a_table(data: bytearray) -> bytearray:
    return bytearray(b"\0" * 100)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (truncated, "not the size its header gives"),
        (one_byte_flipped, "checksum mismatch"),
        (another_format, f"format {FORMAT_VERSION + 1}, not {FORMAT_VERSION}"),
        (not_a_table, "not a table of this host"),
    ],
)
def test_a_damaged_or_outdated_table_is_rebuilt_never_read(
    tmp_path: Path,
    good_file: bytes,
    damage: Callable[[bytearray], bytearray],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / FILE_NAME).write_bytes(damage(bytearray(good_file)))
    caplog.set_level(logging.INFO, logger="evothesis.enrich")
    table = open_country_table(tmp_path)
    assert (tmp_path / FILE_NAME).read_bytes() == good_file
    [record] = caplog.records
    assert record.getMessage().startswith(f"Building {tmp_path / FILE_NAME} (")
    assert record.getMessage().endswith(f"{reason})")
    assert table.country("8.8.8.8") == "US"
    assert table.country("2a00:1450:4001:80e::200e") == "DE"


def test_a_folder_that_cannot_be_written_keeps_the_table_in_memory(
    tmp_path: Path, built: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")
    table = open_country_table(tmp_path / "a-file" / "cache")
    assert table.origin == "memory"
    assert "geo data kept in this process's memory" in caplog.text
    mapped = open_country_table(built)
    rng = random.Random(5)
    addresses = [text(rng.getrandbits(rng.choice((32, 128)))) for _ in range(5_000)]
    assert [table.country(address) for address in addresses] == [
        mapped.country(address) for address in addresses
    ]


OPEN_AT = """
import logging, sys, time
from pathlib import Path
from evothesis.enrich.geotable import open_country_table
logging.basicConfig(level=logging.INFO, format="%(message)s")
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
table = open_country_table(Path(sys.argv[1]))
print(table.country("8.8.8.8"), table.origin)
"""


def test_processes_starting_together_end_with_one_whole_table(
    tmp_path: Path, good_file: bytes
) -> None:
    """Workers starting at once on an empty folder: one builds while the others wait for
    its lock; each maps the one file renamed into place, identical to any other build."""
    folder = tmp_path / "cache"
    start = str(time.time() + 1.5)  # past both interpreters' start-up
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT, str(folder), start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    assert [out for out, _ in outputs] == [f"US {folder / FILE_NAME}\n"] * 3
    assert sum("Building" in err for _, err in outputs) == 1, outputs
    assert sorted(path.name for path in folder.iterdir()) == [FILE_NAME, f"{FILE_NAME}.lock"]
    assert (folder / FILE_NAME).read_bytes() == good_file
