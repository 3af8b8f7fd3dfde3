"""The web playground in a real headless Chromium against a real server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.e2e.conftest import ROOT, Castframe
from tests.support.images import astronaut_png

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_submit_in_the_browser_and_see_the_image(
    castframe_sqlite: Castframe, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "`make test` installs Debian's chromium for this test"
    _, base = castframe_sqlite.server()
    key = castframe_sqlite.key(account="browser", mode="test", credits=0)
    reference = tmp_path / "me.png"
    reference.write_bytes(astronaut_png())
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(base)
        assert page.title() == "Castframe playground"
        page.fill("#api-key", key)
        page.dispatch_event("#api-key", "change")
        page.wait_for_selector("#account:has-text('test')")
        page.set_input_files("#file", str(reference))
        page.wait_for_function("document.getElementById('reference').value.startsWith('upload://')")
        page.fill("#prompt", "a detective walking down a rainy city street at night")
        page.select_option("#rendering_speed", "turbo")
        page.select_option("#aspect_ratio", "3:4")
        page.fill("#seed", "42")
        page.click("#submit")
        page.wait_for_selector("img.result", timeout=60_000)
        page.wait_for_function("document.querySelector('img.result').naturalWidth > 0")
        assert page.get_attribute("#status", "data-status") == "COMPLETED"
        size = page.evaluate(
            "[document.querySelector('img.result').naturalWidth,"
            " document.querySelector('img.result').naturalHeight]"
        )
        assert size == [864, 1152]
        caption = page.inner_text("figcaption")
        assert "seed 42" in caption
        page.wait_for_selector("#history li")
        assert "detective" in page.inner_text("#history")
        page.screenshot(path=str(artifacts / "playground.png"), full_page=True)
        # A bad request shows the server's error, not a crash.
        page.fill("#reference", "ftp://example.com/x.png")
        page.click("#submit")
        page.wait_for_selector("#error:not([hidden])")
        assert "url_not_allowed" in page.inner_text("#error")
        browser.close()
    assert errors == []
