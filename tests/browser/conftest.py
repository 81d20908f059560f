"""Browser tests: Debian's chromium, headless, driven by Playwright, on loopback only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

# The UI fixtures of the integration tests: the demo training archive, and the check that no
# UI process outlives its test.
from tests.integration.conftest import demo_archive, no_ui_left_behind  # noqa: F401

# Playwright cannot download its own browser here (and CI must not): Debian's, from tests/run.sh.
CHROMIUM = os.environ.get("IDDS_VIS_TEST_CHROMIUM", "/usr/bin/chromium")
# Screenshots: $IDDS_VIS_TEST_ARTIFACTS, else tests/browser/screenshots/ in the checkout (git
# ignores it; CI keeps the workspace's directory as the run's artefact).
ARTIFACTS = Path(
    os.environ.get("IDDS_VIS_TEST_ARTIFACTS") or Path(__file__).resolve().parent / "screenshots"
)


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: tests/run.sh installs Debian's chromium",
                    pytrace=False)  # fmt: skip
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go, for a person to look at after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
