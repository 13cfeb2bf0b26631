"""Where a visit came from, server-side: a referrer class and the UTM parameters.

The tracker classifies pageviews in the browser; other senders (servers, SDKs, older
pixels) do not, so the collector classifies every event with the same rules and takes UTM
parameters from the page URL when the sender did not send them. Events from any sender are
then comparable. Pure and cached: inner events of a batch share their page and referrer.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final, NamedTuple
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "REFERRER_CLASSES",
    "UTM_KEYS",
    "Attribution",
    "attribute",
    "classify_referrer",
    "sent_utm",
]

#: Every class, in the order they are tested.
REFERRER_CLASSES: Final = ("paid", "email", "internal", "social", "search", "referral", "direct")
UTM_KEYS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
#: Longest stored UTM value, as in the tracker.
UTM_MAX_LENGTH: Final = 200

#: Click ids that ad networks append to landing-page URLs.
_PAID_CLICK_IDS: Final = frozenset({"gclid", "gbraid", "wbraid", "dclid", "msclkid", "fbclid"})
_PAID_MEDIUM: Final = re.compile(r"^(?:cpc|ppc|cpm|cpv|paid)")
_EMAIL_MEDIUM: Final = re.compile(r"e-?mail|newsletter")
_EMAIL_HOSTS: Final = frozenset(
    {
        "mail.google.com",
        "outlook.live.com",
        "outlook.office.com",
        "outlook.office365.com",
        "mail.yahoo.com",
        "mail.proton.me",
        "mail.aol.com",
        "mail.yandex.ru",
        "webmail.gmx.net",
        "email.t-online.de",
    }
)
#: Registrable names of social networks (any TLD, any subdomain) and exact short hosts.
_SOCIAL_NAMES: Final = re.compile(
    r"(?:^|\.)(?:facebook|instagram|twitter|linkedin|reddit|pinterest|youtube|tiktok|tumblr"
    r"|quora|threads|mastodon|snapchat|whatsapp|telegram|discord|weibo|vk)\.[a-z.]+$"
)
_SOCIAL_HOSTS: Final = frozenset(
    {"t.co", "x.com", "lnkd.in", "t.me", "bsky.app", "news.ycombinator.com", "m.me", "fb.me"}
)
_SEARCH_NAMES: Final = re.compile(
    r"(?:^|\.)(?:google|bing|yahoo|duckduckgo|baidu|yandex|ecosia|qwant|startpage|naver"
    r"|seznam|sogou|so|ask|aol|kagi)\.[a-z.]+$"
)
_SEARCH_HOSTS: Final = frozenset({"search.brave.com", "search.yahoo.com", "perplexity.ai"})


class Attribution(NamedTuple):
    """What an event's page and referrer say about its traffic source."""

    referrer_class: str
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_term: str | None
    utm_content: str | None


@lru_cache(maxsize=20_000)
def attribute(
    url: str | None,
    referrer: str | None,
    site_host: str,
    sent: tuple[str | None, ...] | None,
) -> Attribution:
    """Classify one event; ``sent`` is the sender's own UTM values (``UTM_KEYS`` order),
    ``None`` when it sent none, in which case they are read from ``url``."""
    query = _query(url)
    utm = sent if sent is not None else tuple(_utm_value(query.get(key)) for key in UTM_KEYS)
    return Attribution(classify_referrer(referrer, url, site_host, utm, query), *utm)


def classify_referrer(
    referrer: str | None,
    url: str | None,
    site_host: str,
    utm: tuple[str | None, ...],
    query: dict[str, str],
) -> str:
    """One of ``REFERRER_CLASSES``: campaign tags first, then the referring host."""
    medium = (utm[1] or "").lower()
    host = _host(referrer)
    if _PAID_MEDIUM.match(medium) or not _PAID_CLICK_IDS.isdisjoint(query):
        return "paid"
    if _EMAIL_MEDIUM.search(medium) or host in _EMAIL_HOSTS:
        return "email"
    if host and _same_site(host, _host(url) or site_host, site_host):
        return "internal"
    if medium == "social" or host in _SOCIAL_HOSTS or (host and _SOCIAL_NAMES.search(host)):
        return "social"
    if medium == "organic" or host in _SEARCH_HOSTS or (host and _SEARCH_NAMES.search(host)):
        return "search"
    if host or utm[0]:
        return "referral"
    return "direct"


def _same_site(host: str, page_host: str, site_host: str) -> bool:
    """The same host, or one a subdomain of the other (``www.`` and bare names included)."""
    return any(
        host == own or host.endswith(f".{own}") or own.endswith(f".{host}")
        for own in (page_host, site_host)
        if own
    )


def _host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname
    except ValueError:
        return None
    return host.removeprefix("www.") if host else None


def _query(url: str | None) -> dict[str, str]:
    if not url or "?" not in url:
        return {}
    try:
        return dict(parse_qsl(urlsplit(url).query))
    except ValueError:
        return {}


def _utm_value(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:UTM_MAX_LENGTH]


def sent_utm(attribution: object) -> tuple[str | None, ...] | None:
    """The sender's ``attribution.utmParams`` as a cache-friendly tuple, or ``None``."""
    if not isinstance(attribution, dict):
        return None
    params = attribution.get("utmParams")
    if not isinstance(params, dict) or not params:
        return None
    return tuple(_utm_value(params.get(key)) for key in UTM_KEYS)
