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

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.nginx import ROOT, check_config, placeholders, render

UPSTREAM = re.compile(r"server ([A-Za-z0-9.-]+):(\d+)")


def compose_command() -> list[str]:
    """Compose v2 (``docker compose``) when installed, else Debian's docker-compose."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is None:
        pytest.fail("neither `docker compose` nor docker-compose (scripts/install installs it)")
    return [legacy]


def compose_config(env_file: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **environment}
    return subprocess.run(
        [*compose_command(), "--env-file", env_file, "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved(env_file: str, **environment: str) -> dict[str, Any]:
    result = compose_config(env_file, **environment)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def service_environment(config: dict[str, Any], service: str) -> dict[str, str]:
    environment = config["services"][service]["environment"]
    if isinstance(environment, list):  # Compose v1 may print NAME=value items
        environment = dict(item.split("=", 1) for item in environment)
    return {name: str(value) for name, value in environment.items()}


def test_the_development_stack_resolves() -> None:
    config = resolved(".env.development")
    services = config["services"]
    assert set(services) == {"postgres", "pixel-management", "fastapi", "worker", "nginx"}
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
    for name in ("postgres", "pixel-management", "worker", "nginx"):
        assert services[name]["healthcheck"]["test"], name  # fastapi: the image's
    collector = service_environment(config, "fastapi")
    assert collector["DATABASE_URL"].startswith("postgresql://evothesis:")
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
