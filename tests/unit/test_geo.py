"""Offline geolocation: the bundled database, a MaxMind file, and addresses with no place."""

from __future__ import annotations

from pathlib import Path

import pytest

from evothesis.enrich.geo import NOWHERE, GeoLocation, GeoLocator, open_geo_database
from tests.support.geo import write_city_database


@pytest.fixture(scope="module")
def bundled(geo_cache: Path) -> GeoLocator:
    return GeoLocator(open_geo_database(None, cache_dir=geo_cache))


@pytest.mark.parametrize(
    ("address", "country"),
    [
        ("8.8.8.8", "US"),  # Google public DNS
        ("1.1.1.1", "AU"),  # Cloudflare/APNIC, registered in Australia
        ("81.2.69.160", "GB"),
        ("193.0.6.139", "NL"),  # RIPE NCC, Amsterdam
        ("133.242.0.1", "JP"),
        ("200.160.2.3", "BR"),  # NIC.br
        ("2001:4860:4860::8888", "US"),  # Google public DNS over IPv6
        ("2a00:1450:4001:80e::200e", "DE"),
        ("::ffff:8.8.8.8", "US"),  # IPv4-mapped: looked up as the IPv4 address
    ],
)
def test_public_addresses_get_their_country_from_the_bundled_data(
    bundled: GeoLocator, address: str, country: str
) -> None:
    assert bundled.locate(address) == GeoLocation(country, None, None)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "192.168.1.1",
        "172.16.0.9",
        "169.254.1.1",
        "fe80::1",
        "fd00::1",
        "100.64.0.1",  # carrier-grade NAT
        "203.0.113.5",  # documentation range
        "not-an-ip",
        "",
        None,
    ],
)
def test_private_loopback_reserved_and_invalid_addresses_have_no_place(
    bundled: GeoLocator, address: str | None
) -> None:
    assert bundled.locate(address) == NOWHERE


@pytest.fixture(scope="module")
def city_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_city_database(tmp_path_factory.mktemp("geo") / "test-city.mmdb")


def test_a_maxmind_file_gives_country_region_and_city(city_database: Path) -> None:
    locator = GeoLocator(open_geo_database(city_database, cache_dir=city_database.parent))
    assert locator.locate("81.2.69.160") == GeoLocation("GB", "ENG", "London")
    assert locator.locate("8.8.4.4") == GeoLocation("US", None, None)
    assert locator.locate("1.1.1.1") == NOWHERE  # not in this file
    assert locator.locate("192.168.0.1") == NOWHERE
    assert "GeoIP2-City" in locator.database.name


def test_country_only_keeps_just_the_country() -> None:
    assert GeoLocation("GB", "ENG", "London").country_only() == GeoLocation("GB", None, None)


def test_lookups_are_cached_per_address(bundled: GeoLocator) -> None:
    locator = GeoLocator(bundled.database, cache_size=8)
    locator.locate("8.8.8.8")
    locator.locate("8.8.8.8")
    assert locator.locate.cache_info().hits == 1
