"""PII redaction: every rule with its true positives and the near misses it must keep."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evothesis.privacy import redact as redact_module
from evothesis.privacy.redact import (
    MAX_DEPTH,
    REDACTED,
    NestingTooDeep,
    is_sensitive_key,
    redact_event_data,
    redact_text,
    redact_url,
    redact_value,
)

R = REDACTED

# --------------------------------------------------------------------------- free text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # e-mail addresses
        ("a@b.com", R),
        ("contact me at a@b.com please", f"contact me at {R} please"),
        ("John.Doe+news@Example.co.uk", R),
        ("mail: first_last-1@sub.domain.io.", f"mail: {R}."),
        ("two: x@y.org, z@w.net", f"two: {R}, {R}"),
        ("<jane@corp.example>", f"<{R}>"),
        ("jörg@bücher.de", R),
        # card numbers (Luhn-valid, 13-19 digits, spaces or dashes allowed)
        ("4111 1111 1111 1111", R),
        ("4111-1111-1111-1111", R),
        ("4111111111111111", R),
        ("card 5555555555554444 exp 12/29", f"card {R} exp 12/29"),
        ("amex 3782 822463 10005", f"amex {R}"),
        ("378282246310005", R),
        ("4222222222222", R),  # 13-digit Visa
        ("6011000990139424", R),
        ("4111 1111 1111 1111 2025", f"{R} 2025"),
        ("2025 4111 1111 1111 1111", f"2025 {R}"),
        # US social security numbers
        ("078-05-1120", R),
        ("ssn is 123-45-6789.", f"ssn is {R}."),
        # phone numbers
        ("+14155552671", R),
        ("call +14155552671 today", f"call {R} today"),
        ("(415) 555-2671", R),
        ("(415)555-2671", R),
        ("415-555-2671", R),
        ("415.555.2671", R),
        ("415 555 2671", R),
        ("1-800-555-0199", R),
        ("+1 415 555 2671", R),
        ("+1 (415) 555-2671", R),
        ("+1-415-555-2671", R),
        ("+44 20 7946 0958", R),
        ("+44 (0)20 7946 0958", R),
        ("+49 30 12345678", R),
        ("+33 1 23 45 67 89", R),
        ("tel: 415-555-2671, ext 2", f"tel: {R}, ext 2"),
    ],
)
def test_redacts_pii_in_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        # no trigger characters at all: the fast path
        "",
        "pageview",
        "button.primary > span",
        "Hello, world!",
        # e-mail near misses
        "@username",
        "user@localhost",
        "foo@bar",
        "logo@2x.png",
        "/img/hero@3x.webp",
        "a@b",
        "price @ 12",
        # card near misses
        "4111111111111112",  # fails Luhn
        "order 1234567812345678",  # 16-digit order number failing Luhn
        "1234 5678 9012 3456",  # fails Luhn
        "0000 0000 0000 0000",  # Luhn-valid zeros, no issuer starts with 0
        "1720699200000",  # millisecond epoch
        "1720699200000000",  # microsecond epoch
        "1720699200000000000",  # nanosecond epoch
        "411111111111",  # 12 digits: too short
        "41111111111111111111",  # 20 digits: too long
        "550e8400-e29b-41d4-a716-446655440000",  # UUID
        "12345678-1234-5678-1234-567812345678",  # all-digit UUID: 8/12-digit groups
        # SSN near misses
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "123-00-6789",
        "123-45-0000",
        "123456789",
        "1123-45-6789",
        # phone near misses
        "12345",
        "2025",
        "1999",
        "4155552671",  # bare 10 digits: ambiguous with epoch seconds
        "1720699200",  # epoch seconds
        "+100",
        "+12.50",
        "+1,299.99",
        "$1,299.99",
        "1 299,99 €",
        "EUR 1.299,99",
        "123-456-7890",  # area codes never start with 1
        "415-155-2671",  # nor exchanges
        "+1234567",  # too short for E.164
        "+1234567890123456",  # too long for E.164
        # dates, times, versions, identifiers
        "2025-07-11",
        "11.07.2025",
        "07/11/2025",
        "2025-07-11T12:00:00Z",
        "2025-07-11T12:00:00.123+02:00",
        "2025-07-11 12:00:00",
        "12:00:00",
        "v1.2.3",
        "192.168.1.1",  # IPs are only redacted in strict mode
        "::1",
        "sess_abc123",
        "vis_xyz789",
        "depth 25%",
    ],
)
def test_keeps_near_misses(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from 10.0.0.1", f"from {R}"),
        ("192.168.1.254:8080", f"{R}:8080"),
        ("client 2001:db8::1 connected", f"client {R} connected"),
        ("::1", R),
        ("fe80::1%eth0", R),
        ("::ffff:1.2.3.4", R),
        ("at 1.2.3.4.", f"at {R}."),
    ],
)
def test_strict_redacts_ip_addresses(text: str, expected: str) -> None:
    assert redact_text(text, strict=True) == expected
    assert redact_text(text) == text or "@" in text


@pytest.mark.parametrize(
    "text",
    ["12:00:00", "2025-07-11T12:00:00Z", "00:1A:2B:3C:4D:5E", "256.1.1.1", "1.2.3", "a::b::c"],
)
def test_strict_keeps_non_addresses(text: str) -> None:
    assert redact_text(text, strict=True) == text


def test_redaction_exposing_a_neighbour_still_reaches_a_fixed_point() -> None:
    # The phone is glued to the e-mail; once the e-mail is gone it must go too.
    assert redact_text("a@b.com+14155552671") == f"{R}{R}"


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "PASSWORD",
        "new_password",
        "passwordConfirm",
        "passwd",
        "user-pwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "csrfToken",
        "X-Auth-Token",
        "ssn",
        "SSN",
        "customer_ssn",
        "cvv",
        "cvv2",
        "cvc",
        "card_number",
        "cardNumber",
        "CardNumber",
        "card-number",
        "cardnumber",
        "credit_card",
        "creditCard",
        "cc_number",
        "ccNum",
        "api_key",
        "apiKey",
        "x-api-key",
        "authorization",
        "Authorization",
        "pin",
        "otp",
        "private_key",
        "credentials",
    ],
)
def test_sensitive_keys(key: str) -> None:
    assert is_sensitive_key(key)
    assert is_sensitive_key(key, strict=True)


@pytest.mark.parametrize(
    "key",
    [
        "className",  # contains "ssn" across a word boundary
        "classname",
        "spinner",
        "pinned",
        "author",
        "cc_email",
        "account_number",
        "session_id",
        "sessionId",
        "eventType",
        "element",
        "depth",
        "url",
        "utm_source",
        "email",
        "name",
    ],
)
def test_not_sensitive_keys(key: str) -> None:
    assert not is_sensitive_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "name",
        "Name",
        "first_name",
        "firstName",
        "firstname",
        "last_name",
        "lastName",
        "full_name",
        "username",
        "patientName",
        "billing_first_name",
        "address",
        "street",
        "street_address",
        "zip",
        "zip_code",
        "postcode",
        "postal_code",
        "dob",
        "date_of_birth",
        "birthdate",
        "birthDate",
        "phone",
        "phoneNumber",
        "mobile",
        "email",
        "Email",
        "email_address",
        "ip",
        "ip_address",
        "ipAddress",
        "IPAddress",
        "city",
    ],
)
def test_strict_keys(key: str) -> None:
    assert is_sensitive_key(key, strict=True)
    assert not is_sensitive_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "className",
        "eventName",
        "fieldName",
        "tagName",
        "pathname",
        "hostname",
        "filename",
        "element",
        "iphone_model",
        "gzip",
        "zipped",
        "telemetry",
        "eventType",
    ],
)
def test_strict_keeps_technical_keys(key: str) -> None:
    assert not is_sensitive_key(key, strict=True)


# --------------------------------------------------------------------------- structures


def test_values_under_sensitive_keys_are_replaced_whatever_their_type() -> None:
    data = {
        "password": "hunter2",
        "cvv": 123,
        "pin": 12.5,
        "token": None,
        "secret": True,
        "api_key": {"nested": "value"},
        "card_number": ["4111", "1111"],
        "keep_int": 42,
        "keep_float": 1.5,
        "keep_bool": False,
        "keep_none": None,
    }
    assert redact_event_data(data) == {
        "password": R,
        "cvv": R,
        "pin": R,
        "token": R,
        "secret": R,
        "api_key": R,
        "card_number": R,
        "keep_int": 42,
        "keep_float": 1.5,
        "keep_bool": False,
        "keep_none": None,
    }


def test_nested_structures() -> None:
    event = {
        "eventType": "batch",
        "sessionId": "sess_abc123",
        "visitorId": "vis_xyz789",
        "timestamp": "2025-07-11T12:00:00Z",
        "url": "https://example.com/page?utm_source=google&email=a%40b.com",
        "events": [
            {"eventType": "click", "eventData": {"element": "button1", "text": "mail a@b.com"}},
            {"eventType": "scroll", "eventData": {"depth": 25}},
            {
                "eventType": "form_submit",
                "eventData": {
                    "fields": [{"name": "password", "type": "password"}, {"name": "email"}],
                    "user": {"Password": "x", "phone": "+1 415 555 2671", "orders": [1, 2]},
                },
            },
        ],
    }
    assert redact_event_data(event) == {
        "eventType": "batch",
        "sessionId": "sess_abc123",
        "visitorId": "vis_xyz789",
        "timestamp": "2025-07-11T12:00:00Z",
        "url": f"https://example.com/page?utm_source=google&email={R}",
        "events": [
            {"eventType": "click", "eventData": {"element": "button1", "text": f"mail {R}"}},
            {"eventType": "scroll", "eventData": {"depth": 25}},
            {
                "eventType": "form_submit",
                "eventData": {
                    # form events carry field names, which are kept
                    "fields": [{"name": "password", "type": "password"}, {"name": "email"}],
                    "user": {"Password": R, "phone": R, "orders": [1, 2]},
                },
            },
        ],
    }


def test_strict_mode_on_structures() -> None:
    data = {
        "name": "Jane Roe",
        "first_name": "Jane",
        "address": {"street": "1 Main St", "zip": 12345},
        "className": "btn",
        "note": "from 10.0.0.1",
        "dob": "1980-01-01",
        "count": 3,
    }
    assert redact_event_data(data, strict=True) == {
        "name": R,
        "first_name": R,
        "address": R,
        "className": "btn",
        "note": f"from {R}",
        "dob": R,
        "count": 3,
    }
    assert redact_event_data(data) == data


def test_input_is_not_mutated() -> None:
    data = {"password": "x", "list": ["a@b.com"], "inner": {"token": "t"}}
    snapshot = {"password": "x", "list": ["a@b.com"], "inner": {"token": "t"}}
    out = redact_event_data(data)
    assert data == snapshot
    assert out is not data


def test_keys_holding_pii_are_redacted_too() -> None:
    assert redact_event_data({"a@b.com": 1}) == {R: 1}


def test_tuples_and_scalars() -> None:
    assert redact_value(("a@b.com", 1)) == (R, 1)
    assert redact_value("a@b.com") == R
    for scalar in (0, -1, 1.5, True, False, None, 1720699200123):
        assert redact_value(scalar) == scalar
    assert redact_value(4111111111111111) == R  # a card number sent as a JSON number


def test_depth_is_bounded_and_fails_closed() -> None:
    deep: object = "a@b.com"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    out = redact_event_data(deep)
    for _ in range(MAX_DEPTH):
        assert isinstance(out, list)
        out = out[0]
    assert out == R
    with pytest.raises(NestingTooDeep, match=f"deeper than {MAX_DEPTH}"):
        redact_event_data([deep])


def test_very_deep_input_does_not_recurse_unbounded() -> None:
    deep: object = {}
    for _ in range(5000):
        deep = {"k": deep}
    with pytest.raises(NestingTooDeep):
        redact_event_data(deep)  # refused, and no RecursionError


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://example.com/page", "https://example.com/page"),
        (
            "https://example.com/p?utm_source=google&utm_medium=cpc",
            "https://example.com/p?utm_source=google&utm_medium=cpc",
        ),
        ("https://example.com/p?token=abc123&x=1", f"https://example.com/p?token={R}&x=1"),
        ("https://example.com/p?Password=&x=1", f"https://example.com/p?Password={R}&x=1"),
        ("https://e.com/?api_key=k&card_number=4", f"https://e.com/?api_key={R}&card_number={R}"),
        ("https://e.com/?api%5Fkey=k", f"https://e.com/?api%5Fkey={R}"),
        ("https://e.com/?email=a@b.com", f"https://e.com/?email={R}"),
        ("https://e.com/?email=a%40b.com&x=1", f"https://e.com/?email={R}&x=1"),
        ("https://e.com/?q=mail+a%40b.com", f"https://e.com/?q={R}"),
        ("https://e.com/?q=call 415-555-2671", f"https://e.com/?q=call {R}"),
        ("https://e.com/?tel=%2B14155552671", f"https://e.com/?tel={R}"),
        ("https://e.com/?cc=4111+1111+1111+1111", f"https://e.com/?cc={R}"),
        ("https://e.com/?ssn=078-05-1120", f"https://e.com/?ssn={R}"),
        ("https://e.com/?id=078-05-1120", f"https://e.com/?id={R}"),
        (
            "https://e.com/?date=2025-07-11&price=12.50",
            "https://e.com/?date=2025-07-11&price=12.50",
        ),
        ("https://e.com/?order=1234567812345678", "https://e.com/?order=1234567812345678"),
        ("https://e.com/users/a@b.com/profile", f"https://e.com/users/{R}/profile"),
        ("https://e.com/users/a%40b.com/profile", f"https://e.com/users/{R}/profile"),
        ("https://e.com/img/logo@2x.png", "https://e.com/img/logo@2x.png"),
        ("https://user:pw@e.com/x", f"https://{R}@e.com/x"),
        (
            "https://e.com/cb#access_token=abc&state=xyz",
            f"https://e.com/cb#access_token={R}&state=xyz",
        ),
        ("https://e.com/#/route?password=1&x=2", f"https://e.com/#/route?password={R}&x=2"),
        ("https://e.com/#mail:a@b.com", f"https://e.com/#mail:{R}"),
        ("/page?token=t", f"/page?token={R}"),
        ("?token=t&a=b", f"?token={R}&a=b"),
        ("mailto:a@b.com", f"mailto:{R}"),
        # untouched parameters keep their exact encoding, odd shapes survive
        ("https://e.com/?a=%20b&&c&d=", "https://e.com/?a=%20b&&c&d="),
        ("https://e.com/?", "https://e.com/?"),
        ("https://e.com/#", "https://e.com/#"),
        ("https://e.com/?a=b=c", "https://e.com/?a=b=c"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_strict() -> None:
    url = "https://e.com/?name=Jane&first_name=J&utm_source=x&from=10.0.0.1"
    assert redact_url(url, strict=True) == (
        f"https://e.com/?name={R}&first_name={R}&utm_source=x&from={R}"
    )
    assert redact_url(url) == url


def test_url_strings_inside_event_data_get_url_treatment() -> None:
    data = {"referrer": "https://search.example/?q=x&session_token=s3cr3t"}
    assert redact_event_data(data) == {"referrer": f"https://search.example/?q=x&session_token={R}"}


# --------------------------------------------------------------------------- audit gaps
# Each class below was found stored unredacted at every privacy level; the tests run both
# levels, with the near misses of the same shape that analytics data is full of.

NBSP, NNBSP = "\u00a0", "\u202f"


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    "number",
    [
        4111111111111111,  # Visa
        5555555555554444,  # Mastercard
        378282246310005,  # Amex, 15 digits
        4222222222222,  # 13-digit Visa
        6011000990139424,  # Discover
        -4111111111111111,  # the digits are the card, whatever the sign
        4111111111111111.0,  # a whole float is the same number
    ],
)
def test_card_numbers_sent_as_json_numbers(number: float, strict: bool) -> None:
    assert redact_event_data({"eventData": {"n": number}}, strict=strict) == {"eventData": {"n": R}}
    assert redact_value([number], strict=strict) == [R]


@pytest.mark.parametrize(
    "number",
    [
        0,
        42,
        2025,
        1999,
        1920,
        12.5,
        987654321,  # order id, 9 digits
        4155552671,  # ten digits: ambiguous with epoch seconds, kept like the string
        1720699200,  # epoch seconds
        1720699200123,  # epoch milliseconds
        1720699200123456,  # epoch microseconds
        1720699200123456789,  # epoch nanoseconds
        1234567812345678,  # 16 digits failing Luhn
        4294967295,  # 32-bit id
        9007199254740991,  # Number.MAX_SAFE_INTEGER
        20250711120000,  # yyyymmddhhmmss
        202507111200,  # yyyymmddhhmm
        442079460958,  # a London landline without "+": bare landlines are not judged
        1720699200123.5,
        1e300,
        pytest.param(10**5000, id="10**5000"),  # longer than Python turns into text
    ],
)
def test_numbers_that_are_not_cards_or_phones_pass(number: float) -> None:
    assert redact_event_data({"n": number}) == {"n": number}
    assert redact_event_data({"n": number}, strict=True) == {"n": number}


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111.1111.1111.1111", R),
        (f"4111{NBSP}1111{NBSP}1111{NBSP}1111", R),
        (f"4111{NNBSP}1111{NNBSP}1111{NNBSP}1111", R),
        ("4111  1111  1111  1111", R),
        ("4111 - 1111 - 1111 - 1111", R),
        ("3782.822463.10005", R),
        ("paid with 5555.5555.5555.4444.", f"paid with {R}."),
        ("4111.1111.1111.1111 exp 12.29", f"{R} exp 12.29"),
    ],
)
def test_card_numbers_with_dots_and_other_spaces(text: str, expected: str, strict: bool) -> None:
    assert redact_text(text, strict=strict) == expected


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123 45 6789", R),
        ("123.45.6789", R),
        (f"078{NBSP}05{NBSP}1120", R),
        ("SSN: 123456789", f"SSN: {R}"),
        ("ssn 078051120", f"ssn {R}"),
        ("my social security number is 123456789.", f"my social security number is {R}."),
        ("Soc. Sec. #078051120", f"Soc. Sec. #{R}"),
    ],
)
def test_ssns_without_dashes(text: str, expected: str, strict: bool) -> None:
    assert redact_text(text, strict=strict) == expected


@pytest.mark.parametrize(
    "text",
    [
        "123456789",  # a bare 9-digit run is an order number or a ZIP+4 far more often
        "order 123456789",
        "94105 1234",  # ZIP+4
        "123-45 6789",  # separators must agree
        "123 45 67890",
        "000 12 3456",
        "666.12.3456",
        "123 00 6789",
        "1.123.45.6789",
        "classname 123456789",  # "ssn" inside a word names nothing
    ],
)
def test_ssn_near_misses(text: str) -> None:
    assert redact_text(text) == text


def test_ssn_keys_are_sensitive_whatever_the_value() -> None:
    data = {"social_security_number": 123456789, "socialSecurityNo": "078051120"}
    assert redact_event_data(data) == {"social_security_number": R, "socialSecurityNo": R}


#: redact_text already removed these; the user-agent column kept them because it was not
#: redacted. They pin what the collector relies on when it redacts that column.
USER_AGENTS = [
    "Mozilla/5.0 (compatible; MyBot/1.0; +mailto:olga@example.com)",
    "Mozilla/5.0 (compatible; MyBot/1.0; contact: olga@example.com)",
    "MyCrawler/2.3 (+https://example.com/bot; olga.petrova+bots@mail.example.co.uk)",
    "curl/8.4.0 olga@example.com",
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("user_agent", USER_AGENTS)
def test_emails_inside_user_agents(user_agent: str, strict: bool) -> None:
    redacted = redact_text(user_agent, strict=strict)
    assert "@" not in redacted
    assert REDACTED in redacted
    assert redacted.split(R)[0] == user_agent.split("olga")[0]  # the rest of the UA is kept


BROWSER_USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.6478.122 Safari/537.36 Edg/126.0.2592.87",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36 OPR/111.0.0.0 YaBrowser/24.6.2.123",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
]
#: In-app browsers and WebViews add build numbers long enough to be looked at closely.
IN_APP_USER_AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/471.0.0.38.109;FBBV/612345678;"
    "FBDV/iPhone14,2;FBSV/17.5.1;FBRV/613456789]",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36"
    " (KHTML, like Gecko) Version/4.0 Chrome/126.0.6478.122 Mobile Safari/537.36",
]


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("user_agent", BROWSER_USER_AGENTS + IN_APP_USER_AGENTS)
def test_browser_user_agents_pass_unchanged(user_agent: str, strict: bool) -> None:
    # Strict mode too: "Chrome/126.0.0.0" is a version, not an IPv4 address.
    assert redact_text(user_agent, strict=strict) == user_agent


@pytest.mark.parametrize("user_agent", BROWSER_USER_AGENTS)
def test_browser_user_agents_are_settled_by_the_gates(
    user_agent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every stored event has a user agent: the cheap gates must settle a browser's
    # without the pattern passes (its version numbers are digits, none a long number).
    def no_passes(text: str, strict: bool) -> str:
        raise AssertionError(f"pattern passes ran on {text!r}")

    monkeypatch.setattr(redact_module, "_redact_passes", no_passes)
    assert redact_text(user_agent) == user_agent


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    "number",
    [
        14155552671,  # North America with its 1
        4915112345678,  # German mobile
        447700900123,  # UK mobile
        33612345678,  # French mobile
        919876543210,  # Indian mobile
        8613812345678,  # Chinese mobile
        79123456789,  # Russian mobile
        5511987654321,  # Brazilian mobile
    ],
)
def test_phone_numbers_sent_as_json_numbers(number: int, strict: bool) -> None:
    assert redact_event_data({"eventData": {"n": number}}, strict=strict) == {"eventData": {"n": R}}
    # The same digits sent as a string are judged the same way.
    assert redact_text(str(number), strict=strict) == R


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("030 1234 5678", R),
        ("0044 20 7946 0958", R),
        ("0049 30 1234567", R),
        ("001 415 555 2671", R),
        ("(020) 7946 0958", R),
        ("(030) 1234-5678", R),
        ("07700 900123", R),
        ("06 12 34 56 78", R),
        ("06-12345678", R),
        ("089.1234.5678", R),
        (f"+44{NBSP}20{NBSP}7946{NBSP}0958", R),
        ("call 030 1234 5678 today", f"call {R} today"),
        ("tel. (020) 7946 0958, ext 2", f"tel. {R}, ext 2"),
    ],
)
def test_phone_numbers_in_national_and_00_formats(text: str, expected: str, strict: bool) -> None:
    assert redact_text(text, strict=strict) == expected


@pytest.mark.parametrize(
    "text",
    [
        "0012 3456 7890",  # "00" then no country code: a zero-padded identifier
        "0099 1234 5678",
        "01.07.2025",
        "05.07.2025 12:00",
        "01-01-2025",
        "0.50",
        "030 12",
        "010 2025",
        "1920x1080",
        "1.2.3.4",
        "12:30:45",
        "2025-07-11",
        "14155552",
        "1415555267",
        "141555526712345678901",
    ],
)
def test_phone_near_misses(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # e-mails encoded twice (a URL carried inside another URL's parameter)
        ("https://e.com/?e=judy%2540example.com", f"https://e.com/?e={R}"),
        (
            "https://e.com/?redirect=https%3A%2F%2Fx.com%2F%3Femail%3Djudy%2540example.com",
            f"https://e.com/?redirect={R}",
        ),
        # a sensitive key in the query of a URL carried in a parameter or a path segment
        ("https://e.com/login?next=%2Fcb%3Ftoken%3Dabc&x=1", f"https://e.com/login?next={R}&x=1"),
        ("https://e.com/login?next=/cb?token=abc&x=1", f"https://e.com/login?next={R}&x=1"),
        ("https://e.com/r/%3Fpassword%3Dhunter2", f"https://e.com/r/{R}"),
        ("https://mail.example/?to=judy%2540example.com", f"https://mail.example/?to={R}"),
        # the new number rules inside URLs, as written or encoded
        ("https://e.com/p?q=4111.1111.1111.1111", f"https://e.com/p?q={R}"),
        ("https://e.com/?q=4111%2E1111%2E1111%2E1111", f"https://e.com/?q={R}"),
        ("https://e.com/?q=0044%2020%207946%200958", f"https://e.com/?q={R}"),
        ("https://e.com/?tel=14155552671", f"https://e.com/?tel={R}"),
        ("https://e.com/?q=SSN+123456789", f"https://e.com/?q=SSN+{R}"),
        ("https://e.com/#/card/4111.1111.1111.1111", f"https://e.com/#/card/{R}"),
        ("/cards/4111.1111.1111.1111", f"/cards/{R}"),  # a path column
    ],
)
def test_redact_url_gaps(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(url, strict=True) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://e.com/?q=100%25&v=2.10.1",
        "https://e.com/?next=%2Fcart%3Fitem%3D42",  # a carried URL without sensitive keys
        "https://e.com/?next=/cart?item=42&x=1",
        "https://e.com/?a=%2520b",  # encoded twice, nothing inside
    ],
)
def test_url_near_misses_keep_their_encoding(url: str) -> None:
    assert redact_url(url) == url


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        # Beside the payload the collector stores url, referrer, path and site id through
        # redact_url; these shapes must hold there too.
        ("https://shop.example/u/judy@example.com/orders", f"https://shop.example/u/{R}/orders"),
        (
            "https://search.example/?q=x&email=judy@example.com",
            f"https://search.example/?q=x&email={R}",
        ),
        ("shop.example/?email=judy@example.com", f"shop.example/?email={R}"),
        ("/u/judy%40example.com/orders", f"/u/{R}/orders"),
    ],
)
def test_columns_the_collector_stores(column: str, expected: str) -> None:
    assert redact_url(column) == expected
    assert redact_url(column, strict=True) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("user=olga&password=hunter2", R),  # a form body
        ("theme=dark; session_token=abc", R),  # a cookie string
        ("theme=dark; lang=en", "theme=dark; lang=en"),
        ("input[type=password]", "input[type=password]"),  # a CSS selector
    ],
)
def test_sensitive_keys_inside_string_values(value: str, expected: str) -> None:
    assert redact_event_data({"body": value}) == {"body": expected}
    assert redact_value(value, strict=True) == expected


@pytest.mark.parametrize(
    "key", ["phonenumber", "emailaddress", "ipaddr", "cellphone", "postalcode"]
)
def test_strict_keys_written_as_one_lower_case_word(key: str) -> None:
    assert is_sensitive_key(key, strict=True)
    assert not is_sensitive_key(key)


# --------------------------------------------------------------------------- properties

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(
        [
            "a@b.com",
            "4111 1111 1111 1111",
            "078-05-1120",
            "+14155552671",
            "(415) 555-2671",
            "https://u:p@e.com/a%40b.com?token=x&q=a+b#k=v",
            "10.0.0.1",
            "::1",
            "2025-07-11",
        ]
    )
)
json_keys = st.text(max_size=12) | st.sampled_from(
    ["password", "email", "name", "className", "card_number", "ip", "url"]
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(json_keys, children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_never_raises_and_is_idempotent(value: object, strict: bool) -> None:
    once = redact_event_data(value, strict=strict)
    assert redact_event_data(once, strict=strict) == once


pii_alphabet = st.sampled_from(list("0123456789 -+().@:/?=&%#abcxyz.com_[]"))


@settings(max_examples=500, deadline=None)
@given(st.text(pii_alphabet, max_size=60), st.booleans())
def test_text_and_url_redaction_is_idempotent(text: str, strict: bool) -> None:
    once = redact_text(text, strict=strict)
    assert redact_text(once, strict=strict) == once
    url_once = redact_url(text, strict=strict)
    assert redact_url(url_once, strict=strict) == url_once
    value_once = redact_value(text, strict=strict)
    assert redact_value(value_once, strict=strict) == value_once


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30))
def test_embedded_email_is_always_removed(prefix: str, suffix: str) -> None:
    text = f"{prefix} jane.roe@example.com {suffix}"
    assert "jane.roe@example.com" not in redact_text(text)


@pytest.mark.parametrize(
    "text",
    [
        # analytics-node's message ids: a millisecond clock and a UUID whose digit groups
        # once read as a Luhn-valid card number.
        "node-next-1796219330770-4e839846-7786-4541-8260-5658b90ac519",
        "node-next-1796223757675-3d747266-0779-400e-ab28-ca0b7d42f1bd",
        "/orders/4e839846-7786-4541-8260-5658b90ac519/items",
        # analytics-next's: an MD5 whose digit runs once read as phone numbers.
        "ajs-next-9c52236299594678f3171482732190eb",
        "ajs-next-aa9697a0d6a960575315836808edf33b",
    ],
)
def test_an_id_inside_text_is_inert_as_a_uuid_is_alone(text: str) -> None:
    assert redact_text(text) == text
    # As a payload's value too (a Segment message's messageId), for every privacy level.
    for strict in (False, True):
        assert redact_event_data({"messageId": text}, strict=strict) == {"messageId": text}
        assert redact_value([text], strict=strict) == [text]


def test_pii_beside_an_embedded_uuid_is_still_redacted() -> None:
    uuid_text = "4e839846-7786-4541-8260-5658b90ac519"
    assert redact_text(f"call 415-555-2671 ref {uuid_text}") == f"call {REDACTED} ref {uuid_text}"
    assert redact_text(f"{uuid_text}@example.com") == REDACTED
