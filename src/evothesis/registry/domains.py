"""Pure domain matching for attribution: which registered pattern does a host belong to?

Attribution is a tenant boundary (the domain decides whose bucket an event lands in), so
parsing is strict and wildcards are narrow: ``*.acme.com`` covers subdomains only, never
``acme.com`` itself, never ``evilacme.com``, and a wildcard over a bare TLD is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

import idna  # IDNA 2008 + UTS 46, what browsers put in Origin

__all__ = [
    "candidate_patterns",
    "match_domain",
    "normalize_host",
    "site_host",
    "validate_pattern",
]

_MAX_HOST_LENGTH: Final = 253
_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Letters, digits, hyphen; underscore too, because real origins (``my_app.internal``) use it.
_LABEL: Final = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_WILDCARD_PREFIX: Final = "*."
#: Single-label suffixes a wildcard may cover: development hosts, not public TLDs.
_SINGLE_LABEL_WILDCARDS: Final = frozenset({"localhost"})


def _strip_scheme(text: str) -> str:
    match = _SCHEME.match(text)
    if match:
        return text[match.end() :]
    return text[2:] if text.startswith("//") else text


def _authority(text: str) -> str:
    """``user@host:port`` out of ``host:port/path?query#fragment`` (scheme already gone)."""
    for delimiter in "/?#":
        text = text.split(delimiter, 1)[0]
    return text.rpartition("@")[2]


def _strip_port(authority: str, original: str) -> str:
    if authority.startswith("["):
        literal, bracket, rest = authority[1:].partition("]")
        if not bracket or (rest and not re.fullmatch(r":[0-9]*", rest)):
            raise ValueError(f"invalid host {original!r}: malformed [IPv6] literal")
        return literal
    if authority.count(":") == 1:
        host, _, port = authority.partition(":")
        if port and not port.isdigit():
            raise ValueError(f"invalid host {original!r}: port {port!r} is not a number")
        return host
    return authority  # no port, or a bare IPv6 address


def _to_ascii(host: str, original: str) -> str:
    try:
        return idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (UnicodeError, ValueError) as exc:
        raise ValueError(f"invalid host {original!r}: not a valid internationalised name") from exc


def _check_labels(host: str, original: str) -> None:
    if len(host) > _MAX_HOST_LENGTH:
        raise ValueError(f"invalid host {original!r}: longer than {_MAX_HOST_LENGTH} characters")
    labels = host.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"invalid host {original!r}: label {label!r} must be 1-63 letters, digits "
                "or hyphens, not starting or ending with a hyphen"
            )
    if labels[-1].isdigit():
        raise ValueError(f"invalid host {original!r}: numeric but not an IP address")


def _as_ip(host: str) -> str | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)  # one spelling per address, whatever the socket said
    return str(address)


def normalize_host(value: str) -> str:
    """The canonical form of a host, from a bare host, ``host:port``, Origin or full URL.

    Lowercase ASCII (unicode names IDNA-encoded, as browsers send them in ``Origin``), no
    scheme, credentials, port, path or trailing dot; IP addresses in their canonical
    spelling without brackets. Raises ``ValueError`` naming the problem otherwise.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("host is empty")
    original = value
    authority = _authority(_strip_scheme(value.strip()))
    host = _strip_port(authority, original).lower()
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise ValueError(f"invalid host {original!r}: no host name")
    ip = _as_ip(host)
    if ip is not None:
        return ip
    if not host.isascii():
        host = _to_ascii(host, original)
    _check_labels(host, original)
    return host


def validate_pattern(pattern: str) -> str:
    """Normalise a registry domain pattern: an exact host or ``*.`` plus a host.

    The wildcard may only lead, and may not cover an IP or a bare TLD (``*.com`` would
    hand one client every site's traffic). ``localhost`` is the one single-label exception.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError("domain pattern is empty")
    text = _strip_scheme(pattern.strip())
    wildcard = text.startswith(_WILDCARD_PREFIX)
    rest = text[len(_WILDCARD_PREFIX) :] if wildcard else text
    if "*" in rest:
        raise ValueError(
            f"invalid domain pattern {pattern!r}: only a leading '*.' wildcard is allowed"
        )
    host = normalize_host(rest)
    if not wildcard:
        return host
    if _as_ip(host) is not None:
        raise ValueError(f"invalid domain pattern {pattern!r}: a wildcard cannot cover an IP")
    if "." not in host and host not in _SINGLE_LABEL_WILDCARDS:
        raise ValueError(
            f"invalid domain pattern {pattern!r}: a wildcard must cover a registrable "
            "domain (like *.example.com), not a top-level domain"
        )
    return _WILDCARD_PREFIX + host


def candidate_patterns(host: str) -> list[str]:
    """Every pattern that could match ``host``, most specific first.

    ``a.b.acme.com`` gives ``a.b.acme.com, *.b.acme.com, *.acme.com``: a store can look
    these up in one indexed query and take the first hit instead of scanning patterns.
    Raises ``ValueError`` for an invalid host.
    """
    normalized = normalize_host(host)
    if _as_ip(normalized) is not None:
        return [normalized]
    labels = normalized.split(".")
    candidates = [normalized]
    for start in range(1, len(labels)):
        suffix = ".".join(labels[start:])
        if "." in suffix or suffix in _SINGLE_LABEL_WILDCARDS:
            candidates.append(_WILDCARD_PREFIX + suffix)
    return candidates


def match_domain(host: str, patterns: Iterable[str]) -> str | None:
    """The most specific of ``patterns`` that ``host`` matches, as given, or ``None``.

    Exact beats wildcard and a longer wildcard beats a shorter one. An invalid host or an
    invalid pattern simply matches nothing: this is an authorisation check, so garbage
    must fail closed rather than raise in the request path.
    """
    try:
        candidates = candidate_patterns(host)
    except ValueError:
        return None
    index: dict[str, str] = {}
    for pattern in patterns:
        try:
            index.setdefault(validate_pattern(pattern), pattern)
        except ValueError:
            continue
    for candidate in candidates:
        if candidate in index:
            return index[candidate]
    return None


@lru_cache(maxsize=4096)
def site_host(site_id: str) -> str | None:
    """The canonical host of a ``siteId``, Origin or URL (``Shop.Example.com:8000`` ->
    ``shop.example.com``), or ``None`` when it is not a host at all. Cached because site ids
    repeat on every request; bounded so thousands of fake ids cannot grow it without limit."""
    try:
        return normalize_host(site_id)
    except ValueError:
        return None
