"""Browser fixtures for the acceptance tests: Debian's Chromium, driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Only loopback is reachable. "localhost" must be mapped explicitly: `MAP *` applies to
    # it too (it then fails with ERR_NAME_NOT_RESOLVED), and mapping it to 127.0.0.1 rather
    # than excluding it keeps Chromium from trying ::1, where the collector does not listen.
    # Names under console.test (a reserved TLD) are a client's sites in the console tests.
    "--host-resolver-rules=MAP localhost 127.0.0.1, MAP *.console.test 127.0.0.1, "
    "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole session; tests isolate themselves in contexts."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium package "
            "(scripts/install test installs it, or: apt-get install chromium)",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            instance.close()
