"""Domain normalisation and pattern matching: the tenant boundary of attribution."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evothesis.registry.domains import (
    candidate_patterns,
    match_domain,
    normalize_host,
    validate_pattern,
)

# --------------------------------------------------------------------------- normalize_host


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.com", "example.com"),
        ("EXAMPLE.com", "example.com"),
        ("  example.com  ", "example.com"),
        ("example.com.", "example.com"),
        ("example.com:8080", "example.com"),
        ("example.com:", "example.com"),
        ("https://example.com", "example.com"),
        ("https://Shop.Example.com:8443/path?q=1#x", "shop.example.com"),
        ("http://user:pw@example.com/", "example.com"),
        ("//cdn.example.com/lib.js", "cdn.example.com"),
        ("example.com/page", "example.com"),
        ("localhost", "localhost"),
        ("localhost:8000", "localhost"),
        ("http://localhost:8000", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:8000", "127.0.0.1"),
        ("[::1]", "::1"),
        ("http://[::1]:8000/", "::1"),
        ("::1", "::1"),
        ("[2001:DB8::1]:443", "2001:db8::1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("https://BÜCHER.de/", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("faß.de", "xn--fa-hia.de"),  # IDNA 2008, as browsers send it
        ("münchen.example.com", "xn--mnchen-3ya.example.com"),
        ("my_app.internal", "my_app.internal"),
        ("a-b.c-d.com", "a-b.c-d.com"),
        ("123.example.com", "123.example.com"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_normalize_host(value: str, expected: str) -> None:
    assert normalize_host(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("https://", "no host"),
        (".", "no host"),
        ("a..b", "label"),
        (".example.com", "label"),
        ("-bad.com", "label"),
        ("bad-.com", "label"),
        ("exa mple.com", "label"),
        ("exa$mple.com", "label"),
        ("a" * 64 + ".com", "label"),
        (".".join(["a" * 60] * 5), "longer than"),
        ("example.com:http", "port"),
        ("[::1", "IPv6"),
        ("[::1]x", "IPv6"),
        ("1.2.3", "numeric"),
        ("999.1.1.1", "numeric"),
        ("*.example.com", "label"),
    ],
)
def test_normalize_host_rejects(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_host(value)


def test_normalize_host_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="empty"):
        normalize_host(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- validate_pattern


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("acme.com", "acme.com"),
        ("ACME.com.", "acme.com"),
        ("https://acme.com/", "acme.com"),
        ("*.acme.com", "*.acme.com"),
        ("*.ACME.com.", "*.acme.com"),
        ("https://*.acme.com", "*.acme.com"),
        ("*.shop.acme.co.uk", "*.shop.acme.co.uk"),
        ("*.bücher.de", "*.xn--bcher-kva.de"),
        ("*.localhost", "*.localhost"),
        ("localhost", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_validate_pattern(pattern: str, expected: str) -> None:
    assert validate_pattern(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty"),
        ("*", "wildcard"),
        ("*.", "empty"),
        ("**.acme.com", "wildcard"),
        ("shop.*.acme.com", "wildcard"),
        ("*acme.com", "wildcard"),
        ("acme.*", "wildcard"),
        ("*.*.acme.com", "wildcard"),
        ("*.com", "top-level"),
        ("*.1.2.3.4", "IP"),
        ("*.acme..com", "label"),
    ],
)
def test_validate_pattern_rejects(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_pattern(pattern)


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a.b.acme.com", ["a.b.acme.com", "*.b.acme.com", "*.acme.com"]),
        ("acme.com", ["acme.com"]),
        ("localhost", ["localhost"]),
        ("app.localhost", ["app.localhost", "*.localhost"]),
        ("127.0.0.1", ["127.0.0.1"]),
        ("https://Shop.Acme.com:443", ["shop.acme.com", "*.acme.com"]),
    ],
)
def test_candidate_patterns(host: str, expected: list[str]) -> None:
    assert candidate_patterns(host) == expected


PATTERNS = ["acme.com", "*.acme.com", "*.eu.acme.com", "exact.eu.acme.com", "localhost"]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("acme.com", "acme.com"),
        ("shop.acme.com", "*.acme.com"),
        ("a.b.acme.com", "*.acme.com"),
        ("eu.acme.com", "*.acme.com"),  # *.eu.acme.com does not cover eu.acme.com itself
        ("shop.eu.acme.com", "*.eu.acme.com"),  # longer wildcard beats shorter
        ("x.y.eu.acme.com", "*.eu.acme.com"),
        ("exact.eu.acme.com", "exact.eu.acme.com"),  # exact beats wildcard
        ("SHOP.ACME.COM.", "*.acme.com"),
        ("https://shop.acme.com:8443/page", "*.acme.com"),
        ("localhost:8000", "localhost"),
        ("evilacme.com", None),
        ("acme.com.evil.com", None),
        ("notacme.com", None),
        ("acme.co", None),
        ("com", None),
        ("app.localhost", None),
        ("", None),  # invalid hosts match nothing rather than raising
        ("bad host", None),
    ],
)
def test_match_domain(host: str, expected: str | None) -> None:
    assert match_domain(host, PATTERNS) == expected


def test_wildcard_does_not_match_its_apex() -> None:
    assert match_domain("acme.com", ["*.acme.com"]) is None
    assert match_domain("shop.acme.com", ["*.acme.com"]) == "*.acme.com"


def test_match_returns_the_pattern_as_given_and_skips_invalid_ones() -> None:
    patterns = ["*.com", "not a domain", "", "*.Acme.COM", "shop.*.acme.com"]
    assert match_domain("shop.acme.com", patterns) == "*.Acme.COM"


def test_match_accepts_any_iterable_and_unicode() -> None:
    assert match_domain("xn--bcher-kva.de", iter(["bücher.de"])) == "bücher.de"
    assert match_domain("shop.bücher.de", ("*.xn--bcher-kva.de",)) == "*.xn--bcher-kva.de"
    assert match_domain("acme.com", []) is None


def test_ip_hosts_match_exactly() -> None:
    assert match_domain("127.0.0.1:8000", ["127.0.0.1"]) == "127.0.0.1"
    assert match_domain("http://[::1]:8000", ["::1"]) == "::1"
    assert match_domain("127.0.0.2", ["127.0.0.1"]) is None


# --------------------------------------------------------------------------- properties

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostnames = (
    st.lists(label, min_size=2, max_size=5)
    .map(".".join)
    .filter(lambda h: not h.rsplit(".", 1)[1].isdigit())
)


@settings(max_examples=200, deadline=None)
@given(hostnames, label)
def test_wildcard_matches_every_subdomain_but_not_the_apex(host: str, sub: str) -> None:
    pattern = f"*.{host}"
    assert match_domain(f"{sub}.{host}", [pattern]) == pattern
    assert match_domain(host, [pattern]) is None
    assert match_domain(f"{sub}{host}", [pattern]) is None


@settings(max_examples=200, deadline=None)
@given(hostnames)
def test_normalize_host_is_idempotent(host: str) -> None:
    once = normalize_host(host.upper() + ".")
    assert normalize_host(once) == once == host
