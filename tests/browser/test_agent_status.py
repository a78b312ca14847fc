"""The console shows the agent's status and lets them choose accepting, away or not accepting."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import TIMEOUT_MS, agent_console


def test_an_agent_chooses_away_and_it_holds_for_a_new_tab(server: Server, browser: Any) -> None:
    ann = make_agent(server, name="Ann Status")
    with agent_console(browser, server, ann) as console:
        toggle = console.locator("#status-toggle")
        expect(toggle).to_have_text("Accepting chats", timeout=TIMEOUT_MS)
        console.select_option("#status-select", "away")
        expect(toggle).to_have_text("Away", timeout=TIMEOUT_MS)
        expect(toggle).to_have_attribute("aria-pressed", "false")
        expect(toggle).to_have_attribute("data-status", "away")
        console.reload()  # a new tab of the same agent starts from the chosen status
        expect(console.locator("body")).to_have_attribute("data-conn", "online", timeout=TIMEOUT_MS)
        expect(console.locator("#status-toggle")).to_have_text("Away", timeout=TIMEOUT_MS)
        expect(console.locator("#status-select")).to_have_value("away")
        console.locator("#status-toggle").click()  # from away: back to accepting
        expect(console.locator("#status-toggle")).to_have_text(
            "Accepting chats", timeout=TIMEOUT_MS
        )


def test_an_admin_starts_not_accepting(server: Server, browser: Any) -> None:
    boss = make_agent(server, role="admin", name="Ada Admin")
    with agent_console(browser, server, boss, accepting=False) as console:
        expect(console.locator("#status-toggle")).to_have_text(
            "Not accepting chats", timeout=TIMEOUT_MS
        )
        expect(console.locator("#status-select")).to_have_value("not_accepting")
