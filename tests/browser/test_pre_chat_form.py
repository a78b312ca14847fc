"""The widget's pre-chat form when the server refuses a field: the visitor sees why, and no
message leaves until the form is right (the server checks what the browser let through)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import Server, make_agent
from tests.browser.helpers import (
    TIMEOUT_MS,
    SocketCutter,
    agent_console,
    open_widget,
    wait_until,
)


@contextmanager
def _pre_chat_on(server: Server) -> Iterator[None]:
    api = server.api()
    before = api.call("GET", "/settings/widget")
    fields = [{"name": "email", "label": "Email", "kind": "email", "required": True}]
    api.call("PATCH", "/settings/widget", {"pre_chat_enabled": True, "pre_chat_fields": fields})
    try:
        yield
    finally:
        api.call("PUT", "/settings/widget", before)


def test_pre_chat_form_shows_the_servers_refusal_of_an_email(server: Server, browser: Any) -> None:
    agent = make_agent(server, name="Form Agent")
    with _pre_chat_on(server), agent_console(browser, server, agent):
        visitor_ctx = browser.new_context()
        widget = open_widget(visitor_ctx.new_page(), server)
        form = widget.locator("#lc-prechat")
        expect(form).to_be_visible(timeout=TIMEOUT_MS)
        # The browser's own check accepts "dana@example"; the server wants a dotted domain.
        widget.locator("#lc-pc-0").fill("dana@example")
        widget.locator("#lc-prechat-msg").fill("Is the blue one in stock?")
        form.locator("button[type=submit]").click()
        expect(form.locator(".lc-error")).to_contain_text("email", timeout=TIMEOUT_MS)
        expect(form).to_be_visible()
        expect(widget.locator("#lc-log .lc-msg.mine")).to_have_count(0)

        widget.locator("#lc-pc-0").fill("dana@example.com")
        form.locator("button[type=submit]").click()
        expect(widget.locator("#lc-log .lc-msg.mine").first).to_have_attribute(
            "data-state", "sent", timeout=TIMEOUT_MS
        )
        visitor_ctx.close()


def test_a_connection_lost_while_the_form_is_checked_still_shows_the_servers_refusal(
    server: Server, browser: Any
) -> None:
    """The server's answer to the form's profile is lost with the socket: the widget asks
    again on the next connection and shows the refusal, instead of taking the loss for a yes
    and sending a message the server would refuse for want of an email."""
    agent = make_agent(server, name="Cut Form Agent")
    cutter = SocketCutter()
    with _pre_chat_on(server), agent_console(browser, server, agent):
        visitor_ctx = browser.new_context()
        visitor_ctx.route_web_socket(re.compile(r".*/ws/v1/visitor.*"), cutter.handle)
        page = visitor_ctx.new_page()
        widget = open_widget(page, server)
        form = widget.locator("#lc-prechat")
        expect(form).to_be_visible(timeout=TIMEOUT_MS)
        widget.locator("#lc-pc-0").fill("erin@example")
        widget.locator("#lc-prechat-msg").fill("Do you ship abroad?")
        cutter.swallow = True
        form.locator("button[type=submit]").click()
        wait_until(
            page,
            lambda: any(f.get("type") == "update_profile" for f in cutter.sent),
            "the form's update_profile",
        )
        cutter.cut()
        expect(form.locator(".lc-error")).to_contain_text("email", timeout=TIMEOUT_MS)
        assert len(cutter.routes) >= 2, "the widget did not reconnect"
        expect(form).to_be_visible()
        expect(widget.locator("#lc-log .lc-msg.mine")).to_have_count(0)
        assert not [f for f in cutter.sent if f.get("type") == "send_message"]
        visitor_ctx.close()


def test_what_the_visitor_typed_in_the_pre_chat_form_survives_a_reconnect(
    server: Server, browser: Any
) -> None:
    """Each hello carries the widget's configuration and the form is built again from it: on a
    slow connection the first hello can land after the visitor started typing."""
    agent = make_agent(server, name="Reconnect Form Agent")
    with _pre_chat_on(server), agent_console(browser, server, agent):
        visitor_ctx = browser.new_context()
        page = visitor_ctx.new_page()
        widget = open_widget(page, server)
        form = widget.locator("#lc-prechat")
        expect(form).to_be_visible(timeout=TIMEOUT_MS)
        widget.locator("#lc-pc-0").fill("erin@example.com")
        widget.locator("#lc-prechat-msg").fill("Do you ship to Norway?")
        visitor_ctx.set_offline(True)
        with page.expect_websocket(timeout=TIMEOUT_MS) as opened:
            visitor_ctx.set_offline(False)
        opened.value.expect_event(
            "framereceived", lambda frame: '"type":"hello"' in str(frame), timeout=TIMEOUT_MS
        )
        expect(widget.locator("#lc-pc-0")).to_have_value("erin@example.com")
        form.locator("button[type=submit]").click()
        expect(widget.locator("#lc-log .lc-msg.mine").first).to_have_attribute(
            "data-state", "sent", timeout=TIMEOUT_MS
        )
        visitor_ctx.close()
