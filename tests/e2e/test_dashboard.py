"""The web dashboard at ``/``, driven in a real headless browser (Debian's chromium through
Selenium and chromium-driver) against a real batchd; batches are made through the SDK."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from tests.e2e.conftest import ModelServer, Server, ServerFactory, wait_for_batch
from tests.e2e.lines import request_line, submit, upload, write_jsonl

REQUIRE_BROWSER = os.environ.get("BATCHD_REQUIRE_BROWSER") == "1"
SCREENSHOTS = os.environ.get("BATCHD_DASHBOARD_SCREENSHOTS")
"""A folder to save the screenshots docs/dashboard.md shows (docs/img to refresh them)."""
KEY = "sk-dash"
OTHER_KEY = "sk-other"


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    """One headless chromium for the whole session: each test's batchd is a new origin, so
    session storage starts empty."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        reason = "Debian's chromium and chromium-driver are not installed"
        if REQUIRE_BROWSER:
            pytest.fail(f"BATCHD_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield browser
    finally:
        browser.quit()


@dataclass
class Dashboard:
    driver: WebDriver
    root: str

    def open(self, route: str = "/") -> None:
        self.driver.get(f"{self.root}#{route}")

    def go(self, route: str) -> None:
        """Follow a link inside the page: no reload."""
        self.driver.execute_script("location.hash = arguments[0]", route)

    def texts(self, css: str) -> list[str]:
        """The text of every element matching ``css``, read in one go (the page redraws)."""
        found: list[str] = self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css
        )
        return found

    def attribute(self, css: str, name: str) -> list[str]:
        found: list[str] = self.driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])]"
            ".map(e => e.getAttribute(arguments[1]))",
            css,
            name,
        )
        return found

    def until(self, condition: Callable[[], Any], within: float = 15) -> Any:
        return WebDriverWait(self.driver, within, poll_frequency=0.05).until(
            lambda _driver: condition()
        )

    def click(self, css: str) -> None:
        self.driver.execute_script("document.querySelector(arguments[0]).click()", css)

    def enter_key(self, key: str) -> None:
        self.until(lambda: self.texts("#key-form"))
        self.driver.execute_script(
            "document.getElementById('key').value = arguments[0];"
            "document.getElementById('key-form').requestSubmit()",
            key,
        )

    def mark(self) -> None:
        """Set a flag that a reload would lose."""
        self.driver.execute_script("window.notReloaded = true")

    def reloaded(self) -> bool:
        return self.driver.execute_script("return window.notReloaded !== true") is True

    def screenshot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(SCREENSHOTS) / f"{name}.png"))

    def errors(self) -> list[str]:
        """What the page logged as an error, less the 401s it is meant to get."""
        logs = self.driver.get_log("browser")
        return [e["message"] for e in logs if e["level"] == "SEVERE" and "401" not in e["message"]]


@pytest.fixture
def keyed_server(start_server: ServerFactory) -> Server:
    return start_server("--api-key", f"team:{KEY}", "--api-key", f"other:{OTHER_KEY}")


@pytest.fixture
def dashboard(browser: WebDriver, keyed_server: Server) -> Iterator[Dashboard]:
    """The dashboard of ``keyed_server``, opened, with the key entered."""
    page = Dashboard(browser, keyed_server.base_url.removesuffix("v1"))
    browser.get_log("browser")  # drop what earlier tests left
    page.open()
    page.enter_key(KEY)
    yield page
    assert page.errors() == []


def _batch_ids(page: Dashboard) -> list[str]:
    return page.attribute("#batches tbody tr", "data-batch")


