"""The pixel-management service over real HTTP against a real PostgreSQL: tokens, client
administration, secrets that never leak, public config, the collectors' internal lookup
and per-client trackers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import psycopg
import pytest

from evothesis.config import Settings
from evothesis.pixel_management import create_pixel_management_app
from evothesis.tracker import EMBEDDED_GLOBAL
from tests.support.loopback import free_port
from tests.support.postgres import TEST_SECRET_KEY, PostgresServer
from tests.support.servers import serve_in_thread

ADMIN_TOKEN = "admin-token-for-tests"
SERVICE_TOKEN = "service-token-for-tests"
COLLECTOR_URL = "https://collect.example.net/"
SALT_HEX = "5a" * 32
CREDENTIAL = "very-secret-access-key-value"


@dataclass
class PixelService:
    """A running standalone service and the registry changes it reported."""

    url: str
    changes: list[None] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


@contextmanager
def running_service(database_url: str, **overrides: Any) -> Iterator[PixelService]:
    """``create_pixel_management_app`` under uvicorn in a thread on 127.0.0.1.

    The key is the suite's: test databases come with the development client sealed by it.
    """
    values: dict[str, Any] = {
        "ENVIRONMENT": "test",
        "EVOTHESIS_SECRET_KEY": TEST_SECRET_KEY,
        "EVOTHESIS_ADMIN_TOKEN": ADMIN_TOKEN,
        "PIXEL_MANAGEMENT_TOKEN": SERVICE_TOKEN,
        "EVOTHESIS_COLLECTOR_URL": COLLECTOR_URL,
        "DATABASE_POOL_SIZE": 1,
        "DATABASE_MAX_OVERFLOW": 3,
        **overrides,
    }
    settings = Settings(_env_file=None, **values)
    port = free_port()
    service = PixelService(f"http://127.0.0.1:{port}")
    app = create_pixel_management_app(
        settings, database_url=database_url, on_change=lambda: service.changes.append(None)
    )
    server, thread = serve_in_thread(app, port)
    try:
        yield service
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def service(database_url: str) -> Iterator[PixelService]:
    with running_service(database_url) as running:
        yield running


@pytest.fixture
def admin(service: PixelService) -> Iterator[httpx.Client]:
    with service.client(ADMIN_TOKEN) as client:
        yield client


@pytest.fixture
def public(service: PixelService) -> Iterator[httpx.Client]:
    with service.client() as client:
        yield client


def create(admin: httpx.Client, client_id: str, **settings: Any) -> dict[str, Any]:
    response = admin.post("/api/v1/clients", json={"client_id": client_id, **settings})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def client_ids(admin: httpx.Client) -> list[str]:
    return [client["client_id"] for client in admin.get("/api/v1/clients").json()]


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert body["status"] == "error"
    code: str = body["error"]["code"]
    return code


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("token", [None, "wrong-token", SERVICE_TOKEN, ADMIN_TOKEN + "x"])
def test_admin_api_refuses_missing_or_wrong_tokens(
    service: PixelService, token: str | None
) -> None:
    with service.client(token) as client:
        listed = client.get("/api/v1/clients")
        created = client.post("/api/v1/clients", json={"client_id": "sneaky", "name": "Sneaky"})
        probed = client.get("/api/v1/clients/sneaky")

    for response in (listed, created, probed):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert error_code(response) == "unauthorized"
        assert "EVOTHESIS_ADMIN_TOKEN" in response.json()["error"]["message"]
    with service.client(ADMIN_TOKEN) as admin:
        assert admin.get("/api/v1/clients/sneaky").status_code == 404
    assert service.changes == []


def test_admin_api_is_closed_until_an_admin_token_is_configured(database_url: str) -> None:
    with running_service(database_url, EVOTHESIS_ADMIN_TOKEN=None) as service:
        for token in (None, "", ADMIN_TOKEN, "anything"):
            with service.client(token) as client:
                response = client.get("/api/v1/clients")
                assert response.status_code == 401
                assert response.json()["error"]["message"] == (
                    "the admin API is closed until EVOTHESIS_ADMIN_TOKEN is set"
                )


# ------------------------------------------------------------------- administration


def test_create_client_with_domains_returns_the_record_and_a_one_time_write_key(
    service: PixelService, admin: httpx.Client
) -> None:
    response = admin.post(
        "/api/v1/clients",
        json={
            "client_id": "client_acme_corp",
            "name": "Acme Corp",
            "privacy_level": "gdpr",
            "ip_collection": "anonymized",
            "consent_mode": "required",
            "bot_policy": "drop",
            "export_destination": "s3://acme-events",
            "export_format": "parquet",
            "export_layout": "hive",
            "domains": ["Acme.example", "*.acme.example", "https://acme.example/shop"],
        },
    )

    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/api/v1/clients/client_acme_corp"
    created = response.json()
    write_key = created.pop("write_key")
    assert write_key.startswith("wk_") and len(write_key) > 40
    assert created.pop("created_at") and created.pop("updated_at")
    assert created == {
        "client_id": "client_acme_corp",
        "name": "Acme Corp",
        "privacy_level": "gdpr",
        "ip_collection": "anonymized",
        "honour_dnt": True,
        "consent_mode": "required",
        "bot_policy": "drop",
        "require_write_key": False,
        "user_id_storage": None,
        "export_destination": "s3://acme-events",
        "export_format": "parquet",
        "export_layout": "hive",
        "table_retention_days": None,
        "has_export_credentials": False,
        "export_schedule": None,
        "export_threshold": None,
        "notify_url": None,
        "has_notify_secret": False,
        "active": True,
        "domains": ["*.acme.example", "acme.example"],
    }
    fetched = admin.get("/api/v1/clients/client_acme_corp").json()
    assert "write_key" not in fetched
    assert write_key not in orjson.dumps(fetched).decode()
    assert fetched["domains"] == ["*.acme.example", "acme.example"]
    assert "client_acme_corp" in client_ids(admin)
    assert len(service.changes) == 1


def test_an_existing_client_id_is_a_conflict(service: PixelService, admin: httpx.Client) -> None:
    create(admin, "acme", name="Acme")
    again = admin.post("/api/v1/clients", json={"client_id": "acme", "name": "Other"})
    assert again.status_code == 409
    assert error_code(again) == "conflict"
    assert "'acme' already exists" in again.json()["error"]["message"]
    assert admin.get("/api/v1/clients/acme").json()["name"] == "Acme"
    assert len(service.changes) == 1


def test_a_domain_owned_by_another_client_creates_nothing(
    service: PixelService, admin: httpx.Client, public: httpx.Client
) -> None:
    create(admin, "shop_owner", name="Shop owner", domains=["shop.example"])

    response = admin.post(
        "/api/v1/clients",
        json={
            "client_id": "latecomer",
            "name": "Late",
            "domains": ["late.example", "shop.example"],
        },
    )

    assert response.status_code == 409
    assert response.json()["error"]["message"] == (
        "domain 'shop.example' already belongs to client 'shop_owner'"
    )
    assert admin.get("/api/v1/clients/latecomer").status_code == 404
    assert public.get("/api/v1/config/domain/late.example").status_code == 404
    assert public.get("/api/v1/config/domain/shop.example").json()["client_id"] == "shop_owner"
    assert len(service.changes) == 1


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"client_id": "c1", "name": "C", "privacy_level": "loose"}, "privacy_level"),
        ({"client_id": "c1", "name": "C", "ip_collection": "some"}, "ip_collection"),
        ({"client_id": "c1", "name": "C", "export_format": "xml"}, "export_format"),
        ({"client_id": "c1", "name": "C", "export_layout": "flat"}, "export_layout"),
        ({"client_id": "c1", "name": "C", "table_retention_days": -1}, "table_retention_days"),
        ({"client_id": "c1", "name": "C", "colour": "red"}, "colour"),
        ({"client_id": "c1", "name": ""}, "name"),
        ({"client_id": "c1", "name": "C", "ip_salt": "not-hex"}, "hexadecimal"),
        ({"client_id": "c1", "name": "C", "ip_salt": "abcd"}, "at least 16 bytes"),
        ({"client_id": "Not Valid", "name": "C"}, "invalid client_id"),
        ({"client_id": "c1", "name": "C", "domains": ["*.com"]}, "top-level domain"),
    ],
)
def test_invalid_client_settings_are_422_and_create_nothing(
    service: PixelService, admin: httpx.Client, body: dict[str, Any], problem: str
) -> None:
    before = client_ids(admin)
    response = admin.post("/api/v1/clients", json=body)
    assert response.status_code == 422
    assert problem in response.json()["error"]["message"]
    assert client_ids(admin) == before
    assert service.changes == []


def test_patch_changes_only_the_fields_sent(service: PixelService, admin: httpx.Client) -> None:
    create(admin, "acme", name="Acme", export_destination="s3://acme", domains=["acme.example"])

    patched = admin.patch("/api/v1/clients/acme", json={"privacy_level": "hipaa"})
    cleared = admin.patch("/api/v1/clients/acme", json={"export_destination": None})

    assert patched.status_code == 200
    assert (patched.json()["privacy_level"], patched.json()["name"]) == ("hipaa", "Acme")
    assert patched.json()["export_destination"] == "s3://acme"
    assert patched.json()["domains"] == ["acme.example"]
    assert cleared.json()["export_destination"] is None
    assert cleared.json()["privacy_level"] == "hipaa"
    assert len(service.changes) == 3


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"client_id": "other"}, "client_id"),
        ({"domains": ["x.example"]}, "domains"),
        ({"privacy_level": "strict"}, "privacy_level"),
        ({"name": None}, "name cannot be null"),
        ({"ip_salt": None}, "ip_salt cannot be null"),
    ],
)
def test_patch_refuses_unknown_fields_bad_values_and_meaningless_nulls(
    service: PixelService, admin: httpx.Client, body: dict[str, Any], problem: str
) -> None:
    create(admin, "acme", name="Acme")
    response = admin.patch("/api/v1/clients/acme", json=body)
    assert response.status_code == 422
    assert problem in response.json()["error"]["message"]
    assert admin.get("/api/v1/clients/acme").json()["privacy_level"] == "standard"
    assert len(service.changes) == 1


def test_unknown_clients_are_404_for_every_admin_call(admin: httpx.Client) -> None:
    calls = [
        admin.get("/api/v1/clients/ghost"),
        admin.patch("/api/v1/clients/ghost", json={"name": "Boo"}),
        admin.post("/api/v1/clients/ghost/deactivate"),
        admin.post("/api/v1/clients/ghost/activate"),
        admin.post("/api/v1/clients/ghost/write-key"),
        admin.post("/api/v1/clients/ghost/domains", json={"domain": "ghost.example"}),
        admin.delete("/api/v1/clients/ghost/domains/ghost.example"),
    ]
    assert [response.status_code for response in calls] == [404] * len(calls)
    assert {error_code(response) for response in calls} == {"not_found"}


def test_domains_are_added_canonically_owned_once_and_removed(
    service: PixelService, admin: httpx.Client, public: httpx.Client
) -> None:
    create(admin, "one", name="One")
    create(admin, "two", name="Two")

    added = admin.post("/api/v1/clients/one/domains", json={"domain": "HTTPS://Blog.Example:443/"})
    taken = admin.post("/api/v1/clients/two/domains", json={"domain": "blog.example"})
    config = public.get("/api/v1/config/domain/blog.example")
    removed = admin.delete("/api/v1/clients/one/domains/blog.example")
    removed_again = admin.delete("/api/v1/clients/one/domains/blog.example")

    assert (added.status_code, added.json()) == (
        201,
        {"client_id": "one", "domain": "blog.example"},
    )
    assert taken.status_code == 409
    assert "belongs to client 'one'" in taken.json()["error"]["message"]
    assert config.json()["client_id"] == "one"
    assert (removed.status_code, removed.content) == (204, b"")
    assert removed_again.status_code == 404
    assert public.get("/api/v1/config/domain/blog.example").status_code == 404
    assert len(service.changes) == 4  # two creations, one add, one removal


def test_every_successful_change_tells_the_host_and_nothing_else_does(
    service: PixelService, admin: httpx.Client
) -> None:
    create(admin, "acme", name="Acme")
    counts = [len(service.changes)]
    for method, path, body in [
        ("PATCH", "/api/v1/clients/acme", {"name": "Acme 2"}),
        ("POST", "/api/v1/clients/acme/deactivate", None),
        ("POST", "/api/v1/clients/acme/activate", None),
        ("POST", "/api/v1/clients/acme/write-key", None),
        ("POST", "/api/v1/clients/acme/domains", {"domain": "acme.example"}),
        ("DELETE", "/api/v1/clients/acme/domains/acme.example", None),
        ("GET", "/api/v1/clients/acme", None),
        ("GET", "/api/v1/clients", None),
        ("PATCH", "/api/v1/clients/acme", {}),
        ("PATCH", "/api/v1/clients/acme", {"privacy_level": "bad"}),
        ("DELETE", "/api/v1/clients/acme/domains/acme.example", None),
    ]:
        response = admin.request(method, path, json=body)
        assert response.status_code < 500, response.text
        counts.append(len(service.changes))
    assert counts == [1, 2, 3, 4, 5, 6, 7, 7, 7, 7, 7, 7]


def test_deactivate_and_activate_switch_the_client_off_and_on(
    admin: httpx.Client, public: httpx.Client
) -> None:
    create(admin, "acme", name="Acme", domains=["acme.example"])

    off = admin.post("/api/v1/clients/acme/deactivate")
    config_off = public.get("/api/v1/config/domain/acme.example")
    tracker_off = public.get("/pixel/acme/tracking.js")
    on = admin.post("/api/v1/clients/acme/activate")

    assert (off.status_code, off.json()["active"]) == (200, False)
    assert config_off.status_code == 404
    assert tracker_off.status_code == 404
    assert (on.status_code, on.json()["active"]) == (200, True)
    assert public.get("/api/v1/config/domain/acme.example").json()["client_id"] == "acme"


# ------------------------------------------------------------------------- secrets


def test_secrets_never_appear_outside_the_internal_endpoint(
    service: PixelService, admin: httpx.Client, public: httpx.Client
) -> None:
    created = create(
        admin,
        "clinic",
        name="Clinic",
        privacy_level="hipaa",
        ip_salt=SALT_HEX,
        export_credentials={"secret_access_key": CREDENTIAL},
        domains=["clinic.example"],
    )
    write_key = created["write_key"]
    digest = hashlib.sha256(write_key.encode()).hexdigest()

    answers = [
        orjson.dumps({k: v for k, v in created.items() if k != "write_key"}).decode(),
        admin.get("/api/v1/clients/clinic").text,
        admin.get("/api/v1/clients").text,
        admin.patch("/api/v1/clients/clinic", json={"name": "Clinic 2"}).text,
        admin.post("/api/v1/clients/clinic/deactivate").text,
        admin.post("/api/v1/clients/clinic/activate").text,
        public.get("/api/v1/config/domain/clinic.example").text,
        public.get("/pixel/clinic/tracking.js").text,
    ]
    for answer in answers:
        assert "clinic" in answer
        for secret in (SALT_HEX, CREDENTIAL, write_key, digest):
            assert secret not in answer.lower()
    assert admin.get("/api/v1/clients/clinic").json()["has_export_credentials"] is True
    with service.client(SERVICE_TOKEN) as collector:
        internal = collector.get("/api/v1/internal/domain/clinic.example").json()
    assert (internal["ip_salt"], internal["write_key_sha256"]) == (SALT_HEX, digest)


# --------------------------------------------------------------------- public config


def test_public_config_follows_domains_and_wildcards(
    admin: httpx.Client, public: httpx.Client
) -> None:
    create(admin, "acme", name="Acme", privacy_level="gdpr", domains=["*.acme.example"])

    found = public.get("/api/v1/config/domain/www.shop.acme.example")
    apex = public.get("/api/v1/config/domain/acme.example")
    unknown = public.get("/api/v1/config/domain/nobody.example")
    garbage = public.get("/api/v1/config/domain/not a host!")

    assert found.status_code == 200
    assert found.json() == {
        "client_id": "acme",
        "privacy_level": "gdpr",
        "privacy_mode": "gdpr",
        "ip_collection": "full",
        "honour_dnt": True,
        "consent": "none",
        "consent_required": False,
    }
    for response in (apex, unknown, garbage):
        assert response.status_code == 404
        assert error_code(response) == "not_found"


@pytest.mark.parametrize(("environment", "registered"), [("development", True), ("test", False)])
def test_the_development_client_is_registered_in_development_only(
    database_url: str, db: psycopg.Connection[Any], environment: str, registered: bool
) -> None:
    # Test databases come with it; remove it to see whether the service adds it back.
    db.execute("DELETE FROM client_domains WHERE client_id = 'client_test'")
    db.execute("DELETE FROM clients WHERE client_id = 'client_test'")

    with (
        running_service(database_url, ENVIRONMENT=environment) as service,
        service.client() as client,
    ):
        response = client.get("/api/v1/config/domain/localhost")

    if registered:
        assert response.status_code == 200
        assert response.json()["client_id"] == "client_test"
    else:
        assert response.status_code == 404


# ------------------------------------------------------------------------- internal


def test_internal_lookup_needs_the_service_token_and_returns_the_secrets(
    service: PixelService, admin: httpx.Client
) -> None:
    created = create(
        admin, "acme", name="Acme", consent_mode="anonymous_without_consent", ip_salt=SALT_HEX
    )
    admin.post("/api/v1/clients/acme/domains", json={"domain": "*.acme.example"})
    path = "/api/v1/internal/domain/www.acme.example"

    digest = hashlib.sha256(created["write_key"].encode()).hexdigest()
    by_key = f"/api/v1/internal/write-key/{digest}"

    for token in (None, "wrong", ADMIN_TOKEN):
        with service.client(token) as client:
            refused = client.get(path)
            assert client.get(by_key).status_code == 401
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "PIXEL_MANAGEMENT_TOKEN" in refused.json()["error"]["message"]
    with service.client(SERVICE_TOKEN) as collector:
        found = collector.get(path)
        unknown = collector.get("/api/v1/internal/domain/nobody.example")
        # The Segment API's lookup: by the write key's digest, never the key.
        assert collector.get(by_key).json() == found.json()
        assert collector.get(f"/api/v1/internal/write-key/{'0' * 64}").status_code == 404

    assert found.status_code == 200
    assert found.json() == {
        "client_id": "acme",
        "privacy_level": "standard",
        "ip_collection": "full",
        "honour_dnt": True,
        "consent_mode": "anonymous_without_consent",
        "bot_policy": "keep",
        "require_write_key": False,
        "ip_salt": SALT_HEX,
        "write_key_sha256": hashlib.sha256(created["write_key"].encode()).hexdigest(),
        "user_id_storage": None,
    }
    assert unknown.status_code == 404


def test_internal_lookup_is_closed_without_a_service_token(database_url: str) -> None:
    with running_service(database_url, PIXEL_MANAGEMENT_TOKEN=None) as service:
        with service.client(ADMIN_TOKEN) as admin:
            create(admin, "acme", name="Acme", domains=["acme.example"])
        with service.client(SERVICE_TOKEN) as collector:
            response = collector.get("/api/v1/internal/domain/acme.example")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == (
        "the internal API is closed until PIXEL_MANAGEMENT_TOKEN is set"
    )


def test_rotating_the_write_key_replaces_the_digest_collectors_see(
    service: PixelService, admin: httpx.Client
) -> None:
    old_key = create(admin, "acme", name="Acme", domains=["acme.example"])["write_key"]

    rotated = admin.post("/api/v1/clients/acme/write-key")

    new_key = rotated.json()["write_key"]
    assert rotated.status_code == 200
    assert rotated.json()["client_id"] == "acme"
    assert new_key.startswith("wk_") and new_key != old_key
    with service.client(SERVICE_TOKEN) as collector:
        digest = collector.get("/api/v1/internal/domain/acme.example").json()["write_key_sha256"]
    assert digest == hashlib.sha256(new_key.encode()).hexdigest()


# -------------------------------------------------------------------------- tracker


def embedded_config(script: str) -> dict[str, Any]:
    first_line = script.split("\n", 1)[0]
    prefix = f"{EMBEDDED_GLOBAL} = "
    assert first_line.startswith(prefix) and first_line.endswith(";")
    config: dict[str, Any] = orjson.loads(first_line[len(prefix) : -1])
    return config


def test_client_tracker_embeds_the_public_config_and_revalidates(
    admin: httpx.Client, public: httpx.Client
) -> None:
    create(admin, "acme", name="Acme", privacy_level="gdpr", consent_mode="required")

    tracker = public.get("/pixel/acme/tracking.js")

    assert tracker.status_code == 200
    assert tracker.headers["content-type"] == "application/javascript; charset=utf-8"
    assert tracker.headers["cache-control"] == "public, max-age=300"
    etag = tracker.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert embedded_config(tracker.text) == {
        "client_id": "acme",
        "privacy_level": "gdpr",
        "privacy_mode": "gdpr",
        "ip_collection": "full",
        "honour_dnt": True,
        "consent": "required",
        "consent_required": True,
        "endpoint": "https://collect.example.net/collect",
    }
    assert "Analytics pixel loaded for client" in tracker.text
    for validator in (etag, f'"other", W/{etag}', "*"):
        revalidated = public.get("/pixel/acme/tracking.js", headers={"If-None-Match": validator})
        assert (revalidated.status_code, revalidated.content) == (304, b"")
        assert revalidated.headers["etag"] == etag
    stale = public.get("/pixel/acme/tracking.js", headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200

    admin.patch("/api/v1/clients/acme", json={"privacy_level": "hipaa"})
    changed = public.get("/pixel/acme/tracking.js", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert embedded_config(changed.text)["privacy_mode"] == "hipaa"


def test_client_tracker_leaves_the_endpoint_to_the_page_without_a_collector_url(
    database_url: str,
) -> None:
    with running_service(database_url, EVOTHESIS_COLLECTOR_URL=None) as service:
        with service.client(ADMIN_TOKEN) as admin:
            create(admin, "acme", name="Acme")
        with service.client() as public:
            tracker = public.get("/pixel/acme/tracking.js")
    assert tracker.status_code == 200
    config = embedded_config(tracker.text)
    assert config["client_id"] == "acme"
    assert "endpoint" not in config


def test_client_tracker_is_404_for_unknown_clients(public: httpx.Client) -> None:
    response = public.get("/pixel/ghost/tracking.js")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert error_code(response) == "not_found"


# --------------------------------------------------------------------------- health


def test_health_reports_the_database_and_503_once_it_is_gone(
    postgres: PostgresServer, database_url: str
) -> None:
    with running_service(database_url) as service, service.client() as client:
        healthy = client.get("/health")
        name = urlsplit(database_url).path.lstrip("/")
        with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
        unhealthy = client.get("/health")

    assert healthy.status_code == 200
    assert healthy.json()["status"] == "healthy"
    assert healthy.json()["database"] == "connected"
    assert healthy.json()["service"] == "pixel-management"
    assert unhealthy.status_code == 503
    assert (unhealthy.json()["status"], unhealthy.json()["database"]) == (
        "unhealthy",
        "disconnected",
    )


def test_openapi_documents_every_pixel_management_route(public: httpx.Client) -> None:
    paths = public.get("/openapi.json").json()["paths"]
    assert {
        "/health",
        "/api/v1/config/domain/{domain}",
        "/pixel/{client_id}/tracking.js",
        "/api/v1/internal/domain/{domain}",
        "/api/v1/clients",
        "/api/v1/clients/{client_id}",
        "/api/v1/clients/{client_id}/deactivate",
        "/api/v1/clients/{client_id}/activate",
        "/api/v1/clients/{client_id}/write-key",
        "/api/v1/clients/{client_id}/domains",
        "/api/v1/clients/{client_id}/domains/{domain}",
    } <= set(paths)
