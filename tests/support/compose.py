"""docker-compose.yml as Compose itself resolves it (``config`` needs no Docker engine), in
a shell that holds nothing of the test process's settings: a variable of the shell would
win over the env file, as it does for an operator."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.nginx import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
#: The anchor every Evothesis service (pixel-management, fastapi, worker) is built from.
APPLICATION_SERVICES = ("pixel-management", "fastapi", "worker")


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


def compose_config(env_file: str | Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """``docker compose --env-file ENV_FILE config`` in the project folder, with only
    ``PATH``, ``HOME`` and ``environment`` in the shell."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **environment}
    return subprocess.run(
        [*compose_command(), "--env-file", str(env_file), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved(env_file: str | Path, **environment: str) -> dict[str, Any]:
    result = compose_config(env_file, **environment)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def service_environment(config: dict[str, Any], service: str) -> dict[str, str]:
    """What the service's container gets: a variable listed without a value and set
    nowhere (``null``) is not set in the container."""
    environment = config["services"][service].get("environment", {})
    if isinstance(environment, list):  # Compose v1 may print NAME=value items
        environment = dict(
            item.split("=", 1) if "=" in item else (item, None) for item in environment
        )
    return {name: str(value) for name, value in environment.items() if value is not None}


def passed_through() -> set[str]:
    """The variables the application services take from the env file as they are (listed
    without a value in docker-compose.yml)."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    environment = raw["x-evothesis"]["environment"]
    return {name for name, value in environment.items() if value is None}


def computed() -> dict[str, str]:
    """The variables docker-compose.yml sets for the application services itself (from
    other variables, with defaults), unresolved."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    environment = raw["x-evothesis"]["environment"]
    return {name: str(value) for name, value in environment.items() if value is not None}


def env_file_values(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of an env file as Compose reads them (comments and blank
    lines skipped; the last of a name wins)."""
    values = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        name, value = stripped.split("=", 1)
        values[name.strip()] = value
    return values
