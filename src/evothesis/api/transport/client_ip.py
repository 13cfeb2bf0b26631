"""Who sent the request: the socket peer, or what a trusted proxy says it forwarded for.

Forwarding headers are trivially forged, so they are read only when the peer itself is a
configured proxy; then X-Forwarded-For is walked right to left past further trusted proxies.

The answer depends only on the peer, the two headers and the proxy list, and the standard
library's address parsing and network tests cost more than the rest of an event's
attribution, so answers are cached: a visitor sends many events, and behind a proxy the
peer is always the same.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from functools import lru_cache

from evothesis.config import IPNetwork


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = value.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; trust rules are written in IPv4.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, proxies: Sequence[IPNetwork]
) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_ip(
    peer: str | None, headers: Mapping[str, str], proxies: Sequence[IPNetwork]
) -> str | None:
    """The client address to store, as a normalised string."""
    return _client_ip(
        peer, headers.get("x-forwarded-for"), headers.get("x-real-ip"), tuple(proxies)
    )


#: Bounded: distinct visitors are unbounded, and a miss costs only what no cache would.
@lru_cache(maxsize=16_384)
def _client_ip(
    peer: str | None,
    forwarded: str | None,
    real_ip: str | None,
    proxies: tuple[IPNetwork, ...],
) -> str | None:
    peer_address = _parse(peer) if peer else None
    if not _trusted(peer_address, proxies):
        return str(peer_address) if peer_address else peer
    if forwarded:
        for hop in reversed(forwarded.split(",")):
            address = _parse(hop)
            if address is None:
                break
            if not _trusted(address, proxies):
                return str(address)
    if real_ip and (address := _parse(real_ip)) is not None:
        return str(address)
    return str(peer_address)
