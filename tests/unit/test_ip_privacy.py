"""IP handling per privacy level: kept, anonymised, keyed-hashed or dropped."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evothesis.privacy.ip import (
    anonymize_ip,
    apply_ip_policy,
    hash_ip,
    normalize_ip,
    protect_ip,
)

SALT = b"client-acme-salt"
OTHER_SALT = b"client-globex-salt"


def _is_hex_digest(value: str | None) -> bool:
    return value is not None and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


# --------------------------------------------------------------------------- normalize_ip


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::FFFF:1.2.3.4", "1.2.3.4"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("::1", "::1"),
        ("not-an-ip", "not-an-ip"),
        ("1.2.3.4:8080", "1.2.3.4:8080"),
    ],
)
def test_normalize_ip(raw: str, expected: str) -> None:
    assert normalize_ip(raw) == expected


# --------------------------------------------------------------------------- protect_ip


@pytest.mark.parametrize("ip", ["1.2.3.4", "2001:db8::1", "::1", "garbage", " 10.0.0.1"])
def test_standard_keeps_the_ip_as_received(ip: str) -> None:
    assert protect_ip(ip, "standard", SALT) == ip


@pytest.mark.parametrize("ip", ["1.2.3.4", "2001:db8::1", "::ffff:10.0.0.1", "garbage"])
def test_hipaa_never_stores_an_ip(ip: str) -> None:
    assert protect_ip(ip, "hipaa", SALT) is None


@pytest.mark.parametrize("level", ["standard", "gdpr", "hipaa"])
@pytest.mark.parametrize("ip", [None, "", "   "])
def test_missing_ip_is_none_at_every_level(level: str, ip: str | None) -> None:
    assert protect_ip(ip, level, SALT) is None


def test_gdpr_is_the_hmac_of_the_normalised_address() -> None:
    expected = hmac.new(SALT, b"1.2.3.4", hashlib.sha256).hexdigest()
    assert protect_ip("1.2.3.4", "gdpr", SALT) == expected


@pytest.mark.parametrize("ip", ["1.2.3.4", "203.0.113.77", "2001:db8::1", "::1"])
def test_gdpr_hash_hides_the_ip_and_is_stable_per_salt(ip: str) -> None:
    first = protect_ip(ip, "gdpr", SALT)
    assert _is_hex_digest(first)
    assert first is not None and ip not in first
    assert protect_ip(ip, "gdpr", SALT) == first
    assert protect_ip(ip, "gdpr", OTHER_SALT) != first


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("1.2.3.4", "::ffff:1.2.3.4"),
        ("1.2.3.4", " 1.2.3.4"),
        ("2001:db8::1", "2001:DB8:0:0:0:0:0:1"),
        ("2001:db8::1", "[2001:db8::1]"),
    ],
)
def test_gdpr_hashes_spellings_of_one_address_equal(one: str, other: str) -> None:
    assert protect_ip(one, "gdpr", SALT) == protect_ip(other, "gdpr", SALT)


def test_gdpr_distinguishes_addresses() -> None:
    assert protect_ip("1.2.3.4", "gdpr", SALT) != protect_ip("1.2.3.5", "gdpr", SALT)


def test_gdpr_hashes_unparseable_values_as_given() -> None:
    expected = hmac.new(SALT, b"unknown", hashlib.sha256).hexdigest()
    assert protect_ip("unknown", "gdpr", SALT) == expected


def test_gdpr_refuses_an_empty_salt() -> None:
    with pytest.raises(ValueError, match="salt"):
        protect_ip("1.2.3.4", "gdpr", b"")
    with pytest.raises(ValueError, match="salt"):
        hash_ip("1.2.3.4", b"")


def test_levels_accept_str_enum_members_and_any_case() -> None:
    from enum import StrEnum

    class Level(StrEnum):
        GDPR = "gdpr"

    assert protect_ip("1.2.3.4", Level.GDPR, SALT) == protect_ip("1.2.3.4", "GDPR", SALT)


@pytest.mark.parametrize("level", ["", "strict", "none", "gdpr2"])
def test_unknown_level_is_an_error(level: str) -> None:
    with pytest.raises(ValueError, match="privacy level"):
        protect_ip("1.2.3.4", level, SALT)


# --------------------------------------------------------------------------- anonymize_ip


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("1.2.3.4", "1.2.3.0"),
        ("192.168.100.255", "192.168.100.0"),
        ("10.0.0.0", "10.0.0.0"),
        ("::ffff:1.2.3.4", "1.2.3.0"),
        ("2001:db8:abcd:1234:5678:9abc:def0:1234", "2001:db8:abcd::"),
        ("2001:db8::1", "2001:db8::"),
        ("[2001:db8:1:2::1]", "2001:db8:1::"),
        ("::1", "::"),
    ],
)
def test_anonymize_ip(ip: str, expected: str) -> None:
    assert anonymize_ip(ip) == expected


@pytest.mark.parametrize("ip", [None, "", "garbage", "1.2.3", "1.2.3.4:80"])
def test_anonymize_drops_what_it_cannot_anonymise(ip: str | None) -> None:
    assert anonymize_ip(ip) is None


# --------------------------------------------------------------------------- apply_ip_policy


@pytest.mark.parametrize(
    ("level", "collection", "expected"),
    [
        ("standard", "full", "1.2.3.4"),
        ("standard", "anonymized", "1.2.3.0"),
        ("standard", "none", None),
        ("gdpr", "full", hmac.new(SALT, b"1.2.3.4", hashlib.sha256).hexdigest()),
        ("gdpr", "anonymized", hmac.new(SALT, b"1.2.3.0", hashlib.sha256).hexdigest()),
        ("gdpr", "none", None),
        ("hipaa", "full", None),
        ("hipaa", "anonymized", None),
        ("hipaa", "none", None),
    ],
)
def test_apply_ip_policy_matrix(level: str, collection: str, expected: str | None) -> None:
    assert apply_ip_policy("1.2.3.4", level=level, ip_collection=collection, salt=SALT) == expected


def test_apply_ip_policy_anonymised_gdpr_groups_a_subnet() -> None:
    one = apply_ip_policy("1.2.3.4", level="gdpr", ip_collection="anonymized", salt=SALT)
    other = apply_ip_policy("1.2.3.200", level="gdpr", ip_collection="anonymized", salt=SALT)
    assert one == other


@pytest.mark.parametrize("collection", ["full", "anonymized", "none"])
def test_apply_ip_policy_without_ip(collection: str) -> None:
    assert apply_ip_policy(None, level="standard", ip_collection=collection, salt=SALT) is None


def test_apply_ip_policy_drops_unanonymisable_values() -> None:
    kwargs = {"ip_collection": "anonymized", "salt": SALT}
    assert apply_ip_policy("garbage", level="standard", **kwargs) is None
    assert apply_ip_policy("garbage", level="gdpr", **kwargs) is None


def test_apply_ip_policy_rejects_unknown_settings() -> None:
    with pytest.raises(ValueError, match="ip_collection"):
        apply_ip_policy("1.2.3.4", level="standard", ip_collection="partial", salt=SALT)
    with pytest.raises(ValueError, match="privacy level"):
        apply_ip_policy("1.2.3.4", level="open", ip_collection="full", salt=SALT)


# --------------------------------------------------------------------------- properties

ip_text = st.ip_addresses().map(str) | st.ip_addresses(v=6).map(lambda a: a.exploded.upper())


@settings(max_examples=300, deadline=None)
@given(ip_text, st.binary(min_size=1, max_size=64))
def test_gdpr_never_returns_the_input_ip(ip: str, salt: bytes) -> None:
    protected = protect_ip(ip, "gdpr", salt)
    assert _is_hex_digest(protected)
    assert protected is not None and ip not in protected
    assert normalize_ip(ip) not in protected


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_anonymised_address_is_inside_the_original_network(address: object) -> None:
    assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
    anonymised = anonymize_ip(str(address))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # anonymised as the IPv4 address it carries
    assert anonymised is not None
    prefix = 24 if address.version == 4 else 48
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    assert ipaddress.ip_address(anonymised) == network.network_address
    assert anonymize_ip(anonymised) == anonymised
