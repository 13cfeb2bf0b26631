"""geoip2fast's bundled country data as one compact file, memory-mapped and shared.

geoip2fast unpickles its data file into Python lists: about 48 MB of objects in every
process that opens it, paid again by each collector worker. This module derives from the
same file the same answers, as sorted range starts with a two-letter code each, into
``FILE_NAME`` in a cache folder (``EVOTHESIS_CACHE_DIR``, by default
``EVOTHESIS_DATA_DIR/cache``), and maps that file read-only: its pages sit in the page
cache, shared by every process on the host, and a process touches only the pages its
lookups read.

* **Same answers.** Each network in geoip2fast's data answers its country for the
  addresses from its first one to the end of its prefix, up to where the next network
  starts; everything else (gaps, reserved networks, names that are not ISO codes) answers
  nothing. geoip2fast sizes a prefix by the address asked for, not by the network (32 bits
  up to 2**32 inclusive, 128 above), and the table keeps that rule, so that it answers what
  ``GeoIP2Fast.lookup`` answers for every address (tests compare the two).
* **Built once per cache folder**, on first use, by a child process (reading geoip2fast's
  data takes those 48 MB for a moment, which the collector must not hold even then),
  under a lock so that workers starting together build it once, written to a temporary
  name, fsync'ed and renamed, so that a reader only ever sees a whole file. Rebuilt when
  geoip2fast's data file (its SHA-256 is in the header) or ``FORMAT_VERSION`` changed.
* **Checked at every open**: magic, version, byte order, size and a CRC-32 of the body,
  read with ``read`` (not through the map, which would count every page in the process's
  RSS). A file that fails is rebuilt, never read; a folder that cannot be written leaves
  the table in this process's memory (about 5 MB), with a warning.

The layout, native byte order (the file is a cache of this host, never copied elsewhere)::

    header     magic, format version, byte-order mark, n4, n6, source SHA-256, body CRC-32
    v6 high    n6 u64s  the upper and lower halves of each step's first address,
    v6 low     n6 u64s  for addresses from 2**32 up (the first step starts at 2**32)
    v4 starts  n4 u32s  each step's first address below 2**32 (the first one is 0)
    v4 codes   n4 u16s  the ISO code of each step, its two letters as one number; 0: none
    v6 codes   n6 u16s
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import mmap
import operator
import os
import pickle
import socket
import struct
import subprocess
import sys
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any, Final

from evothesis.errors import ConfigurationError
from evothesis.files import locked, replace_file

__all__ = [
    "FILE_NAME",
    "FORMAT_VERSION",
    "CountryTable",
    "build_table",
    "bundled_table",
    "is_country_code",
    "open_country_table",
]

logger = logging.getLogger("evothesis.enrich")

#: geoip2fast's data file with IPv4 and IPv6 networks (its default file is IPv4 only).
SOURCE_FILE: Final = "geoip2fast-ipv6.dat.gz"
#: The compact file's name in its cache folder.
FILE_NAME: Final = "geoip2fast-countries.bin"
#: Bumped whenever the layout or the derivation changes: older files are rebuilt.
FORMAT_VERSION: Final = 1

_MAGIC: Final = b"evo-geo\n"
_BYTE_ORDER_MARK: Final = 0x01020304
#: magic, format version, byte-order mark, n4, n6, source SHA-256, body CRC-32.
_HEADER: Final = struct.Struct("=8sIIQQ32sI4x")
#: Read in chunks of this size to check the body (never mapped for that).
_CHUNK: Final = 1 << 20
_V4_END: Final = 1 << 32
_LOW_HALF: Final = (1 << 64) - 1
#: geoip2fast's data format: the pickled tuple's version, and the first index of its
#: country names that is a country (those below are reserved and private networks).
_SOURCE_FORMAT: Final = 120
_FIRST_COUNTRY_ID: Final = 16


def is_country_code(code: object) -> bool:
    """An ISO 3166 alpha-2 code, as every geo source must answer to be believed."""
    return isinstance(code, str) and len(code) == 2 and code.isalpha() and code.isupper()


class CountryTable:
    """Address → ISO country code, by binary search over a checked table (usually a map of
    the cached file)."""

    def __init__(self, body: memoryview, n4: int, n6: int, origin: str) -> None:
        self.origin = origin
        v6_keys = 8 * n6
        self._v6_high = body[:v6_keys].cast("Q")
        self._v6_low = body[v6_keys : 2 * v6_keys].cast("Q")
        v4_start = 2 * v6_keys
        self._v4_starts = body[v4_start : v4_start + 4 * n4].cast("I")
        self._v4_codes = body[v4_start + 4 * n4 : v4_start + 6 * n4].cast("H")
        self._v6_codes = body[v4_start + 6 * n4 :].cast("H")

    def country(self, address: str) -> str | None:
        """The country of ``address`` (text, as ``socket.inet_pton`` reads it), if any."""
        try:
            packed = socket.inet_pton(
                socket.AF_INET6 if ":" in address else socket.AF_INET, address
            )
        except OSError:
            return None
        if len(packed) == 4:
            return self._v4(int.from_bytes(packed))
        high, low = struct.unpack(">QQ", packed)
        if high == 0 and low < _V4_END:
            return self._v4(low)
        first = bisect_left(self._v6_high, high)
        last = bisect_right(self._v6_high, high, first)
        return _letters(self._v6_codes[bisect_right(self._v6_low, low, first, last) - 1])

    def _v4(self, number: int) -> str | None:
        return _letters(self._v4_codes[bisect_right(self._v4_starts, number) - 1])


def open_country_table(cache_dir: Path) -> CountryTable:
    """The table of geoip2fast's bundled data, from ``cache_dir``; built there first when
    it is missing, damaged or out of date, or kept in memory when it cannot be written."""
    digest = _source_digest()
    path = cache_dir / FILE_NAME
    table, problem = _open_checked(path, digest)
    if table is not None:
        return table
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with locked(path):
            # Another process may have built it while this one waited for the lock.
            table, problem = _open_checked(path, digest)
            if table is not None:
                return table
            logger.info("Building %s (%s)", path, problem)
            data = _build_in_child(digest)
            replace_file(path, data, mode=0o644)
    except OSError as exc:
        logger.warning("Cannot write %s (%s): geo data kept in this process's memory", path, exc)
        data = _build_in_child(digest)
        return CountryTable(memoryview(data)[_HEADER.size :], *_counts(data), "memory")
    table, problem = _open_checked(path, digest)
    if table is None:
        raise ConfigurationError(f"{path} was damaged right after it was written: {problem}")
    return table


def bundled_table() -> bytes:
    """The table file for the installed geoip2fast's bundled data."""
    with as_file(files("geoip2fast") / SOURCE_FILE) as source:
        return build_table(source, _source_digest())


