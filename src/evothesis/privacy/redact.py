"""PII redaction for event data and URLs: pure functions, no I/O.

This runs on the hot path for every stored event, so the design is "cheap until proven
suspicious": a string is only handed to the pattern regexes when one C-level scan finds a
character that every pattern needs (a digit, ``@``, ``%``, ``=``; ``:`` in strict mode).
Most strings in analytics payloads (event types, element names, CSS selectors) have none.
Numbers cost one comparison: only those of 11 digits or more can be a card or a phone
number sent as a JSON number, and only those are looked at digit by digit.

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
    "socialsecurity",
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
        # The same words run together in lower case, where no camel hump splits them.
        "emailaddress",
        "phonenumber",
        "phoneno",
        "mobilenumber",
        "mobilephone",
        "cellphone",
        "telephonenumber",
        "faxnumber",
        "streetaddress",
        "homeaddress",
        "mailingaddress",
        "postaladdress",
        "postalcode",
        "dateofbirth",
        "ipaddr",
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

#: Space-like characters that people, word processors and locale-aware formatters put
#: between digit groups: space, no-break space, figure space, thin space, narrow no-break.
_SPACE: Final = "[ \u00a0\u2007\u2009\u202f]"

# The numeric rules need many digits in one stretch of digits and separators with no
# letter in between: 9 (SSNs; national phone numbers; cards have 13+), or 8 after a
# ``+`` or ``00`` (E.164). Most strings with digits (element ids, prices, dates) have
# fewer digits in all, which the anchored count finds fastest; the stretch search then
# lets through screen sizes and the version numbers of user agents: a dot before a lone
# digit (``126.0.6478.122``) ends a stretch, as no rule without ``+`` has one-digit groups.
# Possessive: linear time.
_EIGHT_DIGITS: Final = re.compile(r"(?:[^0-9]*+[0-9]){8}")
#: ``00`` then a country code, not inside a longer number. Begins with its literal (the
#: lookbehind comes after it), which lets the regex engine skip ahead to each "00".
_DIALLING_ABROAD: Final = re.compile(r"00(?<![0-9]00)[1-9]")
_EIGHT_DIGIT_STRETCH: Final = re.compile(r"[0-9](?:[^0-9A-Za-z]{0,3}+[0-9]){7}")
_NINE_DIGIT_STRETCH: Final = re.compile(r"[0-9](?:(?!\.[0-9](?![0-9]))[^0-9A-Za-z]{0,3}+[0-9]){8}")
#: Strict mode's IPv4 rule needs four dotted groups.
_DOTTED_QUAD: Final = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
#: Whole strings no rule ever redacts (canonical UUIDs, ISO-8601 dates and timestamps),
#: though they are full of digits: every event carries a few, so they skip the scan.
_INERT: Final = re.compile(
    r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)

#: An id inside longer text, as a whole token (no letter or digit around it): a canonical
#: UUID, or a lower-case hex digest of 16 or more digits and letters with both in it (an
#: MD5 or SHA, an SDK's message id); no one writes a phone or card number that way.
_EMBEDDED_ID: Final = re.compile(
    r"(?<![0-9A-Za-z])("
    r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
    r"|(?=[0-9a-f]*[a-f])(?=[a-f]*[0-9])[0-9a-f]{16,}"
    r")(?![0-9A-Za-z])"
)

# ASCII [0-9], never \d: \d matches other scripts' digits, which Luhn cannot weigh.
# Card groups are written apart with spaces (one or two), or a dash or dot that spaces may
# surround ("4111 - 1111"). Dots join version numbers and IPv4 addresses into runs too,
# but those have too few digits, and their groups are too short, to form a card.
_CARD_RUN: Final = re.compile(
    rf"(?<![0-9])[0-9](?:(?:{_SPACE}?[.-]{_SPACE}?|{_SPACE}{{1,2}})?[0-9]){{12,}}"
)
_CARD_SEPARATOR: Final = re.compile(r"([^0-9]+)")
_LUHN_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)

#: Every assigned ITU country calling code (E.164), for numbers dialled with the ``00``
#: international prefix, which zero-padded identifiers would otherwise resemble.
_COUNTRY_CODE_LIST: Final = """
    1 7 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61
    62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98 211 212 213 216 218 220 221 222 223 224
    225 226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246
    247 248 249 250 251 252 253 254 255 256 257 258 260 261 262 263 264 265 266 267 268 269
    290 291 297 298 299 350 351 352 353 354 355 356 357 358 359 370 371 372 373 374 375 376
    377 378 380 381 382 383 385 386 387 389 420 421 423 500 501 502 503 504 505 506 507 508
    509 590 591 592 593 594 595 596 597 598 599 670 672 673 674 675 676 677 678 679 680 681
    682 683 685 686 687 688 689 690 691 692 800 808 850 852 853 855 856 870 878 880 881 882
    883 886 888 960 961 962 963 964 965 966 967 968 970 971 972 973 974 975 976 977 979 992
    993 994 995 996 998
    """
_COUNTRY_CODES: Final = frozenset(_COUNTRY_CODE_LIST.split())

_COUNTRY_AFTER_00: Final = re.compile(r"00([0-9]+)")
_PHONE_SEPARATOR: Final = rf"(?:[.-]|{_SPACE})"

#: A number that starts like a trunk or international prefix (0, 00) right after another
#: digit group is the middle of something else, such as a card (``4111 0111 1111 1111``):
#: not after a digit and any separator a card may have.
_NOT_IN_DIGIT_GROUPS: Final = (
    rf"(?<![0-9][.,-])(?<![0-9]{_SPACE})(?<![0-9]{_SPACE}{_SPACE})"
    rf"(?<![0-9][.-]{_SPACE})(?<![0-9]{_SPACE}[.-]{_SPACE})"
)

_SSN_OR_PHONE: Final = re.compile(
    rf"""
    (?P<ssn>
        (?<![\w-])(?<![0-9][.,])
        (?!000|666|9[0-9]{{2}})[0-9]{{3}}
        (?P<ssn_separator>[.-]|{_SPACE})            # the same separator both times
        (?!00)[0-9]{{2}}(?P=ssn_separator)(?!0000)[0-9]{{4}}
        (?![\w]|[.-][0-9]|(?P=ssn_separator)[0-9])     # not the start of a longer number
    )
  | (?<![\w.+-])
    (?:
        (?P<e164>\+[1-9][0-9]{{7,14}})
      | (?P<intl>
            (?:\+|{_NOT_IN_DIGIT_GROUPS}00)[1-9][0-9]{{0,2}}                 # country code
            (?:{_PHONE_SEPARATOR}?\([0-9]{{1,4}}\){_PHONE_SEPARATOR}?[0-9]{{1,10}})?  # (area)
            (?:{_PHONE_SEPARATOR}[0-9]{{1,10}}){{1,6}}                      # groups
        )
      | (?P<nanp>
            (?:1{_PHONE_SEPARATOR})?
            (?:\([2-9][0-9]{{2}}\){_SPACE}?|[2-9][0-9]{{2}}{_PHONE_SEPARATOR})
            [2-9][0-9]{{2}}{_PHONE_SEPARATOR}[0-9]{{4}}
        )
      | {_NOT_IN_DIGIT_GROUPS}
        (?P<national>                        # a trunk 0 before the area code
            0[1-9][0-9]{{0,4}}(?P<national_separator>[.-]|{_SPACE})[0-9]{{2,8}}
            (?:(?P=national_separator)[0-9]{{2,8}}){{0,3}}      # 030 1234 5678
          | \(0[1-9][0-9]{{0,4}}\){_SPACE}?[0-9]{{2,8}}         # (020) 7946 0958
            (?:(?P<area_separator>[.-]|{_SPACE})[0-9]{{2,8}}
               (?:(?P=area_separator)[0-9]{{2,8}}){{0,2}})?
        )
    )
    (?![\w]|[.-][0-9])
    """,
    re.VERBOSE,
)

#: A bare run of nine digits is an SSN only when the text names it; without the word it is
#: far more often an order number, a ZIP+4 code or a price in cents. The word is kept.
_SSN_NAMED: Final = re.compile(
    r"(?P<word>\b(?:ssn|social[\W_]{0,3}security|soc\.?[\W_]{0,2}sec)\b[^0-9]{0,20}+)"
    r"[0-9]{9}(?![0-9])",
    re.IGNORECASE,
)

#: A North American number with its country code: 1, an area code and an exchange that
#: never start with 0 or 1, and a line number.
_NANP_DIGITS: Final = re.compile(r"1[2-9][0-9]{2}[2-9][0-9]{6}")

#: Mobile numbers without their ``+``, written as ``country code:first digits of the
#: national number=total digits`` (one length or a span), from the mobile numbering plans
#: of libphonenumber's metadata (9.0.43); only plans of 11-15 digits in all are listed,
#: and North America (1) is ``_NANP_DIGITS``. See ``_is_bare_phone`` for why mobile only.
_MOBILE_PLANS: Final = """
    7:79=11 20:1=12 27:1-8=11 30:69=12 31:6=11,9=13 32:4=11 33:67=11 34:679=11 36:2357=11
    39:3=11-12,4=12 40:7=11 41:67=11 43:6=11-15 44:7=12 46:7=11 48:245678=11 49:1=12-13
    51:9=11 52:2-9=12 54:6=12,9=13 55:1-9=12-13 56:2-9=11 57:39=12 58:4=12 60:1=11-12
    61:4=11 62:8=11-14 63:89=12 64:2=11-12 66:1689=11 81:6-9=12 82:1=11-12 84:135789=11
    86:1=13 90:5=12 91:16789=12 92:3=12 93:7=11 94:7=11 95:9=11-12 98:9=12 211:19=12
    212:67=12 213:5-7=12 216:23459=11 218:9=12 220:8=12 221:7=12 222:2-4=11 223:256789=11
    224:6=12 225:0=13 226:04567=11 227:2789=11 228:79=11 229:0=13 230:57=11 231:234578=12
    232:236789=11 233:25=12 234:7-9=13 235:36789=11 236:7=11 237:26=12 240:25=12 241:067=11
    242:0=12 243:89=12 244:9=12 245:9=12 249:19=12 250:7=12 251:7-9=12
    252:12=11,348=12,679=11-12 253:7=11 254:17=12 255:67=12 256:7=12 257:267=11 258:8=12
    260:579=12 261:3=12 262:67=12 263:7=12 264:68=12 265:123789=12 266:56=11 267:7=11
    268:7=11 350:56=11 351:169=12 352:6=12 353:8=12 354:3=12 355:6=12 356:79=11 357:9=11
    358:45=11-13 359:4=11,89=12 370:6=11 371:2=11 372:58=11 373:5-7=11 374:345789=11
    375:2-4=12 376:6=12 377:34=11,67=12 378:6=11 380:35679=12 381:6=11-13 382:6=11 383:4=11
    385:9=11-12 386:3-7=11 387:6=11-12 389:7=11 420:67=12 421:9=12 423:6=12 502:3458=11
    503:5-7=11 504:3789=11 505:5-8=11 506:35678=11 507:6=11 508:7=12 509:3-5=11 590:67=12
    591:5-7=11 593:9=12 594:67=12 595:9=12 596:67=12 598:9=11 599:9=11 670:7=11 675:78=11
    685:8=13 686:67=11 689:8=11 850:1=13 852:4-9=11 853:6=11 855:16789=11-12,2-5=12
    856:2=13,3=12 870:356=12,7=12-15 880:1346=13 881:0123789=12,6=12-13
    882:3=12-15,4=11,5=13-15 886:49=12 961:78=11 962:47=12 963:59=12 964:7=13 965:4569=11
    966:5=12 967:7=12 968:179=11 970:5=12 971:5=12 972:5=12 973:36=11 974:3567=11 975:178=11
    976:5-9=11 977:9=13 992:0-9=12 993:67=11 994:1345679=12 995:57=12 996:2356789=12
    998:2356789=12
