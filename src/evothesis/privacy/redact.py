"""PII redaction for event data and URLs: pure functions, no I/O.

This runs on the hot path for every stored event, so the design is "cheap until proven
suspicious": a string is only handed to the pattern regexes when one C-level scan finds a
character that every pattern needs (a digit, ``@``, ``%``, ``=``; ``:`` in strict mode).
Most strings in analytics payloads (event types, element names, CSS selectors) have none.

Every rule is tuned against a near miss that analytics data is full of: order numbers that
fail Luhn, ISO dates and timestamps, prices, UUIDs, retina asset names like ``logo@2x.png``.
Redaction is *idempotent* (redacting twice gives the same result as once), so events that
are replayed from the disk spool or re-processed never change shape again.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from itertools import pairwise
from typing import Final
from urllib.parse import unquote, unquote_plus

__all__ = [
    "MAX_DEPTH",
    "REDACTED",
    "NestingTooDeep",
    "is_sensitive_key",
    "redact_event_data",
    "redact_text",
    "redact_url",
    "redact_value",
]

#: What replaces every redacted value or substring. No digit, ``@`` or ``%``, so it never
#: triggers a rule itself (this is what makes redaction idempotent).
REDACTED: Final = "[REDACTED]"

#: Nesting deeper than this is refused (``NestingTooDeep``): a subtree we will not inspect
#: must not be stored unredacted, and silently cutting it off would lose data unseen.
MAX_DEPTH: Final = 64


class NestingTooDeep(ValueError):
    """The payload nests deeper than ``MAX_DEPTH``; it cannot be checked for PII."""


# Replacing a match can expose a neighbour that a boundary check hid the first time
# (``a@b.com+14155552671``); a few passes reach the fixed point that idempotence needs.
_MAX_PASSES: Final = 8

# ---------------------------------------------------------------------------------------
# Key classification
# ---------------------------------------------------------------------------------------

_SECRET: Final = 1
_PERSONAL: Final = 2

#: Matched anywhere in the key with separators and case removed, so ``card_number``,
#: ``cardNumber`` and ``X-Card-Number`` all hit ``cardnumber``.
_SECRET_FRAGMENTS: Final = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "cvv",
    "cardnumber",
    "creditcard",
    "apikey",
    "authorization",
    "privatekey",
    "credential",
)

#: Matched only as whole words: as substrings they hide inside innocent keys
#: (``className`` contains "ssn", ``spinner`` contains "pin").
_SECRET_WORDS: Final = frozenset(
    {"ssn", "pwd", "pin", "cvc", "otp", "auth", "jwt", "bearer", "iban", "ccnum", "ccnumber"}
)
#: ``cc`` is only a card when a number word follows (``cc_number``), not in ``cc_email``.
_CARD_NUMBER_WORDS: Final = frozenset({"num", "number", "no"})

#: Strict (hipaa) mode: whole words that name personal data. ``name`` is handled apart,
#: because ``className``/``eventName`` are technical, not personal.
_PERSONAL_WORDS: Final = frozenset(
    {
        "email",
        "phone",
        "mobile",
        "tel",
        "telephone",
        "fax",
        "address",
        "street",
        "city",
        "zip",
        "zipcode",
        "postcode",
        "postal",
        "dob",
        "birth",
        "birthday",
        "birthdate",
        "ip",
        "ipaddress",
        "firstname",
        "lastname",
        "fullname",
        "middlename",
        "surname",
        "givenname",
        "familyname",
        "maidenname",
        "username",
        "displayname",
        "nickname",
        "fname",
        "lname",
    }
)

#: A key ending in "name" is personal only when it is bare ``name`` or qualified by one of
#: these words (``first_name``, ``patientName``), never for ``className`` or ``fieldName``.
_PERSON_QUALIFIERS: Final = frozenset(
    {
        "first",
        "last",
        "full",
        "middle",
        "given",
        "family",
        "sur",
        "maiden",
        "user",
        "display",
        "nick",
        "real",
        "legal",
        "patient",
        "customer",
        "contact",
        "person",
        "member",
        "owner",
        "holder",
        "cardholder",
        "recipient",
        "sender",
        "billing",
        "shipping",
        "guest",
        "your",
        "my",
    }
)

_KEY_PARTS: Final = re.compile(r"[\W_]+")
_CAMEL_WORDS: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def _key_words(key: str) -> list[str]:
    """Split a key the way people write them (snake, kebab, camel, SCREAMING) into words."""
    words: list[str] = []
    for part in _KEY_PARTS.split(key):
        if not part:
            continue
        if part.isascii():
            words.extend(word.lower() for word in _CAMEL_WORDS.findall(part))
        else:
            words.append(part.lower())
    return words


def _is_card_abbreviation(words: list[str]) -> bool:
    return any(
        word == "cc" and following in _CARD_NUMBER_WORDS for word, following in pairwise(words)
    )


def _is_personal_name(words: list[str]) -> bool:
    if not words or words[-1] != "name":
        return False
    return len(words) == 1 or words[-2] in _PERSON_QUALIFIERS


def _classify_key(key: str) -> int:
    """Bit mask of the key's classes (``_SECRET``, ``_PERSONAL``)."""
    words = _key_words(key)
    compact = "".join(words)
    mask = 0
    if (
        any(fragment in compact for fragment in _SECRET_FRAGMENTS)
        or not _SECRET_WORDS.isdisjoint(words)
        or _is_card_abbreviation(words)
    ):
        mask |= _SECRET
    if not _PERSONAL_WORDS.isdisjoint(words) or _is_personal_name(words):
        mask |= _PERSONAL
    return mask


