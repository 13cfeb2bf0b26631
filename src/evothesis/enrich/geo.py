"""Offline geolocation of the client IP: country, and region/city where the data has them.

Looked up from the raw address *before* the privacy step hashes or drops it, and never over
the network. Two sources behind one small interface: geoip2fast's bundled database (country
only, IPv4 and IPv6, shipped inside the package) by default, or a MaxMind-format ``.mmdb``
file (GeoLite2/GeoIP2 Country or City, DB-IP, IPinfo…) named by ``GEOIP_DATABASE``.
Private, loopback, link-local and reserved addresses have no location and are answered
without a lookup.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol

import maxminddb
from geoip2fast import GeoIP2Fast

__all__ = ["NOWHERE", "GeoDatabase", "GeoLocation", "GeoLocator", "open_geo_database"]

#: geoip2fast's data file with IPv4 and IPv6 networks (its default file is IPv4 only).
BUNDLED_DATA_FILE: Final = "geoip2fast-ipv6.dat.gz"


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

    def __init__(self) -> None:
        self._reader = GeoIP2Fast(geoip2fast_data_file=BUNDLED_DATA_FILE, verbose=False)

    def lookup(self, address: str) -> GeoLocation:
        code = self._reader.lookup(address).country_code
        return GeoLocation(code, None, None) if _is_country_code(code) else NOWHERE


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
        return GeoLocation(country if _is_country_code(country) else None, region, city)


@lru_cache(maxsize=4)
def open_geo_database(path: Path | None) -> GeoDatabase:
    """The ``.mmdb`` file at ``path``, or the bundled database when no path is given.

    Loading takes a fraction of a second and the data never changes while a process runs,
    so every app built in one process (tests build many) shares one reader per file."""
    return MmdbGeoDatabase(path) if path is not None else BundledGeoDatabase()


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


def _is_country_code(code: object) -> bool:
    return isinstance(code, str) and len(code) == 2 and code.isalpha() and code.isupper()


def _path(record: Any, *keys: str) -> str | None:
    for key in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record if isinstance(record, str) else None
