"""Real user agents, parsed and classified: browsers, devices, crawlers, tools, monitors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from evothesis.enrich.useragent import DEVICE_TYPES, UNKNOWN, UserAgentParser

PARSER = UserAgentParser(cache_size=64)

#: (user agent, browser, major.minor version, OS, device type, bot kind)
USER_AGENTS = [
    pytest.param(
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
        ("Chrome", "124.0", "Windows", "desktop", None),
        id="chrome-windows",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        ("Firefox", "125.0", "Ubuntu", "desktop", None),
        id="firefox-ubuntu",
    ),
    pytest.param(
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.4.1 Safari/605.1.15",
        ("Safari", "17.4", "Mac OS X", "desktop", None),
        id="safari-mac",
    ),
    pytest.param(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        ("Mobile Safari", "17.4", "iOS", "mobile", None),
        id="safari-iphone",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.6367.82 Mobile Safari/537.36",
        ("Chrome Mobile", "124.0", "Android", "mobile", None),
        id="chrome-android-phone",
    ),
    pytest.param(
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
        ("Mobile Safari", "16.6", "iOS", "tablet", None),
        id="safari-ipad",
    ),
    pytest.param(
        "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        ("Chrome", "120.0", "Android", "tablet", None),
        id="chrome-android-tablet",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        ("Googlebot", "2.1", None, "bot", "crawler"),
        id="googlebot",
    ),
    pytest.param(
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        ("bingbot", "2.0", None, "bot", "crawler"),
        id="bingbot",
    ),
    pytest.param("curl/8.5.0", ("curl", "8.5", None, "bot", "http_client"), id="curl"),
    pytest.param(
        "python-requests/2.32.3",
        ("Python Requests", "2.32", None, "bot", "http_client"),
        id="python-requests",
    ),
    pytest.param(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/124.0.6367.60 Safari/537.36",
        ("HeadlessChrome", "124.0", "Linux", "bot", "headless"),
        id="headless-chrome",
    ),
    pytest.param(
        "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
        ("UptimeRobot", "2.0", None, "bot", "monitor"),
        id="uptimerobot",
    ),
    pytest.param(
        "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
        ("PingdomBot", "1.4", None, "bot", "monitor"),
        id="pingdom",
    ),
]


@pytest.mark.parametrize(("user_agent", "expected"), USER_AGENTS)
def test_real_user_agents_are_parsed_and_classified(
    user_agent: str, expected: tuple[str | None, ...]
) -> None:
    info = PARSER.parse(user_agent)
    assert (info.browser, info.browser_version, info.os, info.device_type, info.bot_kind) == (
        expected
    )
    assert info.is_bot == (expected[-1] is not None)
    assert info.device_type in DEVICE_TYPES


@pytest.mark.parametrize("user_agent", [None, "", "   "])
def test_no_user_agent_says_nothing(user_agent: str | None) -> None:
    assert PARSER.parse(user_agent) == UNKNOWN
    assert not UNKNOWN.is_bot


def test_results_are_cached_per_string_and_the_cache_is_bounded() -> None:
    parser = UserAgentParser(cache_size=2)
    first = parser.parse("curl/8.5.0")
    assert parser.parse("curl/8.5.0") is first
    for number in range(5):
        parser.parse(f"curl/{number}.0")
    assert parser.parse.cache_info().currsize == 2


def test_a_huge_user_agent_is_parsed_by_its_prefix() -> None:
    info = PARSER.parse("curl/8.5.0 " + "x" * 1_000_000)
    assert (info.browser, info.bot_kind) == ("curl", "http_client")


def test_both_libraries_are_ready_when_the_parser_is_built() -> None:
    """Not in the first request: readying ua-parser takes ~0.3 s, during which the event
    loop would answer nobody. A fresh interpreter, so no other test has readied them."""
    script = (
        "import ua_parser\n"
        "from crawlerdetect import crawlerdetect as c\n"
        "from evothesis.enrich.useragent import UserAgentParser\n"
        "def ready():\n"
        "    return ('parser' in vars(ua_parser),\n"
        "            c.get_compiled_crawler_regex.cache_info().currsize,\n"
        "            c.get_compiled_exclusions_regex.cache_info().currsize)\n"
        "print(*ready())\n"
        "UserAgentParser()\n"
        "print(*ready())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.splitlines() == ["False 0 0", "True 1 1"]