#: Keys longer than this are classified on every call instead of being cached, so a
#: sender cannot pin megabytes of memory in the caches with huge unique keys.
_CACHEABLE_KEY_LENGTH: Final = 128

# Payloads and query strings reuse a small vocabulary of keys: classify each once.
_cached_classify_key = lru_cache(maxsize=4096)(_classify_key)


def _key_mask(key: str) -> int:
    if len(key) <= _CACHEABLE_KEY_LENGTH:
        return _cached_classify_key(key)
    return _classify_key(key)


def is_sensitive_key(key: str, *, strict: bool = False) -> bool:
    """Whether every value under ``key`` is replaced whole, whatever it looks like.

    Secrets (passwords, tokens, card data) are sensitive at every level; personal fields
    (name, address, phone, e-mail, birth date, IP) only in strict (hipaa) mode, because
    for other levels they are often legitimate analytics dimensions.
    """
    mask = _key_mask(key)
    return bool(mask & _SECRET or (strict and mask & _PERSONAL))


# ---------------------------------------------------------------------------------------
# Patterns inside text
# ---------------------------------------------------------------------------------------

# One scan that every rule needs to pass; the common string has none of these.
_TRIGGER: Final = re.compile(r"[@0-9%=]")
_TRIGGER_STRICT: Final = re.compile(r"[@0-9%=:]")
_HAS_DIGIT: Final = re.compile(r"[0-9]")

# Every numeric rule needs at least 8 digits (an E.164 number; SSNs have 9, cards 13+),
# strict mode's IPv4 rule at least 4. Possessive, so a long digit-poor string fails in
# linear time. Most strings with digits (element ids, prices, dates) stop here.
_EIGHT_DIGITS: Final = re.compile(r"(?:[^0-9]*+[0-9]){8}")
_FOUR_DIGITS: Final = re.compile(r"(?:[^0-9]*+[0-9]){4}")
#: Whole strings no rule ever redacts (canonical UUIDs, ISO-8601 dates and timestamps),
#: though they are full of digits: every event carries a few, so they skip the scan.
_INERT: Final = re.compile(
    r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)

