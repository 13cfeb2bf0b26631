"""Bot detection from the user agent, over CrawlerDetect's maintained list of patterns.

CrawlerDetect knows well over a thousand crawlers, spiders, HTTP libraries, headless
browsers and monitors; a hand-written regex of ten names would miss most of them. Its match
is then sorted into a small closed set of kinds, because a drop reason becomes a metric
label and must not take one value per crawler name.
"""

from __future__ import annotations

from typing import Final

from crawlerdetect import CrawlerDetect

from evothesis.domain import BotKind

__all__ = ["BotDetector"]

#: Words of a CrawlerDetect match that name the kind; the first kind with a hit wins,
#: anything else is a crawler (search engines, SEO tools, feed readers, previewers…).
_KIND_WORDS: Final = (
    (
        BotKind.HEADLESS,
        ("headless", "phantomjs", "puppeteer", "playwright", "selenium", "lighthouse"),
    ),
    (
        BotKind.MONITOR,
        (
            "uptime",
            "pingdom",
            "monitor",
            "statuscake",
            "site24x7",
            "newrelic",
            "datadog",
            "checkly",
            "freshping",
            "betteruptime",
            "healthcheck",
        ),
    ),
    (
        BotKind.HTTP_CLIENT,
        (
            "curl",
            "wget",
            "python",
            "go-http",
            "java",
            "okhttp",
            "axios",
            "node-fetch",
            "libwww",
            "httpclient",
            "http_client",
            "guzzle",
            "ruby",
            "perl",
            "php",
            "httpie",
            "postman",
            "insomnia",
        ),
    ),
)


class BotDetector:
    """``kind(user_agent)``: the bot kind, or ``None`` for what looks like a person.

    Not cached here: the user-agent enrichment that calls it caches the whole result.
    CrawlerDetect keeps its last match on the instance, so one detector serves one thread
    (the collector's event loop).
    """

    def __init__(self) -> None:
        self._detector = CrawlerDetect()

    def kind(self, user_agent: str) -> BotKind | None:
        if not self._detector.is_crawler(user_agent):
            return None
        match = (self._detector.get_matches() or "").lower()
        lowered = user_agent.lower()
        for kind, words in _KIND_WORDS:
            if any(word in match or word in lowered for word in words):
                return kind
        return BotKind.CRAWLER
