"""Real nginx (Debian's package) in front of collectors on loopback, configured from the
project's own template (``deploy/nginx/evothesis.conf.template``) exactly as production
renders it, only with loopback addresses, an unprivileged port and paths in a folder.

The template is included at the http level of a minimal main configuration written here:
``daemon off`` so the process stays under the caller's control (stopped by its PID), with
pid file, logs, temporary files and cache in that folder. Used by the tests (the
``nginx_factory`` fixture) and by ``python -m benchmarks.run --nginx``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from evothesis.config import Settings
from tests.support.loopback import free_port, wait_listening

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "evothesis.conf.template"
#: What envsubst (and the nginx image) replaces: ``${NAME}``; nginx's own ``$name`` stays.
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def nginx_binary() -> str:
    """Debian installs nginx in /usr/sbin, which is not on every user's PATH."""
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise RuntimeError("nginx is not installed (scripts/install installs Debian's nginx)")
    return found


def placeholders(text: str | None = None) -> set[str]:
    """The variables the template needs (every one is documented in the env templates)."""
    return set(PLACEHOLDER.findall(TEMPLATE.read_text() if text is None else text))


def render(values: Mapping[str, str]) -> str:
    """The template with every placeholder filled, as envsubst would; a missing value is an
    error here (envsubst would leave an empty string and nginx a confusing message)."""
    text = TEMPLATE.read_text()
    missing = placeholders(text) - values.keys()
    if missing:
        raise KeyError(f"no value for {sorted(missing)}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def upstream_servers(addresses: Iterable[str]) -> str:
    """``NGINX_*_SERVERS`` for host:port addresses: one ``server`` directive each."""
    return " ".join(f"server {address};" for address in addresses)


def demo_root() -> str:
    """The demo site as the package ships it (the Docker image mounts the same folder)."""
    return str(resources.files("evothesis").joinpath("static/demo"))


def loopback_values(
    folder: Path,
    port: int,
    collectors: Iterable[str],
    pixel_management: Iterable[str],
    *,
    rate: str = "100000r/s",
    burst: int = 10000,
    max_body_bytes: int = Settings.model_fields["max_body_bytes"].default,
) -> dict[str, str]:
    """Template values for nginx on 127.0.0.1:``port`` with its files under ``folder``.

    The body limit is the collector's default, as the env templates give both the same
    ``MAX_BODY_BYTES``. The default rate is high enough that load from one address is never
    limited; the rate limit has its own test with a low one.
    """
    return {
        "NGINX_LISTEN": f"127.0.0.1:{port}",
        "NGINX_COLLECTOR_SERVERS": upstream_servers(collectors),
        "NGINX_PIXEL_MANAGEMENT_SERVERS": upstream_servers(pixel_management),
        "NGINX_DEMO_ROOT": demo_root(),
        "NGINX_CACHE_DIR": str(folder / "cache"),
        "NGINX_ACCESS_LOG": str(folder / "access.log"),
        "NGINX_RATE": rate,
        "NGINX_BURST": str(burst),
        "MAX_BODY_BYTES": str(max_body_bytes),
    }


#: What a deployment behind a cloud load balancer adds (the template's comment says so):
#: nginx takes the client's address from the balancer's X-Forwarded-For. Tests use it to
#: send as an outside address from loopback.
BEHIND_BALANCER = "set_real_ip_from 127.0.0.1;\n    real_ip_header X-Forwarded-For;\n"


def main_config(folder: Path, site: str, *, behind_balancer: bool = False) -> Path:
    """Write the main configuration around the rendered ``site``; returns its path."""
    (folder / "temp").mkdir(parents=True, exist_ok=True)
    (folder / "evothesis.conf").write_text(site)
    # Started as root, nginx would switch its workers to "nobody", who cannot read a
    # private temporary folder.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = folder / "temp"
    conf = folder / "nginx.conf"
    conf.write_text(
        f"""{user}daemon off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    {BEHIND_BALANCER if behind_balancer else ""}include {folder / "evothesis.conf"};
}}
"""
    )
    return conf


def check_config(folder: Path, site: str) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``site`` (it loads the configuration, resolving upstream hosts)."""
    conf = main_config(folder, site)
    return subprocess.run(
        [nginx_binary(), "-t", "-p", str(folder), "-c", str(conf), "-e", str(folder / "t.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )


@dataclass
class Nginx:
    """A running nginx master process started by ``start_nginx``."""

    url: str
    folder: Path
    process: subprocess.Popen[bytes]

    def access_log(self) -> list[str]:
        path = self.folder / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def upstreams(self, request_line: str, count: int, timeout: float = 10) -> list[str]:
        """The upstream nginx logged for each of the ``count`` requests starting with
        ``request_line`` (``-`` where nginx answered itself). nginx writes a line after its
        answer has gone out, so this waits for them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                line.split(" up=", 1)[1].split(" ", 1)[0]
                for line in self.access_log()
                if f'"{request_line} ' in line
            ]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def stop(self) -> None:
        """Graceful stop (SIGQUIT lets workers finish their requests), then SIGKILL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nginx(
    folder: Path, values: Mapping[str, str], timeout: float = 15, *, behind_balancer: bool = False
) -> Nginx:
    """Start nginx on the rendered template; return once it accepts connections."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = main_config(folder, render(values), behind_balancer=behind_balancer)
    listen = values["NGINX_LISTEN"]
    host, _, port = listen.rpartition(":")
    with (folder / "nginx.out").open("wb") as output:
        process = subprocess.Popen(
            [nginx_binary(), "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    nginx = Nginx(f"http://{listen}", folder, process)
    try:
        wait_listening(process, int(port), host=host, timeout=timeout)
    except RuntimeError as exc:
        errors = (folder / "error.log").read_text() if (folder / "error.log").exists() else ""
        nginx.stop()
        raise RuntimeError(f"nginx {exc}:\n{errors}") from None
    return nginx


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[Callable[..., Nginx]]:
    """Factory: nginx on a free port in front of ``collectors`` and ``pixel_management``
    (host:port lists; ``loopback_values`` options such as ``rate``; ``behind_balancer``:
    the client's address comes from X-Forwarded-For); stopped after the test."""
    running: list[Nginx] = []

    def start(
        collectors: list[str],
        pixel_management: list[str],
        *,
        behind_balancer: bool = False,
        **options: Any,
    ) -> Nginx:
        folder = tmp_path / f"nginx-{len(running)}"
        values = loopback_values(folder, free_port(), collectors, pixel_management, **options)
        running.append(start_nginx(folder, values, behind_balancer=behind_balancer))
        return running[-1]

    yield start
    for nginx in running:
        nginx.stop()
