"""Support-team workflow in the widget (issue 16): a visitor picks a department in the
pre-chat form and their chat goes to that group."""

from __future__ import annotations

import time
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import TIMEOUT_MS, agent_console, open_widget


def test_visitor_picks_a_department_and_the_chat_goes_to_that_group(
    server: Server, browser: Any
) -> None:
    api = server.api()
    sales = api.call("POST", "/groups", {"name": "Sales", "public": True})
    internal = api.call("POST", "/groups", {"name": "Back office"})
    agent = make_agent(server, name="Sales Agent")
    api.call("PATCH", f"/agents/{agent['id']}", {"group_ids": [sales["id"]]})
    try:
        with agent_console(browser, server, agent):
            visitor_ctx = browser.new_context()
            visitor_page = visitor_ctx.new_page()
            widget = open_widget(visitor_page, server)
            form = widget.locator("#lc-prechat")
            expect(form).to_be_visible(timeout=TIMEOUT_MS)
            select = widget.locator("#lc-dept")
            # Only public groups are offered.
            expect(select.locator("option")).to_have_text(["Choose…", "Sales"])
            select.select_option(label="Sales")
            widget.locator("#lc-prechat-msg").fill("A quote for 40 seats, please")
            form.locator("button[type=submit]").click()
            expect(widget.locator("#lc-log .lc-msg.mine").first).to_have_attribute(
                "data-state", "sent", timeout=TIMEOUT_MS
            )
            deadline = time.monotonic() + TIMEOUT_MS / 1000
            found: list[Any] = []
            while not found and time.monotonic() < deadline:
                page = api.call("GET", f"/conversations?group_id={sales['id']}")
                found = [
                    c
                    for c in page["conversations"]
                    if c["state"] != "closed" and c["group_id"] == sales["id"]
                ]
                if not found:
                    visitor_page.wait_for_timeout(100)  # poll interval; bounded by deadline
            assert found, "no open chat in the Sales group"
            visitor_ctx.close()
    finally:
        api.call("DELETE", f"/groups/{sales['id']}")
        api.call("DELETE", f"/groups/{internal['id']}")
