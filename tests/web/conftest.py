"""One headless Chromium per session (the operating system's, through Playwright), one page per test, and the
page served in-process against the real sandbox."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from importer.settings import Settings
from importer.web import Served, started

CHROMIUM = "/usr/bin/chromium"  # dev.py installs it; missing, these tests fail (they are never skipped)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run python3 dev.py test, which installs it"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def served(sandbox: Any) -> Iterator[Served]:
    """The page against the sandbox, no token given to the server: the user types it."""
    with started(replace(Settings(base_url=sandbox.url), batch_size=10, concurrency=2)) as page:
        yield page


@pytest.fixture
def page(browser: Browser, served: Served) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    tab.goto(served.url)
    yield tab
    context.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each step's screenshot goes."""
    return tmp_path_factory.mktemp("screenshots")