# ASCII [0-9], never \d: \d matches other scripts' digits, which Luhn cannot weigh.
_CARD_RUN: Final = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,}")
_CARD_SEPARATOR: Final = re.compile(r"([ -])")
_LUHN_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)

_SSN_OR_PHONE: Final = re.compile(
    r"""
    (?P<ssn>
        (?<![\w-])
        (?!000|666|9[0-9]{2})[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}
        (?![\w]|-[0-9])
    )
  | (?<![\w.+-])
    (?:
        (?P<e164>\+[1-9][0-9]{7,14})
      | (?P<intl>
            \+[1-9][0-9]{0,2}                              # country code
            (?:[ .-]?\([0-9]{1,4}\)[ .-]?[0-9]{1,10})?     # optional (area code)
            (?:[ .-][0-9]{1,10}){1,6}                      # separated groups
        )
      | (?P<nanp>
            (?:1[ .-])?
            (?:\([2-9][0-9]{2}\)\ ?|[2-9][0-9]{2}[ .-])
            [2-9][0-9]{2}[ .-][0-9]{4}
        )
    )
    (?![\w]|[.-][0-9])
    """,
    re.VERBOSE,
)

_EMAIL: Final = re.compile(r"(?<![\w.%+-])[\w.%+-]+@(?:[\w-]+\.)+(?P<tld>[^\W\d_]{2,63})(?![\w-])")

#: ``logo@2x.png`` is an asset name, not an address: no real e-mail ends in these.
_FILE_EXTENSIONS: Final = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "bmp", "css", "js", "mjs"}
    | {"json", "map", "html", "htm", "pdf", "mp4", "webm", "woff", "woff2", "ttf"}
)

_IPV4: Final = re.compile(
    r"(?<![\w.:])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?![\w]|\.[0-9])"
)
_IPV6_CANDIDATE: Final = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,7}"
    r"(?::?(?:[0-9]{1,3}\.){3}[0-9]{1,3})?(?:%[0-9A-Za-z]+)?(?![\w:]|\.[0-9A-Za-z])"
)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        total += _LUHN_DOUBLED[value] if position & 1 else value
    return total % 10 == 0


def _is_card_number(digits: str) -> bool:
    """Luhn plus the issuer rule that keeps epoch timestamps and zero padding apart.

    No card starts with 0, and the only cards starting with 1 are 15 digits (UATP), while
    millisecond/microsecond/nanosecond epochs are 13/16/19 digits starting with 1.
    """
    if not 13 <= len(digits) <= 19 or digits[0] == "0":
        return False
    if digits[0] == "1" and len(digits) != 15:
        return False
    return _luhn_ok(digits)


def _longest_card_window(groups: list[str], start: int) -> int | None:
    """Index of the last group of the longest card number beginning at ``groups[start]``.

    A card is one unbroken 13-19 digit group, or several groups of 3-6 digits (how cards
    are printed); UUID-like 8/12-digit groups never combine into one. Each start looks at
    most 19 digits ahead, so a run costs linear time however long it is.
    """
    first = groups[start]
    best = start if _is_card_number(first) else None
    if not 3 <= len(first) <= 6:
        return best
    digits = first
    for end in range(start + 1, len(groups)):
        group = groups[end]
        if not 3 <= len(group) <= 6:
            break
        digits += group
        if len(digits) > 19:
            break
        if len(digits) >= 13 and _is_card_number(digits):
            best = end
    return best


