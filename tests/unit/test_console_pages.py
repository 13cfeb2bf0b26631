"""The console's HTML frame (``api.console.pages``) and where sign-in may send an operator
afterwards: no value reaches the page as markup, no redirect leaves the console."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from fastapi import FastAPI

from evothesis.api.console.pages import Page, Signed, login_page, message_page, shell
from evothesis.api.console.routes import noscript_pixel, safe_next
from evothesis.app import create_app
from evothesis.config import Settings

HOSTILE = '"><script>alert(1)</script><!--'
SIGNED = Signed("the admin token", "2026-01-01 00:00 UTC", 'csrf"<token>')


class Scripts(HTMLParser):
    """The document's script elements: (attributes, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self._open = dict(attrs)
            self.found.append((self._open, ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            attributes, text = self.found[-1]
            self.found[-1] = (attributes, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = None


def scripts(document: str) -> list[tuple[dict[str, str | None], str]]:
    parser = Scripts()
    parser.feed(document)
    return parser.found


def test_a_hostile_client_id_and_context_stay_text() -> None:
    context = {"client_id": HOSTILE, "note": "</script><script>alert(2)</script>"}
    document = shell(Page.CLIENT, SIGNED, context, HOSTILE)
    found = scripts(document)
    # Only the console's module and the JSON block, whatever the values held.
    assert [attributes.get("type") for attributes, _ in found] == ["module", "application/json"]
    assert json.loads(found[1][1]) == context
    assert "<script>alert" not in document
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document  # shown, as text
    assert 'value="csrf&quot;&lt;token&gt;"' in document


def test_every_page_has_one_main_heading_a_skip_link_and_a_language() -> None:
    for page in Page:
        client = "client_acme" if page in (Page.CLIENT, Page.DOMAINS, Page.INSTALL) else None
        document = shell(page, SIGNED, {}, client)
        assert document.count("<h1>") == 1, page
        assert '<html lang="en">' in document
        assert '<a class="skip-link" href="#main">' in document
        assert len(re.findall(r'aria-current="page"', document)) == (2 if client else 1)


def test_messages_and_sign_in_escape_what_they_show() -> None:
    assert "<script>alert" not in message_page(HOSTILE, HOSTILE, SIGNED)
    page = login_page(login_nonce=HOSTILE, next_path=HOSTILE, development=False, error=HOSTILE)
    assert "<script>alert" not in page
    assert 'aria-invalid="true"' in page
    assert '<label for="token">' in page


@pytest.mark.parametrize(
    ("asked", "sent"),
    [
        ("/console/pipeline", "/console/pipeline"),
        ("/console/live?client_id=a&site_id=b", "/console/live?client_id=a&site_id=b"),
        ("/console/clients/client%20x/install", "/console/clients/client%20x/install"),
        (None, "/console/clients"),
        ("", "/console/clients"),
        ("https://evil.example/console/", "/console/clients"),
        ("//evil.example/console/", "/console/clients"),
        ("/\\evil.example", "/console/clients"),
        ("/console/\\\\evil.example", "/console/clients"),
        ("/metrics", "/console/clients"),
        ("/console/login?next=/console/x", "/console/clients"),
        ("javascript:alert(1)", "/console/clients"),
    ],
)
def test_sign_in_returns_to_console_pages_only(asked: str | None, sent: str) -> None:
    assert safe_next(asked) == sent


def test_the_noscript_pixel_is_offered_only_where_the_app_documents_one() -> None:
    """The Install page shows a ``<noscript>`` pixel only when ``GET /collect`` is in the
    app's OpenAPI schema, with the query parameters it declares."""
    settings = Settings(_env_file=None, ENVIRONMENT="test")
    collector = create_app(settings, database_url="postgresql://unused/unused")
    documented = collector.api.openapi()["paths"]["/collect"]
    assert noscript_pixel(collector.api) == (
        {"path": "/collect", "query": [p["name"] for p in documented["get"]["parameters"]]}
        if "get" in documented
        else None
    )

    with_pixel = FastAPI()

    @with_pixel.get("/collect")
    async def pixel(siteId: str, eventType: str = "pageview", cb: str | None = None) -> None:
        """A 1x1 GIF."""

    assert noscript_pixel(with_pixel) == {
        "path": "/collect",
        "query": ["siteId", "eventType", "cb"],
    }
    assert noscript_pixel(FastAPI()) is None
