"""The console's HTML: the page shell every console page shares, the sign-in page and the
pages that say why something is not shown (pure: strings in, a document out).

The server renders only the frame (navigation, headings, who is signed in) and the page's
context as JSON; each page's content is built in the browser by
``static/console/page-*.js`` from the same JSON endpoints operators call, so the console
shows exactly what the API answers and can do nothing the API cannot. Every value put in
the HTML is escaped; the context is JSON in a ``<script type="application/json">`` block,
never executed, with ``<`` escaped so that no value can close the block.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote

import orjson

__all__ = ["Page", "Signed", "closed_page", "login_page", "message_page", "shell"]

ASSETS: Final = "/console/assets"


class Page(StrEnum):
    """The console's pages; the value names the page's script (``page-<value>.js``)."""

    CLIENTS = "clients"
    CLIENT = "client"
    DOMAINS = "domains"
    INSTALL = "install"
    LIVE = "live"
    PIPELINE = "pipeline"
    USAGE = "usage"
    REQUESTS = "requests"

    @property
    def heading(self) -> str:
        return _TITLES[self]

    def path(self, client_id: str | None = None) -> str:
        if self in _CLIENT_PAGES:
            assert client_id is not None
            suffix = {Page.CLIENT: "", Page.DOMAINS: "/domains", Page.INSTALL: "/install"}[self]
            return f"/console/clients/{quote(client_id, safe='')}{suffix}"
        return f"/console/{self.value}"


_TITLES: Final = {
    Page.CLIENTS: "Clients",
    Page.CLIENT: "Settings",
    Page.DOMAINS: "Domains",
    Page.INSTALL: "Install",
    Page.LIVE: "Live events",
    Page.PIPELINE: "Pipeline",
    Page.USAGE: "Usage",
    Page.REQUESTS: "Data-subject requests",
}
#: The pages of one client, shown as tabs under its name.
_CLIENT_PAGES: Final = (Page.CLIENT, Page.DOMAINS, Page.INSTALL)
#: The main navigation, in order.
_NAVIGATION: Final = (Page.CLIENTS, Page.LIVE, Page.PIPELINE, Page.USAGE, Page.REQUESTS)


@dataclass(frozen=True, slots=True)
class Signed:
    """Who is signed in, as the page's header says it."""

    #: "the admin token", "the operator token (read-only)", "this machine (development)"
    opened_with: str
    #: When the session ends, as shown (UTC).
    until: str
    csrf_token: str


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _context_block(context: dict[str, Any]) -> str:
    data = orjson.dumps(context).decode().replace("<", "\\u003c")
    return f'<script type="application/json" id="console-context">{data}</script>'


def _document(title: str, body: str, *, script: bool) -> str:
    module = f'<script type="module" src="{ASSETS}/console.js"></script>' if script else ""
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)} · Evothesis console</title>\n"
        f'<link rel="stylesheet" href="{ASSETS}/console.css">\n'
        '<link rel="icon" href="data:,">\n'
        f"{module}\n</head>\n<body>\n"
        '<a class="skip-link" href="#main">Skip to content</a>\n'
        f"{body}\n</body>\n</html>\n"
    )


def _header(signed: Signed | None) -> str:
    account = ""
    if signed is not None:
        account = (
            '<div class="account">'
            f'<p class="who">Signed in with {_e(signed.opened_with)}, until '
            f"{_e(signed.until)}</p>"
            '<form method="post" action="/console/logout">'
            f'<input type="hidden" name="csrf" value="{_e(signed.csrf_token)}">'
            '<button type="submit" class="secondary">Sign out</button></form></div>'
        )
    return (
        '<header class="topbar"><a class="brand" href="/console/clients">'
        '<span class="brand-name">Evothesis</span> <span class="brand-sub">console</span></a>'
        f"{account}</header>"
    )


def _navigation(current: Page | None) -> str:
    items = []
    for page in _NAVIGATION:
        active = current is page or (page is Page.CLIENTS and current in _CLIENT_PAGES)
        marker = ' aria-current="page"' if active else ""
        items.append(f'<li><a href="{page.path()}"{marker}>{_e(page.heading)}</a></li>')
    return f'<nav class="sidebar" aria-label="Console"><ul>{"".join(items)}</ul></nav>'


