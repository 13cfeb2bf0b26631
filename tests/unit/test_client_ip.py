"""Forwarded headers count only when a trusted proxy sent them."""

from __future__ import annotations

import ipaddress

import pytest

from evothesis.api.client_ip import client_ip

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
