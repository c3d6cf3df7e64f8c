"""The LangServe playground in a real headless browser (Chromium driven by Playwright).

The page is served by ``latm serve --langserve`` (uvicorn on a free loopback
port, scripted models); the test fills the playground's form as a person would,
presses Start, waits for the answer in the page's output, and saves a
screenshot (``playground.png`` in the test's temporary directory, and in
``LATM_SCREENSHOT_DIR`` when that is set).

The browser is the system's Chromium (Debian's ``chromium`` package, which
``.ci/run`` installs); nothing is downloaded at run time. Without it the test
skips with a message, except under CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from langserve import RemoteRunnable

from ..unit.scripted import SORT_CODE, bbh, maker_reply, user_reply
from .conftest import ServerProcess
from .fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration

EXAMPLES = bbh("word_sorting")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_MS = 30_000


def unavailable(why: str) -> None:
    """Skip locally; under CI a missing browser is a failure, never a silent skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI installs it: see .ci/run)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Any:
    """A headless Chromium from the system, driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (the 'dev' extra has it)")
    path = os.environ.get("LATM_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not path:
        unavailable("no Chromium on this machine: apt-get install chromium")
    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's own sandbox cannot start
        browser = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def field(page: Any, name: str) -> Any:
    """The playground's form control of the input field ``name`` (JSON Forms ids)."""
    return page.locator(f'[id="#/properties/{name}-input"]')


def test_the_playground_renders_its_form_and_runs_a_task_to_its_answer(
    browser: Any, langserve_server: ServerProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    remote = RemoteRunnable(f"{langserve_server.url}/latm", timeout=120)
    fake.script("maker", [maker_reply(SORT_CODE, [e["input"] for e in EXAMPLES[3:6]])])
    made = remote.invoke({"examples": EXAMPLES[:6], "task_type": "word_sorting", "make": True})
    assert made["error"] is None, made
    question = EXAMPLES[40]
    fake.script("user", [user_reply(question["input"])])

    page = browser.new_page(viewport={"width": 1000, "height": 1200})
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    try:
        page.goto(f"{langserve_server.url}/latm/playground/")
        # the form is drawn from the input and config schemas (a nullable field blanks it)
        field(page, "task").wait_for()
        assert field(page, "max_attempts").input_value() == "3"  # the honoured settings
        # an edited setting: the page reloads the input schema from /latm/c/{config}/
        with page.expect_response(lambda r: "/latm/c/" in r.url and "input_schema" in r.url) as got:
            field(page, "max_attempts").fill("2")
        assert got.value.status == 200
        field(page, "task").wait_for()
        field(page, "task").fill(question["input"])
        field(page, "task_type").fill("word_sorting")
        with page.expect_request(lambda r: r.url.endswith("/stream_log")) as sent:
            page.get_by_role("button", name="Start").click()
        body = json.loads(sent.value.post_data or "{}")
        assert body["config"]["configurable"]["max_attempts"] == 2

        output = page.locator("h2", has_text="Output").locator("xpath=following-sibling::div[1]")
        output.get_by_text(f'"answer": "{question["target"]}"').wait_for()
        page.get_by_role("button", name="Start").wait_for()  # the run has ended
        text = output.inner_text()
        shot = tmp_path / "playground.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    if os.environ.get("LATM_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["LATM_SCREENSHOT_DIR"]) / shot.name)

    assert problems == []
    assert '"node": "dispatcher"' in text and '"cache_hit": true' in text
    assert '"error": null' in text
    assert shot.stat().st_size > 10_000
    (request,) = fake.requests("user")
    assert question["input"] in str(request["messages"][-1]["content"])
