"""The live page in headless Chromium (Debian's, driven by Playwright; no browser download)
against a real `cadre serve` with the app's teams: submit, watch messages arrive, answer the
user proxy (twice in one task), see why it stopped, cancel."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable

from .conftest import ROOT, Served, start_serve

ARTIFACTS = ROOT / "test-artifacts"
TIMEOUT_MS = 20_000
PROMPT = "Reply APPROVE to accept the draft, or say what to change:"
"""The question of the app's review team (agents/review.py)."""


def chromium_path() -> str:
    found = os.environ.get("CADRE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        unavailable("headless Chromium: apt-get install chromium (Debian's package)")
    return found


@contextlib.contextmanager
def browser_page(
    url: str, *, expected: str | None = None, bypass_csp: bool = False
) -> Iterator[Any]:
    """A fresh headless page on `url`; fails the test on any page error (but `expected`)."""
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        unavailable("playwright: pip install -e '.[dev]'")
    executable = chromium_path()
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900}, bypass_csp=bypass_csp)
            page.set_default_timeout(TIMEOUT_MS)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(
                "console",
                lambda msg: errors.append(msg.text) if msg.type == "error" else None,
            )
            page.goto(url)
            yield page
        finally:
            browser.close()
    assert [e for e in errors if not (expected and expected in e)] == []


@pytest.fixture
def page(served: Served) -> Iterator[Any]:
    with browser_page(served.url + "/") as opened:
        yield opened


