"""Property tests of PII redaction: generated PII never survives, innocent shapes always do.

The surrounding text is drawn without digits, so any digit left in an output is a leak.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus, unquote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from evothesis.privacy.redact import (
    REDACTED,
    redact_event_data,
    redact_text,
    redact_url,
    redact_value,
)

FAST = settings(max_examples=40, deadline=None)

#: Separators people write between digit groups, including the no-break spaces of
#: word processors and locale-aware formatters.
CARD_SEPARATORS = ["", " ", "-", ".", "\u00a0", "\u202f", "\u2009", "  ", " - "]
PHONE_SEPARATORS = [" ", "-", ".", "\u00a0"]

#: Words around the PII: no digits (so a digit in the output is a leak) and no characters
#: that glue onto a number or an address and change what it is.
words = st.text(string.ascii_letters + " ,;:!?()[]<>'\"", max_size=20)


def surround(prefix: str, pii: str, suffix: str) -> str:
    return f"{prefix} {pii} {suffix}"


def has_digit(text: str) -> bool:
    return any(c in string.digits for c in text)


def luhn_complete(body: str) -> str:
    """``body`` with the check digit that makes it Luhn-valid."""
    total = 0
    for position, char in enumerate(reversed(body)):
        value = int(char)
        if position % 2 == 0:  # doubled once the check digit is appended
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return body + str(-total % 10)


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    """Luhn-valid numbers of 13-19 digits, as issuers assign them: never starting with 0,
    and starting with 1 only at 15 digits (UATP)."""
    length = draw(st.integers(13, 19))
    first = "1" if length == 15 and draw(st.booleans()) else draw(st.sampled_from("23456789"))
    rest = draw(st.text(string.digits, min_size=length - 2, max_size=length - 2))
    return luhn_complete(first + rest)


#: How cards are printed, by length: groups of four, Amex and Diners 4-6-5 and 4-6-4.
CARD_GROUPINGS = {
    13: [(4, 4, 5), (4, 3, 3, 3)],
    14: [(4, 6, 4), (4, 4, 6)],
    15: [(4, 6, 5), (4, 4, 4, 3)],
    16: [(4, 4, 4, 4)],
    17: [(4, 4, 4, 5)],
    18: [(4, 4, 4, 6)],
    19: [(4, 4, 4, 4, 3)],
}


@st.composite
def written_cards(draw: st.DrawFn) -> tuple[str, str]:
    """A card number and how it is written: whole, or in the groups cards are printed in."""
    digits = draw(card_numbers())
    separator = draw(st.sampled_from(CARD_SEPARATORS))
    sizes = draw(st.sampled_from([(len(digits),), *CARD_GROUPINGS[len(digits)]]))
    groups, start = [], 0
    for size in sizes:
        groups.append(digits[start : start + size])
        start += size
    return digits, separator.join(groups)


@given(written_cards(), words, words, st.booleans())
@FAST
def test_card_numbers_never_survive(
    card: tuple[str, str], prefix: str, suffix: str, strict: bool
) -> None:
    _, written = card
    out = redact_text(surround(prefix, written, suffix), strict=strict)
    assert not has_digit(out)
    assert REDACTED in out


@given(card_numbers(), st.booleans())
@FAST
def test_card_numbers_sent_as_json_numbers_never_survive(digits: str, strict: bool) -> None:
    assert redact_event_data({"eventData": {"n": int(digits)}}, strict=strict) == {
        "eventData": {"n": REDACTED}
    }


@given(written_cards(), st.sampled_from(["q", "card", "note"]))
@FAST
def test_card_numbers_never_survive_in_query_strings(card: tuple[str, str], key: str) -> None:
    _, written = card
    for value in (written, quote(written), quote_plus(written)):
        out = redact_url(f"https://shop.example/pay?step=2&{key}={value}#top")
        assert not has_digit(out.replace("step=2", ""))


# --------------------------------------------------------------------------- e-mails

local_parts = st.from_regex(r"[a-z0-9](?:[a-z0-9._+-]{0,14}[a-z0-9])?", fullmatch=True)
domains = st.from_regex(r"(?:[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?\.){1,3}", fullmatch=True)
tlds = st.sampled_from(["com", "org", "io", "de", "co.uk", "example", "travel", "museum"])


@st.composite
def emails(draw: st.DrawFn) -> str:
    return f"{draw(local_parts)}@{draw(domains)}{draw(tlds)}"


@given(emails(), words, words, st.booleans())
@FAST
def test_emails_never_survive_in_text(email: str, prefix: str, suffix: str, strict: bool) -> None:
    out = redact_text(f"{prefix}{email} {suffix}", strict=strict)
    assert "@" not in out


@given(
    emails(),
    st.sampled_from(["MyBot", "Crawler", "curl", "python-requests"]),
    st.sampled_from(["+mailto:", "contact: ", "", "; ", "(", "+"]),
    st.booleans(),
)
@FAST
def test_emails_never_survive_in_user_agents(
    email: str, product: str, lead: str, strict: bool
) -> None:
    user_agent = f"Mozilla/5.0 (compatible; {product}/2.1; {lead}{email})"
    out = redact_text(user_agent, strict=strict)
    assert "@" not in out
    assert out.startswith("Mozilla/5.0 (compatible;")


@given(emails(), words, st.sampled_from(["email", "q", "to", "ref"]), st.integers(1, 3))
@FAST
def test_emails_never_survive_in_urls(email: str, text: str, key: str, encodings: int) -> None:
    value = f"{text} {email}"
    for _ in range(encodings):  # carried through one to three redirects
        value = quote_plus(value)
    for url in (
        f"https://e.example/p?x=1&{key}={value}#top",
        f"https://e.example/users/{quote(email)}/profile",
        f"https://e.example/#/route?{key}={value}",
        f"e.example/?{key}={value}",  # a site id sent as a URL
    ):
        out = redact_url(url)
        decoded = out
        for _ in range(encodings):
            decoded = unquote_plus(decoded)
        assert "@" not in decoded


# --------------------------------------------------------------------------- phones

country_codes = st.sampled_from(["1", "7", "20", "33", "44", "49", "55", "86", "91", "353", "971"])
digit_groups = st.lists(st.text(string.digits, min_size=2, max_size=4), min_size=3, max_size=4)


@st.composite
def international_phones(draw: st.DrawFn) -> str:
    """``+CC`` or ``00CC``, then separated groups: 8-15 digits after the prefix."""
    country = draw(country_codes)
    groups = draw(digit_groups.filter(lambda g: 8 <= len(country) + len("".join(g)) <= 15))
    separator = draw(st.sampled_from(PHONE_SEPARATORS))
    prefix = draw(st.sampled_from(["+", "00"]))
    area = draw(st.sampled_from(["", " (0)"])) if prefix == "+" else ""
    return prefix + country + area + separator + separator.join(groups)


@st.composite
def national_phones(draw: st.DrawFn) -> str:
    """A trunk 0 and an area code (maybe in parentheses), then groups: 9-12 digits."""
    area = "0" + draw(st.sampled_from("123456789")) + draw(st.text(string.digits, max_size=3))
    groups = draw(digit_groups.filter(lambda g: 9 <= len(area) + len("".join(g)) <= 12))
    separator = draw(st.sampled_from(PHONE_SEPARATORS))
    if draw(st.booleans()):
        return f"({area}) " + separator.join(groups)
    return area + separator + separator.join(groups)


@st.composite
def north_american_phones(draw: st.DrawFn) -> str:
    area = draw(st.from_regex(r"[2-9][0-9]{2}", fullmatch=True))
    exchange = draw(st.from_regex(r"[2-9][0-9]{2}", fullmatch=True))
    line = draw(st.from_regex(r"[0-9]{4}", fullmatch=True))
    return draw(
        st.sampled_from(
            [
                f"({area}) {exchange}-{line}",
                f"{area}-{exchange}-{line}",
                f"{area}.{exchange}.{line}",
                f"1-{area}-{exchange}-{line}",
                f"+1 {area} {exchange} {line}",
                f"+1{area}{exchange}{line}",
            ]
        )
    )


@given(
    st.one_of(international_phones(), national_phones(), north_american_phones()),
    words,
    words,
    st.booleans(),
)
@FAST
def test_phone_numbers_never_survive_in_text(
    phone: str, prefix: str, suffix: str, strict: bool
) -> None:
    out = redact_text(surround(prefix, phone, suffix), strict=strict)
    assert not has_digit(out)


#: Mobile numbers as a form posts them without ``+``: country code, the plan's leading
#: digits, and the rest of the plan's length.
bare_mobiles = st.one_of(
    st.from_regex(r"1[2-9][0-9]{2}[2-9][0-9]{6}", fullmatch=True),  # North America
    st.from_regex(r"491[5-7][0-9]{8,9}", fullmatch=True),  # Germany
    st.from_regex(r"447[0-9]{9}", fullmatch=True),  # United Kingdom
    st.from_regex(r"33[67][0-9]{8}", fullmatch=True),  # France
    st.from_regex(r"91[6-9][0-9]{9}", fullmatch=True),  # India
    st.from_regex(r"861[3-9][0-9]{9}", fullmatch=True),  # China
    st.from_regex(r"55[1-9][0-9]9[0-9]{8}", fullmatch=True),  # Brazil
)


@given(bare_mobiles, st.booleans())
@FAST
def test_bare_mobile_numbers_never_survive(digits: str, strict: bool) -> None:
    assert redact_event_data({"phone_field": int(digits)}, strict=strict) == {
        "phone_field": REDACTED
    }
    assert redact_value(digits, strict=strict) == REDACTED


@st.composite
def ssns(draw: st.DrawFn) -> str:
    area = draw(st.integers(1, 899).filter(lambda n: n != 666))
    group = draw(st.integers(1, 99))
    serial = draw(st.integers(1, 9999))
    separator = draw(st.sampled_from(["-", " ", ".", "\u00a0"]))
    return f"{area:03d}{separator}{group:02d}{separator}{serial:04d}"


@given(ssns(), words, words, st.booleans())
@FAST
def test_ssns_never_survive(ssn: str, prefix: str, suffix: str, strict: bool) -> None:
    assert not has_digit(redact_text(surround(prefix, ssn, suffix), strict=strict))
    bare = "".join(c for c in ssn if c in string.digits)
    assert not has_digit(redact_text(f"{prefix} SSN: {bare} {suffix}", strict=strict))


# --------------------------------------------------------------------------- innocents

#: From when epoch milliseconds have 13 digits (September 2001) to when they start with a 2
#: (May 2033); before and after, some are shaped like a mobile or a card number.
timestamps = st.datetimes(
    min_value=datetime(2001, 9, 10), max_value=datetime(2033, 5, 17), timezones=st.just(UTC)
)
epoch_numbers = timestamps.flatmap(
    lambda moment: st.sampled_from(
        [
            int(moment.timestamp()),
            int(moment.timestamp() * 1000),
            int(moment.timestamp() * 1_000_000),
            moment.timestamp(),
        ]
    )
)


@st.composite
def innocent_strings(draw: st.DrawFn) -> str:
    moment = draw(timestamps)
    number = draw(st.integers(0, 10**6))
    version = ".".join(str(draw(st.integers(0, 999))) for _ in range(draw(st.integers(2, 3))))
    return draw(
        st.sampled_from(
            [
                moment.date().isoformat(),
                moment.isoformat(),
                moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                moment.strftime("%d.%m.%Y %H:%M"),
                moment.strftime("%m/%d/%Y"),
                moment.strftime("%H:%M:%S"),
                str(draw(st.uuids())),
                f"{number // 100}.{number % 100:02d}",
                f"${number:,}.99",
                f"{number / 7:.2f} EUR",
                f"v{version}",
                version,
                f"{draw(st.integers(320, 7680))}x{draw(st.integers(240, 4320))}",
                str(number),
                str(int(moment.timestamp())),
                str(int(moment.timestamp() * 1000)),
                f"page {number % 50} of 50",
                f"SKU-{number:06d}",
            ]
        )
    )


@given(innocent_strings(), st.booleans())
@FAST
def test_innocent_strings_pass_unchanged(text: str, strict: bool) -> None:
    assert redact_text(text, strict=strict) == text
    assert redact_value(text, strict=strict) == text


@given(
    st.one_of(
        st.integers(-(10**10) + 1, 10**10 - 1),
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
        epoch_numbers,
    ),
    st.booleans(),
)
@FAST
def test_innocent_numbers_pass_unchanged(number: float, strict: bool) -> None:
    assert redact_event_data({"n": number}, strict=strict) == {"n": number}


# --------------------------------------------------------------------------- idempotence

pii_samples = st.sampled_from(
    [
        "4111.1111.1111.1111",
        "4111\u00a01111\u00a01111\u00a01111",
        "123 45 6789",
        "SSN 123456789",
        "0044 20 7946 0958",
        "(020) 7946 0958",
        "030 1234 5678",
        "14155552671",
        "Mozilla/5.0 (compatible; Bot/1.0; +mailto:olga@example.com)",
        "https://e.com/?next=%2Fcb%3Ftoken%3Dabc&e=judy%2540example.com",
        "Chrome/126.0.0.0 from 10.0.0.1",
    ]
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False)
    | st.text(string.printable + "\u00a0", max_size=40)
    | pii_samples
    | card_numbers().map(int)
    | bare_mobiles.map(int)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=10) | st.sampled_from(["ssn", "phone"]), children, max_size=4
        )
    ),
    max_leaves=12,
)


@given(json_values, st.booleans())
@settings(max_examples=80, deadline=None)
def test_redacting_twice_changes_nothing(value: object, strict: bool) -> None:
    once = redact_event_data(value, strict=strict)
    assert redact_event_data(once, strict=strict) == once


@given(st.text(string.digits + " .-+()@%=:/?&#\u00a0ae", max_size=50), st.booleans())
@settings(max_examples=150, deadline=None)
def test_text_and_url_redaction_twice_changes_nothing(text: str, strict: bool) -> None:
    once = redact_text(text, strict=strict)
    assert redact_text(once, strict=strict) == once
    url_once = redact_url(text, strict=strict)
    assert redact_url(url_once, strict=strict) == url_once
