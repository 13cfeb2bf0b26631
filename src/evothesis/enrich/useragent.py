"""User-agent parsing: browser, version, OS, device type and bot kind, cached per string.

ua-parser (the maintained uap-core rules, compiled by its Rust accelerator) does the
parsing in tens of microseconds; bot detection (``bots``) makes a cache miss cost 0.4 to
1 ms here, and a hit is a dictionary lookup. User-agent strings repeat heavily (a site's
visitors share a few hundred), so nearly every request is a hit. The cache is bounded, so
random strings from a hostile sender cannot grow it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, NamedTuple

import ua_parser

from evothesis.domain import BotKind
from evothesis.enrich.bots import BotDetector

__all__ = ["DEVICE_TYPES", "UNKNOWN", "UserAgentInfo", "UserAgentParser"]

#: The device types stored in ``device_type``.
DEVICE_TYPES: Final = ("desktop", "mobile", "tablet", "bot")

#: User agents longer than this are parsed by their prefix: the rules never need more, and
#: regex work on megabyte headers is a cheap way to burn a collector's CPU.
MAX_PARSED_LENGTH: Final = 512

#: Any user agent: parsing one at construction readies both libraries.
_WARM_UP_AGENT: Final = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"

_MOBILE_OS: Final = frozenset({"Android", "iOS", "Windows Phone", "BlackBerry OS", "KaiOS"})
_TABLET_FAMILIES: Final = ("ipad", "tablet", "kindle", "nexus 7", "nexus 9", "nexus 10")


class UserAgentInfo(NamedTuple):
    """What a user agent says about the visitor's software and device."""

    browser: str | None
    browser_version: str | None
    os: str | None
    device_type: str | None
    #: ``None`` for people.
    bot_kind: BotKind | None

    @property
    def is_bot(self) -> bool:
        return self.bot_kind is not None


#: No user agent at all: nothing to say (server-to-server senders often send none).
UNKNOWN: Final = UserAgentInfo(None, None, None, None, None)


class UserAgentParser:
    """``parse(user_agent)`` with a bounded LRU cache of ``cache_size`` strings."""

    def __init__(self, *, cache_size: int = 10_000) -> None:
        self._bots = BotDetector()
        self.parse = lru_cache(maxsize=cache_size)(self._parse)
        # ua-parser builds its matchers on first use (about 0.3 s here) and CrawlerDetect
        # compiles its patterns: pay that at start-up, not in the first visitor's request
        # while every other request on the event loop waits behind it.
        self._parse(_WARM_UP_AGENT)

    def _parse(self, user_agent: str | None) -> UserAgentInfo:
        if not user_agent or not user_agent.strip():
            return UNKNOWN
        text = user_agent[:MAX_PARSED_LENGTH]
        result = ua_parser.parse(text)
        bot_kind = self._bots.kind(text)
        if bot_kind is None and result.device is not None and result.device.family == "Spider":
            bot_kind = BotKind.CRAWLER  # uap-core knows a few crawlers CrawlerDetect does not
        agent, os = result.user_agent, result.os
        browser = agent.family if agent is not None and agent.family != "Other" else None
        version = agent.major if agent is not None and browser is not None else None
        if version is not None and agent is not None and agent.minor is not None:
            version = f"{version}.{agent.minor}"
        os_name = os.family if os is not None and os.family != "Other" else None
        return UserAgentInfo(
            browser,
            version,
            os_name,
            _device_type(text, os_name, result.device, bot_kind),
            bot_kind,
        )


def _device_type(
    text: str, os_name: str | None, device: ua_parser.Device | None, bot_kind: BotKind | None
) -> str:
    """uap-core names devices (``iPad``, ``SM-X710``) rather than classes; the class follows
    from the device's family and brand, the OS, and Android's own convention that phones
    say ``Mobile`` and tablets do not."""
    if bot_kind is not None:
        return "bot"
    family = f"{device.family} {device.brand or ''}".lower() if device is not None else ""
    if any(word in family for word in _TABLET_FAMILIES):
        return "tablet"
    if os_name == "Android" and "Mobile" not in text:
        return "tablet"
    if os_name in _MOBILE_OS or "Mobi" in text:
        return "mobile"
    return "desktop"
