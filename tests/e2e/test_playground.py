"""The web playground in a real headless Chromium against a real server."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright

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


def sign_in(page: Page, base: str, key: str) -> None:
    page.goto(base)
    assert page.title() == "Castframe playground"
    page.fill("#api-key", key)
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#account:has-text('test')")  # GET /v2/me: team · key mode · credits


def test_submit_in_the_browser_and_see_the_image(
    castframe_sqlite: Castframe, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "`make test` installs Debian's chromium for this test"
    server, base = castframe_sqlite.server()
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
        sign_in(page, base, key)
        assert page.inner_text("#account") == "browser · test · 0 credits available"
        page.set_input_files("#file", str(reference))
        # The upload's url (not upload://) goes in the reference field, and is submitted as is.
        page.wait_for_function(
            "prefix => document.getElementById('reference').value.startsWith(prefix)",
            arg=f"{base}/v2/files/uploads/",
        )
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
        assert "864\u00d71152" in caption and "seed 42" in caption  # from result.imageDetails
        assert page.inner_text("figcaption .badge") == "same character \u2713"
        download = page.get_attribute("figcaption a", "download") or ""
        source = page.get_attribute("img.result", "src") or ""
        assert download.endswith("-0.png") and source.startswith(f"{base}/v2/files/")
        page.wait_for_selector("#history li")
        assert "detective" in page.inner_text("#history")
        page.screenshot(path=str(artifacts / "playground.png"), full_page=True)
        # A bad request shows the server's error, not a crash.
        page.fill("#reference", "ftp://example.com/x.png")
        page.click("#submit")
        page.wait_for_selector("#error:not([hidden])")
        shown = page.inner_text("#error")  # the body's code, its `error`, and its details
        assert shown.startswith("url_not_allowed: only http and https URLs are allowed")
        assert "(ideogramParams.character_reference_image: " in shown

        # A cancelled job: a server without a worker keeps it queued until it is cancelled.
        server.terminate()
        _, idle = castframe_sqlite.server("--no-worker")
        sign_in(page, idle, key)
        page.fill("#reference", "https://example.com/me.png")
        page.fill("#prompt", "a knight who never gets drawn")
        page.click("#submit")
        page.wait_for_selector("#status[data-status='QUEUED']")
        job_id = page.evaluate(
            "fetch('/v2/jobs?limit=1', {headers: {'X-API-Key': localStorage.getItem('castframe.key')}})"
            ".then(r => r.json()).then(b => b.jobs[0].id)"
        )
        cancelled = httpx.post(f"{idle}/v2/jobs/{job_id}/cancel", headers={"X-API-Key": key})
        assert cancelled.json()["status"] == "CANCELLED"
        page.wait_for_selector("#status[data-status='CANCELLED']")  # the page stops polling
        assert page.inner_text("#error").startswith("cancelled: ")
        assert page.is_hidden("#progress")
        page.wait_for_selector("#history li:has-text('CANCELLED')")
        browser.close()
    assert errors == []
