"""Visitor-supplied text is shown as text in the console: no markup, no script."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import (
    TIMEOUT_MS,
    agent_console,
    open_widget,
    visitor_send,
    watch_dialogs,
)

EVIL_NAME = "<img src=x onerror=alert(1)>"
EVIL_TEXT = "<script>alert(2)</script> and <b>bold</b> javascript:alert(3)"


def test_hostile_visitor_name_and_message_render_as_literal_text(
    server: Server, browser: Any
) -> None:
    dialogs: list[str] = []
    agent = make_agent(server, name="Careful Agent")
    with agent_console(browser, server, agent, dialogs=dialogs) as console:
        visitor_ctx = browser.new_context()
        visitor = visitor_ctx.new_page()
        watch_dialogs(visitor, dialogs)
        widget = open_widget(visitor, server)
        visitor.evaluate(
            "name => window.LiveChat.setVisitor({name, attributes: {plan: name}})", EVIL_NAME
        )
        visitor_send(widget, EVIL_TEXT)
        expect(console.locator("#mine-list li")).to_have_count(1, timeout=TIMEOUT_MS)
        entry = console.locator("#mine-list li button").first
        entry.click()
        text = console.locator("#chat-log .msg[data-author=visitor] .text").first
        expect(text).to_have_text(EVIL_TEXT, timeout=TIMEOUT_MS)
        expect(console.locator("#chat-title")).to_have_text(EVIL_NAME, timeout=TIMEOUT_MS)
        expect(entry.locator(".name")).to_have_text(EVIL_NAME)
        expect(console.locator("#sidebar")).to_contain_text(EVIL_NAME)
        # No element was made from the text, so no handler is left that could still run a
        # script later (no need to wait and see); and no script ran anywhere.
        assert console.locator("#app-view img").count() == 0
        assert console.locator("#chat-log script, #chat-log b").count() == 0
        assert widget.locator("#lc-log img, #lc-log script, #lc-log b").count() == 0
        visitor_ctx.close()
    assert dialogs == []
