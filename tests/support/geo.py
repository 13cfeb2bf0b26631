"""A small MaxMind-format City database, written for the tests that need one."""

from __future__ import annotations

from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

#: An address the test database places in London, England.
LONDON_IP = "81.2.69.160"


def write_city_database(path: Path) -> Path:
    """GeoIP2-City-shaped records: one with country, subdivision and city, one IPv6 network
    with a country only, one with only a registered country."""
    writer = MMDBWriter(ip_version=6, database_type="GeoIP2-City", ipv4_compatible=True)
    writer.insert_network(
        IPSet(["81.2.69.0/24"]),
        {
            "country": {"iso_code": "GB", "names": {"en": "United Kingdom"}},
            "subdivisions": [{"iso_code": "ENG", "names": {"en": "England"}}],
            "city": {"names": {"en": "London"}},
        },
    )
    writer.insert_network(IPSet(["2001:db8:1::/48"]), {"country": {"iso_code": "SE"}})
    writer.insert_network(IPSet(["8.8.0.0/16"]), {"registered_country": {"iso_code": "US"}})
    writer.to_db_file(str(path))
    return path
