"""Who gets into the operations console, and what its session may do at the operators'
endpoints, over real HTTP: the cookie's attributes, CSRF on every change, the development
default's open door (this machine only), production closed without a token, a token change
ending its sessions, and a session shared by every process that shares the token."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie

import httpx
import pytest

from evothesis.config import Settings
from evothesis.pixel_management import create_pixel_management_app
from tests.support.loopback import free_port
from tests.support.servers import RunningCollector, serve_in_thread

ADMIN = "console-access-admin-token"
OPERATOR = "console-access-operator-token"
StartCollector = Callable[..., RunningCollector]
PAGES = (
    "/console/clients",
    "/console/clients/client_test",
    "/console/clients/client_test/domains",
    "/console/clients/client_test/install",
    "/console/live",
    "/console/pipeline",
    "/console/usage",
    "/console/requests",
)


def http(collector: RunningCollector, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=collector.url, timeout=30, headers=headers)


def sign_in(client: httpx.Client, token: str | None) -> httpx.Response:
    """The sign-in form, filled and sent as a browser does (the form's CSRF cookie and
    field); returns the answer to the POST."""
    form = client.get("/console/login")
    assert form.status_code == 200, form.text
    nonce = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert nonce is not None
    fields = {"csrf": nonce.group(1), "next": "/console/pipeline"}
    if token is not None:
        fields["token"] = token
    return client.post(
        "/console/login",
        data=fields,
        headers={"Cookie": f"evothesis_console_login={nonce.group(1)}"},
    )


def session_cookie(response: httpx.Response) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        cookie.load(header)
    return cookie


def signed_in(client: httpx.Client, token: str | None) -> str:
    """The session cookie's value (sent by hand: httpx keeps Secure cookies for HTTPS)."""
    response = sign_in(client, token)
    assert response.status_code == 303, response.text
    return session_cookie(response)["evothesis_console"].value