def _redact_card_run(match: re.Match[str]) -> str:
    """Redact the card numbers inside a run of digit groups, keeping the rest of the run.

    A run can hold a card next to other numbers (``4111 1111 1111 1111 2025``), so card
    windows are searched group by group rather than judging the run as a whole.
    """
    parts = _CARD_SEPARATOR.split(match.group())
    groups, separators = parts[0::2], parts[1::2]
    hidden = [False] * len(groups)
    start = 0
    while start < len(groups):
        end = _longest_card_window(groups, start)
        if end is None:
            start += 1
            continue
        hidden[start : end + 1] = [True] * (end + 1 - start)
        start = end + 1
    if not any(hidden):
        return match.group()
    pieces: list[str] = []
    for index, group in enumerate(groups):
        if index and not (hidden[index] and hidden[index - 1]):
            pieces.append(separators[index - 1])
        if not hidden[index]:
            pieces.append(group)
        elif index == 0 or not hidden[index - 1]:
            pieces.append(REDACTED)
    return "".join(pieces)


def _redact_ssn_or_phone(match: re.Match[str]) -> str:
    intl = match.group("intl")
    if intl is not None and not 8 <= sum(c.isdigit() for c in intl) <= 15:
        return match.group()  # "+12.50" is a price, not a phone number
    return REDACTED


def _redact_email(match: re.Match[str]) -> str:
    if match.group("tld").lower() in _FILE_EXTENSIONS:
        return match.group()
    return REDACTED


def _redact_ipv6(match: re.Match[str]) -> str:
    candidate = match.group()
    if not any(c.isalnum() for c in candidate):
        return candidate
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return candidate  # "12:00:00" and MAC-like strings are not addresses
    return REDACTED


def _redact_once(text: str, strict: bool) -> str:
    has_digit = _HAS_DIGIT.search(text) is not None
    if has_digit:
        text = _CARD_RUN.sub(_redact_card_run, text)
        text = _SSN_OR_PHONE.sub(_redact_ssn_or_phone, text)
    if "@" in text:
        text = _EMAIL.sub(_redact_email, text)
    if strict:
        if ":" in text:
            text = _IPV6_CANDIDATE.sub(_redact_ipv6, text)
        if has_digit:
            text = _IPV4.sub(REDACTED, text)
    return text


def _may_hold_pii(text: str, strict: bool) -> bool:
    """The cheap second gate: can any rule match at all? (Digit counts, known shapes.)"""
    if "@" in text:
        return True
    if _INERT.fullmatch(text):
        return False
    if strict and ":" in text:
        return True  # IPv6 candidates need few digits ("fe80::1")
    return (_FOUR_DIGITS if strict else _EIGHT_DIGITS).match(text) is not None


def redact_text(text: str, *, strict: bool = False) -> str:
    """Replace e-mails, card numbers, SSNs and phone numbers inside free text, in place.

    Only the matching substring is replaced, so ``"mail a@b.com now"`` keeps its words;
    strict mode also replaces IPv4/IPv6 addresses.
    """
    if len(text) < (3 if strict else 6):
        return text
    if not (_TRIGGER_STRICT if strict else _TRIGGER).search(text):
        return text
    if not _may_hold_pii(text, strict):
        return text
    return _redact_passes(text, strict)


def _redact_passes(text: str, strict: bool) -> str:
    for _ in range(_MAX_PASSES):
        redacted = _redact_once(text, strict)
        if redacted == text:
            break
        text = redacted
    return text


# ---------------------------------------------------------------------------------------
# URLs
# ---------------------------------------------------------------------------------------

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _redact_encoded(raw: str, strict: bool, *, plus_is_space: bool) -> str:
    """Redact a URL component as written, then check what it says once decoded.

    Matches visible as written are replaced in place. PII that only appears after
    percent-decoding (``a%40b.com``) replaces the whole component: re-encoding a partly
    redacted value could manufacture new digit runs out of ``%20`` escapes.
    """
    text = redact_text(raw, strict=strict)
    if "%" in text or (plus_is_space and "+" in text):
        decoded = unquote_plus(text) if plus_is_space else unquote(text)
        if decoded != text and redact_text(decoded, strict=strict) != decoded:
            return REDACTED
    return text