def test_a_key_typed_once_shows_the_projects_batches_with_their_status(
    browser: WebDriver, keyed_server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """The page asks for a key, then lists that key's project's batches (not another
    project's) with status and progress; a reload keeps the key."""
    client, other = keyed_server.client(KEY), keyed_server.client(OTHER_KEY)
    mine = [submit(client, _folder(tmp_path, n), [request_line(i) for i in range(3)]) for n in "ab"]
    theirs = submit(other, _folder(tmp_path, "c"), [request_line(0)])
    for batch in mine:
        wait_for_batch(client, batch.id)
    page = Dashboard(browser, keyed_server.base_url.removesuffix("v1"))
    page.open()
    page.enter_key(KEY)
    page.until(lambda: len(_batch_ids(page)) == 2)
    assert _batch_ids(page) == [mine[1].id, mine[0].id]
    assert theirs.id not in _batch_ids(page)
    assert page.texts("#batches [data-status]") == ["completed", "completed"]
    assert page.texts("#batches [data-field=progress]") == ["3 / 3", "3 / 3"]
    browser.refresh()
    page.until(lambda: len(_batch_ids(page)) == 2)
    assert page.texts("#key-form") == []


def test_a_wrong_key_shows_the_prompt_again(browser: WebDriver, keyed_server: Server) -> None:
    """A refused key brings the prompt back saying so; the right one opens the page, and
    "Forget key" asks again."""
    page = Dashboard(browser, keyed_server.base_url.removesuffix("v1"))
    page.open()
    page.enter_key("sk-wrong")
    page.until(lambda: page.texts("#key-refused"))
    page.enter_key(KEY)
    page.until(lambda: page.texts("h1") == ["Batches"])
    page.click("#forget")
    page.until(lambda: page.texts("#key-form"))
    assert page.texts("#key-refused") == []
    assert page.driver.execute_script("return sessionStorage.length") == 0


def test_progress_advances_on_the_list_and_the_batch_page_without_a_reload(
    browser: WebDriver, start_server: ServerFactory, fake: ModelServer, tmp_path: Path
) -> None:
    """While a batch runs, the completed count it shows grows on its own, on the list and then
    on its page, until it shows completed."""
    fake.set_faults(latency_ms=150)
    server = start_server("--api-key", KEY, "--max-concurrency", "1")
    client = server.client(KEY)
    page = Dashboard(browser, server.base_url.removesuffix("v1"))
    page.open()
    page.enter_key(KEY)
    batch = submit(client, tmp_path, [request_line(i) for i in range(60)])
    page.until(lambda: _batch_ids(page) == [batch.id])
    page.mark()
    first = page.until(lambda: _done(page, "#batches [data-field=progress]"))
    page.until(lambda: _done(page, "#batches [data-field=progress]") > first)
    page.screenshot("batches")
    page.go(f"/batches/{batch.id}")
    first = page.until(lambda: _done(page, "#batch [data-field=completed]"))
    page.until(lambda: _done(page, "#batch [data-field=completed]") > first)
    page.until(lambda: page.texts("#batch h1 [data-status]") == ["completed"], within=30)
    assert page.texts("#batch [data-field=completed]") == ["60"]
    assert page.texts("#batch [data-field=throughput]")[0].endswith("lines/s")
    assert not page.reloaded()


def _done(page: Dashboard, css: str) -> int:
    shown = page.texts(css)
    return int(shown[0].split("/")[0]) if shown else 0


def test_a_batch_page_shows_counts_timeline_files_and_first_errors_as_text(
    dashboard: Dashboard, keyed_server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """A finished batch's page: its counts, its timeline, links to its three files, and its
    failed lines with their codes; custom_ids, metadata and messages are shown as text, never
    run as markup."""
    rejected = {
        "error": {
            "message": "<img src=x onerror=alert(2)> is not allowed",
            "type": "invalid_request_error",
            "param": None,
            "code": "bad_prompt",
        }
    }
    fake.set_faults(rules=[{"fault": "status", "status": 400, "body": rejected, "custom_id": "x"}])
    client = keyed_server.client(KEY)
    lines = [request_line(0), request_line(1), request_line(2, custom_id="<script>x()</script>")]
    lines.append(request_line(3, custom_id="x-3"))
    path = write_jsonl(tmp_path / "input.jsonl", lines)
    created = client.batches.create(
        input_file_id=upload(client, path),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"owner": "<script>alert(3)</script>"},
    )
    batch = wait_for_batch(client, created.id)
    dashboard.go(f"/batches/{batch.id}")
    dashboard.until(lambda: dashboard.texts("#errors tbody tr"))
    field = lambda name: dashboard.texts(f"#batch [data-field={name}]")  # noqa: E731
    assert (field("total"), field("completed"), field("failed")) == (["4"], ["2"], ["2"])
    steps = dashboard.attribute("#timeline li", "data-step")
    assert steps == ["created", "in progress", "finalizing", "completed"]
    for name, file_id in [
        ("input_file", batch.input_file_id),
        ("output_file", batch.output_file_id),
        ("error_file", batch.error_file_id),
    ]:
        assert dashboard.attribute(f"[data-field={name}] a", "href") == [f"#/files/{file_id}"]
    assert sorted(dashboard.texts("#errors .custom-id")) == ["<script>x()</script>", "x-3"]
    assert dashboard.texts("#errors [data-field=code]") == ["bad_prompt", "bad_prompt"]
    assert "<img src=x" in dashboard.texts("#errors .message")[0]
    assert field("metadata") == ["owner=<script>alert(3)</script>"]
    assert dashboard.driver.execute_script("return document.scripts.length") == 1
    assert (
        dashboard.driver.execute_script("return document.querySelectorAll('main img').length") == 0
    )
    with pytest.raises(NoAlertPresentException):
        dashboard.driver.switch_to.alert.text  # noqa: B018
    dashboard.screenshot("batch")


def test_a_batch_that_fails_validation_lists_its_errors_with_codes(
    dashboard: Dashboard, keyed_server: Server, tmp_path: Path
) -> None:
    """A batch failed at validation shows the lines at fault, with their codes."""
    client = keyed_server.client(KEY)
    batch = submit(client, tmp_path, [request_line(0), request_line(0)])
    assert wait_for_batch(client, batch.id).status == "failed"
    dashboard.go(f"/batches/{batch.id}")
    dashboard.until(lambda: dashboard.texts("#errors [data-field=code]"))
    assert dashboard.texts("#errors [data-field=code]") == ["duplicate_custom_id"]
    assert dashboard.texts("#batch h1 [data-status]") == ["failed"]
    assert "failed" in dashboard.attribute("#timeline li", "data-step")


def test_the_files_list_and_a_files_first_lines(
    dashboard: Dashboard, keyed_server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Files lists the project's files with their purpose; a file's page shows its first
    lines."""
    client = keyed_server.client(KEY)
    batch = wait_for_batch(client, submit(client, tmp_path, [request_line(0)]).id)
    dashboard.go("/files")
    dashboard.until(lambda: len(dashboard.attribute("#files tbody tr", "data-file")) == 2)
    shown = dashboard.attribute("#files tbody tr", "data-file")
    assert shown == [batch.output_file_id, batch.input_file_id]
    assert [row.split() for row in dashboard.texts("#files tbody tr td:nth-child(3)")] == [
        ["batch_output"],
        ["batch"],
    ]
    dashboard.click(f"[data-file='{batch.input_file_id}'] a")
    dashboard.until(lambda: dashboard.texts("#preview"))
    assert '"custom_id": "req-0"' in dashboard.texts("#preview")[0]
    assert dashboard.texts("#file dd")[0] == "input.jsonl"


def test_the_upstreams_state_is_shown_live(
    dashboard: Dashboard, keyed_server: Server, fake: ModelServer, tmp_path: Path
) -> None:
    """Upstreams shows each upstream's state, and an upstream going down shows up in trouble,
    with the reason, without a reload."""
    dashboard.go("/upstreams")
    row = "#upstreams [data-upstream=upstream-0]"
    dashboard.until(lambda: dashboard.texts(f"{row} [data-field=state]") in (["ok"], ["idle"]))
    dashboard.mark()
    fake.set_faults(down=True)
    submit(keyed_server.client(KEY), tmp_path, [request_line(i) for i in range(3)])
    trouble = [["failing"], ["paused"], ["probing"]]
    dashboard.until(lambda: dashboard.texts(f"{row} [data-field=state]") in trouble)
    assert dashboard.texts(f"{row} [data-field=reason]") != [""]
    assert not dashboard.reloaded()
    dashboard.screenshot("upstreams")


def test_many_batches_are_shown_a_page_at_a_time(
    browser: WebDriver, start_server: ServerFactory, tmp_path: Path
) -> None:
    """With 120 batches the list shows the newest 50 and an "Older" control that pages on."""
    server = start_server("--api-key", KEY, "--no-worker")
    client = server.client(KEY)
    file_id = upload(client, write_jsonl(tmp_path / "in.jsonl", [request_line(0)]))
    made = [
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(120)
    ]
    page = Dashboard(browser, server.base_url.removesuffix("v1"))
    page.open()
    page.enter_key(KEY)
    pages = []
    for size in (50, 50, 20):
        page.until(
            lambda size=size: len(_batch_ids(page)) == size and _batch_ids(page) not in pages
        )
        pages.append(_batch_ids(page))
        more = page.texts("[data-control=more]")
        if size == 20:
            assert more == []
        else:
            assert more == ["Older »"]
            page.click("[data-control=more]")
    assert [i for ids in pages for i in ids] == made[::-1]


def test_the_dashboard_is_static_and_locked_down(keyed_server: Server) -> None:
    """The page and its scripts come from batchd itself with a strict Content-Security-Policy,
    and need no other site; the data behind them needs the key."""
    root = keyed_server.base_url.removesuffix("v1")
    page = httpx.get(root)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for response in (page, httpx.get(root + "dashboard/app.js")):
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "http" not in page.text
    assert httpx.get(root + "v1/batches").status_code == 401


def _folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return folder
