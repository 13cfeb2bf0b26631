"""Forwarded headers count only when a trusted proxy sent them."""

from __future__ import annotations

import ipaddress

import pytest

from evothesis.api.transport.client_ip import client_ip
from evothesis.config import Settings

LOOPBACK = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("198.51.100.4", {"x-forwarded-for": "203.0.113.7"}, "198.51.100.4"),
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
        ("127.0.0.1", {"x-forwarded-for": "1.1.1.1, 203.0.113.7, 10.1.2.3"}, "203.0.113.7"),
        ("127.0.0.1", {"x-forwarded-for": "garbage"}, "127.0.0.1"),
        ("127.0.0.1", {"x-forwarded-for": "[2001:db8::1]:443"}, "2001:db8::1"),
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.7:5555"}, "203.0.113.7"),
        ("127.0.0.1", {"x-real-ip": "203.0.113.8"}, "203.0.113.8"),
        ("127.0.0.1", {"x-forwarded-for": "10.0.0.2", "x-real-ip": "203.0.113.8"}, "203.0.113.8"),
        ("127.0.0.1", {}, "127.0.0.1"),
        ("2001:db8::5", {"x-forwarded-for": "203.0.113.7"}, "2001:db8::5"),
        (None, {"x-forwarded-for": "203.0.113.7"}, None),
    ],
)
def test_client_ip(peer: str | None, headers: dict[str, str], expected: str | None) -> None:
    assert client_ip(peer, headers, LOOPBACK) == expected


# --------------------------------------------------------------------------- more cases

CIDR_PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
DEFAULT_PROXIES = Settings(_env_file=None).trusted_proxies


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        pytest.param(
            "198.51.100.4",
            {"x-forwarded-for": "203.0.113.7", "x-real-ip": "203.0.113.8"},
            "198.51.100.4",
            id="untrusted-peer-ignores-both-headers",
        ),
        pytest.param(
            "198.51.100.4", {"x-real-ip": "203.0.113.8"}, "198.51.100.4", id="untrusted-real-ip"
        ),
        pytest.param("198.51.100.4:5555", {}, "198.51.100.4", id="untrusted-peer-with-port"),
        pytest.param("testclient", {}, "testclient", id="unparsable-peer-kept-as-is"),
        pytest.param(
            "127.0.0.1",
            {"x-forwarded-for": "203.0.113.7, 10.0.0.5, 10.0.0.6"},
            "203.0.113.7",
            id="chain-of-trusted-proxies",
        ),
        pytest.param(
            "127.0.0.1",
            {"x-forwarded-for": "6.6.6.6, 7.7.7.7, 203.0.113.7"},
            "203.0.113.7",
            id="spoofed-left-hops-ignored",
        ),
        pytest.param(
            "127.0.0.1",
            {"x-forwarded-for": "  203.0.113.7 ,10.0.0.5  "},
            "203.0.113.7",
            id="whitespace-around-hops",
        ),
        pytest.param(
            "127.0.0.1",
            {"x-forwarded-for": "not-an-ip, 203.0.113.7"},
            "203.0.113.7",
            id="garbage-left-of-the-client-is-never-reached",
        ),
        pytest.param(
            "127.0.0.1",
            {"x-forwarded-for": "203.0.113.7, unknown", "x-real-ip": "203.0.113.8"},
            "203.0.113.8",
            id="garbage-hop-stops-the-walk-then-real-ip",
        ),
        pytest.param(
            "127.0.0.1",
            {"x-forwarded-for": "203.0.113.7, unknown"},
            "127.0.0.1",
            id="garbage-hop-stops-the-walk-then-peer",
        ),
        pytest.param(
            "127.0.0.1", {"x-forwarded-for": "203.0.113.7,"}, "127.0.0.1", id="empty-last-hop"
        ),
        pytest.param(
            "127.0.0.1",
            {"x-forwarded-for": "203.0.113.7", "x-real-ip": "203.0.113.8"},
            "203.0.113.7",
            id="forwarded-for-wins-over-real-ip",
        ),
        pytest.param(
            "127.0.0.1", {"x-real-ip": " 203.0.113.8 "}, "203.0.113.8", id="real-ip-stripped"
        ),
        pytest.param(
            "127.0.0.1", {"x-real-ip": "[2001:db8::8]:443"}, "2001:db8::8", id="real-ip-v6-port"
        ),
        pytest.param("127.0.0.1", {"x-real-ip": "garbage"}, "127.0.0.1", id="garbage-real-ip"),
        pytest.param("127.0.0.1", {"x-forwarded-for": ""}, "127.0.0.1", id="empty-forwarded-for"),
        pytest.param(
            "127.0.0.1",
            {"x-forwarded-for": "2001:DB8:0:0::7"},
            "2001:db8::7",
            id="v6-hop-normalised",
        ),
    ],
)
def test_forwarded_headers_are_walked_right_to_left_past_trusted_proxies(
    peer: str, headers: dict[str, str], expected: str
) -> None:
    assert client_ip(peer, headers, LOOPBACK) == expected


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        pytest.param("::1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7", id="v6-loopback"),
        pytest.param(
            "[::1]:51234", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7", id="v6-port-peer"
        ),
        pytest.param(
            "127.0.0.1:51234", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7", id="v4-port-peer"
        ),
        pytest.param(
            "::1",
            {"x-forwarded-for": "[2001:db8::7]:443, ::1"},
            "2001:db8::7",
            id="v6-hops-behind-v6-proxy",
        ),
        pytest.param("0:0:0:0:0:0:0:1", {}, "::1", id="v6-peer-normalised"),
        pytest.param(
            "2001:db8::5", {"x-forwarded-for": "203.0.113.7"}, "2001:db8::5", id="v6-untrusted"
        ),
        pytest.param(
            "127.0.0.2", {"x-forwarded-for": "203.0.113.7"}, "127.0.0.2", id="only-127.0.0.1"
        ),
    ],
)
def test_the_default_trusts_loopback_over_ipv4_and_ipv6(
    peer: str, headers: dict[str, str], expected: str
) -> None:
    assert client_ip(peer, headers, DEFAULT_PROXIES) == expected


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("10.0.0.1", "203.0.113.7"),
        ("10.255.255.254", "203.0.113.7"),
        ("11.0.0.1", "11.0.0.1"),
        ("9.255.255.255", "9.255.255.255"),
        ("fd12:3456::1", "203.0.113.7"),
        ("fe80::1", "fe80::1"),
        ("127.0.0.1", "127.0.0.1"),
    ],
)
def test_trust_is_by_network_when_proxies_are_cidrs(peer: str, expected: str) -> None:
    assert client_ip(peer, {"x-forwarded-for": "203.0.113.7"}, CIDR_PROXIES) == expected


def test_trusted_hops_inside_a_cidr_are_skipped() -> None:
    headers = {"x-forwarded-for": "203.0.113.7, 10.9.8.7, 10.0.0.1"}
    assert client_ip("10.1.1.1", headers, CIDR_PROXIES) == "203.0.113.7"


def test_with_no_trusted_proxies_the_peer_is_always_the_client() -> None:
    headers = {"x-forwarded-for": "203.0.113.7", "x-real-ip": "203.0.113.8"}
    assert client_ip("127.0.0.1", headers, []) == "127.0.0.1"