def _redact_path(path: str, strict: bool) -> str:
    path = redact_text(path, strict=strict)
    if "%" not in path:
        return path
    return "/".join(
        _redact_encoded(segment, strict, plus_is_space=False) if "%" in segment else segment
        for segment in path.split("/")
    )


def _redact_param(param: str, strict: bool) -> str:
    key, equals, value = param.partition("=")
    if not equals:
        return _redact_encoded(param, strict, plus_is_space=True)
    safe_key = _redact_encoded(key, strict, plus_is_space=True)
    if is_sensitive_key(unquote_plus(key), strict=strict):
        return f"{safe_key}={REDACTED}"
    return f"{safe_key}={_redact_encoded(value, strict, plus_is_space=True)}"


def _redact_query(query: str, strict: bool) -> str:
    return "&".join(_redact_param(param, strict) if param else param for param in query.split("&"))


def _redact_fragment(fragment: str, strict: bool) -> str:
    """Fragments carry OAuth tokens (``#access_token=``) and SPA routes (``#/p?q=1``)."""
    route, question, query = fragment.partition("?")
    if question:
        return f"{_redact_path(route, strict)}?{_redact_query(query, strict)}"
    if "=" in fragment:
        return _redact_query(fragment, strict)
    return _redact_encoded(fragment, strict, plus_is_space=False)


def _redact_base(base: str, strict: bool) -> str:
    """Scheme, authority and path. Credentials in the authority are dropped entirely."""
    scheme = _SCHEME.match(base)
    prefix_end = scheme.end() if scheme else (2 if base.startswith("//") else 0)
    if not prefix_end:
        return _redact_path(base, strict)
    slash = base.find("/", prefix_end)
    authority_end = len(base) if slash < 0 else slash
    authority = base[prefix_end:authority_end]
    userinfo, at, host = authority.rpartition("@")
    credentials = f"{REDACTED}@" if userinfo else at
    safe_authority = credentials + redact_text(host, strict=strict)
    return base[:prefix_end] + safe_authority + _redact_path(base[authority_end:], strict)


def redact_url(url: str, *, strict: bool = False) -> str:
    """Redact PII in a URL while keeping it a usable URL for analytics.

    Values of sensitive query (and fragment) parameters become ``[REDACTED]``; e-mails,
    card numbers, SSNs and phone numbers are replaced wherever they appear (path, query,
    fragment, even percent-encoded); ``user:password@`` credentials are dropped. Everything
    else, including the encoding of untouched parameters, is kept byte for byte.
    """
    if not (_TRIGGER_STRICT if strict else _TRIGGER).search(url):
        return url
    rest, hash_mark, fragment = url.partition("#")
    base, question, query = rest.partition("?")
    out = _redact_base(base, strict)
    if question:
        out += "?" + _redact_query(query, strict)
    if hash_mark:
        out += "#" + _redact_fragment(fragment, strict)
    return out


# ---------------------------------------------------------------------------------------
# Structures
# ---------------------------------------------------------------------------------------


def _looks_like_url(text: str) -> bool:
    """Strings that need URL-aware redaction: parameters, escapes or credentials."""
    if "%" in text:
        return True
    if "=" in text and ("?" in text or "#" in text):
        return True
    return "@" in text and "://" in text


def _redact_string(text: str, strict: bool) -> str:
    if not (_TRIGGER_STRICT if strict else _TRIGGER).search(text):
        return text
    return _redact_triggered(text, strict)


#: Redacted URLs per mode: parsing a URL is the dearest step of redaction, and the same
#: page URLs arrive over and over. Emptied when full, so it stays bounded.
_URL_CACHE: Final[dict[bool, dict[str, str]]] = {False: {}, True: {}}
_URL_CACHE_SIZE: Final = 8192
_CACHEABLE_URL_LENGTH: Final = 1024


