"""A real browser for the tests of drgw's web pages (the master's dashboard, the gateway's local
page): Debian's chromium driven by Playwright, headless, launched from /usr/bin/chromium — never a
browser build Playwright would download.

Without chromium or the playwright package the test is skipped with a reason the suite's summary
counts as a missing tool (tests/areas.py): under CI=true that fails the run, elsewhere it skips.
`scripts/setup --test` installs both (apt: chromium; the test extra: playwright).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = Path("/usr/bin/chromium")
# Headless in a container as root: no sandbox (needs user namespaces), no GPU, and nothing that
# phones home or updates itself during a test.
FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage")
FIX = "run scripts/setup --test (apt: chromium; pip: the test extra's playwright)"


def chromium_or_skip() -> Path:
    """The browser's path, or skip (CI: fail through the missing-tool rule) naming the fix."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.skip(f"playwright is not installed: {FIX}")
    found = CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")
    if found is None:
        pytest.skip(f"chromium is not installed: {FIX}")
    return Path(found)


@contextlib.asynccontextmanager
async def chromium_page(*, width: int = 1280, height: int = 900) -> AsyncIterator[Page]:
    """One page of a fresh headless chromium, closed with the browser at the end."""
    from playwright.async_api import async_playwright

    executable = chromium_or_skip()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(executable), headless=True,
                                           args=list(FLAGS))
        try:
            page = await browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            await browser.close()
