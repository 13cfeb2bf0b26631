"""The deployment files as shipped: docker-compose.yml resolved by Compose itself (``config``
needs no Docker engine) with both env templates, and the nginx configuration exactly as the
nginx service of that resolved file would render it, loaded by ``nginx -t``.

``nginx -t`` resolves upstream host names while it loads the configuration, and the compose
service names (fastapi, pixel-management) exist only inside the compose network. The test
checks that every upstream names a service of the compose file, then maps those names to
127.0.0.1; the log and cache paths of the nginx image are moved to a temporary folder. All
other values are the production ones.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evothesis.config import setting_names
from tests.support.compose import (
    APPLICATION_SERVICES,
    compose_config,
    computed,
    passed_through,
    resolved,
    service_environment,
)
from tests.support.nginx import ROOT, check_config, placeholders, render

UPSTREAM = re.compile(r"server ([A-Za-z0-9.-]+):(\d+)")


def test_the_development_stack_resolves() -> None:
    config = resolved(".env.development")
    services = config["services"]
    assert set(services) == {"postgres", "pixel-management", "fastapi", "worker", "nginx"}
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
    for name in ("postgres", "pixel-management", "worker", "nginx"):
        assert services[name]["healthcheck"]["test"], name  # fastapi: the image's
    collector = service_environment(config, "fastapi")
    assert collector["DATABASE_URL"].startswith("postgresql://postgres:")
    assert collector["DATABASE_URL"].endswith("@postgres:5432/evothesis")
    assert collector["PIXEL_MANAGEMENT_URL"] == "http://pixel-management:8001"
    assert collector["TRUSTED_PROXIES"] == "172.28.0.0/24"
    command = services["fastapi"]["command"]
    assert command[:2] == ["evothesis", "serve"]
    assert command[command.index("--workers") + 1] == "1"


def test_the_production_stack_requires_a_database_password_and_scales_postgres() -> None:
    refused = compose_config(".env.production")
    assert refused.returncode != 0
    assert "POSTGRES_PASSWORD must be set" in refused.stderr

    config = resolved(".env.production", POSTGRES_PASSWORD="from-the-operator")
    command = " ".join(config["services"]["postgres"]["command"])
    for setting in ("shared_buffers=2GB", "work_mem=8MB", "max_connections=200"):
        assert setting in command
    collector = service_environment(config, "fastapi")
    assert collector["ENVIRONMENT"] == "production"
    assert (collector["DATABASE_POOL_SIZE"], collector["DATABASE_MAX_OVERFLOW"]) == ("10", "10")
    fastapi = config["services"]["fastapi"]["command"]
    assert fastapi[fastapi.index("--workers") + 1] == "4"


@pytest.mark.parametrize("env_file", [".env.development", ".env.production"])
def test_the_nginx_configuration_compose_renders_loads(env_file: str, tmp_path: Path) -> None:
    config = resolved(env_file, POSTGRES_PASSWORD="from-the-operator")
    values = service_environment(config, "nginx")
    assert set(values) == placeholders(), "compose passes exactly the template's values"

    for name in ("NGINX_COLLECTOR_SERVERS", "NGINX_PIXEL_MANAGEMENT_SERVERS"):
        hosts = {host for host, _ in UPSTREAM.findall(values[name])}
        assert hosts and hosts <= set(config["services"]), (name, values[name])
        values[name] = UPSTREAM.sub(r"server 127.0.0.1:\2", values[name])
    values["NGINX_CACHE_DIR"] = str(tmp_path / "cache")
    values["NGINX_ACCESS_LOG"] = str(tmp_path / "access.log")

    result = check_config(tmp_path, render(values))
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


#: Passed through although Evothesis does not read them itself: obstore does.
CLOUD_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_SERVICE_ACCOUNT",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
}


def test_the_application_services_get_every_setting_from_the_env_file() -> None:
    """No env_file of a fixed name: every variable Evothesis reads is passed from the file
    given to --env-file, or set by compose itself from it."""
    assert set(computed()) == {"DATABASE_URL", "TRUSTED_PROXIES", "EVOTHESIS_DATA_DIR"}
    assert passed_through() == (setting_names() - set(computed())) | CLOUD_CREDENTIALS
    raw = (ROOT / "docker-compose.yml").read_text()
    assert "env_file" not in raw and "ENV_FILE" not in raw


@pytest.mark.parametrize("env_file", [".env.development", ".env.production"])
def test_a_setting_the_file_leaves_commented_is_not_set_in_the_containers(
    env_file: str,
) -> None:
    config = resolved(env_file, POSTGRES_PASSWORD="from-the-operator")
    for service in APPLICATION_SERVICES:
        environment = service_environment(config, service)
        assert "REGISTRY_CACHE_TTL" not in environment, service  # commented: the default
        assert "PROCESSED_S3_BUCKET" not in environment, service  # CLIENT_S3_BUCKET is set
        assert environment["CLIENT_S3_BUCKET"], service
        assert environment["EVOTHESIS_DATA_DIR"] == "/var/lib/evothesis", service


def test_the_postgres_role_and_database_are_the_ones_psql_uses() -> None:
    """`docker compose exec postgres psql -U postgres -c "..."` (the seeds' operator
    commands) runs in the postgres container: the role exists, and psql opens Evothesis's
    database with the psqlrc that lets the seeds' queries run as written."""
    config = resolved(".env.development")
    postgres = service_environment(config, "postgres")
    assert postgres["POSTGRES_USER"] == "postgres" == postgres["PGUSER"]
    assert postgres["PGDATABASE"] == postgres["POSTGRES_DB"] == "evothesis"
    assert postgres["PSQLRC"] == "/etc/postgresql/psqlrc"
    mounts = [str(volume) for volume in config["services"]["postgres"]["volumes"]]
    assert any("deploy/postgres/psqlrc" in m and "/etc/postgresql/psqlrc" in m for m in mounts)