#: What the child process that builds the table runs (``-P``: nothing is imported from the
#: working directory, which may be the data folder).
_BUILD_COMMAND: Final = (
    "import sys; from evothesis.enrich.geotable import bundled_table; "
    "sys.stdout.buffer.write(bundled_table())"
)


def _build_in_child(digest: bytes) -> bytes:
    """The table, built by a child process and checked here."""
    try:
        child = subprocess.run(
            [sys.executable, "-P", "-c", _BUILD_COMMAND],
            capture_output=True,
            timeout=300,
            check=True,
        )
    except subprocess.SubprocessError as exc:
        output = getattr(exc, "stderr", None) or b""
        lines = output.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else str(exc)
        raise ConfigurationError(f"building the geo table failed: {reason}") from None
    data = child.stdout
    problem = _check(data[: _HEADER.size], len(data), [memoryview(data)[_HEADER.size :]], digest)
    if problem:
        raise ConfigurationError(f"the geo table built is unusable: {problem}")
    return data


def _source_digest() -> bytes:
    with as_file(files("geoip2fast") / SOURCE_FILE) as source, source.open("rb") as file:
        return hashlib.file_digest(file, "sha256").digest()


def _open_checked(path: Path, digest: bytes) -> tuple[CountryTable | None, str]:
    """The table in ``path`` mapped read-only, or ``None`` and why it cannot be used."""
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            body = iter(lambda: file.read(_CHUNK), b"")
            problem = _check(file.read(_HEADER.size), size, body, digest)
            if problem:
                return None, problem
            # Mapped from the very file that was checked: a rename over the path in
            # between does not matter.
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        return None, "not built yet"
    except OSError as exc:
        return None, f"unreadable: {exc}"
    n4, n6 = _counts(mapped[: _HEADER.size])
    return CountryTable(memoryview(mapped)[_HEADER.size :], n4, n6, str(path)), ""


def _check(header: bytes, size: int, body: Iterable[bytes | memoryview], digest: bytes) -> str:
    """Why a file of ``size`` bytes, ``header`` then ``body``, is not a whole, current
    table; ``""`` when it is. The body is only read when everything else is right."""
    if len(header) < _HEADER.size:
        return "truncated header"
    magic, version, mark, n4, n6, source, crc = _HEADER.unpack(header)
    if magic != _MAGIC or mark != _BYTE_ORDER_MARK:
        return "not a table of this host"
    if version != FORMAT_VERSION:
        return f"format {version}, not {FORMAT_VERSION}"
    if source != digest:
        return "built from another geoip2fast data file"
    if n4 < 1 or n6 < 1 or size != _HEADER.size + 6 * n4 + 18 * n6:
        return f"{size} bytes, not the size its header gives"
    checksum = 0
    for chunk in body:
        checksum = zlib.crc32(chunk, checksum)
    return "" if checksum == crc else "checksum mismatch"


def _counts(data: bytes) -> tuple[int, int]:
    _magic, _version, _mark, n4, n6, _source, _crc = _HEADER.unpack_from(data)
    return n4, n6


