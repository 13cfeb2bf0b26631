"""GET /collect: the image pixel. One event from query parameters, through the same
authorization, privacy and limits as a POST, answered with a transparent 1x1 GIF."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from evothesis.api.collect import PIXEL_GIF
from tests.support.postgres import register_client
from tests.support.servers import RunningCollector

#: An <img> on a page: the page is the Referer, and no Origin is sent.
PAGE = {"Referer": "http://localhost/blog/post?id=7"}


@pytest.fixture
def browser_image(collector: RunningCollector) -> Iterator[httpx.Client]:
    with collector.client(origin=None, headers=PAGE) as client:
        yield client


def pixel(api: httpx.Client, params: Any, **headers: str) -> httpx.Response:
    return api.get("/collect", params=params, headers=headers)


def recent(api: httpx.Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = api.get("/events/recent", params={"limit": 10}).json()
    return events


def test_a_pixel_stores_its_event_and_answers_a_gif(
    api: httpx.Client, browser_image: httpx.Client
) -> None:
    response = pixel(
        browser_image,
        {
            "eventType": "email_open",
            "siteId": "localhost",
            "visitorId": "v-1",
            "url": "http://localhost/newsletter/12",
            "eventData.campaign": "december",
            "cb": "1733140000",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["cache-control"] == "no-store, max-age=0"
    assert response.content == PIXEL_GIF and PIXEL_GIF[:6] == b"GIF89a"
    [event] = recent(api)
    assert (event["event_type"], event["visitor_id"], event["url"]) == (
        "email_open",
        "v-1",
        "http://localhost/newsletter/12",
    )
    assert event["client_id"] == "client_test"
    assert event["raw_event_data"]["eventData"] == {"campaign": "december", "cb": "1733140000"}


def test_a_pixels_values_are_redacted_like_any_event(
    api: httpx.Client, browser_image: httpx.Client
) -> None:
    response = pixel(
        browser_image,
        {"eventType": "signup", "siteId": "localhost", "email": "ann@example.org"},
    )
    assert response.status_code == 200
    [event] = recent(api)
    assert event["raw_event_data"]["eventData"] == {"email": "[REDACTED]"}


def test_a_visitor_asking_not_to_be_tracked_gets_the_gif_and_is_not_stored(
    api: httpx.Client, browser_image: httpx.Client
) -> None:
    response = pixel(browser_image, {"eventType": "pageview", "siteId": "localhost"}, DNT="1")
    assert response.status_code == 200 and response.content == PIXEL_GIF
    assert recent(api) == []


def test_a_pixel_is_authorized_by_its_page(
    api: httpx.Client, browser_image: httpx.Client, database_url: str
) -> None:
    register_client(database_url, "client_other", "other.example")
    unknown = pixel(browser_image, {"eventType": "pageview", "siteId": "unknown.example"})
    assert unknown.status_code == 403
    assert unknown.json()["error"]["code"] == "unauthorized_domain"
    # A page of one client cannot count views for another's site.
    forged = pixel(browser_image, {"eventType": "pageview", "siteId": "other.example"})
    assert forged.status_code == 403, forged.text
    assert recent(api) == []


@pytest.mark.parametrize(
    ("query", "status", "code", "field"),
    [
        ("siteId=localhost", 422, "invalid_event", "eventType"),
        ("eventType=a&eventType=b&siteId=localhost", 422, "invalid_event", "eventType"),
        ("eventType=a&siteId=localhost&x=1&eventData.x=2", 422, "invalid_event", "eventData.x"),
        ("eventType=batch&siteId=localhost&events=1", 422, "invalid_event", "events"),
        ("eventType=a&siteId=localhost&eventData=%7B%7D", 422, "invalid_event", "eventData"),
        ("eventType=a&siteId=localhost&eventId=nope", 422, "invalid_event", "eventId"),
        ("eventType=%FF&siteId=localhost", 400, "malformed_json", None),
        ("&".join(f"k{i}=1" for i in range(101)), 413, "payload_too_large", None),
    ],
)
def test_bad_pixels_are_clear_json_errors(
    api: httpx.Client,
    browser_image: httpx.Client,
    query: str,
    status: int,
    code: str,
    field: str | None,
) -> None:
    response = browser_image.get(f"/collect?{query}")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    assert recent(api) == []


def test_a_query_over_the_body_limit_is_413(start_collector: Any) -> None:
    collector = start_collector(MAX_BODY_BYTES="2048")
    with collector.client(origin=None, headers=PAGE) as api:
        response = api.get(
            "/collect", params={"eventType": "a", "siteId": "localhost", "x": "y" * 3000}
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_the_pixel_is_documented(api: httpx.Client) -> None:
    operation = api.get("/openapi.json").json()["paths"]["/collect"]["get"]
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert {"eventType", "siteId", "url", "visitorId"} <= names
    assert "image/gif" in operation["responses"]["200"]["content"]
