"""Admin screens: create an agent, restyle the widget, and see the demo site follow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server
from tests.browser.helpers import TIMEOUT_MS, console_login, open_widget

NEW_COLOUR = "#e11d48"
NEW_COLOUR_RGB = "rgb(225, 29, 72)"


def test_admin_creates_agent_and_widget_colour_reaches_demo_site(
    server: Server, browser: Any, artifacts: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 950})
    page = context.new_page()
    console_login(page, server, server.owner_username, server.owner_password)

    page.goto(server.base_url + "/console#/admin/agents")
    page.fill("#agent-username", "newhire")
    page.fill("#agent-display", "New Hire")
    page.select_option("#agent-role", "supervisor")
    page.fill("#agent-password", "a-long-enough-password")
    page.click("#agent-create button[type=submit]")
    row = page.locator("#agents-table tr[data-username='newhire']")
    expect(row).to_be_visible(timeout=TIMEOUT_MS)
    expect(row).to_contain_text("New Hire")
    agents = server.api().call("GET", "/agents")["agents"]
    assert any(a["username"] == "newhire" and a["role"] == "supervisor" for a in agents)

    page.goto(server.base_url + "/console#/admin/widget")
    colour = page.locator("#widget-form input[aria-label='Colour (hex)']")
    expect(colour).to_be_visible(timeout=TIMEOUT_MS)
    colour.fill(NEW_COLOUR)
    preview = page.frame_locator("iframe.preview-frame")
    expect(preview.locator("#lc-launcher")).to_have_css(
        "background-color", NEW_COLOUR_RGB, timeout=TIMEOUT_MS
    )
    expect(page.locator("#embed-snippet")).to_contain_text('data-key="')
    page.click("#widget-form button[type=submit]")
    expect(page.locator("#toasts")).to_contain_text("saved", timeout=TIMEOUT_MS)
    page.screenshot(path=str(artifacts / "console-admin-widget.png"))

    # The new agent can log in; the demo site's widget wears the new colour.
    visitor_ctx = browser.new_context()
    visitor = visitor_ctx.new_page()
    widget = open_widget(visitor, server)
    expect(widget.locator("#lc-launcher")).to_have_css(
        "background-color", NEW_COLOUR_RGB, timeout=TIMEOUT_MS
    )
    expect(widget.locator(".lc-head")).to_have_css("background-color", NEW_COLOUR_RGB)
    visitor.screenshot(path=str(artifacts / "widget-demo-new-colour.png"))
    visitor_ctx.close()

    newbie = browser.new_context()
    newbie_page = newbie.new_page()
    console_login(newbie_page, server, "newhire", "a-long-enough-password")
    expect(newbie_page.locator("#all-section")).to_be_visible()
    newbie.close()
    context.close()