def build_table(source: Path, digest: bytes) -> bytes:
    """The table file for geoip2fast's data file ``source`` (SHA-256 ``digest``)."""
    starts, prefixes, answers = _read_networks(source)
    v4_keys: list[int] = []
    v4_codes: list[int] = []
    _steps(starts, prefixes, answers, (0, _V4_END - 1), 32, v4_keys, v4_codes)
    v6_keys: list[int] = []
    v6_codes: list[int] = []
    _steps(starts, prefixes, answers, (_V4_END, _V4_END), 32, v6_keys, v6_codes)
    _steps(starts, prefixes, answers, (_V4_END + 1, (1 << 128) - 1), 128, v6_keys, v6_codes)
    body = b"".join(
        (
            array("Q", [key >> 64 for key in v6_keys]).tobytes(),
            array("Q", [key & _LOW_HALF for key in v6_keys]).tobytes(),
            array("I", v4_keys).tobytes(),
            array("H", v4_codes).tobytes(),
            array("H", v6_codes).tobytes(),
        )
    )
    header = _HEADER.pack(
        _MAGIC,
        FORMAT_VERSION,
        _BYTE_ORDER_MARK,
        len(v4_keys),
        len(v6_keys),
        digest,
        zlib.crc32(body),
    )
    return header + body


def _steps(
    starts: list[int],
    prefixes: list[int],
    answers: list[int],
    span: tuple[int, int],
    bits: int,
    keys: list[int],
    codes: list[int],
) -> None:
    """Append to ``keys``/``codes`` what every address of ``span`` (inclusive) answers, as
    steps: ``codes[i]`` from ``keys[i]`` up to the next key; a step that would answer what
    the one before answers is left out. Prefixes count ``bits``-bit addresses there, as
    geoip2fast counts them for the addresses asked for."""
    low, high = span
    first = bisect_right(starts, low) - 1
    following = [*starts[first + 1 :], high + 1]
    networks = zip(starts[first:], following, prefixes[first:], answers[first:], strict=True)
    for start, next_start, prefix, answer in networks:
        if start > high:
            break
        begin = max(start, low)
        end = min(next_start - 1, high)
        network_end = start + (1 << (bits - prefix)) - 1 if prefix <= bits else -1
        if network_end < begin:  # asked with more bits than it has: geoip2fast finds nothing
            answer, network_end = 0, end
        if not codes or codes[-1] != answer:
            keys.append(begin)
            codes.append(answer)
        if network_end < end and codes[-1] != 0:
            keys.append(network_end + 1)
            codes.append(0)


def _read_networks(source: Path) -> tuple[list[int], list[int], list[int]]:
    """Every network of geoip2fast's country data file, in address order: first address,
    prefix length, and the country code it answers (two letters as one number; 0: none).

    The file is a gzipped pickle of ``(120, info, count, (index, names, starts, ids,
    prefixes))`` (geoip2fast's ``geoip2dat`` writes it): ``names`` are ``"CC:Country
    name"``, the rest are lists of chunks of one list, ``index`` their first starts."""
    try:
        with gzip.open(source, "rb") as file:
            loaded = _PlainData(file).load()
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        raise ConfigurationError(f"{source} cannot be read: {exc}") from None
    try:
        version, info, _count, database = loaded
        if version != _SOURCE_FORMAT or not info["country"] or info["city"] or info["asn"]:
            raise ValueError(f"format {version!r}, {info!r}")
        index, names, chunked_starts, chunked_ids, chunked_prefixes = database
        starts = [start for chunk in chunked_starts for start in chunk]
        ids = [code for chunk in chunked_ids for code in chunk]
        prefixes = [prefix for chunk in chunked_prefixes for prefix in chunk]
        if index != [chunk[0] for chunk in chunked_starts] or not starts or starts[0] != 0:
            raise ValueError("the index does not match the networks")
        if not len(starts) == len(ids) == len(prefixes):
            raise ValueError("the lists differ in length")
        if not all(map(operator.lt, starts, starts[1:])):
            raise ValueError("the networks are not in address order")
        if {type(prefix) for prefix in prefixes} != {int} or not 0 <= min(prefixes) <= max(
            prefixes
        ) <= 128:
            raise ValueError("a prefix length is out of range")
        by_id = {code_id: _answer(code_id, name) for code_id, name in enumerate(names)}
        answers = [by_id.get(code_id, 0) for code_id in ids]
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise ConfigurationError(f"{source} is not geoip2fast's country data: {exc}") from None
    return starts, prefixes, answers


def _answer(code_id: int, name: str) -> int:
    """What geoip2fast answers for networks of country ``name`` (``code_id``), as a number."""
    if code_id < _FIRST_COUNTRY_ID:
        return 0
    parts = name.split(":")
    if len(parts) != 2 or not is_country_code(parts[0]):
        return 0
    return ord(parts[0][0]) << 8 | ord(parts[0][1])


def _letters(code: int) -> str | None:
    return chr(code >> 8) + chr(code & 0xFF) if code else None


class _PlainData(pickle.Unpickler):
    """Loads lists, tuples, dicts, strings and numbers, and refuses anything that names a
    class: the data file needs nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")
