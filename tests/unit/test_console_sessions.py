"""Console sessions (``api.console.sessions``): what a cookie must be to open a session, and
what its CSRF token proves. Pure: keys, cookies and clocks are values here."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evothesis.api.console.sessions import Opener, Session, SessionKeys
from evothesis.domain import Access
from evothesis.registry.secrets import SecretBox, generate_key

NOW = 1_900_000_000.0
HOUR = 3600.0


def keys(
    admin: str | None = "admin-token",
    operator: str | None = "operator-token",
    dev: bytes | None = None,
) -> SessionKeys:
    return SessionKeys(admin_token=admin, operator_token=operator, development_secret=dev)


@pytest.mark.parametrize("opener", [Opener.ADMIN_TOKEN, Opener.OPERATOR_TOKEN, Opener.DEVELOPMENT])
def test_a_sealed_session_opens_until_it_expires(opener: Opener) -> None:
    ring = keys(dev=b"d" * 32)
    session = ring.new(opener, now=NOW, lifetime_s=HOUR)
    cookie = ring.seal(session)
    assert ring.open(cookie, now=NOW) == session
    assert ring.open(cookie, now=NOW + HOUR - 1) == session
    assert ring.open(cookie, now=NOW + HOUR) is None


def test_what_each_opener_may_do() -> None:
    assert Opener.ADMIN_TOKEN.access is Access.ADMIN
    assert Opener.OPERATOR_TOKEN.access is Access.OPERATOR
    # The development default's console manages everything, as its CLI does.
    assert Opener.DEVELOPMENT.access is Access.ADMIN
    assert (Access.OPERATOR.runs, Access.OPERATOR.administers) == (False, False)
    assert (Access.LOCAL.runs, Access.LOCAL.administers) == (True, False)
    assert (Access.ADMIN.runs, Access.ADMIN.administers) == (True, True)


def test_changing_a_token_ends_the_sessions_it_opened() -> None:
    session = keys().new(Opener.ADMIN_TOKEN, now=NOW, lifetime_s=HOUR)
    cookie = keys().seal(session)
    assert keys(admin="a-new-admin-token").open(cookie, now=NOW) is None
    assert keys(admin=None).open(cookie, now=NOW) is None
    # The other token's sessions are not affected.
    operator = keys().seal(keys().new(Opener.OPERATOR_TOKEN, now=NOW, lifetime_s=HOUR))
    assert keys(admin="a-new-admin-token").open(operator, now=NOW) is not None


def test_an_operator_session_cannot_be_edited_into_an_admin_one() -> None:
    ring = keys()
    cookie = ring.seal(ring.new(Opener.OPERATOR_TOKEN, now=NOW, lifetime_s=HOUR))
    assert cookie.startswith("operator.")
    assert ring.open("admin." + cookie.removeprefix("operator."), now=NOW) is None
    # Even with both tokens equal, the opener is signed.
    same = keys(admin="same", operator="same")
    forged = "admin." + same.seal(same.new(Opener.OPERATOR_TOKEN, now=NOW, lifetime_s=HOUR))[9:]
    assert same.open(forged, now=NOW) is None


def test_every_part_of_the_cookie_is_signed() -> None:
    ring = keys()
    session = ring.new(Opener.ADMIN_TOKEN, now=NOW, lifetime_s=HOUR)
    opener, expires, nonce, signature = ring.seal(session).split(".")
    later = str(int(expires) + 10 * 365 * 24 * 3600)
    other_nonce = ring.new(Opener.ADMIN_TOKEN, now=NOW, lifetime_s=HOUR).nonce
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    for cookie in (
        f"{opener}.{later}.{nonce}.{signature}",
        f"{opener}.{expires}.{other_nonce}.{signature}",
        f"{opener}.{expires}.{nonce}.{flipped}",
        f"{opener}.{expires}.{nonce}.",
    ):
        assert ring.open(cookie, now=NOW) is None, cookie


@pytest.mark.parametrize(
    "cookie",
    [
        "",
        "admin",
        "admin.1.2",
        "admin.1.2.3.4",
        "root.9999999999.AAAAAAAAAAAAAAAAAAAAAA.sig",
        "admin.-1.AAAAAAAAAAAAAAAAAAAAAA.sig",
        "admin.soon.AAAAAAAAAAAAAAAAAAAAAA.sig",
        "admin.9999999999.short.sig",
        "admin.9999999999.AAAAAAAAAAAAAAAAAAAAAA.ßig",
        "admin.9999999999.AAAAAAAAAAAAAAAAAAAAAA." + "x" * 500,
    ],
)
def test_malformed_cookies_open_nothing(cookie: str) -> None:
    assert keys().open(cookie, now=NOW) is None


@given(st.text(max_size=300))
def test_no_cookie_makes_opening_fail_loudly(cookie: str) -> None:
    assert keys(dev=b"d" * 32).open(cookie, now=NOW) is None


def test_a_session_of_an_opener_without_a_key_is_refused() -> None:
    ring = keys(dev=b"d" * 32)
    development = ring.seal(ring.new(Opener.DEVELOPMENT, now=NOW, lifetime_s=HOUR))
    # A token configured since: the development door is shut, and its sessions with it.
    assert keys(dev=None).open(development, now=NOW) is None
    with pytest.raises(ValueError, match="no key"):
        keys(operator=None).new(Opener.OPERATOR_TOKEN, now=NOW, lifetime_s=HOUR)


def test_the_csrf_token_belongs_to_its_session_and_key() -> None:
    ring = keys()
    session = ring.new(Opener.ADMIN_TOKEN, now=NOW, lifetime_s=HOUR)
    other = ring.new(Opener.ADMIN_TOKEN, now=NOW, lifetime_s=HOUR)
    token = ring.csrf_token(session)
    assert ring.csrf_matches(session, token)
    assert not ring.csrf_matches(other, token)
    assert not keys(admin="changed").csrf_matches(session, token)
    for forged in (None, "", "forged", token[:-1], token + "x", "é" + token[1:]):
        assert not ring.csrf_matches(session, forged)


def test_sessions_are_unguessable_and_distinct() -> None:
    ring = keys()
    made = {ring.new(Opener.ADMIN_TOKEN, now=NOW, lifetime_s=HOUR).nonce for _ in range(200)}
    assert len(made) == 200
    assert all(len(nonce) == 22 for nonce in made)  # 128 random bits
    assert Session(Opener.ADMIN_TOKEN, 1, "n").access is Access.ADMIN


def test_development_sessions_are_signed_with_a_key_derived_from_the_secret_key() -> None:
    """Every process sharing EVOTHESIS_SECRET_KEY (or the data folder's key file) derives
    the same key; another secret key, or another purpose, derives another."""
    first, rotated = generate_key(), generate_key()
    box = SecretBox([first.encode()])
    purpose = b"evothesis console development sessions"
    assert box.derive(purpose) == SecretBox([first.encode(), rotated.encode()]).derive(purpose)
    assert box.derive(purpose) != SecretBox([rotated.encode(), first.encode()]).derive(purpose)
    assert box.derive(purpose) != box.derive(b"something else")
    assert len(box.derive(purpose)) == 32
    ring = keys(admin=None, operator=None, dev=box.derive(purpose))
    cookie = ring.seal(ring.new(Opener.DEVELOPMENT, now=NOW, lifetime_s=HOUR))
    assert keys(admin=None, operator=None, dev=box.derive(purpose)).open(cookie, now=NOW)