def csrf_of(client: httpx.Client, session: str) -> str:
    page = client.get("/console/pipeline", headers={"Cookie": f"evothesis_console={session}"})
    found = re.search(r'"csrf_token":"([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def with_session(session: str, csrf: str | None = None) -> dict[str, str]:
    headers = {"Cookie": f"evothesis_console={session}"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return headers


@pytest.fixture
def console(start_collector: StartCollector) -> RunningCollector:
    return start_collector(EVOTHESIS_ADMIN_TOKEN=ADMIN, EVOTHESIS_OPERATOR_TOKEN=OPERATOR)


@pytest.mark.parametrize(("environment", "secure"), [("test", True), ("development", False)])
def test_sign_in_sets_a_strict_http_only_cookie_secure_outside_development(
    start_collector: StartCollector, environment: str, secure: bool
) -> None:
    collector = start_collector(ENVIRONMENT=environment, EVOTHESIS_ADMIN_TOKEN=ADMIN)
    with http(collector) as client:
        response = sign_in(client, ADMIN)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/pipeline"
    [header] = [h for h in response.headers.get_list("set-cookie") if "evothesis_console=" in h]
    morsel = session_cookie(response)["evothesis_console"]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert morsel["path"] == "/"
    assert bool(morsel["secure"]) is secure
    assert "max-age" not in header.lower()  # gone with the browser; the server ends it too
    assert morsel.value.startswith("admin.")


def test_pages_without_a_session_send_to_sign_in(console: RunningCollector) -> None:
    with http(console) as client:
        for path in PAGES:
            response = client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == f"/console/login?next={path}"
        # A session that does not open (forged, expired, of a changed token) says so.
        stale = client.get(PAGES[0], headers=with_session("admin.1.AAAAAAAAAAAAAAAAAAAAAA.x"))
        assert stale.headers["location"] == f"/console/login?next={PAGES[0]}&reason=ended"
        assert client.get("/console/", follow_redirects=True).url.path == "/console/login"


def test_a_wrong_token_or_a_forged_form_opens_no_session(console: RunningCollector) -> None:
    with http(console) as client:
        wrong = sign_in(client, "wrong-token")
        assert wrong.status_code == 401
        assert "neither EVOTHESIS_ADMIN_TOKEN nor EVOTHESIS_OPERATOR_TOKEN" in wrong.text
        assert "evothesis_console" not in session_cookie(wrong)
        forged = client.post(
            "/console/login",
            data={"csrf": "forged", "token": ADMIN},
            headers={"Cookie": "evothesis_console_login=another"},
        )
        assert forged.status_code == 403
        assert "evothesis_console" not in session_cookie(forged)
        assert client.post("/console/login", data={"token": ADMIN}).status_code == 403


def test_a_session_stands_for_its_token_and_every_change_needs_its_csrf_token(
    console: RunningCollector,
) -> None:
    body = {"client_id": "client_made_here", "name": "Made here"}
    with http(console) as client:
        session = signed_in(client, ADMIN)
        csrf = csrf_of(client, session)
        assert client.get("/api/v1/clients", headers=with_session(session)).status_code == 200
        for forged in (None, "forged", csrf[:-1]):
            refused = client.post(
                "/api/v1/clients", json=body, headers=with_session(session, forged)
            )
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "csrf_rejected"
        made = client.post("/api/v1/clients", json=body, headers=with_session(session, csrf))
        assert made.status_code == 201, made.text
        # Another session's token is no good either.
        other = signed_in(client, ADMIN)
        assert (
            client.post("/export/run", headers=with_session(other, csrf)).json()["error"]["code"]
            == "csrf_rejected"
        )
        # A bearer token is never sent by a browser on its own: it needs no CSRF token.
        bearer = {"Authorization": f"Bearer {ADMIN}"}
        assert client.post("/api/v1/clients/client_made_here/deactivate", headers=bearer).is_success


def test_a_read_only_session_reads_and_is_refused_every_change_with_403(
    console: RunningCollector,
) -> None:
    with http(console) as client:
        session = signed_in(client, OPERATOR)
        csrf = csrf_of(client, session)
        for path in ("/events/recent", "/pipeline/status", "/events/failed"):
            assert client.get(path, headers=with_session(session)).status_code == 200, path
        for method, path in (
            ("POST", "/export/run"),
            ("POST", "/process/run"),
            ("GET", "/api/v1/clients"),
            ("GET", "/billing/usage?from=2026-01-01&to=2026-01-01"),
        ):
            refused = client.request(method, path, headers=with_session(session, csrf))
            assert refused.status_code == 403, path
            assert refused.json()["error"]["code"] == "forbidden"
        # The operator bearer token keeps its answer (401), as before there was a console.
        bearer = {"Authorization": f"Bearer {OPERATOR}"}
        assert client.post("/export/run", headers=bearer).status_code == 401


def test_signing_out_drops_the_cookie_and_needs_the_csrf_token(console: RunningCollector) -> None:
    with http(console) as client:
        session = signed_in(client, ADMIN)
        csrf = csrf_of(client, session)
        forged = client.post(
            "/console/logout", data={"csrf": "forged"}, headers=with_session(session)
        )
        assert forged.status_code == 403
        assert "evothesis_console" not in session_cookie(forged)
        out = client.post("/console/logout", data={"csrf": csrf}, headers=with_session(session))
        assert out.status_code == 303
        assert out.headers["location"] == "/console/login?reason=signed-out"
        dropped = session_cookie(out)["evothesis_console"]
        assert dropped.value == "" and dropped["max-age"] == "0"


def test_changing_the_admin_token_ends_its_sessions_and_other_processes_share_them(
    start_collector: StartCollector, database_url: str
) -> None:
    first = start_collector(EVOTHESIS_ADMIN_TOKEN=ADMIN)
    same = start_collector(EVOTHESIS_ADMIN_TOKEN=ADMIN)
    changed = start_collector(EVOTHESIS_ADMIN_TOKEN="a-new-admin-token")
    with http(first) as client:
        session = signed_in(client, ADMIN)
    with http(same) as client:
        assert client.get("/api/v1/clients", headers=with_session(session)).status_code == 200
    with http(changed) as client:
        assert client.get("/api/v1/clients", headers=with_session(session)).status_code == 401
        page = client.get("/console/live", headers=with_session(session))
        assert page.headers["location"] == "/console/login?next=/console/live&reason=ended"


@pytest.fixture
def pixel_management(database_url: str) -> Iterator[str]:
    settings = Settings(_env_file=None, ENVIRONMENT="test", EVOTHESIS_ADMIN_TOKEN=ADMIN)
    port = free_port()
    server, thread = serve_in_thread(
        create_pixel_management_app(settings, database_url=database_url), port
    )
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


def test_pixel_management_accepts_a_session_a_collector_opened(
    console: RunningCollector, pixel_management: str
) -> None:
    """Behind nginx the console's client calls reach pixel management: the session, signed
    with a key derived from the shared admin token, works there too."""
    with http(console) as client:
        session = signed_in(client, ADMIN)
        csrf = csrf_of(client, session)
    with httpx.Client(base_url=pixel_management, timeout=30) as client:
        assert client.get("/api/v1/clients", headers=with_session(session)).status_code == 200
        body = {"client_id": "client_from_console", "name": "From the console"}
        assert (
            client.post("/api/v1/clients", json=body, headers=with_session(session)).status_code
            == 403
        )
        made = client.post("/api/v1/clients", json=body, headers=with_session(session, csrf))
        assert made.status_code == 201, made.text


def test_production_without_a_token_keeps_the_console_closed(
    start_collector: StartCollector,
) -> None:
    collector = start_collector(ENVIRONMENT="production", EVOTHESIS_OPERATOR_TOKEN=None)
    with http(collector) as client:
        for path in ("/console/login", *PAGES):
            closed = client.get(path)
            assert closed.status_code == 403, path
            assert "Set EVOTHESIS_ADMIN_TOKEN" in closed.text
        assert client.post("/console/login", data={"token": ""}).status_code == 403


def test_development_without_a_token_opens_to_this_machine_only(
    start_collector: StartCollector,
) -> None:
    collector = start_collector(ENVIRONMENT="development", EVOTHESIS_OPERATOR_TOKEN=None)
    body = {"client_id": "client_dev", "name": "Made in development"}
    with http(collector) as client:
        assert "Open the console" in client.get("/console/login").text
        session = signed_in(client, None)
        assert session.startswith("development.")
        csrf = csrf_of(client, session)
        # The console manages clients here, as the CLI does on this machine ...
        made = client.post("/api/v1/clients", json=body, headers=with_session(session, csrf))
        assert made.status_code == 201, made.text
        # ... while the admin API stays closed to requests without a session.
        client.cookies.clear()
        assert client.get("/api/v1/clients").status_code == 401
        assert client.post("/api/v1/clients", json=body).status_code == 401
    # Not for a caller a proxy forwarded, nor for a page under another name (DNS rebinding).
    port = collector.url.rsplit(":", 1)[1]
    for headers in ({"X-Forwarded-For": "203.0.113.7"}, {"Host": f"evil.example:{port}"}):
        with http(collector, **headers) as client:
            assert client.get("/console/login").status_code == 403
            assert client.get("/console/pipeline").status_code == 403
            assert client.get("/api/v1/clients", headers=with_session(session)).status_code == 401


def test_console_documents_forbid_framing_foreign_scripts_and_caching(
    console: RunningCollector,
) -> None:
    with http(console) as client:
        session = signed_in(client, ADMIN)
        for page in (
            client.get("/console/login"),
            client.get("/console/live", headers=with_session(session)),
        ):
            assert page.status_code == 200
            policy = page.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
            assert page.headers["x-frame-options"] == "DENY"
            assert page.headers["cache-control"] == "no-store"
        unknown = client.get("/console/no/such/page", headers=with_session(session))
        assert unknown.status_code == 404 and "The console has no page at" in unknown.text
        # Its scripts and styles hold no data: served to anyone, like the tracker.
        script = client.get("/console/assets/console.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert "/console/" not in client.get("/openapi.json").json()["paths"]
