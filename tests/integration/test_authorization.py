"""Authorization and privacy enforcement through real HTTP and a real PostgreSQL.

Clients are registered in the test database with the registry store; the collector reads
them in-process (its default). Each test checks what was stored, not just the status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.postgres import register_client, with_registry
from tests.support.seed import SEED_BATCH
from tests.support.servers import RunningCollector

SALT = bytes(range(32))
RAW_IP = "203.0.113.77"


def event(site: str, **fields: Any) -> dict[str, Any]:
    return {"eventType": "pageview", "siteId": site, "url": f"https://{site}/p", **fields}


def stored(db: psycopg.Connection[Any], column: str = "client_id") -> list[Any]:
    return [row[0] for row in db.execute(f"SELECT {column} FROM events_log ORDER BY id")]


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


@pytest.fixture
def acme(database_url: str) -> str:
    """Two clients: acme (exact + wildcard domains) and globex, for cross-tenant checks."""
    register_client(database_url, "client_globex", "globex.example")
    return register_client(database_url, "client_acme", "acme.example", "*.acme.example")


# --------------------------------------------------------------------------- attribution


def test_unknown_domain_is_403_stores_nothing_and_is_counted(
    collector: RunningCollector, db: psycopg.Connection[Any]
) -> None:
    with collector.client(origin="https://unknown.example") as api:
        response = api.post("/collect", json=event("unknown.example"))
        assert response.status_code == 403
        assert error_code(response) == "unauthorized_domain"
        assert "unknown.example" in response.json()["error"]["message"]
        assert "access-control-allow-origin" not in response.headers
        health = api.get("/health").json()
    assert stored(db) == []
    assert health["refused_or_dropped"] == {"unauthorized_domain": 1}


def test_exact_and_wildcard_domains_attribute_to_their_client(
    acme: str, collector: RunningCollector, db: psycopg.Connection[Any]
) -> None:
    for site in ("acme.example", "shop.acme.example", "a.b.acme.example"):
        with collector.client(origin=f"https://{site}") as api:
            response = api.post("/collect", json=event(site))
            assert response.status_code == 200, response.text
            assert response.json()["client_id"] == "client_acme"
            assert response.headers["access-control-allow-origin"] == f"https://{site}"
    with collector.client(origin="https://evilacme.example") as api:
        assert api.post("/collect", json=event("evilacme.example")).status_code == 403
    assert stored(db) == ["client_acme"] * 3


def test_client_id_comes_from_the_domain_never_from_the_payload(
    acme: str, collector: RunningCollector, db: psycopg.Connection[Any]
) -> None:
    forged = event("acme.example", client_id="client_globex", clientId="client_globex")
    with collector.client(origin="https://acme.example") as api:
        assert api.post("/collect", json=forged).json()["client_id"] == "client_acme"
    assert stored(db) == ["client_acme"]


def test_deactivated_client_is_refused_once_its_cache_entry_expires(
    acme: str,
    start_collector: Callable[..., RunningCollector],
    database_url: str,
    db: psycopg.Connection[Any],
) -> None:
    collector = start_collector(REGISTRY_CACHE_TTL=0.2)
    with collector.client(origin="https://acme.example") as api:
        assert api.post("/collect", json=event("acme.example")).status_code == 200
        with_registry(database_url, lambda s: s.update_client("client_acme", {"active": False}))
        time.sleep(0.3)
        response = api.post("/collect", json=event("acme.example"))
    assert response.status_code == 403
    assert stored(db) == ["client_acme"]


def test_events_of_two_clients_in_one_request_are_refused(
    acme: str, collector: RunningCollector, db: psycopg.Connection[Any]
) -> None:
    batch = {**SEED_BATCH, "siteId": "acme.example"}
    batch["events"] = [{"eventType": "click", "siteId": "globex.example"}]
    with collector.client(origin="https://acme.example") as api:
        response = api.post("/collect", json=batch)
    assert response.status_code == 422
    assert stored(db) == []


# --------------------------------------------------------------------------- the sender


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://globex.example"},
        {"Referer": "https://globex.example/landing?x=1"},
        {"Origin": "null"},
        {"Origin": "https://unregistered.example"},
        {"Origin": "https://globex.example", "Referer": "https://acme.example/"},
    ],
    ids=["origin", "referer", "opaque-origin", "unregistered-origin", "origin-wins"],
)
def test_a_page_of_another_client_cannot_send_events(
    acme: str, collector: RunningCollector, db: psycopg.Connection[Any], headers: dict[str, str]
) -> None:
    with collector.client(origin=None, headers=headers) as api:
        response = api.post("/collect", json=event("acme.example"))
    assert response.status_code == 403
    assert error_code(response) == "origin_mismatch"
    assert "client_acme" in response.json()["error"]["message"]
    assert stored(db) == []


def test_a_matching_referer_is_enough_without_origin(
    acme: str, collector: RunningCollector, db: psycopg.Connection[Any]
) -> None:
    with collector.client(origin=None, headers={"Referer": "https://www.acme.example/a"}) as api:
        assert api.post("/collect", json=event("acme.example")).status_code == 200
    assert stored(db) == ["client_acme"]


def test_a_write_key_must_be_the_clients_whatever_else_the_request_carries(
    acme: str, collector: RunningCollector, db: psycopg.Connection[Any], database_url: str
) -> None:
    """An Origin proves nothing outside a browser: a wrong or foreign key is refused even
    with a page of the client, and the right key is trusted (and recorded) with any page."""
    globex_key = with_registry(database_url, lambda s: s.rotate_write_key("client_globex"))
    basic = "Basic " + base64.b64encode(f"{acme}:".encode()).decode()
    with collector.client(origin="https://acme.example") as page:
        wrong = page.post("/collect", json=event("acme.example"), headers={"X-Write-Key": "wk"})
        foreign = page.post(
            "/collect", json=event("acme.example"), headers={"X-Write-Key": globex_key}
        )
        garbled = page.post(
            "/collect", json=event("acme.example"), headers={"Authorization": "Basic %%%"}
        )
    with collector.client(origin="https://globex.example") as other_page:
        keyed = other_page.post(
            "/collect", json=event("acme.example"), headers={"X-Write-Key": acme}
        )
    with collector.client(origin=None) as server:
        basic_auth = server.post(
            "/collect", json=event("acme.example"), headers={"Authorization": basic}
        )
        keyless = server.post("/collect", json=event("acme.example"))
    for refused in (wrong, foreign, garbled):
        assert (refused.status_code, error_code(refused)) == (401, "invalid_write_key")
    assert (keyed.status_code, basic_auth.status_code, keyless.status_code) == (200, 200, 200)
    assert stored(db, "client_id") == ["client_acme"] * 3
    assert stored(db, "source") == ["server_key", "server_key", "unverified"]


def test_a_client_that_requires_its_key_refuses_requests_that_prove_nothing(
    collector: RunningCollector, db: psycopg.Connection[Any], database_url: str
) -> None:
    key = register_client(database_url, "client_strict", "strict.example", require_write_key=True)
    with collector.client(origin=None) as server:
        missing = server.post("/collect", json=event("strict.example"))
        good = server.post("/collect", json=event("strict.example"), headers={"X-Write-Key": key})
    with collector.client(origin="https://strict.example") as page:
        browser = page.post("/collect", json=event("strict.example"))
    assert (missing.status_code, error_code(missing)) == (401, "write_key_required")
    assert "X-Write-Key" in missing.json()["error"]["message"]
    assert (good.status_code, browser.status_code) == (200, 200)
    assert stored(db, "source") == ["server_key", "browser"]


def test_preflight_allows_registered_origins_only(acme: str, collector: RunningCollector) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    with collector.client(origin="https://shop.acme.example") as api:
        allowed = api.options("/collect", headers=preflight)
    with collector.client(origin="https://attacker.example") as api:
        refused = api.options("/collect", headers=preflight)
        posted = api.post("/collect", json=event("acme.example"))
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "https://shop.acme.example"
    assert refused.status_code == 403
    assert error_code(refused) == "unauthorized_origin"
    assert not any(h.startswith("access-control-") for h in refused.headers)
    assert not any(h.startswith("access-control-") for h in posted.headers)


# --------------------------------------------------------------------------- privacy levels


def test_gdpr_stores_the_keyed_hash_and_the_raw_ip_appears_nowhere(
    database_url: str,
    collector: RunningCollector,
    db: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    register_client(database_url, "client_eu", "eu.example", privacy_level="gdpr", ip_salt=SALT)
    caplog.set_level(logging.DEBUG)
    body = {**SEED_BATCH, "siteId": "eu.example", "url": "https://eu.example/?ref=x"}
    with collector.client(origin="https://eu.example") as api:
        response = api.post("/collect", json=body, headers={"X-Forwarded-For": RAW_IP})
    assert response.status_code == 200
    expected = hmac.new(SALT, RAW_IP.encode(), hashlib.sha256).hexdigest()
    assert set(stored(db, "ip_address")) == {expected}
    whole_table = "\n".join(row[0] for row in db.execute("SELECT t::text FROM events_log t"))
    assert len(stored(db)) == 4
    assert RAW_IP not in whole_table
    assert RAW_IP not in caplog.text
    assert "Bulk inserted 4 events for client client_eu" in caplog.text


def test_hipaa_stores_no_ip_redacts_strictly_and_audits_each_batch(
    database_url: str, collector: RunningCollector, db: psycopg.Connection[Any]
) -> None:
    register_client(database_url, "client_clinic", "clinic.example", privacy_level="hipaa")
    body = {
        **SEED_BATCH,
        "siteId": "clinic.example",
        "visitorId": "vis_1",
        "events": [
            {"eventType": "form_submit", "eventData": {"first_name": "Ann", "plan": "gold"}},
            {"eventType": "click", "eventData": {"note": "mail ann@example.org"}},
        ],
    }
    with collector.client(origin="https://clinic.example") as api:
        for _ in range(2):
            response = api.post("/collect", json=body, headers={"X-Forwarded-For": RAW_IP})
            assert response.status_code == 200
    assert set(stored(db, "ip_address")) == {None}
    data = stored(db, "raw_event_data")
    form = next(d for d in data if d.get("eventType") == "form_submit")
    assert form["eventData"] == {"first_name": "[REDACTED]", "plan": "gold"}
    assert "ann@example.org" not in str(data)
    audit = db.execute(
        "SELECT client_id, site_id, visitor_id, events, ip_hash, origin FROM hipaa_audit_log"
    ).fetchall()
    assert len(audit) == 2
    client_id, site, visitor, events, ip_hash, origin = audit[0]
    assert (client_id, site, visitor, events, origin) == (
        "client_clinic",
        "clinic.example",
        "vis_1",
        3,
        "clinic.example",
    )
    assert ip_hash and len(ip_hash) == 64 and RAW_IP not in ip_hash


def test_standard_keeps_the_ip_and_anonymized_collection_truncates_it(
    database_url: str, collector: RunningCollector, db: psycopg.Connection[Any]
) -> None:
    register_client(database_url, "client_std", "std.example")
    register_client(database_url, "client_anon", "anon.example", ip_collection="anonymized")
    for site in ("std.example", "anon.example"):
        with collector.client(origin=f"https://{site}") as api:
            api.post("/collect", json=event(site), headers={"X-Forwarded-For": RAW_IP})
    assert stored(db, "ip_address") == [RAW_IP, "203.0.113.0"]


def test_pii_is_redacted_in_event_data_and_url_query_strings(
    collector: RunningCollector, db: psycopg.Connection[Any]
) -> None:
    body = event(
        "localhost",
        url="https://localhost/signup?email=bob%40example.com&plan=pro",
        eventData={
            "password": "hunter2",
            "card": "4111 1111 1111 1111",
            "order": "1234567812345678",
            "phone": "+1 415 555 2671",
            "ssn": "123-45-6789",
        },
    )
    with collector.client() as api:
        assert api.post("/collect", json=body).status_code == 200
    [(url, raw)] = db.execute("SELECT url, raw_event_data FROM events_log").fetchall()
    assert "bob" not in url and "plan=pro" in url
    assert raw["url"] == url
    assert raw["eventData"] == {
        "password": "[REDACTED]",
        "card": "[REDACTED]",
        "order": "1234567812345678",  # fails Luhn: an order number, kept
        "phone": "[REDACTED]",
        "ssn": "[REDACTED]",
    }


# --------------------------------------------------------------------------- DNT, GPC, consent


@pytest.mark.parametrize(
    ("spec", "headers", "consent", "kept"),
    [
        ({}, {"DNT": "1"}, None, False),
        ({}, {"Sec-GPC": "1"}, None, False),
        ({}, {"DNT": "0"}, None, True),
        ({"honour_dnt": False}, {"DNT": "1"}, None, True),
        ({"honour_dnt": False, "privacy_level": "gdpr"}, {"DNT": "1"}, None, False),
        ({"consent_mode": "required"}, {}, None, False),
        ({"consent_mode": "required"}, {}, False, False),
        ({"consent_mode": "required"}, {}, True, True),
        ({"consent_mode": "required"}, {"DNT": "1"}, True, False),
    ],
    ids=[
        "dnt",
        "gpc",
        "dnt-0",
        "dnt-ignored-by-choice",
        "gdpr-always-honours",
        "consent-missing",
        "consent-refused",
        "consent-given",
        "dnt-beats-consent",
    ],
)
def test_privacy_signals_and_consent_are_acknowledged_and_dropped(
    database_url: str,
    collector: RunningCollector,
    db: psycopg.Connection[Any],
    spec: dict[str, Any],
    headers: dict[str, str],
    consent: bool | None,
    kept: bool,
) -> None:
    register_client(database_url, "client_p", "p.example", **spec)
    body = {**SEED_BATCH, "siteId": "p.example"}
    if consent is not None:
        body["consent"] = consent
    with collector.client(origin="https://p.example") as api:
        response = api.post("/collect", json=body, headers=headers)
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "success"
    if kept:
        assert answer["events_processed"] == 4
        assert len(stored(db)) == 4
    else:
        assert answer["events_processed"] == 0
        assert answer["events_dropped"] == 4
        assert "dropped" in answer["message"]
        assert stored(db) == []


def test_events_without_consent_can_be_kept_without_any_identifier(
    database_url: str, collector: RunningCollector, db: psycopg.Connection[Any]
) -> None:
    register_client(database_url, "client_a", "a.example", consent_mode="anonymous_without_consent")
    body = {**SEED_BATCH, "siteId": "a.example", "events": [{"eventType": "click", "userId": "u1"}]}
    with collector.client(origin="https://a.example") as api:
        api.post("/collect", json=body, headers={"X-Forwarded-For": RAW_IP})
        api.post("/collect", json={**body, "consent": True}, headers={"X-Forwarded-For": RAW_IP})
    rows = db.execute(
        "SELECT session_id, visitor_id, ip_address, raw_event_data FROM events_log ORDER BY id"
    ).fetchall()
    anonymous, consented = rows[:2], rows[2:]
    for session, visitor, ip, raw in anonymous:
        assert (session, visitor, ip) == (None, None, None)
        assert not {"sessionId", "visitorId", "userId"} & set(raw)
    assert [r[:3] for r in consented] == [("sess_abc123", "vis_xyz789", RAW_IP)] * 2


def test_a_site_id_given_as_a_url_is_redacted_too(
    collector: RunningCollector, db: psycopg.Connection[Any]
) -> None:
    site = "https://localhost/?email=bob@example.com"
    with collector.client() as api:
        assert api.post("/collect", json=event(site)).status_code == 200
    [raw] = stored(db, "raw_event_data")
    assert "bob@example.com" not in str(raw)


def test_drops_are_counted_by_their_real_reason(
    database_url: str, collector: RunningCollector
) -> None:
    register_client(
        database_url, "client_c", "c.example", honour_dnt=False, consent_mode="required"
    )
    with collector.client(origin="https://c.example") as api:
        # DNT is not honoured by this client: the drop is for the missing consent.
        api.post("/collect", json=event("c.example"), headers={"DNT": "1"})
        assert api.get("/health").json()["refused_or_dropped"] == {"dropped_no_consent": 1}
