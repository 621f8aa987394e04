"""Fixtures for the operations tests: a headless system Chromium and pages that may load only from
loopback. The servers (MLflow, and MASH reproduced once through DVC while tracked on it: `mlflow_server`,
`mash_dvc`) are session fixtures of tests/conftest.py, shared with the DVC tests of tests/integration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO, env, free_port, make_project, run, start, stop, wait_http  # noqa: F401

CHROMIUM = os.environ.get("CVPR24_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
# a dead proxy on loopback: a tool that tries to reach the internet (kedro-viz's version check) fails at
# once instead of downloading anything; loopback itself is reached directly
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def require_chromium() -> str:
    """The system Chromium (Debian's `chromium`, installed by `make browser` / .ci/run). Missing: a skip
    locally, a failure in CI (CI=true), so the browser tests can never silently not run there."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    msg = f"{CHROMIUM} not found: run `make browser` (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def browser():
    exe = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def offline_page(browser, width: int = 1600, height: int = 1000):
    """A page that may load only from loopback (fonts or analytics from elsewhere are refused)."""
    page = browser.new_page(viewport={"width": width, "height": height})

    def guard(route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:")):
            return route.continue_()
        return route.abort()

    page.route("**/*", guard)
    return page
