"""Visitor IP handling per privacy level: keep, anonymise, pseudonymise or drop.

Levels and modes are the domain's closed sets; their text (``"gdpr"``) is accepted too, so
a value read from anywhere is checked here before it decides what is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Final

from evothesis.domain import IpCollection, PrivacyLevel, parse_choice

__all__ = [
    "anonymize_ip",
    "apply_ip_policy",
    "hash_ip",
    "normalize_ip",
    "protect_ip",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Anonymised networks: the /24 of IPv4 and the /48 of IPv6 (last 80 bits zeroed), the
# granularity Google Analytics and Matomo use, which still geolocates to a region.
_IPV4_KEEP_BITS: Final = 24
_IPV6_KEEP_BITS: Final = 48


def _parse(ip: str) -> IPAddress | None:
    """Parse leniently: proxies and frameworks hand us brackets and IPv4-mapped IPv6."""
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalize_ip(ip: str) -> str:
    """The canonical spelling of an address, so equal addresses hash equal.

    ``::ffff:1.2.3.4`` becomes ``1.2.3.4`` and ``2001:DB8:0::1`` becomes ``2001:db8::1``;
    an unparseable string is returned stripped but otherwise as given.
    """
    address = _parse(ip)
    return str(address) if address is not None else ip.strip()


def _check_level(level: str) -> PrivacyLevel:
    return parse_choice(PrivacyLevel, level, setting="privacy level")


def hash_ip(ip: str, salt: bytes) -> str:
    """Hex HMAC-SHA256 of the normalised address under the client's salt.

    A keyed hash, not a plain one: the whole IPv4 space is small enough to brute-force a
    bare SHA-256, but not without the salt. An empty salt would be exactly that bare hash,
    so it is refused.
    """
    if not salt:
        raise ValueError("hashing an IP needs a non-empty salt (the client's IP salt)")
    message = normalize_ip(ip).encode("utf-8", "surrogatepass")
    return hmac.new(salt, message, hashlib.sha256).hexdigest()


def protect_ip(ip: str | None, level: str, salt: bytes) -> str | None:
    """What may be stored for ``ip`` under a privacy level.

    standard: as received; gdpr: :func:`hash_ip` (the raw IP is never returned); hipaa:
    nothing. A missing or blank IP is ``None`` at every level.
    """
    normalized_level = _check_level(level)
    if ip is None or not ip.strip() or normalized_level is PrivacyLevel.HIPAA:
        return None
    if normalized_level is PrivacyLevel.GDPR:
        return hash_ip(ip, salt)
    return ip


def anonymize_ip(ip: str | None) -> str | None:
    """Zero the host part (last octet of IPv4, last 80 bits of IPv6).

    An unparseable value cannot be anonymised, so it is dropped (``None``) rather than
    passed through.
    """
    if ip is None:
        return None
    address = _parse(ip)
    if address is None:
        return None
    keep = _IPV4_KEEP_BITS if address.version == 4 else _IPV6_KEEP_BITS
    network = ipaddress.ip_network(f"{address}/{keep}", strict=False)
    return str(network.network_address)


def apply_ip_policy(ip: str | None, *, level: str, ip_collection: str, salt: bytes) -> str | None:
    """Combine the privacy level with the client's ``ip_collection`` setting.

    The level is the floor: hipaa never stores an IP and gdpr always hashes (after
    anonymising when asked), so a client setting can only make things more private.
    """
    normalized_level = _check_level(level)
    mode = parse_choice(IpCollection, ip_collection, setting="ip_collection")
    if (
        ip is None
        or not ip.strip()
        or normalized_level is PrivacyLevel.HIPAA
        or mode is IpCollection.NONE
    ):
        return None
    kept = anonymize_ip(ip) if mode is IpCollection.ANONYMIZED else ip
    if kept is None:
        return None
    return protect_ip(kept, normalized_level, salt)