def _redact_triggered(text: str, strict: bool) -> str:
    """``_redact_string`` for a string that passed the trigger scan."""
    if _looks_like_url(text):
        if len(text) > _CACHEABLE_URL_LENGTH:
            return redact_url(text, strict=strict)
        cache = _URL_CACHE[strict]
        redacted = cache.get(text)
        if redacted is None:
            if len(cache) >= _URL_CACHE_SIZE:
                cache.clear()
            redacted = cache[text] = redact_url(text, strict=strict)
        return redacted
    if len(text) < (3 if strict else 6) or not _may_hold_pii(text, strict):
        return text
    return _redact_passes(text, strict)


#: Key plans per mode (normal, strict): a plain dict, because one lookup per key of every
#: event is the hottest operation of redaction. It stops growing at the size limit, so a
#: flood of unique keys costs the uncached path, not memory.
_KEY_PLANS: Final[dict[bool, dict[str, tuple[str, bool]]]] = {False: {}, True: {}}
_KEY_PLAN_CACHE_SIZE: Final = 4096


def _key_plan(key: str, strict: bool) -> tuple[str, bool]:
    """The key to store (keys can hold e-mails too) and whether its value is replaced whole."""
    return redact_text(key, strict=strict), is_sensitive_key(key, strict=strict)


def _redact_mapping(
    data: dict[object, object], strict: bool, depth: int, verified: frozenset[str] = frozenset()
) -> dict[object, object]:
    # The hot loop of redaction (every key of every event): the common cases (a short key,
    # a string without trigger characters, a number) are handled inline, without calls.
    out: dict[object, object] = {}
    trigger = (_TRIGGER_STRICT if strict else _TRIGGER).search
    plans = _KEY_PLANS[strict]
    for key, value in data.items():
        if key in verified:
            out[key] = value
            continue
        if type(key) is str:
            plan = plans.get(key)
            if plan is None:
                plan = _key_plan(key, strict)
                if len(plans) < _KEY_PLAN_CACHE_SIZE and len(key) <= _CACHEABLE_KEY_LENGTH:
                    plans[key] = plan
            safe_key, sensitive = plan
            if sensitive:
                out[safe_key] = REDACTED
                continue
        else:
            safe_key = key
        kind = type(value)
        if kind is str:
            out[safe_key] = _redact_triggered(value, strict) if trigger(value) else value  # type: ignore[arg-type]
        elif kind is int or kind is float or kind is bool or value is None:
            out[safe_key] = value
        else:
            out[safe_key] = _walk(value, strict, depth)
    return out


def _walk(value: object, strict: bool, depth: int) -> object:
    if isinstance(value, str):
        return _redact_string(value, strict)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise NestingTooDeep(f"data nested deeper than {MAX_DEPTH} levels")
        return _redact_mapping(value, strict, depth + 1)
    if isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            raise NestingTooDeep(f"data nested deeper than {MAX_DEPTH} levels")
        items = [_walk(item, strict, depth + 1) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def redact_event_data(
    data: object, *, strict: bool = False, verified: frozenset[str] = frozenset()
) -> object:
    """Return a redacted copy of a JSON-like event payload; the input is never mutated.

    ``verified`` names top-level keys whose values the caller has already validated into
    shapes no rule redacts (the collector's parsed event id, timestamp and authorized
    site): they are copied as they are, which saves scanning the digit-rich ones.

    Values under sensitive keys become ``[REDACTED]`` whatever their type (a CVV sent as an
    int is still a CVV); other strings are scanned for PII; other scalars pass unchanged.
    ``strict`` is the hipaa level: personal-field keys and IP addresses are redacted too.
    Raises ``NestingTooDeep`` past ``MAX_DEPTH`` levels.
    """
    if verified and type(data) is dict:
        return _redact_mapping(data, strict, 1, verified)
    return _walk(data, strict, 0)


def redact_value(value: object, *, strict: bool = False) -> object:
    """Redact a single value that is not under any key (a list item, a bare string)."""
    return _walk(value, strict, 0)