"""


def _parse_mobile_plans(plans: str) -> dict[str, range]:
    """``_MOBILE_PLANS`` as country code + first national digit -> total digit counts.

    Country codes are prefix-free, so each number has at most one such key.
    """
    lengths: dict[str, range] = {}
    for entry in plans.split():
        country, _, rules = entry.partition(":")
        for rule in rules.split(","):
            digits, _, span = rule.partition("=")
            low, _, high = span.partition("-")
            if len(digits) == 3 and digits[1] == "-":
                digits = "".join(map(str, range(int(digits[0]), int(digits[2]) + 1)))
            for digit in digits:
                lengths[country + digit] = range(int(low), int(high or low) + 1)
    return lengths


_MOBILE_LENGTHS: Final = _parse_mobile_plans(_MOBILE_PLANS)

#: Numbers below this (ten digits or fewer) are never PII on their own: no card is that
#: short, and a ten-digit number without a country code is far more often epoch seconds
#: or a 32-bit identifier than a phone number. Keeps the check of every int one compare.
_LONG_NUMBER: Final = 10**10
_TOO_LONG_NUMBER: Final = 10**19

#: The top-level domain must end where its letters end; a digit or ``_`` glued after it
#: (``olga@example.com_2``) does not make the address any less an address.
_EMAIL: Final = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@(?:[\w-]+\.)+(?P<tld>[^\W\d_]{2,63})(?![^\W\d_]|-)"
)

#: ``logo@2x.png`` is an asset name, not an address: no real e-mail ends in these.
_FILE_EXTENSIONS: Final = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "ico", "bmp", "css", "js", "mjs"}
    | {"json", "map", "html", "htm", "pdf", "mp4", "webm", "woff", "woff2", "ttf"}
)

_IPV4: Final = re.compile(
    r"(?<![\w.:])(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?![\w]|\.[0-9])"
)
#: A user agent's product token (``Chrome/126.0.0.0``, ``YaBrowser/24.6.2.123``): a version
#: in an IPv4 address's shape. Its name starts the text or follows a space, ``(``, ``[``,
#: ``;`` or ``,``, and has no dot, so ``/ip/10.0.0.1`` and ``e.com/10.0.0.1`` stay addresses.
_PRODUCT_TOKEN: Final = re.compile(r"(?:^|[\s(\[;,])[A-Za-z][\w-]*/\Z")
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


def _is_bare_phone(digits: str) -> bool:
    """Whether a run of digits alone (a JSON number, a form field) is a phone number.

    Without a ``+`` or separators nothing but the digits tells a phone number from an
    identifier, and most 11-15-digit sequences fit some country's numbering plan, so only
    the plans a form field most likely holds count: North American numbers with their 1,
    and mobile numbers with their country code (``4915112345678``). Landlines written
    this way (``442079460958``), and numbers without a country code, are kept.
    """
    if not 11 <= len(digits) <= 15:
        return False
    if digits[0] == "1":
        return len(digits) == 11 and _NANP_DIGITS.fullmatch(digits) is not None
    for end in (2, 3, 4):
        lengths = _MOBILE_LENGTHS.get(digits[:end])
        if lengths is not None:
            return len(digits) in lengths
    return False


def _is_pii_number(digits: str) -> bool:
    """The rule for a value that is nothing but ASCII digits: a card or a bare phone."""
    return _is_card_number(digits) or _is_bare_phone(digits)


def _redact_number(value: int | float) -> object:
    """A JSON number of 11 digits or more: the digit rule of ``_is_pii_number``.

    A float counts only when it is whole (``4111111111111111.0``); the sign is ignored.
    Numbers of 20 digits or more are neither (nor turned into text, which Python limits).
    """
    if not -_TOO_LONG_NUMBER < value < _TOO_LONG_NUMBER:
        return value
    if type(value) is float:
        if not value.is_integer():
            return value
        digits = str(abs(int(value)))
    else:
        digits = str(abs(value))
    return REDACTED if _is_pii_number(digits) else value


def _redact_ssn_or_phone(match: re.Match[str]) -> str:
    intl = match.group("intl")
    if intl is not None:
        # E.164 counts neither the "00" nor the trunk 0 of "+49 (0)30".
        digits = sum(c.isdigit() for c in intl) - intl.count("(0)")
        if intl[0] == "0":
            # "00" dials abroad only when a real country code follows, set apart.
            country = _COUNTRY_AFTER_00.match(intl)
            if country is None or country.group(1) not in _COUNTRY_CODES:
                return match.group()
            digits -= 2
        if not 8 <= digits <= 15:
            return match.group()  # "+12.50" is a price, not a phone number
        return REDACTED
    national = match.group("national")
    if national is not None and not 9 <= sum(c.isdigit() for c in national) <= 12:
        return match.group()  # "01.07.2025" is a date
    return REDACTED


def _redact_named_ssn(match: re.Match[str]) -> str:
    return match.group("word") + REDACTED


def _redact_email(match: re.Match[str]) -> str:
    if match.group("tld").lower() in _FILE_EXTENSIONS:
        return match.group()
    return REDACTED


def _redact_ipv4(match: re.Match[str]) -> str:
    start = match.start()
    if _PRODUCT_TOKEN.search(match.string, max(0, start - 64), start) is not None:
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
    if text.isdigit() and text.isascii():
        # Only digits: decided like the JSON number it would be (a card or a bare phone).
        return REDACTED if _is_pii_number(text) else text
    # E-mails first: an address made of digits (14155552671@example.com) goes whole,
    # instead of a number rule breaking it into an "@example.com" no rule matches.
    if "@" in text:
        text = _EMAIL.sub(_redact_email, text)
    has_digit = _HAS_DIGIT.search(text) is not None
    if has_digit:
        # Phones before cards: the digits of "0044 20 7946 0958 ..." can hold a Luhn-valid
        # window, which would leave "0044" behind. (A written card's groups are 4 digits or
        # more, and the rules starting with 0 never start inside a run of digit groups.)
        text = _SSN_OR_PHONE.sub(_redact_ssn_or_phone, text)
        text = _CARD_RUN.sub(_redact_card_run, text)
        text = _SSN_NAMED.sub(_redact_named_ssn, text)
    if strict:
        if ":" in text:
            text = _IPV6_CANDIDATE.sub(_redact_ipv6, text)
        if has_digit:
            text = _IPV4.sub(_redact_ipv4, text)
    return text


def _may_hold_pii(text: str, strict: bool) -> bool:
    """The cheap second gate: can any rule match at all? (Digit stretches, known shapes.)"""
    if "@" in text:
        return True
    if _INERT.fullmatch(text):
        return False
    if strict and (":" in text or _DOTTED_QUAD.search(text) is not None):
        return True  # IPv6 candidates need few digits ("fe80::1"), IPv4 addresses 4
    if _EIGHT_DIGITS.match(text) is None:
        return False
    if "+" in text or ("00" in text and _DIALLING_ABROAD.search(text) is not None):
        return _EIGHT_DIGIT_STRETCH.search(text) is not None
    return _NINE_DIGIT_STRETCH.search(text) is not None


def redact_text(text: str, *, strict: bool = False) -> str:
    """Replace e-mails, card numbers, SSNs and phone numbers inside free text, in place.

    Only the matching substring is replaced, so ``"mail a@b.com now"`` keeps its words;
    strict mode also replaces IPv4/IPv6 addresses (not a user agent's versions, such as
    ``Chrome/126.0.0.0``). Text that is nothing but digits is judged like a JSON number.
    """
    if len(text) < (3 if strict else 6):
        return text
    if not (_TRIGGER_STRICT if strict else _TRIGGER).search(text):
        return text
    if not _may_hold_pii(text, strict):
        return text
    return _redact_around_ids(text, strict)


def _redact_around_ids(text: str, strict: bool) -> str:
    """Text that may hold PII (free text, or a payload's string value), redacted in place.

    Ids inside text (an SDK's "node-next-<ms>-<uuid>" or "ajs-next-<md5>" message ids, URL
    path segments): a UUID or a hex digest is inert as a UUID is on its own, and its digits
    must not read as a card or phone number. The text around it is judged on its own. (An
    "@" keeps the text whole: an e-mail address may be built around an id.)
    """
    if "@" not in text:
        parts = _EMBEDDED_ID.split(text)
        if len(parts) > 1:
            return "".join(
                part if index % 2 else redact_text(part, strict=strict)
                for index, part in enumerate(parts)
            )
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


#: Layers of percent-encoding looked through: a URL passed inside another URL's parameter
#: (a redirect, a login's ``next``) is encoded once more at every hop. A value still
#: changing after that many decodings is replaced rather than trusted.
_MAX_DECODINGS: Final = 3

#: Where the parameters of a URL carried inside a value begin and end.
_NESTED_FIELD: Final = re.compile(r"[?&#;]")


def _names_sensitive_key(text: str, strict: bool) -> bool:
    """Whether text carrying a query (``/cb?token=t``) gives a value to a sensitive key."""
    for field in _NESTED_FIELD.split(text):
        name, equals, _ = field.partition("=")
        if equals and is_sensitive_key(unquote_plus(name), strict=strict):
            return True
    return False


def _reveals_pii(text: str, strict: bool) -> bool:
    if redact_text(text, strict=strict) != text:
        return True
    return "=" in text and _names_sensitive_key(text, strict)


def _decoding_reveals_pii(text: str, strict: bool, *, plus_is_space: bool) -> bool:
    layer = text
    for _ in range(_MAX_DECODINGS):
        decoded = unquote_plus(layer) if plus_is_space else unquote(layer)
        if decoded == layer:
            return False
        if _reveals_pii(decoded, strict):
            return True
        layer = decoded
    return (unquote_plus(layer) if plus_is_space else unquote(layer)) != layer


def _redact_encoded(raw: str, strict: bool, *, plus_is_space: bool) -> str:
    """Redact a URL component as written, then check what it says once decoded.

    Matches visible as written are replaced in place. PII that only appears after
    percent-decoding (``a%40b.com``, ``a%2540b.com``), and a URL carried inside the
    component whose query names a sensitive key, replace the whole component: re-encoding
    a partly redacted value could manufacture new digit runs out of ``%20`` escapes.
    """
    text = redact_text(raw, strict=strict)
    if "=" in text and _names_sensitive_key(text, strict):
        return REDACTED
    if ("%" in text or (plus_is_space and "+" in text)) and _decoding_reveals_pii(
        text, strict, plus_is_space=plus_is_space
    ):
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
    if "=" in text and _names_sensitive_key(text, strict):
        return REDACTED  # a form body or cookie string: "user=olga&password=hunter2"
    if len(text) < (3 if strict else 6) or not _may_hold_pii(text, strict):
        return text
    return _redact_around_ids(text, strict)


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
        safe_key: object = key
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
        if type(value) is str:
            out[safe_key] = _redact_triggered(value, strict) if trigger(value) else value
        elif type(value) is int or type(value) is float:
            # One compare for the usual number; only 11+ digits can be a card or a phone.
            out[safe_key] = value if -_LONG_NUMBER < value < _LONG_NUMBER else _redact_number(value)
        elif type(value) is bool or value is None:
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
    if type(value) is int or type(value) is float:
        return value if -_LONG_NUMBER < value < _LONG_NUMBER else _redact_number(value)
    return value


def redact_event_data(
    data: object, *, strict: bool = False, verified: frozenset[str] = frozenset()
) -> object:
    """Return a redacted copy of a JSON-like event payload; the input is never mutated.

    ``verified`` names top-level keys whose values the caller has already validated into
    shapes no rule redacts (the collector's parsed event id, timestamp and authorized
    site): they are copied as they are, which saves scanning the digit-rich ones.

    Values under sensitive keys become ``[REDACTED]`` whatever their type (a CVV sent as an
    int is still a CVV); other strings are scanned for PII; a number becomes the string
    ``[REDACTED]`` when its digits are a card number or a phone number with its country
    code (``4111111111111111``, ``14155552671``); other scalars pass unchanged.
    ``strict`` is the hipaa level: personal-field keys and IP addresses are redacted too.
    Raises ``NestingTooDeep`` past ``MAX_DEPTH`` levels.
    """
    if verified and type(data) is dict:
        return _redact_mapping(data, strict, 1, verified)
    return _walk(data, strict, 0)


def redact_value(value: object, *, strict: bool = False) -> object:
    """Redact a single value that is not under any key (a list item, a bare string)."""
    return _walk(value, strict, 0)