def test_submit_watch_answer_the_proxy_and_see_it_complete(page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    expect(page.get_by_label("Team", exact=True)).to_contain_text("review (round_robin)")
    page.get_by_label("Team", exact=True).select_option("review")
    expect(page.locator("#team-members")).to_have_text("writer, reviewer (you)")
    page.get_by_role("textbox", name="Task").fill("Write a haiku about the sea")
    page.get_by_role("button", name="Start task").click()

    timeline = page.get_by_role("list", name="Conversation")
    expect(timeline.locator("li")).to_have_count(2)
    expect(timeline.locator("li").nth(0)).to_contain_text("Write a haiku about the sea")
    writer = timeline.locator("li").nth(1)
    expect(writer.locator(".who")).to_have_text("writer")
    expect(writer).to_contain_text("tokens")
    expect(page.locator("#status")).to_have_text("awaiting input")

    answer = page.get_by_label(PROMPT)
    expect(answer).to_be_focused()  # the page moves the focus to the question
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-page-awaiting-input.png"), full_page=True)
    answer.fill("APPROVE")
    page.get_by_role("button", name="Send answer").click()

    expect(page.locator("#status")).to_have_text("completed")
    expect(timeline.locator("li")).to_have_count(3)
    expect(timeline.locator("li").nth(2).locator(".who")).to_have_text("reviewer")
    expect(page.locator("#result")).to_have_text("APPROVE")
    expect(page.locator("#tokens")).to_contain_text("tokens in all")
    expect(page.get_by_role("button", name="Cancel task")).to_be_disabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-page-completed.png"), full_page=True)


def test_one_task_asks_twice_and_the_page_keeps_up_without_a_reload(page) -> None:  # type: ignore[no-untyped-def]
    """The review team asks its reviewer twice: each prompt gets the answer box, the token
    count grows while it runs, and the finished task says why it stopped and which model."""
    from playwright.sync_api import expect

    page.get_by_label("Team", exact=True).select_option("review")
    page.get_by_role("textbox", name="Task").fill("Write a two-line welcome for new hires")
    page.get_by_role("button", name="Start task").click()
    timeline = page.get_by_role("list", name="Conversation")
    expect(page.locator("#status")).to_have_text("awaiting input")
    expect(page.locator("#tokens")).to_have_text(re.compile(r"· [1-9]\d* tokens so far"))
    first_count = int(page.locator("#tokens").inner_text().split()[1])

    answer = page.get_by_label(PROMPT)
    expect(answer).to_be_focused()
    answer.fill("Make it shorter")
    page.get_by_role("button", name="Send answer").click()
    # the writer revises and the reviewer is asked again: the box comes back by itself
    expect(timeline.locator("li")).to_have_count(4)
    expect(timeline.locator("li").nth(2)).to_contain_text("Make it shorter")
    expect(answer).to_be_visible()
    expect(answer).to_be_focused()
    expect(answer).to_have_value("")
    expect(page.locator("#tokens")).not_to_have_text(f"· {first_count} tokens so far")
    assert int(page.locator("#tokens").inner_text().split()[1]) > first_count
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-page-second-prompt.png"), full_page=True)

    answer.fill("APPROVE")
    page.get_by_role("button", name="Send answer").click()
    expect(page.locator("#status")).to_have_text("completed")
    expect(timeline.locator("li")).to_have_count(5)
    expect(page.locator("#input-form")).to_be_hidden()
    expect(page.locator("#stop-reason")).to_have_text("reviewer mentioned 'APPROVE'")
    expect(page.locator("#model")).to_have_text("offline")
    expect(page.locator("#tokens")).to_contain_text("tokens in all")


def test_a_finished_task_continues_from_the_page(page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.get_by_label("Team", exact=True).select_option("review")
    page.get_by_role("textbox", name="Task").fill("Write a haiku about the sea")
    page.get_by_role("button", name="Start task").click()
    page.get_by_label(PROMPT).fill("APPROVE")
    page.get_by_role("button", name="Send answer").click()
    expect(page.locator("#status")).to_have_text("completed")
    timeline = page.get_by_role("list", name="Conversation")
    expect(timeline.locator("li")).to_have_count(3)

    page.get_by_label("Continue this task").fill("Now one about the mountains")
    page.get_by_role("button", name="Continue task").click()
    # the history stays; the user's message, then the drafter's next draft, then the question
    expect(timeline.locator("li").nth(3)).to_contain_text("Now one about the mountains")
    expect(timeline.locator("li").nth(4).locator(".who")).to_have_text("writer")
    expect(page.locator("#status")).to_have_text("awaiting input")
    expect(page.get_by_role("button", name="Continue task")).to_be_hidden()
    page.get_by_label(PROMPT).fill("APPROVE")
    page.get_by_role("button", name="Send answer").click()
    expect(page.locator("#status")).to_have_text("completed")
    expect(timeline.locator("li")).to_have_count(6)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-page-continued.png"), full_page=True)


def test_cancel_with_the_keyboard(page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.get_by_label("Team", exact=True).select_option("review")
    page.get_by_role("textbox", name="Task").fill("Draft a memo")
    page.keyboard.press("Tab")  # from the task box to the Start button
    expect(page.get_by_role("button", name="Start task")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text("awaiting input")

    page.get_by_role("button", name="Cancel task").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text("cancelled")
    expect(page.locator("#notice")).to_contain_text("cancelled on the page")
    expect(page.locator("#input-form")).to_be_hidden()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "live-page-cancelled.png"), full_page=True)


def test_reloading_the_page_reopens_the_task(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.get_by_label("Team", exact=True).select_option("default")
    page.get_by_role("textbox", name="Task").fill("Plan a three-day trip to Lisbon")
    page.get_by_role("button", name="Start task").click()
    expect(page.locator("#status")).to_have_text("completed")
    count = page.locator("#timeline li").count()
    assert count > 5
    expect(page.locator("#stop-reason")).to_have_text("critic mentioned 'APPROVE'")
    expect(page.locator("#model")).to_have_text("offline")
    # the planner's tool call: its name, and its arguments as formatted JSON
    call = page.locator("#timeline li.tool_call").first
    expect(call.locator(".tool-name")).to_have_text("budget")
    expect(call.locator(".args")).to_contain_text('"costs_eur": [')
    assert "\n" in call.locator(".args").inner_text()
    assert '"arguments"' not in call.inner_text()  # not the raw JSON of the call
    page.reload()
    expect(page.locator("#status")).to_have_text("completed")
    expect(page.locator("#timeline li")).to_have_count(count)


def test_with_an_api_key_the_page_asks_for_it_and_follows_by_polling(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    server = start_serve(tmp_path / "cadre.db", env={"CADRE_API_KEY": "page-key"})
    try:
        with browser_page(server.url + "/", expected="status of 401") as page:
            key = page.get_by_label("API key")
            expect(key).to_be_visible()  # the team list answered 401
            key.fill("page-key")
            key.press("Tab")  # change event: the page retries with the key
            expect(page.get_by_label("Team", exact=True)).to_contain_text("default")
            page.get_by_role("textbox", name="Task").fill("Plan a weekend in Porto")
            page.get_by_role("button", name="Start task").click()
            expect(page.locator("#status")).to_have_text("completed")
            expect(page.locator("#result")).to_contain_text("APPROVE")
    finally:
        server.stop()


AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"


def axe_violations(page: Any) -> list[str]:
    """WCAG 2 A/AA violations axe-core finds on the page as it is now."""
    if not AXE.exists():
        unavailable("axe-core: npm ci (package.json)")
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => (await axe.run(document, {
            runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
        })).violations.map(v => `${v.id}: ${v.help} (${v.nodes.map(n => n.target).join(", ")})`)"""
    )
    return list(found)


def test_the_page_has_no_wcag_violations_in_any_state(served: Served) -> None:
    with browser_page(served.url + "/", bypass_csp=True) as page:  # CSP: axe is injected
        check_accessibility(page)


def check_accessibility(page: Any) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_label("Team", exact=True)).to_contain_text("review")
    assert axe_violations(page) == []  # the empty form
    page.get_by_label("Team", exact=True).select_option("review")
    page.get_by_role("textbox", name="Task").fill("Write a haiku")
    page.get_by_role("button", name="Start task").click()
    expect(page.locator("#status")).to_have_text("awaiting input")
    assert axe_violations(page) == []  # the conversation and the question
    page.get_by_role("textbox", name="Reply APPROVE to accept").fill("APPROVE")
    page.get_by_role("button", name="Send answer").click()
    expect(page.locator("#status")).to_have_text("completed")
    assert axe_violations(page) == []  # the result


def test_message_text_is_shown_as_text_never_as_markup(page, served: Served) -> None:  # type: ignore[no-untyped-def]
    import httpx
    from playwright.sync_api import expect

    assert "default-src 'self'" in httpx.get(served.url + "/").headers["content-security-policy"]
    markup = '<img src="x" onerror="document.title=\'owned\'"><b>bold</b>'
    page.get_by_label("Team", exact=True).select_option("review")
    page.get_by_role("textbox", name="Task").fill(markup)
    page.get_by_role("button", name="Start task").click()
    first = page.locator("#timeline li").first
    expect(first.locator(".text")).to_have_text(markup)
    assert page.locator("#timeline img, #timeline b").count() == 0
    assert page.title() == "Cadre"
