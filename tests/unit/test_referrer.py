"""Referrer classes and UTM parameters, decided server-side for events from any sender."""

from __future__ import annotations

import pytest

from evothesis.enrich.referrer import REFERRER_CLASSES, Attribution, attribute, sent_utm

PAGE = "https://shop.example.com/landing"


@pytest.mark.parametrize(
    ("url", "referrer", "expected"),
    [
        (PAGE, None, "direct"),
        (PAGE, "", "direct"),
        (PAGE, "https://www.google.com/", "search"),
        (PAGE, "https://www.google.co.uk/search?q=shoes", "search"),
        (PAGE, "https://duckduckgo.com/", "search"),
        (PAGE, "https://search.brave.com/search?q=x", "search"),
        (PAGE, "https://www.bing.com/", "search"),
        (PAGE, "https://t.co/abc", "social"),
        (PAGE, "https://l.facebook.com/l.php?u=x", "social"),
        (PAGE, "https://www.linkedin.com/feed/", "social"),
        (PAGE, "https://news.ycombinator.com/item?id=1", "social"),
        (PAGE, "https://mail.google.com/mail/u/0/", "email"),
        (PAGE, "https://outlook.live.com/", "email"),
        (PAGE, "https://blog.other.org/post", "referral"),
        (PAGE, "https://shop.example.com/cart", "internal"),
        (PAGE, "https://www.shop.example.com/", "internal"),
        (PAGE, "https://example.com/", "internal"),
        (f"{PAGE}?gclid=abc", "https://www.google.com/", "paid"),
        (f"{PAGE}?msclkid=abc", None, "paid"),
        (f"{PAGE}?utm_source=google&utm_medium=cpc", "https://www.google.com/", "paid"),
        (f"{PAGE}?utm_source=newsletter&utm_medium=email", None, "email"),
        (f"{PAGE}?utm_source=partner", None, "referral"),
        (f"{PAGE}?utm_source=mastodon&utm_medium=social", None, "social"),
        (PAGE, "not a url at all", "referral"),
        (None, "https://shop.example.com/x", "internal"),  # the siteId stands in for the page
    ],
)
def test_referrers_are_classified(url: str | None, referrer: str | None, expected: str) -> None:
    result = attribute(url, referrer, "shop.example.com", None)
    assert result.referrer_class == expected
    assert expected in REFERRER_CLASSES


def test_utm_parameters_come_from_the_url_when_the_sender_sent_none() -> None:
    url = f"{PAGE}?utm_source=Google&utm_medium=cpc&utm_campaign=spring%20sale&utm_term=shoes"
    assert attribute(url, None, "shop.example.com", None) == Attribution(
        "paid", "Google", "cpc", "spring sale", "shoes", None
    )


def test_utm_parameters_the_sender_sent_win_over_the_url() -> None:
    sent = sent_utm({"utmParams": {"utm_source": "newsletter", "utm_medium": "email"}})
    result = attribute(f"{PAGE}?utm_source=other", None, "shop.example.com", sent)
    assert result == Attribution("email", "newsletter", "email", None, None, None)


@pytest.mark.parametrize("attribution", [None, "x", {}, {"utmParams": {}}, {"utmParams": []}])
def test_no_usable_utm_from_the_sender_means_read_the_url(attribution: object) -> None:
    assert sent_utm(attribution) is None


def test_utm_values_are_trimmed_and_bounded() -> None:
    result = attribute(f"{PAGE}?utm_source=%20{'x' * 300}", None, "shop.example.com", None)
    assert result.utm_source == "x" * 200
