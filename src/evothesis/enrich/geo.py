"""Offline geolocation of the client IP: country, and region/city where the data has them.

Looked up from the raw address *before* the privacy step hashes or drops it, and never over
the network. Two sources behind one small interface: geoip2fast's bundled database (country
only, IPv4 and IPv6, shipped inside the package; read through the compact, memory-mapped
table ``geotable`` derives from it) by default, or a MaxMind-format ``.mmdb`` file
(GeoLite2/GeoIP2 Country or City, DB-IP, IPinfo…) named by ``GEOIP_DATABASE``.
Private, loopback, link-local and reserved addresses have no location and are answered
without a lookup.
"""

from __future__ import annotations

import ipaddress
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol

import maxminddb

from evothesis.enrich.geotable import CountryTable, is_country_code, open_country_table

__all__ = ["NOWHERE", "GeoDatabase", "GeoLocation", "GeoLocator", "open_geo_database"]


class GeoLocation(NamedTuple):
    country: str | None
    region: str | None
    city: str | None

    def country_only(self) -> GeoLocation:
        """What a gdpr or hipaa client may store: a city can identify a visitor, a country
        cannot."""
        return GeoLocation(self.country, None, None)


NOWHERE: Final = GeoLocation(None, None, None)


class GeoDatabase(Protocol):
    """A location source; ``lookup`` gets a public address in canonical text."""

    name: str

    def lookup(self, address: str) -> GeoLocation: ...


class BundledGeoDatabase:
    """geoip2fast's own data: ISO country codes, no regions or cities."""

    name = "geoip2fast (bundled)"

    def __init__(self, table: CountryTable) -> None:
        self._table = table

    def lookup(self, address: str) -> GeoLocation:
        code = self._table.country(address)
        return GeoLocation(code, None, None) if code is not None else NOWHERE


class MmdbGeoDatabase:
    """A MaxMind DB file in the GeoIP2/GeoLite2 layout (``country.iso_code``,
    ``subdivisions[0].iso_code``, ``city.names.en``); Country files simply lack the last two."""

    def __init__(self, path: Path) -> None:
        self._reader = maxminddb.open_database(str(path), maxminddb.MODE_MMAP)
        self.name = f"{path} ({self._reader.metadata().database_type})"

    def lookup(self, address: str) -> GeoLocation:
        record = self._reader.get(address)
        if not isinstance(record, dict):
            return NOWHERE
        country = _path(record, "country", "iso_code") or _path(
            record, "registered_country", "iso_code"
        )
        subdivisions = record.get("subdivisions")
        region = (
            _path(subdivisions[0], "iso_code")
            if isinstance(subdivisions, list) and subdivisions
            else None
        )
        city = _path(record, "city", "names", "en")
        return GeoLocation(country if is_country_code(country) else None, region, city)


def open_geo_database(path: Path | None, *, cache_dir: Path) -> GeoDatabase:
    """The ``.mmdb`` file at ``path``, or the bundled database when no path is given (its
    compact table kept in ``cache_dir``, built there on first use: blocking, seconds).

    The data never changes while a process runs, so every app built in one process (tests
    build many) shares one reader per file, and one bundled table whatever its cache
    folder: the table depends on the installed geoip2fast alone."""
    if path is not None:
        return _mmdb(path)
    return BundledGeoDatabase(_bundled_table(cache_dir))


@lru_cache(maxsize=4)
def _mmdb(path: Path) -> MmdbGeoDatabase:
    return MmdbGeoDatabase(path)


_bundled_lock = threading.Lock()
_bundled: CountryTable | None = None


def _bundled_table(cache_dir: Path) -> CountryTable:
    global _bundled
    with _bundled_lock:  # the first caller opens (or builds) it, the others wait for it
        if _bundled is None:
            _bundled = open_country_table(cache_dir)
        return _bundled


class GeoLocator:
    """``locate(ip)`` over a database, with a bounded LRU cache per address."""

    def __init__(self, database: GeoDatabase, *, cache_size: int = 50_000) -> None:
        self.database = database
        self.locate = lru_cache(maxsize=cache_size)(self._locate)

    def _locate(self, ip: str | None) -> GeoLocation:
        if not ip:
            return NOWHERE
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            return NOWHERE
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global:
            return NOWHERE
        return self.database.lookup(str(address))


def _path(record: Any, *keys: str) -> str | None:
    for key in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record if isinstance(record, str) else None
