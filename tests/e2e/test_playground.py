"""The web playground in a real headless Chromium against a real server.

The whole path a person takes: a key (a wrong one first), an upload (a non-image first), a
job to its image, errors in plain words beside what caused them and gone once fixed, a
double-click that makes one job, Cancel, the keyboard alone, and a 390 px wide phone.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, sync_playwright

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
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "`make test` installs Debian's chromium for this test"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    path = tmp_path / "me.png"
    path.write_bytes(astronaut_png())
    return path


def open_page(browser: Browser, viewport: dict[str, int]) -> tuple[Page, list[str]]:
    page = browser.new_page(viewport=viewport)  # type: ignore[arg-type]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def sign_in(page: Page, base: str, key: str) -> None:
    page.goto(base)
    assert page.title() == "Castframe playground"
    page.fill("#api-key", key)
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#account:has-text('test')")  # GET /v2/me: team · key mode · credits


def upload(page: Page, base: str, path: Path) -> None:
    page.set_input_files("#file", str(path))
    wait_for_upload(page, base)


def wait_for_upload(page: Page, base: str) -> None:
    # The upload's url (not upload://) goes in the reference field, and is submitted as is.
    page.wait_for_function(
        "prefix => document.getElementById('reference').value.startsWith(prefix)",
        arg=f"{base}/v2/files/uploads/",
    )


def job_count(base: str, key: str) -> int:
    return len(httpx.get(f"{base}/v2/jobs?limit=100", headers={"X-API-Key": key}).json()["jobs"])


def no_sideways_scroll(page: Page) -> bool:
    return bool(
        page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
    )


def test_submit_in_the_browser_and_see_the_image(
    castframe_sqlite: Castframe, browser: Browser, reference: Path, tmp_path: Path
) -> None:
    _, base = castframe_sqlite.server()
    key = castframe_sqlite.key(account="browser", mode="test", credits=0)
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page, errors = open_page(browser, DESKTOP)

    # A mistyped key says so in plain words beside the key; the right one clears it.
    page.goto(base)
    page.fill("#api-key", "afk_test_mistyped")
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#account.error")
    assert page.inner_text("#account").startswith("This API key is not valid.")
    sign_in(page, base, key)
    assert page.inner_text("#account") == "browser · test · 0 credits available"
    assert "error" not in (page.get_attribute("#account", "class") or "")

    # A file that is not an image: the reason under the reference, and no old URL left behind.
    upload(page, base, reference)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are notes, not a picture")
    page.set_input_files("#file", str(not_an_image))
    page.wait_for_selector("#reference-error:not([hidden])")
    assert page.inner_text("#reference-error").startswith(
        "notes.png: The file is not a PNG, JPEG or WebP image"
    )
    assert "Error" not in page.inner_text("#reference-error")  # no library names
    assert page.input_value("#reference") == ""
    assert page.is_hidden("#preview")
    assert page.is_visible("#choose")  # the way to choose another file stays
    upload(page, base, reference)
    assert page.is_hidden("#reference-error")
    assert page.is_visible("#choose") and page.is_visible("#preview")

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
    consistency = page.inner_text("figcaption .badge")  # the verdict and its distance
    assert consistency.startswith("same character \u2713 \u00b7 distance 0.")
    download = page.get_attribute("figcaption a", "download") or ""
    source = page.get_attribute("img.result", "src") or ""
    assert download.endswith("-0.png") and source.startswith(f"{base}/v2/files/")
    assert page.inner_text("#submit") == "Generate" and page.is_enabled("#submit")
    assert page.is_hidden("#cancel")
    page.wait_for_selector("#history li")
    assert "detective" in page.inner_text("#history")
    page.screenshot(path=str(artifacts / "playground.png"), full_page=True)

    # A refused field: the server's reason beside that field, gone once the field is edited.
    page.fill("#reference", "ftp://example.com/x.png")
    page.click("#submit")
    page.wait_for_selector("#reference-error:not([hidden])")
    assert page.inner_text("#reference-error").startswith("Only http and https URLs are allowed")
    assert page.get_attribute("#reference", "aria-invalid") == "true"
    assert page.is_hidden("#error")
    page.fill("#reference", "https://example.com/me.png")
    assert page.is_hidden("#reference-error")
    assert page.get_attribute("#reference", "aria-invalid") is None
    page.fill("#seed", "-5")
    page.click("#submit")
    page.wait_for_selector("#seed-error:not([hidden])")
    assert page.inner_text("#seed-error") == "Input should be greater than or equal to 0."
    page.fill("#seed", "5")
    assert page.is_hidden("#seed-error")
    page.fill("#prompt", "   ")
    page.click("#submit")  # said before anything is sent
    assert page.inner_text("#prompt-error") == "Describe the picture in the prompt."

    # The API docs linked from the banner render with this server alone: every other host
    # is cut off, as on a machine without internet.
    outside: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(f"{base}/docs")
    page.wait_for_selector(".swagger-ui .info .title:has-text('Castframe')")
    page.wait_for_selector(".opblock-summary-path:has-text('/v2/images/generate')")
    assert outside == []
    assert errors == []


def test_one_job_per_double_click_cancel_and_errors_in_their_place(
    castframe_sqlite: Castframe, browser: Browser
) -> None:
    # A server without a worker keeps jobs queued until they are cancelled.
    _, base = castframe_sqlite.server("--no-worker")
    key = castframe_sqlite.key(account="browser", mode="test", credits=0)
    page, errors = open_page(browser, DESKTOP)
    keys_sent: list[str] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/v2/images/generate"):
            keys_sent.append(request.headers.get("idempotency-key", ""))

    page.on("request", record)
    sign_in(page, base, key)
    page.fill("#reference", "https://example.com/me.png")
    page.fill("#prompt", "a knight who never gets drawn")

    page.dblclick("#submit")
    page.wait_for_selector("#status[data-status='QUEUED']")
    assert job_count(base, key) == 1  # a double-click is one job
    assert len(keys_sent) == 1
    # While the job runs, the button shows it rather than offering another one.
    assert page.is_disabled("#submit")
    assert page.inner_text("#submit").startswith("Generating\u2026")
    assert page.is_visible("#cancel")

    page.click("#cancel")
    page.wait_for_selector("#status[data-status='CANCELLED']")  # and the page stops polling
    assert page.is_hidden("#progress") and page.is_hidden("#cancel")
    # A job's failure is told in the Result panel, not under the form.
    assert page.is_visible("#current #job-error")
    assert page.get_attribute("#job-error", "data-code") == "cancelled"
    assert page.is_hidden("#error")
    page.wait_for_selector("#history li:has-text('CANCELLED')")
    assert page.inner_text("#submit") == "Generate"

    # The finished job is done with: Generate again (same inputs) is a new job, new key.
    page.click("#submit")
    page.wait_for_selector("#status[data-status='QUEUED']")
    assert job_count(base, key) == 2
    assert len(set(keys_sent)) == 2
    page.click("#cancel")
    page.wait_for_selector("#status[data-status='CANCELLED']")

    # A refusal of the whole request, in plain words under the form; trying again unchanged
    # sends the same Idempotency-Key (nothing could be charged twice), a change a new one.
    live = castframe_sqlite.key(account="broke", mode="live", credits=0)
    page.fill("#api-key", live)
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#account:has-text('broke')")
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert page.inner_text("#error").startswith("The account has too few credits for this job.")
    assert page.get_attribute("#error", "data-code") == "insufficient_credits"
    page.click("#submit")
    page.wait_for_function("document.getElementById('submit').textContent === 'Generate'")
    assert len(keys_sent) == 4 and keys_sent[2] == keys_sent[3]
    page.fill("#prompt", "a knight, drawn at last")
    assert page.is_hidden("#error")  # editing the form clears what was said about it
    page.click("#submit")
    page.wait_for_selector("#error:not([hidden])")
    assert len(keys_sent) == 5 and keys_sent[4] != keys_sent[3]
    assert errors == []


def tab_to(page: Page, element_id: str, presses: int = 40) -> None:
    """Press Tab until the element has the focus: it is reachable by keyboard alone."""
    for _ in range(presses):
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} cannot be reached with Tab")


def test_the_whole_path_with_the_keyboard_alone(
    castframe_sqlite: Castframe, browser: Browser, reference: Path
) -> None:
    _, base = castframe_sqlite.server()
    key = castframe_sqlite.key(account="keys", mode="test", credits=0)
    page, errors = open_page(browser, DESKTOP)
    # Listening from the start turns Chromium's file-chooser interception on before the key
    # press below (turned on by expect_file_chooser alone, it can lag behind the dialog).
    choosers: list[Any] = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    page.goto(base)
    tab_to(page, "api-key")
    page.keyboard.type(key)
    page.keyboard.press("Tab")  # leaving the field is the change
    page.wait_for_selector("#account:has-text('keys')")
    tab_to(page, "choose")
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(reference))
    assert len(choosers) == 1  # one Enter, one dialog
    wait_for_upload(page, base)
    tab_to(page, "prompt")
    page.keyboard.type("a hiker on snowy mountains")
    tab_to(page, "rendering_speed")
    page.keyboard.press("ArrowUp")  # default -> turbo
    assert page.input_value("#rendering_speed") == "turbo"
    tab_to(page, "submit")
    page.keyboard.press("Enter")
    page.wait_for_selector("img.result", timeout=60_000)
    assert page.get_attribute("#status", "data-status") == "COMPLETED"
    page.wait_for_selector("#history li button")
    tab_to(page, "refresh")
    page.keyboard.press("Tab")  # the first recent job is a button
    assert page.evaluate("document.activeElement.closest('#history') !== null")
    page.keyboard.press("Enter")
    assert page.get_attribute("#status", "data-status") == "COMPLETED"
    assert errors == []


def in_view(page: Page, selector: str) -> Any:
    return page.evaluate(
        "s => { const r = document.querySelector(s).getBoundingClientRect();"
        " return r.top >= 0 && r.top < window.innerHeight; }",
        selector,
    )


def test_a_390_px_phone_sees_its_job_without_sideways_scrolling(
    castframe_sqlite: Castframe, browser: Browser, reference: Path
) -> None:
    _, base = castframe_sqlite.server()
    key = castframe_sqlite.key(account="phone", mode="test", credits=0)
    page, errors = open_page(browser, PHONE)
    sign_in(page, base, key)
    assert no_sideways_scroll(page)
    upload(page, base, reference)  # a long signed URL in the reference field
    assert no_sideways_scroll(page)
    page.fill("#prompt", "portrait on a beach at sunset")
    page.select_option("#rendering_speed", "turbo")
    assert not in_view(page, "#status")  # the Result panel is below the form
    page.click("#submit")
    page.wait_for_selector("#status[data-status]")
    assert in_view(page, "#current")  # brought into view: something visibly happens
    page.wait_for_selector("img.result", timeout=60_000)
    page.wait_for_function("document.querySelector('img.result').naturalWidth > 0")
    assert page.get_attribute("#status", "data-status") == "COMPLETED"
    width = page.evaluate("document.querySelector('img.result').getBoundingClientRect().width")
    assert 0 < width <= PHONE["width"]
    page.wait_for_selector("#history li")
    assert no_sideways_scroll(page)
    page.fill("#reference", "ftp://example.com/a-long-name-that-goes-on-and-on-and-on.png")
    page.click("#submit")
    page.wait_for_selector("#reference-error:not([hidden])")
    assert no_sideways_scroll(page)
    page.screenshot(path=str(ROOT / "test-artifacts" / "playground-390.png"), full_page=True)
    assert errors == []
