"""Issue 19: a path no route knows gets a page in the app's style (a browser) or JSON (under
``/api/``), not aiohttp's bare "404: Not Found"; the path is shown escaped, never as markup.
A route's own 404 keeps its words.

Real parts: headless chromium and the web app on loopback (the catalog's test site)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.catalog_support import JANE, site
from tests.oidc_issuer import running_issuer

pytestmark = [pytest.mark.browser]


async def test_unknown_paths_get_a_styled_404(
    tmp_path: Path, browser: Browser, artifacts: Path
) -> None:
    async with running_issuer() as issuer, site(tmp_path, issuer) as web:
        page = await browser.new_page()
        alerts: list[str] = []
        page.on("dialog", lambda d: alerts.append(d.message))
        hostile = "/nope/%3Cimg%20src=x%20onerror=alert(1)%3E"
        response = await page.goto(web.url + hostile)
        assert response is not None and response.status == 404
        await expect(page.locator("#headline")).to_have_text("Page not found")
        await expect(page.locator("#path")).to_have_text("/nope/<img src=x onerror=alert(1)>")
        await expect(page.locator("main img")).to_have_count(0)  # text, not markup
        await expect(page.locator('a[href="/catalog"]').first).to_be_visible()
        assert (
            await page.evaluate("getComputedStyle(document.querySelector('header.bar')).display")
            != "none"
        )
        assert response.headers.get("content-security-policy")  # the pages' headers
        await page.screenshot(path=str(artifacts / "not-found.png"), full_page=True)
        assert alerts == []

        async with web.http.get("/api/v1/nope/<b>", headers=web.as_user(JANE)) as resp:
            assert resp.status == 404 and resp.content_type == "application/json"
            assert await resp.json() == {"error": "no such API endpoint"}
        async with web.http.get("/catalog/nope", headers=web.as_user(JANE)) as resp:
            assert resp.status == 404 and resp.content_type == "text/html"
        # A route's own 404 is left as it was.
        async with web.http.get("/vis/mlflow-x-0123/") as resp:
            assert resp.status == 404 and "Page not found" not in await resp.text()