def _client_tabs(page: Page, client_id: str) -> str:
    tabs = []
    for tab in _CLIENT_PAGES:
        marker = ' aria-current="page"' if tab is page else ""
        tabs.append(f'<li><a href="{tab.path(client_id)}"{marker}>{_e(tab.heading)}</a></li>')
    return f'<nav class="tabs" aria-label="Client {_e(client_id)}"><ul>{"".join(tabs)}</ul></nav>'


def shell(page: Page, signed: Signed, context: dict[str, Any], client_id: str | None) -> str:
    """A console page: its frame, and the context its script builds the content from."""
    if client_id is not None:
        title = f"{client_id}: {page.heading}"
        heading = (
            f'<p class="breadcrumb"><a href="{Page.CLIENTS.path()}">Clients</a></p>'
            f"<h1>{_e(client_id)}</h1>{_client_tabs(page, client_id)}"
        )
    else:
        title = page.heading
        heading = f"<h1>{_e(page.heading)}</h1>"
    body = (
        f'{_header(signed)}<div class="layout">{_navigation(page)}'
        f'<main id="main" tabindex="-1">{heading}'
        '<div id="page" aria-busy="true"><p class="loading">Loading…</p></div>'
        '<noscript><p class="error">The console builds its pages with JavaScript; '
        "every action is also in the API (/docs) and the evothesis command.</p></noscript>"
        f"</main></div>{_context_block(context)}"
    )
    return _document(title, body, script=True)


def message_page(
    title: str, message: str, signed: Signed | None, *, link: tuple[str, str] | None = None
) -> str:
    """A page that only says something (a client that does not exist, a wrong path)."""
    follow = f'<p><a href="{_e(link[0])}">{_e(link[1])}</a></p>' if link else ""
    body = (
        f'{_header(signed)}<div class="layout">{_navigation(None)}'
        f'<main id="main" tabindex="-1"><h1>{_e(title)}</h1>'
        f'<p class="error" role="alert">{_e(message)}</p>{follow}</main></div>'
    )
    return _document(title, body, script=False)


def login_page(
    *,
    login_nonce: str,
    next_path: str,
    development: bool,
    notice: str | None = None,
    error: str | None = None,
) -> str:
    """Sign-in: a token field, or in development without tokens one button (the console
    is open to this machine, as the operators' endpoints are)."""
    alerts = ""
    if error:
        alerts += f'<p class="error" role="alert" id="login-error">{_e(error)}</p>'
    if notice:
        alerts += f'<p class="notice" role="status">{_e(notice)}</p>'
    hidden = (
        f'<input type="hidden" name="csrf" value="{_e(login_nonce)}">'
        f'<input type="hidden" name="next" value="{_e(next_path)}">'
    )
    if development:
        fields = (
            '<p id="development-help">No token is configured and this is a development '
            "process, so the console is open to this machine only, with every right (as "
            "its <code>evothesis</code> command). Set EVOTHESIS_ADMIN_TOKEN to require "
            "sign-in.</p>"
            '<button type="submit" aria-describedby="development-help">Open the console</button>'
        )
    else:
        described = "token-help login-error" if error else "token-help"
        invalid = ' aria-invalid="true"' if error else ""
        fields = (
            '<label for="token">Token</label>'
            '<input id="token" name="token" type="password" autocomplete="current-password" '
            f'required maxlength="1000" aria-describedby="{described}"{invalid} autofocus>'
            '<p id="token-help" class="help">EVOTHESIS_ADMIN_TOKEN manages everything; '
            "EVOTHESIS_OPERATOR_TOKEN only reads.</p>"
            '<button type="submit">Sign in</button>'
        )
    body = (
        f'{_header(None)}<main id="main" class="login" tabindex="-1">'
        "<h1>Sign in to the console</h1>"
        f'{alerts}<form method="post" action="/console/login" class="card">{hidden}{fields}'
        "</form></main>"
    )
    return _document("Sign in", body, script=False)


def closed_page(reason: str) -> str:
    """The console is not open here: says which setting opens it."""
    body = (
        f'{_header(None)}<main id="main" class="login" tabindex="-1">'
        f'<h1>The console is closed</h1><p class="error" role="alert">{_e(reason)}</p></main>'
    )
    return _document("Closed", body, script=False)
